//! `models pull` (hf-hub) against a local stub that serves the tiny reference
//! models in the hub's URL layout (`/{repo}/resolve/{revision}/{file}`, with the
//! headers hf-hub reads: ETag, X-Repo-Commit, Content-Range).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device};
use gpu_node::diffusion::pull::{PullRequest, pull};
use gpu_node::diffusion::{DiffusionError, DiffusionModel, Family};

use crate::testdata;

/// Serves `models/<name>` of the reference as repo `stub/<name>` at revision `main`.
/// Returns the endpoint and the number of requests served.
fn stub_hub() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let root: PathBuf = testdata("diffusion-reference/models");
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(r) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap_or(("0", ""));
                    range_start = a.parse().unwrap_or(0);
                    range_end = b.parse().ok();
                }
            }
            // /stub/<model>/resolve/main/<file>
            let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
            let file = match parts.as_slice() {
                ["stub", model, "resolve", "main", rel] => Some(root.join(model).join(rel)),
                _ => None,
            };
            let response = match file.and_then(|f| std::fs::read(f).ok()) {
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                Some(bytes) => {
                    let end = range_end.unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
                    let body = &bytes[range_start.min(bytes.len())..=end];
                    let etag = format!("{:x}", bytes.len() * 31 + path.len());
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nETag: \"{etag}\"\r\nX-Repo-Commit: 0123456789abcdef\r\n\
                         Content-Range: bytes {range_start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len(),
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
            };
            let _ = conn.write_all(&response);
        }
    });
    (endpoint, served)
}

#[test]
fn pulls_a_model_from_a_hub_layout_server_and_it_loads() {
    let (endpoint, served) = stub_hub();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("sd-turbo");
    let req = PullRequest {
        repo: "stub/sd21_tiny".into(),
        revision: "main".into(),
        family: Family::SdTurbo,
        to: to.clone(),
        endpoint: Some(endpoint.clone()),
        token: None,
    };
    let files = pull(&req).expect("pulls");
    assert!(
        files.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"tokenizer/tokenizer_config.json".to_string()),
        "optional file: {files:?}"
    );
    let src = testdata("diffusion-reference/models/sd21_tiny");
    for f in &files {
        assert_eq!(
            std::fs::read(to.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    DiffusionModel::load(&to, Family::SdTurbo, None, &Device::Cpu, DType::F32)
        .expect("the pulled folder loads");
    assert!(served.load(Ordering::SeqCst) >= files.len());

    // A second pull of the same revision is served from hf-hub's cache.
    let before = served.load(Ordering::SeqCst);
    pull(&req).expect("pulls again");
    assert_eq!(
        served.load(Ordering::SeqCst),
        before,
        "no request for cached files"
    );

    // An SDXL family on an SD repository: the missing files are named.
    let bad = PullRequest {
        family: Family::SdxlTurbo,
        to: dir.path().join("wrong"),
        ..req
    };
    match pull(&bad) {
        Err(DiffusionError::Pull(msg)) => {
            assert!(msg.contains("text_encoder_2/model.safetensors"), "{msg}");
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
}
