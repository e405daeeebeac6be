//! Convolutions with onnxruntime's CPU numerics, so quantized networks give the
//! same int8 values as the reference.
//!
//! Why this matters: the arbitrary-style networks re-quantize after nearly every op,
//! and a single activation rounded the other way changes what follows. Matching
//! the reference needs the same rounding, not just similar precision:
//! - float convolutions accumulate each output with fused multiply-adds in the
//!   order (input channel, kernel row, kernel column), in blocks of `stride_k`
//!   terms that are then added up, and the bias last — what MLAS's im2col + SGEMM
//!   does, including its choice of the K block (see [`mlas_stride_k`]);
//! - integer convolutions accumulate exactly in i32 and requantize as
//!   `round_half_even(f32(acc + bias) * (x_scale * w_scale / y_scale)) + y_zero`.
//!
//! Lanes run across output columns (16 at a time), so the order over K stays
//! sequential per output while the work is vectorised. Input rows are split into
//! column phases for strided convolutions so every load is contiguous.

use rayon::prelude::*;

use super::ExecError;
use super::program::ConvGeom;
#[cfg(target_arch = "x86_64")]
use crate::cpu::simd::{Avx2, Avx512};
use crate::cpu::simd::{Isa, Portable, Simd, SimdI32};

/// Output columns computed per call of the column kernels (a multiple of every
/// vector width).
const MAX_W: usize = 32;

/// MLAS's SGEMM K-stride for a GEMM with `k` terms and `n` output columns
/// (`MlasSgemmOperation`: start at 128/128, widen N when K is small, widen K
/// when N is small).
pub fn mlas_stride_k(k: usize, n: usize) -> usize {
    let (mut stride_n, mut stride_k) = (128usize, 128usize);
    if n >= k {
        // (MLAS also doubles the N stride here, which does not change results.)
        while stride_k / 2 >= k {
            stride_k /= 2;
        }
    } else {
        while stride_n > 16 && stride_n / 2 >= n {
            stride_k *= 2;
            stride_n /= 2;
        }
    }
    stride_k
}

/// Shape facts shared by both kinds of convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub geom: ConvGeom,
}

impl ConvShape {
    pub fn check(&self) -> Result<(), ExecError> {
        let g = self.geom.group;
        if g == 0 || !self.cin.is_multiple_of(g) || !self.cout.is_multiple_of(g) {
            return Err(ExecError::Shape(format!(
                "group {g} does not divide {} input and {} output channels",
                self.cin, self.cout
            )));
        }
        if self.geom.strides.contains(&0) || self.kh == 0 || self.kw == 0 {
            return Err(ExecError::Shape("zero stride or kernel size".into()));
        }
        Ok(())
    }

    fn k(&self) -> usize {
        self.cin / self.geom.group * self.kh * self.kw
    }

    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize), ExecError> {
        let [pt, pl, pb, pr] = self.geom.pads;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        if hp < self.kh || wp < self.kw {
            return Err(ExecError::Shape(format!(
                "input {h}x{w} is smaller than the {}x{} kernel",
                self.kh, self.kw
            )));
        }
        let [sh, sw] = self.geom.strides;
        Ok(((hp - self.kh) / sh + 1, (wp - self.kw) / sw + 1))
    }
}

/// The zero-padded input, with each row split into `stride` column phases:
/// `plane[c][y][phase][i] = padded[c][y][i * stride + phase]`.
struct Planes<T> {
    data: Vec<T>,
    hp: usize,
    sw: usize,
    wpl: usize,
}

impl<T: Copy + Default> Planes<T> {
    fn build(x: &[T], c: usize, h: usize, w: usize, s: &ConvShape, wr: usize) -> Self {
        let [pt, pl, pb, _] = s.geom.pads;
        let sw = s.geom.strides[1];
        let hp = h + pt + pb;
        let wpl = wr + (s.kw - 1) / sw + 1;
        let mut data = vec![T::default(); c * hp * sw * wpl];
        for ci in 0..c {
            for y in 0..h {
                let src = &x[(ci * h + y) * w..(ci * h + y + 1) * w];
                let row = (ci * hp + y + pt) * sw;
                for (xx, &v) in src.iter().enumerate() {
                    let col = xx + pl;
                    data[(row + col % sw) * wpl + col / sw] = v;
                }
            }
        }
        Self { data, hp, sw, wpl }
    }

    /// Offsets of every K term (input channel, kernel row, kernel column of group
    /// `g`) relative to output row 0, column 0.
    fn offsets(&self, s: &ConvShape, g: usize) -> Vec<usize> {
        let cin_g = s.cin / s.geom.group;
        let mut offs = Vec::with_capacity(s.k());
        for cl in 0..cin_g {
            let ci = g * cin_g + cl;
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    offs.push(
                        ((ci * self.hp + ky) * self.sw + kx % self.sw) * self.wpl + kx / self.sw,
                    );
                }
            }
        }
        offs
    }

    fn row_offset(&self, oy: usize, stride_h: usize) -> usize {
        oy * stride_h * self.sw * self.wpl
    }
}

/// A raw output pointer shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: the pointer is only dereferenced through `at`, by tasks that each
// write a distinct set of (channel, row) cells of a buffer that outlives them.
unsafe impl<T> Send for OutPtr<T> {}
// SAFETY: as for Send: no two tasks touch the same element.
unsafe impl<T> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The element `offset` places from the start (a method, so closures capture
    /// the whole `OutPtr` and its Send/Sync).
    ///
    /// # Safety
    /// `offset` is inside the buffer the pointer came from.
    unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: the function's contract.
        unsafe { self.0.add(offset) }
    }
}

/// A float convolution with constant weights.
pub struct FloatConv {
    pub shape: ConvShape,
    /// `[cout][cin/group][kh][kw]`
    pub w: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// An integer convolution with requantized output.
pub struct IntConv {
    pub shape: ConvShape,
    /// `w - w_zero_point`, `[cout][cin/group][kh][kw]`
    pub w: Vec<i32>,
    pub bias: Vec<i32>,
    /// Per output channel `x_scale * w_scale / y_scale`.
    pub scale: Vec<f32>,
    pub x_zero_point: i32,
    pub y_zero_point: i32,
}

impl FloatConv {
    /// `x` is `[cin][h][w]`; returns `[cout][ho][wo]` and (ho, wo).
    pub fn run(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, usize, usize), ExecError> {
        let s = &self.shape;
        let (ho, wo) = s.out_hw(h, w)?;
        let wr = wo.div_ceil(MAX_W) * MAX_W;
        let planes = Planes::build(x, s.cin, h, w, s, wr);
        let k = s.k();
        let stride_k = mlas_stride_k(k, ho * wo);
        let mut out = vec![0f32; s.cout * ho * wo];
        let ptr = OutPtr(out.as_mut_ptr());
        let cout_g = s.cout / s.geom.group;
        let blocks = channel_blocks(s.geom.group, cout_g);
        let offsets: Vec<Vec<usize>> = (0..s.geom.group).map(|g| planes.offsets(s, g)).collect();
        (0..blocks.len() * ho).into_par_iter().for_each(|task| {
            let (b, oy) = (task / ho, task % ho);
            let (g, co0, cb) = blocks[b];
            let base = planes.row_offset(oy, s.geom.strides[0]);
            let job = FloatJob {
                planes: &planes.data[base..],
                offs: &offsets[g],
                w: &self.w[co0 * k..(co0 + cb) * k],
                k,
                stride_k,
                bias: self.bias.as_ref().map(|b| &b[co0..co0 + cb]),
            };
            let mut rows = [[0f32; MAX_W]; 8];
            let rows = &mut rows[..cb];
            for x0 in (0..wr).step_by(MAX_W) {
                let n = MAX_W.min(wo - x0.min(wo));
                float_segment(&job, x0, cb, rows);
                for (c, row) in rows.iter().enumerate() {
                    // SAFETY: (co0 + c, oy, x0..x0+n) is inside `out` and owned by this task.
                    unsafe {
                        let dst = ptr.at(((co0 + c) * ho + oy) * wo + x0);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst, n);
                    }
                }
            }
        });
        Ok((out, ho, wo))
    }
}

impl IntConv {
    /// `x` holds quantized values `[cin][h][w]`; returns quantized `[cout][ho][wo]`.
    pub fn run(
        &self,
        x: &[i32],
        h: usize,
        w: usize,
    ) -> Result<(Vec<i32>, usize, usize), ExecError> {
        let s = &self.shape;
        let (ho, wo) = s.out_hw(h, w)?;
        let wr = wo.div_ceil(MAX_W) * MAX_W;
        // Subtracting the zero point first makes the padding value 0, as in QLinearConv.
        let centred: Vec<i32> = x.iter().map(|v| v - self.x_zero_point).collect();
        let planes = Planes::build(&centred, s.cin, h, w, s, wr);
        let k = s.k();
        let mut out = vec![0i32; s.cout * ho * wo];
        let ptr = OutPtr(out.as_mut_ptr());
        let cout_g = s.cout / s.geom.group;
        let blocks = channel_blocks(s.geom.group, cout_g);
        let offsets: Vec<Vec<usize>> = (0..s.geom.group).map(|g| planes.offsets(s, g)).collect();
        let (lo, hi) = (
            (-128 - self.y_zero_point) as f32,
            (127 - self.y_zero_point) as f32,
        );
        (0..blocks.len() * ho).into_par_iter().for_each(|task| {
            let (b, oy) = (task / ho, task % ho);
            let (g, co0, cb) = blocks[b];
            let base = planes.row_offset(oy, s.geom.strides[0]);
            let job = IntJob {
                planes: &planes.data[base..],
                offs: &offsets[g],
                w: &self.w[co0 * k..(co0 + cb) * k],
                k,
                bias: &self.bias[co0..co0 + cb],
            };
            let mut rows = [[0i32; MAX_W]; 8];
            let rows = &mut rows[..cb];
            for x0 in (0..wr).step_by(MAX_W) {
                let n = MAX_W.min(wo - x0.min(wo));
                int_segment(&job, x0, cb, rows);
                for (c, row) in rows.iter().enumerate() {
                    let scale = self.scale[co0 + c];
                    let mut q = [0i32; MAX_W];
                    for (qv, &acc) in q.iter_mut().zip(row) {
                        let f = (acc as f32 * scale).clamp(lo, hi);
                        *qv = super::exec::round_half_even_small(f) as i32 + self.y_zero_point;
                    }
                    // SAFETY: as in FloatConv::run.
                    unsafe {
                        let dst = ptr.at(((co0 + c) * ho + oy) * wo + x0);
                        std::ptr::copy_nonoverlapping(q.as_ptr(), dst, n);
                    }
                }
            }
        });
        Ok((out, ho, wo))
    }
}

/// Splits each group's output channels into blocks of at most 8: (group, first
/// channel, count).
fn channel_blocks(groups: usize, cout_g: usize) -> Vec<(usize, usize, usize)> {
    let mut blocks = Vec::new();
    for g in 0..groups {
        let mut c = 0;
        while c < cout_g {
            let cb = 8.min(cout_g - c);
            blocks.push((g, g * cout_g + c, cb));
            c += cb;
        }
    }
    blocks
}

struct FloatJob<'a> {
    planes: &'a [f32],
    offs: &'a [usize],
    w: &'a [f32],
    k: usize,
    stride_k: usize,
    bias: Option<&'a [f32]>,
}

struct IntJob<'a> {
    planes: &'a [i32],
    offs: &'a [usize],
    w: &'a [i32],
    k: usize,
    bias: &'a [i32],
}

/// A run of `MAX_W` output columns for `cb` channels, vector by vector.
#[inline(always)]
fn float_columns<V: Simd, const CB: usize>(job: &FloatJob, x0: usize, rows: &mut [[f32; MAX_W]]) {
    let (planes, w) = (job.planes.as_ptr(), job.w.as_ptr());
    assert!(
        job.offs.iter().all(|&o| o + x0 + MAX_W <= job.planes.len()),
        "plane bounds"
    );
    assert!(job.w.len() >= CB * job.k);
    assert!(job.offs.len() >= job.k, "one offset per tap");
    // SAFETY: every load was bounds-checked above; weights hold CB rows of K,
    // and `offs` one entry per tap (`get_unchecked(kk)` with kk < k).
    unsafe {
        for xv0 in (0..MAX_W).step_by(V::LANES) {
            let base = planes.add(x0 + xv0);
            let mut total = [V::zero(); CB];
            let mut k0 = 0;
            while k0 < job.k {
                let k1 = (k0 + job.stride_k).min(job.k);
                let mut acc = [V::zero(); CB];
                for kk in k0..k1 {
                    let xv = V::load(base.add(*job.offs.get_unchecked(kk)));
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a = V::fmadd(xv, V::splat(*w.add(c * job.k + kk)), *a);
                    }
                }
                for c in 0..CB {
                    total[c] = if k0 == 0 {
                        acc[c]
                    } else {
                        V::add(total[c], acc[c])
                    };
                }
                k0 = k1;
            }
            for (c, t) in total.iter().enumerate() {
                let v = match job.bias {
                    Some(b) => V::add(*t, V::splat(b[c])),
                    None => *t,
                };
                V::store(rows[c].as_mut_ptr().add(xv0), v);
            }
        }
    }
}

#[inline(always)]
fn int_columns<V: SimdI32, const CB: usize>(job: &IntJob, x0: usize, rows: &mut [[i32; MAX_W]]) {
    let (planes, w) = (job.planes.as_ptr(), job.w.as_ptr());
    assert!(
        job.offs.iter().all(|&o| o + x0 + MAX_W <= job.planes.len()),
        "plane bounds"
    );
    assert!(job.w.len() >= CB * job.k);
    assert!(job.offs.len() >= job.k, "one offset per tap");
    // SAFETY: as in float_columns.
    unsafe {
        for xv0 in (0..MAX_W).step_by(V::LANES) {
            let base = planes.add(x0 + xv0);
            let mut acc = [V::zero(); CB];
            for kk in 0..job.k {
                let xv = V::load(base.add(*job.offs.get_unchecked(kk)));
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = V::mul_add(xv, V::splat(*w.add(c * job.k + kk)), *a);
                }
            }
            for (c, a) in acc.iter().enumerate() {
                let v = V::mul_add(V::splat(1), *a, V::splat(job.bias[c]));
                V::store(rows[c].as_mut_ptr().add(xv0), v);
            }
        }
    }
}

macro_rules! by_block {
    ($f:ident, $v:ty, $job:expr, $x0:expr, $cb:expr, $rows:expr) => {
        match $cb {
            1 => $f::<$v, 1>($job, $x0, $rows),
            2 => $f::<$v, 2>($job, $x0, $rows),
            3 => $f::<$v, 3>($job, $x0, $rows),
            4 => $f::<$v, 4>($job, $x0, $rows),
            5 => $f::<$v, 5>($job, $x0, $rows),
            6 => $f::<$v, 6>($job, $x0, $rows),
            7 => $f::<$v, 7>($job, $x0, $rows),
            _ => $f::<$v, 8>($job, $x0, $rows),
        }
    };
}

/// Compiles the column loops for the best instruction set the CPU has. Results
/// do not depend on the choice: every lane does the same fused multiply-adds.
macro_rules! multiversion {
    ($name:ident, $cols:ident, $trait:ident, $job:ty, $t:ty) => {
        fn $name(job: &$job, x0: usize, cb: usize, rows: &mut [[$t; MAX_W]]) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512(job: &$job, x0: usize, cb: usize, rows: &mut [[$t; MAX_W]]) {
                    by_block!($cols, Avx512, job, x0, cb, rows)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2(job: &$job, x0: usize, cb: usize, rows: &mut [[$t; MAX_W]]) {
                    by_block!($cols, Avx2, job, x0, cb, rows)
                }
                match Isa::detect() {
                    // SAFETY: the CPU has the features the function was compiled for.
                    Isa::Avx512 => return unsafe { avx512(job, x0, cb, rows) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2(job, x0, cb, rows) },
                    Isa::Portable => {}
                }
            }
            by_block!($cols, Portable, job, x0, cb, rows)
        }
    };
}

multiversion!(float_segment, float_columns, Simd, FloatJob, f32);
multiversion!(int_segment, int_columns, SimdI32, IntJob, i32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::pseudo;

    #[test]
    fn stride_k_follows_mlas() {
        assert_eq!(mlas_stride_k(27, 128 * 128), 32);
        assert_eq!(mlas_stride_k(144, 64 * 64), 128);
        assert_eq!(mlas_stride_k(576, 64), 256);
        assert_eq!(mlas_stride_k(1280, 1), 1024);
        assert_eq!(mlas_stride_k(1152, 96 * 96), 128);
    }

    /// Reference: the textbook loop, with the same order of operations.
    fn naive(x: &[f32], h: usize, w: usize, c: &FloatConv) -> Vec<f32> {
        let s = &c.shape;
        let (ho, wo) = s.out_hw(h, w).unwrap();
        let [pt, pl, _, _] = s.geom.pads;
        let cin_g = s.cin / s.geom.group;
        let cout_g = s.cout / s.geom.group;
        let k = s.k();
        let sk = mlas_stride_k(k, ho * wo);
        let mut out = vec![0f32; s.cout * ho * wo];
        for co in 0..s.cout {
            let g = co / cout_g;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut total: Option<f32> = None;
                    for k0 in (0..k).step_by(sk) {
                        let mut acc = 0f32;
                        for kk in k0..(k0 + sk).min(k) {
                            let (cl, r) = (kk / (s.kh * s.kw), kk % (s.kh * s.kw));
                            let (ky, kx) = (r / s.kw, r % s.kw);
                            let iy = (oy * s.geom.strides[0] + ky) as isize - pt as isize;
                            let ix = (ox * s.geom.strides[1] + kx) as isize - pl as isize;
                            let v = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                0.0
                            } else {
                                x[((g * cin_g + cl) * h + iy as usize) * w + ix as usize]
                            };
                            acc = v.mul_add(c.w[co * k + kk], acc);
                        }
                        total = Some(total.map_or(acc, |t| t + acc));
                    }
                    let mut total = total.unwrap_or(0.0);
                    if let Some(b) = &c.bias {
                        total += b[co];
                    }
                    out[(co * ho + oy) * wo + ox] = total;
                }
            }
        }
        out
    }

    #[test]
    fn float_conv_matches_the_textbook_loop_bit_for_bit() {
        for (cin, cout, kh, stride, pads, group, h, w) in [
            (3, 8, 3, 2, [0, 0, 1, 1], 1, 19, 23),
            (16, 12, 3, 1, [1, 1, 1, 1], 1, 9, 40),
            (8, 8, 3, 1, [1, 1, 1, 1], 8, 7, 7),
            (300, 5, 1, 1, [0, 0, 0, 0], 1, 3, 3),
        ] {
            let shape = ConvShape {
                cin,
                cout,
                kh,
                kw: kh,
                geom: ConvGeom {
                    strides: [stride, stride],
                    pads,
                    group,
                },
            };
            let conv = FloatConv {
                shape,
                w: pseudo(cout * cin / group * kh * kh, 7),
                bias: Some(pseudo(cout, 9)),
            };
            let x = pseudo(cin * h * w, 3);
            let (got, ho, wo) = conv.run(&x, h, w).unwrap();
            assert_eq!(got.len(), cout * ho * wo);
            assert_eq!(got, naive(&x, h, w, &conv), "cin {cin} cout {cout} k {kh}");
        }
    }

    #[test]
    fn int_conv_requantizes_half_to_even() {
        // One input channel, 1x1 kernel: y = round_half_even(x * w * scale) + zp
        let conv = IntConv {
            shape: ConvShape {
                cin: 1,
                cout: 1,
                kh: 1,
                kw: 1,
                geom: ConvGeom {
                    strides: [1, 1],
                    pads: [0; 4],
                    group: 1,
                },
            },
            w: vec![1],
            bias: vec![0],
            scale: vec![0.5],
            x_zero_point: 0,
            y_zero_point: -3,
        };
        let x = vec![1, 3, 5, -1, 400, -400];
        let (y, _, _) = conv.run(&x, 1, 6).unwrap();
        // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, then +zp; saturation at -128..127
        assert_eq!(y, vec![-3, -1, -1, -3, 127, -128]);
    }
}
