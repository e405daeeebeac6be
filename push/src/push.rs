//! `push`: frames from a source to a stream, by its stream key, at a target
//! frame rate, over WHIP (H.264) when the server offers it and the WebSocket
//! (JPEG with the DSF1 header) otherwise. A progress line says frames sent
//! and acknowledged, frames per second in and out, latency and reconnects;
//! a connection that drops is made again with backoff (a WHIP session
//! whose server has been silent for 4 s counts as dropped: ICE alone takes
//! about twenty seconds to say so); a refused key stops the client at once.
//! The last line on stdout is a JSON summary.
//!
//! Acknowledgements: over the WebSocket the server acks every frame it took
//! (`{"type":"ack","seq":N}`), and at the end of a file the client waits
//! for the acks of all frames sent on the live connection; frames sent on a
//! connection that dropped before their ack count as lost. WHIP has no
//! per-frame acknowledgement: there `acked` is absent, and the output rate
//! comes from the stream's public counters (`/api/streams/{name}`).

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use awc::ws;
use bytes::BytesMut;
use dreamstream_actors::frame::{FrameHeader, unix_ms};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::image::{self, Rgb};
use crate::net::{self, Backoff, Conn, Refusal};
use crate::source::{self, Input, SourceOptions};
use crate::whip::{Peer, PeerEvent, PeerOptions, VideoSource};

/// How frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WHIP when the server takes it, the WebSocket otherwise.
    Auto,
    /// WHIP only (H.264 over WebRTC).
    Whip,
    /// The WebSocket only (JPEG frames, acknowledged one by one).
    Websocket,
}

#[derive(clap::Args, Clone, Debug)]
pub struct PushArgs {
    /// A video file, a folder of JPEG/PNG images, or a V4L2 camera
    /// (`/dev/video0`, or `v4l2:DEVICE`).
    pub input: String,
    /// The DreamStream server.
    #[arg(
        long,
        env = "DREAMSTREAM_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The stream (its owner's username). Not `DREAMSTREAM_STREAM`: that
    /// is the server's `[stream]` settings table.
    #[arg(long, env = "DREAMSTREAM_STREAM_NAME")]
    pub stream: String,
    /// The stream key (made in the studio).
    #[arg(long, env = "DREAMSTREAM_STREAM_KEY", hide_env_values = true)]
    pub key: String,
    /// Frames per second sent.
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
    /// Frame size WIDTHxHEIGHT (even numbers).
    #[arg(long, default_value = "640x480")]
    pub size: String,
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,
    /// Start the file or folder again at its end.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// JPEG quality of WebSocket frames (1–100).
    #[arg(long, default_value_t = 80)]
    pub quality: u8,
    /// H.264 bitrate of WHIP video, bit/s (default: from the frame size).
    #[arg(long)]
    pub bitrate: Option<u32>,
    /// The ffmpeg that decodes files and cameras.
    #[arg(long, env = "DREAMSTREAM_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: std::path::PathBuf,
    /// Leave the stream live at the end (default: stop it once the last
    /// frame is acknowledged, as the studio's Stop does).
    #[arg(long)]
    pub keep_live: bool,
}

/// `WIDTHxHEIGHT`, both even and between 16 and 4096.
pub fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .context("the size must look like 640x480")?;
    let (w, h): (u32, u32) = (
        w.trim().parse().context("the width")?,
        h.trim().parse().context("the height")?,
    );
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) || w % 2 == 1 || h % 2 == 1 {
        bail!("the size must be even numbers from 16 to 4096, not {w}x{h}");
    }
    Ok((w, h))
}

/// What a push did (printed as JSON at the end).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub transport: &'static str,
    pub sent: u64,
    /// Frames the server acknowledged (WebSocket only).
    pub acked: Option<u64>,
    /// Frames sent on connections that dropped before their ack.
    pub lost: u64,
    /// Restyled frames seen coming back (the WebSocket's preview, or the
    /// stream's output counter over WHIP).
    pub output_frames: u64,
    pub reconnects: u32,
    pub seconds: f64,
}

impl Summary {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "transport": self.transport,
            "sent": self.sent,
            "acked": self.acked,
            "lost": self.lost,
            "output_frames": self.output_frames,
            "reconnects": self.reconnects,
            "seconds": (self.seconds * 10.0).round() / 10.0,
        })
    }
}

/// Runs `push` to the end (the source's, `--frames`, `--duration` or a
/// signal) on a runtime of its own; prints the summary.
pub fn push(args: PushArgs) -> anyhow::Result<()> {
    let summary = actix_rt::System::new().block_on(run(args))?;
    net::progress("");
    println!("{}", summary.json());
    Ok(())
}

/// Why one connection's session ended.
enum End {
    /// The source (or the limits) ran out and the frames were acknowledged.
    Done,
    /// The connection dropped; reconnect.
    Dropped(String),
    /// The stream ended on the server for good (stopped, out of credits).
    Ended(String),
    /// SIGINT or SIGTERM.
    Interrupted,
}

/// Counters and the pacing shared by the connections of one push.
struct Ctx {
    args: PushArgs,
    width: u32,
    height: u32,
    frames: mpsc::Receiver<source::Item>,
    /// A frame taken from the source that a dropped connection did not send.
    pending: Option<Rgb>,
    tick: tokio::time::Interval,
    report_every: tokio::time::Interval,
    started: Instant,
    source_done: bool,
    next_seq: u64,
    summary: Summary,
    acked: u64,
    latency_ms: Option<f64>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// For the fps in/out of the progress line: (time, sent, out) a second ago.
    last_report: (Instant, u64, u64),
    /// Connections made so far (the ones after the first are reconnects).
    connections: u32,
    /// The stream's output counter, polled while publishing over WHIP.
    whip_out: Rc<Cell<Option<u64>>>,
}

impl Ctx {
    /// The next frame to send, or None at the end (of the source, or of
    /// `--frames` / `--duration`).
    async fn next_frame(&mut self) -> anyhow::Result<Option<Rgb>> {
        if let Some(frame) = self.pending.take() {
            return Ok(Some(frame));
        }
        let over_time = self
            .args
            .duration
            .is_some_and(|d| self.started.elapsed().as_secs_f64() >= d);
        let over_count = self.args.frames.is_some_and(|n| self.summary.sent >= n);
        if self.source_done || over_time || over_count {
            self.source_done = true;
            return Ok(None);
        }
        match self.frames.recv().await {
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(e)) => Err(e),
            None => {
                self.source_done = true;
                Ok(None)
            }
        }
    }

    fn report(&mut self, transport: &str) {
        let now = Instant::now();
        let out = self.output_frames();
        let (t0, sent0, out0) = self.last_report;
        let dt = now.duration_since(t0).as_secs_f64().max(1e-3);
        let fps_in = (self.summary.sent - sent0) as f64 / dt;
        let fps_out = out.saturating_sub(out0) as f64 / dt;
        self.last_report = (now, self.summary.sent, out);
        let acked = match transport {
            "websocket" => format!(", {} acked", self.acked),
            _ => String::new(),
        };
        let latency = self
            .latency_ms
            .map_or_else(|| "-".to_string(), |l| format!("{l:.0} ms"));
        net::progress(&format!(
            "push {}: {} sent{acked} | fps in {fps_in:.1}, out {fps_out:.1} | latency {latency} | reconnects {} | {transport}",
            self.args.stream, self.summary.sent, self.summary.reconnects
        ));
    }

    fn output_frames(&self) -> u64 {
        self.summary
            .output_frames
            .max(self.whip_out.get().unwrap_or(0))
    }

    /// A connection is up: counts it (and a reconnect, after the first).
    fn connected(&mut self, transport: &'static str) {
        if self.connections > 0 {
            self.summary.reconnects += 1;
        }
        self.connections += 1;
        self.summary.transport = transport;
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The push itself (inside an actix runtime: awc needs one).
pub async fn run(args: PushArgs) -> anyhow::Result<Summary> {
    if !(args.fps > 0.0 && args.fps <= 120.0) {
        bail!("--fps must be above 0 and at most 120");
    }
    net::check_server(&args.server)?;
    if args.key.trim().is_empty() {
        bail!("no stream key: pass --key or set DREAMSTREAM_STREAM_KEY");
    }
    let (width, height) = parse_size(&args.size)?;
    let input = Input::parse(&args.input);
    if let Input::File(path) = &input
        && !path.exists()
    {
        bail!("{} does not exist", path.display());
    }
    let frames = source::start(
        &input,
        &SourceOptions {
            width,
            height,
            fps: args.fps,
            repeat: args.repeat,
            ffmpeg: args.ffmpeg.clone(),
        },
    )?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.fps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let now = Instant::now();
    let mut ctx = Ctx {
        width,
        height,
        frames,
        pending: None,
        tick,
        report_every: report,
        started: now,
        source_done: false,
        next_seq: 1,
        summary: Summary::default(),
        acked: 0,
        latency_ms: None,
        stop: net::shutdown_signal(),
        last_report: (now, 0, 0),
        whip_out: Rc::new(Cell::new(None)),
        connections: 0,
        args,
    };
    let mut whip = ctx.args.transport != Transport::Websocket;
    let mut backoff = Backoff::new();
    loop {
        if ctx.stopping() {
            break;
        }
        let attempt = if whip {
            publish_whip(&mut ctx).await
        } else {
            push_websocket(&mut ctx).await
        };
        let end = match attempt {
            Ok((end, worked)) => {
                if worked {
                    backoff.reset();
                }
                end
            }
            Err(Refusal::NoWhip(why)) if ctx.args.transport == Transport::Auto => {
                eprintln!("{why}; pushing over the WebSocket");
                whip = false;
                continue;
            }
            Err(Refusal::NoWhip(why)) => bail!("{why} (--transport whip)"),
            Err(Refusal::Fatal(why)) => bail!("{why}"),
            Err(Refusal::Retry(why)) => End::Dropped(why),
        };
        match end {
            End::Done | End::Interrupted => break,
            End::Ended(reason) => bail!("the stream ended on the server ({reason})"),
            End::Dropped(why) => {
                let wait = backoff.fail();
                eprintln!("{why}; reconnecting in {:.1} s", wait.as_secs_f64());
                let mut stop = ctx.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    ctx.summary.seconds = ctx.started.elapsed().as_secs_f64();
    ctx.summary.output_frames = ctx.output_frames();
    if ctx.summary.transport == "websocket" {
        ctx.summary.acked = Some(ctx.acked);
    }
    Ok(ctx.summary)
}

/// One WebSocket connection: `Ok((why it ended, whether it worked))`.
async fn push_websocket(ctx: &mut Ctx) -> Result<(End, bool), Refusal> {
    let url = net::ws_url(
        &ctx.args.server,
        &format!("/ws/broadcast/{}", ctx.args.stream),
    );
    let mut conn = net::connect_ws(&url, Some(&ctx.args.key), &ctx.args.stream).await?;
    ctx.connected("websocket");
    let mut in_flight: HashSet<u64> = HashSet::new();
    let mut worked = false;
    let mut ack_deadline: Option<tokio::time::Instant> = None;
    let mut stop = ctx.stop.clone();
    let end = loop {
        if ctx.source_done && in_flight.is_empty() {
            finish_websocket(&mut conn, ctx.args.keep_live).await;
            break End::Done;
        }
        let ack_wait = async {
            match ack_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.tick.tick(), if !ctx.source_done => {
                let frame = match ctx.next_frame().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        ack_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                        continue;
                    }
                    Err(e) => {
                        eprintln!("the source failed: {e:#}");
                        ctx.source_done = true;
                        ack_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                        continue;
                    }
                };
                let jpeg = match image::encode_jpeg(&frame, ctx.args.quality) {
                    Ok(j) => j,
                    Err(e) => {
                        eprintln!("skipping a frame: {e:#}");
                        continue;
                    }
                };
                let seq = ctx.next_seq;
                let mut msg = BytesMut::with_capacity(32 + jpeg.len());
                FrameHeader { seq, captured_ms: unix_ms(), process_us: 0, latency_us: 0 }.write(&mut msg);
                msg.extend_from_slice(&jpeg);
                if let Err(e) = conn.send(ws::Message::Binary(msg.freeze())).await {
                    ctx.pending = Some(frame);
                    break End::Dropped(format!("the connection dropped: {e}"));
                }
                ctx.next_seq += 1;
                ctx.summary.sent += 1;
                in_flight.insert(seq);
            }
            item = conn.next() => match item {
                Some(Ok(ws::Frame::Text(text))) => {
                    match server_message(std::str::from_utf8(&text).unwrap_or_default()) {
                        ServerMsg::Ack(seq) => {
                            if in_flight.remove(&seq) {
                                ctx.acked += 1;
                                worked = true;
                            }
                        }
                        ServerMsg::Ended(reason) => match reason.as_str() {
                            // The stream ends for good: do not start it again.
                            "stopped" | "out_of_credits" | "admin" => break End::Ended(reason),
                            _ => break End::Dropped(format!("the stream ended ({reason})")),
                        },
                        ServerMsg::Error(code, message) => {
                            if code == "stream_ended" {
                                break End::Dropped(message);
                            }
                            eprintln!("the server: {code}: {message}");
                        }
                        ServerMsg::Other => {}
                    }
                }
                Some(Ok(ws::Frame::Binary(bytes))) => {
                    // The restyled preview: its header echoes our capture time.
                    if let Ok((Some(h), _)) = FrameHeader::split(bytes) {
                        ctx.summary.output_frames += 1;
                        ctx.latency_ms = Some(unix_ms().saturating_sub(h.captured_ms) as f64);
                    }
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = conn.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(ws::Frame::Close(reason))) => {
                    break End::Dropped(format!("the server closed the connection ({reason:?})"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break End::Dropped(format!("the connection failed: {e}")),
                None => break End::Dropped("the connection closed".into()),
            },
            _ = ack_wait => {
                eprintln!("{} frames were not acknowledged in time", in_flight.len());
                finish_websocket(&mut conn, ctx.args.keep_live).await;
                break End::Done;
            }
            _ = ctx.report_every.tick() => ctx.report("websocket"),
            _ = stop.changed() => {
                finish_websocket(&mut conn, ctx.args.keep_live).await;
                break End::Interrupted;
            }
        }
    };
    ctx.summary.lost += in_flight.len() as u64;
    Ok((end, worked))
}

/// Ends the stream (unless it stays live) and closes the connection.
async fn finish_websocket(conn: &mut Conn, keep_live: bool) {
    if !keep_live {
        let _ = conn
            .send(ws::Message::Text(r#"{"type":"stop"}"#.into()))
            .await;
    }
    let _ = conn.send(ws::Message::Close(None)).await;
}

enum ServerMsg {
    Ack(u64),
    Ended(String),
    Error(String, String),
    Other,
}

/// What a JSON message from the server means to a pusher (anything
/// unexpected is ignored: the server may add events).
fn server_message(text: &str) -> ServerMsg {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return ServerMsg::Other;
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match v.get("type").and_then(|t| t.as_str()) {
        Some("ack") => v
            .get("seq")
            .and_then(|s| s.as_u64())
            .map_or(ServerMsg::Other, ServerMsg::Ack),
        Some("ended") => ServerMsg::Ended(s("reason")),
        Some("error") => ServerMsg::Error(s("code"), s("message")),
        _ => ServerMsg::Other,
    }
}

/// A bitrate for H.264 at this size and rate: ~0.1 bit per pixel.
fn default_bitrate(width: u32, height: u32, fps: f64) -> u32 {
    ((width as f64 * height as f64 * fps * 0.1) as u32).clamp(200_000, 8_000_000)
}

/// Silence after which a WHIP session's server counts as gone.
const SILENT_SERVER: Duration = Duration::from_secs(4);

/// One WHIP session: `Ok((why it ended, whether it worked))`.
async fn publish_whip(ctx: &mut Ctx) -> Result<(End, bool), Refusal> {
    let server = ctx.args.server.trim_end_matches('/').to_string();
    let url = format!("{server}/whip/{}", ctx.args.stream);
    let sent_before = ctx.summary.sent;
    let options = PeerOptions {
        token: Some(ctx.args.key.clone()),
        no_audio: true,
        ..Default::default()
    };
    let mut peer = match Peer::publish(&url, options).await {
        Ok(peer) => peer,
        Err(crate::whip::ClientError::Status { status, body }) => {
            return Err(net::classify(status, &ctx.args.stream, &body, true));
        }
        Err(e) => return Err(Refusal::Retry(format!("cannot reach {url}: {e}"))),
    };
    // Connected within 10 s, or the media path is blocked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, peer.events.recv()).await {
            Ok(Some(PeerEvent::Connected)) => {
                ctx.connected("whip");
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                peer.vanish();
                return Ok((
                    End::Dropped("the WHIP session did not connect (UDP blocked?)".into()),
                    false,
                ));
            }
        }
    }
    let bitrate = ctx
        .args
        .bitrate
        .unwrap_or_else(|| default_bitrate(ctx.width, ctx.height, ctx.args.fps));
    let mut encoder =
        VideoSource::new(bitrate).map_err(|e| Refusal::Fatal(format!("the H.264 encoder: {e}")))?;
    let counters = actix_rt::spawn(poll_output(
        server,
        ctx.args.stream.clone(),
        ctx.whip_out.clone(),
    ));
    let mut idr = true;
    let mut stop = ctx.stop.clone();
    // The server answers ICE checks and sends RTCP reports all the time: a
    // session that hears nothing for this long lost its server (ICE itself
    // takes about twenty seconds to say so).
    let mut heard = (peer.bytes_in.load(Ordering::Relaxed), Instant::now());
    let end = loop {
        tokio::select! {
            _ = ctx.tick.tick() => {
                let frame = match ctx.next_frame().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break End::Done,
                    Err(e) => {
                        eprintln!("the source failed: {e:#}");
                        break End::Done;
                    }
                };
                match encoder.encode(&frame.data, frame.width, frame.height, idr) {
                    Ok((au, rtp_time)) => {
                        peer.send_video(au, rtp_time);
                        idr = false;
                        ctx.summary.sent += 1;
                    }
                    Err(e) => eprintln!("skipping a frame: {e}"),
                }
            }
            event = peer.events.recv() => match event {
                Some(PeerEvent::KeyframeRequest) => idr = true,
                Some(PeerEvent::Closed) | None => {
                    break End::Dropped("the WHIP session ended".into());
                }
                Some(_) => {}
            },
            _ = ctx.report_every.tick() => {
                ctx.report("whip");
                let bytes = peer.bytes_in.load(Ordering::Relaxed);
                if bytes != heard.0 {
                    heard = (bytes, Instant::now());
                } else if heard.1.elapsed() >= SILENT_SERVER {
                    break End::Dropped(format!(
                        "the server sent nothing for {} s",
                        SILENT_SERVER.as_secs()
                    ));
                }
            }
            _ = stop.changed() => break End::Interrupted,
        }
    };
    counters.abort();
    let worked = ctx.summary.sent > sent_before;
    match &end {
        // The publisher's DELETE ends the stream (RFC 9725), unless it stays live.
        End::Done | End::Interrupted if !ctx.args.keep_live => {
            // Let the last frames reach the stream before it ends.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = peer.delete().await {
                eprintln!("ending the WHIP session: {e}");
            }
        }
        _ => peer.vanish(),
    }
    Ok((end, worked))
}

/// Polls the stream's output counter once a second (what WHIP cannot
/// tell its publisher).
async fn poll_output(server: String, stream: String, out: Rc<Cell<Option<u64>>>) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(2))
        .finish();
    let url = format!("{server}/api/streams/{stream}");
    let mut base: Option<u64> = None;
    // Output of earlier sessions (a restarted server counts from 0 again).
    let offset = out.get().unwrap_or(0);
    loop {
        if let Ok(mut resp) = client.get(&url).send().await
            && resp.status().is_success()
            && let Ok(v) = resp.json::<serde_json::Value>().await
            && let Some(n) = v.get("frames_out").and_then(|n| n.as_u64())
        {
            // Counted from this session's start (a stream outlives sessions).
            let start = *base.get_or_insert(n);
            out.set(Some(offset + n.saturating_sub(start)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_even_and_bounded() {
        assert_eq!(parse_size("320x240").unwrap(), (320, 240));
        assert_eq!(parse_size("640X480").unwrap(), (640, 480));
        assert!(parse_size("321x240").is_err());
        assert!(parse_size("8x8").is_err());
        assert!(parse_size("640").is_err());
    }

    #[test]
    fn server_messages_are_read_without_trusting_them() {
        assert!(matches!(
            server_message(r#"{"type":"ack","seq":7}"#),
            ServerMsg::Ack(7)
        ));
        assert!(matches!(
            server_message(r#"{"type":"ack","seq":"x"}"#),
            ServerMsg::Other
        ));
        assert!(matches!(
            server_message(r#"{"type":"ended","reason":"out_of_credits"}"#),
            ServerMsg::Ended(r) if r == "out_of_credits"
        ));
        assert!(matches!(server_message("not json"), ServerMsg::Other));
        assert!(matches!(server_message(r#"[1,2]"#), ServerMsg::Other));
    }
}
