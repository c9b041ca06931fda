//! A Maglev table's slots in shared chunks, so that a picker updated for
//! one endpoint's change copies the few chunks whose slots change owner
//! instead of the whole table (8 MiB at 100,000 endpoints, and as many
//! fresh pages to fault in).

use std::ops::Index;
use std::sync::Arc;

/// log2 of the slots a chunk holds (16 KiB of them).
const BITS: u32 = 12;
const CHUNK: usize = 1 << BITS;
const MASK: usize = CHUNK - 1;

/// slot -> member index; indexable like a slice.
#[derive(Clone, Default)]
pub(crate) struct Slots {
    chunks: Box<[Arc<[u32]>]>,
    len: usize,
}

impl Slots {
    pub(crate) fn from_vec(slots: Vec<u32>) -> Self {
        let len = slots.len();
        let chunks = slots.chunks(CHUNK).map(Arc::from).collect();
        Self { chunks, len }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A copy to edit, sharing every chunk until it is written.
    pub(crate) fn edit(&self) -> SlotsMut {
        SlotsMut {
            chunks: self.chunks.iter().cloned().map(Chunk::Shared).collect(),
            len: self.len,
        }
    }
}

impl Index<usize> for Slots {
    type Output = u32;

    #[inline]
    fn index(&self, slot: usize) -> &u32 {
        &self.chunks[slot >> BITS][slot & MASK]
    }
}

enum Chunk {
    Shared(Arc<[u32]>),
    Owned(Box<[u32]>),
}

/// [`Slots`] being edited: a chunk is copied the first time it is written.
pub(crate) struct SlotsMut {
    chunks: Vec<Chunk>,
    len: usize,
}

impl SlotsMut {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every slot whose owner is `a` or `b`: (slot, owner), in slot order.
    /// A read of the whole table, without copying any of it.
    pub(crate) fn owned_by(&self, a: u32, b: u32) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        for (c, chunk) in self.chunks.iter().enumerate() {
            let chunk: &[u32] = match chunk {
                Chunk::Shared(shared) => shared,
                Chunk::Owned(owned) => owned,
            };
            // Most chunks hold neither: a branch-free pass (vectorised)
            // says so before the pass that collects.
            if !chunk
                .iter()
                .fold(false, |any, &o| any | (o == a) | (o == b))
            {
                continue;
            }
            for (i, &owner) in chunk.iter().enumerate() {
                if owner == a || owner == b {
                    found.push(((c << BITS) | i, owner));
                }
            }
        }
        found
    }

    #[inline]
    pub(crate) fn get(&self, slot: usize) -> u32 {
        match &self.chunks[slot >> BITS] {
            Chunk::Shared(c) => c[slot & MASK],
            Chunk::Owned(c) => c[slot & MASK],
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, slot: usize, owner: u32) {
        let chunk = &mut self.chunks[slot >> BITS];
        if let Chunk::Shared(shared) = chunk {
            *chunk = Chunk::Owned(shared.iter().copied().collect());
        }
        if let Chunk::Owned(owned) = chunk {
            owned[slot & MASK] = owner;
        }
    }

    pub(crate) fn freeze(self) -> Slots {
        let chunks = self
            .chunks
            .into_iter()
            .map(|chunk| match chunk {
                Chunk::Shared(shared) => shared,
                Chunk::Owned(owned) => Arc::from(owned),
            })
            .collect();
        Slots {
            chunks,
            len: self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_copy_only_the_chunks_they_touch() {
        let slots = Slots::from_vec((0..3 * CHUNK as u32 + 5).map(|i| i % 7).collect());
        assert_eq!(slots.len(), 3 * CHUNK + 5);
        let mut edit = slots.edit();
        edit.set(CHUNK + 3, 99);
        assert_eq!(edit.get(CHUNK + 3), 99);
        assert_eq!(edit.len(), slots.len());
        let edited = edit.freeze();
        assert_eq!(edited[CHUNK + 3], 99);
        assert_eq!(
            slots[CHUNK + 3],
            (CHUNK as u32 + 3) % 7,
            "the original is untouched"
        );
        assert!(Arc::ptr_eq(&slots.chunks[0], &edited.chunks[0]));
        assert!(!Arc::ptr_eq(&slots.chunks[1], &edited.chunks[1]));
        let found = edited.edit().owned_by(99, 99);
        assert_eq!(found, vec![(CHUNK + 3, 99)]);
    }
}
