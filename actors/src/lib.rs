//! DreamStream domain actors and the vocabulary they share.
//!
//! - [`stream`]: `StreamActor` (one per live stream) and `StreamShared`.
//! - [`scheduler`]: matches ready streams with free workers.
//! - [`supervisor`]: starts, restarts and ends streams.
//! - [`current`]: the actor that plays a role now (swapped on restart).
//! - [`registry`]: each channel's live stream and the viewers waiting for one.
//! - [`worker`]: the worker protocol (crosses the cluster).
//! - [`frame`], [`sink`], [`store`], [`style`], [`ids`]: the vocabulary.
//!
//! This crate knows nothing of HTTP, HTML, SQL or actix: the web tier plugs in
//! through [`sink::ViewerSink`] and [`store::Stores`], and the GPU node
//! depends on the messages only.

pub mod cookie;
pub mod current;
pub mod fair_share;
pub mod frame;
pub mod ids;
pub mod presets;
pub mod registry;
pub mod scheduler;
pub mod sink;
pub mod store;
pub mod stream;
pub mod style;
pub mod supervisor;
pub mod worker;

pub use ids::{JobId, StreamId, Username, ViewerId, WorkerId};
pub use style::{PresetMix, ProcessorKind, StyleError, StyleImage, StyleParams, StyleSource};
