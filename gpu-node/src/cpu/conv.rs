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

use super::features;

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
        ((hp - self.k) / self.stride + 1, (wp - self.k) / self.stride + 1)
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
    macro_rules! go {
        ($cin:literal, $k:literal, $s:literal, $co:literal, $p:literal) => {
            dispatch::<$cin, $k, $s, $co, $p>(&input.data[base..], rs, conv, row)
        };
    }
    match (conv.cin, conv.k, conv.stride, conv.co_pad) {
        (3, 9, 1, 32) => go!(3, 9, 1, 32, 8),
        (32, 3, 2, 32) => go!(32, 3, 2, 32, 8),
        (32, 3, 1, 32) => go!(32, 3, 1, 32, 8),
        (32, 3, 1, 8) => go!(32, 3, 1, 8, 16),
        (8, 3, 1, 8) => go!(8, 3, 1, 8, 16),
        (4, 9, 1, 8) => go!(4, 9, 1, 8, 16),
        _ => generic_row(&input.data[base..], rs, conv, row),
    }
}

/// Compiles the row loop for AVX-512 / AVX2 and picks at run time; every
/// version computes the same sums in the same order.
fn dispatch<const CIN: usize, const K: usize, const S: usize, const CO: usize, const P: usize>(
    x: &[f32],
    rs: usize,
    conv: &PackedConv,
    row: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,fma")]
        fn avx512<const CIN: usize, const K: usize, const S: usize, const CO: usize, const P: usize>(
            x: &[f32],
            rs: usize,
            conv: &PackedConv,
            row: &mut [f32],
        ) {
            row_tiles::<CIN, K, S, CO, P>(x, rs, conv, row)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<const CIN: usize, const K: usize, const S: usize, const CO: usize, const P: usize>(
            x: &[f32],
            rs: usize,
            conv: &PackedConv,
            row: &mut [f32],
        ) {
            row_tiles::<CIN, K, S, CO, P>(x, rs, conv, row)
        }
        if features().avx512 {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { avx512::<CIN, K, S, CO, P>(x, rs, conv, row) };
        }
        if features().avx2_fma {
            // SAFETY: as above.
            return unsafe { avx2::<CIN, K, S, CO, P>(x, rs, conv, row) };
        }
    }
    row_tiles::<CIN, K, S, CO, P>(x, rs, conv, row)
}

#[inline(always)]
fn row_tiles<const CIN: usize, const K: usize, const S: usize, const CO: usize, const P: usize>(
    x: &[f32],
    rs: usize,
    conv: &PackedConv,
    row: &mut [f32],
) {
    let cout = conv.cout;
    let wo = row.len() / cout;
    let w = &conv.w[..K * K * CIN * CO];
    let mut ox = 0;
    while ox + P <= wo {
        let mut acc = [[0f32; CO]; P];
        tile::<CIN, K, S, CO, P>(&x[ox * S * CIN..], rs, w, &mut acc);
        for (p, a) in acc.iter().enumerate() {
            row[(ox + p) * cout..(ox + p + 1) * cout].copy_from_slice(&a[..cout]);
        }
        ox += P;
    }
    while ox < wo {
        let mut acc = [[0f32; CO]; 1];
        tile::<CIN, K, S, CO, 1>(&x[ox * S * CIN..], rs, w, &mut acc);
        row[ox * cout..(ox + 1) * cout].copy_from_slice(&acc[0][..cout]);
        ox += 1;
    }
}

#[inline(always)]
fn tile<const CIN: usize, const K: usize, const S: usize, const CO: usize, const P: usize>(
    x: &[f32],
    rs: usize,
    w: &[f32],
    acc: &mut [[f32; CO]; P],
) {
    for ky in 0..K {
        let xr = &x[ky * rs..];
        for kx in 0..K {
            let wk = &w[(ky * K + kx) * CIN * CO..(ky * K + kx + 1) * CIN * CO];
            for ci in 0..CIN {
                let wv: &[f32; CO] = wk[ci * CO..(ci + 1) * CO].try_into().expect("CO");
                for (p, a) in acc.iter_mut().enumerate() {
                    let xv = xr[(p * S + kx) * CIN + ci];
                    for c in 0..CO {
                        a[c] = xv.mul_add(wv[c], a[c]);
                    }
                }
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

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

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
                                acc += xv as f64 * w_oihw[((co * cin + ci) * k + ky) * k + kx] as f64;
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
            let vals: Vec<f64> = want.iter().skip(0).step_by(cout).map(|&v| v as f64).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!((stats.mean[0] - mean).abs() < 1e-5);
            assert!((stats.variance(0) - var).abs() < 1e-5 * var.max(1.0));
        }
    }
}
