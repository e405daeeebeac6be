//! A HyperLogLog sketch: the in-memory twin of Redis's `PFADD` / `PFCOUNT` /
//! `PFMERGE`, with the same geometry (2^14 six-bit registers, 0.81 % standard
//! error) and the same estimator (Ertl, "New cardinality estimation algorithms
//! for HyperLogLog sketches", 2017 — what Redis uses since 5.0), which stays
//! accurate from a handful of elements to billions without bias tables.
//!
//! Elements are 64-bit hashes that are already uniformly distributed (the
//! keyed hash of an IP, see [`super::ipkey`]); the sketch does not hash again.
//! Registers are kept dense (16 KiB); [`Hll::encode`] stores them sparsely
//! while few are set.

/// Index bits: 2^14 registers, like Redis.
const P: u32 = 14;
/// Registers.
pub const M: usize = 1 << P;
/// Bits left for the rank (Redis's `HLL_Q`).
const Q: u32 = 64 - P;

const SPARSE: u8 = 1;
const DENSE: u8 = 2;

#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    registers: Box<[u8; M]>,
}

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hll")
            .field("estimate", &self.count())
            .finish()
    }
}

impl Hll {
    pub fn new() -> Self {
        Self {
            registers: Box::new([0; M]),
        }
    }

    /// Adds a uniformly distributed 64-bit hash; true if a register changed
    /// (as `PFADD` answers 1).
    pub fn add(&mut self, hash: u64) -> bool {
        // Low bits pick the register, the rest give the rank (position of the
        // first 1 bit, counting from 1), as Redis's `hllPatLen` does.
        let index = (hash & (M as u64 - 1)) as usize;
        let rest = (hash >> P) | (1 << Q);
        let rank = (rest.trailing_zeros() + 1) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
            true
        } else {
            false
        }
    }

    /// The union with `other` (`PFMERGE`).
    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.registers.iter().all(|r| *r == 0)
    }

    /// The estimated number of distinct elements added (`PFCOUNT`).
    pub fn count(&self) -> u64 {
        let mut histogram = [0u32; Q as usize + 2];
        for r in self.registers.iter() {
            histogram[*r as usize] += 1;
        }
        let m = M as f64;
        let mut z = m * tau((m - histogram[Q as usize + 1] as f64) / m);
        for k in (1..=Q as usize).rev() {
            z += histogram[k] as f64;
            z *= 0.5;
        }
        z += m * sigma(histogram[0] as f64 / m);
        let alpha_inf = 0.5 / std::f64::consts::LN_2;
        (alpha_inf * m * m / z).round() as u64
    }

    /// Bytes for storage: sparse (index, value) pairs while that is smaller,
    /// else the registers as they are.
    pub fn encode(&self) -> Vec<u8> {
        let set = self.registers.iter().filter(|r| **r != 0).count();
        if set * 3 < M {
            let mut out = Vec::with_capacity(1 + set * 3);
            out.push(SPARSE);
            for (i, r) in self.registers.iter().enumerate() {
                if *r != 0 {
                    out.extend_from_slice(&(i as u16).to_le_bytes());
                    out.push(*r);
                }
            }
            out
        } else {
            let mut out = Vec::with_capacity(1 + M);
            out.push(DENSE);
            out.extend_from_slice(&self.registers[..]);
            out
        }
    }

    /// The inverse of [`Hll::encode`]; `None` for bytes it did not make.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (kind, body) = bytes.split_first()?;
        let mut hll = Hll::new();
        match *kind {
            SPARSE if body.len() % 3 == 0 => {
                for pair in body.chunks_exact(3) {
                    let i = u16::from_le_bytes([pair[0], pair[1]]) as usize;
                    if i >= M || pair[2] == 0 || pair[2] as u32 > Q + 1 {
                        return None;
                    }
                    hll.registers[i] = pair[2];
                }
            }
            DENSE if body.len() == M => {
                if body.iter().any(|r| *r as u32 > Q + 1) {
                    return None;
                }
                hll.registers.copy_from_slice(body);
            }
            _ => return None,
        }
        Some(hll)
    }
}

/// Ertl's σ (the correction for empty registers).
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// Ertl's τ (the correction for saturated registers).
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: distinct, well-mixed test hashes.
    fn hash(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn error(estimate: u64, truth: u64) -> f64 {
        (estimate as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn stats_hll_estimates_within_the_expected_error() {
        assert_eq!(Hll::new().count(), 0);
        for n in [1u64, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let mut h = Hll::new();
            for i in 0..n {
                h.add(hash(i));
            }
            // 0.81 % standard error; allow 3 sigma.
            assert!(
                error(h.count(), n) < 0.025,
                "n = {n}: estimate {}",
                h.count()
            );
        }
    }

    #[test]
    fn stats_hll_repeats_count_once_and_merge_is_the_union() {
        let mut a = Hll::new();
        for _ in 0..100 {
            a.add(hash(7));
        }
        assert_eq!(a.count(), 1);
        let (mut x, mut y) = (Hll::new(), Hll::new());
        for i in 0..6_000 {
            x.add(hash(i));
        }
        for i in 4_000..10_000 {
            y.add(hash(i));
        }
        x.merge(&y);
        assert!(error(x.count(), 10_000) < 0.025, "{}", x.count());
    }

    #[test]
    fn stats_hll_encodes_sparse_and_dense() {
        let mut h = Hll::new();
        for i in 0..500 {
            h.add(hash(i));
        }
        let sparse = h.encode();
        assert_eq!(sparse[0], SPARSE);
        assert!(sparse.len() < 2_000);
        assert_eq!(Hll::decode(&sparse), Some(h.clone()));
        for i in 0..100_000 {
            h.add(hash(i));
        }
        let dense = h.encode();
        assert_eq!(dense[0], DENSE);
        assert_eq!(Hll::decode(&dense), Some(h));
        assert_eq!(Hll::decode(&[DENSE, 1, 2]), None);
        assert_eq!(Hll::decode(&[]), None);
        assert_eq!(Hll::decode(&[SPARSE, 0xff, 0xff, 1]), None);
    }
}
