//! [`Roster`]: the pool driver's member set, changed in place.
//!
//! One map from key to member (the key is the endpoint's own, not a copy)
//! with each member's place in the two lists a snapshot publishes: every
//! member, and the eligible ones. A change of one endpoint is a map edit
//! and a list edit or two (see [`MemberList`]), not a copy of the set.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::Endpoint;
use crate::pool::member::Member;
use crate::pool::members::{Change, MemberList, Members};

/// Not in the eligible list.
const NOWHERE: u32 = u32::MAX;

/// A member and where it sits; found by its endpoint's key.
struct Entry {
    member: Member,
    /// Its index in the list of every member.
    all: Cell<u32>,
    /// Its index in the eligible list, or `NOWHERE`.
    eligible: Cell<u32>,
}

impl Entry {
    fn key(&self) -> &str {
        self.member.endpoint().key()
    }
}

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        self.key()
    }
}

impl Hash for Entry {
    /// As the key hashes, so that a lookup by `&str` finds it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

/// What [`Roster::upsert`] did.
pub(crate) enum Upserted {
    /// A new member: the caller decides its eligibility.
    New,
    /// The key was there with different details (weight, zone, metadata).
    Replaced,
    /// The key was there with the same details: nothing changed.
    Same,
}

/// One publication's lists and the edits each went through since the
/// last (`None`: too many to replay).
pub(crate) struct Published {
    pub(crate) all: Members,
    pub(crate) all_changes: Option<Vec<Change>>,
    pub(crate) eligible: Members,
    pub(crate) eligible_changes: Option<Vec<Change>>,
}

#[derive(Default)]
pub(crate) struct Roster {
    entries: HashSet<Entry>,
    all: MemberList,
    eligible: MemberList,
}

impl Roster {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Member> {
        self.entries.get(key).map(|e| &e.member)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains(key)
    }

    /// Every member, in no particular order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.entries.iter().map(|e| &e.member)
    }

    /// Puts `endpoint` in, keeping the live state of the member of the same
    /// key (so in-flight counts and history survive the update), or with
    /// `state()`'s for a new one, not yet eligible.
    pub(crate) fn upsert(
        &mut self,
        endpoint: Endpoint,
        state: impl FnOnce(&Endpoint) -> crate::pool::load::EndpointState,
    ) -> Upserted {
        if let Some(entry) = self.entries.get(endpoint.key()) {
            if *entry.member.endpoint() == endpoint {
                return Upserted::Same;
            }
            let member = Member::succeeding(&entry.member, endpoint);
            let (all, eligible) = (entry.all.get(), entry.eligible.get());
            self.all.replace(all as usize, member.clone());
            if eligible != NOWHERE {
                self.eligible.replace(eligible as usize, member.clone());
            }
            self.entries.replace(Entry {
                member,
                all: Cell::new(all),
                eligible: Cell::new(eligible),
            });
            return Upserted::Replaced;
        }
        let state = state(&endpoint);
        self.insert(Member::new(endpoint, state));
        Upserted::New
    }

    /// Puts in `member`, state and all, not yet eligible, unless its key
    /// is there already; true when it went in.
    pub(crate) fn adopt(&mut self, member: Member) -> bool {
        if self.entries.contains(member.endpoint().key()) {
            return false;
        }
        self.insert(member);
        true
    }

    fn insert(&mut self, member: Member) {
        let all = self.all.push(member.clone()) as u32;
        self.entries.insert(Entry {
            member,
            all: Cell::new(all),
            eligible: Cell::new(NOWHERE),
        });
    }

    /// Takes `key` out; false when it was not in.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.take(key) else {
            return false;
        };
        if let Some(moved) = self.all.swap_remove(entry.all.get() as usize)
            && let Some(moved) = self.entries.get(moved.endpoint().key())
        {
            moved.all.set(entry.all.get());
        }
        self.leave_eligible(&entry);
        true
    }

    /// Puts `key` in or out of the eligible list.
    pub(crate) fn set_eligible(&mut self, key: &str, eligible: bool) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        match (entry.eligible.get() != NOWHERE, eligible) {
            (false, true) => {
                let at = self.eligible.push(entry.member.clone());
                entry.eligible.set(at as u32);
            }
            (true, false) => {
                let place = entry.eligible.replace(NOWHERE);
                if let Some(moved) = self.eligible.swap_remove(place as usize)
                    && let Some(moved) = self.entries.get(moved.endpoint().key())
                {
                    moved.eligible.set(place);
                }
            }
            _ => {}
        }
    }

    fn leave_eligible(&mut self, entry: &Entry) {
        let place = entry.eligible.get();
        if place == NOWHERE {
            return;
        }
        if let Some(moved) = self.eligible.swap_remove(place as usize)
            && let Some(moved) = self.entries.get(moved.endpoint().key())
        {
            moved.eligible.set(place);
        }
    }

    /// The lists as they are now, sharing what did not change with the
    /// last publication.
    pub(crate) fn publish(&mut self) -> Published {
        let (all, all_changes) = self.all.publish();
        let (eligible, eligible_changes) = self.eligible.publish();
        Published {
            all,
            all_changes,
            eligible,
            eligible_changes,
        }
    }

    /// The number of eligible members.
    #[cfg(test)]
    fn eligible_len(&self) -> usize {
        self.eligible.len()
    }

    /// Debug check of the indices (tests).
    #[cfg(test)]
    fn check(&self) {
        for entry in &self.entries {
            let at = entry.all.get() as usize;
            assert_eq!(
                self.all.get(at).map(|m| m.endpoint().key()),
                Some(entry.key())
            );
            let e = entry.eligible.get();
            if e != NOWHERE {
                assert_eq!(
                    self.eligible.get(e as usize).map(|m| m.endpoint().key()),
                    Some(entry.key())
                );
            }
        }
        assert_eq!(self.all.len(), self.entries.len());
        // No stale member in the eligible list: as many entries say they
        // are eligible as the list holds, each pointing at its own slot.
        let eligible = self
            .entries
            .iter()
            .filter(|entry| entry.eligible.get() != NOWHERE)
            .count();
        assert_eq!(eligible, self.eligible.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::load::EndpointState;

    fn state(_: &Endpoint) -> EndpointState {
        EndpointState::detached()
    }

    fn address(i: usize) -> String {
        format!("10.1.{}.{}:80", i / 250, i % 250)
    }

    /// The key the roster knows `address(i)` by.
    fn key(i: usize) -> String {
        Endpoint::new(&address(i)).unwrap().key().to_string()
    }

    #[test]
    fn indices_stay_right_through_any_edits() {
        let mut roster = Roster::default();
        for i in 0..1_500 {
            assert!(matches!(
                roster.upsert(Endpoint::new(&address(i)).unwrap(), state),
                Upserted::New
            ));
            roster.set_eligible(&key(i), i % 3 != 0);
        }
        roster.check();
        let published = roster.publish();
        assert_eq!(published.all.len(), 1_500);
        assert_eq!(published.eligible.len(), 1_000);
        // Remove every seventh, toggle eligibility of others, re-weight a few.
        for i in (0..1_500).step_by(7) {
            assert!(roster.remove(&key(i)));
        }
        assert!(!roster.remove(&key(0)), "already gone");
        for i in (1..1_500).step_by(5) {
            roster.set_eligible(&key(i), i % 2 == 0);
        }
        let kept: *const EndpointState = roster.get(&key(2)).unwrap().state();
        let heavier = Endpoint::new(&address(2)).unwrap().with_weight(5).unwrap();
        assert!(matches!(
            roster.upsert(heavier.clone(), state),
            Upserted::Replaced
        ));
        assert!(
            std::ptr::eq(roster.get(&key(2)).unwrap().state(), kept),
            "the re-weighted member keeps its state"
        );
        assert!(matches!(roster.upsert(heavier, state), Upserted::Same));
        roster.check();
        let published = roster.publish();
        assert_eq!(published.all.len(), roster.len());
        assert_eq!(published.eligible.len(), roster.eligible_len());
        let eligible: HashSet<&str> = published
            .eligible
            .iter()
            .map(|m| m.endpoint().key())
            .collect();
        assert_eq!(eligible.len(), published.eligible.len(), "no member twice");
        assert_eq!(roster.get(&key(2)).map(Member::weight), Some(5));
    }
}
