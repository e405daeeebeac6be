//! The neural-style processor: 26 blendable built-in styles and arbitrary styles
//! from any picture, on the CPU (or the 26-style network on CUDA with `--features cuda`).
//!
//! Whole-frame path: JPEG/PNG → RGB → fit to `max_side` → reflect-pad to a
//! multiple of 4 → network → crop → optional colour preservation → strength
//! blend → JPEG.

pub mod arbitrary;
pub mod color;
pub mod multistyle;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use dreamstream_actors::style::{ProcessorKind, StyleParams, StyleSource};

use crate::image_io::{self, ResizeQuality, RgbImage};
use crate::processor::{Capabilities, ProcessError, ProcessedFrame, Processor, StageTimings};
use arbitrary::ArbitraryStyle;
use dreamstream_actors::presets;
use multistyle::{MultiStyleNet, STYLE_COUNT};

/// The weights shipped in the repository (`models/`, written by `gpu-node import-onnx`).
pub mod embedded {
    pub const MULTISTYLE26: &[u8] = include_bytes!("../../../models/multistyle26.safetensors");
    pub const ARBITRARY_PREDICT: &[u8] =
        include_bytes!("../../../models/arbitrary_predict.safetensors");
    pub const ARBITRARY_TRANSFORM: &[u8] =
        include_bytes!("../../../models/arbitrary_transform.safetensors");
}

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum Weights {
    /// Compiled into the binary.
    Embedded,
    /// A directory with the three `.safetensors` files.
    Dir(std::path::PathBuf),
}

impl Weights {
    fn read(
        &self,
        name: &str,
        embedded: &'static [u8],
    ) -> Result<std::borrow::Cow<'static, [u8]>, ProcessError> {
        match self {
            Weights::Embedded => Ok(std::borrow::Cow::Borrowed(embedded)),
            Weights::Dir(dir) => {
                let path = dir.join(name);
                std::fs::read(&path)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|e| {
                        ProcessError::Model(format!("cannot read {}: {e}", path.display()))
                    })
            }
        }
    }
}

/// Settings of the processor.
#[derive(Debug, Clone)]
pub struct NeuralStyleConfig {
    pub weights: Weights,
    /// Threads for one frame (0 = all cores).
    pub threads: usize,
}

impl Default for NeuralStyleConfig {
    fn default() -> Self {
        Self {
            weights: Weights::Embedded,
            threads: 0,
        }
    }
}

pub struct NeuralStyle {
    multi: MultiStyleNet,
    arbitrary: ArbitraryStyle,
    pool: Arc<rayon::ThreadPool>,
}

impl NeuralStyle {
    pub fn load(config: &NeuralStyleConfig) -> Result<Self, ProcessError> {
        let multi_bytes = config
            .weights
            .read("multistyle26.safetensors", embedded::MULTISTYLE26)?;
        let multi = MultiStyleNet::load_bytes(&multi_bytes)
            .map_err(|e| ProcessError::Model(e.to_string()))?;
        let predict = config
            .weights
            .read("arbitrary_predict.safetensors", embedded::ARBITRARY_PREDICT)?;
        let transform = config.weights.read(
            "arbitrary_transform.safetensors",
            embedded::ARBITRARY_TRANSFORM,
        )?;
        let arbitrary = ArbitraryStyle::from_safetensors(&predict, &transform)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("neural-style-{i}"))
            .build()
            .map_err(|e| ProcessError::Model(format!("cannot start threads: {e}")))?;
        Ok(Self {
            multi,
            arbitrary,
            pool: Arc::new(pool),
        })
    }

    /// The built-in weights with `threads` threads per frame (0 = all cores).
    pub fn load_with_threads(threads: usize) -> Result<Self, ProcessError> {
        Self::load(&NeuralStyleConfig {
            weights: Weights::Embedded,
            threads,
        })
    }

    pub fn load_dir(dir: &Path, threads: usize) -> Result<Self, ProcessError> {
        Self::load(&NeuralStyleConfig {
            weights: Weights::Dir(dir.to_path_buf()),
            threads,
        })
    }

    pub fn multistyle(&self) -> &MultiStyleNet {
        &self.multi
    }

    pub fn arbitrary(&self) -> &ArbitraryStyle {
        &self.arbitrary
    }

    pub fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    /// Runs the 26-style network on an RGB image of any size.
    pub fn stylize_preset(
        &self,
        img: &RgbImage,
        weights: &[f32; STYLE_COUNT],
    ) -> Result<RgbImage, ProcessError> {
        let (w, h) = (img.width as usize, img.height as usize);
        let (w4, h4) = (w.div_ceil(4) * 4, h.div_ceil(4) * 4);
        let reflect_end = |i: usize, n: usize| if i < n { i } else { 2 * (n - 1) - i };
        let out = self.pool.install(|| {
            self.multi.forward(h4, w4, weights, |buf| {
                multistyle::fill_reflect(buf, |y, x, c| {
                    img.data[(reflect_end(y, h) * w + reflect_end(x, w)) * 3 + c] as f32 / 255.0
                })
            })
        });
        let out = out.map_err(|e| ProcessError::Model(e.to_string()))?;
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for v in &out[y * w4 * 3..(y * w4 + w) * 3] {
                data.push((v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
            }
        }
        Ok(RgbImage::new(img.width, img.height, data))
    }

    /// The stylized image before colour preservation and blending; also says
    /// how a prompt was interpreted.
    fn stylize(
        &self,
        img: &RgbImage,
        params: &StyleParams,
    ) -> Result<(RgbImage, Option<String>), ProcessError> {
        match &params.source {
            StyleSource::Preset { mix } => Ok((self.stylize_preset(img, &mix.dense())?, None)),
            StyleSource::Image { image } => {
                let vector = self.pool.install(|| self.arbitrary.style_vector(image))?;
                let out = self.pool.install(|| self.arbitrary.stylize(img, &vector))?;
                Ok((out, None))
            }
            StyleSource::Prompt { prompt, .. } => {
                let index = presets::closest_to_prompt(prompt);
                let note = format!(
                    "this worker has no text-to-image model: the prompt was mapped to the built-in style \"{}\"",
                    presets::NAMES[index]
                );
                let mut weights = [0f32; STYLE_COUNT];
                weights[index] = 1.0;
                Ok((self.stylize_preset(img, &weights)?, Some(note)))
            }
        }
    }

    /// The whole-frame path on already decoded pixels (the CLI uses it for PNG output).
    pub fn process_image(
        &self,
        img: &RgbImage,
        params: &StyleParams,
    ) -> Result<(RgbImage, Option<String>), ProcessError> {
        check_params(params)?;
        let (w, h) = image_io::fit(img.width, img.height, params.max_side);
        let original = image_io::resize(img, w, h, ResizeQuality::Fast);
        let (mut out, note) = self.stylize(&original, params)?;
        if params.preserve_color {
            color::preserve_color(&mut out, &original);
        }
        color::blend(&mut out, &original, params.strength);
        Ok((out, note))
    }
}

fn check_params(params: &StyleParams) -> Result<(), ProcessError> {
    if !StyleParams::is_known_version(params.version) {
        return Err(ProcessError::Version(params.version));
    }
    params.validate()?;
    if params.processor != ProcessorKind::NeuralStyle {
        return Err(ProcessError::Unsupported(format!(
            "the {} processor (this is a neural-style worker)",
            params.processor.as_str()
        )));
    }
    Ok(())
}

impl Processor for NeuralStyle {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            processor: ProcessorKind::NeuralStyle,
            models: vec!["multistyle26".into(), "arbitrary".into()],
            device: "cpu".into(),
            prompts: false,
            style_images: true,
        }
    }

    fn warm_up(&self) -> Result<(), ProcessError> {
        let img = RgbImage::new(64, 48, (0..64 * 48 * 3).map(|i| (i % 251) as u8).collect());
        let mut weights = [0f32; STYLE_COUNT];
        weights[0] = 1.0;
        self.stylize_preset(&img, &weights)?;
        let vector = vec![0f32; arbitrary::VECTOR_LEN];
        self.pool
            .install(|| self.arbitrary.stylize(&img, &vector))?;
        Ok(())
    }

    fn process(&self, frame: &[u8], params: &StyleParams) -> Result<ProcessedFrame, ProcessError> {
        check_params(params)?;
        let t0 = Instant::now();
        let img = image_io::decode(frame)?;
        let t1 = Instant::now();
        let (out, note) = self.process_image(&img, params)?;
        let t2 = Instant::now();
        let jpeg = image_io::encode_jpeg(&out, params.jpeg_quality)?;
        let t3 = Instant::now();
        Ok(ProcessedFrame {
            jpeg,
            width: out.width,
            height: out.height,
            timings: StageTimings {
                decode: t1 - t0,
                infer: t2 - t1,
                encode: t3 - t2,
            },
            note,
        })
    }
}
