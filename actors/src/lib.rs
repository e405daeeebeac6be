//! DreamStream domain actors and the vocabulary they share.
//!
//! This crate knows nothing of HTTP, HTML, SQL or actix: the web tier plugs in
//! through traits, and the GPU node depends on the messages only.

pub mod style;

pub use style::{PresetMix, ProcessorKind, StyleError, StyleImage, StyleParams, StyleSource};
