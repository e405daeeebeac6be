//! A viewer's WebSocket session (a [`Session`] on the connection's task).
//!
//! A viewer watches a channel, not one stream: it may connect before the
//! streamer goes live (an `offline` event, then it waits), gets `hello` and
//! frames when the stream starts, `ended` when it ends, and waits again, all
//! on one socket (the [`StreamRegistry`] moves it). Waiting is bounded per
//! channel and per address: a viewer over the bound gets an `error` event and
//! close 1013 (try again later). A channel whose user does not exist gets an
//! `error` event and close 1000, never a wait.
//!
//! Out: the restyled frames (binary: DSF1 header + JPEG; seed protocol: JSON
//! with a data URL) and JSON events. The stream's fan-out writes them straight
//! to the viewer's socket; what the kernel cannot take at once waits in a
//! small outbox. The outbox is the viewer's buffer: when `buffer` frames
//! wait, the stream drops frames for this viewer only. The newest frame is
//! sent at once on joining a stream so nobody stares at a blank page.
//!
//! In: only control messages (pings, close); a text or binary message gets
//! an `error` event, one over 64 KiB closes with 1009.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dreamstream_actors::frame::{OutputFrame, WireForm};
use dreamstream_actors::registry::{StreamRegistry, Ticket};
use dreamstream_actors::sink::{Attachment, Delivery, ViewerSink};
use dreamstream_actors::{StreamId, Username};

use super::direct::{DirectSocket, OpCode};
use super::session::{Session, SocketSink};
use super::{Protocol, error_json};

/// Largest message a viewer may send (they only send control messages).
const MAX_VIEWER_MESSAGE: usize = 64 * 1024;

/// Close code 1013, "try again later" (RFC 6455 §7.4.1, IANA registry).
const TRY_AGAIN_LATER: u16 = 1013;

/// Who is watching which channel.
pub struct Viewer {
    pub channel: Username,
    pub registry: Arc<StreamRegistry>,
    pub protocol: Protocol,
    /// Frames that may wait for this viewer before it misses some.
    pub buffer: usize,
    pub audience: Arc<dyn crate::audience::Audience>,
    pub ip: Option<IpAddr>,
    /// The browser tab's id (`?cid=`): a refresh replaces, not adds, a viewer.
    pub client: Option<String>,
    /// Its place in the channel, once it joined.
    ticket: Option<Ticket>,
    sink: Option<Arc<ViewerSocket>>,
}

impl Viewer {
    pub fn new(
        channel: Username,
        registry: Arc<StreamRegistry>,
        protocol: Protocol,
        buffer: usize,
        audience: Arc<dyn crate::audience::Audience>,
        ip: Option<IpAddr>,
        client: Option<String>,
    ) -> Self {
        Self {
            channel,
            registry,
            protocol,
            buffer,
            audience,
            ip,
            client,
            ticket: None,
            sink: None,
        }
    }
}

/// The stream's (and the registry's) view of a viewer's connection.
struct ViewerSocket {
    out: SocketSink,
    channel: Username,
    audience: Arc<dyn crate::audience::Audience>,
    ip: Option<IpAddr>,
    /// The stream it receives now, for the audience's join/leave.
    watching: Mutex<Option<StreamId>>,
}

impl ViewerSocket {
    fn watching(&self) -> std::sync::MutexGuard<'_, Option<StreamId>> {
        self.watching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn text(&self, json: serde_json::Value) {
        self.out
            .socket
            .send_control(OpCode::Text, json.to_string().as_bytes());
    }

    /// The audience leaves the stream it was counted in, if any.
    fn left(&self) {
        if let Some(id) = self.watching().take() {
            self.audience.left(id, self.channel.as_str());
        }
    }
}

impl ViewerSink for ViewerSocket {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        self.out.frame(frame)
    }

    fn event(&self, json: &Arc<str>) -> Delivery {
        self.out.event(json)
    }

    fn attach(&self, to: Attachment<'_>) {
        match to {
            Attachment::Waiting => self.text(serde_json::json!({
                "type": "offline",
                "username": self.channel.as_str(),
                "waiting": true,
            })),
            Attachment::Live(stream) => {
                self.text(serde_json::json!({
                    "type": "hello",
                    "username": stream.username.as_str(),
                    "stream_id": stream.id.0,
                    "live": true,
                    "style": dreamstream_actors::presets::style_name(&stream.settings()),
                    "viewers": stream.viewer_count() + 1,
                    "broadcaster": stream.broadcaster_connected(),
                }));
                if let Some(last) = stream.last_output() {
                    self.out.frame(&last);
                }
                self.audience
                    .joined(stream.id, self.channel.as_str(), self.ip);
                *self.watching() = Some(stream.id);
            }
            // The `ended` event is already out; the viewer waits again.
            Attachment::Ended(_) => self.left(),
        }
    }

    fn close(&self, reason: &str) {
        self.out.close(reason);
    }
}

impl Session for Viewer {
    fn max_message(&self) -> usize {
        MAX_VIEWER_MESSAGE
    }

    /// Joins the channel: its live stream, or the waiting room.
    fn started(&mut self, socket: &Arc<DirectSocket>) -> bool {
        let sink = Arc::new(ViewerSocket {
            out: SocketSink {
                socket: socket.clone(),
                frames: Some(match self.protocol {
                    Protocol::Binary => WireForm::Binary,
                    Protocol::SeedJson => WireForm::SeedJson,
                }),
                buffer: self.buffer,
            },
            channel: self.channel.clone(),
            audience: self.audience.clone(),
            ip: self.ip,
            watching: Mutex::new(None),
        });
        match self
            .registry
            .watch(&self.channel, sink.clone(), self.client.clone(), self.ip)
        {
            Ok(ticket) => {
                self.ticket = Some(ticket);
                self.sink = Some(sink);
                true
            }
            Err(refused) => {
                let error = error_json("too_many_waiting", &refused.to_string());
                socket.send_control(OpCode::Text, error.as_bytes());
                socket.close(TRY_AGAIN_LATER, "too many viewers waiting");
                false
            }
        }
    }

    fn text(&mut self, socket: &DirectSocket, _: &str) {
        self.refuse(socket);
    }

    fn binary(&mut self, socket: &DirectSocket, _: Bytes) {
        self.refuse(socket);
    }

    fn too_big(&mut self) -> String {
        "viewers send control messages only".into()
    }

    fn stopped(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.registry.leave(&self.channel, ticket);
        }
        if let Some(sink) = self.sink.take() {
            sink.left();
        }
    }
}

impl Viewer {
    fn refuse(&self, socket: &DirectSocket) {
        let error = error_json(
            "viewer_message",
            "viewers do not send messages on this socket",
        );
        socket.send_control(OpCode::Text, error.as_bytes());
    }
}

/// A session for a channel that does not exist: an `error` event and a close.
pub struct NoSuchChannel(pub Username);

impl Session for NoSuchChannel {
    fn max_message(&self) -> usize {
        MAX_VIEWER_MESSAGE
    }

    fn started(&mut self, socket: &Arc<DirectSocket>) -> bool {
        let error = error_json(
            "no_such_channel",
            &format!("there is no channel named {}", self.0),
        );
        socket.send_control(OpCode::Text, error.as_bytes());
        socket.close(1000, "no such channel");
        false
    }

    fn text(&mut self, _: &DirectSocket, _: &str) {}

    fn binary(&mut self, _: &DirectSocket, _: Bytes) {}

    fn too_big(&mut self) -> String {
        String::new()
    }

    fn stopped(&mut self) {}
}
