//! Deadlines kept in groups: futures whose deadlines fall within a small
//! slack of each other share one tokio timer.
//!
//! A timer of one's own per request costs its registration in tokio's
//! timer wheel and its removal again when the answer comes first, as it
//! nearly always does: about 640 instructions a request, the largest part
//! of what the balance layer adds to a call. A group's timer is registered
//! once for all the requests that join it, and a request that joins only
//! leaves its waker in the group, under a lock of its thread's shard.
//!
//! A group's timer stays registered until it fires, members or none: at
//! most 15.1 s after the last request that joined it. On a paused tokio
//! clock an idle runtime may therefore advance to it, as it does to the
//! idle-connection timer of hyper-util's pool.
//!
//! A group fires at most 1/64 of the wait late, and never more than
//! [`MAX_SLACK`] (plus tokio's rounding up to its next millisecond): a
//! 15-second timeout ends between 15 and 15.101 seconds.
//! Waits shorter than 64 ms keep a timer of their own (no slack is small
//! enough to be worth sharing below tokio's millisecond).
//!
//! A group belongs to the tokio runtime that registered its timer, and
//! only futures polled while that runtime is current join it. When that runtime shuts
//! down, its timers fire at once; a member then finds its own deadline not
//! reached and keeps a timer of its own from there (`alarm.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::task::Unconstrained;
use tokio::time::{Instant, Sleep};

use crate::balance::stripe::{self, Padded, STRIPES};

/// The latest a group fires after a member's deadline.
pub(crate) const MAX_SLACK: Duration = Duration::from_millis(100);

/// A member's deadline is kept at most `wait >> SLACK_SHIFT` late.
const SLACK_SHIFT: u32 = 6;

/// Below this slack a future keeps a timer of its own: tokio's timers
/// count whole milliseconds.
const MIN_SLACK: Duration = Duration::from_millis(1);

/// The groups a shard keeps open for new members: a few, so that futures
/// of different waits (a layer's timeout, a retry's attempt deadlines)
/// each find theirs.
const OPEN: usize = 4;

/// The groups a shard keeps open, `None` where there is none yet.
type Open = [Option<Arc<Group>>; OPEN];

/// The open groups, a shard per thread stripe, so that threads that start
/// requests at once do not all take one lock.
static SHARDS: [Padded<Mutex<Open>>; STRIPES] =
    [const { Padded(Mutex::new([const { None }; OPEN])) }; STRIPES];

/// A future's place in a group: its waker, woken when the group fires.
pub(crate) struct Watch {
    group: Arc<Group>,
    slot: u32,
    /// Which waker is in the slot (its data and vtable, as
    /// [`Waker::will_wake`] compares them), to tell when a poll brings
    /// another; held without a clone of its own.
    waker: WakerId,
}

/// A waker's identity: two addresses, compared, never followed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WakerId(usize, usize);

impl WakerId {
    fn of(waker: &Waker) -> Self {
        Self(
            waker.data() as usize,
            std::ptr::from_ref(waker.vtable()) as usize,
        )
    }
}

/// Deadlines that fall due at one instant, on one runtime.
struct Group {
    runtime: Id,
    /// The deadline of the member that opened it.
    first: Instant,
    /// When it fires: `first + slack`.
    at: Instant,
    slack: Duration,
    waiters: Arc<Waiters>,
    /// Registered once, by the group's first member; cancelled when the
    /// group is dropped unfired. Polled without tokio's cooperative
    /// budget: a budget spent would wake the group at once.
    _timer: Pin<Box<Unconstrained<Sleep>>>,
}

/// What the group's timer wakes: every member's waker.
#[derive(Default)]
struct Waiters {
    /// Set under `slots`' lock, so that a member that finds it unset there
    /// has its waker in the slots the wake takes.
    fired: AtomicBool,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks can panic half-way; a poisoned lock holds
    // consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How late a deadline `wait` from now may be kept, or `None` when it is
/// too near to share.
///
/// Whole milliseconds (tokio's resolution): waits a few microseconds
/// apart (an attempt's, read from the clock when its alarm is set) get
/// the same slack, and so the same groups.
fn slack(wait: Duration) -> Option<Duration> {
    let millis = u64::try_from(wait.as_millis() >> SLACK_SHIFT).unwrap_or(u64::MAX);
    let slack = Duration::from_millis(millis).min(MAX_SLACK);
    (slack >= MIN_SLACK).then_some(slack)
}

/// Watches `deadline`, `wait` after the future it bounds was made, for
/// the task `cx` wakes: in an open group due within the slack after it, or
/// in a new one. `None` when the wait is too short to share, the deadline
/// is too near the end of the clock's range, or no tokio runtime is
/// current: the caller keeps a timer of its own.
pub(crate) fn watch(deadline: Instant, wait: Duration, cx: &Context<'_>) -> Option<Watch> {
    watch_in(&SHARDS[stripe::index()].0, deadline, wait, cx)
}

/// [`watch`] with the open groups of `shard`.
fn watch_in(
    shard: &Mutex<Open>,
    deadline: Instant,
    wait: Duration,
    cx: &Context<'_>,
) -> Option<Watch> {
    let slack = slack(wait)?;
    let runtime = Handle::try_current().ok()?.id();
    // Cloned before any lock is taken: a waker's clone and drop may run
    // code of its executor's.
    let waker = cx.waker().clone();
    let mut open = lock(shard);
    // The newest group first (a new one takes the first place): with one
    // timeout, the one that fits.
    for group in open.iter().flatten() {
        // Due between the group's first deadline and its instant, which
        // is that deadline plus a slack no larger than this one's: late by
        // at most this one's slack. Instants and durations compared, none
        // added or subtracted (each costs more than all the comparisons).
        // A group that fired is passed over here, let go of below.
        let fits = group.runtime == runtime
            && group.first <= deadline
            && deadline <= group.at
            && group.slack <= slack
            && !group.waiters.fired.load(Ordering::Acquire);
        if fits {
            return Group::join(group, waker);
        }
    }
    // Groups let go of: those that fired, and the one whose place a new
    // group takes. Dropped once the lock is released: the last reference
    // to a group cancels its timer in tokio's driver, and may free a
    // runtime's handle.
    let mut released: Open = [const { None }; OPEN];
    for (entry, gone) in open.iter_mut().zip(released.iter_mut()) {
        if entry
            .as_ref()
            .is_some_and(|g| g.waiters.fired.load(Ordering::Acquire))
        {
            *gone = entry.take();
        }
    }
    let Some(group) = Group::start(runtime, deadline, slack) else {
        drop(open);
        drop(released);
        return None;
    };
    let watch = Group::join(&group, waker);
    // The new group takes an empty place, else the place of the group due
    // first, whatever its runtime: new deadlines come later, so that one
    // is the least likely to be joined again (each runtime keeps its
    // newest group when two share a shard). The groups before that place
    // move up one, and the new group goes first.
    let place = (0..OPEN)
        .min_by_key(|&i| open[i].as_ref().map(|other| other.at))
        .unwrap_or(0);
    open[..=place].rotate_right(1);
    let evicted = open[0].replace(group);
    drop(open);
    drop(evicted);
    drop(released);
    watch
}

impl Group {
    /// A group for deadlines from `first` on, due `slack` after it, its
    /// timer registered on the current runtime; `None` when that instant
    /// is too near the end of the clock's range (tokio rounds a timer's
    /// instant up by most of a millisecond) or has passed already.
    fn start(runtime: Id, first: Instant, slack: Duration) -> Option<Arc<Self>> {
        let at = first.checked_add(slack)?;
        at.checked_add(MIN_SLACK)?;
        let waiters = Arc::new(Waiters::default());
        let mut timer = Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(at)));
        let waker = Waker::from(waiters.clone());
        if timer
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return None;
        }
        Some(Arc::new(Self {
            runtime,
            first,
            at,
            slack,
            waiters,
            _timer: timer,
        }))
    }

    /// Leaves `waker` in the group; `None` once it has fired (found
    /// unfired in the open list, it can have fired since, on its runtime's
    /// timer thread).
    fn join(group: &Arc<Self>, waker: Waker) -> Option<Watch> {
        // The identity of the clone kept: while it is held, no other
        // waker can take its address.
        let id = WakerId::of(&waker);
        let mut slots = lock(&group.waiters.slots);
        if group.waiters.fired.load(Ordering::Acquire) {
            return None;
        }
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(slots.wakers.len()).ok()?;
                slots.wakers.push(None);
                slot
            }
        };
        let place = slots.wakers.get_mut(slot as usize)?;
        // The place is empty: nothing is dropped under the lock.
        *place = Some(waker);
        drop(slots);
        Some(Watch {
            group: group.clone(),
            slot,
            waker: id,
        })
    }
}

impl Watch {
    /// Ready once the group has fired: at its instant, or earlier if the
    /// runtime that keeps its timer shut down (the caller reads the clock
    /// to tell). Until then, the waker of `cx` is the one woken.
    pub(crate) fn poll_fired(&mut self, cx: &Context<'_>) -> Poll<()> {
        let waiters = &self.group.waiters;
        if waiters.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.waker != WakerId::of(cx.waker()) {
            let waker = cx.waker().clone();
            let id = WakerId::of(&waker);
            let mut slots = lock(&waiters.slots);
            if waiters.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let old = slots
                .wakers
                .get_mut(self.slot as usize)
                .and_then(|place| place.replace(waker));
            drop(slots);
            // Dropped out of the lock.
            drop(old);
            self.waker = id;
        }
        Poll::Pending
    }

    /// Whether `other` waits in the same group, for tests.
    #[cfg(test)]
    fn shares_with(&self, other: &Watch) -> bool {
        Arc::ptr_eq(&self.group, &other.group)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut slots = lock(&self.group.waiters.slots);
        let slot = self.slot;
        // Empty once the group fired: its wakers were taken.
        let waker = slots.wakers.get_mut(slot as usize).and_then(Option::take);
        if waker.is_some() {
            slots.free.push(slot);
        }
        drop(slots);
        // Dropped out of the lock.
        drop(waker);
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = {
            let mut slots = lock(&self.slots);
            self.fired.store(true, Ordering::Release);
            slots.free.clear();
            std::mem::take(&mut slots.wakers)
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("at", &self.group.at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its wakes.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    fn wakes(counter: &Counter) -> usize {
        counter.0.load(Ordering::Relaxed)
    }

    const WAIT: Duration = Duration::from_secs(15);

    /// Open groups of a test's own: the shared shards are also used by
    /// the tests that run beside it.
    fn private() -> &'static Mutex<Open> {
        Box::leak(Box::new(Mutex::new([const { None }; OPEN])))
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_within_the_slack_share_one_timer_that_fires_late_by_at_most_the_slack() {
        let shard = private();
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let start = Instant::now();
        let mut a = watch_in(
            shard,
            start + WAIT,
            WAIT,
            &Context::from_waker(&first_waker),
        )
        .unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        let now = Instant::now();
        let mut b = watch_in(shard, now + WAIT, WAIT, &Context::from_waker(&second_waker)).unwrap();
        assert!(a.shares_with(&b), "deadlines 50 ms apart, slack 100 ms");
        // Past its slack after the first deadline, a third opens a group.
        tokio::time::advance(Duration::from_millis(120)).await;
        let later = Instant::now();
        let c = watch_in(
            shard,
            later + WAIT,
            WAIT,
            &Context::from_waker(&second_waker),
        )
        .unwrap();
        assert!(!a.shares_with(&c));

        tokio::time::sleep_until(start + WAIT - Duration::from_millis(1)).await;
        assert_eq!((wakes(&first), wakes(&second)), (0, 0), "fired early");
        assert!(
            a.poll_fired(&Context::from_waker(&first_waker))
                .is_pending()
        );
        tokio::time::sleep_until(start + WAIT + MAX_SLACK).await;
        assert_eq!((wakes(&first), wakes(&second)), (1, 1));
        assert!(a.poll_fired(&Context::from_waker(&first_waker)).is_ready());
        assert!(b.poll_fired(&Context::from_waker(&second_waker)).is_ready());
        // Both deadlines had passed when their group fired.
        assert!(Instant::now() >= now + WAIT);
        drop(c);
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_gone_is_not_woken_and_its_slot_serves_the_next() {
        let shard = private();
        let (gone, gone_waker) = counter();
        let (kept, kept_waker) = counter();
        let deadline = Instant::now() + WAIT;
        let left = watch_in(shard, deadline, WAIT, &Context::from_waker(&gone_waker)).unwrap();
        let slot = left.slot;
        drop(left);
        let stays = watch_in(shard, deadline, WAIT, &Context::from_waker(&kept_waker)).unwrap();
        assert_eq!(stays.slot, slot);
        tokio::time::sleep(WAIT + MAX_SLACK).await;
        assert_eq!((wakes(&gone), wakes(&kept)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waker_of_the_latest_poll_is_the_one_woken() {
        let shard = private();
        let (old, old_waker) = counter();
        let (new, new_waker) = counter();
        let mut member = watch_in(
            shard,
            Instant::now() + WAIT,
            WAIT,
            &Context::from_waker(&old_waker),
        )
        .unwrap();
        assert!(
            member
                .poll_fired(&Context::from_waker(&new_waker))
                .is_pending()
        );
        tokio::time::sleep(WAIT + MAX_SLACK).await;
        assert_eq!((wakes(&old), wakes(&new)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn short_waits_keep_a_timer_of_their_own() {
        let shard = private();
        let (_, waker) = counter();
        let cx = Context::from_waker(&waker);
        let short = Duration::from_millis(63);
        assert!(watch_in(shard, Instant::now() + short, short, &cx).is_none());
        let long = Duration::from_millis(64);
        assert!(watch_in(shard, Instant::now() + long, long, &cx).is_some());
        // A deadline far off is kept in a group too.
        assert!(
            watch_in(
                shard,
                Instant::now() + crate::time::FAR_FUTURE,
                Duration::MAX,
                &cx
            )
            .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_at_the_end_of_the_clock_is_not_grouped() {
        let shard = private();
        let (_, waker) = counter();
        // The latest instant the clock can hold, to the millisecond.
        let mut last = Instant::now();
        let mut step = Duration::from_secs(1 << 62);
        while step >= Duration::from_millis(1) {
            if let Some(later) = last.checked_add(step) {
                last = later;
            } else {
                step /= 2;
            }
        }
        for before in [0, 1, 50, 98, 99, 100, 101, 102, 103, 200] {
            let deadline = last - Duration::from_millis(before);
            // No panic in tokio's rounding of the group's instant, which
            // is 100 ms after the deadline.
            let watched = watch_in(shard, deadline, WAIT, &Context::from_waker(&waker));
            if before < 99 {
                assert!(watched.is_none(), "{before} ms before the end");
            }
            if before > 102 {
                assert!(watched.is_some(), "{before} ms before the end");
            }
        }
    }

    #[test]
    fn no_runtime_no_group() {
        let shard = private();
        let (_, waker) = counter();
        let now = Instant::now();
        assert!(watch_in(shard, now + WAIT, WAIT, &Context::from_waker(&waker)).is_none());
    }

    #[test]
    fn a_group_is_joined_only_on_its_own_runtime_and_fires_when_that_runtime_shuts_down() {
        let shard = private();
        let build = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let (first, first_waker) = counter();
        let (_, second_waker) = counter();
        let deadline = Instant::now() + WAIT;
        let one = build();
        let mut a = one
            .block_on(async { watch_in(shard, deadline, WAIT, &Context::from_waker(&first_waker)) })
            .unwrap();
        let other = build();
        let b = other
            .block_on(async {
                watch_in(shard, deadline, WAIT, &Context::from_waker(&second_waker))
            })
            .unwrap();
        assert!(!a.shares_with(&b), "one group per runtime");
        drop(one);
        // Its timer fired as the runtime shut down, long before the deadline.
        assert_eq!(wakes(&first), 1);
        assert!(a.poll_fired(&Context::from_waker(&first_waker)).is_ready());
        assert!(Instant::now() < deadline);
        drop(other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fired_group_takes_no_new_member() {
        let shard = private();
        let (_, waker) = counter();
        let deadline = Instant::now() + WAIT;
        let mut early = watch_in(shard, deadline, WAIT, &Context::from_waker(&waker)).unwrap();
        poll_fn(|cx| early.poll_fired(cx)).await;
        // The same deadline fits the fired group, which must not take it:
        // a member that joined it now would never be woken. A group of its
        // own would be due already, so there is none.
        let late = watch_in(shard, deadline, WAIT, &Context::from_waker(&waker));
        assert!(late.is_none_or(|late| !late.shares_with(&early)));
        // And the open list let go of it.
        assert!(
            lock(shard)
                .iter()
                .flatten()
                .all(|g| !Arc::ptr_eq(g, &early.group)),
            "a fired group is still open"
        );
        assert_eq!(Arc::strong_count(&early.group), 1, "only `early` holds it");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_microseconds_apart_share_a_group() {
        let shard = private();
        let (_, waker) = counter();
        let cx = Context::from_waker(&waker);
        let deadline = Instant::now() + Duration::from_secs(5);
        // An attempt's wait is read when its alarm is set, a little later
        // for each: the same slack, whole milliseconds.
        let first = watch_in(shard, deadline, Duration::from_secs(5), &cx).unwrap();
        let later = Duration::from_secs(5) - Duration::from_micros(3);
        let next = watch_in(shard, deadline, later, &cx).unwrap();
        assert!(first.shares_with(&next));
    }

    #[test]
    fn two_runtimes_on_one_shard_each_keep_their_newest_group() {
        let shard = private();
        let (_, waker) = counter();
        let runtimes = [(); 2].map(|()| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        });
        let mut kept: [Vec<Watch>; 2] = Default::default();
        let mut groups = 0;
        for i in 0..100 {
            let runtime = i % 2;
            let watch = runtimes[runtime]
                .block_on(async {
                    tokio::time::advance(Duration::from_millis(10)).await;
                    watch_in(
                        shard,
                        Instant::now() + WAIT,
                        WAIT,
                        &Context::from_waker(&waker),
                    )
                })
                .unwrap();
            if kept[runtime]
                .last()
                .is_none_or(|last| !last.shares_with(&watch))
            {
                groups += 1;
            }
            kept[runtime].push(watch);
        }
        // 50 deadlines 10 ms apart on each runtime, over 500 ms, a group
        // per 100 ms of them: five or six each, were they not evicted by
        // the other runtime's.
        assert!(groups <= 14, "{groups} groups for 100 deadlines");
    }
}
