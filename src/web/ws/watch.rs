//! A viewer's WebSocket session (actix actor, one per connection).
//!
//! Out: the restyled frames (binary: DSF1 header + JPEG; seed protocol: JSON
//! with a data URL) and JSON events. The session's mailbox is the viewer's
//! small buffer: when it is full the stream drops frames for this viewer only.
//! The newest frame is sent at once on connect so nobody stares at a blank page.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::{Username, ViewerId};

use super::sink::{Deliver, SessionSink};
use super::{Protocol, error_json, timing};

pub struct WatchSession {
    username: Username,
    audience: Arc<dyn crate::audience::Audience>,
    ip: Option<std::net::IpAddr>,
    /// The browser tab's id (`?cid=`): a refresh replaces, not adds, a viewer.
    client: Option<String>,
    stream: Option<Arc<StreamShared>>,
    protocol: Protocol,
    buffer: usize,
    viewer: Option<ViewerId>,
    last_heard: Instant,
}

impl WatchSession {
    pub fn new(
        username: Username,
        stream: Option<Arc<StreamShared>>,
        protocol: Protocol,
        buffer: usize,
        audience: Arc<dyn crate::audience::Audience>,
        ip: Option<std::net::IpAddr>,
        client: Option<String>,
    ) -> Self {
        Self {
            username,
            audience,
            ip,
            client,
            stream,
            protocol,
            buffer,
            viewer: None,
            last_heard: Instant::now(),
        }
    }

    fn send_frame(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        frame: &dreamstream_actors::frame::OutputFrame,
    ) {
        match self.protocol {
            Protocol::Binary => ctx.binary(frame.binary()),
            Protocol::SeedJson => ctx.text(&*frame.seed_json()),
        }
    }
}

impl Actor for WatchSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.buffer);
        let Some(stream) = self.stream.clone() else {
            let offline = serde_json::json!({
                "type": "offline",
                "username": self.username.as_str(),
            });
            ctx.text(offline.to_string());
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Normal,
                description: Some("the stream is not live".into()),
            }));
            ctx.stop();
            return;
        };
        let hello = serde_json::json!({
            "type": "hello",
            "username": stream.username.as_str(),
            "stream_id": stream.id.0,
            "live": true,
            "style": crate::web::api::style_name(&stream.settings()),
        });
        ctx.text(hello.to_string());
        if let Some(last) = stream.last_output() {
            self.send_frame(ctx, &last);
        }
        self.viewer = Some(stream.add_viewer_as(
            Box::new(SessionSink::new(ctx.address().recipient())),
            self.client.as_deref(),
        ));
        self.audience
            .joined(stream.id, self.username.as_str(), self.ip);
        ctx.run_interval(timing::PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > timing::DEAD_AFTER {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let (Some(stream), Some(id)) = (&self.stream, self.viewer.take()) {
            stream.remove_viewer(id);
        }
        if let Some(stream) = &self.stream {
            self.audience.left(stream.id, self.username.as_str());
        }
    }
}

impl Handler<Deliver> for WatchSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Frame(f) => self.send_frame(ctx, &f),
            Deliver::Event(json) => {
                ctx.text(&*json);
                if json.starts_with(r#"{"type":"ended""#) {
                    self.viewer = None; // the stream already forgot us
                    ctx.close(Some(ws::CloseCode::Normal.into()));
                    ctx.stop();
                }
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WatchSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Text(_)) | Ok(ws::Message::Binary(_)) => {
                ctx.text(error_json(
                    "viewer_message",
                    "viewers do not send messages on this socket",
                ));
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) => {
                ctx.close(Some(ws::CloseCode::Unsupported.into()));
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                ctx.close(Some(ws::CloseCode::Size.into()));
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
