//! From a request's host to the pool of that logical service.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::Classify;
use crate::request::BalancedRequest;
use crate::{Error, Pool};

/// What the layer does with a request whose host names no configured
/// service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownHost {
    /// Fail with [`Error::UnknownService`] (the default): a typo in a
    /// service name fails fast instead of leaking to DNS.
    #[default]
    Reject,
    /// Send the request unchanged to the inner client, for a client that
    /// also calls hosts outside the mesh.
    PassThrough,
}

/// Which scheme a balanced request leaves with when the request's and the
/// endpoint's differ.
///
/// A request for `https://greet/...` sent to an `http` endpoint would lose
/// TLS without anyone noticing; by default it fails with
/// [`Error::InsecureEndpoint`] instead. A request for `http://` to an
/// `https` endpoint goes out as https either way: that only adds TLS.
///
/// ```
/// use tower_lb::{LoadBalanceLayer, SchemePolicy, discover::Fixed};
///
/// // Mixed pools where discovery alone says who speaks TLS.
/// let layer = LoadBalanceLayer::builder()
///     .service("greet", Fixed::new(["http://127.0.0.1:5001", "https://127.0.0.1:5443"])?)
///     .scheme_policy(SchemePolicy::EndpointDecides)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemePolicy {
    /// An `https` request never leaves as plain `http` (the default).
    #[default]
    NoDowngrade,
    /// The endpoint's scheme decides, whatever the request asked for.
    EndpointDecides,
}

pub(crate) struct Router {
    /// May an https request go to an http endpoint?
    pub(crate) scheme_policy: SchemePolicy,
    by_name: HashMap<Box<str>, usize>,
    /// The names of `by_name` in pool order (lowercase), for the scan that
    /// serves a handful of services.
    names: Vec<Box<str>>,
    pools: Vec<Pool>,
    pub(crate) unknown_host: UnknownHost,
    /// Judges every balanced attempt, for the pools and for the retry
    /// layer above.
    pub(crate) classifier: Arc<dyn Classify>,
    /// The bound on a request that carries no attempt context.
    pub(crate) timeout: Option<Duration>,
    /// Put the chosen endpoint in the request's extensions too.
    pub(crate) endpoint_in_requests: bool,
}

impl Router {
    pub(crate) fn new(
        unknown_host: UnknownHost,
        classifier: Arc<dyn Classify>,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            scheme_policy: SchemePolicy::default(),
            by_name: HashMap::new(),
            names: Vec::new(),
            pools: Vec::new(),
            unknown_host,
            classifier,
            timeout,
            endpoint_in_requests: false,
        }
    }

    pub(crate) fn insert(&mut self, pool: Pool) -> Result<(), Error> {
        validate_name(pool.service())?;
        let key = pool.service().to_ascii_lowercase().into_boxed_str();
        if self.by_name.contains_key(&key) {
            return Err(Error::Config(format!(
                "service `{}` is configured twice",
                pool.service()
            )));
        }
        self.names.push(key.clone());
        self.by_name.insert(key, self.pools.len());
        self.pools.push(pool);
        Ok(())
    }

    /// Host names are case-insensitive; the common all-lowercase host is
    /// looked up without allocating.
    #[inline]
    pub(crate) fn get(&self, host: &str) -> Option<&Pool> {
        self.index_of(host).map(|i| &self.pools[i])
    }

    /// The position of `host`'s pool in [`Router::pools`].
    #[inline]
    pub(crate) fn index_of(&self, host: &str) -> Option<usize> {
        // A client calls a handful of services: comparing the names beats
        // hashing the host (SipHash) on every request.
        // Names are kept lowercase and hosts nearly always come so: an exact
        // comparison first, the case-blind one only for a name of the
        // host's length.
        if self.names.len() <= 8 {
            return self.names.iter().position(|name| {
                name.len() == host.len()
                    && (name.as_bytes() == host.as_bytes() || name.eq_ignore_ascii_case(host))
            });
        }
        let index = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_name.get(host.to_ascii_lowercase().as_str())
        } else {
            self.by_name.get(host)
        };
        index.copied()
    }

    /// The pool at `index` of [`Router::pools`].
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn pool_at(&self, index: usize) -> Option<&Pool> {
        self.pools.get(index)
    }

    /// A request whose host names no pool: `Ok` to send it as it is
    /// ([`UnknownHost::PassThrough`]), or the error that refuses it.
    pub(crate) fn unrouted<Req: BalancedRequest>(&self, request: &Req) -> Result<(), Error> {
        match (self.unknown_host, request.host()) {
            (UnknownHost::PassThrough, _) => Ok(()),
            (UnknownHost::Reject, Some(host)) => Err(Error::UnknownService {
                service: host.to_string(),
            }),
            (UnknownHost::Reject, None) => Err(Error::MissingHost {
                uri: request.target(),
            }),
        }
    }

    pub(crate) fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("pools", &self.pools)
            .field("unknown_host", &self.unknown_host)
            .field("classifier", &self.classifier)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A service name is what a request's URI host will say: letters, digits,
/// `-`, `_` and `.`, not empty, not starting or ending with `.` or `-`.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let valid_ends = !name.starts_with(['.', '-']) && !name.ends_with(['.', '-']);
    if name.is_empty() || !valid_chars || !valid_ends {
        return Err(Error::Config(format!(
            "service name `{name}` is not a valid host name \
             (letters, digits, `-`, `_` and `.` only)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_host_names() {
        assert!(validate_name("greet").is_ok());
        assert!(validate_name("users.internal").is_ok());
        assert!(validate_name("user_svc-2").is_ok());
        for bad in ["", "greet:80", "a b", "http://greet", ".greet", "greet-"] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
