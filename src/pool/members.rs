//! [`Members`]: a published endpoint set, and [`MemberList`], the pool
//! driver's editable copy of one.
//!
//! A snapshot is immutable and shared by every pick, so a change of one
//! endpoint must not copy all of them. The members sit in fixed-size
//! chunks, each behind its own `Arc`; an edit copies the one or two chunks
//! it touches and the small top-level array of chunk pointers, and shares
//! the rest with the previous snapshot: O(√n)-sized copies with the chunk
//! size chosen near √n for the largest pools (512 members a chunk: at
//! 100,000 endpoints one change copies 512 + 196 pointers, not 100,000).
//!
//! A persistent tree (such as `imbl`'s vector) would copy O(log n) but
//! makes every indexed read a walk of several levels, and picks index
//! members on every request; here an index is two loads, a shift and a
//! mask.
//!
//! Order: members are kept in the order they joined, and a member that
//! leaves is replaced by the last one ([`Vec::swap_remove`]), so no edit
//! shifts the others. The order is therefore not sorted by key and may
//! differ between two pools given the same endpoints in different updates.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use crate::pool::member::Member;

/// log2 of the members a chunk holds.
const CHUNK_BITS: u32 = 9;
const CHUNK: usize = 1 << CHUNK_BITS;
const MASK: usize = CHUNK - 1;

/// The members a [`Picker`](crate::balance::Picker) chooses among:
/// indexable like a slice (`members[i]`, [`get`](Self::get),
/// [`len`](Self::len), [`iter`](Self::iter)), cheap to clone, and shared
/// between the snapshots of a pool so that a change of one endpoint copies
/// little.
///
/// The order is the pool's (see the [module docs](crate::balance) of
/// `balance`: members are not sorted by key); a balancer that needs an
/// order of its own, such as consistent hashing across clients, sorts by
/// key itself.
///
/// ```
/// use tower_lb::balance::Members;
///
/// let none = Members::default();
/// assert!(none.is_empty());
/// assert!(none.get(0).is_none());
/// ```
#[derive(Clone, Default)]
pub struct Members {
    /// The first chunk again, beside the length: in a pool of up to
    /// `CHUNK` endpoints (most pools) an index costs what a slice's does.
    head: Arc<[Member]>,
    /// Every chunk but the last holds exactly `CHUNK` members.
    chunks: Arc<[Arc<[Member]>]>,
    len: usize,
}

impl Members {
    /// How many members there are.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The member at `index`, if there is one.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Member> {
        (index < self.len).then(|| &self[index])
    }

    /// Every member, in index order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len,
        }
    }
}

impl Index<usize> for Members {
    type Output = Member;

    /// The member at `index`; panics when `index >= len()`, as a slice does.
    #[inline]
    fn index(&self, index: usize) -> &Member {
        // One comparison for the first chunk (the head's length is its
        // bound), the chunk table past it.
        match self.head.get(index) {
            Some(member) => member,
            None => &self.chunks[index >> CHUNK_BITS][index & MASK],
        }
    }
}

impl FromIterator<Member> for Members {
    fn from_iter<I: IntoIterator<Item = Member>>(iter: I) -> Self {
        let mut list = MemberList::default();
        for member in iter {
            list.push(member);
        }
        list.publish().0
    }
}

impl From<Vec<Member>> for Members {
    fn from(members: Vec<Member>) -> Self {
        members.into_iter().collect()
    }
}

impl From<&[Member]> for Members {
    fn from(members: &[Member]) -> Self {
        members.iter().cloned().collect()
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = &'a Member;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`Members::iter`].
#[derive(Clone)]
pub struct Iter<'a> {
    chunks: std::slice::Iter<'a, Arc<[Member]>>,
    current: std::slice::Iter<'a, Member>,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Member;

    #[inline]
    fn next(&mut self) -> Option<&'a Member> {
        loop {
            if let Some(member) = self.current.next() {
                self.left -= 1;
                return Some(member);
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// One edit of a pool's member list, in the order the edits were made, for
/// a [`Picker`](crate::balance::Picker) that follows a change instead of
/// being rebuilt (see [`Picker::update`](crate::balance::Picker::update)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A member joined at `index`, the end of the list.
    Added {
        /// Its index: the list's length before it joined.
        index: usize,
    },
    /// The member at `index` left, and the last member (at `last` before
    /// the edit) took its place; when `index == last` the one leaving was
    /// the last and nothing moved.
    Removed {
        /// Where the member that left was, and the moved one now is.
        index: usize,
        /// The last index before the edit.
        last: usize,
    },
    /// The member at `index` was replaced by one of the same key, whose
    /// weight, zone or metadata differ.
    Replaced {
        /// Its index, unchanged.
        index: usize,
    },
}

/// A chunk of the driver's list: shared with the published snapshot until
/// an edit needs it for itself.
#[derive(Clone)]
enum Chunk {
    Shared(Arc<[Member]>),
    Owned(Vec<Member>),
}

impl Chunk {
    fn as_slice(&self) -> &[Member] {
        match self {
            Chunk::Shared(c) => c,
            Chunk::Owned(c) => c,
        }
    }

    /// The chunk for writing: a shared one is copied first (one reference
    /// count per member, at most `CHUNK` of them).
    fn owned(&mut self) -> &mut Vec<Member> {
        if let Chunk::Shared(shared) = self {
            let mut copy = Vec::with_capacity(CHUNK);
            copy.extend(shared.iter().cloned());
            *self = Chunk::Owned(copy);
        }
        match self {
            Chunk::Owned(c) => c,
            Chunk::Shared(_) => unreachable!("made owned above"),
        }
    }
}

/// Above this many edits between two publications, pickers are rebuilt
/// rather than told each edit (a full replacement, a big batch). A burst
/// the driver drains at once (up to its batch of 1,024 updates) stays
/// under it, so a registry storm is followed, not rebuilt for.
const MAX_LOGGED: usize = 4_096;

/// The driver's editable member list: the same chunks as the last
/// [`Members`] it published, copied chunk by chunk as edits touch them, and
/// the edits since, for the pickers.
#[derive(Default)]
pub(crate) struct MemberList {
    chunks: Vec<Chunk>,
    len: usize,
    /// `None`: too many edits since the last publication to be worth
    /// replaying.
    changes: Option<Vec<Change>>,
}

impl MemberList {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn get(&self, index: usize) -> Option<&Member> {
        (index < self.len).then(|| &self.chunks[index >> CHUNK_BITS].as_slice()[index & MASK])
    }

    fn log(&mut self, change: Change) {
        if let Some(changes) = &mut self.changes {
            if changes.len() < MAX_LOGGED {
                changes.push(change);
            } else {
                self.changes = None;
            }
        }
    }

    /// Appends `member`; its index.
    pub(crate) fn push(&mut self, member: Member) -> usize {
        let index = self.len;
        if index & MASK == 0 {
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.push(member);
            self.chunks.push(Chunk::Owned(chunk));
        } else if let Some(last) = self.chunks.last_mut() {
            let chunk = last.owned();
            chunk.push(member);
            // A full chunk is shared now rather than at the next
            // publication: the copy frees its vector while the pool is
            // still allocating (a fill of 100,000 endpoints reuses the
            // space), where copies at publication left every vector a hole
            // in the heap (16 bytes an endpoint, churn bench).
            if chunk.len() == CHUNK {
                *last = Chunk::Shared(std::mem::take(chunk).into());
            }
        }
        self.len += 1;
        self.log(Change::Added { index });
        index
    }

    /// Removes the member at `index`, moving the last into its place: the
    /// member moved (now at `index`), when one was.
    pub(crate) fn swap_remove(&mut self, index: usize) -> Option<&Member> {
        if index >= self.len {
            return None;
        }
        let last = self.len - 1;
        let moved = self
            .chunks
            .last_mut()
            .and_then(|chunk| chunk.owned().pop())?;
        if self.chunks.last().is_some_and(|c| c.as_slice().is_empty()) {
            self.chunks.pop();
        }
        self.len = last;
        self.log(Change::Removed { index, last });
        if index == last {
            return None;
        }
        let slot = &mut self.chunks[index >> CHUNK_BITS].owned()[index & MASK];
        *slot = moved;
        Some(slot)
    }

    /// Puts `member` at `index` in place of the one there.
    pub(crate) fn replace(&mut self, index: usize, member: Member) {
        if index >= self.len {
            return;
        }
        self.chunks[index >> CHUNK_BITS].owned()[index & MASK] = member;
        self.log(Change::Replaced { index });
    }

    /// Freezes the list as it is into a [`Members`], and hands over the
    /// edits since the last publication (`None`: too many, rebuild). The
    /// list goes on sharing every chunk with what it returned.
    pub(crate) fn publish(&mut self) -> (Members, Option<Vec<Change>>) {
        let chunks: Arc<[Arc<[Member]>]> = self
            .chunks
            .iter_mut()
            .map(|chunk| match chunk {
                Chunk::Shared(shared) => shared.clone(),
                Chunk::Owned(owned) => {
                    let shared: Arc<[Member]> = std::mem::take(owned).into();
                    *chunk = Chunk::Shared(shared.clone());
                    shared
                }
            })
            .collect();
        let changes = self.changes.replace(Vec::new());
        (
            Members {
                head: chunks.first().cloned().unwrap_or_else(|| Arc::new([])),
                chunks,
                len: self.len,
            },
            changes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use crate::pool::load::EndpointState;

    fn member(i: usize) -> Member {
        Member::new(
            Endpoint::new(&format!("10.0.{}.{}:80", i / 250, i % 250)).unwrap(),
            EndpointState::detached(),
        )
    }

    fn keys(members: &Members) -> Vec<String> {
        members
            .iter()
            .map(|m| m.endpoint().key().to_string())
            .collect()
    }

    #[test]
    fn edits_match_a_vec_and_share_untouched_chunks() {
        let mut list = MemberList::default();
        let mut model: Vec<Member> = Vec::new();
        for i in 0..MAX_LOGGED + 7 {
            list.push(member(i));
            model.push(member(i));
        }
        let (before, changes) = list.publish();
        assert_eq!(before.len(), model.len());
        assert_eq!(changes, None, "a big batch is not replayed");
        // Remove from the first chunk: the last moves there.
        list.swap_remove(5);
        model.swap_remove(5);
        list.replace(7, member(9_000));
        model[7] = member(9_000);
        let (after, changes) = list.publish();
        assert_eq!(
            changes,
            Some(vec![
                Change::Removed {
                    index: 5,
                    last: MAX_LOGGED + 6
                },
                Change::Replaced { index: 7 },
            ])
        );
        let expected: Vec<String> = model
            .iter()
            .map(|m| m.endpoint().key().to_string())
            .collect();
        assert_eq!(keys(&after), expected);
        assert_eq!(after.len(), model.len());
        assert_eq!(after[5].endpoint().key(), model[5].endpoint().key());
        assert!(after.get(after.len()).is_none());
        // The middle chunks were not touched: the same allocation.
        assert!(Arc::ptr_eq(&before.chunks[1], &after.chunks[1]));
        assert!(Arc::ptr_eq(&before.chunks[2], &after.chunks[2]));
        assert!(!Arc::ptr_eq(&before.chunks[0], &after.chunks[0]));
        // The snapshot published first is unchanged.
        assert_eq!(before.len(), MAX_LOGGED + 7);
        assert_eq!(before[5].endpoint().key(), member(5).endpoint().key());
    }

    #[test]
    fn removing_down_to_nothing_and_growing_again() {
        let mut list = MemberList::default();
        for i in 0..CHUNK + 1 {
            list.push(member(i));
        }
        list.publish();
        for _ in 0..CHUNK + 1 {
            let last = list.len() - 1;
            assert!(list.swap_remove(last).is_none(), "the last moves nowhere");
        }
        assert!(list.swap_remove(0).is_none());
        let (empty, _) = list.publish();
        assert!(empty.is_empty());
        assert_eq!(empty.iter().count(), 0);
        assert_eq!(list.push(member(1)), 0);
        let (one, changes) = list.publish();
        assert_eq!(keys(&one), vec![member(1).endpoint().key().to_string()]);
        assert_eq!(changes, Some(vec![Change::Added { index: 0 }]));
    }
}
