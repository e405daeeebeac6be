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
//! In: control messages (pings, close) and one text message,
//! `{"type":"frames","send":false}` / `{"type":"frames","send":true}`:
//! pictures off or on for this connection. While off the viewer gets no
//! frames (neither binary nor the seed protocol's `frame` messages) but every
//! event, and it is not counted as a viewer (the stream's count and peak, the
//! audience statistics): the viewer page turns its pictures off while it
//! plays the stream by WHEP, and the WHEP session counts instead, so one
//! browser counts once. On again, it is counted again and frames resume with
//! the next one. A connection starts with pictures on, unless its tab
//! (`?cid=`) plays the stream by WHEP already; and a WHEP offer that names a
//! tab turns that tab's pictures off before its session counts (see
//! [`ViewerTabs`]), so the hand-over never counts the browser twice. Any other text or
//! binary message (or a `frames` message whose `send` is not a boolean)
//! gets an `error` event (`viewer_message`); one over 64 KiB closes with
//! 1009.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

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
    /// The browser tab (`?cid=`): a refresh replaces, not adds, a viewer,
    /// and the tab's WHEP player counts instead of it.
    pub tab: Option<Tab>,
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
        tab: Option<Tab>,
    ) -> Self {
        Self {
            channel,
            registry,
            protocol,
            buffer,
            audience,
            ip,
            tab,
            ticket: None,
            sink: None,
        }
    }
}

/// A viewer socket's browser tab: its id (`?cid=`) and the tabs it is known in.
pub struct Tab {
    pub id: String,
    pub tabs: Arc<ViewerTabs>,
}

/// The viewer page's tabs on each channel: a tab's newest viewer socket and
/// how many WHEP sessions it plays, so that a tab playing WHEP counts once
/// (the WHEP session; its socket's pictures are off). Entries live only
/// while a socket or a session of the tab does.
#[derive(Default)]
pub struct ViewerTabs(Mutex<HashMap<(Username, String), TabState>>);

#[derive(Default)]
struct TabState {
    socket: Option<Weak<ViewerSocket>>,
    whep: usize,
}

impl ViewerTabs {
    fn lock(&self) -> MutexGuard<'_, HashMap<(Username, String), TabState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `socket` is now the tab's viewer socket (a refresh's newer socket
    /// replaces the older one); its pictures start off while the tab plays
    /// WHEP. Called before the socket joins the channel.
    fn register(&self, channel: &Username, tab: &str, socket: &Arc<ViewerSocket>) {
        let mut map = self.lock();
        let state = map.entry((channel.clone(), tab.to_string())).or_default();
        state.socket = Some(Arc::downgrade(socket));
        if state.whep > 0 {
            socket.set_pictures(false);
        }
    }

    /// The socket is gone (if it still is the tab's).
    fn unregister(&self, channel: &Username, tab: &str, socket: &Arc<ViewerSocket>) {
        let mut map = self.lock();
        let key = (channel.clone(), tab.to_string());
        if let Some(state) = map.get_mut(&key) {
            if state
                .socket
                .as_ref()
                .is_some_and(|s| std::ptr::eq(s.as_ptr(), Arc::as_ptr(socket)))
            {
                state.socket = None;
            }
            if state.socket.is_none() && state.whep == 0 {
                map.remove(&key);
            }
        }
    }

    /// A WHEP session of `tab` on `channel` starts: the tab's socket turns
    /// its pictures off (and stops counting) before the session counts. The
    /// tab plays WHEP while the returned guard lives; the socket's pictures
    /// come back when its page asks (`frames`, `send: true`).
    pub fn whep_started(self: &Arc<Self>, channel: &Username, tab: &str) -> TabWhep {
        let key = (channel.clone(), tab.to_string());
        let socket = {
            let mut map = self.lock();
            let state = map.entry(key.clone()).or_default();
            state.whep += 1;
            state.socket.as_ref().and_then(Weak::upgrade)
        };
        if let Some(socket) = socket {
            socket.switch_pictures(false);
        }
        TabWhep {
            tabs: self.clone(),
            key,
        }
    }
}

/// A tab's WHEP session, for [`ViewerTabs`]; ends its part when dropped.
pub struct TabWhep {
    tabs: Arc<ViewerTabs>,
    key: (Username, String),
}

impl Drop for TabWhep {
    fn drop(&mut self) {
        let mut map = self.tabs.lock();
        if let Some(state) = map.get_mut(&self.key) {
            state.whep = state.whep.saturating_sub(1);
            if state.socket.is_none() && state.whep == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The stream's (and the registry's) view of a viewer's connection.
struct ViewerSocket {
    out: SocketSink,
    channel: Username,
    registry: Arc<StreamRegistry>,
    /// Its place in the channel, once it joined.
    ticket: OnceLock<Ticket>,
    audience: Arc<dyn crate::audience::Audience>,
    ip: Option<IpAddr>,
    /// Pictures on (the client's `frames` message); off, it gets events only
    /// and is not counted.
    pictures: AtomicBool,
    /// The stream it receives now, for the audience's join/leave.
    watching: Mutex<Watching>,
}

#[derive(Default)]
struct Watching {
    /// The stream it receives now.
    stream: Option<StreamId>,
    /// Whether the audience counts it in `stream` (pictures on).
    counted: bool,
}

impl ViewerSocket {
    fn watching(&self) -> std::sync::MutexGuard<'_, Watching> {
        self.watching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn text(&self, json: serde_json::Value) {
        self.out
            .socket
            .send_control(OpCode::Text, json.to_string().as_bytes());
    }

    /// The audience leaves the stream it was counted in, if any.
    fn left(&self) {
        let mut w = self.watching();
        if let Some(id) = w.stream.take()
            && std::mem::take(&mut w.counted)
        {
            self.audience.left(id, self.channel.as_str());
        }
    }

    /// Pictures on or off; the audience counts it only while they are on.
    /// False if nothing changed.
    fn set_pictures(&self, on: bool) -> bool {
        let mut w = self.watching();
        if self.pictures.swap(on, Ordering::AcqRel) == on {
            return false;
        }
        if let Some(id) = w.stream
            && w.counted != on
        {
            if on {
                self.audience.joined(id, self.channel.as_str(), self.ip);
            } else {
                self.audience.left(id, self.channel.as_str());
            }
            w.counted = on;
        }
        true
    }

    /// Pictures on or off, and the stream's count follows.
    fn switch_pictures(&self, on: bool) {
        if self.set_pictures(on)
            && let Some(ticket) = self.ticket.get()
        {
            self.registry.recount(&self.channel, *ticket);
        }
    }
}

impl ViewerSink for ViewerSocket {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery {
        if !self.pictures.load(Ordering::Acquire) {
            return Delivery::Sent;
        }
        self.out.frame(frame)
    }

    fn counted(&self) -> bool {
        self.pictures.load(Ordering::Acquire)
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
                let mut w = self.watching();
                let pictures = self.pictures.load(Ordering::Acquire);
                self.text(serde_json::json!({
                    "type": "hello",
                    "username": stream.username.as_str(),
                    "stream_id": stream.id.0,
                    "live": true,
                    "style": dreamstream_actors::presets::style_name(&stream.settings()),
                    "viewers": stream.viewer_count() + usize::from(pictures),
                    "broadcaster": stream.broadcaster_connected(),
                }));
                if pictures && let Some(last) = stream.last_output() {
                    self.out.frame(&last);
                }
                if pictures {
                    self.audience
                        .joined(stream.id, self.channel.as_str(), self.ip);
                }
                *w = Watching {
                    stream: Some(stream.id),
                    counted: pictures,
                };
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
            registry: self.registry.clone(),
            ticket: OnceLock::new(),
            audience: self.audience.clone(),
            ip: self.ip,
            pictures: AtomicBool::new(true),
            watching: Mutex::new(Watching::default()),
        });
        if let Some(tab) = &self.tab {
            tab.tabs.register(&self.channel, &tab.id, &sink);
        }
        let client = self.tab.as_ref().map(|t| t.id.clone());
        match self
            .registry
            .watch(&self.channel, sink.clone(), client, self.ip)
        {
            Ok(ticket) => {
                let _ = sink.ticket.set(ticket);
                // Its tab's WHEP may have turned the pictures off while it
                // joined: the stream counts what the sink says now.
                if !sink.counted() {
                    self.registry.recount(&self.channel, ticket);
                }
                self.ticket = Some(ticket);
                self.sink = Some(sink);
                true
            }
            Err(refused) => {
                if let Some(tab) = &self.tab {
                    tab.tabs.unregister(&self.channel, &tab.id, &sink);
                }
                let error = error_json("too_many_waiting", &refused.to_string());
                socket.send_control(OpCode::Text, error.as_bytes());
                socket.close(TRY_AGAIN_LATER, "too many viewers waiting");
                false
            }
        }
    }

    fn text(&mut self, socket: &DirectSocket, text: &str) {
        match pictures_switch(text) {
            Some(on) => self.set_pictures(on),
            None => self.refuse(socket),
        }
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
            if let Some(tab) = &self.tab {
                tab.tabs.unregister(&self.channel, &tab.id, &sink);
            }
        }
    }
}

impl Viewer {
    fn refuse(&self, socket: &DirectSocket) {
        let error = error_json(
            "viewer_message",
            r#"viewers send only {"type":"frames","send":true} or {"type":"frames","send":false} on this socket"#,
        );
        socket.send_control(OpCode::Text, error.as_bytes());
    }

    /// Pictures on or off (see the module doc); the stream's count follows.
    fn set_pictures(&mut self, on: bool) {
        if let Some(sink) = &self.sink {
            sink.switch_pictures(on);
        }
    }
}

/// `{"type":"frames","send":<bool>}` → `Some(send)`; anything else `None`.
fn pictures_switch(text: &str) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Frames {
        r#type: String,
        send: bool,
    }
    let m: Frames = serde_json::from_str(text).ok()?;
    (m.r#type == "frames").then_some(m.send)
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
