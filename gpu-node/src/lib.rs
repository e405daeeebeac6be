//! DreamStream GPU node: frame processors and the machinery around them.
//!
//! - [`processor`]: the `Processor` trait every processor implements.
//! - [`neural_style`]: the 26-style and arbitrary-style networks.
//! - [`diffusion`]: text-prompted img2img (SD 1.5, SD-Turbo, SDXL-Turbo/Lightning).
//! - [`similarity`]: the optional similar-frame filter around any processor.
//! - [`image_io`]: decoding with limits, resizing, encoding.
//! - [`cpu`], [`qdq`]: the CPU kernels and the quantized-graph executor.
//! - [`onnx`]: the importer that produced `models/*.safetensors`.
//! - [`worker`], [`pool`]: the worker actor and the pool that supervises workers.

pub mod cpu;
pub mod diffusion;
pub mod image_io;
pub mod neural_style;
pub mod onnx;
pub mod passthrough;
pub mod pool;
pub mod processor;
pub mod qdq;

pub use neural_style::{NeuralStyle, NeuralStyleConfig};
pub use processor::{Capabilities, ProcessError, ProcessedFrame, Processor, StageTimings};
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod serve;
pub mod sheet;
pub mod similarity;
pub mod worker;

#[cfg(test)]
mod test_rng;
