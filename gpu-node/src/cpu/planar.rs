//! Planar (one plane per channel) convolution for the network's last, thin
//! layers (8→4 and 4→3 channels at full resolution).
//!
//! With so few output channels, vectorising across channels (as `conv.rs` does)
//! would leave most lanes empty. Here lanes run across 16 output pixels of a
//! row instead: for every input channel and kernel tap, `V` contiguous vectors
//! are loaded once and each is multiplied into all output channels.

use rayon::prelude::*;

use super::conv::ChannelStats;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Isa, Simd};

/// Output pixels per vector group (a multiple of every vector width).
const GROUP: usize = 64;

/// `c` planes of `(h + 2 pad) × stride`, interior `h × w` at (pad, pad). The
/// right edge has room for a whole vector group past the last pixel.
#[derive(Debug, Clone, Default)]
pub struct Planes {
    pub data: Vec<f32>,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    pub stride: usize,
}

impl Planes {
    pub fn reshape(&mut self, c: usize, h: usize, w: usize, pad: usize) {
        self.c = c;
        self.h = h;
        self.w = w;
        self.pad = pad;
        self.stride = (w + 2 * pad + GROUP).div_ceil(16) * 16;
        let n = c * (h + 2 * pad) * self.stride;
        self.data.clear();
        self.data.resize(n, 0.0);
    }

    pub fn plane_len(&self) -> usize {
        (self.h + 2 * self.pad) * self.stride
    }
}

/// Weights `[cout][cin][k][k]` (the ONNX layout).
#[derive(Debug, Clone)]
pub struct PlanarConv {
    pub k: usize,
    pub cin: usize,
    pub cout: usize,
    pub w: Vec<f32>,
}

/// Runs `conv` (stride 1) over `input` (with its padding) into `out`: `cout`
/// planes of `h × w` packed (`out[co][y][x]`); returns the output's statistics.
///
/// Safe for any values of the (public) fields: the unsafe row kernels rely
/// only on what is asserted here.
pub fn conv2d(input: &Planes, conv: &PlanarConv, out: &mut Vec<f32>) -> ChannelStats {
    assert_eq!(input.c, conv.cin, "input channels");
    assert_eq!(
        conv.w.len(),
        conv.cout * conv.cin * conv.k * conv.k,
        "weights are [cout][cin][k][k]"
    );
    assert!(conv.k >= 1, "a kernel has at least one tap");
    assert!(
        input.stride >= input.w + 2 * input.pad,
        "the stride holds a padded row"
    );
    assert!(
        input.data.len() >= input.c * input.plane_len(),
        "the data holds every plane"
    );
    let padded = |side: usize| (side + 2 * input.pad + 1).checked_sub(conv.k);
    let (Some(h), Some(w)) = (padded(input.h), padded(input.w)) else {
        panic!("the kernel is larger than the padded planes");
    };
    let wr = w.div_ceil(GROUP) * GROUP;
    // Every vector load stays inside the planes (the stride has the room);
    // rows oy..oy + k stay inside the padded height by the choice of h.
    assert!((conv.k - 1) + wr <= input.stride, "planes too narrow");
    let plane = h * w;
    out.resize(conv.cout * plane, 0.0);
    // Rows are computed into a row-major scratch (row, channel, x) and then
    // scattered into the planes; tasks own whole rows.
    let rows: Vec<(usize, Vec<f32>)> = (0..h)
        .into_par_iter()
        .map(|oy| {
            let mut row = vec![0f32; conv.cout * wr];
            conv_row(input, conv, oy, wr, &mut row);
            (oy, row)
        })
        .collect();
    let mut stats = ChannelStats::empty(conv.cout);
    for (oy, row) in rows {
        for co in 0..conv.cout {
            out[co * plane + oy * w..co * plane + (oy + 1) * w]
                .copy_from_slice(&row[co * wr..co * wr + w]);
        }
    }
    for co in 0..conv.cout {
        stats.add_plane(co, &out[co * plane..(co + 1) * plane]);
    }
    stats
}

fn conv_row(input: &Planes, conv: &PlanarConv, oy: usize, wr: usize, row: &mut [f32]) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F; conv2d checked the bounds.
        Isa::Avx512 => unsafe { avx512_row(input, conv, oy, wr, row) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2_row(input, conv, oy, wr, row) },
        _ => generic_row(input, conv, oy, wr, row),
    }
}

macro_rules! planar_shapes {
    ($v:ty, $input:expr, $conv:expr, $oy:expr, $wr:expr, $row:expr) => {{
        let (input, conv, oy, wr, row) = ($input, $conv, $oy, $wr, $row);
        const N: usize = GROUP / <$v as Simd>::LANES;
        match (conv.cin, conv.cout, conv.k) {
            (8, 4, 3) => row_groups::<$v, 8, 4, 3, N>(input, conv, oy, wr, row),
            (4, 3, 9) => row_groups::<$v, 4, 3, 9, N>(input, conv, oy, wr, row),
            _ => generic_row(input, conv, oy, wr, row),
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_row(input: &Planes, conv: &PlanarConv, oy: usize, wr: usize, row: &mut [f32]) {
    planar_shapes!(Avx512, input, conv, oy, wr, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_row(input: &Planes, conv: &PlanarConv, oy: usize, wr: usize, row: &mut [f32]) {
    planar_shapes!(Avx2, input, conv, oy, wr, row)
}

/// One output row in groups of `N` vectors; `row` is `[co][wr]`.
#[inline(always)]
fn row_groups<V: Simd, const CIN: usize, const COUT: usize, const K: usize, const N: usize>(
    input: &Planes,
    conv: &PlanarConv,
    oy: usize,
    wr: usize,
    row: &mut [f32],
) {
    let (plane, stride) = (input.plane_len(), input.stride);
    let (xp, wp, op) = (input.data.as_ptr(), conv.w.as_ptr(), row.as_mut_ptr());
    // SAFETY: conv2d checked that a vector group starting at any x0 < wr plus
    // K-1 columns stays within the stride, rows oy..oy+K are within the plane
    // height, and `row` holds COUT * wr values.
    unsafe {
        for x0 in (0..wr).step_by(N * V::LANES) {
            let mut acc = [[V::zero(); N]; COUT];
            for ci in 0..CIN {
                for ky in 0..K {
                    let src = xp.add(ci * plane + (oy + ky) * stride + x0);
                    for kx in 0..K {
                        let mut xv = [V::zero(); N];
                        for (n, v) in xv.iter_mut().enumerate() {
                            *v = V::load(src.add(kx + n * V::LANES));
                        }
                        for (co, a) in acc.iter_mut().enumerate() {
                            let wv = V::splat(*wp.add(((co * CIN + ci) * K + ky) * K + kx));
                            for n in 0..N {
                                a[n] = V::fmadd(xv[n], wv, a[n]);
                            }
                        }
                    }
                }
            }
            for (co, a) in acc.iter().enumerate() {
                for (n, v) in a.iter().enumerate() {
                    V::store(op.add(co * wr + x0 + n * V::LANES), *v);
                }
            }
        }
    }
}

fn generic_row(input: &Planes, conv: &PlanarConv, oy: usize, wr: usize, row: &mut [f32]) {
    let (plane, stride, k, cin) = (input.plane_len(), input.stride, conv.k, conv.cin);
    for co in 0..conv.cout {
        for x in 0..wr {
            let mut acc = 0f32;
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        acc += input.data[ci * plane + (oy + ky) * stride + x + kx]
                            * conv.w[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
            row[co * wr + x] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::pseudo;

    #[test]
    fn planar_kernels_match_the_plain_loop() {
        for (cin, cout, k, h, w) in [(8, 4, 3, 9, 70), (4, 3, 9, 12, 131), (2, 2, 3, 5, 20)] {
            let pad = k / 2;
            let mut input = Planes::default();
            input.reshape(cin, h, w, pad);
            let vals = pseudo(input.data.len(), 3);
            input.data.copy_from_slice(&vals);
            let conv = PlanarConv {
                k,
                cin,
                cout,
                w: pseudo(cout * cin * k * k, 9),
            };
            let mut out = Vec::new();
            let stats = conv2d(&input, &conv, &mut out);
            let plane = input.plane_len();
            for co in 0..cout {
                for y in 0..h {
                    for x in 0..w {
                        let mut want = 0f64;
                        for ci in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    want += input.data
                                        [ci * plane + (y + ky) * input.stride + x + kx]
                                        as f64
                                        * conv.w[((co * cin + ci) * k + ky) * k + kx] as f64;
                                }
                            }
                        }
                        let got = out[(co * h + y) * w + x] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{cin}->{cout} k{k} ({co},{y},{x}): {got} vs {want}"
                        );
                    }
                }
            }
            let mean0: f64 = out[..h * w].iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
            assert!((stats.mean[0] - mean0).abs() < 1e-5);
        }
    }
}
