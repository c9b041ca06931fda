//! Remainders by a divisor fixed when a picker is built, without a
//! division on every pick (Lemire, Kaser and Kurz, "Faster remainder by
//! direct computation", 2019): a 64-bit division costs more than the rest
//! of a round-robin pick.

/// `a % d` for any `u32` `a`, `d` fixed and non-zero.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastMod {
    /// `ceil(2^64 / d)`.
    magic: u64,
    divisor: u32,
}

impl FastMod {
    /// `None` for 0, or a divisor that does not fit in 32 bits.
    pub(crate) fn new(divisor: usize) -> Option<Self> {
        let divisor = u32::try_from(divisor).ok().filter(|&d| d > 0)?;
        Some(Self {
            magic: (u64::MAX / u64::from(divisor)).wrapping_add(1),
            divisor,
        })
    }

    /// The divisor.
    #[inline]
    pub(crate) fn divisor(&self) -> usize {
        self.divisor as usize
    }

    /// `a % divisor`.
    #[inline]
    pub(crate) fn rem(&self, a: u32) -> usize {
        let fraction = self.magic.wrapping_mul(u64::from(a));
        ((u128::from(fraction) * u128::from(self.divisor)) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_remainder_operator() {
        let numerators = (0..10_000u32).chain([u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) - 1]);
        for d in [
            1usize,
            2,
            3,
            7,
            10,
            100,
            1000,
            65_537,
            100_000,
            1 << 31,
            u32::MAX as usize,
        ] {
            let m = FastMod::new(d).unwrap();
            for a in numerators.clone() {
                assert_eq!(m.rem(a), a as usize % d, "{a} % {d}");
            }
        }
        assert!(FastMod::new(0).is_none());
    }
}
