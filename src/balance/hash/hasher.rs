//! The hash behind consistent hashing: stable across processes, builds and
//! platforms, so every client maps a key to the same endpoint.
//!
//! `std`'s `DefaultHasher` is documented as free to change between Rust
//! releases, which would split a fleet built with different compilers. This
//! one reads the key eight bytes at a time (little-endian on every
//! platform), folds each word into the state with one 64x64->128-bit
//! multiply, and ends with MurmurHash3's 64-bit finalizer. A byte-at-a-time
//! hash (FNV-1a, used before the first release) costs a multiply per byte
//! in one dependent chain: most of a header-keyed Maglev pick.

/// Odd constants with well-spread bits (the golden ratio's, and
/// SplitMix64's multipliers).
const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

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
    // The length first, so that keys differing only by trailing zero bytes
    // differ.
    let mut h = mix(seed) ^ K0 ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        // Always 8 bytes: `chunks_exact`.
        let word = word.try_into().map_or(0, u64::from_le_bytes);
        h = fold(h ^ word, K1);
    }
    mix(fold(h ^ tail(words.remainder()), K2))
}

/// The last 0 to 7 bytes as one word, without a copy: overlapping reads
/// that together cover every byte (the length is in the state already, so
/// keys of one length that differ in any byte give different words).
#[inline]
fn tail(rest: &[u8]) -> u64 {
    let n = rest.len();
    match (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
        (Some(&first), Some(&last)) => {
            u64::from(u32::from_le_bytes(first)) | u64::from(u32::from_le_bytes(last)) << 32
        }
        _ => match (rest.first(), rest.get(n / 2), rest.last()) {
            (Some(&a), Some(&b), Some(&c)) => u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16,
            _ => 0,
        },
    }
}

/// The two halves of `a * b`, folded together with xor.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product >> 64) as u64 ^ product as u64
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
        assert_eq!(hash_bytes(b""), PINNED[0]);
        assert_eq!(hash_bytes(b"user-42"), PINNED[1]);
        assert_eq!(hash_bytes(b"10.0.0.1:8080"), PINNED[2]);
        assert_eq!(hash_bytes(b"greet"), hash_bytes(b"greet"));
        assert_ne!(hash_seeded(1, b"greet"), hash_seeded(2, b"greet"));
    }

    const PINNED: [u64; 3] = [
        0xb98e_de31_327b_481e,
        0xa816_30cc_6d94_904d,
        0xd3de_3b69_2ade_c18f,
    ];

    #[test]
    fn every_byte_and_the_length_count() {
        let key = b"0123456789abcdefXYZ";
        let base = hash_bytes(key);
        for i in 0..key.len() {
            let mut changed = *key;
            changed[i] ^= 1;
            assert_ne!(hash_bytes(&changed), base, "byte {i}");
        }
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ab\0"));
        assert_ne!(hash_bytes(b"12345678"), hash_bytes(b"12345678\0"));
    }
}
