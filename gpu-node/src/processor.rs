//! The one interface every frame processor implements (neural style now,
//! diffusion later): JPEG/PNG bytes and [`StyleParams`] in, JPEG bytes out.
//!
//! `process` blocks (it runs a network): callers run it on a blocking thread
//! (`tokio::task::spawn_blocking` or a dedicated thread), never on an async
//! runtime's worker.

use std::time::Duration;

use dreamstream_actors::style::{StyleError, StyleParams};
use serde::{Deserialize, Serialize};

use crate::image_io::ImageError;

pub use dreamstream_actors::worker::Capabilities;

/// Time spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode: Duration,
    pub infer: Duration,
    pub encode: Duration,
}

impl StageTimings {
    pub fn total(&self) -> Duration {
        self.decode + self.infer + self.encode
    }
}

/// A processed frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedFrame {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
    /// Something the streamer should know about how the style was applied
    /// (e.g. a prompt mapped to the closest preset).
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Style(#[from] StyleError),
    #[error("this worker cannot run {0}")]
    Unsupported(String),
    #[error("style parameters version {0} is not supported (this worker knows versions 1 to {known})", known = StyleParams::VERSION)]
    Version(u32),
    #[error("model error: {0}")]
    Model(String),
    /// A diffusion request the model cannot take (bad size, steps, guidance, weights…).
    #[error("{0}")]
    Diffusion(String),
}

impl ProcessError {
    /// True when the frame or parameters were at fault (the stream goes on with
    /// the next frame), false when the processor itself failed.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, ProcessError::Model(_))
    }
}

pub trait Processor: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// Runs one small frame through every network so the first real frame does
    /// not pay for lazy initialisation.
    fn warm_up(&self) -> Result<(), ProcessError>;

    /// Restyles one frame. Blocking.
    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError>;

    /// Restyles one frame of a known stream (processors that keep per-stream
    /// state, such as the similar-frame filter, override this). Blocking.
    fn process_for_stream(
        &self,
        _stream: &str,
        frame: &[u8],
        params: &StyleParams,
    ) -> Result<ProcessedFrame, ProcessError> {
        self.process(frame, params)
    }
}
