//! Runs a [`Program`]: constant parts are evaluated once at load (dequantized
//! weights, per-channel requantization scales), the rest per call.

use std::collections::HashMap;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use super::conv::{ConvShape, FloatConv, IntConv};
use super::program::{ConvGeom, Op, Program, ValueId};
use super::tensor::{Data, Tensor, broadcast_f32};
use super::{ExecError, PROGRAM_METADATA_KEY};

/// What runs per call.
enum Step {
    Plain(Op),
    Conv {
        x: ValueId,
        out: ValueId,
        conv: FloatConv,
    },
    QConv {
        x: ValueId,
        out: ValueId,
        conv: IntConv,
    },
}

impl Step {
    fn inputs(&self) -> Vec<ValueId> {
        match self {
            Step::Plain(op) => op.inputs(),
            Step::Conv { x, .. } | Step::QConv { x, .. } => vec![*x],
        }
    }
}

pub struct Executor {
    program: Program,
    constants: HashMap<ValueId, Arc<Tensor>>,
    steps: Vec<Step>,
    /// For each runtime value, the index of the last step that reads it.
    last_use: HashMap<ValueId, usize>,
}

impl Executor {
    /// Loads a program and its tensors from safetensors bytes.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ExecError> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| ExecError::Load(format!("not a safetensors file: {e}")))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(PROGRAM_METADATA_KEY))
            .ok_or_else(|| ExecError::Load("the file has no program in its metadata".into()))?;
        let program: Program = serde_json::from_str(json)
            .map_err(|e| ExecError::Load(format!("the program does not parse: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| ExecError::Load(format!("not a safetensors file: {e}")))?;
        let mut constants = HashMap::new();
        for (value, name) in &program.constants {
            let view = st
                .tensor(name)
                .map_err(|e| ExecError::Load(format!("tensor {name}: {e}")))?;
            constants.insert(*value, Arc::new(tensor_from_view(&view)?));
        }
        Self::prepare(program, constants)
    }

    fn prepare(
        program: Program,
        mut constants: HashMap<ValueId, Arc<Tensor>>,
    ) -> Result<Self, ExecError> {
        let mut steps = Vec::new();
        for op in &program.ops {
            let ins = op.inputs();
            if ins.iter().all(|v| constants.contains_key(v)) {
                let t = eval(op, &|v| Ok(constants[&v].as_ref()))?;
                constants.insert(op.output(), Arc::new(t));
                continue;
            }
            let konst = |v: ValueId| -> Result<&Tensor, ExecError> {
                constants.get(&v).map(|t| t.as_ref()).ok_or_else(|| {
                    ExecError::Load(format!("value {v} must be a constant (weights, scales)"))
                })
            };
            steps.push(match op {
                Op::Conv { x, w, b, geom, out } => Step::Conv {
                    x: *x,
                    out: *out,
                    conv: float_conv(konst(*w)?, b.map(konst).transpose()?, *geom)?,
                },
                Op::QConv {
                    x,
                    x_scale,
                    x_zero_point,
                    w,
                    w_scale,
                    w_zero_point,
                    b,
                    y_scale,
                    y_zero_point,
                    geom,
                    out,
                } => Step::QConv {
                    x: *x,
                    out: *out,
                    conv: int_conv(
                        konst(*w)?,
                        konst(*w_scale)?,
                        konst(*w_zero_point)?,
                        b.map(konst).transpose()?,
                        konst(*x_scale)?.scalar_f32()?,
                        konst(*x_zero_point)?.scalar_i32()?,
                        konst(*y_scale)?.scalar_f32()?,
                        konst(*y_zero_point)?.scalar_i32()?,
                        *geom,
                    )?,
                },
                other => Step::Plain(other.clone()),
            });
        }
        let mut last_use = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            for v in step.inputs() {
                last_use.insert(v, i);
            }
        }
        Ok(Self {
            program,
            constants,
            steps,
            last_use,
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs the program on its inputs (in declaration order); returns its outputs.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ExecError> {
        if inputs.len() != self.program.inputs.len() {
            return Err(ExecError::Shape(format!(
                "expected {} inputs, got {}",
                self.program.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: HashMap<ValueId, Tensor> = HashMap::new();
        for (decl, t) in self.program.inputs.iter().zip(inputs) {
            if t.shape.len() != decl.shape.len() {
                return Err(ExecError::Shape(format!(
                    "input {} must have rank {}, got shape {:?}",
                    decl.name,
                    decl.shape.len(),
                    t.shape
                )));
            }
            values.insert(decl.value, t);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let out = {
                let get = |v: ValueId| -> Result<&Tensor, ExecError> {
                    values
                        .get(&v)
                        .or_else(|| self.constants.get(&v).map(|t| t.as_ref()))
                        .ok_or(ExecError::Missing(v))
                };
                match step {
                    Step::Plain(op) => (op.output(), eval(op, &get)?),
                    Step::Conv { x, out, conv } => {
                        let t = get(*x)?;
                        let (c, h, w) = nchw1(t, conv.shape.cin)?;
                        let (y, ho, wo) = conv.run(t.as_f32()?, h, w)?;
                        debug_assert_eq!(c, conv.shape.cin);
                        (*out, Tensor::f32(vec![1, conv.shape.cout, ho, wo], y)?)
                    }
                    Step::QConv { x, out, conv } => {
                        let t = get(*x)?;
                        let (_, h, w) = nchw1(t, conv.shape.cin)?;
                        let (y, ho, wo) = conv.run(t.as_i32()?, h, w)?;
                        (*out, Tensor::i32(vec![1, conv.shape.cout, ho, wo], y)?)
                    }
                }
            };
            for v in step.inputs() {
                if self.last_use.get(&v) == Some(&i) && !self.program.outputs.contains(&v) {
                    values.remove(&v);
                }
            }
            values.insert(out.0, out.1);
        }
        self.program
            .outputs
            .iter()
            .map(|v| {
                values
                    .remove(v)
                    .or_else(|| self.constants.get(v).map(|t| t.as_ref().clone()))
                    .ok_or(ExecError::Missing(*v))
            })
            .collect()
    }
}

/// Checks a batch-1 NCHW tensor with `c` channels; returns (c, h, w).
fn nchw1(t: &Tensor, c: usize) -> Result<(usize, usize, usize), ExecError> {
    match t.shape[..] {
        [1, tc, h, w] if tc == c => Ok((c, h, w)),
        _ => Err(ExecError::Shape(format!(
            "convolution input must be 1x{c}xHxW, got {:?}",
            t.shape
        ))),
    }
}

fn conv_shape(w: &Tensor, geom: ConvGeom) -> Result<ConvShape, ExecError> {
    let [cout, cin_g, kh, kw] = w.shape[..] else {
        return Err(ExecError::Shape(format!(
            "convolution weights must be 4-D, got {:?}",
            w.shape
        )));
    };
    let shape = ConvShape {
        cin: cin_g * geom.group,
        cout,
        kh,
        kw,
        geom,
    };
    shape.check()?;
    Ok(shape)
}

fn float_conv(w: &Tensor, b: Option<&Tensor>, geom: ConvGeom) -> Result<FloatConv, ExecError> {
    let shape = conv_shape(w, geom)?;
    let bias = b.map(|b| b.as_f32().map(<[f32]>::to_vec)).transpose()?;
    if bias.as_ref().is_some_and(|b| b.len() != shape.cout) {
        return Err(ExecError::Shape(
            "bias length differs from output channels".into(),
        ));
    }
    Ok(FloatConv {
        shape,
        w: w.as_f32()?.to_vec(),
        bias,
    })
}

#[allow(clippy::too_many_arguments)]
fn int_conv(
    w: &Tensor,
    w_scale: &Tensor,
    w_zero: &Tensor,
    b: Option<&Tensor>,
    x_scale: f32,
    x_zero: i32,
    y_scale: f32,
    y_zero: i32,
    geom: ConvGeom,
) -> Result<IntConv, ExecError> {
    let shape = conv_shape(w, geom)?;
    let per_channel = |t: &Tensor| -> Result<Vec<f32>, ExecError> {
        let v: Vec<f32> = match &t.data {
            Data::F32(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as f32).collect(),
        };
        match v.len() {
            1 => Ok(vec![v[0]; shape.cout]),
            n if n == shape.cout => Ok(v),
            n => Err(ExecError::Shape(format!(
                "{n} per-channel values for {} channels",
                shape.cout
            ))),
        }
    };
    let ws = per_channel(w_scale)?;
    let wz: Vec<i32> = per_channel(w_zero)?.iter().map(|&z| z as i32).collect();
    let k = w.numel() / shape.cout;
    let wq = w.as_i32()?;
    let centred = wq.iter().enumerate().map(|(i, &q)| q - wz[i / k]).collect();
    let bias = match b {
        Some(b) => b.as_i32()?.to_vec(),
        None => vec![0; shape.cout],
    };
    if bias.len() != shape.cout {
        return Err(ExecError::Shape(
            "bias length differs from output channels".into(),
        ));
    }
    // Same expression and order as onnxruntime's QLinearConv.
    let scale = ws.iter().map(|&s| x_scale * s / y_scale).collect();
    Ok(IntConv {
        shape,
        w: centred,
        bias,
        scale,
        x_zero_point: x_zero,
        y_zero_point: y_zero,
    })
}

fn tensor_from_view(view: &safetensors::tensor::TensorView) -> Result<Tensor, ExecError> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    let t = match view.dtype() {
        Dtype::F32 => Tensor::f32(
            shape,
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )?,
        Dtype::I8 => Tensor::i32(shape, bytes.iter().map(|&b| b as i8 as i32).collect())?,
        Dtype::U8 => Tensor::i32(shape, bytes.iter().map(|&b| b as i32).collect())?,
        Dtype::I32 => Tensor::i32(
            shape,
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )?,
        other => {
            return Err(ExecError::Load(format!(
                "unsupported tensor type {other:?}"
            )));
        }
    };
    Ok(t)
}

/// Evaluates one op (constant folding at load and the plain ops at run time).
fn eval<'a>(
    op: &Op,
    get: &dyn Fn(ValueId) -> Result<&'a Tensor, ExecError>,
) -> Result<Tensor, ExecError> {
    let unary = |x: ValueId, f: &dyn Fn(f32) -> f32| -> Result<Tensor, ExecError> {
        let t = get(x)?;
        Tensor::f32(t.shape.clone(), t.as_f32()?.iter().map(|&v| f(v)).collect())
    };
    match op {
        Op::Quantize {
            x,
            scale,
            zero_point,
            ..
        } => {
            let t = get(*x)?;
            let (s, z) = (get(*scale)?.scalar_f32()?, get(*zero_point)?.scalar_i32()?);
            let (lo, hi) = ((-128 - z) as f32, (127 - z) as f32);
            let q = t
                .as_f32()?
                .iter()
                .map(|&v| round_half_even_small((v / s).clamp(lo, hi)) as i32 + z)
                .collect();
            Tensor::i32(t.shape.clone(), q)
        }
        Op::Dequantize {
            x,
            scale,
            zero_point,
            axis,
            ..
        } => {
            let t = get(*x)?;
            let (s, z) = (get(*scale)?, get(*zero_point)?);
            let q = t.as_i32()?;
            let sv = match &s.data {
                Data::F32(v) => v.clone(),
                Data::I32(_) => return Err(ExecError::DType("scale must be f32")),
            };
            let zv = z.as_i32()?;
            if sv.len() == 1 {
                let (s, z) = (sv[0], zv[0]);
                return Tensor::f32(
                    t.shape.clone(),
                    q.iter().map(|&v| (v - z) as f32 * s).collect(),
                );
            }
            let dim = *t.shape.get(*axis).ok_or_else(|| {
                ExecError::Shape(format!("dequantize axis {axis} of {:?}", t.shape))
            })?;
            if sv.len() != dim || zv.len() != dim {
                return Err(ExecError::Shape("per-axis scale length differs".into()));
            }
            let inner: usize = t.shape[axis + 1..].iter().product();
            Tensor::f32(
                t.shape.clone(),
                q.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = (i / inner) % dim;
                        (v - zv[c]) as f32 * sv[c]
                    })
                    .collect(),
            )
        }
        Op::Conv { x, w, b, geom, .. } => {
            let conv = float_conv(get(*w)?, b.map(get).transpose()?, *geom)?;
            let t = get(*x)?;
            let (_, h, wd) = nchw1(t, conv.shape.cin)?;
            let (y, ho, wo) = conv.run(t.as_f32()?, h, wd)?;
            Tensor::f32(vec![1, conv.shape.cout, ho, wo], y)
        }
        Op::QConv { .. } => Err(ExecError::Load(
            "an integer convolution of constants is not supported".into(),
        )),
        Op::Clip { x, min, max, .. } => unary(*x, &|v| v.clamp(*min, *max)),
        Op::Relu { x, .. } => unary(*x, &|v| v.max(0.0)),
        Op::Sqrt { x, .. } => unary(*x, &f32::sqrt),
        Op::Reciprocal { x, .. } => unary(*x, &|v| 1.0 / v),
        Op::Sigmoid { x, .. } => unary(*x, &|v| 1.0 / (1.0 + (-v).exp())),
        Op::Add { a, b, .. } => broadcast_f32(get(*a)?, get(*b)?, |x, y| x + y),
        Op::Sub { a, b, .. } => broadcast_f32(get(*a)?, get(*b)?, |x, y| x - y),
        Op::Mul { a, b, .. } => broadcast_f32(get(*a)?, get(*b)?, |x, y| x * y),
        Op::Reshape { x, shape, .. } => get(*x)?.clone().reshape(shape),
        Op::Transpose { x, perm, .. } => get(*x)?.transpose(perm),
        Op::GlobalAveragePool { x, .. } => {
            let t = get(*x)?;
            let [n, c, h, w] = t.shape[..] else {
                return Err(ExecError::Shape(format!(
                    "global average pool needs NCHW, got {:?}",
                    t.shape
                )));
            };
            let hw = h * w;
            let v = t.as_f32()?;
            let means = v
                .chunks_exact(hw.max(1))
                .map(|plane| (plane.iter().map(|&x| x as f64).sum::<f64>() / hw as f64) as f32)
                .collect();
            Tensor::f32(vec![n, c, 1, 1], means)
        }
        Op::ReflectPad { x, pads, .. } => reflect_pad(get(*x)?, pads),
        Op::UpsampleNearest { x, scales, .. } => upsample_nearest(get(*x)?, scales),
    }
}

fn reflect_pad(t: &Tensor, pads: &[usize]) -> Result<Tensor, ExecError> {
    let rank = t.shape.len();
    if pads.len() != 2 * rank {
        return Err(ExecError::Shape(format!(
            "{} pads for rank {rank}",
            pads.len()
        )));
    }
    for (a, &d) in t.shape.iter().enumerate() {
        if pads[a] >= d.max(1) || pads[a + rank] >= d.max(1) {
            return Err(ExecError::Shape(format!(
                "reflect padding {} / {} is too large for a dimension of {d}",
                pads[a],
                pads[a + rank]
            )));
        }
    }
    let out_shape: Vec<usize> = (0..rank)
        .map(|a| t.shape[a] + pads[a] + pads[a + rank])
        .collect();
    // For each axis, the source index of every output index.
    let maps: Vec<Vec<usize>> = (0..rank)
        .map(|a| {
            let (n, p) = (t.shape[a] as isize, pads[a] as isize);
            (0..out_shape[a] as isize)
                .map(|o| {
                    let i = o - p;
                    let i = if i < 0 { -i } else { i };
                    (if i >= n { 2 * (n - 1) - i } else { i }) as usize
                })
                .collect()
        })
        .collect();
    gather(t, out_shape, &maps)
}

fn upsample_nearest(t: &Tensor, scales: &[usize]) -> Result<Tensor, ExecError> {
    if scales.len() != t.shape.len() || scales.contains(&0) {
        return Err(ExecError::Shape(format!(
            "bad upsampling factors {scales:?} for {:?}",
            t.shape
        )));
    }
    let out_shape: Vec<usize> = t.shape.iter().zip(scales).map(|(d, s)| d * s).collect();
    let maps: Vec<Vec<usize>> = out_shape
        .iter()
        .zip(scales)
        .map(|(&n, &s)| (0..n).map(|o| o / s).collect())
        .collect();
    gather(t, out_shape, &maps)
}

/// Rounds half to even for |x| < 2^22 by adding and removing 1.5 * 2^23, as
/// MLAS does (and without a libm call on CPUs compiled for baseline x86-64).
#[inline(always)]
pub(crate) fn round_half_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// `out[i0, i1, ...] = t[maps[0][i0], maps[1][i1], ...]`
fn gather(t: &Tensor, out_shape: Vec<usize>, maps: &[Vec<usize>]) -> Result<Tensor, ExecError> {
    fn run<T: Copy>(
        v: &[T],
        strides: &[usize],
        out_shape: &[usize],
        maps: &[Vec<usize>],
    ) -> Vec<T> {
        let rank = out_shape.len();
        let n: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(n);
        if rank == 0 {
            out.extend_from_slice(v);
            return out;
        }
        let inner = &maps[rank - 1];
        let inner_stride = strides[rank - 1];
        let outer: usize = out_shape[..rank - 1].iter().product();
        let mut idx = vec![0usize; rank - 1];
        for _ in 0..outer {
            let base: usize = (0..rank - 1).map(|a| maps[a][idx[a]] * strides[a]).sum();
            out.extend(inner.iter().map(|&i| v[base + i * inner_stride]));
            for a in (0..rank - 1).rev() {
                idx[a] += 1;
                if idx[a] < out_shape[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        out
    }
    let strides = super::tensor::strides(&t.shape);
    let data = match &t.data {
        Data::F32(v) => Data::F32(run(v, &strides, &out_shape, maps)),
        Data::I32(v) => Data::I32(run(v, &strides, &out_shape, maps)),
    };
    Ok(Tensor {
        shape: out_shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_matches_onnx() {
        let t = Tensor::f32(vec![1, 1, 1, 4], vec![1., 2., 3., 4.]).unwrap();
        let p = reflect_pad(&t, &[0, 0, 0, 2, 0, 0, 0, 1]).unwrap();
        assert_eq!(p.as_f32().unwrap(), &[3., 2., 1., 2., 3., 4., 3.]);
        assert!(reflect_pad(&t, &[0, 0, 0, 4, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn upsample_repeats() {
        let t = Tensor::i32(vec![1, 1, 1, 2], vec![5, 6]).unwrap();
        let u = upsample_nearest(&t, &[1, 1, 2, 2]).unwrap();
        assert_eq!(u.shape, vec![1, 1, 2, 4]);
        assert_eq!(u.as_i32().unwrap(), &[5, 5, 6, 6, 5, 5, 6, 6]);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let mut constants = HashMap::new();
        constants.insert(1, Arc::new(Tensor::f32(vec![], vec![0.5]).unwrap()));
        constants.insert(2, Arc::new(Tensor::i32(vec![], vec![1]).unwrap()));
        let program = Program {
            inputs: vec![super::super::program::ProgramInput {
                name: "x".into(),
                value: 0,
                shape: vec![5],
            }],
            outputs: vec![4],
            value_count: 5,
            constants: vec![],
            ops: vec![
                Op::Quantize {
                    x: 0,
                    scale: 1,
                    zero_point: 2,
                    out: 3,
                },
                Op::Dequantize {
                    x: 3,
                    scale: 1,
                    zero_point: 2,
                    axis: 0,
                    out: 4,
                },
            ],
        };
        let exec = Executor::prepare(program, constants).unwrap();
        let x = Tensor::f32(vec![5], vec![0.25, 0.75, -0.25, 100.0, -100.0]).unwrap();
        let y = exec.run(vec![x]).unwrap();
        // 0.5 -> 0 (+1), 1.5 -> 2 (+1), -0.5 -> 0 (+1); saturates at 127 / -128
        assert_eq!(y[0].as_f32().unwrap(), &[0.0, 1.0, 0.0, 63.0, -64.5]);
    }
}
