//! The UDP loop: one socket for every WebRTC session (ICE-lite), one thread.
//!
//! It owns every session's `str0m::Rtc`, demultiplexes each datagram to the
//! session that accepts it, drives the sessions' timers, and moves media:
//! a publisher's H.264 access units go to its decoder thread, its Opus
//! packets straight to the stream's WHEP viewers (passed through), and each
//! encoded frame of a stream (from its encoder thread) to every viewer of
//! it. Viewers that joined or lost pictures (PLI/FIR) make the encoder send
//! an IDR; a publisher that lost packets is asked for one (PLI, at most one
//! a second).
//!
//! Commands come from the web tier and the codec threads over an unbounded
//! channel (their rate is bounded by the encoders' frame rate and by HTTP
//! requests). A session ends when str0m closes it, when nothing has come
//! from its peer for `session_timeout` (a viewer that vanished without
//! DELETE is reaped so), or on `Remove`; its registry entry is then dropped
//! and its `on_end` runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

use super::h264::{DecoderInput, EncodedFrame, EncoderControl};
use super::{Registry, SessionId};

/// What the loop is told.
pub enum Command {
    AddPublisher {
        id: SessionId,
        stream_id: i64,
        rtc: Box<Rtc>,
        decoder: SyncSender<DecoderInput>,
    },
    AddViewer {
        id: SessionId,
        stream_id: i64,
        rtc: Box<Rtc>,
        encoder: Arc<EncoderControl>,
    },
    /// End a session (DELETE, the stream ended, the video was refused).
    Remove(SessionId),
    /// A publisher's decoder needs an IDR.
    NeedKeyframe(SessionId),
    /// One encoded frame for every viewer of a stream.
    Video {
        stream_id: i64,
        frame: Arc<EncodedFrame>,
    },
    /// The stream's encoder stopped (the stream ended): its viewers go.
    StreamEnded(i64),
}

enum Role {
    Publisher {
        decoder: SyncSender<DecoderInput>,
        last_pli: Option<Instant>,
        /// A unit could not be queued: the decoder must wait for an IDR.
        gap: bool,
    },
    Viewer {
        encoder: Arc<EncoderControl>,
        /// Nothing is written until an IDR (a decoder cannot start elsewhere).
        waiting_for_idr: bool,
    },
}

struct Session {
    rtc: Rtc,
    stream_id: i64,
    role: Role,
    video: Option<Mid>,
    audio: Option<Mid>,
    connected: bool,
    last_rx: Instant,
    next_timeout: Instant,
}

/// What a session's output asks of others.
enum Action {
    Audio(i64, Box<str0m::media::MediaData>),
    KeyframeFor(Arc<EncoderControl>),
}

/// Packets the decoder may have waiting before units are dropped (and an
/// IDR asked for): about four seconds of 30 fps video.
pub const DECODER_QUEUE: usize = 120;

pub struct UdpLoop {
    socket: UdpSocket,
    local: SocketAddr,
    /// The address str0m is told a datagram came to (the advertised
    /// candidate of the sender's address family).
    candidates: Vec<SocketAddr>,
    sessions: HashMap<SessionId, Session>,
    registry: Arc<Mutex<Registry>>,
    timeout: Duration,
}

impl UdpLoop {
    pub fn new(
        socket: UdpSocket,
        candidates: Vec<SocketAddr>,
        registry: Arc<Mutex<Registry>>,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            candidates,
            sessions: HashMap::new(),
            registry,
            timeout,
        })
    }

    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        self.candidates
            .iter()
            .find(|c| c.is_ipv4() == source.is_ipv4())
            .copied()
            .unwrap_or(self.local)
    }

    pub async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        let mut reap_at = Instant::now() + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            let wake = self
                .sessions
                .values()
                .map(|s| s.next_timeout)
                .min()
                .unwrap_or(now + Duration::from_secs(1))
                .min(reap_at)
                .max(now);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.receive(&buf[..n], source),
                    Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                },
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            let now = Instant::now();
            let due: Vec<SessionId> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.next_timeout <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.input(id, Input::Timeout(now));
            }
            if now >= reap_at {
                self.reap(now);
                reap_at = now + Duration::from_millis(500);
            }
        }
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    fn receive(&mut self, data: &[u8], source: SocketAddr) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.destination_for(source),
                contents,
            },
        );
        let Some(id) = self
            .sessions
            .iter()
            .find(|(_, s)| s.rtc.accepts(&input))
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_rx = Instant::now();
        }
        self.input(id, input);
    }

    fn input(&mut self, id: SessionId, input: Input) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %id, error = %e, "WebRTC session failed");
            s.rtc.disconnect();
        }
        self.drive(id);
    }

    /// Polls a session until it waits; sends what it transmits, handles its
    /// events, then does what they ask of other sessions.
    fn drive(&mut self, id: SessionId) {
        let mut actions = Vec::new();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        loop {
            if !s.rtc.is_alive() {
                s.next_timeout = Instant::now();
                break;
            }
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    s.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // Non-blocking: a datagram the kernel cannot take now is
                    // lost like any other (RTP retransmits or asks again).
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        tracing::trace!(error = %e, "UDP send dropped");
                    }
                }
                Ok(Output::Event(e)) => handle_event(id, s, e, &mut actions),
                Err(e) => {
                    tracing::debug!(session = %id, error = %e, "WebRTC session failed");
                    s.rtc.disconnect();
                }
            }
        }
        for action in actions {
            match action {
                Action::Audio(stream_id, data) => self.relay_audio(stream_id, &data),
                Action::KeyframeFor(encoder) => encoder.request_idr(),
            }
        }
    }

    fn relay_audio(&mut self, stream_id: i64, data: &str0m::media::MediaData) {
        let viewers: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.stream_id == stream_id && matches!(s.role, Role::Viewer { .. }) && s.connected
            })
            .map(|(id, _)| *id)
            .collect();
        for id in viewers {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Some(mid) = s.audio else { continue };
            let Some(writer) = s.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            if let Err(e) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
                tracing::debug!(session = %id, error = %e, "audio write failed");
            }
            self.drive(id);
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::AddPublisher {
                id,
                stream_id,
                rtc,
                decoder,
            } => self.add(
                id,
                stream_id,
                *rtc,
                Role::Publisher {
                    decoder,
                    last_pli: None,
                    gap: false,
                },
            ),
            Command::AddViewer {
                id,
                stream_id,
                rtc,
                encoder,
            } => self.add(
                id,
                stream_id,
                *rtc,
                Role::Viewer {
                    encoder,
                    waiting_for_idr: true,
                },
            ),
            Command::Remove(id) => self.remove(id),
            Command::NeedKeyframe(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    request_keyframe(s);
                    self.drive(id);
                }
            }
            Command::Video { stream_id, frame } => self.video(stream_id, &frame),
            Command::StreamEnded(stream_id) => {
                let ids: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.stream_id == stream_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.remove(id);
                }
            }
        }
    }

    fn add(&mut self, id: SessionId, stream_id: i64, rtc: Rtc, role: Role) {
        let now = Instant::now();
        self.sessions.insert(
            id,
            Session {
                rtc,
                stream_id,
                role,
                video: None,
                audio: None,
                connected: false,
                last_rx: now,
                next_timeout: now,
            },
        );
        self.drive(id);
    }

    fn video(&mut self, stream_id: i64, frame: &EncodedFrame) {
        let viewers: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.stream_id == stream_id && s.connected)
            .map(|(id, _)| *id)
            .collect();
        let now = Instant::now();
        for id in viewers {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let Role::Viewer {
                waiting_for_idr,
                encoder,
            } = &mut s.role
            else {
                continue;
            };
            if *waiting_for_idr && !frame.keyframe {
                encoder.request_idr();
                continue;
            }
            let Some(mid) = s.video else { continue };
            let Some(writer) = s.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == str0m::format::Codec::H264)
                .map(|p| p.pt())
            else {
                continue;
            };
            match writer.write(
                pt,
                now,
                MediaTime::from_90khz(frame.rtp_time),
                frame.data.clone(),
            ) {
                Ok(()) => *waiting_for_idr = false,
                Err(e) => tracing::debug!(session = %id, error = %e, "video write failed"),
            }
            self.drive(id);
        }
    }

    /// Ends sessions that are closed or whose peer went silent.
    fn reap(&mut self, now: Instant) {
        let gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.rtc.is_alive() || now.duration_since(s.last_rx) > self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(id);
        }
        // What the web tier reads: when each session last heard its peer.
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        for (id, s) in &self.sessions {
            if let Some(entry) = registry.sessions.get(id) {
                entry.idle_ms.store(
                    now.duration_since(s.last_rx).as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
        }
    }

    fn remove(&mut self, id: SessionId) {
        if let Some(mut s) = self.sessions.remove(&id) {
            s.rtc.disconnect();
            if let Role::Viewer { encoder, .. } = &s.role {
                encoder.viewers.fetch_sub(1, Ordering::AcqRel);
            }
            tracing::info!(session = %id, stream_id = s.stream_id, "WebRTC session ended");
        }
        let entry = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .remove(&id);
        if let Some(entry) = entry {
            entry.end();
        }
    }
}

fn handle_event(id: SessionId, s: &mut Session, event: Event, actions: &mut Vec<Action>) {
    match event {
        Event::Connected => {
            s.connected = true;
            tracing::info!(session = %id, "WebRTC session connected");
            if let Role::Viewer { encoder, .. } = &s.role {
                actions.push(Action::KeyframeFor(encoder.clone()));
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => s.rtc.disconnect(),
        Event::MediaAdded(m) => match m.kind {
            MediaKind::Video if s.video.is_none() => s.video = Some(m.mid),
            MediaKind::Audio if s.audio.is_none() => s.audio = Some(m.mid),
            _ => {}
        },
        Event::MediaData(data) => {
            if !matches!(s.role, Role::Publisher { .. }) {
                return;
            }
            if Some(data.mid) == s.audio {
                actions.push(Action::Audio(s.stream_id, Box::new(data)));
            } else if Some(data.mid) == s.video {
                publisher_video(s, data);
            }
        }
        Event::KeyframeRequest(_) => {
            if let Role::Viewer {
                encoder,
                waiting_for_idr,
            } = &mut s.role
            {
                *waiting_for_idr = true;
                actions.push(Action::KeyframeFor(encoder.clone()));
            }
        }
        _ => {}
    }
}

fn publisher_video(s: &mut Session, data: str0m::media::MediaData) {
    let Role::Publisher { decoder, gap, .. } = &mut s.role else {
        return;
    };
    let mut lost = !data.contiguous || *gap;
    if lost {
        match decoder.try_send(DecoderInput::Gap) {
            Ok(()) => *gap = false,
            Err(TrySendError::Full(_)) => *gap = true,
            Err(TrySendError::Disconnected(_)) => return s.rtc.disconnect(),
        }
    }
    if !*gap {
        match decoder.try_send(DecoderInput::Unit(data.data)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                *gap = true;
                lost = true;
            }
            Err(TrySendError::Disconnected(_)) => return s.rtc.disconnect(),
        }
    }
    if lost {
        request_keyframe(s);
    }
}

/// A PLI to a publisher, at most one a second.
fn request_keyframe(s: &mut Session) {
    let Role::Publisher { last_pli, .. } = &mut s.role else {
        return;
    };
    if last_pli.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
        return;
    }
    let Some(mid) = s.video else { return };
    if let Some(mut writer) = s.rtc.writer(mid) {
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        if writer.request_keyframe(None, kind).is_ok() {
            *last_pli = Some(Instant::now());
        }
    }
}
