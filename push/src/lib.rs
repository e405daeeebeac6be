//! DreamStream's clients for scripts and devices, small enough for a
//! Raspberry Pi (no neural network, web framework or database here):
//!
//! - [`push()`]: a video file, a folder of images or a V4L2 camera to a stream,
//!   by its stream key, over WHIP (H.264, [`whip`]) or the WebSocket (JPEG
//!   frames with the DSF1 header), reconnecting with backoff;
//! - [`pull()`]: a stream's restyled output to JPEGs or an MP4.
//!
//! The `dreamstream` binary's `push` and `pull` verbs call these; the
//! `dreamstream-push` binary is the same two verbs alone (for the Pi).

pub mod image;
pub mod net;
pub mod pull;
pub mod push;
pub mod source;
pub mod whip;

pub use pull::{PullArgs, pull};
pub use push::{PushArgs, Transport, push};
