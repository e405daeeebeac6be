//! How a stream reaches its viewers and its broadcaster without knowing what
//! they are: the web tier implements [`ViewerSink`] over its WebSocket sessions.

use std::sync::Arc;

use serde::Serialize;

use crate::frame::OutputFrame;
use crate::stream::StreamShared;

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the connection.
    Sent,
    /// The connection's small buffer was full: this frame is dropped for this
    /// viewer only (a slow viewer never slows the stream).
    Dropped,
    /// The connection is gone; the stream forgets the sink.
    Closed,
}

/// Where a viewer's connection now is (see [`crate::registry`]): it may
/// outlive several streams of one channel, waiting between them.
pub enum Attachment<'a> {
    /// The channel is offline; the connection waits for it to go live.
    Waiting,
    /// The connection now receives this stream (just started, or live when
    /// the viewer came).
    Live(&'a Arc<StreamShared>),
    /// The stream it watched ended (viewers already got the `ended` event);
    /// the connection waits for the next one.
    Ended(&'a StreamShared),
}

/// A connection that receives a stream's frames and events. Calls never block.
pub trait ViewerSink: Send + Sync + 'static {
    fn frame(&self, frame: &Arc<OutputFrame>) -> Delivery;
    /// A JSON event (already serialised once for all sinks).
    fn event(&self, json: &Arc<str>) -> Delivery;
    /// The connection moved (waiting, joined a stream, its stream ended);
    /// called by the registry under its lock, so moves arrive in order. The
    /// sink greets, counts the audience, sends the last frame: whatever its
    /// protocol does on such a move.
    fn attach(&self, _to: Attachment<'_>) {}
    /// Whether the stream counts this connection as a viewer (its count,
    /// its peak) when it joins; a WebSocket viewer that turned its pictures
    /// off (its page plays WHEP, which counts) is not. A change later goes
    /// through [`crate::registry::StreamRegistry::recount`].
    fn counted(&self) -> bool {
        true
    }
    /// The stream is done with this connection (the broadcaster's when its
    /// stream ends, a viewer replaced by a newer connection of its tab): the
    /// sink closes it with a normal close and this reason.
    fn close(&self, _reason: &str) {}
}

/// Events sent to viewers and the broadcaster as JSON text messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Started {
        username: String,
        stream_id: i64,
    },
    Ended {
        reason: String,
    },
    ViewerCount {
        count: usize,
    },
    /// The streamer's connection came back (`true`) or dropped (`false`; the
    /// stream waits for it until the idle timeout): viewers say "reconnecting…"
    /// rather than LIVE over a frozen picture.
    Broadcaster {
        connected: bool,
    },
    StyleChanged {
        style: String,
        by: Option<String>,
    },
    /// Once a second while frames flow.
    Latency {
        /// Arrival at the server to delivery, median of the last second.
        p50_ms: f64,
        /// Processing time (decode + network + encode), median.
        process_p50_ms: f64,
        fps_in: f64,
        fps_out: f64,
        dropped: u64,
    },
    /// Something went wrong with one frame or request; the stream goes on.
    Error {
        code: String,
        message: String,
    },
    /// To the streamer: credits left and how long they last (after each charge).
    Credits {
        balance: i64,
        /// Streaming time left: the rest of the paid period plus what the
        /// balance buys.
        seconds_left: u64,
        /// The rest of the period already paid.
        period_left_secs: u64,
        period_secs: u64,
    },
    /// To the streamer: the next period cannot be paid; the stream ends in
    /// `seconds_left` unless credits are bought.
    CreditsLow {
        seconds_left: u64,
    },
    /// A chat comment.
    Comment {
        id: i64,
        user: String,
        text: String,
        at_ms: u64,
    },
    CommentDeleted {
        id: i64,
    },
    /// A style request joined the queue.
    RequestQueued {
        id: i64,
        by: String,
        label: String,
    },
    /// A request left the queue: `approved` (applied), `rejected`.
    RequestDecided {
        id: i64,
        status: crate::stream::community::RequestStatus,
        by: String,
        label: String,
    },
    /// The streamer changed the comments/requests switches.
    CommunitySettings {
        comments: bool,
        requests: bool,
        auto_approve: bool,
    },
    /// Information for the streamer (e.g. why frames are not processed).
    Notice {
        message: String,
    },
}

impl StreamEvent {
    pub fn to_json(&self) -> Arc<str> {
        Arc::from(serde_json::to_string(self).unwrap_or_else(|_| "{}".into()))
    }
}
