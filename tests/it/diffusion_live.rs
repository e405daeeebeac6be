//! Issue 18's end-to-end test: a control node and a real `gpu-node serve`
//! process with `processor = "diffusion"` whose `[[gpu.models]]` are the tiny
//! reference models (`sd21_tiny`, `sd15_tiny`) on CPU. A live stream set to
//! diffusion through the style API gets diffusion output; a prompt change applies
//! on the next frames without loading weights; a model change never blanks the
//! viewer.
//!
//! What the test reads: the worker's `jobs_done`/`jobs_failed` and advertised
//! `models` in `/api/cluster` (the worker runs only the diffusion processor, so
//! `jobs_done` counts its calls), the GPU node's log line "diffusion weights
//! loaded" (one per weight load), and the frames a real viewer receives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dreamstream_actors::frame::FrameHeader;
use gpu_node::image_io::{self, ResizeQuality};

use crate::cluster::{
    COOKIE, Control, cluster, jobs_done, start_control, start_node, wait_joined, worker,
};
use crate::helpers::*;

const NODE: &str = "diffuser";
const LOAD_LINE: &str = "diffusion weights loaded";

/// One frame a viewer received.
struct Seen {
    at: Instant,
    jpeg: Bytes,
}

/// A broadcaster sending one still picture at ~10 fps and a viewer recording
/// every frame it gets.
struct Still {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    key: String,
    input: Bytes,
}

impl Still {
    async fn start(control: &Control, name: &str) -> Still {
        use std::sync::atomic::{AtomicBool, Ordering};
        let key = dreamstream::client::streamer_key(&control.http, name, "cluster-password")
            .await
            .expect("a streamer account and key");
        let mut b = connect(&format!("{}/ws/broadcast/{name}?key={key}", control.ws)).await;
        next_json(&mut b, "hello", Duration::from_secs(10))
            .await
            .expect("hello");
        let mut v = connect(&format!("{}/ws/watch/{name}", control.ws)).await;
        next_json(&mut v, "hello", Duration::from_secs(10))
            .await
            .expect("hello");
        // A still camera: the same small frame every time.
        let photo = image_io::decode(&photos()[0]).expect("a photo");
        let small = image_io::resize(&photo, 96, 72, ResizeQuality::Best);
        let input = Bytes::from(image_io::encode_jpeg(&small, 90).expect("JPEG"));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, frame) = (stop.clone(), input.clone());
        actix_web::rt::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                send_binary(&mut b, frame.clone()).await;
                while let Some(_m) = next(&mut b, Duration::from_millis(1)).await {}
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let (s, list) = (stop.clone(), seen.clone());
        actix_web::rt::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(In::Binary(msg)) = next(&mut v, Duration::from_millis(200)).await {
                    // An empty or undecodable message is kept as an empty JPEG: the test fails on it.
                    let jpeg = FrameHeader::split(msg)
                        .map(|(_, jpeg)| jpeg)
                        .unwrap_or_default();
                    if let Ok(mut l) = list.lock() {
                        l.push(Seen {
                            at: Instant::now(),
                            jpeg,
                        });
                    }
                }
            }
        });
        Still {
            seen,
            stop,
            key,
            input,
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Frames received from index `from` on.
    fn since(&self, from: usize) -> Vec<(Instant, Bytes)> {
        self.seen
            .lock()
            .map(|l| {
                l.iter()
                    .skip(from)
                    .map(|s| (s.at, s.jpeg.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `PUT /api/streams/{name}/style` with the stream key; returns (status, body).
    async fn style(
        &self,
        control: &Control,
        name: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut resp = awc::Client::new()
            .put(format!("{}/api/streams/{name}/style", control.http))
            .insert_header(("Authorization", format!("Bearer {}", self.key)))
            .send_json(&body)
            .await
            .expect("style request");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or_default();
        (status, body)
    }
}

impl Drop for Still {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Like `wait_for`, but a timeout shows the cluster, the stream and both logs.
async fn wait_or_dump(
    what: &str,
    limit: Duration,
    control: &Control,
    node: &crate::cluster::Proc,
    mut check: impl AsyncFnMut() -> bool,
) {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            let tail = |t: String| t.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "timed out waiting for {what}\ncluster: {}\nnode log (last lines first):\n{}\ncontrol log (last lines first):\n{}",
                cluster(control).await,
                tail(node.log_text()),
                tail(control.proc.log_text()),
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn loads(node: &crate::cluster::Proc) -> usize {
    node.log_text().matches(LOAD_LINE).count()
}

fn failed(status: &serde_json::Value) -> u64 {
    worker(status, NODE)
        .and_then(|w| w["jobs_failed"].as_u64())
        .unwrap_or(0)
}

/// The node's config: two tiny models, the default first.
fn node_config(control: &Control) -> std::path::PathBuf {
    let models = shared_dir().join("testdata/diffusion-reference/models");
    let path = control.dir.path().join("diffusion-node.toml");
    let toml = format!(
        "[gpu_node]\nprocessor = \"diffusion\"\n\n\
         [[gpu.models]]\nid = \"sd21\"\nfamily = \"sd-turbo\"\npath = \"{}\"\n\n\
         [[gpu.models]]\nid = \"sd15\"\nfamily = \"sd15\"\npath = \"{}\"\n",
        models.join("sd21_tiny").display(),
        models.join("sd15_tiny").display(),
    );
    std::fs::write(&path, toml).expect("node config");
    path
}

#[actix_web::test]
async fn a_live_stream_gets_diffusion_and_prompt_and_model_changes_keep_it_flowing() {
    let control = start_control("127.0.0.1", &[]);
    let target = format!("127.0.0.1:{}", control.cluster_port);
    let config = node_config(&control);
    let node = start_node(
        &control,
        NODE,
        &target,
        COOKIE,
        &[("DREAMSTREAM_CONFIG", config.display().to_string())],
        None,
    );
    wait_joined(&control, NODE).await;
    let status = cluster(&control).await;
    let w = worker(&status, NODE).expect("the worker");
    assert_eq!(w["processor"], "diffusion", "{w}");
    assert_eq!(w["models"], serde_json::json!(["sd21", "sd15"]), "{w}");
    assert_eq!(w["prompts"], true, "{w}");
    // What the studio's prompt panel reads.
    let offer: serde_json::Value = awc::Client::new()
        .get(format!("{}/api/diffusion", control.http))
        .send()
        .await
        .expect("/api/diffusion")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        offer,
        serde_json::json!({"diffusion": true, "models": ["sd15", "sd21"]})
    );
    // Both models were read once at start, before the node joined.
    assert_eq!(loads(&node), 2, "{}", node.log_text());

    let name = "dreamer";
    let live = Still::start(&control, name).await;

    // Bad diffusion input is a clear 400 and changes nothing.
    for (body, says) in [
        (
            serde_json::json!({"processor": "diffusion"}),
            "needs a prompt",
        ),
        (
            serde_json::json!({"processor": "dali", "prompt": "x"}),
            "unknown processor",
        ),
        (
            serde_json::json!({"processor": "diffusion", "prompt": "x", "steps": 0}),
            "steps must be between 1 and 50",
        ),
        (
            serde_json::json!({"processor": "diffusion", "prompt": "x", "model": "../etc"}),
            "model must be a model id",
        ),
    ] {
        let (code, resp) = live.style(&control, name, body.clone()).await;
        assert_eq!(code, 400, "{body} -> {resp}");
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body} -> {msg}");
    }

    // 1. Diffusion with a prompt: the diffusion worker does the work.
    let (code, resp) = live
        .style(
            &control,
            name,
            serde_json::json!({
                "processor": "diffusion", "prompt": "a watercolor fox", "model": "sd21",
                "steps": 2, "strength": 0.5, "seed": 7, "max_side": 64,
            }),
        )
        .await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["settings"]["processor"], "diffusion", "{resp}");
    let jobs_before = jobs_done(&cluster(&control).await, NODE);
    let from = live.count();
    wait_or_dump(
        "five diffusion frames at the viewer",
        Duration::from_secs(60),
        &control,
        &node,
        async || live.count() >= from + 5 && jobs_done(&cluster(&control).await, NODE) >= 5,
    )
    .await;
    let status = cluster(&control).await;
    assert!(jobs_done(&status, NODE) > jobs_before, "{status}");
    assert_eq!(failed(&status), 0, "{status}");
    // The processed frame is the stream's 96x72 fitted into max_side 64 (64x48) and
    // not the input.
    let a_frames: Vec<Bytes> = live.since(from + 2).into_iter().map(|(_, j)| j).collect();
    let a = a_frames.last().expect("a frame").clone();
    let img = image_io::decode(&a).expect("the viewer's frame is a JPEG");
    assert_eq!((img.width, img.height), (64, 48));
    let from_input = image_distance(&a, &live.input);
    assert!(
        from_input > 5.0,
        "diffusion changed the picture ({from_input})"
    );
    // Still camera, fixed noise: a still picture.
    for f in &a_frames {
        let d = image_distance(f, &a);
        assert!(d < 1.0, "a still camera gives a still picture ({d})");
    }

    // 2. A prompt change applies on the next frames with no weight load.
    let from = live.count();
    let (code, resp) = live
        .style(
            &control,
            name,
            serde_json::json!({"prompt": "a neon city at night", "negative_prompt": "blurry"}),
        )
        .await;
    assert_eq!(code, 200, "{resp}");
    wait_or_dump(
        "a frame with the new prompt",
        Duration::from_secs(30),
        &control,
        &node,
        async || {
            live.since(from)
                .iter()
                .any(|(_, f)| image_distance(f, &a) >= 1.0)
        },
    )
    .await;
    let after = live.since(from);
    let first_new = after
        .iter()
        .position(|(_, f)| image_distance(f, &a) >= 1.0)
        .unwrap_or(usize::MAX);
    // Frames already in flight when the change landed (capacity 1, one queued) may
    // still show the old prompt; the one after them has the new one.
    assert!(
        first_new <= 2,
        "the prompt applied on frame {first_new} after the change"
    );
    let b_prompt = after[first_new].1.clone();
    assert_eq!(loads(&node), 2, "a prompt change loads no weights");

    // 3. A model change: the viewer keeps getting frames, none empty.
    let from = live.count();
    let changed = Instant::now();
    let (code, resp) = live
        .style(&control, name, serde_json::json!({"model": "sd15"}))
        .await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["settings"]["diffusion"]["model"], "sd15", "{resp}");
    wait_or_dump(
        "ten frames after the model change",
        Duration::from_secs(60),
        &control,
        &node,
        async || live.count() >= from + 10,
    )
    .await;
    let frames = live.since(from);
    let mut last = changed;
    for (at, jpeg) in &frames {
        assert!(
            !jpeg.is_empty() && image_io::decode(jpeg).is_ok(),
            "a viewer got an empty or broken frame after the model change"
        );
        let gap = at.duration_since(last);
        assert!(
            gap < Duration::from_secs(3),
            "the viewer waited {gap:?} for a frame"
        );
        last = *at;
    }
    let b = &frames.last().expect("a frame").1;
    assert!(
        image_distance(b, &b_prompt) >= 1.0,
        "the other model draws another picture"
    );
    let status = cluster(&control).await;
    assert_eq!(failed(&status), 0, "{status}");
    assert_eq!(loads(&node), 2, "both models were loaded at start");
    drop(live);
}
