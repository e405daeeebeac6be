//! Arbitrary style transfer (Ghiasi et al. 2017, Magenta's int8 TFLite models):
//! a MobileNetV2 predicts a 100-number style vector from any picture (256²), and
//! a transformer network stylizes the content with it.
//!
//! Style vectors are cached by the SHA-256 of the style picture, so a style used
//! for a live stream is predicted once, not per frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dreamstream_actors::style::StyleImage;

use crate::image_io::{self, ResizeQuality, RgbImage};
use crate::processor::ProcessError;
use crate::qdq::{Executor, Tensor};

/// The style network's input side.
pub const STYLE_SIDE: u32 = 256;
/// The longer side the transformer runs at (its training size).
pub const CONTENT_SIDE: u32 = 384;
/// Length of a style vector.
pub const VECTOR_LEN: usize = 100;
/// Style vectors kept in memory.
const CACHE_SIZE: usize = 32;

pub struct ArbitraryStyle {
    predict: Executor,
    transform: Executor,
    cache: Mutex<VecDeque<(String, Arc<Vec<f32>>)>>,
}

fn model_err(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Model(e.to_string())
}

impl ArbitraryStyle {
    pub fn from_safetensors(predict: &[u8], transform: &[u8]) -> Result<Self, ProcessError> {
        Ok(Self {
            predict: Executor::from_safetensors(predict).map_err(model_err)?,
            transform: Executor::from_safetensors(transform).map_err(model_err)?,
            cache: Mutex::new(VecDeque::new()),
        })
    }

    /// The style vector of a 256×256 NHWC image in [0, 1] (the model's input).
    pub fn predict_nhwc(&self, x: Vec<f32>) -> Result<Vec<f32>, ProcessError> {
        let side = STYLE_SIDE as usize;
        let t = Tensor::f32(vec![1, side, side, 3], x).map_err(model_err)?;
        let out = self.predict.run(vec![t]).map_err(model_err)?;
        let v = out
            .into_iter()
            .next()
            .ok_or_else(|| model_err("no output"))?;
        let v = v.into_f32().map_err(model_err)?;
        if v.len() != VECTOR_LEN {
            return Err(model_err(format!("style vector has {} values", v.len())));
        }
        Ok(v)
    }

    /// Stylizes an NHWC content image in [0, 1] (`h × w`, any size the network's
    /// strides allow) with a style vector; returns `h × w × 3` in [0, 1].
    pub fn transform_nhwc(
        &self,
        x: Vec<f32>,
        h: usize,
        w: usize,
        vector: &[f32],
    ) -> Result<Vec<f32>, ProcessError> {
        let content = Tensor::f32(vec![1, h, w, 3], x).map_err(model_err)?;
        let style = Tensor::f32(vec![1, 1, 1, VECTOR_LEN], vector.to_vec()).map_err(model_err)?;
        let out = self
            .transform
            .run(vec![content, style])
            .map_err(model_err)?;
        let y = out
            .into_iter()
            .next()
            .ok_or_else(|| model_err("no output"))?;
        if y.shape != [1, h, w, 3] {
            return Err(model_err(format!("output shape {:?}", y.shape)));
        }
        y.into_f32().map_err(model_err)
    }

    /// The (cached) style vector of a picture.
    pub fn style_vector(&self, image: &StyleImage) -> Result<Arc<Vec<f32>>, ProcessError> {
        if let Some(v) = self.cached(&image.sha256) {
            return Ok(v);
        }
        let picture = image_io::decode(&image.bytes)?;
        let square = image_io::center_square(&picture);
        let small = image_io::resize(&square, STYLE_SIDE, STYLE_SIDE, ResizeQuality::Best);
        let x = small.data.iter().map(|&v| v as f32 / 255.0).collect();
        let v = Arc::new(self.predict_nhwc(x)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(k, _)| k != &image.sha256);
            cache.push_front((image.sha256.clone(), v.clone()));
            cache.truncate(CACHE_SIZE);
        }
        Ok(v)
    }

    fn cached(&self, key: &str) -> Option<Arc<Vec<f32>>> {
        let mut cache = self.cache.lock().ok()?;
        let pos = cache.iter().position(|(k, _)| k == key)?;
        let entry = cache.remove(pos)?;
        let v = entry.1.clone();
        cache.push_front(entry);
        Some(v)
    }

    /// Stylizes a frame: runs the transformer at most `CONTENT_SIDE` on the longer
    /// side (reflect-padded to a multiple of 4) and scales back to the frame size.
    pub fn stylize(&self, frame: &RgbImage, vector: &[f32]) -> Result<RgbImage, ProcessError> {
        let (w, h) = image_io::fit(frame.width, frame.height, CONTENT_SIDE);
        let small = image_io::resize(frame, w, h, ResizeQuality::Fast);
        let (w, h) = (w as usize, h as usize);
        let (w4, h4) = (w.div_ceil(4) * 4, h.div_ceil(4) * 4);
        let mut x = Vec::with_capacity(w4 * h4 * 3);
        for y in 0..h4 {
            let sy = reflect_end(y, h);
            for xx in 0..w4 {
                let sx = reflect_end(xx, w);
                let i = (sy * w + sx) * 3;
                x.extend(small.data[i..i + 3].iter().map(|&v| v as f32 / 255.0));
            }
        }
        let out = self.transform_nhwc(x, h4, w4, vector)?;
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for v in &out[y * w4 * 3..(y * w4 + w) * 3] {
                data.push((v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
            }
        }
        let styled = RgbImage::new(w as u32, h as u32, data);
        Ok(image_io::resize(
            &styled,
            frame.width,
            frame.height,
            ResizeQuality::Fast,
        ))
    }
}

/// Reflect padding at the end only (index `i` may run past `n - 1`).
fn reflect_end(i: usize, n: usize) -> usize {
    if i < n { i } else { 2 * (n - 1) - i }
}
