//! Where pushed frames come from: a video file (decoded by an `ffmpeg` child
//! process), a folder of JPEG/PNG images (decoded here), or a V4L2 camera
//! (read by `ffmpeg -f v4l2`). Every source yields RGB frames of the
//! requested size, resampled to the target frame rate by ffmpeg (files and
//! cameras) or one image per frame (folders).
//!
//! A source runs on a thread of its own and hands frames over a small
//! channel. A file or a folder waits for the pusher (no frame of it is
//! skipped, so playback pauses while the pusher reconnects); a camera never
//! waits: when the pusher is behind, its older frames are dropped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::image::{self, Rgb};

/// What to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A video file ffmpeg can read.
    File(PathBuf),
    /// A folder of JPEG and PNG images, in name order.
    Images(PathBuf),
    /// A V4L2 device (`/dev/video0`).
    Camera(PathBuf),
}

impl Input {
    /// `/dev/video*` (or `v4l2:DEVICE`) is a camera, a folder is images,
    /// anything else a video file.
    pub fn parse(s: &str) -> Input {
        if let Some(device) = s.strip_prefix("v4l2:") {
            return Input::Camera(device.into());
        }
        let path = PathBuf::from(s);
        if s.starts_with("/dev/video") {
            Input::Camera(path)
        } else if path.is_dir() {
            Input::Images(path)
        } else {
            Input::File(path)
        }
    }

    /// Whether frames may be dropped when the pusher is behind.
    pub fn is_live(&self) -> bool {
        matches!(self, Input::Camera(_))
    }
}

/// How a source makes frames.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Start again at the end (files and folders).
    pub repeat: bool,
    /// The ffmpeg executable.
    pub ffmpeg: PathBuf,
}

/// A frame, or why the source stopped early.
pub type Item = anyhow::Result<Rgb>;

/// Starts `input` on a thread; `None` from the receiver means the source
/// ended. Dropping the receiver stops the thread (and its ffmpeg).
pub fn start(input: &Input, options: &SourceOptions) -> anyhow::Result<mpsc::Receiver<Item>> {
    let (tx, rx) = mpsc::channel(2);
    match input {
        Input::Images(dir) => {
            let files = image_files(dir)?;
            let options = options.clone();
            std::thread::Builder::new()
                .name("push-images".into())
                .spawn(move || images(files, options, tx))
                .context("starting the image reader")?;
        }
        Input::File(_) | Input::Camera(_) => {
            let mut child = ffmpeg_command(input, options)
                .spawn()
                .with_context(|| format!("starting {}", options.ffmpeg.display()))?;
            let stdout = child.stdout.take().context("ffmpeg's output")?;
            let (w, h, live) = (options.width, options.height, input.is_live());
            std::thread::Builder::new()
                .name("push-ffmpeg".into())
                .spawn(move || decoded(child, stdout, w, h, live, tx))
                .context("starting the ffmpeg reader")?;
        }
    }
    Ok(rx)
}

/// The JPEG and PNG files of `dir`, sorted by name.
fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .jpg, .jpeg or .png files in {}", dir.display());
    }
    Ok(files)
}

fn images(files: Vec<PathBuf>, options: SourceOptions, tx: mpsc::Sender<Item>) {
    loop {
        let mut any = false;
        for path in &files {
            let frame = std::fs::read(path)
                .with_context(|| format!("reading {}", path.display()))
                .and_then(|bytes| image::decode(&bytes))
                .and_then(|img| image::fill(&img, options.width, options.height))
                .with_context(|| format!("{}", path.display()));
            match frame {
                Ok(frame) => {
                    any = true;
                    if tx.blocking_send(Ok(frame)).is_err() {
                        return;
                    }
                }
                // A bad file among good ones is skipped, and said.
                Err(e) => eprintln!("skipping {e:#}"),
            }
        }
        if !any {
            let _ = tx.blocking_send(Err(anyhow::anyhow!("no image in the folder could be read")));
            return;
        }
        if !options.repeat {
            return;
        }
    }
}

/// ffmpeg decoding `input` to raw RGB frames of the target size and rate on
/// its standard output.
pub fn ffmpeg_command(input: &Input, o: &SourceOptions) -> Command {
    let mut cmd = Command::new(&o.ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    match input {
        Input::Camera(device) => {
            cmd.args(["-f", "v4l2"]).arg("-i").arg(device);
        }
        Input::File(path) | Input::Images(path) => {
            if o.repeat {
                cmd.args(["-stream_loop", "-1"]);
            }
            cmd.arg("-i").arg(path);
        }
    }
    // Cover the frame and crop the middle; the target rate; raw RGB out.
    let (w, h) = (o.width, o.height);
    cmd.args(["-an", "-sn", "-vf"])
        .arg(format!(
            "fps={},scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}",
            o.fps
        ))
        .args(["-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

fn decoded(
    mut child: Child,
    mut stdout: std::process::ChildStdout,
    width: u32,
    height: u32,
    live: bool,
    tx: mpsc::Sender<Item>,
) {
    let size = width as usize * height as usize * 3;
    let mut frames = 0u64;
    loop {
        let mut data = vec![0u8; size];
        if stdout.read_exact(&mut data).is_err() {
            break;
        }
        frames += 1;
        let frame = Ok(Rgb {
            width,
            height,
            data,
        });
        let sent = if live {
            // A camera never waits for the pusher.
            !matches!(
                tx.try_send(frame),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        } else {
            tx.blocking_send(frame).is_ok()
        };
        if !sent {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
    }
    match child.wait() {
        Ok(status) if status.success() && frames > 0 => {}
        Ok(status) => {
            let _ = tx.blocking_send(Err(anyhow::anyhow!(
                "ffmpeg ended ({status}) after {frames} frames (its messages are above)"
            )));
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(anyhow::anyhow!("waiting for ffmpeg: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_told_apart() {
        assert_eq!(
            Input::parse("/dev/video0"),
            Input::Camera("/dev/video0".into())
        );
        assert_eq!(
            Input::parse("v4l2:/dev/v4l/by-id/cam"),
            Input::Camera("/dev/v4l/by-id/cam".into())
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            Input::parse(dir.to_str().unwrap()),
            Input::Images(dir.clone())
        );
        assert_eq!(Input::parse("clip.mp4"), Input::File("clip.mp4".into()));
        assert!(Input::parse("/dev/video2").is_live());
        assert!(!Input::parse("clip.mp4").is_live());
    }

    #[test]
    fn ffmpeg_is_asked_for_raw_rgb_at_the_frame_size_and_rate() {
        let o = SourceOptions {
            width: 320,
            height: 240,
            fps: 10.0,
            repeat: true,
            ffmpeg: "ffmpeg".into(),
        };
        let cmd = ffmpeg_command(&Input::Camera("/dev/video0".into()), &o);
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-f v4l2 -i /dev/video0"), "{joined}");
        assert!(joined.contains("fps=10,scale=320:240"), "{joined}");
        assert!(joined.ends_with("-pix_fmt rgb24 -f rawvideo -"), "{joined}");
        // A camera is never looped; a file is when asked.
        assert!(!joined.contains("-stream_loop"));
        let cmd = ffmpeg_command(&Input::File("a.mp4".into()), &o);
        let joined: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert!(joined.join(" ").contains("-stream_loop -1 -i a.mp4"));
    }
}
