//! Where an attempt went, told while it is being dispatched.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::Endpoint;

thread_local! {
    /// `Some` while a retry layer dispatches an attempt; then the endpoint
    /// noted for it, if any.
    static NOTED: RefCell<Option<Option<Endpoint>>> = const { RefCell::new(None) };

    /// The per-attempt timeout of the retry layer being polled, so the
    /// balancer below can tell an attempt cut short by it (the endpoint's
    /// failure) from one the caller abandoned.
    static ATTEMPT_TIMEOUT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Runs `f` with `timeout` as the attempt timeout in effect.
pub(crate) fn with_attempt_timeout<R>(timeout: Option<Duration>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Duration>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ATTEMPT_TIMEOUT.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(ATTEMPT_TIMEOUT.with(|t| t.replace(timeout)));
    f()
}

/// The attempt timeout of the retry layer dispatching the current attempt.
pub(crate) fn attempt_timeout() -> Option<Duration> {
    ATTEMPT_TIMEOUT.with(Cell::get)
}

/// Tells an enclosing retry layer which endpoint the attempt being
/// dispatched goes to.
///
/// The retry layer learns an attempt's endpoint from its answer (the
/// [`Endpoint`] in the response's extensions, or the endpoint in
/// [`Error::Inner`](crate::Error::Inner)). An attempt still in flight (when
/// hedging) or cut short by a timeout has no answer: for those, a layer
/// below the retry layer that picks or knows the endpoint can call this,
/// synchronously inside its `Service::call`, and the hedge or the next
/// retry avoids that endpoint. Outside a retry layer's dispatch it does
/// nothing.
///
/// ```
/// use tower_lb::Endpoint;
///
/// // In a custom balancing layer's `call`, once the endpoint is chosen:
/// let chosen = Endpoint::new("10.0.0.7:8080")?;
/// tower_lb::retry::note_endpoint(&chosen);
/// # Ok::<(), tower_lb::EndpointError>(())
/// ```
pub fn note_endpoint(endpoint: &Endpoint) {
    NOTED.with(|noted| {
        if let Ok(mut noted) = noted.try_borrow_mut()
            && let Some(slot) = noted.as_mut()
        {
            *slot = Some(endpoint.clone());
        }
    });
}

/// Runs `dispatch`, returning what it returned and the endpoint noted
/// meanwhile.
pub(crate) fn watch<R>(dispatch: impl FnOnce() -> R) -> (R, Option<Endpoint>) {
    let outer = NOTED.with(|noted| noted.replace(Some(None)));
    // Restores the outer state even if `dispatch` panics.
    struct Restore(Option<Option<Endpoint>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            NOTED.with(|noted| {
                if let Ok(mut noted) = noted.try_borrow_mut() {
                    *noted = outer;
                }
            });
        }
    }
    let restore = Restore(outer);
    let result = dispatch();
    let endpoint = NOTED.with(|noted| {
        noted
            .try_borrow_mut()
            .ok()
            .and_then(|mut noted| noted.as_mut().and_then(Option::take))
    });
    drop(restore);
    (result, endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noted_only_while_watching() {
        let a = Endpoint::new("10.0.0.1:80").unwrap();
        note_endpoint(&a);
        let ((), seen) = watch(|| ());
        assert_eq!(seen, None);
        let ((), seen) = watch(|| note_endpoint(&a));
        assert_eq!(seen, Some(a.clone()));
        // Nested: the inner watch does not leak into the outer.
        let b = Endpoint::new("10.0.0.2:80").unwrap();
        let (inner, outer) = watch(|| watch(|| note_endpoint(&b)).1);
        assert_eq!(inner, Some(b));
        assert_eq!(outer, None);
    }
}
