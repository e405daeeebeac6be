//! The deployment (`ansible/`, `systemd/`) checked for real by
//! `deploy/check.sh`: lint, the units' exposure scores, the playbook applied
//! twice to a Debian root made by debootstrap, and the rendered services
//! started on the host (/healthz, nginx with the WebSocket upgrade, a GPU node
//! joining over mutual TLS), with the binaries this test run built.
//!
//! Needs root and a few Debian packages, which `.ci/run` installs. Without
//! them the test fails and says so; it never skips.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::helpers::bin;

/// `systemd-analyze security` rates 0 (locked down) to 10; check.sh fails
/// above this too.
const MAX_EXPOSURE: f64 = 2.0;
const UNITS: [&str; 2] = ["dreamstream.service", "dreamstream-gpu-node.service"];

/// A binary of the workspace beside the control node's (as in `cluster.rs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(cmd)).is_ok_and(|m| m.is_file() && m.len() > 0))
    })
}

/// What check.sh needs and this machine lacks.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if effective_uid() != Some(0) {
        missing.push("root (for debootstrap, chroot and mount)".to_string());
    }
    let tools = [
        ("debootstrap", "debootstrap"),
        ("systemd-analyze", "systemd"),
        ("chroot", "coreutils"),
        ("mount", "mount"),
        ("umount", "mount"),
        ("flock", "util-linux"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("python3", "python3-venv"),
    ];
    for (cmd, package) in tools {
        if !on_path(cmd) {
            missing.push(format!("`{cmd}` (Debian package {package})"));
        }
    }
    // check.sh makes a venv: Debian's python3 needs python3-venv (ensurepip).
    if on_path("python3") {
        let venv = Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !venv.is_ok_and(|s| s.success()) {
            missing.push("`python3 -m venv` (Debian package python3-venv)".to_string());
        }
    }
    missing
}

/// The scores check.sh printed, as `exposure <unit>: <score>` lines.
fn exposure_scores(output: &str) -> Vec<(String, f64)> {
    output
        .lines()
        .filter_map(|line| {
            let (unit, score) = line.strip_prefix("exposure ")?.split_once(": ")?;
            Some((unit.to_string(), score.trim().parse().ok()?))
        })
        .collect()
}

fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn deploy_check_applies_the_playbook_runs_the_services_and_exposure_is_at_most_2() {
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "the deploy check (deploy/check.sh) cannot run here; missing: {}.\n\
         Run `.ci/run` as root (it installs what is missing), or as root: \
         apt-get install -y debootstrap systemd curl openssl python3-venv",
        missing.join(", ")
    );

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();

    // stdout and stderr into one pipe, in order, echoed line by line while
    // it runs (visible with --no-capture) and kept for the checks.
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut child = {
        let mut cmd = Command::new("bash");
        cmd.arg(repo.join("deploy/check.sh"))
            .current_dir(repo)
            .env("DREAMSTREAM_BIN", env!("CARGO_BIN_EXE_dreamstream"))
            .env("GPU_NODE_BIN", bin("gpu-node"))
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(writer);
        cmd.spawn().expect("spawn bash deploy/check.sh")
        // `cmd` and its copies of the pipe's write end are dropped here.
    };
    let output = Arc::new(Mutex::new(String::new()));
    let (done_tx, done_rx) = mpsc::channel();
    {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                print!("{text}");
                output.lock().unwrap().push_str(&text);
                line.clear();
            }
            let _ = done_tx.send(());
        });
    }
    let status = child.wait().expect("wait for deploy/check.sh");
    // A daemon check.sh left behind could hold the pipe open: do not wait for
    // it forever.
    let _ = done_rx.recv_timeout(Duration::from_secs(20));
    let output = output.lock().unwrap().clone();
    let elapsed = started.elapsed();

    assert!(
        status.success(),
        "deploy/check.sh failed ({status}) after {:.0} s; the end of its output:\n{}",
        elapsed.as_secs_f64(),
        tail(&output, 80)
    );
    assert!(
        output.contains("deploy check passed"),
        "deploy/check.sh exited 0 without saying it passed:\n{}",
        tail(&output, 40)
    );
    let scores = exposure_scores(&output);
    for unit in UNITS {
        let score = scores
            .iter()
            .find(|(u, _)| u == unit)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no exposure score printed for {unit}: {scores:?}"));
        assert!(
            score <= MAX_EXPOSURE,
            "{unit}: systemd-analyze security exposure {score} > {MAX_EXPOSURE}"
        );
    }
    println!(
        "deploy check passed in {:.0} s; exposure {scores:?}",
        elapsed.as_secs_f64()
    );
}

#[test]
fn exposure_scores_are_read_from_the_check_output() {
    let out = "== (c) systemd units\n\
               exposure dreamstream.service: 1.1\n\
               exposure dreamstream-gpu-node.service: 1.4\n\
               exposure (systemd-analyze security --offline=yes):\n  dreamstream.service 1.1\n";
    assert_eq!(
        exposure_scores(out),
        vec![
            ("dreamstream.service".to_string(), 1.1),
            ("dreamstream-gpu-node.service".to_string(), 1.4)
        ]
    );
}
