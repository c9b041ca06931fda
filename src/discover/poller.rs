use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::discover::{Discover, Update};
use crate::{BoxError, Endpoint};

/// Calls an async function on an interval and turns changes in its answer
/// into updates: the first answer becomes a [`Update::Replace`], later ones
/// the [`Update::Insert`]s and [`Update::Remove`]s that differ. An unchanged
/// answer yields nothing; an error is reported to the pool, which keeps
/// its last good set.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::discover::Poller;
/// use tower_lb::{BoxError, Endpoint};
///
/// async fn ask_registry() -> Result<Vec<Endpoint>, BoxError> {
///     Ok(vec![Endpoint::new("10.0.0.7:8080")?])
/// }
///
/// let source = Poller::new(Duration::from_secs(10), ask_registry);
/// ```
pub struct Poller<F> {
    fetch: F,
    interval: Duration,
    next_at: Option<Instant>,
    known: Option<BTreeMap<String, Endpoint>>,
    /// The last fetch failed: the next good one must reach the pool even if
    /// nothing changed, or the pool would go on reporting itself stale.
    failed: bool,
}

impl<F, Fut, E> Poller<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<Endpoint>, E>> + Send,
    E: Into<BoxError>,
{
    /// Polls `fetch` now and then every `interval` (at least 1 ms).
    pub fn new(interval: Duration, fetch: F) -> Self {
        Self {
            fetch,
            interval: interval.max(Duration::from_millis(1)),
            next_at: None,
            known: None,
            failed: false,
        }
    }
}

impl<F> fmt::Debug for Poller<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("interval", &self.interval)
            .field("known", &self.known.as_ref().map(BTreeMap::len))
            .finish_non_exhaustive()
    }
}

impl<F, Fut, E> Discover for Poller<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<Endpoint>, E>> + Send,
    E: Into<BoxError>,
{
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        loop {
            // Scheduling from the start of the previous fetch, and sleeping
            // rather than ticking, means a slow registry delays the next poll
            // instead of causing a burst of catch-up polls.
            if let Some(at) = self.next_at {
                tokio::time::sleep_until(at).await;
            }
            self.next_at = Some(crate::time::after(self.interval));
            let fetched = match (self.fetch)().await {
                Ok(fetched) => fetched,
                Err(error) => {
                    self.failed = true;
                    return Err(error.into());
                }
            };
            let recovered = std::mem::take(&mut self.failed);
            let fetched: BTreeMap<String, Endpoint> = fetched
                .into_iter()
                .map(|e| (e.key().to_string(), e))
                .collect();
            let Some(known) = self.known.as_mut() else {
                let all = fetched.values().cloned().collect();
                self.known = Some(fetched);
                return Ok(Update::Replace(all));
            };
            if let Some(update) = diff(known, &fetched) {
                // After an empty answer (which the pool may refuse), resync
                // with a full replacement: a diff against nothing would only
                // insert, and an endpoint dropped meanwhile would never leave.
                self.known = if fetched.is_empty() {
                    None
                } else {
                    Some(fetched)
                };
                return Ok(update);
            }
            if recovered {
                // Unchanged, but the pool must hear that the source is back.
                return Ok(Update::Replace(fetched.into_values().collect()));
            }
        }
    }
}

/// The one update that turns `known` into `fetched`: inserts when only
/// additions or changes, removes when only removals, a replace when both.
fn diff(
    known: &BTreeMap<String, Endpoint>,
    fetched: &BTreeMap<String, Endpoint>,
) -> Option<Update> {
    let changed: Vec<Endpoint> = fetched
        .iter()
        .filter(|(k, e)| known.get(*k) != Some(e))
        .map(|(_, e)| e.clone())
        .collect();
    let removed: Vec<Endpoint> = known
        .iter()
        .filter(|(k, _)| !fetched.contains_key(*k))
        .map(|(_, e)| e.clone())
        .collect();
    if fetched.is_empty() && !known.is_empty() {
        // As a full (empty) replacement, so the pool's guard against being
        // emptied by a registry glitch applies; removes would bypass it.
        return Some(Update::Replace(Vec::new()));
    }
    match (changed.is_empty(), removed.is_empty()) {
        (true, true) => None,
        (false, true) => Some(Update::Insert(changed)),
        (true, false) => Some(Update::Remove(removed)),
        (false, false) => Some(Update::Replace(fetched.values().cloned().collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> BTreeMap<String, Endpoint> {
        keys.iter()
            .map(|k| {
                let e = Endpoint::new(k).unwrap();
                (e.key().to_string(), e)
            })
            .collect()
    }

    #[test]
    fn diff_yields_the_smallest_update() {
        let a = map(&["h:1", "h:2"]);
        assert_eq!(diff(&a, &a), None);
        assert!(
            matches!(diff(&a, &map(&["h:1", "h:2", "h:3"])), Some(Update::Insert(v)) if v.len() == 1)
        );
        assert!(matches!(diff(&a, &map(&["h:1"])), Some(Update::Remove(v)) if v.len() == 1));
        assert!(
            matches!(diff(&a, &map(&["h:1", "h:3"])), Some(Update::Replace(v)) if v.len() == 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_answer_is_followed_by_a_full_resync() {
        let answers = std::sync::Mutex::new(std::collections::VecDeque::from([
            vec!["h:1", "h:2"],
            vec![],
            vec!["h:1"],
        ]));
        let mut poller = Poller::new(Duration::from_millis(10), move || {
            let next = answers.lock().unwrap().pop_front().unwrap_or_default();
            let endpoints: Vec<Endpoint> = next.iter().map(|e| Endpoint::new(e).unwrap()).collect();
            async move { Ok::<_, BoxError>(endpoints) }
        });
        assert!(matches!(poller.next_update().await.unwrap(), Update::Replace(v) if v.len() == 2));
        assert!(matches!(poller.next_update().await.unwrap(), Update::Replace(v) if v.is_empty()));
        // The pool refused the empty set; the next answer replaces it whole,
        // so h:2 leaves even though no diff could name it.
        assert!(matches!(poller.next_update().await.unwrap(), Update::Replace(v) if v.len() == 1));
    }
}
