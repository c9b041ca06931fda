//! Which endpoints the next attempt avoids.

use crate::Endpoint;
use crate::balance::Avoid;

/// Updates the endpoints the next attempt avoids after one failed at
/// `endpoint` (already last in `tried`).
///
/// Every endpoint tried is avoided until the balancer sends an attempt to
/// an avoided one, which it does only when every endpoint is avoided:
/// then all `n` have been tried, and from there on the `n - 1` most recent
/// are avoided, so that attempts cycle through the endpoints, the least
/// recently tried first, and never repeat the last.
pub(super) fn steer(
    tried: &[Endpoint],
    avoid: &mut Avoid,
    window: &mut Option<usize>,
    endpoint: &Endpoint,
) {
    if window.is_none() && avoid.contains(endpoint) {
        *window = Some(avoid.len().saturating_sub(1));
    }
    let Some(keep) = *window else {
        avoid.insert(endpoint.clone());
        return;
    };
    let mut recent = Avoid::new();
    for endpoint in tried.iter().rev() {
        if recent.len() >= keep {
            break;
        }
        recent.insert(endpoint.clone());
    }
    *avoid = recent;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_cycles_once_every_endpoint_was_tried() {
        let [a, b, c] =
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|e| Endpoint::new(e).unwrap());
        let mut tried = Vec::new();
        let mut avoid = Avoid::new();
        let mut window = None;
        for endpoint in [&a, &b, &c] {
            tried.push(endpoint.clone());
            steer(&tried, &mut avoid, &mut window, endpoint);
        }
        assert_eq!(avoid.len(), 3);
        assert_eq!(window, None);
        // All avoided, so the balancer went back to `a`: all three exist.
        tried.push(a.clone());
        steer(&tried, &mut avoid, &mut window, &a);
        assert_eq!(window, Some(2));
        // The two most recent are avoided: only `b` is left.
        assert!(avoid.contains(&a) && avoid.contains(&c) && !avoid.contains(&b));
        tried.push(b.clone());
        steer(&tried, &mut avoid, &mut window, &b);
        assert!(avoid.contains(&a) && avoid.contains(&b) && !avoid.contains(&c));
    }
}
