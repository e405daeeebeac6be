//! Similar-frame filter (StreamDiffusion's "stochastic similarity filter",
//! made deterministic): when a stream's new input frame is nearly identical to
//! the last one processed, return the last output instead of running the
//! network again, at most `max_skip` times in a row (so a slowly changing scene
//! is still followed). Wraps any processor. The GPU node's setting
//! (`similar_frame_threshold`, off by default) applies to streams whose
//! [`StyleParams::similar_image_filter`] is unset; a stream's own setting
//! (Daydream's `enable_similar_image_filter`, `similar_image_filter_threshold`,
//! `similar_image_filter_max_skip_frame`) turns it on or off for that stream.
//! The measure is ours (below), not StreamDiffusion's cosine similarity with
//! probabilistic skipping: thresholds mean roughly, not exactly, the same.
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
    /// (threshold, max_skip) for streams that do not set their own; `None` = off.
    default: Option<(f32, u32)>,
    streams: Mutex<HashMap<String, StreamState>>,
}

impl SimilarityFilter {
    /// `threshold` in (0, 1]: frames at least this similar (1 − mean |Δ|/255 of
    /// 32×32 RGB thumbnails) are skipped; `max_skip` bounds consecutive skips.
    /// Streams with their own setting use theirs.
    pub fn new(inner: Arc<dyn Processor>, threshold: f32, max_skip: u32) -> Self {
        Self::per_stream(inner, Some((threshold, max_skip)))
    }

    /// Off for streams without their own setting when `default` is `None`.
    pub fn per_stream(inner: Arc<dyn Processor>, default: Option<(f32, u32)>) -> Self {
        Self {
            inner,
            default,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// The stream's (threshold, max_skip), or `None` when it is off.
    fn settings(&self, params: &StyleParams) -> Option<(f32, u32)> {
        match &params.similar_image_filter {
            Some(f) if f.enabled => Some((f.threshold, f.max_skip_frames)),
            Some(_) => None,
            None => self.default,
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
        let Some((threshold, max_skip)) = self.settings(params) else {
            // Off for this stream: forget its last frame (a later switch-on starts afresh).
            if let Ok(mut streams) = self.streams.lock() {
                streams.remove(stream);
            }
            return self.inner.process_for_stream(stream, frame, params);
        };
        let t = Instant::now();
        let thumb = Self::thumbnail(frame)?;
        {
            let mut streams = self
                .streams
                .lock()
                .map_err(|_| ProcessError::Model("similarity filter lock poisoned".into()))?;
            if let Some(s) = streams.get_mut(stream)
                && s.params == *params
                && s.skipped < max_skip
                && Self::similarity(&s.thumb, &thumb) >= threshold
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
