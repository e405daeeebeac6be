//! The broadcaster's WebSocket session (actix actor, one per connection).
//!
//! Frames in: binary (bare JPEG/PNG, or with the DSF1 header) or, in the seed
//! protocol, `{"type":"frame","frame":"<base64 or data URL>"}`. Each frame's
//! header is checked (format, size limits) before it goes to the stream actor;
//! a bad frame gets an `error` event and the stream goes on. Control in:
//! `{"type":"style",...}`, `{"type":"stop"}`. Out: `ack`s, events, and the
//! restyled frames (the studio's preview).
//!
//! Close codes: 1009 for a message over the size limit, 1003 for fragmented
//! messages, 1002 for protocol errors, 1000 when the stream ends.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::web;
use actix_web_actors::ws;
use base64::Engine;
use bytes::Bytes;
use dreamstream_actors::frame::{FrameHeader, InputFrame, unix_ms};
use dreamstream_actors::stream::{StreamMsg, StreamShared};
use serde::Deserialize;

use super::sink::{Deliver, SessionSink};
use super::{Protocol, error_json, timing};
use crate::web::AppState;
use crate::web::api::{StyleUpdate, apply_style};

pub struct BroadcastSession {
    stream: Arc<StreamShared>,
    protocol: Protocol,
    state: web::Data<AppState>,
    last_heard: Instant,
    next_seq: u64,
    token: u64,
}

impl BroadcastSession {
    pub fn new(stream: Arc<StreamShared>, protocol: Protocol, state: web::Data<AppState>) -> Self {
        static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            stream,
            protocol,
            state,
            last_heard: Instant::now(),
            next_seq: 1,
            token: TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn error(&self, ctx: &mut ws::WebsocketContext<Self>, code: &str, message: &str) {
        metrics::counter!("dreamstream_frames_rejected_total", "reason" => code.to_string())
            .increment(1);
        ctx.text(error_json(code, message));
    }

    fn frame(&mut self, ctx: &mut ws::WebsocketContext<Self>, msg: Bytes) {
        let (header, image) = match FrameHeader::split(msg) {
            Ok(split) => split,
            Err(e) => return self.error(ctx, "bad_frame", &e.to_string()),
        };
        if let Err(e) = gpu_node::image_io::check_header(&image) {
            return self.error(ctx, "bad_frame", &e.to_string());
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
            ctx.text(error_json(
                "stream_ended",
                "the stream is not live any more",
            ));
            ctx.close(Some(ws::CloseCode::Normal.into()));
            ctx.stop();
            return;
        }
        if self.protocol == Protocol::Binary {
            ctx.text(format!(r#"{{"type":"ack","seq":{seq}}}"#));
        }
    }

    fn text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum ClientMsg {
            Frame { frame: String },
            Style(StyleUpdate),
            Stop,
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.error(ctx, "bad_json", &format!("the message is not JSON: {e}")),
        };
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let msg: ClientMsg = match serde_json::from_value(value) {
            Ok(m) => m,
            Err(e) if matches!(kind.as_str(), "frame" | "style" | "stop") => {
                return self.error(ctx, "bad_message", &format!("bad {kind} message: {e}"));
            }
            Err(_) => {
                return self.error(
                    ctx,
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
                    Ok(bytes) => self.frame(ctx, Bytes::from(bytes)),
                    Err(e) => {
                        self.error(ctx, "bad_frame", &format!("the frame is not base64: {e}"))
                    }
                }
            }
            ClientMsg::Style(update) => {
                if let Err(e) = apply_style(&self.stream, update, None) {
                    self.error(ctx, "bad_style", &e.to_string());
                }
            }
            ClientMsg::Stop => self.state.control.stop(
                &self.stream.username,
                dreamstream_actors::store::EndReason::Stopped,
            ),
        }
    }
}

impl Actor for BroadcastSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The preview frames for the studio: a couple queued at most.
        ctx.set_mailbox_capacity(4);
        self.stream.set_broadcaster(
            self.token,
            Some(Box::new(SessionSink::new(ctx.address().recipient()))),
        );
        let hello = serde_json::json!({
            "type": "hello",
            "stream_id": self.stream.id.0,
            "username": self.stream.username.as_str(),
            "settings": self.stream.settings(),
            "max_frame_bytes": self.state.settings.stream.max_frame_bytes,
        });
        ctx.text(hello.to_string());
        ctx.run_interval(timing::PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > timing::DEAD_AFTER {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stream.clear_broadcaster(self.token);
    }
}

impl Handler<Deliver> for BroadcastSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Frame(f) if self.protocol == Protocol::Binary => ctx.binary(f.binary()),
            Deliver::Frame(_) => {}
            Deliver::Event(json) => {
                ctx.text(&*json);
                if json.starts_with(r#"{"type":"ended""#) {
                    ctx.close(Some(ws::CloseCode::Normal.into()));
                    ctx.stop();
                }
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for BroadcastSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Binary(bytes)) => self.frame(ctx, bytes),
            Ok(ws::Message::Text(text)) => self.text(ctx, &text),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Unsupported,
                    description: Some("fragmented messages are not supported".into()),
                }));
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                metrics::counter!("dreamstream_frames_rejected_total", "reason" => "too_big")
                    .increment(1);
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some(format!(
                        "message too big: the limit is {} bytes",
                        self.state.settings.stream.max_frame_bytes
                    )),
                }));
                ctx.stop();
            }
            Err(e) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}
