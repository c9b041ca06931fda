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

// The state is inline, in the member's own allocation: the state in one
// allocation and the member in another cost 48 bytes an endpoint more
// (churn bench). `repr(C)` with `state` first: what a pick reads sits
// beside the reference count it bumps.
#[derive(Debug)]
#[repr(C)]
struct MemberInner {
    state: Slot,
    endpoint: Endpoint,
}

/// Where a member's state is.
///
/// An update that changes an endpoint's details (its weight, say) makes a
/// new member, and the old one lives on in older snapshots and in the
/// requests it was picked for, which still count on its state: the two
/// must share it. The first member of an endpoint holds the state; a later
/// one points at that first member (never at another pointer, so a state
/// is always one hop away). The first member, and its old endpoint, stay
/// allocated for as long as a later one lives: the price of the updates
/// that change details, which are rare, for the 48 bytes every endpoint
/// saves.
#[derive(Debug)]
enum Slot {
    Own(EndpointState),
    Of(Member),
}

impl Member {
    /// The first member of `endpoint`, with a fresh `state`.
    pub(crate) fn new(endpoint: Endpoint, state: EndpointState) -> Self {
        Self {
            inner: Arc::new(MemberInner {
                state: Slot::Own(state),
                endpoint,
            }),
        }
    }

    /// A member of `endpoint` sharing `previous`'s state: an update that
    /// keeps the endpoint keeps its in-flight count and history.
    pub(crate) fn succeeding(previous: &Member, endpoint: Endpoint) -> Self {
        let owner = match &previous.inner.state {
            Slot::Own(_) => previous.clone(),
            Slot::Of(owner) => owner.clone(),
        };
        Self {
            inner: Arc::new(MemberInner {
                state: Slot::Of(owner),
                endpoint,
            }),
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
        match &self.inner.state {
            Slot::Own(state) => state,
            Slot::Of(owner) => owner.first_state(),
        }
    }

    /// The state of a member that is not the first of its endpoint: out of
    /// line, so that a pick pays one comparison for the first.
    #[cold]
    #[inline(never)]
    fn first_state(&self) -> &EndpointState {
        // One hop at most (see `Slot`); a loop so that no state is ever
        // out of reach.
        let mut inner = &*self.inner;
        loop {
            match &inner.state {
                Slot::Own(state) => return state,
                Slot::Of(owner) => inner = &owner.inner,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_and_its_state_are_one_small_allocation() {
        // The pointer to the first member fits beside the state, with no
        // tag of its own; with the reference counts, 104 bytes: glibc's
        // 112-byte class.
        assert_eq!(
            std::mem::size_of::<Slot>(),
            std::mem::size_of::<EndpointState>()
        );
        assert!(std::mem::size_of::<MemberInner>() <= 88);
    }

    #[test]
    fn a_successor_shares_the_first_members_state() {
        let endpoint = Endpoint::new("10.0.0.1:80").unwrap();
        let first = Member::new(endpoint.clone(), EndpointState::detached());
        let second = Member::succeeding(&first, endpoint.clone().with_weight(2).unwrap());
        let third = Member::succeeding(&second, endpoint.with_weight(3).unwrap());
        first.state().start();
        for member in [&second, &third] {
            assert!(std::ptr::eq(member.state(), first.state()));
            assert_eq!(member.state().in_flight(), 1);
        }
        assert_eq!((second.weight(), third.weight()), (2, 3));
        // The third points at the first, not through the second.
        assert!(
            matches!(&third.inner.state, Slot::Of(owner) if Arc::ptr_eq(&owner.inner, &first.inner))
        );
    }
}
