//! The pass between two convolutions: conditional instance norm, ReLU, an optional
//! residual, nearest ×2 upsampling and reflect padding, fused into one write of
//! the next layer's padded input.

use rayon::prelude::*;

use super::conv::{ChannelStats, Padded};

/// `y = x * scale + shift` per channel: instance norm folded with gamma and beta.
#[derive(Debug, Clone)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Affine {
    /// `gamma * (x - mean) / sqrt(var + eps) + beta`.
    pub fn instance_norm(stats: &ChannelStats, gamma: &[f32], beta: &[f32], eps: f64) -> Self {
        let c = gamma.len();
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for i in 0..c {
            let inv = 1.0 / (stats.variance(i) + eps).sqrt();
            let s = gamma[i] as f64 * inv;
            scale.push(s as f32);
            shift.push((beta[i] as f64 - stats.mean[i] * s) as f32);
        }
        Self { scale, shift }
    }
}

/// Index of a reflect-padded coordinate `i` (may be negative) in `0..n`.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let i = if i < 0 { -i } else { i };
    (if i >= n { 2 * (n - 1) - i } else { i }) as usize
}

/// What to do with a convolution's raw output on the way into the next buffer.
pub struct Epilogue<'a> {
    pub affine: &'a Affine,
    pub relu: bool,
    /// Added after the norm (residual blocks): the block input's interior.
    pub residual: Option<&'a Padded>,
    /// Nearest-neighbour upsampling factor (1 or 2).
    pub upsample: usize,
}

/// Writes `dst` (interior `h*up × w*up`, its own `pad`) from `src` (`h × w × c`).
pub fn materialize(src: &[f32], h: usize, w: usize, c: usize, ep: &Epilogue, dst: &mut Padded) {
    let up = ep.upsample;
    let pad = dst.pad;
    dst.reshape(h * up, w * up, c, pad);
    assert!(h * up > pad && w * up > pad, "image too small for padding");
    if let Some(r) = ep.residual {
        assert!(r.h == h && r.w == w && r.c == c, "residual shape");
    }
    let (oh, ow) = (h * up, w * up);
    let row_len = dst.row_stride();
    // Source column of every destination column (padding and upsampling folded in).
    let cols: Vec<usize> = (0..ow + 2 * pad)
        .map(|x| reflect(x as isize - pad as isize, ow) / up)
        .collect();
    dst.data.par_chunks_mut(row_len).enumerate().for_each_init(
        || vec![0f32; w * c],
        |line, (y, out)| {
            // The transformed source row once, then one copy per destination pixel.
            let sy = reflect(y as isize - pad as isize, oh) / up;
            let srow = &src[sy * w * c..(sy + 1) * w * c];
            transform_row(srow, ep, sy, w, c, line);
            match c {
                32 => scatter::<32>(out, line, &cols),
                8 => scatter::<8>(out, line, &cols),
                4 => scatter::<4>(out, line, &cols),
                _ => {
                    for (px, &sx) in out.chunks_exact_mut(c).zip(&cols) {
                        px.copy_from_slice(&line[sx * c..(sx + 1) * c]);
                    }
                }
            }
        },
    );
}

/// Copies pixel `cols[i]` of `line` to pixel `i` of `out` (`C` channels; a
/// constant size so the copy is a few vector moves, not a `memmove` call).
fn scatter<const C: usize>(out: &mut [f32], line: &[f32], cols: &[usize]) {
    let (px, _) = out.as_chunks_mut::<C>();
    let (src, _) = line.as_chunks::<C>();
    for (p, &sx) in px.iter_mut().zip(cols) {
        *p = src[sx];
    }
}

/// `line = relu?(src * scale + shift [+ residual])` for one row of `w` pixels.
fn transform_row(src: &[f32], ep: &Epilogue, sy: usize, w: usize, c: usize, line: &mut [f32]) {
    let (scale, shift) = (&ep.affine.scale[..c], &ep.affine.shift[..c]);
    for (o, s) in line.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
        for i in 0..c {
            o[i] = s[i] * scale[i] + shift[i];
        }
    }
    if let Some(r) = ep.residual {
        let rs = r.row_stride();
        let rrow = &r.data[(sy + r.pad) * rs + r.pad * c..][..w * c];
        for (o, v) in line.iter_mut().zip(rrow) {
            *o += v;
        }
    }
    if ep.relu {
        for o in line.iter_mut() {
            *o = o.max(0.0);
        }
    }
}

/// NHWC raw output (`h × w × c`) → planar padded buffer, with the epilogue
/// (no residual) and upsampling.
pub fn nhwc_to_planes(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    ep: &Epilogue,
    pad: usize,
    dst: &mut super::planar::Planes,
) {
    assert!(ep.residual.is_none(), "no residual on the planar path");
    let up = ep.upsample;
    let (oh, ow) = (h * up, w * up);
    dst.reshape(c, oh, ow, pad);
    let cols: Vec<usize> = (0..ow + 2 * pad)
        .map(|x| reflect(x as isize - pad as isize, ow) / up)
        .collect();
    let (plane, stride) = (dst.plane_len(), dst.stride);
    dst.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(ch, p)| {
            let (scale, shift) = (ep.affine.scale[ch], ep.affine.shift[ch]);
            for (y, row) in p.chunks_mut(stride).enumerate() {
                let sy = reflect(y as isize - pad as isize, oh) / up;
                let srow = &src[sy * w * c..(sy + 1) * w * c];
                for (o, &sx) in row.iter_mut().zip(&cols) {
                    let v = srow[sx * c + ch] * scale + shift;
                    *o = if ep.relu { v.max(0.0) } else { v };
                }
            }
        });
}

/// Packed raw planes (`c × h × w`) → planar padded buffer, with the epilogue.
pub fn planes_to_planes(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    ep: &Epilogue,
    pad: usize,
    dst: &mut super::planar::Planes,
) {
    assert!(
        ep.residual.is_none() && ep.upsample == 1,
        "plain epilogue only"
    );
    dst.reshape(c, h, w, pad);
    let cols: Vec<usize> = (0..w + 2 * pad)
        .map(|x| reflect(x as isize - pad as isize, w))
        .collect();
    let (plane, stride) = (dst.plane_len(), dst.stride);
    dst.data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(ch, p)| {
            let (scale, shift) = (ep.affine.scale[ch], ep.affine.shift[ch]);
            let mut line = vec![0f32; w];
            for (y, row) in p.chunks_mut(stride).enumerate() {
                let sy = reflect(y as isize - pad as isize, h);
                let srow = &src[(ch * h + sy) * w..(ch * h + sy + 1) * w];
                for (l, &v) in line.iter_mut().zip(srow) {
                    let t = v * scale + shift;
                    *l = if ep.relu { t.max(0.0) } else { t };
                }
                for (o, &sx) in row.iter_mut().zip(&cols) {
                    *o = line[sx];
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_indices() {
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }

    #[test]
    fn upsample_and_pad_like_onnx() {
        // 1x2 single-channel image [1, 2] -> upsample x2 -> reflect pad 1
        let src = [1.0f32, 2.0];
        let affine = Affine {
            scale: vec![1.0],
            shift: vec![0.0],
        };
        let ep = Epilogue {
            affine: &affine,
            relu: false,
            residual: None,
            upsample: 2,
        };
        let mut dst = Padded {
            pad: 1,
            ..Default::default()
        };
        materialize(&src, 1, 2, 1, &ep, &mut dst);
        // upsampled: [[1,1,2,2],[1,1,2,2]]; reflect pad 1 on both axes
        let row = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0];
        assert_eq!(dst.data.len(), 4 * 6);
        for r in dst.data.chunks(6) {
            assert_eq!(r, row);
        }
    }
}
