//! Deadlines kept in groups: futures whose deadlines fall within a small
//! slack of each other share one tokio timer.
//!
//! A timer of one's own per request costs its registration in tokio's
//! timer wheel and its removal again when the answer comes first, as it
//! nearly always does: about 640 instructions a request, the largest part
//! of what the balance layer adds to a call. A group's timer is registered
//! once for every request that joins it, and a request that joins only
//! leaves its waker in the group, under a lock of its thread's shard.
//!
//! A group fires at most 1/64 of the wait late, and never more than
//! [`MAX_SLACK`]: a 15-second timeout ends between 15 and 15.1 seconds.
//! Waits shorter than 64 ms keep a timer of their own (no slack is small
//! enough to be worth sharing below tokio's millisecond).
//!
//! A group belongs to the tokio runtime that registered its timer, and
//! only futures polled on that runtime join it. When that runtime shuts
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
    at: Instant,
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
fn slack(wait: Duration) -> Option<Duration> {
    let slack = (wait / (1 << SLACK_SHIFT)).min(MAX_SLACK);
    (slack >= MIN_SLACK).then_some(slack)
}

/// Watches `deadline`, `wait` after now, for the task `cx` wakes: in an
/// open group due within the slack after it, or in a new one. `None` when
/// the wait is too short to share or no tokio runtime is current: the
/// caller keeps a timer of its own.
pub(crate) fn watch(deadline: Instant, wait: Duration, cx: &Context<'_>) -> Option<Watch> {
    let slack = slack(wait)?;
    let runtime = Handle::try_current().ok()?.id();
    // The latest a group may fire for this deadline; instants compared,
    // not subtracted (a subtraction of two instants is dearer).
    let latest = deadline.checked_add(slack)?;
    let mut open = lock(&SHARDS[stripe::index()].0);
    for group in open.iter().flatten() {
        let fits = group.runtime == runtime && deadline <= group.at && group.at <= latest;
        if fits && let Some(watch) = Group::join(group, cx) {
            return Some(watch);
        }
    }
    let group = Group::start(runtime, latest)?;
    let watch = Group::join(&group, cx);
    // The new group takes the place of the one due first.
    let oldest = (0..OPEN)
        .min_by_key(|&i| open[i].as_ref().map(|g| g.at))
        .unwrap_or(0);
    open[oldest] = Some(group);
    watch
}

impl Group {
    /// A group due `at`, its timer registered on the current runtime; `None`
    /// when `at` has passed already.
    fn start(runtime: Id, at: Instant) -> Option<Arc<Self>> {
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
            at,
            waiters,
            _timer: timer,
        }))
    }

    /// Leaves `cx`'s waker in the group; `None` once it has fired.
    fn join(group: &Arc<Self>, cx: &Context<'_>) -> Option<Watch> {
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
        *place = Some(cx.waker().clone());
        Some(Watch {
            group: group.clone(),
            slot,
            waker: WakerId::of(cx.waker()),
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
        let waker = WakerId::of(cx.waker());
        if self.waker != waker {
            let mut slots = lock(&waiters.slots);
            if waiters.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            if let Some(place) = slots.wakers.get_mut(self.slot as usize) {
                *place = Some(cx.waker().clone());
            }
            self.waker = waker;
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
        if let Some(place) = slots.wakers.get_mut(slot as usize)
            && place.take().is_some()
        {
            slots.free.push(slot);
        }
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

    #[tokio::test(start_paused = true)]
    async fn deadlines_within_the_slack_share_one_timer_that_fires_late_by_at_most_the_slack() {
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let start = Instant::now();
        let mut a = watch(start + WAIT, WAIT, &Context::from_waker(&first_waker)).unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        let now = Instant::now();
        let mut b = watch(now + WAIT, WAIT, &Context::from_waker(&second_waker)).unwrap();
        assert!(a.shares_with(&b), "deadlines 50 ms apart, slack 100 ms");
        // Past its slack after the first deadline, a third opens a group.
        tokio::time::advance(Duration::from_millis(120)).await;
        let later = Instant::now();
        let c = watch(later + WAIT, WAIT, &Context::from_waker(&second_waker)).unwrap();
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
        let (gone, gone_waker) = counter();
        let (kept, kept_waker) = counter();
        let deadline = Instant::now() + WAIT;
        let left = watch(deadline, WAIT, &Context::from_waker(&gone_waker)).unwrap();
        let slot = left.slot;
        drop(left);
        let stays = watch(deadline, WAIT, &Context::from_waker(&kept_waker)).unwrap();
        assert_eq!(stays.slot, slot);
        tokio::time::sleep(WAIT + MAX_SLACK).await;
        assert_eq!((wakes(&gone), wakes(&kept)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waker_of_the_latest_poll_is_the_one_woken() {
        let (old, old_waker) = counter();
        let (new, new_waker) = counter();
        let mut member = watch(
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
        let (_, waker) = counter();
        let cx = Context::from_waker(&waker);
        let short = Duration::from_millis(63);
        assert!(watch(Instant::now() + short, short, &cx).is_none());
        let long = Duration::from_millis(64);
        assert!(watch(Instant::now() + long, long, &cx).is_some());
        // A deadline far off is kept in a group too.
        assert!(watch(Instant::now() + crate::time::FAR_FUTURE, Duration::MAX, &cx).is_some());
    }

    #[test]
    fn no_runtime_no_group() {
        let (_, waker) = counter();
        let now = Instant::now();
        assert!(watch(now + WAIT, WAIT, &Context::from_waker(&waker)).is_none());
    }

    #[test]
    fn a_group_is_joined_only_on_its_own_runtime_and_fires_when_that_runtime_shuts_down() {
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
            .block_on(async { watch(deadline, WAIT, &Context::from_waker(&first_waker)) })
            .unwrap();
        let other = build();
        let b = other
            .block_on(async { watch(deadline, WAIT, &Context::from_waker(&second_waker)) })
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
        let (_, waker) = counter();
        let deadline = Instant::now() + WAIT;
        let mut early = watch(deadline, WAIT, &Context::from_waker(&waker)).unwrap();
        poll_fn(|cx| early.poll_fired(cx)).await;
        // A deadline the fired group would have fitted gets a new group.
        let now = Instant::now();
        let late = watch(now + WAIT, WAIT, &Context::from_waker(&waker)).unwrap();
        assert!(!late.shares_with(&early));
    }
}
