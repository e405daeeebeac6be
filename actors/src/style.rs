//! Style parameters: what a processor does to a frame.
//!
//! Shared by the web tier (it parses what users type), the stream actor (the live
//! settings of a stream) and the workers (they run it). Parse, don't validate: a
//! [`StyleParams`] that exists has passed [`StyleParams::validate`] at the edge where
//! it was built from user input, and workers check it again because it crossed a
//! network.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of built-in styles of the conditional-instance-norm network.
pub const PRESET_COUNT: usize = 26;

/// Smallest and largest accepted `max_side` (pixels of the longer side).
pub const MIN_SIDE: u32 = 32;
pub const MAX_SIDE: u32 = 4096;

/// Most entries of a weighted prompt or seed list (Daydream's limit).
pub const MAX_WEIGHTED: usize = 8;
/// Most entries of a `t_index_list` (one model pass each).
pub const MAX_T_INDICES: usize = 8;
/// Longest schedule a `t_index_list` indexes into (Daydream's `num_inference_steps`).
pub const MAX_SCHEDULE_STEPS: u32 = 100;
/// Most consecutive frames the similar-image filter may skip.
pub const MAX_SKIP_FRAMES: u32 = 1000;

/// Errors in style parameters; each names what was wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StyleError {
    #[error("bad style spec {spec:?}: {reason}; use e.g. \"19\" or \"3:0.5,12:0.5\"")]
    BadSpec { spec: String, reason: String },
    #[error("style index {index} is out of range: there are {PRESET_COUNT} styles, 0 to {}", PRESET_COUNT - 1)]
    IndexOutOfRange { index: i64 },
    #[error("style weights must not be negative (style {index} has {weight})")]
    NegativeWeight { index: usize, weight: f32 },
    #[error("style weights are all zero: give at least one style a positive weight")]
    AllZeroWeights,
    #[error("strength must be between 0 and 1, got {0}")]
    Strength(f32),
    #[error("max side must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {0}")]
    MaxSide(u32),
    #[error("JPEG quality must be between 1 and 100, got {0}")]
    JpegQuality(u8),
    #[error("diffusion steps must be between 1 and 50, got {0}")]
    Steps(u32),
    #[error("guidance must be a finite number between 0 and 30, got {0}")]
    Guidance(f32),
    #[error("prompt must be 1 to 500 characters, got {0}")]
    PromptLength(usize),
    #[error("style image hash does not match its bytes")]
    StyleImageHash,
    #[error("a weighted {what} list must have 1 to {MAX_WEIGHTED} entries, got {len}")]
    WeightedLength { what: &'static str, len: usize },
    #[error("{what} weights must be finite and not negative ({what} {index} has {weight})")]
    BadWeight {
        what: &'static str,
        index: usize,
        weight: f32,
    },
    #[error("{what} weights are all zero: give at least one {what} a positive weight")]
    AllZero { what: &'static str },
    #[error(
        "t_index_list must have 1 to {MAX_T_INDICES} non-decreasing step indices below the \
         steps ({steps}), got {list:?}"
    )]
    TIndexList { list: Vec<u32>, steps: u32 },
    #[error(
        "with a t_index_list, steps (the schedule's length) must be between 1 and {MAX_SCHEDULE_STEPS}, got {0}"
    )]
    ScheduleSteps(u32),
    #[error(
        "similar-image filter: threshold must be between 0 and 1 and max skipped frames at most \
         {MAX_SKIP_FRAMES}, got {threshold} and {max_skip_frames}"
    )]
    SimilarImageFilter {
        threshold: f32,
        max_skip_frames: u32,
    },
    #[error(
        "style parameters version {version} is not known (this build knows 1 to {})",
        StyleParams::VERSION
    )]
    UnknownVersion { version: u32 },
    #[error(
        "style parameters version {version} cannot carry weighted prompts or seeds or a \
         t_index_list: they need version {needed}"
    )]
    VersionTooOld { version: u32, needed: u32 },
}

/// A blend of the built-in styles: non-negative weights normalised to sum to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<(usize, f32)>", into = "Vec<(usize, f32)>")]
pub struct PresetMix {
    /// (style index, weight) with index ascending, weights > 0, summing to 1.
    parts: Vec<(usize, f32)>,
}

impl PresetMix {
    /// One built-in style at full weight.
    pub fn single(index: usize) -> Result<Self, StyleError> {
        Self::from_parts(vec![(index, 1.0)])
    }

    /// Parses `"19"` (one style) or `"3:0.5,12:0.5"` (a blend; weights are normalised).
    pub fn parse(spec: &str) -> Result<Self, StyleError> {
        let bad = |reason: &str| StyleError::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (index, weight) = match part.split_once(':') {
                Some((i, w)) => (i.trim(), Some(w.trim())),
                None => (part, None),
            };
            let index: i64 = index
                .parse()
                .map_err(|_| bad("style index is not a whole number"))?;
            let weight: f32 = match weight {
                Some(w) => w.parse().map_err(|_| bad("weight is not a number"))?,
                None => 1.0,
            };
            if !weight.is_finite() {
                return Err(bad("weight is not a finite number"));
            }
            let index =
                usize::try_from(index).map_err(|_| StyleError::IndexOutOfRange { index })?;
            parts.push((index, weight));
        }
        if parts.is_empty() {
            return Err(bad("no style given"));
        }
        Self::from_parts(parts)
    }

    /// Builds a mix from (index, weight) pairs; repeated indices add up.
    pub fn from_parts(parts: Vec<(usize, f32)>) -> Result<Self, StyleError> {
        let mut dense = [0f32; PRESET_COUNT];
        for (index, weight) in parts {
            if index >= PRESET_COUNT {
                return Err(StyleError::IndexOutOfRange {
                    index: index as i64,
                });
            }
            if weight < 0.0 || weight.is_nan() {
                return Err(StyleError::NegativeWeight { index, weight });
            }
            dense[index] += weight;
        }
        Self::from_dense(&dense)
    }

    /// Builds a mix from 26 weights (normalised here).
    pub fn from_dense(weights: &[f32; PRESET_COUNT]) -> Result<Self, StyleError> {
        if let Some((index, &weight)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| **w < 0.0 || !w.is_finite())
        {
            return Err(StyleError::NegativeWeight { index, weight });
        }
        let sum: f32 = weights.iter().sum();
        if sum <= 0.0 {
            return Err(StyleError::AllZeroWeights);
        }
        let parts = weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0.0)
            .map(|(i, w)| (i, w / sum))
            .collect();
        Ok(Self { parts })
    }

    /// The 26 normalised weights, the network's `style_weights` input.
    pub fn dense(&self) -> [f32; PRESET_COUNT] {
        let mut dense = [0f32; PRESET_COUNT];
        for &(i, w) in &self.parts {
            dense[i] = w;
        }
        dense
    }

    pub fn parts(&self) -> &[(usize, f32)] {
        &self.parts
    }

    /// The style with the largest weight (what a page names when it shows the mix).
    pub fn dominant(&self) -> usize {
        self.parts
            .iter()
            .fold(
                (0, f32::MIN),
                |best, &(i, w)| if w > best.1 { (i, w) } else { best },
            )
            .0
    }

    /// The canonical text form, e.g. `19` or `3:0.5,12:0.5`; `parse` reads it back.
    pub fn to_spec(&self) -> String {
        if let [(i, _)] = self.parts[..] {
            return i.to_string();
        }
        self.parts
            .iter()
            .map(|(i, w)| format!("{i}:{}", (w * 1000.0).round() / 1000.0))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl TryFrom<Vec<(usize, f32)>> for PresetMix {
    type Error = StyleError;
    fn try_from(parts: Vec<(usize, f32)>) -> Result<Self, StyleError> {
        Self::from_parts(parts)
    }
}

impl From<PresetMix> for Vec<(usize, f32)> {
    fn from(mix: PresetMix) -> Self {
        mix.parts
    }
}

/// A picture used as the style (arbitrary style transfer). The bytes travel with the
/// job; workers cache the style vector computed from them by `sha256`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleImage {
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
    /// JPEG or PNG bytes (the web tier shrinks uploads to the network's 256² input).
    pub bytes: Vec<u8>,
}

impl StyleImage {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
        }
    }

    /// True when `sha256` is the hash of `bytes` (checked by workers: a wrong hash
    /// would poison their style-vector cache).
    pub fn is_consistent(&self) -> bool {
        hex::encode(Sha256::digest(&self.bytes)) == self.sha256
    }
}

/// Where the style comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StyleSource {
    /// One of the built-in styles or a blend of several.
    Preset { mix: PresetMix },
    /// Any picture as the style.
    Image { image: StyleImage },
    /// A text prompt (diffusion workers); neural-style workers map it to a preset.
    Prompt {
        /// The prompt; with `blend`, its heaviest entry (what pages show and
        /// what a worker that cannot blend would render).
        prompt: String,
        #[serde(default)]
        negative_prompt: Option<String>,
        /// Several weighted prompts whose embeddings are combined (version 2);
        /// when present it is what diffusion workers render instead of `prompt`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blend: Option<Weighted<String>>,
    },
}

/// How the entries of a weighted list are combined (StreamDiffusion's
/// `prompt_interpolation_method` / `seed_interpolation_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Weighted sum.
    #[default]
    Linear,
    /// Spherical interpolation between exactly two entries (`t` = the second's
    /// weight); with more than two entries, linear.
    Slerp,
}

impl Interpolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Linear => "linear",
            Interpolation::Slerp => "slerp",
        }
    }
}

fn yes() -> bool {
    true
}

/// A weighted list of prompts or seeds and how to combine it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weighted<T> {
    /// 1 to [`MAX_WEIGHTED`] (value, weight); weights finite, ≥ 0, not all zero.
    pub items: Vec<(T, f32)>,
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Divide the weights by their sum before combining (Daydream's default).
    #[serde(default = "yes")]
    pub normalize: bool,
}

impl<T> Weighted<T> {
    /// A list combined linearly with normalised weights.
    pub fn linear(items: Vec<(T, f32)>) -> Self {
        Self {
            items,
            interpolation: Interpolation::Linear,
            normalize: true,
        }
    }

    /// Checks the entry count and the weights; `what` names the list in errors.
    pub fn validate(&self, what: &'static str) -> Result<(), StyleError> {
        let len = self.items.len();
        if len == 0 || len > MAX_WEIGHTED {
            return Err(StyleError::WeightedLength { what, len });
        }
        if let Some((index, &(_, weight))) = self
            .items
            .iter()
            .enumerate()
            .find(|(_, (_, w))| !w.is_finite() || *w < 0.0)
        {
            return Err(StyleError::BadWeight {
                what,
                index,
                weight,
            });
        }
        if self.items.iter().all(|(_, w)| *w == 0.0) {
            return Err(StyleError::AllZero { what });
        }
        Ok(())
    }

    /// The entry with the largest weight (the first of equals).
    pub fn heaviest(&self) -> Option<&T> {
        self.items
            .iter()
            .fold(None::<&(T, f32)>, |best, x| match best {
                Some(b) if b.1 >= x.1 => Some(b),
                _ => Some(x),
            })
            .map(|(v, _)| v)
    }
}

/// StreamDiffusion's similar-image filter, per stream: a frame at least
/// `threshold` similar to the last processed one gets the last output again,
/// at most `max_skip_frames` times in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarImageFilter {
    /// Off: every frame runs, whatever the GPU node's default.
    pub enabled: bool,
    /// 0 to 1 (1 = only identical thumbnails are skipped).
    pub threshold: f32,
    pub max_skip_frames: u32,
}

impl SimilarImageFilter {
    pub fn validate(&self) -> Result<(), StyleError> {
        if !(0.0..=1.0).contains(&self.threshold) || self.max_skip_frames > MAX_SKIP_FRAMES {
            return Err(StyleError::SimilarImageFilter {
                threshold: self.threshold,
                max_skip_frames: self.max_skip_frames,
            });
        }
        Ok(())
    }
}

/// Which family of processor a style needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessorKind {
    /// The conditional-instance-norm and arbitrary-style networks; runs anywhere.
    NeuralStyle,
    /// img2img Stable Diffusion; GPU nodes with weights.
    Diffusion,
}

impl ProcessorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessorKind::NeuralStyle => "neural-style",
            ProcessorKind::Diffusion => "diffusion",
        }
    }
}

/// Parameters only diffusion processors read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionParams {
    /// Model name as configured on the GPU node (e.g. `sd-turbo`); `None` = the node's default.
    #[serde(default)]
    pub model: Option<String>,
    /// Model passes per frame; with `t_index_list`, the length of the
    /// schedule the list indexes into (Daydream's `num_inference_steps`).
    pub steps: u32,
    /// The seed; with `seeds`, its heaviest entry.
    pub seed: u64,
    pub guidance: f32,
    /// Several weighted seeds whose noises are combined (version 2); when
    /// present it replaces `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Weighted<u64>>,
    /// StreamDiffusion's `t_index_list` (version 2): exactly these indices of a
    /// `steps`-long schedule run, one model pass each; `strength` is then unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_index_list: Option<Vec<u32>>,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        Self {
            model: None,
            steps: 2,
            seed: 42,
            guidance: 0.0,
            seeds: None,
            t_index_list: None,
        }
    }
}

/// Everything a processor needs besides the frame. Versioned: a worker refuses a
/// version it does not know instead of guessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleParams {
    pub version: u32,
    pub processor: ProcessorKind,
    pub source: StyleSource,
    /// 0 = the original frame, 1 = fully stylized (a blend in between).
    pub strength: f32,
    /// Keep the original colours, take only the stylized brightness.
    pub preserve_color: bool,
    /// The longer side of the processed frame, in pixels.
    pub max_side: u32,
    /// Quality of the JPEG the processor returns.
    pub jpeg_quality: u8,
    #[serde(default)]
    pub diffusion: DiffusionParams,
    /// The stream's similar-image filter; `None` = the GPU node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similar_image_filter: Option<SimilarImageFilter>,
}

impl StyleParams {
    /// The newest version this build reads and writes. Version 2 added weighted
    /// prompts and seeds and the `t_index_list`; a version-1 reader would
    /// silently render only the heaviest prompt, so params that use them are
    /// stamped 2 and such readers refuse them ([`Self::needed_version`]), while
    /// params without them stay version 1 (every reader takes them). Readers
    /// accept 1 to `VERSION`: version-1 JSON is version 2 without the new fields.
    pub const VERSION: u32 = 2;

    /// The default look: built-in style 0 at full strength, 512 px, quality 80.
    pub fn preset(mix: PresetMix) -> Self {
        Self {
            version: 1,
            processor: ProcessorKind::NeuralStyle,
            source: StyleSource::Preset { mix },
            strength: 1.0,
            preserve_color: false,
            max_side: 512,
            jpeg_quality: 80,
            diffusion: DiffusionParams::default(),
            similar_image_filter: None,
        }
    }

    /// The lowest version that carries these params (see [`Self::VERSION`]).
    pub fn needed_version(&self) -> u32 {
        let blend = matches!(&self.source, StyleSource::Prompt { blend: Some(_), .. });
        if blend || self.diffusion.seeds.is_some() || self.diffusion.t_index_list.is_some() {
            2
        } else {
            1
        }
    }

    /// Sets `version` to [`Self::needed_version`] (call after building params).
    pub fn stamp_version(&mut self) {
        self.version = self.needed_version();
    }

    /// True for versions this build can render (1 to [`Self::VERSION`]).
    pub fn is_known_version(version: u32) -> bool {
        (1..=Self::VERSION).contains(&version)
    }

    /// Checks every field; the message of the error says what is accepted.
    pub fn validate(&self) -> Result<(), StyleError> {
        if !Self::is_known_version(self.version) {
            return Err(StyleError::UnknownVersion {
                version: self.version,
            });
        }
        let needed = self.needed_version();
        if self.version < needed {
            return Err(StyleError::VersionTooOld {
                version: self.version,
                needed,
            });
        }
        if !(0.0..=1.0).contains(&self.strength) {
            return Err(StyleError::Strength(self.strength));
        }
        if !(MIN_SIDE..=MAX_SIDE).contains(&self.max_side) {
            return Err(StyleError::MaxSide(self.max_side));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(StyleError::JpegQuality(self.jpeg_quality));
        }
        match &self.source {
            StyleSource::Preset { mix } => {
                // Deserialised mixes are rebuilt through `from_parts`; this re-check
                // guards mixes built in code.
                PresetMix::from_parts(mix.parts().to_vec())?;
            }
            StyleSource::Image { image } => {
                if !image.is_consistent() {
                    return Err(StyleError::StyleImageHash);
                }
            }
            StyleSource::Prompt { prompt, blend, .. } => {
                let prompts = blend.iter().flat_map(|b| b.items.iter().map(|(p, _)| p));
                for p in std::iter::once(prompt).chain(prompts) {
                    let n = p.chars().count();
                    if n == 0 || n > 500 {
                        return Err(StyleError::PromptLength(n));
                    }
                }
                if let Some(b) = blend {
                    b.validate("prompt")?;
                }
            }
        }
        if self.processor == ProcessorKind::Diffusion {
            let d = &self.diffusion;
            match &d.t_index_list {
                None if !(1..=50).contains(&d.steps) => return Err(StyleError::Steps(d.steps)),
                None => {}
                Some(_) if !(1..=MAX_SCHEDULE_STEPS).contains(&d.steps) => {
                    return Err(StyleError::ScheduleSteps(d.steps));
                }
                Some(list)
                    if list.is_empty()
                        || list.len() > MAX_T_INDICES
                        || list.windows(2).any(|w| w[0] > w[1])
                        || list.iter().any(|&i| i >= d.steps) =>
                {
                    return Err(StyleError::TIndexList {
                        list: list.clone(),
                        steps: d.steps,
                    });
                }
                Some(_) => {}
            }
            if !(0.0..=30.0).contains(&d.guidance) {
                return Err(StyleError::Guidance(d.guidance));
            }
            if let Some(seeds) = &d.seeds {
                seeds.validate("seed")?;
            }
        }
        if let Some(f) = &self.similar_image_filter {
            f.validate()?;
        }
        Ok(())
    }

    /// A stable key of everything that changes the network's conditioning (used by
    /// workers to cache style vectors and prompt embeddings).
    pub fn conditioning_key(&self) -> String {
        match &self.source {
            StyleSource::Preset { mix } => format!("preset:{}", mix.to_spec()),
            StyleSource::Image { image } => format!("image:{}", image.sha256),
            StyleSource::Prompt {
                prompt,
                negative_prompt,
                blend,
            } => {
                let mut h = Sha256::new();
                h.update(prompt.as_bytes());
                h.update([0]);
                h.update(negative_prompt.as_deref().unwrap_or("").as_bytes());
                // A blend: every (prompt, weight) and how they combine. Without
                // one the hash is what it was before blends existed.
                if let Some(b) = blend {
                    h.update([0xff]);
                    h.update(b.interpolation.as_str().as_bytes());
                    h.update([u8::from(b.normalize)]);
                    for (p, w) in &b.items {
                        h.update((p.len() as u64).to_le_bytes());
                        h.update(p.as_bytes());
                        h.update(w.to_bits().to_le_bytes());
                    }
                }
                format!("prompt:{}", hex::encode(h.finalize()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_blend_specs() {
        let one = PresetMix::parse("19").unwrap();
        assert_eq!(one.parts(), &[(19, 1.0)]);
        assert_eq!(one.to_spec(), "19");
        let blend = PresetMix::parse("3:0.5, 12:1.5").unwrap();
        assert_eq!(blend.parts(), &[(3, 0.25), (12, 0.75)]);
        assert_eq!(PresetMix::parse(&blend.to_spec()).unwrap(), blend);
        assert_eq!(blend.dominant(), 12);
        let dense = blend.dense();
        assert_eq!(dense[3], 0.25);
        assert!((dense.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_specs_with_typed_errors() {
        assert_eq!(
            PresetMix::parse("26"),
            Err(StyleError::IndexOutOfRange { index: 26 })
        );
        assert_eq!(
            PresetMix::parse("-1"),
            Err(StyleError::IndexOutOfRange { index: -1 })
        );
        assert_eq!(PresetMix::parse("3:0,4:0"), Err(StyleError::AllZeroWeights));
        assert!(matches!(
            PresetMix::parse("3:-1"),
            Err(StyleError::NegativeWeight { index: 3, .. })
        ));
        assert!(matches!(
            PresetMix::parse("x"),
            Err(StyleError::BadSpec { .. })
        ));
        assert!(matches!(
            PresetMix::parse("3:abc"),
            Err(StyleError::BadSpec { .. })
        ));
        assert!(matches!(
            PresetMix::parse(""),
            Err(StyleError::BadSpec { .. })
        ));
        assert!(matches!(
            PresetMix::parse("3:inf"),
            Err(StyleError::BadSpec { .. })
        ));
        let msg = PresetMix::parse("30").unwrap_err().to_string();
        assert!(msg.contains("0 to 25"), "{msg}");
    }

    #[test]
    fn validates_params() {
        let mut p = StyleParams::preset(PresetMix::single(0).unwrap());
        assert_eq!(p.validate(), Ok(()));
        p.strength = -0.1;
        assert_eq!(p.validate(), Err(StyleError::Strength(-0.1)));
        p.strength = f32::NAN;
        assert!(matches!(p.validate(), Err(StyleError::Strength(_))));
        p.strength = 1.0;
        p.max_side = 8;
        assert_eq!(p.validate(), Err(StyleError::MaxSide(8)));
        p.max_side = 512;
        p.jpeg_quality = 0;
        assert_eq!(p.validate(), Err(StyleError::JpegQuality(0)));
        p.jpeg_quality = 80;
        let mut img = StyleImage::new(vec![1, 2, 3]);
        img.bytes.push(4);
        p.source = StyleSource::Image { image: img };
        assert_eq!(p.validate(), Err(StyleError::StyleImageHash));
    }

    #[test]
    fn serde_round_trip_rechecks_mixes() {
        let p = StyleParams::preset(PresetMix::parse("3:0.5,12:0.5").unwrap());
        let json = serde_json::to_string(&p).unwrap();
        let back: StyleParams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let forged = json.replace("[3,0.5]", "[30,0.5]");
        assert!(serde_json::from_str::<StyleParams>(&forged).is_err());
    }

    fn diffusion(prompt: &str) -> StyleParams {
        let mut p = StyleParams::preset(PresetMix::single(0).unwrap());
        p.processor = ProcessorKind::Diffusion;
        p.source = StyleSource::Prompt {
            prompt: prompt.into(),
            negative_prompt: None,
            blend: None,
        };
        p
    }

    /// `p` with a prompt blend, stamped.
    fn blended(items: Vec<(&str, f32)>) -> StyleParams {
        let mut p = diffusion("a");
        let items = items.into_iter().map(|(t, w)| (t.to_string(), w)).collect();
        if let StyleSource::Prompt { blend, .. } = &mut p.source {
            *blend = Some(Weighted::linear(items));
        }
        p.stamp_version();
        p
    }

    #[test]
    fn validates_weighted_prompts_and_seeds() {
        assert_eq!(blended(vec![("a", 1.0), ("b", 0.0)]).validate(), Ok(()));
        assert_eq!(
            blended(vec![]).validate(),
            Err(StyleError::WeightedLength {
                what: "prompt",
                len: 0
            })
        );
        assert_eq!(
            blended(vec![("a", 1.0); 9]).validate(),
            Err(StyleError::WeightedLength {
                what: "prompt",
                len: 9
            })
        );
        assert_eq!(blended(vec![("a", 1.0); 8]).validate(), Ok(()));
        assert_eq!(
            blended(vec![("a", 1.0), ("b", -0.5)]).validate(),
            Err(StyleError::BadWeight {
                what: "prompt",
                index: 1,
                weight: -0.5
            })
        );
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(matches!(
                blended(vec![("a", bad)]).validate(),
                Err(StyleError::BadWeight { index: 0, .. })
            ));
        }
        assert_eq!(
            blended(vec![("a", 0.0), ("b", 0.0)]).validate(),
            Err(StyleError::AllZero { what: "prompt" })
        );
        assert_eq!(
            blended(vec![("a", 1.0), ("", 1.0)]).validate(),
            Err(StyleError::PromptLength(0))
        );
        let mut p = diffusion("a");
        p.diffusion.seeds = Some(Weighted::linear(vec![(1, 0.0), (2, 0.0)]));
        p.stamp_version();
        assert_eq!(p.validate(), Err(StyleError::AllZero { what: "seed" }));
        p.diffusion.seeds = Some(Weighted::linear(vec![(1, 0.5), (2, 0.5)]));
        assert_eq!(p.validate(), Ok(()));
        let msg = StyleError::AllZero { what: "seed" }.to_string();
        assert!(msg.contains("seed"), "{msg}");
    }

    #[test]
    fn validates_the_t_index_list() {
        let mut p = diffusion("a");
        p.diffusion.steps = 50;
        p.diffusion.t_index_list = Some(vec![20, 20, 35]);
        p.stamp_version();
        assert_eq!(p.validate(), Ok(()), "non-decreasing, repeats allowed");
        for list in [vec![], vec![30, 20], vec![10, 50], vec![1; 9]] {
            p.diffusion.t_index_list = Some(list.clone());
            assert_eq!(
                p.validate(),
                Err(StyleError::TIndexList { list, steps: 50 })
            );
        }
        // With a list, steps is the schedule's length: up to 100, not 50.
        p.diffusion.t_index_list = Some(vec![0, 90]);
        p.diffusion.steps = 100;
        assert_eq!(p.validate(), Ok(()));
        p.diffusion.steps = 101;
        assert_eq!(p.validate(), Err(StyleError::ScheduleSteps(101)));
        p.diffusion.t_index_list = None;
        p.diffusion.steps = 51;
        assert_eq!(p.validate(), Err(StyleError::Steps(51)));
    }

    #[test]
    fn validates_the_similar_image_filter() {
        let mut p = StyleParams::preset(PresetMix::single(0).unwrap());
        let mut f = SimilarImageFilter {
            enabled: true,
            threshold: 0.98,
            max_skip_frames: 10,
        };
        p.similar_image_filter = Some(f.clone());
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.needed_version(), 1, "older workers just ignore it");
        for (threshold, max_skip_frames) in [(1.5, 10), (f32::NAN, 10), (0.5, 1001)] {
            f.threshold = threshold;
            f.max_skip_frames = max_skip_frames;
            p.similar_image_filter = Some(f.clone());
            assert!(matches!(
                p.validate(),
                Err(StyleError::SimilarImageFilter { .. })
            ));
        }
    }

    #[test]
    fn versions() {
        let plain = diffusion("a");
        assert_eq!(plain.version, 1);
        assert_eq!(plain.needed_version(), 1);
        let mut p = blended(vec![("a", 1.0), ("b", 1.0)]);
        assert_eq!(p.version, 2);
        p.version = 1;
        assert_eq!(
            p.validate(),
            Err(StyleError::VersionTooOld {
                version: 1,
                needed: 2
            })
        );
        let mut q = plain.clone();
        q.diffusion.t_index_list = Some(vec![1]);
        assert_eq!(q.needed_version(), 2);
        let mut q = plain.clone();
        q.diffusion.seeds = Some(Weighted::linear(vec![(1, 1.0)]));
        assert_eq!(q.needed_version(), 2);
        for version in [0, StyleParams::VERSION + 1] {
            let q = StyleParams {
                version,
                ..plain.clone()
            };
            assert_eq!(q.validate(), Err(StyleError::UnknownVersion { version }));
        }
        // A newer reader takes version 1 as it is.
        assert!(StyleParams::is_known_version(1));
        assert_eq!(plain.validate(), Ok(()));
    }

    #[test]
    fn serde_round_trips_the_new_fields() {
        let mut p = blended(vec![("a fox", 0.25), ("a castle", 0.75)]);
        if let StyleSource::Prompt { blend: Some(b), .. } = &mut p.source {
            b.interpolation = Interpolation::Slerp;
            b.normalize = false;
        }
        p.diffusion.seeds = Some(Weighted {
            items: vec![(7, 0.5), (9_007_199_254_740_991, 0.5)],
            interpolation: Interpolation::Slerp,
            normalize: true,
        });
        p.diffusion.steps = 50;
        p.diffusion.t_index_list = Some(vec![20, 35]);
        p.similar_image_filter = Some(SimilarImageFilter {
            enabled: false,
            threshold: 0.9,
            max_skip_frames: 3,
        });
        p.stamp_version();
        assert_eq!(p.validate(), Ok(()));
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""interpolation":"slerp""#), "{json}");
        let back: StyleParams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn version_1_json_still_reads() {
        // As a build before weighted prompts wrote it.
        let old = r#"{"version":1,"processor":"diffusion",
            "source":{"kind":"prompt","prompt":"a fox","negative_prompt":null},
            "strength":0.5,"preserve_color":false,"max_side":512,"jpeg_quality":80,
            "diffusion":{"model":"sd-turbo","steps":2,"seed":7,"guidance":0.0}}"#;
        let p: StyleParams = serde_json::from_str(old).unwrap();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.version, 1);
        assert!(matches!(&p.source, StyleSource::Prompt { blend: None, .. }));
        assert_eq!(p.diffusion.seeds, None);
        assert_eq!(p.diffusion.t_index_list, None);
        assert_eq!(p.similar_image_filter, None);
        // And writing params without the new fields gives the old shape back.
        let json = serde_json::to_value(&p).unwrap();
        let old: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(json, old);
        // A blend without its options takes Daydream's defaults.
        let w: Weighted<u64> = serde_json::from_str(r#"{"items":[[1,0.5],[2,0.5]]}"#).unwrap();
        assert_eq!(w, Weighted::linear(vec![(1, 0.5), (2, 0.5)]));
    }

    #[test]
    fn conditioning_key_covers_the_prompt_blend() {
        let plain = diffusion("a fox");
        // Without a blend the key is what it always was.
        let mut h = Sha256::new();
        h.update(b"a fox");
        h.update([0]);
        let want = format!("prompt:{}", hex::encode(h.finalize()));
        assert_eq!(plain.conditioning_key(), want);
        let base = blended(vec![("a fox", 0.5), ("a castle", 0.5)]);
        let mut keys = vec![plain.conditioning_key(), base.conditioning_key()];
        let variants: [fn(&mut Weighted<String>); 4] = [
            |b| b.items[1].1 = 0.6,
            |b| b.items[1].0 = "a cat".into(),
            |b| b.interpolation = Interpolation::Slerp,
            |b| b.normalize = false,
        ];
        for change in variants {
            let mut p = base.clone();
            if let StyleSource::Prompt { blend: Some(b), .. } = &mut p.source {
                change(b);
            }
            keys.push(p.conditioning_key());
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(
            base.conditioning_key(),
            base.clone().conditioning_key(),
            "stable"
        );
    }

    #[test]
    fn conditioning_key_names_the_style() {
        let p = StyleParams::preset(PresetMix::single(7).unwrap());
        assert_eq!(p.conditioning_key(), "preset:7");
        let img = StyleImage::new(b"picture".to_vec());
        let key = format!("image:{}", img.sha256);
        let mut q = p.clone();
        q.source = StyleSource::Image { image: img };
        assert_eq!(q.conditioning_key(), key);
    }
}
