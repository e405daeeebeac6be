//! The broadcaster's WebSocket session (actix actor, one per connection).
//!
//! Frames in: binary (bare JPEG/PNG, or with the DSF1 header) or, in the seed
//! protocol, `{"type":"frame","frame":"<base64 or data URL>"}`. Each frame's
//! header is checked (format, size limits) before it goes to the stream actor;
//! a bad frame gets an `error` event and the stream goes on. Control in:
//! `{"type":"style",...}`, `{"type":"stop"}`. Out: `ack`s, events, and the
//! restyled frames (the studio's preview).
//!
//! Runs as a [`Session`] on the connection's task; acks, events and the
//! preview are written straight to the socket, and a broadcaster that does
//! not read them only misses previews and acks (they are dropped once a few
//! wait), it never stalls its own stream. Close codes as in
//! [`super::session`]; 1009 names the limit.

use std::sync::Arc;

use actix_web::web;
use base64::Engine;
use bytes::Bytes;
use dreamstream_actors::frame::{FrameHeader, InputFrame, WireForm, unix_ms};
use dreamstream_actors::sink::StreamEvent;
use dreamstream_actors::stream::{StreamMsg, StreamShared};
use serde::Deserialize;

use super::direct::{DirectSocket, OpCode, message};
use super::session::{Session, SocketSink};
use super::{Protocol, error_json};
use crate::web::AppState;
use crate::web::api::{StyleUpdate, apply_style};

/// Preview frames that may wait for the studio before it misses some.
const PREVIEW_BUFFER: usize = 4;
/// Acks (and previews) that may wait before acks are dropped: they only pace
/// a client, the newest one says it all.
const ACK_BUFFER: usize = 64;

pub struct BroadcastSession {
    stream: Arc<StreamShared>,
    protocol: Protocol,
    state: web::Data<AppState>,
    next_seq: u64,
    token: u64,
}

/// The longest side an input frame may have: what the stream's output
/// (`max_side`) needs with room for a good downscale, and never less than
/// 1080p's 1920, so that cameras and OBS at common sizes always fit. Larger
/// frames are refused before anyone decodes them: one 36-megapixel JPEG costs
/// a worker half a second that the other streams on it would wait for.
pub fn input_side_limit(max_side: u32) -> u32 {
    max_side.saturating_mul(4).max(1920)
}

impl BroadcastSession {
    pub fn new(stream: Arc<StreamShared>, protocol: Protocol, state: web::Data<AppState>) -> Self {
        static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            stream,
            protocol,
            state,
            next_seq: 1,
            token: TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn error(&self, socket: &DirectSocket, code: &str, message: &str) {
        metrics::counter!("dreamstream_frames_rejected_total", "reason" => code.to_string())
            .increment(1);
        socket.send_control(OpCode::Text, error_json(code, message).as_bytes());
    }

    fn frame(&mut self, socket: &DirectSocket, msg: Bytes) {
        let (header, image) = match FrameHeader::split(msg) {
            Ok(split) => split,
            Err(e) => return self.error(socket, "bad_frame", &e.to_string()),
        };
        let (width, height) = match gpu_node::image_io::check_header(&image) {
            Ok((_, width, height)) => (width, height),
            Err(e) => return self.error(socket, "bad_frame", &e.to_string()),
        };
        let limit = input_side_limit(self.stream.settings().max_side);
        if width.max(height) > limit {
            return self.error(
                socket,
                "frame_too_large",
                &format!(
                    "a {width}×{height} frame is larger than this stream needs: \
                     send at most {limit} pixels on the longer side"
                ),
            );
        }
        let seq = match header {
            Some(h) if h.seq > 0 => h.seq,
            _ => self.next_seq,
        };
        self.next_seq = seq.saturating_add(1);
        let captured_ms = header
            .map(|h| h.captured_ms)
            .filter(|&t| t > 0)
            .unwrap_or_else(unix_ms);
        let sent = self.stream.cast(StreamMsg::Frame(InputFrame {
            seq,
            captured_ms,
            received_at: tokio::time::Instant::now(),
            jpeg: image,
        }));
        if !sent {
            let ended = error_json("stream_ended", "the stream is not live any more");
            socket.send_control(OpCode::Text, ended.as_bytes());
            socket.close(1000, "the stream ended");
            return;
        }
        if self.protocol == Protocol::Binary {
            let ack = format!(r#"{{"type":"ack","seq":{seq}}}"#);
            socket.send_frame(&message(OpCode::Text, ack.as_bytes()), ACK_BUFFER);
        }
    }

    fn text_message(&mut self, socket: &DirectSocket, text: &str) {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum ClientMsg {
            Frame { frame: String },
            Style(StyleUpdate),
            Stop,
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self.error(socket, "bad_json", &format!("the message is not JSON: {e}"));
            }
        };
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let msg: ClientMsg = match serde_json::from_value(value) {
            Ok(m) => m,
            Err(e) if matches!(kind.as_str(), "frame" | "style" | "stop") => {
                return self.error(socket, "bad_message", &format!("bad {kind} message: {e}"));
            }
            Err(_) => {
                return self.error(
                    socket,
                    "unknown_type",
                    &format!("unknown message type {kind:?}; expected frame, style or stop"),
                );
            }
        };
        match msg {
            ClientMsg::Frame { frame } => {
                let b64 = match frame.split_once(";base64,") {
                    Some((_, data)) => data,
                    None => frame.as_str(),
                };
                match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                    Ok(bytes) => self.frame(socket, Bytes::from(bytes)),
                    Err(e) => self.error(
                        socket,
                        "bad_frame",
                        &format!("the frame is not base64: {e}"),
                    ),
                }
            }
            ClientMsg::Style(update) => {
                if let Err(e) = apply_style(&self.stream, update, None) {
                    self.error(socket, "bad_style", &e.to_string());
                }
            }
            ClientMsg::Stop => self.state.control.stop(
                &self.stream.username,
                dreamstream_actors::store::EndReason::Stopped,
            ),
        }
    }
}

impl Session for BroadcastSession {
    fn max_message(&self) -> usize {
        self.state.config.stream.max_frame_bytes
    }

    fn started(&mut self, socket: &Arc<DirectSocket>) -> bool {
        let sink = SocketSink {
            socket: socket.clone(),
            // The seed protocol's broadcasters get no preview.
            frames: (self.protocol == Protocol::Binary).then_some(WireForm::Binary),
            buffer: PREVIEW_BUFFER,
        };
        let hello = serde_json::json!({
            "type": "hello",
            "stream_id": self.stream.id.0,
            "username": self.stream.username.as_str(),
            "settings": self.stream.settings(),
            "max_frame_bytes": self.state.config.stream.max_frame_bytes,
        });
        socket.send_control(OpCode::Text, hello.to_string().as_bytes());
        // After the hello: the stream tells a new broadcaster its credit at once.
        self.stream
            .set_broadcaster(self.token, Some(Box::new(sink)));
        self.stream
            .broadcast(&StreamEvent::Broadcaster { connected: true });
        true
    }

    fn text(&mut self, socket: &DirectSocket, text: &str) {
        self.text_message(socket, text);
    }

    fn binary(&mut self, socket: &DirectSocket, bytes: Bytes) {
        self.frame(socket, bytes);
    }

    fn too_big(&mut self) -> String {
        metrics::counter!("dreamstream_frames_rejected_total", "reason" => "too_big").increment(1);
        format!(
            "message too big: the limit is {} bytes",
            self.state.config.stream.max_frame_bytes
        )
    }

    fn stopped(&mut self) {
        self.stream.clear_broadcaster(self.token);
        // Viewers learn of an outage (not of a replaced connection, nor of a
        // stream that ended: its viewers already got `ended`).
        if !self.stream.broadcaster_connected() && self.stream.end_reason().is_none() {
            self.stream
                .broadcast(&StreamEvent::Broadcaster { connected: false });
        }
    }
}
