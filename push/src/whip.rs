//! A WebRTC peer on str0m: a WHIP publisher (sends H.264 access units and
//! Opus packets) or a WHEP viewer (hands the received units and packets to
//! its owner), and [`VideoSource`], the H.264 encoder of a publisher's
//! pictures (openh264). `dreamstream push` publishes with it; the control
//! node's tests and `bench webrtc` use it too (`dreamstream::media::client`).
//! Each peer has its own UDP socket and its own thread; `drop_rtp` loses
//! that fraction of the outgoing RTP packets (never STUN, DTLS or RTCP) to
//! test recovery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// What the peer reports.
#[derive(Debug)]
pub enum PeerEvent {
    Connected,
    /// An H.264 access unit (Annex B) and its 90 kHz RTP time.
    Video {
        data: Arc<[u8]>,
        rtp_time: u64,
        contiguous: bool,
    },
    Audio(Arc<[u8]>),
    /// The server asked the publisher for a keyframe.
    KeyframeRequest,
    Closed,
}

enum PeerCmd {
    Video { data: Arc<[u8]>, rtp_time: u64 },
    Audio { data: Arc<[u8]>, rtp_time: u64 },
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Bearer token (a WHIP stream key).
    pub token: Option<String>,
    /// Fraction of outgoing RTP packets dropped (and no RTX offered).
    pub drop_rtp: f64,
    /// Offer only video.
    pub no_audio: bool,
}

/// A connected (or connecting) WHIP/WHEP peer.
pub struct Peer {
    commands: UnboundedSender<PeerCmd>,
    pub events: UnboundedReceiver<PeerEvent>,
    /// The session URL from `Location` (absolute).
    pub location: String,
    /// Response headers of the POST (e.g. `link`).
    pub headers: Vec<(String, String)>,
    /// Bytes of UDP datagrams received.
    pub bytes_in: Arc<AtomicU64>,
}

impl Peer {
    /// Publishes to `whip_url`.
    pub async fn publish(whip_url: &str, options: PeerOptions) -> Result<Peer, ClientError> {
        Self::connect(whip_url, Direction::SendOnly, options).await
    }

    /// Plays `whep_url`.
    pub async fn play(whep_url: &str, options: PeerOptions) -> Result<Peer, ClientError> {
        Self::connect(whep_url, Direction::RecvOnly, options).await
    }

    async fn connect(
        url: &str,
        direction: Direction,
        options: PeerOptions,
    ) -> Result<Peer, ClientError> {
        let other = |e: &dyn std::fmt::Display| ClientError::Other(e.to_string());
        // Idempotent: the first provider installed stays.
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = std::net::UdpSocket::bind((local_ip(url)?, 0)).map_err(|e| other(&e))?;
        socket.set_nonblocking(true).map_err(|e| other(&e))?;
        let local = socket.local_addr().map_err(|e| other(&e))?;
        let mut config = RtcConfig::new().clear_codecs().enable_opus(true, false);
        // With `drop_rtp`, no RTX: losses are not repaired by retransmission,
        // so the receiver has to ask for a keyframe.
        let rtx = (options.drop_rtp == 0.0).then(|| 109.into());
        config
            .codec_config()
            .add_h264(108.into(), rtx, true, 0x42e01f);
        let mut rtc = config.build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| other(&e))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, direction, None, None, None);
        let audio = (!options.no_audio)
            .then(|| api.add_media(MediaKind::Audio, direction, None, None, None));
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| ClientError::Other("nothing to offer".into()))?;
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let mut request = client
            .post(url)
            .insert_header(("content-type", "application/sdp"));
        if let Some(token) = &options.token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let mut response = request
            .send_body(offer.to_sdp_string())
            .await
            .map_err(|e| other(&e))?;
        let body = response
            .body()
            .limit(1 << 20)
            .await
            .map_err(|e| other(&e))?;
        let body = String::from_utf8_lossy(&body).to_string();
        let status = response.status().as_u16();
        if status != 201 {
            return Err(ClientError::Status { status, body });
        }
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ClientError::Other("no Location header".into()))?;
        let location = url::Url::parse(url)
            .and_then(|u| u.join(&location))
            .map_err(|e| other(&e))?
            .to_string();
        let answer = SdpAnswer::from_sdp_string(&body).map_err(|e| other(&e))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| other(&e))?;
        let (cmd_tx, cmd_rx) = unbounded_channel();
        let (event_tx, event_rx) = unbounded_channel();
        let bytes_in = Arc::new(AtomicU64::new(0));
        let counter = bytes_in.clone();
        let drop_rtp = options.drop_rtp;
        std::thread::Builder::new()
            .name("wrtc-client".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(socket) = tokio::net::UdpSocket::from_std(socket) else {
                        return;
                    };
                    let peer = PeerLoop {
                        rtc,
                        socket,
                        local,
                        video,
                        audio,
                        events: event_tx,
                        bytes_in: counter,
                        drop_rtp,
                        rng: rand::rngs::StdRng::seed_from_u64(19),
                    };
                    peer.run(cmd_rx).await;
                });
            })
            .map_err(|e| other(&e))?;
        Ok(Peer {
            commands: cmd_tx,
            events: event_rx,
            location,
            headers,
            bytes_in,
        })
    }

    /// Sends one H.264 access unit (Annex B) with its 90 kHz time.
    pub fn send_video(&self, data: impl Into<Arc<[u8]>>, rtp_time: u64) {
        let _ = self.commands.send(PeerCmd::Video {
            data: data.into(),
            rtp_time,
        });
    }

    /// Sends one Opus packet with its 48 kHz time.
    pub fn send_audio(&self, data: impl Into<Arc<[u8]>>, rtp_time: u64) {
        let _ = self.commands.send(PeerCmd::Audio {
            data: data.into(),
            rtp_time,
        });
    }

    /// The next event within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<PeerEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Ends the session with DELETE and stops; the status of the DELETE.
    pub async fn delete(self) -> Result<u16, ClientError> {
        let status = awc::Client::new()
            .delete(&self.location)
            .send()
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
            .status()
            .as_u16();
        self.vanish();
        Ok(status)
    }

    /// Stops sending and answering without telling the server.
    pub fn vanish(&self) {
        let _ = self.commands.send(PeerCmd::Stop);
    }
}

/// The address of this host on the route to `url`'s server: where its
/// media will reach us (loopback for a server on loopback).
fn local_ip(url: &str) -> Result<std::net::IpAddr, ClientError> {
    use std::net::ToSocketAddrs;
    let other = |e: &dyn std::fmt::Display| ClientError::Other(format!("{url}: {e}"));
    let parsed = url::Url::parse(url).map_err(|e| other(&e))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| ClientError::Other(format!("{url} has no host")))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let server = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| other(&e))?
        .next()
        .ok_or_else(|| ClientError::Other(format!("{host} has no address")))?;
    let unspecified: std::net::IpAddr = if server.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    // A connected UDP socket sends nothing; it only picks the route.
    let probe = std::net::UdpSocket::bind((unspecified, 0)).map_err(|e| other(&e))?;
    probe.connect(server).map_err(|e| other(&e))?;
    Ok(probe.local_addr().map_err(|e| other(&e))?.ip())
}

struct PeerLoop {
    rtc: Rtc,
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Option<Mid>,
    events: UnboundedSender<PeerEvent>,
    bytes_in: Arc<AtomicU64>,
    drop_rtp: f64,
    rng: rand::rngs::StdRng,
}

/// An RTP (not RTCP) packet, by RFC 7983's first byte and RFC 5761's types.
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 2
        && (128..=191).contains(&packet[0])
        && !(64..=95).contains(&(packet[1] & 0x7f))
}

impl PeerLoop {
    async fn run(mut self, mut commands: UnboundedReceiver<PeerCmd>) {
        let mut buf = vec![0u8; 2048];
        let mut wake = Instant::now();
        loop {
            if !self.poll(&mut wake) {
                break;
            }
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { continue };
                    self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    });
                    if self.rtc.handle_input(input).is_err() {
                        break;
                    }
                }
                command = commands.recv() => match command {
                    Some(PeerCmd::Video { data, rtp_time }) => {
                        self.write(self.video, data, MediaTime::from_90khz(rtp_time));
                    }
                    Some(PeerCmd::Audio { data, rtp_time }) => {
                        if let Some(mid) = self.audio {
                            self.write(mid, data, MediaTime::new(rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ));
                        }
                    }
                    Some(PeerCmd::Stop) | None => break,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.events.send(PeerEvent::Closed);
    }

    fn write(&mut self, mid: Mid, data: Arc<[u8]>, time: MediaTime) {
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let _ = writer.write(pt, Instant::now(), time, data);
    }

    /// Drains the session's output; false once it is closed.
    fn poll(&mut self, wake: &mut Instant) -> bool {
        loop {
            if !self.rtc.is_alive() {
                return false;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    *wake = t;
                    return true;
                }
                Ok(Output::Transmit(t)) => {
                    if self.drop_rtp > 0.0
                        && is_rtp(&t.contents)
                        && self.rng.random::<f64>() < self.drop_rtp
                    {
                        continue;
                    }
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => {
                    let event = match e {
                        Event::Connected => PeerEvent::Connected,
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            return false;
                        }
                        Event::MediaData(d) if d.mid == self.video => PeerEvent::Video {
                            data: d.data,
                            rtp_time: d.time.numer(),
                            contiguous: d.contiguous,
                        },
                        Event::MediaData(d) => PeerEvent::Audio(d.data),
                        Event::KeyframeRequest(_) => PeerEvent::KeyframeRequest,
                        _ => continue,
                    };
                    let _ = self.events.send(event);
                }
                Err(_) => return false,
            }
        }
    }
}

/// Encodes RGB pictures to H.264 access units (a publisher's camera).
pub struct VideoSource {
    encoder: openh264::encoder::Encoder,
    started: Instant,
}

impl VideoSource {
    /// An encoder at `bitrate` bit/s that sends an IDR only when asked (and
    /// on its first picture), so a test can tell a requested one.
    pub fn new(bitrate: u32) -> Result<Self, ClientError> {
        use openh264::encoder::{BitRate, EncoderConfig, Profile, RateControlMode};
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(bitrate))
            .skip_frames(false)
            .num_threads(1);
        let encoder = openh264::encoder::Encoder::with_api_config(
            openh264::OpenH264API::from_source(),
            config,
        )
        .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Self {
            encoder,
            started: Instant::now(),
        })
    }

    /// One access unit for an RGB picture, with its 90 kHz time.
    pub fn encode(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        idr: bool,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        if idr {
            self.encoder.force_intra_frame();
        }
        let yuv =
            YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (width as usize, height as usize)));
        let elapsed = self.started.elapsed();
        let au = self
            .encoder
            .encode_at(
                &yuv,
                openh264::Timestamp::from_millis(elapsed.as_millis() as u64),
            )
            .map_err(|e| ClientError::Other(e.to_string()))?
            .to_vec();
        Ok((au, elapsed.as_micros() as u64 * 9 / 100))
    }
}
