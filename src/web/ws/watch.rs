//! A viewer's WebSocket session (a [`Session`] on the connection's task).
//!
//! Out: the restyled frames (binary: DSF1 header + JPEG; seed protocol: JSON
//! with a data URL) and JSON events. The stream's fan-out writes them straight
//! to the viewer's socket; what the kernel cannot take at once waits in a
//! small outbox. The outbox is the viewer's buffer: when `buffer` frames
//! wait, the stream drops frames for this viewer only. The newest frame is
//! sent at once on connect so nobody stares at a blank page.
//!
//! In: only control messages (pings, close); a text or binary message gets
//! an `error` event, one over 64 KiB closes with 1009.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use dreamstream_actors::frame::WireForm;
use dreamstream_actors::sink::ViewerSink;
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::{Username, ViewerId};

use super::direct::{DirectSocket, OpCode};
use super::session::{Session, SocketSink};
use super::{Protocol, error_json};

/// Largest message a viewer may send (they only send control messages).
const MAX_VIEWER_MESSAGE: usize = 64 * 1024;

/// Who is watching what.
pub struct Viewer {
    pub username: Username,
    pub stream: Option<Arc<StreamShared>>,
    pub protocol: Protocol,
    /// Frames that may wait for this viewer before it misses some.
    pub buffer: usize,
    pub audience: Arc<dyn crate::audience::Audience>,
    pub ip: Option<IpAddr>,
    /// The browser tab's id (`?cid=`): a refresh replaces, not adds, a viewer.
    pub client: Option<String>,
    /// Set once the viewer has joined the stream.
    pub joined: Option<ViewerId>,
}

impl Session for Viewer {
    fn max_message(&self) -> usize {
        MAX_VIEWER_MESSAGE
    }

    /// Greets the viewer and joins the stream; closes if it is not live.
    fn started(&mut self, socket: &Arc<DirectSocket>) -> bool {
        let Some(stream) = self.stream.clone() else {
            let offline = serde_json::json!({
                "type": "offline",
                "username": self.username.as_str(),
            });
            socket.send_control(OpCode::Text, offline.to_string().as_bytes());
            socket.close(1000, "the stream is not live");
            return false;
        };
        let hello = serde_json::json!({
            "type": "hello",
            "username": stream.username.as_str(),
            "stream_id": stream.id.0,
            "live": true,
            "style": crate::web::api::style_name(&stream.settings()),
        });
        socket.send_control(OpCode::Text, hello.to_string().as_bytes());
        let sink = SocketSink {
            socket: socket.clone(),
            frames: Some(match self.protocol {
                Protocol::Binary => WireForm::Binary,
                Protocol::SeedJson => WireForm::SeedJson,
            }),
            buffer: self.buffer,
        };
        if let Some(last) = stream.last_output() {
            sink.frame(&last);
        }
        self.joined = Some(stream.add_viewer_as(Box::new(sink), self.client.as_deref()));
        self.audience
            .joined(stream.id, self.username.as_str(), self.ip);
        true
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
        if let (Some(stream), Some(id)) = (&self.stream, self.joined.take()) {
            stream.remove_viewer(id);
            self.audience.left(stream.id, self.username.as_str());
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
