//! Video in and out over WebRTC: WHIP ingest and WHEP playback (the HTTP
//! side is `web::webrtc`).
//!
//! - `udp.rs` — the one UDP socket and the loop that owns every session.
//! - `h264.rs` — SPS size check, the publisher's decoder thread, the
//!   stream's one encoder thread.
//! - `sdp.rs` — what an offer must carry.
//! - `client.rs` — a str0m WHIP publisher and WHEP viewer (tests, `bench webrtc`).
//!
//! A publisher's decoded pictures enter the stream exactly like a WebSocket
//! broadcaster's frames (JPEG `InputFrame`s cast to the stream actor, which
//! numbers them and keeps only the freshest); a stream's restyled output is
//! encoded once to H.264 by a tap on its output and written to every WHEP
//! viewer. Nothing here knows HTTP.

pub mod client;
pub mod h264;
pub mod sdp;
pub mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dreamstream_actors::Username;
use dreamstream_actors::frame::OutputFrame;
use dreamstream_actors::ids::ViewerId;
use dreamstream_actors::sink::{Delivery, ViewerSink};
use dreamstream_actors::stream::StreamShared;
use serde::{Deserialize, Deserializer};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::sync::mpsc::UnboundedSender;

use h264::{EncodeSettings, EncoderControl, EncoderTap};
use udp::Command;

/// `[media]` in cluster.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MediaSettings {
    /// The UDP address every WebRTC session uses (unset: WHIP/WHEP are off).
    pub udp_listen: Option<SocketAddr>,
    /// Addresses put in the answers' ICE candidates, with `udp_listen`'s
    /// port: the address clients reach this host at (behind 1:1 NAT, the
    /// public one). Empty: `udp_listen`'s address; with a wildcard
    /// `udp_listen` (0.0.0.0) and no public IP, WebRTC stays off. In the
    /// environment: comma-separated.
    #[serde(deserialize_with = "ip_list")]
    pub public_ips: Vec<IpAddr>,
    /// WHEP sessions one client network may hold on one stream.
    pub max_viewers_per_ip: u32,
    /// A session whose peer has sent nothing for this long is ended (a
    /// viewer that vanished without DELETE), and a publisher silent this
    /// long may be replaced by its owner.
    pub session_timeout_ms: u64,
    /// The largest picture a publisher may send (width × height), checked
    /// from the SPS before anything is decoded.
    pub max_pixels: u64,
    /// An IDR at least this often.
    pub keyframe_interval_ms: u64,
    /// Bitrate = width × height × bits_per_pixel × nominal_fps.
    pub bits_per_pixel: f32,
    /// The output frame rate the encoder's rate control plans for (its
    /// per-frame budget is the bitrate divided by it).
    pub nominal_fps: f32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            udp_listen: None,
            public_ips: Vec::new(),
            max_viewers_per_ip: 10,
            session_timeout_ms: 10_000,
            max_pixels: 1920 * 1088,
            keyframe_interval_ms: 2_000,
            // 1.4 Mbit/s at 640×480 and 15 fps: `bench webrtc` measured an
            // SSIM 0.011 below MJPEG's at 0.09× its bytes (0.1 was 0.026 below).
            bits_per_pixel: 0.3,
            nominal_fps: 15.0,
        }
    }
}

/// A list of addresses, or one string of them separated by commas (as an
/// environment variable gives it).
fn ip_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(l) => l,
        Form::One(s) => s.split(',').map(str::to_string).collect(),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an IP address")))
        })
        .collect()
}

/// A session's id: 128 random bits in hex (its URL is its capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u128);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for SessionId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 {
            return Err(());
        }
        u128::from_str_radix(s, 16).map(SessionId).map_err(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Publisher,
    Viewer,
}

/// What the web tier knows of a session (the UDP loop removes it at the end).
pub struct SessionEntry {
    pub kind: Kind,
    /// A publisher that is the stream's broadcaster (not a companion).
    pub broadcaster: bool,
    pub username: Username,
    pub stream_id: i64,
    /// Milliseconds since the peer was last heard (updated by the loop).
    pub idle_ms: Arc<AtomicU64>,
    /// Held while the session lives (a broadcaster slot, a viewer slot).
    _guard: Box<dyn Send>,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl SessionEntry {
    fn end(mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

#[derive(Default)]
pub struct Registry {
    sessions: HashMap<SessionId, SessionEntry>,
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Offer(#[from] sdp::OfferError),
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
    #[error("the media server is not running")]
    Down,
}

/// The WebRTC side of the control node.
pub struct Media {
    pub settings: MediaSettings,
    candidates: Vec<SocketAddr>,
    commands: UnboundedSender<Command>,
    registry: Arc<Mutex<Registry>>,
    encoders: Arc<Mutex<HashMap<i64, Arc<EncoderControl>>>>,
}

impl Media {
    /// Binds the UDP socket and starts the loop on a thread of its own; None
    /// when `udp_listen` is unset.
    pub fn start(settings: &MediaSettings) -> anyhow::Result<Option<Arc<Media>>> {
        let Some(listen) = settings.udp_listen else {
            return Ok(None);
        };
        // str0m's DTLS/SRTP crypto for this process (pure Rust).
        // Idempotent: the first provider installed stays.
        str0m::crypto::from_feature_flags().install_process_default();
        let std_socket = std::net::UdpSocket::bind(listen)
            .with_context(|| format!("failed to bind media.udp_listen {listen}"))?;
        std_socket.set_nonblocking(true)?;
        let bound = std_socket.local_addr()?;
        let candidates: Vec<SocketAddr> = if settings.public_ips.is_empty() {
            if bound.ip().is_unspecified() {
                tracing::warn!(
                    udp = %bound,
                    "WebRTC is off: media.udp_listen is a wildcard address and media.public_ips is empty (set it to the address clients reach)"
                );
                return Ok(None);
            }
            vec![bound]
        } else {
            settings
                .public_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect()
        };
        for c in &candidates {
            Candidate::host(*c, "udp").with_context(|| format!("{c} cannot be a candidate"))?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let registry = Arc::new(Mutex::new(Registry::default()));
        let timeout = Duration::from_millis(settings.session_timeout_ms);
        let loop_registry = registry.clone();
        let loop_candidates = candidates.clone();
        std::thread::Builder::new()
            .name("webrtc-udp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!(error = %e, "no runtime for the UDP loop"),
                };
                rt.block_on(async move {
                    let socket = match tokio::net::UdpSocket::from_std(std_socket) {
                        Ok(s) => s,
                        Err(e) => return tracing::error!(error = %e, "UDP socket unusable"),
                    };
                    match udp::UdpLoop::new(socket, loop_candidates, loop_registry, timeout) {
                        Ok(l) => l.run(rx).await,
                        Err(e) => tracing::error!(error = %e, "UDP loop failed to start"),
                    }
                });
            })
            .context("failed to start the UDP loop")?;
        tracing::info!(udp = %bound, candidates = ?candidates, "WebRTC (WHIP/WHEP) enabled");
        Ok(Some(Arc::new(Media {
            settings: settings.clone(),
            candidates,
            commands: tx,
            registry,
            encoders: Default::default(),
        })))
    }

    /// The UDP address (the first candidate).
    pub fn udp_addr(&self) -> SocketAddr {
        self.candidates[0]
    }

    /// A session for `offer`: str0m (ICE-lite, our candidates, H.264 + Opus)
    /// answers it. A publisher may send any H.264 profile; a viewer gets
    /// Constrained Baseline.
    pub fn answer(&self, offer: SdpOffer, kind: Kind) -> Result<(Rtc, SdpAnswer), MediaError> {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false);
        match kind {
            // A lost packet holds later frames back only while a
            // retransmission can still come (200 ms, not str0m's 2 s): then
            // the decoder waits for the IDR it asks for, and lag stays small.
            Kind::Publisher => {
                config = config
                    .enable_h264(true)
                    .set_reordering_timeout_video(Some(Duration::from_millis(200)))
            }
            Kind::Viewer => {
                let codecs = config.codec_config();
                codecs.add_h264(108.into(), Some(109.into()), true, 0x42e01f);
                codecs.add_h264(127.into(), Some(121.into()), true, 0x42001f);
            }
        }
        let mut rtc = config.build(Instant::now());
        for c in &self.candidates {
            if let Ok(candidate) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::Unanswerable(e.to_string()))?;
        Ok((rtc, answer))
    }

    fn register(&self, id: SessionId, entry: SessionEntry) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .insert(id, entry);
    }

    fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands.send(command).map_err(|_| MediaError::Down)
    }

    /// Starts a publisher: its decoder thread feeds `stream`; with
    /// `broadcaster` it becomes the stream's broadcaster (else it only feeds
    /// frames: the studio's companion). `guard` (the broadcaster slot) is
    /// held until the session ends.
    pub fn publish(
        &self,
        stream: Arc<StreamShared>,
        rtc: Rtc,
        jpeg_quality: u8,
        broadcaster: bool,
        guard: Box<dyn Send>,
    ) -> Result<SessionId, MediaError> {
        let id = SessionId(rand::random());
        let (units, rx) = std::sync::mpsc::sync_channel(udp::DECODER_QUEUE);
        h264::Decoder::spawn(
            rx,
            stream.clone(),
            self.settings.max_pixels,
            jpeg_quality,
            DecoderLink {
                id,
                commands: self.commands.clone(),
                stream: stream.clone(),
            },
        )
        .map_err(|e| MediaError::Unanswerable(format!("no decoder thread: {e}")))?;
        let token = rand::random::<u64>() | 1 << 63;
        if broadcaster {
            stream.set_broadcaster(
                token,
                Some(Box::new(SessionSink {
                    id,
                    commands: self.commands.clone(),
                })),
            );
        }
        let on_end_stream = stream.clone();
        self.register(
            id,
            SessionEntry {
                kind: Kind::Publisher,
                broadcaster,
                username: stream.username.clone(),
                stream_id: stream.id.0,
                idle_ms: Default::default(),
                _guard: guard,
                on_end: Some(Box::new(move || {
                    if broadcaster {
                        on_end_stream.clear_broadcaster(token);
                    }
                })),
            },
        );
        self.send(Command::AddPublisher {
            id,
            stream_id: stream.id.0,
            rtc: Box::new(rtc),
            decoder: units,
        })?;
        tracing::info!(session = %id, stream = %stream.username, "WHIP publisher");
        Ok(id)
    }

    /// Starts a viewer of `stream`'s one encoding (started with the first
    /// viewer). It joins the stream's viewer set (the count, the peak) until
    /// the session ends; `guard` (the web tier's: the viewer's audience
    /// seat, its slot) is held as long.
    pub fn play(
        &self,
        stream: Arc<StreamShared>,
        rtc: Rtc,
        guard: Box<dyn Send>,
    ) -> Result<SessionId, MediaError> {
        let id = SessionId(rand::random());
        let encoder = self.encoder_for(&stream)?;
        encoder.viewers.fetch_add(1, Ordering::AcqRel);
        let viewer: ViewerId = stream.add_viewer(Box::new(SessionSink {
            id,
            commands: self.commands.clone(),
        }));
        let on_end_stream = stream.clone();
        self.register(
            id,
            SessionEntry {
                kind: Kind::Viewer,
                broadcaster: false,
                username: stream.username.clone(),
                stream_id: stream.id.0,
                idle_ms: Default::default(),
                _guard: guard,
                on_end: Some(Box::new(move || on_end_stream.remove_viewer(viewer))),
            },
        );
        self.send(Command::AddViewer {
            id,
            stream_id: stream.id.0,
            rtc: Box::new(rtc),
            encoder,
        })?;
        tracing::info!(session = %id, stream = %stream.username, "WHEP viewer");
        Ok(id)
    }

    /// The stream's encoder, started (with its tap on the output) if needed.
    fn encoder_for(&self, stream: &Arc<StreamShared>) -> Result<Arc<EncoderControl>, MediaError> {
        let mut encoders = self.encoders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = encoders.get(&stream.id.0).filter(|e| !e.stopped()) {
            return Ok(e.clone());
        }
        let control = Arc::new(EncoderControl::default());
        let stream_id = stream.id.0;
        let commands = self.commands.clone();
        let exit_commands = self.commands.clone();
        let exit_encoders = Arc::downgrade(&self.encoders);
        let exit_control = control.clone();
        h264::StreamEncoder::spawn(
            stream.username.to_string(),
            control.clone(),
            EncodeSettings {
                keyframe_interval: Duration::from_millis(self.settings.keyframe_interval_ms),
                bits_per_pixel: self.settings.bits_per_pixel,
                nominal_fps: self.settings.nominal_fps,
            },
            move |frame| commands.send(Command::Video { stream_id, frame }).is_ok(),
            move || {
                let _ = exit_commands.send(Command::StreamEnded(stream_id));
                if let Some(encoders) = exit_encoders.upgrade() {
                    let mut map = encoders.lock().unwrap_or_else(|e| e.into_inner());
                    if map
                        .get(&stream_id)
                        .is_some_and(|c| Arc::ptr_eq(c, &exit_control))
                    {
                        map.remove(&stream_id);
                    }
                }
            },
        )
        .map_err(|e| MediaError::Unanswerable(format!("no encoder thread: {e}")))?;
        stream.add_tap(Arc::new(EncoderTap(control.clone())));
        encoders.insert(stream_id, control.clone());
        Ok(control)
    }

    /// Ends a session (its peer is told nothing more; DELETE).
    pub fn end(&self, id: SessionId) {
        let _ = self.send(Command::Remove(id));
    }

    /// The session `id`: its kind, stream owner, and whether it is the
    /// stream's broadcaster.
    pub fn session(&self, id: SessionId) -> Option<(Kind, Username, bool)> {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.sessions
            .get(&id)
            .map(|e| (e.kind, e.username.clone(), e.broadcaster))
    }

    /// `username`'s publisher session and how long its peer has been silent.
    pub fn publisher_of(&self, username: &Username) -> Option<(SessionId, Duration)> {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.sessions
            .iter()
            .find(|(_, e)| e.kind == Kind::Publisher && &e.username == username)
            .map(|(id, e)| {
                (
                    *id,
                    Duration::from_millis(e.idle_ms.load(Ordering::Relaxed)),
                )
            })
    }

    /// Ends `id` now (its registry entry and slot go before this returns;
    /// the loop forgets the session right after).
    pub fn end_now(&self, id: SessionId) {
        let entry = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .remove(&id);
        if let Some(entry) = entry {
            entry.end();
        }
        self.end(id);
    }

    /// Live sessions by kind (publishers, viewers).
    pub fn counts(&self) -> (usize, usize) {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let publishers = r
            .sessions
            .values()
            .filter(|e| e.kind == Kind::Publisher)
            .count();
        (publishers, r.sessions.len() - publishers)
    }

    /// Viewers of `username`'s stream.
    pub fn viewers_of(&self, username: &Username) -> usize {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.sessions
            .values()
            .filter(|e| e.kind == Kind::Viewer && &e.username == username)
            .count()
    }
}

/// The stream's view of a WebRTC session (as broadcaster or viewer): media
/// travels through the UDP loop, so frames and events are not sent here;
/// `close` ends the session.
struct SessionSink {
    id: SessionId,
    commands: UnboundedSender<Command>,
}

impl ViewerSink for SessionSink {
    fn frame(&self, _frame: &Arc<OutputFrame>) -> Delivery {
        Delivery::Sent
    }
    fn event(&self, _json: &Arc<str>) -> Delivery {
        Delivery::Sent
    }
    fn close(&self, _reason: &str) {
        let _ = self.commands.send(Command::Remove(self.id));
    }
}

/// A decoder's way back to the UDP loop and the streamer.
struct DecoderLink {
    id: SessionId,
    commands: UnboundedSender<Command>,
    stream: Arc<StreamShared>,
}

impl h264::DecoderEvents for DecoderLink {
    fn need_keyframe(&self) {
        let _ = self.commands.send(Command::NeedKeyframe(self.id));
    }

    fn refused(&self, why: h264::Refusal) {
        tracing::warn!(session = %self.id, stream = %self.stream.username, %why, "WHIP video refused");
        if why != h264::Refusal::StreamGone {
            let code = match why {
                h264::Refusal::TooLarge(..) => "frame_too_large",
                _ => "bad_video",
            };
            self.stream
                .tell_broadcaster(&dreamstream_actors::sink::StreamEvent::Error {
                    code: code.into(),
                    message: why.to_string(),
                });
            metrics::counter!("dreamstream_frames_rejected_total", "reason" => code).increment(1);
        }
        let _ = self.commands.send(Command::Remove(self.id));
    }
}

/// Instant → a monotonic count of microseconds since `base` (for bench stamps).
pub fn micros_since(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}
