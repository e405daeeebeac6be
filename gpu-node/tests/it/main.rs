//! gpu-node integration tests: parity with onnxruntime, bad input, the CLI.

mod bad_input;
mod cli;
mod diffusion;
mod models_pull;
mod parity;
mod similarity;

use std::path::PathBuf;
use std::sync::OnceLock;

use gpu_node::NeuralStyle;

/// `../shared` beside the repository (override with `DREAMSTREAM_SHARED`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("DREAMSTREAM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn testdata(rel: &str) -> PathBuf {
    shared_dir().join("testdata").join(rel)
}

/// One processor for the whole test binary (loading it is not free).
pub fn net() -> &'static NeuralStyle {
    static NET: OnceLock<NeuralStyle> = OnceLock::new();
    NET.get_or_init(|| NeuralStyle::load_with_threads(0).expect("the built-in weights load"))
}
