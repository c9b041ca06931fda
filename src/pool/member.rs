//! A member of a pool's endpoint set: the endpoint and its live state.

use std::sync::Arc;

use crate::Endpoint;
use crate::pool::load::EndpointState;

/// One endpoint of a pool's current set, with its live state: what a
/// [`Picker`](crate::balance::Picker) chooses among.
///
/// Cheap to clone (one reference count), so a pick hands one out without
/// copying the endpoint.
#[derive(Clone, Debug)]
pub struct Member {
    inner: Arc<MemberInner>,
}

// `repr(C)` with `state` first: the pointer a pick follows sits beside the
// reference count it bumps, on one cache line.
#[derive(Debug)]
#[repr(C)]
struct MemberInner {
    state: Arc<EndpointState>,
    endpoint: Endpoint,
}

impl Member {
    pub(crate) fn new(endpoint: Endpoint, state: Arc<EndpointState>) -> Self {
        Self {
            inner: Arc::new(MemberInner { state, endpoint }),
        }
    }

    /// The endpoint.
    #[inline]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Its weight (shortcut for `endpoint().weight()`).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.inner.endpoint.weight()
    }

    /// Its live load and counters.
    #[inline]
    pub fn state(&self) -> &EndpointState {
        &self.inner.state
    }

    /// The state, shared: an update that keeps the endpoint hands the same
    /// state to the new member.
    pub(crate) fn shared_state(&self) -> &Arc<EndpointState> {
        &self.inner.state
    }
}
