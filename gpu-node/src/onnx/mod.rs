//! Reading ONNX files: the protobuf messages, typed tensor data, and the importer
//! that turns the style networks into the safetensors files under `models/`.

pub mod import;
pub mod proto;

use std::collections::HashMap;

use prost::Message;

use proto::{AttributeProto, ModelProto, NodeProto, TensorProto, data_type};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not an ONNX model (protobuf decode failed: {1})")]
    Decode(String, prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("node {node} ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    #[error("unexpected model layout: {0}")]
    Layout(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

pub fn load_model(path: &std::path::Path) -> Result<(ModelProto, Vec<u8>), OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| OnnxError::Decode(path.display().to_string(), e))?;
    Ok((model, bytes))
}

/// The data of an ONNX tensor, by element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes a tensor from `raw_data` (little endian) or the typed repeated fields.
pub fn tensor_data(t: &TensorProto) -> Result<TensorData, OnnxError> {
    let err = |reason: &str| OnnxError::Tensor {
        name: t.name.clone(),
        reason: reason.to_string(),
    };
    if t.data_location != 0 {
        return Err(err("external data is not supported"));
    }
    let raw = &t.raw_data;
    let n: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
    let data = match t.data_type {
        data_type::FLOAT if !raw.is_empty() => TensorData::F32(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        data_type::FLOAT => TensorData::F32(t.float_data.clone()),
        data_type::INT8 if !raw.is_empty() => {
            TensorData::I8(raw.iter().map(|&b| b as i8).collect())
        }
        data_type::INT8 => TensorData::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
        data_type::UINT8 if !raw.is_empty() => TensorData::U8(raw.clone()),
        data_type::UINT8 => TensorData::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        data_type::INT32 if !raw.is_empty() => TensorData::I32(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        data_type::INT32 => TensorData::I32(t.int32_data.clone()),
        data_type::INT64 if !raw.is_empty() => TensorData::I64(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        data_type::INT64 => TensorData::I64(t.int64_data.clone()),
        other => return Err(err(&format!("element type {other} is not supported"))),
    };
    if data.len() != n {
        return Err(err(&format!(
            "has {} values for dims {:?}",
            data.len(),
            t.dims
        )));
    }
    Ok(data)
}

/// Attributes of a node by name.
pub struct Attrs<'a>(HashMap<&'a str, &'a AttributeProto>);

impl<'a> Attrs<'a> {
    pub fn of(node: &'a NodeProto) -> Self {
        Self(
            node.attribute
                .iter()
                .map(|a| (a.name.as_str(), a))
                .collect(),
        )
    }

    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.0.get(name).map(|a| a.ints.as_slice())
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).map(|a| a.i)
    }

    pub fn string(&self, name: &str) -> Option<&'a str> {
        self.0
            .get(name)
            .and_then(|a| std::str::from_utf8(&a.s).ok())
    }

    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.0.get(name).and_then(|a| a.t.as_ref())
    }
}
