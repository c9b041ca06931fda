//! The hash behind consistent hashing: stable across processes, builds and
//! platforms, so every client maps a key to the same endpoint.
//!
//! `std`'s `DefaultHasher` is documented as free to change between Rust
//! releases, which would split a fleet built with different compilers; this
//! is FNV-1a over the bytes with MurmurHash3's 64-bit finalizer to spread
//! FNV's weak low bits.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` to 64 bits, the same way in every process and version of
/// this crate. Use it in a [`HashKey::custom`](crate::balance::HashKey::custom)
/// closure so custom keys spread as well as the built-in ones.
///
/// ```
/// use tower_lb::balance::hash_bytes;
///
/// assert_eq!(hash_bytes(b"user-42"), hash_bytes(b"user-42"));
/// assert_ne!(hash_bytes(b"user-42"), hash_bytes(b"user-43"));
/// ```
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_seeded(0, bytes)
}

/// [`hash_bytes`] with a seed, for several independent hashes of one key.
pub(crate) fn hash_seeded(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ mix(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// MurmurHash3's fmix64: every input bit affects every output bit.
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable() {
        // Pinned: a change here remaps every key of every user.
        assert_eq!(hash_bytes(b""), mix(FNV_OFFSET ^ mix(0)));
        assert_eq!(hash_bytes(b"greet"), hash_bytes(b"greet"));
        assert_ne!(hash_seeded(1, b"greet"), hash_seeded(2, b"greet"));
    }
}
