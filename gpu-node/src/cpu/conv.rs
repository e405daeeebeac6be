//! Direct convolution over NHWC activations, vectorised across output channels.
//!
//! The style network's layers are small (3→32 9×9, 32→32 3×3, 32→8, 8→4, 4→3):
//! too thin for an im2col GEMM to pay off, just right for a register-blocked
//! direct kernel. A tile is `P` output pixels × all output channels (padded to a
//! multiple of 8); for every kernel tap and input channel it broadcasts one input
//! value per pixel and does `P × CO` fused multiply-adds with one weight vector.
//! Input buffers already carry their padding ([`Padded`]), so the kernel has no
//! border cases; the shapes the network uses are compiled with constant sizes.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Isa, Simd};

/// An NHWC activation with `pad` pixels of border on every side (the border is
/// filled by the producer: reflect padding for the style network).
#[derive(Debug, Clone, Default)]
pub struct Padded {
    pub data: Vec<f32>,
    /// Interior size.
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub pad: usize,
}

impl Padded {
    /// Resizes the buffer for a new geometry, reusing its allocation.
    pub fn reshape(&mut self, h: usize, w: usize, c: usize, pad: usize) {
        self.h = h;
        self.w = w;
        self.c = c;
        self.pad = pad;
        let n = (h + 2 * pad) * (w + 2 * pad) * c;
        self.data.resize(n, 0.0);
    }

    pub fn row_stride(&self) -> usize {
        (self.w + 2 * self.pad) * self.c
    }
}

/// Convolution weights packed as `[ky][kx][ci][co]` with `co` padded to `co_pad`.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub k: usize,
    pub stride: usize,
    pub cin: usize,
    pub cout: usize,
    pub co_pad: usize,
    pub w: Vec<f32>,
}

impl PackedConv {
    /// Packs OIHW weights (the ONNX / PyTorch layout).
    pub fn from_oihw(w: &[f32], cout: usize, cin: usize, k: usize, stride: usize) -> Self {
        assert_eq!(w.len(), cout * cin * k * k, "weight size");
        assert!(cout <= 64, "at most 64 output channels");
        let co_pad = cout.div_ceil(8) * 8;
        let mut packed = vec![0f32; k * k * cin * co_pad];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        packed[((ky * k + kx) * cin + ci) * co_pad + co] =
                            w[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
        Self {
            k,
            stride,
            cin,
            cout,
            co_pad,
            w: packed,
        }
    }

    pub fn out_size(&self, input: &Padded) -> (usize, usize) {
        let hp = input.h + 2 * input.pad;
        let wp = input.w + 2 * input.pad;
        (
            (hp - self.k) / self.stride + 1,
            (wp - self.k) / self.stride + 1,
        )
    }
}

/// Per-channel mean and variance of a convolution output (for instance norm),
/// merged over rows with Chan's parallel formula in f64.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    pub count: f64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl ChannelStats {
    pub fn empty(c: usize) -> Self {
        Self {
            count: 0.0,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        }
    }

    /// Adds the pixels of one NHWC row (two passes over data that is in cache).
    fn add_row(&mut self, row: &[f32], c: usize, sum: &mut [f32], sq: &mut [f32]) {
        let n = row.len() / c;
        sum.fill(0.0);
        for px in row.chunks_exact(c) {
            for (s, &v) in sum.iter_mut().zip(px) {
                *s += v;
            }
        }
        let inv = 1.0 / n as f32;
        for s in sum.iter_mut() {
            *s *= inv;
        }
        sq.fill(0.0);
        for px in row.chunks_exact(c) {
            for ((q, &v), &m) in sq.iter_mut().zip(px).zip(sum.iter()) {
                let d = v - m;
                *q += d * d;
            }
        }
        let row_stats = ChannelStats {
            count: n as f64,
            mean: sum.iter().map(|&m| m as f64).collect(),
            m2: sq.iter().map(|&q| q as f64).collect(),
        };
        self.merge(&row_stats);
    }

    /// Sets channel `c` from one whole plane of values (all planes of one
    /// statistics object have the same size).
    pub fn add_plane(&mut self, c: usize, values: &[f32]) {
        let n = values.len() as f64;
        if n == 0.0 {
            return;
        }
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let m2 = values
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>();
        self.count = n;
        self.mean[c] = mean;
        self.m2[c] = m2;
    }

    pub fn merge(&mut self, other: &ChannelStats) {
        if other.count == 0.0 {
            return;
        }
        let n = self.count + other.count;
        for i in 0..self.mean.len() {
            let delta = other.mean[i] - self.mean[i];
            self.mean[i] += delta * other.count / n;
            self.m2[i] += other.m2[i] + delta * delta * self.count * other.count / n;
        }
        self.count = n;
    }

    pub fn variance(&self, i: usize) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.m2[i] / self.count
        }
    }
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 2;

/// Runs `conv` over `input` into `out` (`ho × wo × cout`, NHWC, no padding) and
/// returns the per-channel statistics of the result.
pub fn conv2d(input: &Padded, conv: &PackedConv, out: &mut Vec<f32>) -> ChannelStats {
    assert_eq!(input.c, conv.cin, "input channels");
    let (ho, wo) = conv.out_size(input);
    out.resize(ho * wo * conv.cout, 0.0);
    let row_len = wo * conv.cout;
    out.par_chunks_mut(row_len * ROWS_PER_TASK)
        .enumerate()
        .map(|(task, rows)| {
            let mut stats = ChannelStats::empty(conv.cout);
            let (mut sum, mut sq) = (vec![0f32; conv.cout], vec![0f32; conv.cout]);
            for (i, row) in rows.chunks_mut(row_len).enumerate() {
                let oy = task * ROWS_PER_TASK + i;
                conv_row(input, conv, oy, row);
                stats.add_row(row, conv.cout, &mut sum, &mut sq);
            }
            stats
        })
        .reduce(
            || ChannelStats::empty(conv.cout),
            |mut a, b| {
                a.merge(&b);
                a
            },
        )
}

/// One output row: full tiles of `P` pixels, then single pixels.
fn conv_row(input: &Padded, conv: &PackedConv, oy: usize, row: &mut [f32]) {
    let rs = input.row_stride();
    let base = oy * conv.stride * rs;
    let wo = row.len() / conv.cout;
    // Every read of the kernels stays inside the padded input and the weights.
    let last = base + (conv.k - 1) * rs + ((wo - 1) * conv.stride + conv.k) * conv.cin;
    assert!(last <= input.data.len(), "convolution input too small");
    assert_eq!(conv.w.len(), conv.k * conv.k * conv.cin * conv.co_pad);
    let x = &input.data[base..];
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F; bounds were checked above.
        Isa::Avx512 => unsafe { avx512_row(x, rs, conv, row) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA; bounds were checked above.
        Isa::Avx2 => unsafe { avx2_row(x, rs, conv, row) },
        _ => generic_row(x, rs, conv, row),
    }
}

macro_rules! shapes {
    ($wide:ty, $narrow:ty, $pw:literal, $pn:literal, $x:expr, $rs:expr, $conv:expr, $row:expr) => {{
        let (x, rs, conv, row) = ($x, $rs, $conv, $row);
        const WV: usize = 32 / <$wide as Simd>::LANES;
        match (conv.cin, conv.k, conv.stride, conv.co_pad) {
            (3, 9, 1, 32) => row_tiles::<$wide, 3, 9, 1, WV, $pw>(x, rs, conv, row),
            (32, 3, 2, 32) => row_tiles::<$wide, 32, 3, 2, WV, $pw>(x, rs, conv, row),
            (32, 3, 1, 32) => row_tiles::<$wide, 32, 3, 1, WV, $pw>(x, rs, conv, row),
            (32, 3, 1, 8) => row_tiles::<$narrow, 32, 3, 1, 1, $pn>(x, rs, conv, row),
            (8, 3, 1, 8) => row_tiles::<$narrow, 8, 3, 1, 1, $pn>(x, rs, conv, row),
            (4, 9, 1, 8) => row_tiles::<$narrow, 4, 9, 1, 1, $pn>(x, rs, conv, row),
            _ => generic_row(x, rs, conv, row),
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_row(x: &[f32], rs: usize, conv: &PackedConv, row: &mut [f32]) {
    // 32 channels: 8 pixels x 2 zmm accumulators; 8 channels: 12 pixels x 1 ymm.
    shapes!(Avx512, Avx2, 8, 12, x, rs, conv, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_row(x: &[f32], rs: usize, conv: &PackedConv, row: &mut [f32]) {
    // 32 channels: 3 pixels x 4 ymm accumulators (16 registers in all).
    shapes!(Avx2, Avx2, 3, 12, x, rs, conv, row)
}

#[inline(always)]
fn row_tiles<
    V: Simd,
    const CIN: usize,
    const K: usize,
    const S: usize,
    const COV: usize,
    const P: usize,
>(
    x: &[f32],
    rs: usize,
    conv: &PackedConv,
    row: &mut [f32],
) {
    debug_assert_eq!(COV * V::LANES, conv.co_pad);
    let cout = conv.cout;
    let wo = row.len() / cout;
    let (xp, wp, op) = (x.as_ptr(), conv.w.as_ptr(), row.as_mut_ptr());
    let mut ox = 0;
    // SAFETY: conv_row checked that every tap of every output pixel is in
    // bounds; outputs are written only for pixels < wo.
    unsafe {
        while ox + P <= wo {
            tile::<V, CIN, K, S, COV, P>(xp.add(ox * S * CIN), rs, wp, op.add(ox * cout), cout);
            ox += P;
        }
        while ox < wo {
            tile::<V, CIN, K, S, COV, 1>(xp.add(ox * S * CIN), rs, wp, op.add(ox * cout), cout);
            ox += 1;
        }
    }
}

/// `P` output pixels, all output channels.
///
/// # Safety
/// The CPU has `V`'s instruction set; every tap of the `P` pixels is
/// readable from `x` (`x + ky·rs + (p·S + kx)·CIN + ci` for ky, kx < K,
/// p < P, ci < CIN); `w` holds `K·K·CIN·co` weights where
/// `co = COV·V::LANES`, the padded channel count, with `cout ≤ co ≤ 64`; and
/// `out` is valid for writing `P·cout` floats.
#[inline(always)]
unsafe fn tile<
    V: Simd,
    const CIN: usize,
    const K: usize,
    const S: usize,
    const COV: usize,
    const P: usize,
>(
    x: *const f32,
    rs: usize,
    w: *const f32,
    out: *mut f32,
    cout: usize,
) {
    let co = COV * V::LANES;
    debug_assert!(cout <= co && co <= 64, "the padded channels fit the tile");
    // SAFETY: the function's contract.
    unsafe {
        let mut acc = [[V::zero(); COV]; P];
        for ky in 0..K {
            for kx in 0..K {
                let wk = w.add((ky * K + kx) * CIN * co);
                let xk = x.add(ky * rs + kx * CIN);
                for ci in 0..CIN {
                    let mut wv = [V::zero(); COV];
                    for (j, v) in wv.iter_mut().enumerate() {
                        *v = V::load(wk.add(ci * co + j * V::LANES));
                    }
                    for (p, a) in acc.iter_mut().enumerate() {
                        let xv = V::splat(*xk.add(p * S * CIN + ci));
                        for j in 0..COV {
                            a[j] = V::fmadd(xv, wv[j], a[j]);
                        }
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let dst = out.add(p * cout);
            if cout == co {
                for (j, v) in a.iter().enumerate() {
                    V::store(dst.add(j * V::LANES), *v);
                }
            } else {
                let mut tmp = [0f32; 64];
                for (j, v) in a.iter().enumerate() {
                    V::store(tmp.as_mut_ptr().add(j * V::LANES), *v);
                }
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cout);
            }
        }
    }
}

/// Any other shape (not used by the shipped network; kept for completeness).
fn generic_row(x: &[f32], rs: usize, conv: &PackedConv, row: &mut [f32]) {
    let (k, s, cin, cout, cop) = (conv.k, conv.stride, conv.cin, conv.cout, conv.co_pad);
    for (ox, px) in row.chunks_mut(cout).enumerate() {
        let mut acc = vec![0f32; cop];
        for ky in 0..k {
            for kx in 0..k {
                for ci in 0..cin {
                    let xv = x[ky * rs + (ox * s + kx) * cin + ci];
                    let wv = &conv.w[((ky * k + kx) * cin + ci) * cop..][..cop];
                    for (a, &wc) in acc.iter_mut().zip(wv) {
                        *a = xv.mul_add(wc, *a);
                    }
                }
            }
        }
        px.copy_from_slice(&acc[..cout]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::pseudo;

    /// Plain NCHW-free reference over a padded NHWC input.
    fn reference(input: &Padded, w_oihw: &[f32], cout: usize, k: usize, s: usize) -> Vec<f32> {
        let rs = input.row_stride();
        let cin = input.c;
        let ho = (input.h + 2 * input.pad - k) / s + 1;
        let wo = (input.w + 2 * input.pad - k) / s + 1;
        let mut out = vec![0f32; ho * wo * cout];
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let mut acc = 0f64;
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let xv = input.data[(oy * s + ky) * rs + (ox * s + kx) * cin + ci];
                                acc +=
                                    xv as f64 * w_oihw[((co * cin + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    out[(oy * wo + ox) * cout + co] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn every_specialised_shape_matches_the_reference() {
        for (cin, cout, k, s, h, w) in [
            (3, 32, 9, 1, 13, 21),
            (32, 32, 3, 2, 9, 19),
            (32, 32, 3, 1, 7, 11),
            (32, 8, 3, 1, 5, 17),
            (8, 4, 3, 1, 6, 18),
            (4, 3, 9, 1, 4, 20),
            (5, 7, 3, 2, 6, 9), // generic path
        ] {
            let pad = k / 2;
            let mut input = Padded::default();
            input.reshape(h, w, cin, pad);
            input.data = pseudo(input.data.len(), 11);
            let wts = pseudo(cout * cin * k * k, 5);
            let conv = PackedConv::from_oihw(&wts, cout, cin, k, s);
            let mut out = Vec::new();
            let stats = conv2d(&input, &conv, &mut out);
            let want = reference(&input, &wts, cout, k, s);
            let max = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-4, "{cin}->{cout} k{k} s{s}: max diff {max}");
            // statistics of the first channel
            let vals: Vec<f64> = want.iter().step_by(cout).map(|&v| v as f64).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!((stats.mean[0] - mean).abs() < 1e-5);
            assert!((stats.variance(0) - var).abs() < 1e-5 * var.max(1.0));
        }
    }
}
