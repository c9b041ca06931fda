//! Endpoints a request should not go to again.

use crate::Endpoint;

/// Endpoints a request should avoid: those already tried by earlier attempts
/// of the same call. A retry layer puts one in the request's extensions;
/// every balancer then picks elsewhere, and falls back to an avoided
/// endpoint only when nothing else is eligible.
///
/// The retry layer sends it down in each attempt's
/// [`AttemptContext`](crate::AttemptContext); a set alone in an
/// `http::Request`'s extensions works too, for a caller steering one
/// request by hand.
///
/// ```
/// use tower_lb::Endpoint;
/// use tower_lb::balance::Avoid;
///
/// let mut avoid = Avoid::new();
/// avoid.insert(Endpoint::new("10.0.0.7:8080")?);
/// let mut request = http::Request::get("http://greet/").body(())?;
/// request.extensions_mut().insert(avoid);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Avoid {
    // A call tries a handful of endpoints at most: a vector beats a set.
    endpoints: Vec<Endpoint>,
}

impl Avoid {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an endpoint (matched by key; adding it twice is harmless).
    pub fn insert(&mut self, endpoint: Endpoint) {
        if !self.contains(&endpoint) {
            self.endpoints.push(endpoint);
        }
    }

    /// True when `endpoint` (by key) is to be avoided.
    #[inline]
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.endpoints.iter().any(|e| e.same_instance(endpoint))
    }

    /// How many endpoints are avoided.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when nothing is avoided.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The avoided endpoints, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }
}
