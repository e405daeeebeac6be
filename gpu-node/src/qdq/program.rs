//! The program format: a quantized ONNX graph turned into a flat list of ops over
//! numbered values. Written by `gpu-node import-onnx` into the safetensors file's
//! metadata (key `program`), beside the constant tensors it names.

use serde::{Deserialize, Serialize};

pub type ValueId = usize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// Graph inputs with the shape the model was exported for.
    pub inputs: Vec<ProgramInput>,
    pub outputs: Vec<ValueId>,
    pub value_count: usize,
    /// Values that are tensors of the safetensors file (by tensor name).
    pub constants: Vec<(ValueId, String)>,
    /// In execution order; every input of an op is a constant, a graph input or
    /// the output of an earlier op.
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramInput {
    pub name: String,
    pub value: ValueId,
    pub shape: Vec<usize>,
}

/// Geometry of a 2-D convolution over NCHW data (zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvGeom {
    pub strides: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub group: usize,
}

/// One operation. Semantics follow the ONNX operator of the same name, with the
/// numerics of onnxruntime's CPU kernels where ONNX leaves them open (see `exec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// f32 → int8 values (kept as i32): saturate(round_half_even(x / scale) + zero_point).
    Quantize {
        x: ValueId,
        scale: ValueId,
        zero_point: ValueId,
        out: ValueId,
    },
    /// int → f32: (q - zero_point) * scale, per tensor or per `axis` when scale is 1-D.
    Dequantize {
        x: ValueId,
        scale: ValueId,
        zero_point: ValueId,
        axis: usize,
        out: ValueId,
    },
    /// Float convolution (weights are usually a dequantized constant).
    Conv {
        x: ValueId,
        w: ValueId,
        b: Option<ValueId>,
        geom: ConvGeom,
        out: ValueId,
    },
    /// Integer convolution of quantized values with requantized int8 output: what
    /// onnxruntime runs for a DequantizeLinear → Conv → QuantizeLinear group.
    QConv {
        x: ValueId,
        x_scale: ValueId,
        x_zero_point: ValueId,
        w: ValueId,
        w_scale: ValueId,
        w_zero_point: ValueId,
        b: Option<ValueId>,
        y_scale: ValueId,
        y_zero_point: ValueId,
        geom: ConvGeom,
        out: ValueId,
    },
    Clip {
        x: ValueId,
        min: f32,
        max: f32,
        out: ValueId,
    },
    Relu {
        x: ValueId,
        out: ValueId,
    },
    Add {
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Sub {
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Mul {
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Sqrt {
        x: ValueId,
        out: ValueId,
    },
    Reciprocal {
        x: ValueId,
        out: ValueId,
    },
    Sigmoid {
        x: ValueId,
        out: ValueId,
    },
    Reshape {
        x: ValueId,
        shape: Vec<i64>,
        out: ValueId,
    },
    Transpose {
        x: ValueId,
        perm: Vec<usize>,
        out: ValueId,
    },
    GlobalAveragePool {
        x: ValueId,
        out: ValueId,
    },
    /// Reflect padding; `pads` = begins of every axis, then ends (ONNX order).
    ReflectPad {
        x: ValueId,
        pads: Vec<usize>,
        out: ValueId,
    },
    /// Nearest-neighbour upsampling by whole factors per axis (ONNX Resize with
    /// mode=nearest, asymmetric coordinates, floor rounding).
    UpsampleNearest {
        x: ValueId,
        scales: Vec<usize>,
        out: ValueId,
    },
}

impl Op {
    /// The values this op reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        use Op::*;
        match self {
            Quantize {
                x,
                scale,
                zero_point,
                ..
            }
            | Dequantize {
                x,
                scale,
                zero_point,
                ..
            } => vec![*x, *scale, *zero_point],
            Conv { x, w, b, .. } => [Some(*x), Some(*w), *b].into_iter().flatten().collect(),
            QConv {
                x,
                x_scale,
                x_zero_point,
                w,
                w_scale,
                w_zero_point,
                b,
                y_scale,
                y_zero_point,
                ..
            } => [
                Some(*x),
                Some(*x_scale),
                Some(*x_zero_point),
                Some(*w),
                Some(*w_scale),
                Some(*w_zero_point),
                *b,
                Some(*y_scale),
                Some(*y_zero_point),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Add { a, b, .. } | Sub { a, b, .. } | Mul { a, b, .. } => vec![*a, *b],
            Clip { x, .. }
            | Relu { x, .. }
            | Sqrt { x, .. }
            | Reciprocal { x, .. }
            | Sigmoid { x, .. }
            | Reshape { x, .. }
            | Transpose { x, .. }
            | GlobalAveragePool { x, .. }
            | ReflectPad { x, .. }
            | UpsampleNearest { x, .. } => vec![*x],
        }
    }

    /// The value this op writes.
    pub fn output(&self) -> ValueId {
        use Op::*;
        match self {
            Quantize { out, .. }
            | Dequantize { out, .. }
            | Conv { out, .. }
            | QConv { out, .. }
            | Clip { out, .. }
            | Relu { out, .. }
            | Add { out, .. }
            | Sub { out, .. }
            | Mul { out, .. }
            | Sqrt { out, .. }
            | Reciprocal { out, .. }
            | Sigmoid { out, .. }
            | Reshape { out, .. }
            | Transpose { out, .. }
            | GlobalAveragePool { out, .. }
            | ReflectPad { out, .. }
            | UpsampleNearest { out, .. } => *out,
        }
    }
}
