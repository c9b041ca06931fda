//! Endpoints a request should not go to again.

use crate::Endpoint;

/// Endpoints a request should avoid: those already tried by earlier attempts
/// of the same call. A retry layer puts one in the request's extensions;
/// every balancer then picks elsewhere, and falls back to an avoided
/// endpoint only when nothing else is eligible.
///
/// `reqwest::Request` has no public extensions: for it, call the
/// load-balancing service inside [`Avoid::scope`] instead.
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

    /// Runs `f` with this set in effect for every pick made synchronously
    /// inside it: the load-balancing service picks in `call`, so calling it
    /// inside the scope is enough. For request types whose extensions are
    /// private; a set in the request's extensions takes precedence.
    ///
    /// ```
    /// use tower_lb::Endpoint;
    /// use tower_lb::balance::Avoid;
    ///
    /// let mut avoid = Avoid::new();
    /// avoid.insert(Endpoint::new("10.0.0.7:8080")?);
    /// let n = avoid.scope(|| Avoid::with_current(|a| a.map_or(0, Avoid::len)));
    /// assert_eq!(n, 1);
    /// # Ok::<(), tower_lb::EndpointError>(())
    /// ```
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        SCOPED.sync_scope(self, f)
    }

    /// Calls `f` with the set of the enclosing [`Avoid::scope`], if any.
    pub fn with_current<R>(f: impl FnOnce(Option<&Avoid>) -> R) -> R {
        let mut f = Some(f);
        match SCOPED.try_with(|avoid| (f.take().expect("called once"))(Some(avoid))) {
            Ok(result) => result,
            Err(_) => (f.take().expect("not called when out of scope"))(None),
        }
    }
}

tokio::task_local! {
    static SCOPED: Avoid;
}
