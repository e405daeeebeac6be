//! Quantized (QDQ) ONNX graphs, converted once by `gpu-node import-onnx` into a
//! [`Program`] and run here with onnxruntime's numerics.
//!
//! The arbitrary-style networks are int8 models exported from TensorFlow Lite:
//! nearly every tensor is quantized and dequantized again. Their structure is
//! data (a program in the weights file) rather than code because the graph is
//! ~800 nodes of mechanical quantization bookkeeping; the executor knows the
//! dozen operator kinds it uses.

pub mod conv;
pub mod exec;
pub mod program;
pub mod tensor;

pub use exec::Executor;
pub use program::{ConvGeom, Op, Program, ProgramInput, ValueId};
pub use tensor::Tensor;

/// Key of the program JSON in the safetensors metadata.
pub const PROGRAM_METADATA_KEY: &str = "dreamstream.program";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot load the model: {0}")]
    Load(String),
    #[error("shape error: {0}")]
    Shape(String),
    #[error("type error: {0}")]
    DType(&'static str),
    #[error("value {0} is used before it is computed")]
    Missing(ValueId),
}
