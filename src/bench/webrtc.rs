//! `dreamstream bench webrtc`: a WHIP publisher and N WHEP viewers (str0m,
//! in this process) against a running server, then the same with the
//! WebSocket/MJPEG path at the same frame size.
//!
//! Every camera frame carries its number in its pixels (a band of black and
//! white blocks at the top: 16 bits and their complement), so a viewer
//! knows which frame it got whatever the transport did to it. Measured per
//! path: glass-to-glass latency (sent by the publisher → decoded by a
//! viewer), the same minus the frame's processing time (the worker's, read
//! from the DSF1 header of the same frame on a WebSocket probe), delivered
//! frames per second per viewer, bytes per viewer-second (UDP datagrams or
//! WebSocket messages), SSIM of the received pictures against the camera
//! (luma, 8×8 windows, below the band), and server CPU per viewer: each path
//! runs once with one viewer and once with N, and the difference in server
//! CPU (from `/api/server`) is divided by N − 1. Run the server with the
//! passthrough processor so that the band survives
//! (`DREAMSTREAM_WORKER__PROCESSOR=passthrough`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use awc::ws;
use bytes::BytesMut;
use dreamstream_actors::frame::FrameHeader;
use futures_util::{SinkExt, StreamExt};
use gpu_node::image_io::{self, ResizeQuality, RgbImage};

use crate::media::client::{Peer, PeerEvent, PeerOptions, VideoSink, VideoSource};

#[derive(clap::Args, Clone, Debug)]
pub struct WebRtcArgs {
    /// The server (its WHIP/WHEP and WebSocket endpoints).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Viewers in the big run (each path also runs with one).
    #[arg(long, default_value_t = 20)]
    pub viewers: usize,
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
    #[arg(long, default_value = "640x480")]
    pub size: String,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// The publisher's H.264 bitrate, in bits per pixel per frame (0.5 at
    /// 640×480 and 15 fps ≈ 2.3 Mbit/s, near OBS's default of 2.5): the
    /// ingest should not be what limits the picture the viewers get.
    #[arg(long, default_value_t = 0.5)]
    pub publish_bits_per_pixel: f64,
    /// Photos used as the camera (default: ../shared/testdata/images).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The streamer accounts are PREFIXrtc and PREFIXws.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// The server's metrics token: server CPU comes from `/api/server`, which
    /// is for administrators, the token or `[ops] allow`.
    #[arg(long, env = "DREAMSTREAM_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// Height of the counter band.
const BAND: u32 = 16;
const BITS: u32 = 32;

/// Writes `n` (16 bits and their complement) as blocks across the top band.
pub fn stamp(img: &mut RgbImage, n: u16) {
    let word = (n as u32) << 16 | (!n as u32);
    let block = img.width / BITS;
    for bit in 0..BITS {
        let v = if word >> (31 - bit) & 1 == 1 { 255 } else { 0 };
        for y in 0..BAND.min(img.height) {
            for x in bit * block..(bit + 1) * block {
                let i = ((y * img.width + x) * 3) as usize;
                img.data[i..i + 3].fill(v);
            }
        }
    }
}

/// Reads the number from the band; None if the band is not a valid stamp.
pub fn read_stamp(img: &RgbImage) -> Option<u16> {
    let block = img.width / BITS;
    if block < 4 || img.height < BAND {
        return None;
    }
    let mut word = 0u32;
    for bit in 0..BITS {
        let mut sum = 0u32;
        let mut n = 0u32;
        for y in BAND / 4..BAND * 3 / 4 {
            for x in bit * block + block / 4..bit * block + block * 3 / 4 {
                let i = ((y * img.width + x) * 3) as usize;
                sum += img.data[i..i + 3].iter().map(|&v| v as u32).sum::<u32>();
                n += 3;
            }
        }
        word = word << 1 | u32::from(sum / n.max(1) > 128);
    }
    let (hi, lo) = ((word >> 16) as u16, word as u16);
    (hi == !lo).then_some(hi)
}

/// SSIM of the luma of `a` and `b` (same size) below the band, 8×8 windows.
pub fn ssim(a: &RgbImage, b: &RgbImage) -> f64 {
    let luma = |img: &RgbImage, x: u32, y: u32| {
        let i = ((y * img.width + x) * 3) as usize;
        0.299 * img.data[i] as f64 + 0.587 * img.data[i + 1] as f64 + 0.114 * img.data[i + 2] as f64
    };
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0;
    let mut windows = 0;
    let mut y0 = BAND;
    while y0 + 8 <= a.height.min(b.height) {
        let mut x0 = 0;
        while x0 + 8 <= a.width.min(b.width) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for y in y0..y0 + 8 {
                for x in x0..x0 + 8 {
                    let (p, q) = (luma(a, x, y), luma(b, x, y));
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let n = 64.0;
            let (ma, mb) = (sa / n, sb / n);
            let (va, vb) = (saa / n - ma * ma, sbb / n - mb * mb);
            let cov = sab / n - ma * mb;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
            x0 += 8;
        }
        y0 += 8;
    }
    if windows == 0 {
        0.0
    } else {
        total / windows as f64
    }
}

fn camera(args: &WebRtcArgs) -> anyhow::Result<Vec<RgbImage>> {
    let (w, h) = args
        .size
        .split_once(['x', 'X'])
        .context("size must look like 640x480")?;
    let (w, h): (u32, u32) = (w.trim().parse()?, h.trim().parse()?);
    if w % 2 == 1 || h % 2 == 1 || w < BITS * 4 || h < 2 * BAND {
        bail!(
            "the size must be even and at least {}x{}",
            BITS * 4,
            2 * BAND
        );
    }
    let dir = args
        .images
        .clone()
        .unwrap_or_else(|| PathBuf::from("../shared/testdata/images"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the photos in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let frames: Vec<RgbImage> = paths
        .iter()
        .filter_map(|p| image_io::decode(&std::fs::read(p).ok()?).ok())
        .map(|img| image_io::resize(&img, w, h, ResizeQuality::Best))
        .collect();
    if frames.is_empty() {
        bail!("no photos in {}", dir.display());
    }
    Ok(frames)
}

/// What one run measured.
#[derive(Default)]
struct Run {
    /// (glass-to-glass µs, processing µs if known)
    latency: Vec<(u32, Option<u32>)>,
    frames_per_viewer: Vec<u64>,
    bytes_per_viewer: Vec<u64>,
    ssim: Vec<f64>,
    wall: f64,
    cpu: f64,
}

/// Which frame the camera sent when (µs since the bench started), and which photo it was.
#[derive(Default)]
struct Sent(Mutex<HashMap<u16, (u64, usize)>>);

impl Sent {
    fn set(&self, n: u16, at: u64, photo: usize) {
        self.0.lock().expect("sent").insert(n, (at, photo));
    }
    fn get(&self, n: u16) -> Option<(u64, usize)> {
        self.0.lock().expect("sent").get(&n).copied()
    }
}

struct Shared {
    start: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    sent: Sent,
    /// Processing µs of each frame number (from the WebSocket probe/viewer).
    process: Mutex<HashMap<u16, u32>>,
    camera: Vec<RgbImage>,
    samples: Mutex<Run>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A decoded picture: its latency and (every 5th) its SSIM.
    fn picture(&self, img: &RgbImage, count: u64) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let Some(n) = read_stamp(img) else { return };
        let Some((at, photo)) = self.sent.get(n) else {
            return;
        };
        let g2g = self.now_us().saturating_sub(at) as u32;
        let process = self.process.lock().expect("process").get(&n).copied();
        let mut s = self.samples.lock().expect("samples");
        s.latency.push((g2g, process));
        if count.is_multiple_of(5) {
            s.ssim.push(ssim(&self.camera[photo], img));
        }
    }
}

async fn server_cpu(client: &awc::Client, args: &WebRtcArgs) -> anyhow::Result<f64> {
    let mut req = client.get(format!("{}/api/server", args.url));
    if let Some(token) = &args.metrics_token {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !resp.status().is_success() {
        bail!(
            "{}/api/server answered {}: server CPU is for administrators; run the \
             server and the bench with the same DREAMSTREAM_METRICS_TOKEN (or pass \
             --metrics-token), or put this host in the server's [ops] allow",
            args.url,
            resp.status()
        );
    }
    let v: serde_json::Value = resp.json().await?;
    v["cpu_seconds"]
        .as_f64()
        .context("no cpu_seconds in /api/server")
}

async fn measure(
    args: &WebRtcArgs,
    shared: &Shared,
    client: &awc::Client,
) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu0 = server_cpu(client, args).await?;
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = server_cpu(client, args).await?;
    Ok((wall, cpu1 - cpu0))
}

/// A WebSocket viewer: counts frames and bytes while measuring; with
/// `decode`, reads each frame's number, its processing time, its latency.
async fn ws_viewer(
    url: String,
    shared: Arc<Shared>,
    decode: bool,
    frames: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let (_, mut conn) = awc::Client::new()
        .ws(url)
        .max_frame_size(64 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket viewer: {e}"))?;
    let mut count = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(200), conn.next()).await
        else {
            continue;
        };
        match frame {
            ws::Frame::Binary(b) => {
                if shared.measuring.load(Ordering::Relaxed) {
                    frames.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                if !decode {
                    continue;
                }
                let Ok((Some(header), jpeg)) = FrameHeader::split(b) else {
                    continue;
                };
                let Ok(img) = image_io::decode(&jpeg) else {
                    continue;
                };
                if let Some(n) = read_stamp(&img) {
                    shared
                        .process
                        .lock()
                        .expect("process")
                        .insert(n, header.process_us);
                }
                count += 1;
                shared.picture(&img, count);
            }
            ws::Frame::Ping(p) => {
                let _ = conn.send(ws::Message::Pong(p)).await;
            }
            ws::Frame::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

fn new_shared(camera: &[RgbImage]) -> Arc<Shared> {
    Arc::new(Shared {
        start: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent: Sent::default(),
        process: Mutex::new(HashMap::new()),
        camera: camera.to_vec(),
        samples: Mutex::new(Run::default()),
    })
}

async fn run_webrtc(
    args: &WebRtcArgs,
    key: &str,
    name: &str,
    viewers: usize,
    camera: &[RgbImage],
) -> anyhow::Result<Run> {
    let client = awc::Client::new();
    let shared = new_shared(camera);
    let mut publisher = Peer::publish(
        &format!("{}/whip/{name}", args.url),
        PeerOptions {
            token: Some(key.to_string()),
            no_audio: true,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("WHIP publish: {e}"))?;
    let publish_task = {
        let shared = shared.clone();
        let fps = args.fps;
        let bpp = args.publish_bits_per_pixel;
        actix_web::rt::spawn(async move {
            let (w, h) = (shared.camera[0].width, shared.camera[0].height);
            let bitrate = (w as f64 * h as f64 * bpp * fps) as u32;
            let Ok(mut source) = VideoSource::new(bitrate) else {
                return publisher;
            };
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut n, mut last_idr) = (0u16, Instant::now());
            let mut idr = true;
            while !shared.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                while let Ok(e) = publisher.events.try_recv() {
                    idr |= matches!(e, PeerEvent::KeyframeRequest);
                }
                n = n.wrapping_add(1);
                let photo = (n as usize / 15) % shared.camera.len();
                let mut img = shared.camera[photo].clone();
                stamp(&mut img, n);
                idr |= last_idr.elapsed() > Duration::from_secs(2);
                let Ok((au, t)) = source.encode(&img.data, w, h, idr) else {
                    continue;
                };
                if idr {
                    last_idr = Instant::now();
                }
                idr = false;
                shared.sent.set(n, shared.now_us(), photo);
                publisher.send_video(au, t);
            }
            publisher
        })
    };
    // The processing time of each frame, from a WebSocket probe on the same stream.
    let probe_process = {
        let shared = shared.clone();
        let url = format!("{}/ws/watch/{name}", args.url.replacen("http", "ws", 1));
        actix_web::rt::spawn(async move {
            // Only the processing times: a decoding probe that records no latency.
            let Ok((_, mut conn)) = awc::Client::new()
                .ws(url)
                .max_frame_size(64 << 20)
                .connect()
                .await
            else {
                return;
            };
            while !shared.stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(ws::Frame::Binary(b)))) =
                    tokio::time::timeout(Duration::from_millis(200), conn.next()).await
                else {
                    continue;
                };
                let Ok((Some(header), jpeg)) = FrameHeader::split(b) else {
                    continue;
                };
                let Ok(img) = image_io::decode(&jpeg) else {
                    continue;
                };
                if let Some(n) = read_stamp(&img) {
                    shared
                        .process
                        .lock()
                        .expect("process")
                        .insert(n, header.process_us);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for v in 0..viewers {
        let mut peer = Peer::play(&format!("{}/whep/{name}", args.url), PeerOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("WHEP viewer {v}: {e}"))?;
        let frames = Arc::new(AtomicU64::new(0));
        counters.push((frames.clone(), peer.bytes_in.clone()));
        let shared = shared.clone();
        // The first viewer decodes (latency, SSIM); the others only count.
        let decode = v == 0;
        tasks.push(actix_web::rt::spawn(async move {
            let mut sink = VideoSink::new().ok();
            let mut count = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let Some(event) = peer.next_event(Duration::from_millis(200)).await else {
                    continue;
                };
                let PeerEvent::Video { data, .. } = event else {
                    if matches!(event, PeerEvent::Closed) {
                        break;
                    }
                    continue;
                };
                if shared.measuring.load(Ordering::Relaxed) {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                if decode && let Some(img) = sink.as_mut().and_then(|s| s.decode(&data)) {
                    count += 1;
                    shared.picture(&img, count);
                }
            }
            peer
        }));
    }
    // Bytes are counted over the measured window only.
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let bytes0: Vec<u64> = counters
        .iter()
        .map(|(_, b)| b.load(Ordering::Relaxed))
        .collect();
    let cpu0 = server_cpu(&client, args).await?;
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = server_cpu(&client, args).await?;
    let bytes1: Vec<u64> = counters
        .iter()
        .map(|(_, b)| b.load(Ordering::Relaxed))
        .collect();
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(peer) = t.await {
            let _ = peer.delete().await;
        }
    }
    let _ = probe_process.await;
    if let Ok(publisher) = publish_task.await {
        let _ = publisher.delete().await;
    }
    let mut run = std::mem::take(&mut *shared.samples.lock().expect("samples"));
    run.frames_per_viewer = counters
        .iter()
        .map(|(f, _)| f.load(Ordering::Relaxed))
        .collect();
    run.bytes_per_viewer = bytes1.iter().zip(&bytes0).map(|(a, b)| a - b).collect();
    run.wall = wall;
    run.cpu = cpu1 - cpu0;
    Ok(run)
}

async fn run_websocket(
    args: &WebRtcArgs,
    key: &str,
    name: &str,
    viewers: usize,
    camera: &[RgbImage],
) -> anyhow::Result<Run> {
    let client = awc::Client::new();
    let shared = new_shared(camera);
    let ws_base = args.url.replacen("http", "ws", 1);
    let (_, mut conn) = client
        .ws(format!("{ws_base}/ws/broadcast/{name}"))
        .bearer_auth(key)
        .max_frame_size(64 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket broadcaster: {e}"))?;
    let broadcast = {
        let shared = shared.clone();
        let fps = args.fps;
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u16;
            while !shared.stop.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = tick.tick() => {
                        n = n.wrapping_add(1);
                        let photo = (n as usize / 15) % shared.camera.len();
                        let mut img = shared.camera[photo].clone();
                        stamp(&mut img, n);
                        let Ok(jpeg) = image_io::encode_jpeg(&img, 80) else { continue };
                        let mut msg = BytesMut::with_capacity(32 + jpeg.len());
                        FrameHeader { seq: n as u64, captured_ms: dreamstream_actors::frame::unix_ms(), process_us: 0, latency_us: 0 }.write(&mut msg);
                        msg.extend_from_slice(&jpeg);
                        shared.sent.set(n, shared.now_us(), photo);
                        if conn.send(ws::Message::Binary(msg.freeze())).await.is_err() {
                            break;
                        }
                    }
                    item = conn.next() => match item {
                        Some(Ok(ws::Frame::Ping(p))) => { let _ = conn.send(ws::Message::Pong(p)).await; }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        })
    };
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for v in 0..viewers {
        let (frames, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        counters.push((frames.clone(), bytes.clone()));
        tasks.push(actix_web::rt::spawn(ws_viewer(
            format!("{ws_base}/ws/watch/{name}"),
            shared.clone(),
            v == 0,
            frames,
            bytes,
        )));
    }
    let (wall, cpu) = measure(args, &shared, &client).await?;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = broadcast.await;
    let _ = client
        .post(format!("{}/api/streams/{name}/stop", args.url))
        .bearer_auth(key)
        .send()
        .await;
    let mut run = std::mem::take(&mut *shared.samples.lock().expect("samples"));
    run.frames_per_viewer = counters
        .iter()
        .map(|(f, _)| f.load(Ordering::Relaxed))
        .collect();
    run.bytes_per_viewer = counters
        .iter()
        .map(|(_, b)| b.load(Ordering::Relaxed))
        .collect();
    run.wall = wall;
    run.cpu = cpu;
    Ok(run)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

struct Summary {
    g2g: (f64, f64),
    minus: (f64, f64),
    fps: f64,
    bytes: f64,
    ssim: f64,
    cpu: f64,
}

fn summarize(run: &Run) -> Summary {
    let mut g2g: Vec<u32> = run.latency.iter().map(|l| l.0).collect();
    let mut minus: Vec<u32> = run
        .latency
        .iter()
        .filter_map(|(g, p)| p.map(|p| g.saturating_sub(p)))
        .collect();
    g2g.sort_unstable();
    minus.sort_unstable();
    let n = run.frames_per_viewer.len().max(1) as f64;
    Summary {
        g2g: (percentile(&g2g, 0.5), percentile(&g2g, 0.99)),
        minus: (percentile(&minus, 0.5), percentile(&minus, 0.99)),
        fps: run.frames_per_viewer.iter().sum::<u64>() as f64 / n / run.wall,
        bytes: run.bytes_per_viewer.iter().sum::<u64>() as f64 / n / run.wall,
        ssim: if run.ssim.is_empty() {
            f64::NAN
        } else {
            run.ssim.iter().sum::<f64>() / run.ssim.len() as f64
        },
        cpu: run.cpu / run.wall,
    }
}

pub fn run(args: WebRtcArgs) -> anyhow::Result<()> {
    if args.fps <= 0.0
        || args.duration <= 0.0
        || args.publish_bits_per_pixel <= 0.0
        || args.viewers < 2
    {
        bail!("fps, duration and the publish bitrate must be positive and viewers at least 2");
    }
    let camera = camera(&args)?;
    actix_web::rt::System::new().block_on(run_async(args, camera))
}

async fn run_async(args: WebRtcArgs, camera: Vec<RgbImage>) -> anyhow::Result<()> {
    let rtc_name = format!("{}rtc", args.prefix);
    let ws_name = format!("{}ws", args.prefix);
    let rtc_key = crate::client::streamer_key(&args.url, &rtc_name, &args.password).await?;
    let ws_key = crate::client::streamer_key(&args.url, &ws_name, &args.password).await?;
    let n = args.viewers;
    println!(
        "bench webrtc: {} at {} fps, 1 stream, 1 and {n} viewers, {:.0} s measured per run",
        args.size, args.fps, args.duration
    );
    let mut rows = Vec::new();
    for (path, viewers) in [
        ("webrtc", 1),
        ("webrtc", n),
        ("websocket", 1),
        ("websocket", n),
    ] {
        let run = if path == "webrtc" {
            run_webrtc(&args, &rtc_key, &rtc_name, viewers, &camera).await?
        } else {
            run_websocket(&args, &ws_key, &ws_name, viewers, &camera).await?
        };
        let s = summarize(&run);
        println!(
            "{path:>9} x{viewers:<3} glass-to-glass p50 {:6.1} ms p99 {:6.1} ms | minus processing p50 {:6.1} ms p99 {:6.1} ms | {:5.2} fps/viewer | {:8.0} B per viewer-second | SSIM {:.3} | server CPU {:.3} cores ({} samples)",
            s.g2g.0,
            s.g2g.1,
            s.minus.0,
            s.minus.1,
            s.fps,
            s.bytes,
            s.ssim,
            s.cpu,
            run.latency.len()
        );
        rows.push((path, viewers, s));
        // Let the server end the previous stream's sessions.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let per_viewer = |path: &str| {
        let one = rows
            .iter()
            .find(|r| r.0 == path && r.1 == 1)
            .map(|r| r.2.cpu);
        let many = rows
            .iter()
            .find(|r| r.0 == path && r.1 == n)
            .map(|r| r.2.cpu);
        match (one, many) {
            (Some(a), Some(b)) => (b - a) / (n as f64 - 1.0),
            _ => f64::NAN,
        }
    };
    let bytes = |path: &str| {
        rows.iter()
            .find(|r| r.0 == path && r.1 == n)
            .map(|r| r.2.bytes)
            .unwrap_or(f64::NAN)
    };
    println!(
        "server CPU per viewer: WHEP {:.4} cores, WebSocket {:.4} cores | bytes per viewer-second WHEP/MJPEG = {:.3}",
        per_viewer("webrtc"),
        per_viewer("websocket"),
        bytes("webrtc") / bytes("websocket")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back_and_garbage_does_not() {
        let mut img = RgbImage::new(640, 480, vec![90; 640 * 480 * 3]);
        for n in [0u16, 1, 0x1234, u16::MAX] {
            stamp(&mut img, n);
            assert_eq!(read_stamp(&img), Some(n));
        }
        let grey = RgbImage::new(640, 480, vec![90; 640 * 480 * 3]);
        assert_eq!(read_stamp(&grey), None);
        assert!((ssim(&grey, &grey) - 1.0).abs() < 1e-9);
    }
}
