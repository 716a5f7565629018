//! Bit-exact `numpy.random.default_rng(seed).permutation(n)`.
//!
//! `datasets.Dataset.shuffle(seed)` orders rows by exactly this permutation, so reproducing it
//! gives the book's "Swiss" subsets of PAN-X sentence for sentence. Three pieces, each a
//! transcription of numpy's C/Cython source (numpy/random/bit_generator.pyx, pcg64.h,
//! distributions.c, _generator.pyx):
//! 1. `SeedSequence(seed).generate_state(4, uint64)` turns the seed into 256 bits;
//! 2. `PCG64` (128-bit LCG, XSL-RR output) is seeded with them;
//! 3. `Generator.shuffle` runs Fisher–Yates from the end, drawing each index with Lemire's
//!    masked rejection sampling (`random_interval`) on 32-bit draws (low half of a 64-bit
//!    output first).

const MASK32: u64 = 0xFFFF_FFFF;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// numpy's `SeedSequence` for a non-negative integer seed without spawn key.
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    pub fn new(seed: u128) -> Self {
        // `_int_to_uint32_array`: little-endian 32-bit words, `[0]` for zero.
        let mut entropy = Vec::new();
        let mut n = seed;
        if n == 0 {
            entropy.push(0u32);
        }
        while n > 0 {
            entropy.push((n as u64 & MASK32) as u32);
            n >>= 32;
        }
        let mut hash_const = INIT_A;
        let mut hashmix = |value: u32| -> u32 {
            let mut v = value ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_A);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> XSHIFT)
        };
        let mix = |x: u32, y: u32| -> u32 {
            let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
            r ^ (r >> XSHIFT)
        };
        let mut pool = [0u32; POOL_SIZE];
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0));
        }
        for i_src in 0..POOL_SIZE {
            for i_dst in 0..POOL_SIZE {
                if i_src != i_dst {
                    let h = hashmix(pool[i_src]);
                    pool[i_dst] = mix(pool[i_dst], h);
                }
            }
        }
        for &word in entropy.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let h = hashmix(word);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n_words, np.uint64)`: 2·n 32-bit words viewed as little-endian u64.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        let mut hash_const = INIT_B;
        let words: Vec<u32> = (0..n_words * 2)
            .map(|i| {
                let mut v = self.pool[i % POOL_SIZE] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect();
        words.chunks(2).map(|w| w[0] as u64 | ((w[1] as u64) << 32)).collect()
    }
}

const PCG_MULT: u128 = (2549297995355413924u128 << 64) | 4865540595714422341u128;

/// numpy's PCG64 bit generator (`pcg_setseq_128_xsl_rr_64`), with its 32-bit buffering.
pub struct Pcg64 {
    state: u128,
    inc: u128,
    pending_u32: Option<u32>,
}

impl Pcg64 {
    /// `np.random.default_rng(seed)`'s bit generator.
    pub fn from_seed(seed: u128) -> Self {
        let v = SeedSequence::new(seed).generate_state_u64(4);
        let init_state = ((v[0] as u128) << 64) | v[1] as u128;
        let init_seq = ((v[2] as u128) << 64) | v[3] as u128;
        let mut rng = Pcg64 { state: 0, inc: (init_seq << 1) | 1, pending_u32: None };
        rng.step();
        rng.state = rng.state.wrapping_add(init_state);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        let xored = ((s >> 64) as u64) ^ (s as u64);
        xored.rotate_right((s >> 122) as u32)
    }

    /// numpy hands out the low half of a 64-bit draw, then keeps the high half for next time.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(high) = self.pending_u32.take() {
            return high;
        }
        let next = self.next_u64();
        self.pending_u32 = Some((next >> 32) as u32);
        next as u32
    }

    /// A double in [0, 1) as numpy's `random()` makes it (53 high bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9007199254740992.0)
    }

    /// Uniform integer in `[0, max]` — numpy's `random_interval`: draws masked to the
    /// smallest covering power of two, rejected until they fall in range.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let value = if max <= MASK32 { self.next_u32() as u64 & mask } else { self.next_u64() & mask };
            if value <= max {
                return value;
            }
        }
    }

    /// `Generator.shuffle` on a 1-d array (`_shuffle_raw`): Fisher–Yates from the last
    /// element down, each index drawn with `random_interval`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }
}

/// `numpy.random.default_rng(seed).permutation(n)`.
pub fn permutation(seed: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Pcg64::from_seed(seed as u128).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_zero_small_case_matches_numpy() {
        // From ../shared/testvectors/numpy_permutation.json (the full file is checked in
        // tests/swiss.rs); kept here so the unit is testable on its own.
        assert_eq!(permutation(0, 10), vec![4, 6, 2, 7, 3, 5, 9, 0, 8, 1]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(7, 1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
