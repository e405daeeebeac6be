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
        prompt: String,
        #[serde(default)]
        negative_prompt: Option<String>,
    },
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
    pub steps: u32,
    pub seed: u64,
    pub guidance: f32,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        Self {
            model: None,
            steps: 2,
            seed: 42,
            guidance: 0.0,
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
}

impl StyleParams {
    pub const VERSION: u32 = 1;

    /// The default look: built-in style 0 at full strength, 512 px, quality 80.
    pub fn preset(mix: PresetMix) -> Self {
        Self {
            version: Self::VERSION,
            processor: ProcessorKind::NeuralStyle,
            source: StyleSource::Preset { mix },
            strength: 1.0,
            preserve_color: false,
            max_side: 512,
            jpeg_quality: 80,
            diffusion: DiffusionParams::default(),
        }
    }

    /// Checks every field; the message of the error says what is accepted.
    pub fn validate(&self) -> Result<(), StyleError> {
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
            StyleSource::Prompt { prompt, .. } => {
                let n = prompt.chars().count();
                if n == 0 || n > 500 {
                    return Err(StyleError::PromptLength(n));
                }
            }
        }
        if self.processor == ProcessorKind::Diffusion {
            let d = &self.diffusion;
            if !(1..=50).contains(&d.steps) {
                return Err(StyleError::Steps(d.steps));
            }
            if !(0.0..=30.0).contains(&d.guidance) {
                return Err(StyleError::Guidance(d.guidance));
            }
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
            } => {
                let mut h = Sha256::new();
                h.update(prompt.as_bytes());
                h.update([0]);
                h.update(negative_prompt.as_deref().unwrap_or("").as_bytes());
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
