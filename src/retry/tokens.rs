//! The retry budget's account: tokens earned by calls and spent by
//! retries over a sliding window, as Finagle's and tower's `TpsBudget`
//! keep them, with a deposit that takes no lock.
//!
//! Every call deposits, so the deposit is on the hot path: it reads the
//! clock the call already read, and takes the lock only when the current
//! slot of the window has run out (once per tenth of the window), where a
//! lock per deposit is what tower's budget takes.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::time::saturating_nanos;

/// Slots the window is cut into.
const SLOTS: usize = 10;

/// A sliding window of retry tokens.
pub(crate) struct Tokens {
    /// Tokens a deposit adds and a withdrawal takes: a withdrawal costs
    /// `1 / ratio` deposits (scaled by 1,000 past a ratio of 1).
    deposit: i64,
    withdraw: i64,
    /// The floor: `min_per_sec` withdrawals for every second of the window.
    reserve: i64,
    /// How long one slot is current.
    slot: Duration,
    /// The clock reading the nanosecond counts below are taken from.
    base: Instant,
    /// When the current slot runs out, in nanoseconds from `base`: a
    /// deposit before it only adds to `current`.
    next: AtomicU64,
    /// The current slot's net tokens, not yet committed to `slots`.
    current: AtomicI64,
    /// The committed slots, and which is the current one (the next to be
    /// committed): changed under the lock only.
    slots: [AtomicI64; SLOTS],
    turn: Mutex<Turn>,
}

/// The current slot and when it started.
#[derive(Debug)]
struct Turn {
    index: usize,
    started: Instant,
}

impl Tokens {
    /// Withdrawals allowed for `ratio` of the deposits of the last `ttl`
    /// plus `min_per_sec` per second (checked by `RetryBudget::check`:
    /// `ttl` within 1 to 60 s, `ratio` within 0 to 1,000).
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> Self {
        let (deposit, withdraw) = if ratio <= 0.0 {
            // Deposits earn nothing: only the floor pays.
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as i64)
        } else {
            (1000, (1000.0 / ratio) as i64)
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
            .saturating_mul(withdraw);
        let slot = (ttl / SLOTS as u32).max(Duration::from_nanos(1));
        let base = Instant::now();
        Self {
            deposit,
            withdraw,
            reserve,
            slot,
            base,
            next: AtomicU64::new(saturating_nanos(slot)),
            current: AtomicI64::new(0),
            slots: Default::default(),
            turn: Mutex::new(Turn {
                index: 0,
                started: base,
            }),
        }
    }

    /// Counts a call made at `now`.
    #[inline]
    pub(crate) fn deposit(&self, now: Instant) {
        if saturating_nanos(now.saturating_duration_since(self.base))
            >= self.next.load(Ordering::Acquire)
        {
            self.expire(now);
        }
        self.current.fetch_add(self.deposit, Ordering::AcqRel);
    }

    /// Takes the tokens of one retry at `now`; false when there are not
    /// enough.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        self.expire(now);
        if self.balance() < self.withdraw {
            return false;
        }
        self.current.fetch_sub(self.withdraw, Ordering::AcqRel);
        true
    }

    /// The tokens in the window, the floor included.
    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .fold(self.current.load(Ordering::Acquire), i64::saturating_add)
            .saturating_add(self.reserve)
    }

    /// Moves the window on to `now`: the current slot's tokens are
    /// committed, the slots that went by since are emptied.
    #[cold]
    fn expire(&self, now: Instant) {
        // A poisoned lock only means another thread panicked while it held
        // it; the counters are atomics and stay consistent.
        let mut turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = now.saturating_duration_since(turn.started);
        if gone < self.slot {
            return;
        }
        let committed = self.current.swap(0, Ordering::AcqRel);
        self.slots[turn.index].store(committed, Ordering::Release);
        let mut index = (turn.index + 1) % SLOTS;
        // Slots no call fell in are emptied: at most the whole window.
        let mut emptied = 0;
        while gone > self.slot && emptied < SLOTS {
            self.slots[index].store(0, Ordering::Release);
            gone = gone.saturating_sub(self.slot);
            index = (index + 1) % SLOTS;
            emptied += 1;
        }
        turn.index = index;
        turn.started = now;
        let until = now
            .saturating_duration_since(self.base)
            .saturating_add(self.slot);
        self.next.store(saturating_nanos(until), Ordering::Release);
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("deposit", &self.deposit)
            .field("withdraw", &self.withdraw)
            .field("balance", &self.balance())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deposits_pay_for_retries_until_they_leave_the_window() {
        // 20%, no floor: five calls pay for one retry, for 10 s.
        let tokens = Tokens::new(Duration::from_secs(10), 0, 0.2);
        assert!(!tokens.withdraw(Instant::now()));
        for _ in 0..10 {
            tokens.deposit(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(tokens.withdraw(Instant::now()));
        assert!(tokens.withdraw(Instant::now()));
        assert!(!tokens.withdraw(Instant::now()));
        let later = Tokens::new(Duration::from_secs(10), 0, 0.2);
        for _ in 0..10 {
            later.deposit(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!later.withdraw(Instant::now()), "left the window");
    }

    /// The same answers as tower's `TpsBudget` (the budget this one keeps
    /// the rules of) for a long run of calls, retries and waits.
    #[tokio::test(start_paused = true)]
    async fn it_answers_as_tower_s_budget_does() {
        use tower::retry::budget::{Budget, TpsBudget};
        // The last two grant every retry and none: a check of the edges.
        let runs = [
            (10, 0, 0.2, true),
            (1, 3, 0.5, true),
            (5, 1, 2.0, false),
            (60, 0, 0.0, false),
        ];
        for (ttl, floor, ratio, mixed) in runs {
            let ttl = Duration::from_secs(ttl);
            let ours = Tokens::new(ttl, floor, ratio);
            let tower = TpsBudget::new(ttl, floor, ratio);
            let mut state: u64 = 0x2545_f491_4f6c_dd1d;
            let mut answers = [0u32; 2];
            for step in 0..5_000 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                match (state >> 33) % 10 {
                    0..=5 => {
                        ours.deposit(Instant::now());
                        tower.deposit();
                    }
                    6 | 7 => {
                        let now = Instant::now();
                        let granted = ours.withdraw(now);
                        assert_eq!(granted, tower.withdraw(), "step {step}");
                        answers[usize::from(granted)] += 1;
                    }
                    _ => {
                        let wait = Duration::from_millis((state >> 40) % 3_000);
                        tokio::time::advance(wait).await;
                    }
                }
            }
            // Both answers came up: the run tells the two apart.
            assert!(!mixed || answers.iter().all(|&n| n > 0), "{answers:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_pays_without_deposits() {
        // One a second over 1 s: one retry, whatever the calls.
        let tokens = Tokens::new(Duration::from_secs(1), 1, 0.0);
        tokens.deposit(Instant::now());
        assert!(tokens.withdraw(Instant::now()));
        assert!(!tokens.withdraw(Instant::now()));
        // A ratio above 1: each call pays for two retries.
        let generous = Tokens::new(Duration::from_secs(1), 0, 2.0);
        generous.deposit(Instant::now());
        assert!(generous.withdraw(Instant::now()));
        assert!(generous.withdraw(Instant::now()));
        assert!(!generous.withdraw(Instant::now()));
    }
}
