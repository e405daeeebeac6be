//! `dreamstream push` and `dreamstream pull` (issue 20.4) as processes
//! against live servers: a 10-second clip made from the test photos is
//! pushed with every frame acknowledged and pulled back restyled (as JPEGs
//! and as an MP4), also over WHIP; a control node killed mid-push comes back
//! and the output resumes; a rotated stream key is refused at once, and at a
//! live push's next reconnect; the Python example in `examples/` runs as is.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dreamstream::accounts::Accounts;

use crate::cluster::{Proc, free_port};
use crate::helpers::*;

/// FFmpeg (imageio-ffmpeg's static build; .ci/run installs it).
fn ffmpeg() -> String {
    std::env::var("DREAMSTREAM_TEST_FFMPEG")
        .expect("DREAMSTREAM_TEST_FFMPEG names an FFmpeg (.ci/run installs it)")
}

/// A 10-second clip at 10 fps (100 frames, 320×240, H.264): the four test
/// photos, 2.5 s each.
fn make_clip(dir: &Path) -> PathBuf {
    let images = shared_dir().join("testdata/images");
    let photos = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"];
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"]);
    for p in photos {
        cmd.args(["-loop", "1", "-framerate", "10", "-t", "2.5", "-i"])
            .arg(images.join(p));
    }
    let mut graph = String::new();
    for (i, label) in ["a", "b", "c", "d"].iter().enumerate() {
        graph.push_str(&format!(
            "[{i}:v]scale=320:240:force_original_aspect_ratio=increase,crop=320:240,setsar=1,format=yuv420p[{label}];"
        ));
    }
    graph.push_str("[a][b][c][d]concat=n=4:v=1:a=0[v]");
    let clip = dir.join("clip.mp4");
    let status = cmd
        .args(["-filter_complex", &graph, "-map", "[v]"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .arg(&clip)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "making the clip");
    clip
}

/// A `dreamstream` child process (push or pull) with its stdout and stderr
/// in files.
struct Client {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Client {
    fn start(dir: &Path, label: &str, args: &[&str]) -> Client {
        let out = dir.join(format!("{label}.out"));
        let err = dir.join(format!("{label}.err"));
        let child = Command::new(bin("dreamstream"))
            .args(args)
            .env("DREAMSTREAM_FFMPEG", ffmpeg())
            .env_remove("DREAMSTREAM_STREAM_KEY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("dreamstream starts");
        Client { child, out, err }
    }

    /// Waits (without blocking the test's runtime, which may serve the
    /// server) for the exit, at most `timeout`.
    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}; its messages:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The JSON summary on the last line of stdout.
    fn summary(&self) -> serde_json::Value {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("no summary ({e}) in {out:?}; stderr:\n{}", self.stderr()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JPEGs in `dir`, in name order.
fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
    files.sort();
    files
}

/// The clip's four pictures (one from the middle of each photo's 2.5 s),
/// as JPEGs: what a frame that was not restyled would look like.
fn clip_pictures(clip: &Path) -> Vec<Vec<u8>> {
    ["1.2", "3.7", "6.2", "8.7"]
        .iter()
        .map(|t| {
            let out = Command::new(ffmpeg())
                .args(["-hide_banner", "-loglevel", "error", "-ss", t, "-i"])
                .arg(clip)
                .args([
                    "-frames:v",
                    "1",
                    "-f",
                    "image2pipe",
                    "-c:v",
                    "mjpeg",
                    "-q:v",
                    "2",
                    "-",
                ])
                .output()
                .expect("ffmpeg runs");
            assert!(
                out.status.success() && !out.stdout.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
        .collect()
}

/// The smallest mean pixel difference between `jpeg` and `pictures`: a
/// restyled frame is far from all of them, a frame passed through (only
/// recompressed) within a few levels of one.
fn distance_to(jpeg: &[u8], pictures: &[Vec<u8>]) -> f64 {
    pictures
        .iter()
        .map(|p| image_distance(jpeg, p))
        .fold(f64::INFINITY, f64::min)
}

/// Frames of a video file, counted by decoding it (to 8×8 grey pictures).
fn video_frames(path: &Path) -> usize {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            "scale=8:8",
            "-pix_fmt",
            "gray",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() / 64
}

#[actix_web::test]
async fn push_of_a_ten_second_clip_is_acknowledged_frame_by_frame_and_pulled_restyled() {
    let app = spawn_app().await;
    let key = app.streamer("pushclip", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = make_clip(dir.path());
    let frames = dir.path().join("frames");
    let video = dir.path().join("out.mp4");
    let server = app.address.as_str();
    let common = ["--server", server, "--stream", "pushclip"];
    let mut pull_jpegs = Client::start(
        dir.path(),
        "pull-jpegs",
        &[
            &["pull"][..],
            &common,
            &[
                "--out",
                frames.to_str().unwrap(),
                "--frames",
                "30",
                "--duration",
                "90",
            ],
        ]
        .concat(),
    );
    let mut pull_video = Client::start(
        dir.path(),
        "pull-video",
        &[
            &["pull"][..],
            &common,
            &[
                "--out",
                video.to_str().unwrap(),
                "--frames",
                "30",
                "--duration",
                "90",
                "--fps",
                "10",
            ],
        ]
        .concat(),
    );
    let mut push = Client::start(
        dir.path(),
        "push",
        &[
            &["push", clip.to_str().unwrap()][..],
            &common,
            &[
                "--key",
                &key,
                "--fps",
                "10",
                "--size",
                "320x240",
                "--transport",
                "websocket",
            ],
        ]
        .concat(),
    );
    let status = push.wait(Duration::from_secs(90)).await;
    assert!(status.success(), "push failed: {}", push.stderr());
    let summary = push.summary();
    assert_eq!(summary["transport"], "websocket", "{summary}");
    assert_eq!(summary["sent"], 100, "every frame of the clip: {summary}");
    assert_eq!(summary["acked"], 100, "every frame acknowledged: {summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert!(summary["output_frames"].as_u64().unwrap() > 0, "{summary}");
    // The progress line says what it sends.
    let progress = push.stderr();
    assert!(
        progress.contains("fps in") && progress.contains("acked"),
        "{progress}"
    );

    for pull in [&mut pull_jpegs, &mut pull_video] {
        let status = pull.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "pull failed: {}", pull.stderr());
        assert_eq!(pull.summary()["frames"], 30, "{}", pull.summary());
    }
    let files = jpegs(&frames);
    assert_eq!(files.len(), 30, "{files:?}");
    assert!(files[0].ends_with("frame-000001.jpg"), "{files:?}");
    let pictures = clip_pictures(&clip);
    for path in [&files[0], &files[14], &files[29]] {
        let jpeg = std::fs::read(path).unwrap();
        let d = distance_to(&jpeg, &pictures);
        assert!(
            d > 12.0,
            "{} is not restyled: mean difference {d:.1}",
            path.display()
        );
    }
    let n = video_frames(&video);
    assert!(n >= 10, "the MP4 holds {n} frames");
}

#[actix_web::test]
async fn push_picks_whip_when_the_server_takes_it_and_the_output_is_restyled() {
    let app = spawn_app().await;
    let key = app.streamer("pushwhip", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = make_clip(dir.path());
    let frames = dir.path().join("frames");
    let server = app.address.as_str();
    let common = ["--server", server, "--stream", "pushwhip"];
    let mut pull = Client::start(
        dir.path(),
        "pull",
        &[
            &["pull"][..],
            &common,
            &[
                "--out",
                frames.to_str().unwrap(),
                "--frames",
                "10",
                "--duration",
                "90",
            ],
        ]
        .concat(),
    );
    let mut push = Client::start(
        dir.path(),
        "push",
        &[
            &["push", clip.to_str().unwrap()][..],
            &common,
            &["--key", &key, "--fps", "10", "--size", "320x240"],
        ]
        .concat(),
    );
    let status = push.wait(Duration::from_secs(90)).await;
    assert!(status.success(), "push failed: {}", push.stderr());
    let summary = push.summary();
    assert_eq!(summary["transport"], "whip", "auto picks WHIP: {summary}");
    assert_eq!(summary["sent"], 100, "{summary}");
    assert!(
        summary["acked"].is_null(),
        "WHIP has no per-frame acks: {summary}"
    );
    let status = pull.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "pull failed: {}", pull.stderr());
    let files = jpegs(&frames);
    assert_eq!(files.len(), 10);
    let jpeg = std::fs::read(&files[9]).unwrap();
    let d = distance_to(&jpeg, &clip_pictures(&clip));
    assert!(d > 12.0, "not restyled: mean difference {d:.1}");
}

#[actix_web::test]
async fn a_rotated_stream_key_is_refused_at_once_on_both_transports() {
    let app = spawn_app().await;
    let old = app.streamer("rotated", 10).await;
    let new = app.streamer("rotated", 10).await;
    assert_ne!(old, new);
    let dir = tempfile::tempdir().unwrap();
    let images = shared_dir().join("testdata/images");
    for transport in ["websocket", "whip", "auto"] {
        let started = Instant::now();
        let mut push = Client::start(
            dir.path(),
            transport,
            &[
                "push",
                images.to_str().unwrap(),
                "--server",
                &app.address,
                "--stream",
                "rotated",
                "--key",
                &old,
                "--loop",
                "--size",
                "320x240",
                "--transport",
                transport,
            ],
        );
        let status = push.wait(Duration::from_secs(20)).await;
        let took = started.elapsed();
        let err = push.stderr();
        assert!(!status.success(), "{transport}: {err}");
        assert!(err.contains("rotated or revoked"), "{transport}: {err}");
        assert!(
            !err.contains("reconnecting"),
            "{transport}: no retry: {err}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{transport}: refused at once, not after {took:?}"
        );
    }
    let user = dreamstream_actors::Username::parse("rotated").unwrap();
    assert!(
        app.state.control.get(&user).await.is_none(),
        "nothing went live"
    );
}

/// A control node process on `dir` (SQLite there), passthrough worker.
fn control_node(dir: &Path, port: u16, run: usize) -> Proc {
    let mut cmd = Command::new(bin("dreamstream"));
    cmd.args(["serve", "--local-workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .env("DREAMSTREAM_WORKER__PROCESSOR", "passthrough")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    let proc = Proc::spawn(cmd, dir.join(format!("control-{run}.log")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "no listener: {}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// Polls `cond` every 100 ms for up to `timeout`.
async fn until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A control node process killed (-9) under a live push over `transport`:
/// the push and the pull reconnect to its successor and the output
/// resumes; then the key is rotated under the live push, the node killed
/// again, and the push's next reconnect is refused, which ends it.
async fn server_killed_mid_push(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let database = dreamstream::db::connect(&settings.db()).await.unwrap();
    let accounts = Accounts::new(database.clone(), 0);
    let user = accounts
        .register("phoenix", "streamer-password")
        .await
        .unwrap();
    accounts.grant(user.id, 5).await.unwrap();
    let key = dreamstream::accounts::keys::rotate(&database, user.id)
        .await
        .unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let mut node = control_node(dir.path(), port, 1);
    let frames = dir.path().join("frames");
    let images = shared_dir().join("testdata/images");
    let _pull = Client::start(
        dir.path(),
        "pull",
        &[
            "pull",
            "--server",
            &server,
            "--stream",
            "phoenix",
            "--out",
            frames.to_str().unwrap(),
            "--duration",
            "300",
        ],
    );
    let mut push = Client::start(
        dir.path(),
        "push",
        &[
            "push",
            images.to_str().unwrap(),
            "--loop",
            "--server",
            &server,
            "--stream",
            "phoenix",
            "--key",
            &key,
            "--fps",
            "10",
            "--size",
            "320x240",
            "--transport",
            transport,
        ],
    );
    until(Duration::from_secs(30), "the first output", || {
        jpegs(&frames).len() >= 10
    })
    .await;

    // kill -9: the push and the pull reconnect to the new process.
    node.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = jpegs(&frames).len();
    let _node2 = control_node(dir.path(), port, 2);
    until(Duration::from_secs(40), "the output resumes", || {
        jpegs(&frames).len() >= before + 10
    })
    .await;
    let err = push.stderr();
    assert!(err.contains("reconnecting in"), "{err}");
    assert!(err.contains("reconnects 1"), "{err}");
    assert!(err.contains(&format!("| {transport}")), "{err}");
    assert!(push.child.try_wait().unwrap().is_none(), "the push goes on");

    // The key is rotated while the push is live: the live connection goes
    // on, and the next reconnect is refused, which ends the push.
    dreamstream::accounts::keys::rotate(&database, user.id)
        .await
        .unwrap();
    drop(_node2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _node3 = control_node(dir.path(), port, 3);
    let status = push.wait(Duration::from_secs(30)).await;
    let err = push.stderr();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rotated or revoked"), "{err}");
    // What the push said, for the test's output (timings of the reconnects).
    eprintln!("the push's messages:\n{err}");
}

#[actix_web::test]
async fn a_server_killed_mid_websocket_push_comes_back_and_a_rotated_key_ends_the_push_at_its_reconnect()
 {
    server_killed_mid_push("websocket").await
}

#[actix_web::test]
async fn a_server_killed_mid_whip_push_comes_back_and_a_rotated_key_ends_the_push_at_its_reconnect()
{
    server_killed_mid_push("whip").await
}

#[actix_web::test]
async fn the_python_example_runs_against_a_live_server() {
    let python = std::env::var("DREAMSTREAM_TEST_PYTHON").expect(
        "DREAMSTREAM_TEST_PYTHON names a Python with examples/requirements.txt (.ci/run makes the venv)",
    );
    let app = spawn_app().await;
    let key = app.streamer("pyclient", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed_client.py");
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, &photos()[1]).unwrap();
    let mut child = Command::new(python)
        .arg(&example)
        .args([&app.address, "pyclient", &key])
        .arg(&photo)
        .current_dir(dir.path())
        .stdout(std::fs::File::create(dir.path().join("py.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("py.err")).unwrap())
        .spawn()
        .expect("python starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the example still runs after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = std::fs::read_to_string(dir.path().join("py.err")).unwrap();
    let out = std::fs::read_to_string(dir.path().join("py.out")).unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("saved 5 restyled frames"), "{out}");
    for n in 1..=5 {
        let saved = std::fs::read(dir.path().join(format!("restyled-{n}.jpg"))).unwrap();
        let d = image_distance(&saved, &photos()[1]);
        assert!(
            d > 12.0,
            "restyled-{n}.jpg is the photo (difference {d:.1})"
        );
    }
}

/// The owner stops the stream (the studio's Stop): the push ends with the
/// reason instead of reconnecting and starting a new stream.
#[actix_web::test]
async fn a_stream_stopped_by_its_owner_ends_the_push_instead_of_restarting_it() {
    let app = spawn_app().await;
    let key = app.streamer("stopme", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let images = shared_dir().join("testdata/images");
    let mut push = Client::start(
        dir.path(),
        "push",
        &[
            "push",
            images.to_str().unwrap(),
            "--loop",
            "--server",
            &app.address,
            "--stream",
            "stopme",
            "--key",
            &key,
            "--fps",
            "10",
            "--size",
            "320x240",
            "--transport",
            "websocket",
        ],
    );
    let user = dreamstream_actors::Username::parse("stopme").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = app.state.control.get(&user).await
            && s.snapshot().frames_in > 5
        {
            break;
        }
        assert!(Instant::now() < deadline, "never live: {}", push.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.state
        .control
        .stop(&user, dreamstream_actors::store::EndReason::Stopped);
    let status = push.wait(Duration::from_secs(15)).await;
    let err = push.stderr();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("the stream ended on the server (stopped)"),
        "{err}"
    );
    assert!(!err.contains("reconnecting"), "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.state.control.get(&user).await.is_none(),
        "not restarted"
    );
}
