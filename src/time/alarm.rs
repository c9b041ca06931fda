//! One future's deadline: set at its first poll that finds no answer, in a
//! shared group of deadlines where one fits (`group.rs`), else with a
//! timer of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::group::{self, Watch};

/// A deadline, kept once the future it bounds first waits.
///
/// Set at the first unanswered poll, not when made: an answer at once
/// needs no timer, and a future may be made outside the runtime that polls
/// it. A timer of its own is boxed: it is the rare case (a short wait, a
/// group whose runtime shut down), and the futures that hold an alarm are
/// moved whole, so a small alarm keeps them small.
pub(crate) enum Alarm {
    /// No deadline.
    Off,
    /// Due at `deadline`, `wait` after the future was made (when known:
    /// else measured from the clock when set); not set.
    Later {
        deadline: Instant,
        wait: Option<Duration>,
    },
    /// Kept by a group, which fires at most a slack after `deadline`.
    Shared { watch: Watch, deadline: Instant },
    /// Kept by a timer of its own.
    Own { sleep: Pin<Box<Sleep>> },
}

impl Alarm {
    /// An alarm due at `deadline`, `wait` from now.
    pub(crate) fn at(deadline: Instant, wait: Duration) -> Self {
        Self::Later {
            deadline,
            wait: Some(wait),
        }
    }

    /// An alarm due at `deadline`, its wait read from the clock only if it
    /// is set: most futures are answered first, and the subtraction of two
    /// instants is not free.
    pub(crate) fn until(deadline: Instant) -> Self {
        Self::Later {
            deadline,
            wait: None,
        }
    }

    /// Ready once the deadline has passed; sets the alarm at its first
    /// poll. An alarm that is off is never ready. Like tokio's own timers,
    /// an alarm needs a tokio runtime (with its timer) current when it is
    /// set, and again if its group fired early and it takes a timer of its
    /// own.
    #[inline]
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Off for every request whose caller bounds it: no call for that.
        if let Self::Off = self {
            return Poll::Pending;
        }
        self.poll_set(cx)
    }

    /// [`poll_due`](Self::poll_due) for an alarm that is set.
    fn poll_set(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Self::Off => return Poll::Pending,
                Self::Later { deadline, wait } => {
                    let deadline = *deadline;
                    let wait =
                        wait.unwrap_or_else(|| deadline.saturating_duration_since(Instant::now()));
                    match group::watch(deadline, wait, cx) {
                        Some(watch) => {
                            // Its waker is in the group already.
                            *self = Self::Shared { watch, deadline };
                            return Poll::Pending;
                        }
                        None => *self = Self::own(deadline),
                    }
                }
                Self::Shared { watch, deadline } => {
                    if watch.poll_fired(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let deadline = *deadline;
                    if Instant::now() >= deadline {
                        return Poll::Ready(());
                    }
                    // Fired early: the runtime that kept the group's timer
                    // shut down. This one keeps its own from here.
                    *self = Self::own(deadline);
                }
                Self::Own { sleep } => return sleep.as_mut().poll(cx),
            }
        }
    }

    fn own(deadline: Instant) -> Self {
        // tokio rounds a timer's instant up to its next millisecond, which
        // overflows at the very end of the clock's range: a deadline that
        // far is kept at the crate's far future instead.
        let deadline = deadline.min(super::after(super::FAR_FUTURE));
        Self::Own {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Waker;

    use super::*;

    const WAIT: Duration = Duration::from_secs(15);

    async fn due(alarm: &mut Alarm) {
        poll_fn(|cx| alarm.poll_due(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_rings_after_its_deadline_and_at_most_the_slack_late() {
        // Its wait given, or read from the clock when it is set.
        for wait in [Some(WAIT), None] {
            let start = Instant::now();
            let mut alarm = match wait {
                Some(wait) => Alarm::at(start + WAIT, wait),
                None => Alarm::until(start + WAIT),
            };
            due(&mut alarm).await;
            let rang = start.elapsed();
            assert!(
                rang >= WAIT && rang <= WAIT + group::MAX_SLACK,
                "rang after {rang:?} ({wait:?})"
            );
            assert!(matches!(alarm, Alarm::Shared { .. }));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_alarm_rings_on_time_with_a_timer_of_its_own() {
        let start = Instant::now();
        let wait = Duration::from_millis(20);
        let mut alarm = Alarm::at(start + wait, wait);
        due(&mut alarm).await;
        assert_eq!(start.elapsed(), wait);
        assert!(matches!(alarm, Alarm::Own { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_that_is_off_never_rings() {
        let mut alarm = Alarm::Off;
        let rang = tokio::time::timeout(WAIT * 10, due(&mut alarm)).await;
        assert!(rang.is_err());
    }

    #[test]
    fn an_alarm_whose_group_lost_its_runtime_rings_on_the_next_one() {
        let build = |paused: bool| {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time();
            if paused {
                builder.start_paused(true);
            }
            builder.build().unwrap()
        };
        let first = build(false);
        let start = Instant::now();
        let deadline = start + WAIT;
        let mut alarm = Alarm::at(deadline, WAIT);
        // Set on the first runtime, then that runtime is gone.
        first.block_on(async {
            let polled = alarm.poll_due(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending());
        });
        assert!(matches!(alarm, Alarm::Shared { .. }));
        drop(first);
        // The group fired at the shutdown; the alarm does not ring early.
        let next = build(true);
        next.block_on(async {
            let polled = alarm.poll_due(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending(), "rang before its deadline");
            assert!(matches!(alarm, Alarm::Own { .. }));
            due(&mut alarm).await;
            assert!(Instant::now() >= deadline);
        });
    }
}
