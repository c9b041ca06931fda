//! Starting the background task, and starting it again after the runtime
//! it ran on shut down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use tokio::task::AbortHandle;

use crate::discover::BoxDiscover;
use crate::pool::{Pool, Shared, driver};

/// The source waits here until a tokio runtime is at hand to run it: before
/// the first pick, and again after the runtime it ran on shut down.
pub(super) enum DriverSlot {
    Waiting(BoxDiscover),
    Running(AbortHandle),
    Taken,
}

impl Pool {
    /// Starts the background task if it has not started and a tokio runtime
    /// is at hand. Building a pool outside a runtime is allowed; the task
    /// then starts on first use.
    #[inline]
    pub(super) fn ensure_started(&self) {
        if !self.shared.started.load(Ordering::Acquire) {
            self.start_driver();
        }
    }

    #[cold]
    fn start_driver(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let source = {
            let mut slot = self.shared.driver();
            match std::mem::replace(&mut *slot, DriverSlot::Taken) {
                DriverSlot::Waiting(source) => source,
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        // Spawned without the lock: a runtime that is shutting down drops
        // the task at once, and the source's home parks it back in the slot.
        let weak = Arc::downgrade(&self.shared);
        let home = driver::SourceHome::new(weak.clone(), source);
        let task = runtime.spawn(driver::drive(weak, home, self.shared.driver_config.clone()));
        let mut slot = self.shared.driver();
        // Unless the task was dropped (and its source parked) already.
        if let DriverSlot::Taken = &*slot {
            *slot = DriverSlot::Running(task.abort_handle());
            self.shared.started.store(true, Ordering::Release);
        }
    }
}

impl Shared {
    /// Takes the source back from a background task that is being dropped
    /// with the pool still in use (its runtime shut down): the next pick,
    /// on whatever runtime it runs, starts the task again.
    pub(crate) fn park_source(&self, source: BoxDiscover) {
        *self.driver() = DriverSlot::Waiting(source);
        self.started.store(false, Ordering::Release);
    }

    /// The driver slot. Nothing panics while holding it, so a poisoned
    /// lock still guards a consistent slot.
    fn driver(&self) -> MutexGuard<'_, DriverSlot> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A poisoned lock still holds a valid slot; the task must stop anyway.
        let slot = match self.driver.get_mut() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let DriverSlot::Running(task) = slot {
            task.abort();
        }
    }
}
