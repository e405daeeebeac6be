//! Similar-frame filter (StreamDiffusion's "stochastic similarity filter",
//! made deterministic): when a stream's new input frame is nearly identical to
//! the last one processed, return the last output instead of running the
//! network again, at most `max_skip` times in a row (so a slowly changing scene
//! is still followed). Off by default; wraps any processor.
//!
//! Why: a still camera costs a full diffusion run per frame for nothing; the
//! similarity test costs one JPEG decode and a 32×32 thumbnail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dreamstream_actors::style::StyleParams;

use crate::image_io::{self, ResizeQuality};
use crate::processor::{Capabilities, ProcessError, ProcessedFrame, Processor, StageTimings};

/// Side of the thumbnails compared.
const THUMB: u32 = 32;
/// Streams remembered before the table is cleared (a worker serves few at once).
const MAX_STREAMS: usize = 1024;

struct StreamState {
    thumb: Vec<u8>,
    params: StyleParams,
    last: ProcessedFrame,
    skipped: u32,
}

pub struct SimilarityFilter {
    inner: Arc<dyn Processor>,
    threshold: f32,
    max_skip: u32,
    streams: Mutex<HashMap<String, StreamState>>,
}

impl SimilarityFilter {
    /// `threshold` in (0, 1]: frames at least this similar (1 − mean |Δ|/255 of
    /// 32×32 RGB thumbnails) are skipped; `max_skip` bounds consecutive skips.
    pub fn new(inner: Arc<dyn Processor>, threshold: f32, max_skip: u32) -> Self {
        Self {
            inner,
            threshold,
            max_skip,
            streams: Mutex::new(HashMap::new()),
        }
    }

    fn thumbnail(frame: &[u8]) -> Result<Vec<u8>, ProcessError> {
        let img = image_io::decode(frame)?;
        Ok(image_io::resize(&img, THUMB, THUMB, ResizeQuality::Fast).data)
    }

    /// 1 − mean absolute difference / 255.
    pub fn similarity(a: &[u8], b: &[u8]) -> f32 {
        if a.len() != b.len() || a.is_empty() {
            return 0.0;
        }
        let sum: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
        1.0 - sum as f32 / (a.len() as f32 * 255.0)
    }
}

impl Processor for SimilarityFilter {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn warm_up(&self) -> Result<(), ProcessError> {
        self.inner.warm_up()
    }

    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError> {
        self.inner.process(frame, params)
    }

    fn process_for_stream(
        &self,
        stream: &str,
        frame: &[u8],
        params: &StyleParams,
    ) -> Result<ProcessedFrame, ProcessError> {
        let t = Instant::now();
        let thumb = Self::thumbnail(frame)?;
        {
            let mut streams = self
                .streams
                .lock()
                .map_err(|_| ProcessError::Model("similarity filter lock poisoned".into()))?;
            if let Some(s) = streams.get_mut(stream)
                && s.params == *params
                && s.skipped < self.max_skip
                && Self::similarity(&s.thumb, &thumb) >= self.threshold
            {
                // Compare with the last *processed* input, so slow drift still triggers a run.
                s.skipped += 1;
                let mut out = s.last.clone();
                out.timings = StageTimings {
                    decode: t.elapsed(),
                    ..StageTimings::default()
                };
                return Ok(out);
            }
        }
        let out = self.inner.process(frame, params)?;
        let mut streams = self
            .streams
            .lock()
            .map_err(|_| ProcessError::Model("similarity filter lock poisoned".into()))?;
        if streams.len() >= MAX_STREAMS && !streams.contains_key(stream) {
            streams.clear();
        }
        streams.insert(
            stream.to_string(),
            StreamState {
                thumb,
                params: params.clone(),
                last: out.clone(),
                skipped: 0,
            },
        );
        Ok(out)
    }
}
