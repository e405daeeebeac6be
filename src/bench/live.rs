//! `dreamstream bench live`: real WebSocket broadcasters (real photos as the
//! camera) and viewers against a running server.
//!
//! Every frame carries a unique capture time (the server numbers frames
//! itself and echoes the capture time); the benchmark remembers when it sent
//! each one (microsecond clock), so a viewer's end-to-end latency is exact.
//! `--reconnect-every S` drops and reopens each broadcaster's connection every
//! S seconds (numbering its frames from 1 again, as a real client does) and
//! reports the output frame rate in the 5 s after each reconnect. The output header carries the worker's processing time, so the
//! overhead of the platform (queueing, hops, fan-out) is end-to-end minus
//! processing. Server CPU and memory come from `/api/server` (or `/proc/PID`
//! with `--server-pid`, for servers that are not dreamstream).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use awc::ws;
use bytes::{Bytes, BytesMut};
use dreamstream_actors::frame::{FrameHeader, unix_ms};
use futures_util::{SinkExt, StreamExt};
use gpu_node::image_io::{self, ResizeQuality};
use serde_json::json;

#[derive(clap::Args, Clone, Debug)]
pub struct LiveArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Viewers per stream.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
    /// Camera frame size WIDTHxHEIGHT.
    #[arg(long, default_value = "320x240")]
    pub size: String,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Photos used as the camera (default: ../shared/testdata/images).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Measure this process's CPU instead of asking the server (e.g. a Node relay).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Stream names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Path templates for servers that are not dreamstream ({name} is replaced).
    #[arg(long, default_value = "/ws/broadcast/{name}")]
    pub broadcast_path: String,
    #[arg(long, default_value = "/ws/watch/{name}")]
    pub watch_path: String,
    /// Password of the benchmark's streamer accounts (registered on first
    /// use; new accounts get the signup bonus; grant more with
    /// `dreamstream admin grant-credits`).
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// Do not log in (servers without accounts, such as the Node relay).
    #[arg(long)]
    pub no_accounts: bool,
    /// The server's metrics token: `/api/server` and `/api/cluster` (server
    /// CPU and memory, per-worker numbers) are for administrators, the token
    /// or `[ops] allow`. Without it those numbers are left out.
    #[arg(long, env = "DREAMSTREAM_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Close and reopen each broadcaster's connection every this many
    /// seconds (0: never), and report the output rate after each reconnect.
    #[arg(long, default_value_t = 0.0)]
    pub reconnect_every: f64,
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .context("size must look like 320x240")?;
    Ok((w.trim().parse()?, h.trim().parse()?))
}

fn camera_frames(args: &LiveArgs) -> anyhow::Result<Vec<Bytes>> {
    let (w, h) = parse_size(&args.size)?;
    let dir = args
        .images
        .clone()
        .unwrap_or_else(|| PathBuf::from("../shared/testdata/images"));
    let mut frames = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the photos in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(img) = image_io::decode(&bytes) else {
            continue;
        };
        let small = image_io::resize(&img, w, h, ResizeQuality::Best);
        frames.push(Bytes::from(image_io::encode_jpeg(&small, 80)?));
    }
    if frames.is_empty() {
        bail!("no JPEG or PNG photos in {}", dir.display());
    }
    Ok(frames)
}

/// When each frame was sent, by its capture time (nanoseconds since start).
#[derive(Default)]
struct SendTimes {
    by_capture: Mutex<std::collections::HashMap<u64, u64>>,
    last_capture: AtomicU64,
}

impl SendTimes {
    /// A capture time for the next frame: the wall clock, made strictly
    /// increasing so that it names one frame.
    fn next_capture(&self) -> u64 {
        let now = unix_ms();
        let prev = self.last_capture.load(Ordering::Relaxed);
        let t = now.max(prev + 1);
        self.last_capture.store(t, Ordering::Relaxed);
        t
    }
    fn set(&self, captured_ms: u64, ns: u64) {
        self.by_capture
            .lock()
            .expect("send times")
            .insert(captured_ms, ns);
    }
    fn get(&self, captured_ms: u64) -> Option<u64> {
        self.by_capture
            .lock()
            .expect("send times")
            .get(&captured_ms)
            .copied()
    }
}

#[derive(Default)]
struct Samples {
    /// (µs since start when received, end-to-end µs, processing µs)
    frames: Vec<(u64, u32, u32)>,
    per_viewer: Vec<u64>,
    /// µs since start of every frame a viewer received (measured or not).
    arrivals: Vec<u64>,
    /// µs since start of each broadcaster reconnect.
    reconnects: Vec<u64>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A GET of an operational endpoint, with the metrics token when given.
fn ops_get(args: &LiveArgs, client: &awc::Client, path: &str) -> awc::ClientRequest {
    let req = client.get(format!("{}{path}", args.url));
    match &args.metrics_token {
        Some(t) => req.insert_header(("Authorization", format!("Bearer {t}"))),
        None => req,
    }
}

async fn server_usage(args: &LiveArgs, client: &awc::Client) -> Option<(f64, u64)> {
    if let Some(pid) = args.server_pid {
        return crate::telemetry::usage_of(&pid.to_string());
    }
    let v: serde_json::Value = ops_get(args, client, "/api/server")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((v["cpu_seconds"].as_f64()?, v["rss_bytes"].as_u64()?))
}

async fn cluster_status(args: &LiveArgs, client: &awc::Client) -> Option<serde_json::Value> {
    if args.server_pid.is_some() {
        return None;
    }
    ops_get(args, client, "/api/cluster")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Per worker over the measured window: (id, node, jobs/s, busy fraction, overhead p50, p99).
fn per_worker(
    before: &serde_json::Value,
    after: &serde_json::Value,
    wall: f64,
) -> Vec<serde_json::Value> {
    let list = |v: &serde_json::Value| v["workers"].as_array().cloned().unwrap_or_default();
    let (b, a) = (list(before), list(after));
    a.iter()
        .map(|w| {
            let prev = b.iter().find(|x| x["id"] == w["id"]);
            let delta = |k: &str| {
                w[k].as_f64().unwrap_or(0.0) - prev.and_then(|p| p[k].as_f64()).unwrap_or(0.0)
            };
            json!({
                "worker": w["id"], "node": w["node"],
                "jobs_per_s": delta("jobs_done") / wall,
                "busy": (delta("busy_ms_total") / 1000.0 / wall).min(1.0),
                "overhead_p50_ms": w["overhead_p50_ms"], "overhead_p99_ms": w["overhead_p99_ms"],
            })
        })
        .collect()
}

async fn stream_counters(
    args: &LiveArgs,
    client: &awc::Client,
    name: &str,
) -> Option<(u64, u64, u64)> {
    // A server without DreamStream's API (the Node relay) has no counters.
    let v: serde_json::Value = client
        .get(format!("{}/api/streams/{name}", args.url))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let dropped = v["dropped_replaced"].as_u64()?
        + v["dropped_late"].as_u64()?
        + v["dropped_failed"].as_u64()?;
    Some((v["frames_in"].as_u64()?, v["frames_out"].as_u64()?, dropped))
}

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    if args.fps <= 0.0 || args.duration <= 0.0 {
        bail!("fps and duration must be positive");
    }
    let frames = Arc::new(camera_frames(&args)?);
    actix_web::rt::System::new().block_on(run_async(args, frames))
}

async fn run_async(args: LiveArgs, frames: Arc<Vec<Bytes>>) -> anyhow::Result<()> {
    let ws_base = args.url.replacen("http", "ws", 1);
    // No per-host connection limit: hundreds of viewers share one host.
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(10))
        .finish();
    let start = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut names = Vec::new();
    let mut tasks = Vec::new();

    for s in 0..args.streams {
        let name = format!("{}{s}", args.prefix);
        names.push(name.clone());
        let times = Arc::new(SendTimes::default());
        let path = args.broadcast_path.replace("{name}", &name);
        let mut key = None;
        if !args.no_accounts {
            // In a header, not `?key=`: URLs end up in proxies' logs.
            key = Some(
                crate::client::streamer_key(&args.url, &name, &args.password)
                    .await
                    .with_context(|| format!("logging in streamer {name}"))?,
            );
        }
        let broadcast_url = format!("{ws_base}{path}");
        let connect_broadcaster = {
            let (client, url, name) = (client.clone(), broadcast_url.clone(), name.clone());
            move || {
                let (client, url, name, key) =
                    (client.clone(), url.clone(), name.clone(), key.clone());
                async move {
                    let mut request = client.ws(url);
                    if let Some(key) = key {
                        request = request.bearer_auth(key);
                    }
                    request
                        .max_frame_size(64 << 20)
                        .connect()
                        .await
                        .map(|(_, conn)| conn)
                        .map_err(|e| anyhow::anyhow!("broadcaster {name}: {e}"))
                }
            }
        };
        let mut conn = connect_broadcaster().await?;
        // Viewers first, so the first frames are seen.
        for _ in 0..args.viewers {
            let path = args.watch_path.replace("{name}", &name);
            let (_, mut viewer) = client
                .ws(format!("{ws_base}{path}"))
                .max_frame_size(64 << 20)
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("viewer of {name}: {e}"))?;
            let (times, samples, measuring, stop) = (
                times.clone(),
                samples.clone(),
                measuring.clone(),
                stop.clone(),
            );
            tasks.push(actix_web::rt::spawn(async move {
                let mut got = 0u64;
                let mut local = Vec::new();
                let mut arrivals = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(Ok(frame))) =
                        tokio::time::timeout(Duration::from_millis(200), viewer.next()).await
                    else {
                        continue;
                    };
                    match frame {
                        ws::Frame::Binary(b) => {
                            let now = start.elapsed();
                            arrivals.push(now.as_micros() as u64);
                            if !measuring.load(Ordering::Relaxed) {
                                continue;
                            }
                            got += 1;
                            if let Ok((Some(h), _)) = FrameHeader::split(b)
                                && let Some(sent) = times.get(h.captured_ms)
                            {
                                let e2e = (now.as_nanos() as u64).saturating_sub(sent) / 1000;
                                local.push((now.as_micros() as u64, e2e as u32, h.process_us));
                            }
                        }
                        ws::Frame::Ping(p) => {
                            let _ = viewer.send(ws::Message::Pong(p)).await;
                        }
                        ws::Frame::Close(_) => break,
                        _ => {}
                    }
                }
                let mut s = samples.lock().expect("samples");
                s.frames.extend(local);
                s.per_viewer.push(got);
                s.arrivals.extend(arrivals);
            }));
        }
        // The broadcaster: frames at a steady rate, acks and events drained;
        // with --reconnect-every, a new connection now and then.
        let (frames, stop, samples) = (frames.clone(), stop.clone(), samples.clone());
        let interval = Duration::from_secs_f64(1.0 / args.fps);
        let reconnect_every =
            (args.reconnect_every > 0.0).then(|| Duration::from_secs_f64(args.reconnect_every));
        tasks.push(actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sent = 0u64;
            'connection: while !stop.load(Ordering::Relaxed) {
                // Every connection numbers its frames from 1, as clients do.
                let mut seq = 0u64;
                let opened = Instant::now();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'connection;
                    }
                    if reconnect_every.is_some_and(|every| opened.elapsed() >= every) {
                        break;
                    }
                    tokio::select! {
                        _ = tick.tick() => {
                            seq += 1;
                            sent += 1;
                            let jpeg = &frames[sent as usize % frames.len()];
                            let mut msg = BytesMut::with_capacity(32 + jpeg.len());
                            let captured_ms = times.next_capture();
                            FrameHeader { seq, captured_ms, process_us: 0, latency_us: 0 }.write(&mut msg);
                            msg.extend_from_slice(jpeg);
                            times.set(captured_ms, start.elapsed().as_nanos() as u64);
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
                if reconnect_every.is_none() {
                    break;
                }
                drop(conn);
                conn = loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'connection;
                    }
                    match connect_broadcaster().await {
                        Ok(c) => break c,
                        Err(e) => {
                            eprintln!("{e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                samples
                    .lock()
                    .expect("samples")
                    .reconnects
                    .push(start.elapsed().as_micros() as u64);
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let mut before = Vec::new();
    for n in &names {
        before.push(stream_counters(&args, &client, n).await);
    }
    let usage0 = server_usage(&args, &client).await;
    let cluster0 = cluster_status(&args, &client).await;
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let usage1 = server_usage(&args, &client).await;
    let cluster1 = cluster_status(&args, &client).await;
    let mut after = Vec::new();
    for n in &names {
        after.push(stream_counters(&args, &client, n).await);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    for n in &names {
        if args.server_pid.is_none() {
            let _ = client
                .post(format!("{}/api/streams/{n}/stop", args.url))
                .send()
                .await;
        }
    }

    let s = samples.lock().expect("samples");
    let mut e2e: Vec<u32> = s.frames.iter().map(|f| f.1).collect();
    let mut process: Vec<u32> = s.frames.iter().map(|f| f.2).collect();
    let mut overhead: Vec<u32> = s.frames.iter().map(|f| f.1.saturating_sub(f.2)).collect();
    e2e.sort_unstable();
    process.sort_unstable();
    overhead.sort_unstable();
    // Output age at the start and the end of the run (lag must not grow).
    let mut by_time = s.frames.clone();
    by_time.sort_by_key(|f| f.0);
    let tenth = (by_time.len() / 10).max(1);
    let mean_ms = |xs: &[(u64, u32, u32)]| {
        if xs.is_empty() {
            0.0
        } else {
            xs.iter().map(|f| f.1 as f64).sum::<f64>() / xs.len() as f64 / 1000.0
        }
    };
    let age_start = mean_ms(&by_time[..tenth.min(by_time.len())]);
    let age_end = mean_ms(&by_time[by_time.len().saturating_sub(tenth)..]);
    // The same with each frame's processing time taken out: the part of the
    // age the platform adds (queueing for the worker included).
    let over_ms = |xs: &[(u64, u32, u32)]| {
        if xs.is_empty() {
            0.0
        } else {
            xs.iter()
                .map(|f| f.1.saturating_sub(f.2) as f64)
                .sum::<f64>()
                / xs.len() as f64
                / 1000.0
        }
    };
    let over_start = over_ms(&by_time[..tenth.min(by_time.len())]);
    let over_end = over_ms(&by_time[by_time.len().saturating_sub(tenth)..]);
    let delivered: u64 = s.per_viewer.iter().sum();
    let mut rates: Vec<f64> = s.per_viewer.iter().map(|&n| n as f64 / wall).collect();
    rates.sort_by(f64::total_cmp);
    // Server counters over the measured window, if the server reports them.
    let counters = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let (b, a) = (b.as_ref()?, a.as_ref()?);
            Some((a.0 - b.0, a.1 - b.1, a.2 - b.2))
        })
        .try_fold((0, 0, 0), |acc, c| {
            c.map(|c| (acc.0 + c.0, acc.1 + c.1, acc.2 + c.2))
        });
    let (cpu, rss) = match (usage0, usage1) {
        (Some(u0), Some(u1)) => ((u1.0 - u0.0) / wall, u1.1),
        _ => (f64::NAN, 0),
    };
    let cpu_per_frame_us = if delivered > 0 {
        cpu * wall / delivered as f64 * 1e6
    } else {
        f64::NAN
    };

    println!(
        "bench live: {} stream(s) x {} viewer(s), {} fps, {}, {:.0} s measured",
        args.streams, args.viewers, args.fps, args.size, wall
    );
    match counters {
        Some((fin, fout, fdrop)) => println!(
            "frames: in {fin}, out {fout}, dropped {fdrop} (server); delivered to viewers {delivered}"
        ),
        None => println!("frames: server counters n/a; delivered to viewers {delivered}"),
    }
    println!(
        "end-to-end latency: p50 {:.1} ms, p99 {:.1} ms | processing p50 {:.1} ms | overhead p50 {:.1} ms, p99 {:.1} ms",
        percentile(&e2e, 0.5),
        percentile(&e2e, 0.99),
        percentile(&process, 0.5),
        percentile(&overhead, 0.5),
        percentile(&overhead, 0.99)
    );
    println!(
        "output age (first/last tenth of the run): {age_start:.1} ms / {age_end:.1} ms; without processing: {over_start:.1} ms / {over_end:.1} ms"
    );
    println!(
        "per-viewer delivery: min {:.2}, median {:.2}, max {:.2} frames/s",
        rates.first().copied().unwrap_or(0.0),
        rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        rates.last().copied().unwrap_or(0.0)
    );
    println!(
        "server: CPU {:.2} cores ({cpu_per_frame_us:.1} us per delivered frame), RSS {} MB",
        cpu,
        rss / (1 << 20)
    );
    // Output rate (per viewer) in the 5 s after each reconnect.
    let after_reconnect: Vec<f64> = {
        let viewers = (args.viewers * args.streams).max(1) as f64;
        let horizon = start.elapsed().as_micros() as u64;
        s.reconnects
            .iter()
            .filter(|&&r| r + 5_000_000 <= horizon)
            .map(|&r| {
                let n = s
                    .arrivals
                    .iter()
                    .filter(|&&t| t >= r && t < r + 5_000_000)
                    .count();
                n as f64 / viewers / 5.0
            })
            .collect()
    };
    if !s.reconnects.is_empty() {
        let mut sorted = after_reconnect.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "reconnects: {}; output fps in the 5 s after each: {} (median {:.1}, min {:.1})",
            s.reconnects.len(),
            after_reconnect
                .iter()
                .map(|f| format!("{f:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
            sorted.first().copied().unwrap_or(0.0)
        );
    }
    let workers = match (&cluster0, &cluster1) {
        (Some(b), Some(a)) => per_worker(b, a, wall),
        _ => Vec::new(),
    };
    for w in &workers {
        println!(
            "worker {} (node {}): {:.2} jobs/s, busy {:.1}%, hop overhead p50 {:.2} ms, p99 {:.2} ms",
            w["worker"].as_str().unwrap_or("?"),
            w["node"].as_str().unwrap_or("?"),
            w["jobs_per_s"].as_f64().unwrap_or(0.0),
            w["busy"].as_f64().unwrap_or(0.0) * 100.0,
            w["overhead_p50_ms"].as_f64().unwrap_or(0.0),
            w["overhead_p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{}",
        json!({
            "streams": args.streams, "viewers": args.viewers, "fps": args.fps, "size": args.size,
            "seconds": wall,
            "frames_in": counters.map(|c| c.0), "frames_out": counters.map(|c| c.1),
            "frames_dropped": counters.map(|c| c.2), "delivered": delivered,
            "e2e_ms": {"p50": percentile(&e2e, 0.5), "p99": percentile(&e2e, 0.99)},
            "processing_ms": {"p50": percentile(&process, 0.5)},
            "overhead_ms": {"p50": percentile(&overhead, 0.5), "p99": percentile(&overhead, 0.99)},
            "age_ms": {"start": age_start, "end": age_end},
            "age_minus_processing_ms": {"start": over_start, "end": over_end},
            "viewer_fps": {"min": rates.first(), "median": rates.get(rates.len() / 2), "max": rates.last()},
            "server_cpu_cores": cpu, "server_cpu_us_per_delivered_frame": cpu_per_frame_us,
            "server_rss_mb": rss / (1 << 20),
            "workers": workers,
            "reconnects": s.reconnects.len(),
            "fps_after_reconnect": after_reconnect,
        })
    );
    Ok(())
}
