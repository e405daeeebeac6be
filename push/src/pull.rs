//! `pull`: a stream's restyled output, saved as numbered JPEGs in a folder
//! or as an MP4 (an `ffmpeg` child process encodes it). It watches the
//! stream's public WebSocket (`/ws/watch/{name}`, DSF1 frames), waits while
//! the stream is offline, and reconnects with backoff when the server goes
//! away. The last line on stdout is a JSON summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use awc::ws;
use dreamstream_actors::frame::FrameHeader;
use futures_util::{SinkExt, StreamExt};

use crate::net::{self, Backoff, Refusal};

#[derive(clap::Args, Clone, Debug)]
pub struct PullArgs {
    /// The DreamStream server.
    #[arg(
        long,
        env = "DREAMSTREAM_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The stream (its owner's username).
    #[arg(long, env = "DREAMSTREAM_STREAM_NAME")]
    pub stream: String,
    /// A folder for JPEGs (frame-000001.jpg, …), or a file ending in .mp4,
    /// .mkv or .mov (encoded by ffmpeg).
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Frame rate of a video file.
    #[arg(long, default_value_t = 15.0)]
    pub fps: f64,
    /// The ffmpeg that encodes a video file.
    #[arg(long, env = "DREAMSTREAM_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
}

/// Where frames go.
enum Sink {
    Folder { dir: PathBuf },
    Video { child: Child, path: PathBuf },
}

fn is_video(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "mp4" | "mkv" | "mov"))
}

/// ffmpeg reading JPEGs on stdin (timed by their arrival) and writing an
/// H.264 video at a constant `fps`.
pub fn ffmpeg_encoder(ffmpeg: &Path, out: &Path, fps: f64) -> Command {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-use_wallclock_as_timestamps", "1"])
        .args(["-f", "image2pipe", "-c:v", "mjpeg", "-i", "-"])
        .args(["-r", &format!("{fps}")])
        .args(["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-movflags", "+faststart"])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

impl Sink {
    fn open(args: &PullArgs) -> anyhow::Result<Sink> {
        if is_video(&args.out) {
            let child = ffmpeg_encoder(&args.ffmpeg, &args.out, args.fps)
                .spawn()
                .with_context(|| format!("starting {}", args.ffmpeg.display()))?;
            Ok(Sink::Video {
                child,
                path: args.out.clone(),
            })
        } else {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("making {}", args.out.display()))?;
            Ok(Sink::Folder {
                dir: args.out.clone(),
            })
        }
    }

    fn write(&mut self, n: u64, jpeg: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Folder { dir } => {
                let path = dir.join(format!("frame-{n:06}.jpg"));
                std::fs::write(&path, jpeg).with_context(|| format!("writing {}", path.display()))
            }
            Sink::Video { child, .. } => child
                .stdin
                .as_mut()
                .context("ffmpeg's input")?
                .write_all(jpeg)
                .context("ffmpeg stopped taking frames (its messages are above)"),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Sink::Video { mut child, path } = self {
            drop(child.stdin.take());
            let status = child.wait().context("waiting for ffmpeg")?;
            if !status.success() {
                bail!("ffmpeg failed ({status}) writing {}", path.display());
            }
        }
        Ok(())
    }
}

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullSummary {
    pub frames: u64,
    pub reconnects: u32,
    pub seconds: f64,
}

/// Runs `pull` to its end (`--frames`, `--duration` or a signal); prints
/// the summary.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let summary = actix_rt::System::new().block_on(run(args))?;
    net::progress("");
    println!(
        "{}",
        serde_json::json!({
            "frames": summary.frames,
            "reconnects": summary.reconnects,
            "seconds": (summary.seconds * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

/// The pull itself (inside an actix runtime).
pub async fn run(args: PullArgs) -> anyhow::Result<PullSummary> {
    if !(args.fps > 0.0 && args.fps <= 120.0) {
        bail!("--fps must be above 0 and at most 120");
    }
    net::check_server(&args.server)?;
    let mut sink = Sink::open(&args)?;
    let url = net::ws_url(&args.server, &format!("/ws/watch/{}", args.stream));
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let until_deadline = || async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut stop = net::shutdown_signal();
    let mut summary = PullSummary::default();
    let mut backoff = Backoff::new();
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    let mut latency_ms: Option<f64> = None;
    let mut connected_once = false;
    'connections: loop {
        let done = args.frames.is_some_and(|n| summary.frames >= n);
        if done || *stop.borrow() {
            break;
        }
        let mut conn = match net::connect_ws(&url, None, &args.stream).await {
            Ok(conn) => conn,
            Err(Refusal::Fatal(why)) => bail!("{why}"),
            Err(why) => {
                let wait = backoff.fail();
                eprintln!("{why}; trying again in {:.1} s", wait.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue 'connections,
                    _ = until_deadline() => break 'connections,
                    _ = stop.changed() => break 'connections,
                }
            }
        };
        if connected_once {
            summary.reconnects += 1;
        }
        connected_once = true;
        loop {
            tokio::select! {
                item = conn.next() => match item {
                    Some(Ok(ws::Frame::Binary(bytes))) => {
                        let Ok((header, jpeg)) = FrameHeader::split(bytes) else { continue };
                        summary.frames += 1;
                        backoff.reset();
                        if let Some(h) = header {
                            latency_ms = Some(h.latency_us as f64 / 1000.0);
                        }
                        sink.write(summary.frames, &jpeg)?;
                        if args.frames.is_some_and(|n| summary.frames >= n) {
                            let _ = conn.send(ws::Message::Close(None)).await;
                            break 'connections;
                        }
                    }
                    Some(Ok(ws::Frame::Ping(p))) => {
                        let _ = conn.send(ws::Message::Pong(p)).await;
                    }
                    Some(Ok(ws::Frame::Text(text))) => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
                            && v.get("type").and_then(|t| t.as_str()) == Some("error")
                        {
                            eprintln!("the server: {}", v.get("message").and_then(|m| m.as_str()).unwrap_or("an error"));
                        }
                    }
                    Some(Ok(ws::Frame::Close(_))) | Some(Err(_)) | None => {
                        let wait = backoff.fail();
                        eprintln!("the connection dropped; reconnecting in {:.1} s", wait.as_secs_f64());
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue 'connections,
                            _ = until_deadline() => break 'connections,
                            _ = stop.changed() => break 'connections,
                        }
                    }
                    Some(Ok(_)) => {}
                },
                _ = report.tick() => {
                    let now = Instant::now();
                    let fps = (summary.frames - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                    last = (now, summary.frames);
                    let latency = latency_ms.map_or_else(|| "-".into(), |l| format!("{l:.0} ms"));
                    net::progress(&format!(
                        "pull {}: {} frames | fps {fps:.1} | latency {latency} | reconnects {}",
                        args.stream, summary.frames, summary.reconnects
                    ));
                }
                _ = until_deadline() => {
                    let _ = conn.send(ws::Message::Close(None)).await;
                    break 'connections;
                }
                _ = stop.changed() => {
                    let _ = conn.send(ws::Message::Close(None)).await;
                    break 'connections;
                }
            }
        }
    }
    sink.finish()?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_is_a_video_only_for_video_extensions() {
        assert!(is_video(Path::new("out.mp4")));
        assert!(is_video(Path::new("out.MKV")));
        assert!(!is_video(Path::new("frames")));
        assert!(!is_video(Path::new("frames.d/")));
    }

    #[test]
    fn frames_in_a_folder_are_numbered() {
        let dir = std::env::temp_dir().join(format!("ds-pull-{}", std::process::id()));
        let args = PullArgs {
            server: "http://127.0.0.1:1".into(),
            stream: "a".into(),
            out: dir.clone(),
            frames: None,
            duration: None,
            fps: 15.0,
            ffmpeg: "ffmpeg".into(),
        };
        let mut sink = Sink::open(&args).unwrap();
        sink.write(3, b"jpeg").unwrap();
        sink.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.join("frame-000003.jpg")).unwrap(),
            b"jpeg"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
