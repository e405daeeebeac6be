//! A WebSocket connection as one task on the actix worker that accepted it,
//! for viewers and broadcasters alike.
//!
//! [`upgrade`] answers the handshake and takes the connection's socket for
//! direct writes ([`super::direct`]); [`run`] then reads the client's
//! messages from actix's payload, hands text and binary ones to the
//! [`Session`], answers pings, pings every 10 s and ends a connection silent
//! for 30 s, and flushes what waited when the kernel's buffer was full.
//! Writers on other threads (the stream's fan-out, events) write to the
//! socket themselves; this task never stands between a frame and a viewer.
//!
//! Close codes: 1000 when the stream ends or the client closes (its code is
//! echoed), 1009 for a message over the session's limit, 1003 for fragmented
//! messages, 1007 for text that is not UTF-8, 1002 for protocol errors.
//!
//! Memory: a message's length is checked from its frame header, as soon as
//! the header arrives ([`declared_length`]); one that declares more than the
//! limit closes with 1009 before any of its payload is kept. The inbox never
//! holds more than one frame header plus the limit ([`MAX_HEADER`]): bytes
//! are taken from the connection only as far as that allows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_codec::Decoder;
use actix_http::ws::{CloseCode, Codec, Frame, ProtocolError};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use dreamstream_actors::frame::{OutputFrame, WireForm};
use dreamstream_actors::sink::{Delivery, ViewerSink};
use futures_util::StreamExt;

use super::direct::{ConnSocket, DirectSocket, Flushed, OpCode, handshake_body, message};
use super::timing;
use crate::web::errors::ApiError;

/// How long a closing connection may take to write its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// The longest client frame header (RFC 6455 §5.2): 2 bytes, a 64-bit
/// length, a 4-byte mask.
const MAX_HEADER: usize = 2 + 8 + 4;

/// The payload length the frame at the start of `buf` declares, once its
/// header has arrived (`None` before that).
fn declared_length(buf: &[u8]) -> Option<u64> {
    let len7 = buf.get(1)? & 0x7f;
    match len7 {
        126 => {
            let b = buf.get(2..4)?;
            Some(u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }
        n => Some(u64::from(n)),
    }
}

/// What a connection does with what its client sends.
pub trait Session: 'static {
    /// Largest message the client may send (close code 1009 above it).
    fn max_message(&self) -> usize;
    /// The socket is ready (writes queue until the handshake is out); false
    /// closes the connection at once (say, the stream is not live).
    fn started(&mut self, socket: &Arc<DirectSocket>) -> bool;
    fn text(&mut self, socket: &DirectSocket, text: &str);
    fn binary(&mut self, socket: &DirectSocket, bytes: Bytes);
    /// The reason sent with 1009 (and anything to count).
    fn too_big(&mut self) -> String;
    /// The connection is over (whichever side ended it).
    fn stopped(&mut self);
}

/// Whether `req` can become a WebSocket here (a valid handshake, on a TCP
/// connection). Checked before anything is started (or charged).
pub fn check_upgrade(req: &HttpRequest) -> Result<(), actix_web::Error> {
    actix_http::ws::verify_handshake(req.head())?;
    conn_socket(req)?;
    Ok(())
}

fn conn_socket(req: &HttpRequest) -> Result<&ConnSocket, ApiError> {
    req.conn_data::<ConnSocket>().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "this connection has no socket of its own to stream to (not a TCP listener)"
        ))
    })
}

/// Answers the handshake and runs `session` on this worker.
pub fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    session: impl Session,
) -> Result<HttpResponse, actix_web::Error> {
    let mut response = actix_http::ws::handshake(req.head())?;
    let fd = conn_socket(req)?.take().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("the connection's socket is already taken"))
    })?;
    let socket = DirectSocket::new(fd).map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("failed to take over a socket"))
    })?;
    let body = actix_web::body::BodyStream::new(handshake_body(socket.clone()));
    let response = response.message_body(body)?;
    actix_web::rt::spawn(run(session, payload, socket));
    Ok(HttpResponse::from(response).map_into_boxed_body())
}

/// A stream's view of a connection: frames (in one wire form, or none) and
/// events, written to the socket by whoever delivers them.
pub struct SocketSink {
    pub socket: Arc<DirectSocket>,
    /// The form frames go out in; `None` sends events only.
    pub frames: Option<WireForm>,
    /// Frames that may wait before this connection misses some.
    pub buffer: usize,
}

impl ViewerSink for SocketSink {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        let message = match self.frames {
            Some(form @ WireForm::Binary) => frame.framed(form, |b| message(OpCode::Binary, b)),
            Some(form @ WireForm::SeedJson) => frame.framed(form, |t| message(OpCode::Text, t)),
            None => return Delivery::Sent,
        };
        self.socket.send_frame(message, self.buffer)
    }

    fn event(&self, json: &Arc<str>) -> Delivery {
        self.socket.send_control(OpCode::Text, json.as_bytes())
    }

    fn close(&self, reason: &str) {
        self.socket.close(CloseCode::Normal.into(), reason);
    }
}

async fn run(mut session: impl Session, payload: web::Payload, socket: Arc<DirectSocket>) {
    if session.started(&socket) {
        converse(&mut session, payload, &socket).await;
    }
    session.stopped();
    drain(&socket).await;
    socket.finish();
}

/// Reads the client's messages, pings, and flushes what waited, until either
/// side closes.
async fn converse(session: &mut impl Session, mut payload: web::Payload, socket: &DirectSocket) {
    let max = session.max_message();
    let mut codec = Codec::new().max_size(max);
    // One whole frame at most (see the module's "Memory").
    let cap = max + MAX_HEADER;
    let mut inbox = BytesMut::new();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + timing::PING_EVERY,
        timing::PING_EVERY,
    );
    let mut last_heard = Instant::now();
    let mut blocked = false;
    loop {
        tokio::select! {
            chunk = payload.next() => {
                let Some(Ok(mut chunk)) = chunk else { return };
                last_heard = Instant::now();
                // Take the chunk in pieces that keep the inbox within `cap`:
                // each piece completes a frame or stays within its limit.
                while !chunk.is_empty() {
                    let room = cap.saturating_sub(inbox.len()).max(1);
                    let piece = chunk.split_to(room.min(chunk.len()));
                    inbox.extend_from_slice(&piece);
                    if !read_messages(session, &mut codec, &mut inbox, socket, max) {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > timing::DEAD_AFTER {
                    return;
                }
                socket.send_control(OpCode::Ping, b"");
            }
            _ = socket.woken() => {
                match socket.flush() {
                    Flushed::All | Flushed::NotOpen => blocked = false,
                    Flushed::Blocked => blocked = true,
                    Flushed::Broken => return,
                }
            }
            ready = socket.writable(), if blocked => {
                if ready.is_err() {
                    return;
                }
                match socket.flush() {
                    Flushed::All | Flushed::NotOpen => blocked = false,
                    Flushed::Blocked => {}
                    Flushed::Broken => return,
                }
            }
        }
        if socket.is_closing() {
            return;
        }
    }
}

/// Handles the complete messages in `inbox`; false when the connection closes.
fn read_messages(
    session: &mut impl Session,
    codec: &mut Codec,
    inbox: &mut BytesMut,
    socket: &DirectSocket,
    max: usize,
) -> bool {
    loop {
        // Refuse an oversized message from its header, before its payload
        // arrives (the codec would wait for all of it).
        if declared_length(inbox).is_some_and(|len| len > max as u64) {
            inbox.clear();
            socket.close(CloseCode::Size.into(), &session.too_big());
            return false;
        }
        match codec.decode(inbox) {
            Ok(None) => return true,
            Ok(Some(Frame::Ping(p))) => {
                socket.send_control(OpCode::Pong, &p);
            }
            Ok(Some(Frame::Pong(_))) => {}
            Ok(Some(Frame::Text(t))) => match std::str::from_utf8(&t) {
                Ok(text) => session.text(socket, text),
                Err(_) => {
                    socket.close(CloseCode::Invalid.into(), "text messages must be UTF-8");
                    return false;
                }
            },
            Ok(Some(Frame::Binary(b))) => session.binary(socket, b),
            Ok(Some(Frame::Close(reason))) => {
                let code = reason.map_or(CloseCode::Normal, |r| r.code);
                socket.close(code.into(), "");
                return false;
            }
            Ok(Some(Frame::Continuation(_))) => {
                socket.close(
                    CloseCode::Unsupported.into(),
                    "fragmented messages are not supported",
                );
                return false;
            }
            Err(ProtocolError::Overflow) => {
                socket.close(CloseCode::Size.into(), &session.too_big());
                return false;
            }
            Err(e) => {
                socket.close(CloseCode::Protocol.into(), &e.to_string());
                return false;
            }
        }
        if socket.is_closing() {
            return false;
        }
    }
}

/// Writes what still waits (a close frame, say), for at most [`CLOSE_FLUSH`].
async fn drain(socket: &DirectSocket) {
    let flush = async {
        loop {
            match socket.flush() {
                Flushed::All | Flushed::Broken => return,
                Flushed::NotOpen => socket.woken().await,
                Flushed::Blocked => {
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
}
