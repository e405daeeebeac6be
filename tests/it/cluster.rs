//! The GPU cluster with real processes: a control node (`dreamstream serve`,
//! no local worker) and gpu-node processes joined over ractor_cluster, on
//! loopback and each in its own network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::helpers::*;

pub(crate) const COOKIE: &str = "test-cookie-0123456789";
/// The control node's metrics token (`/api/cluster` answers only with it).
pub(crate) const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    pub(crate) fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Control {
    pub proc: Proc,
    pub http: String,
    pub ws: String,
    pub cluster_port: u16,
    pub dir: tempfile::TempDir,
}

/// `extra` are environment variables (DREAMSTREAM_* overrides).
pub(crate) fn start_control(cluster_ip: &str, extra: &[(&str, String)]) -> Control {
    let dir = tempfile::tempdir().unwrap();
    let (http, cluster_port) = (free_port(), free_port());
    let mut cmd = Command::new(bin("dreamstream"));
    cmd.args(["serve", "--local-workers", "0", "--listen"])
        .arg(format!("127.0.0.1:{http}"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--cluster-listen")
        .arg(format!("{cluster_ip}:{cluster_port}"))
        .env("DREAMSTREAM_CLUSTER_COOKIE", COOKIE)
        .env("DREAMSTREAM_METRICS_TOKEN", METRICS_TOKEN)
        .env("DREAMSTREAM_CLUSTER__HEARTBEAT_MS", "250")
        .env("DREAMSTREAM_CLUSTER__LOST_AFTER_MS", "1500")
        .env("RUST_LOG", "info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd, dir.path().join("control.log"));
    let control = Control {
        proc,
        http: format!("http://127.0.0.1:{http}"),
        ws: format!("ws://127.0.0.1:{http}"),
        cluster_port,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            Instant::now() < deadline,
            "control node did not start: {}",
            control.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    control
}

pub(crate) fn start_node(
    control: &Control,
    name: &str,
    target: &str,
    cookie: &str,
    extra: &[(&str, String)],
    netns: Option<&str>,
) -> Proc {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin("gpu-node"));
            c
        }
        None => Command::new(bin("gpu-node")),
    };
    cmd.args([
        "serve",
        "--threads",
        "1",
        "--name",
        name,
        "--control",
        target,
    ])
    .env("DREAMSTREAM_CLUSTER_COOKIE", cookie)
    .env("RUST_LOG", "info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc::spawn(cmd, control.dir.path().join(format!("{name}.log")))
}

pub(crate) async fn cluster(control: &Control) -> serde_json::Value {
    let mut resp = awc::Client::new()
        .get(format!("{}/api/cluster", control.http))
        .insert_header(("Authorization", format!("Bearer {METRICS_TOKEN}")))
        .send()
        .await
        .expect("cluster status");
    resp.json().await.expect("JSON")
}

pub(crate) fn worker<'a>(
    status: &'a serde_json::Value,
    node: &str,
) -> Option<&'a serde_json::Value> {
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["node"] == node)
}

pub(crate) async fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

pub(crate) async fn wait_joined(control: &Control, node: &str) {
    wait_for(
        &format!("{node} to join"),
        Duration::from_secs(60),
        async || worker(&cluster(control).await, node).is_some(),
    )
    .await;
}

pub(crate) fn jobs_done(status: &serde_json::Value, node: &str) -> u64 {
    worker(status, node)
        .and_then(|w| w["jobs_done"].as_u64())
        .unwrap_or(0)
}

/// Streams photos at ~10 fps in the background; counts frames at a viewer.
struct Live {
    frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Live {
    async fn start(control: &Control, name: &str) -> Live {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let frames = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
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
        let photos: Vec<Bytes> = photos();
        let s = stop.clone();
        actix_web::rt::spawn(async move {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                send_binary(&mut b, photos[i % photos.len()].clone()).await;
                i += 1;
                // Drain acks and events so the socket never backs up.
                while let Some(_m) = next(&mut b, Duration::from_millis(1)).await {}
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let (f, s) = (frames.clone(), stop.clone());
        actix_web::rt::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(In::Binary(_)) = next(&mut v, Duration::from_millis(200)).await {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Live { frames, stop }
    }

    fn count(&self) -> u64 {
        self.frames.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn frames_within(&self, d: Duration) -> u64 {
        let before = self.count();
        actix_web::rt::time::sleep(d).await;
        self.count() - before
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The scenario both topologies run: both nodes work, one dies, the stream
/// goes on, the node comes back and gets work again.
async fn node_loss_costs_a_frame(control: &Control, targets: [(&str, &str, Option<&str>); 2]) {
    let mut nodes: Vec<Proc> = targets
        .iter()
        .map(|(name, target, ns)| start_node(control, name, target, COOKIE, &[], *ns))
        .collect();
    for (name, _, _) in &targets {
        wait_joined(control, name).await;
    }
    let live = Live::start(control, "duo").await;
    wait_for(
        "both nodes to do work",
        Duration::from_secs(60),
        async || {
            let s = cluster(control).await;
            jobs_done(&s, targets[0].0) > 2 && jobs_done(&s, targets[1].0) > 2
        },
    )
    .await;

    // kill -9 one node mid-stream: frames keep coming from the other within 2 s.
    nodes[0].kill9();
    let killed = Instant::now();
    let before = live.count();
    wait_for(
        "a frame after the kill",
        Duration::from_secs(2),
        async || live.count() > before,
    )
    .await;
    assert!(killed.elapsed() <= Duration::from_secs(2));
    assert!(
        live.frames_within(Duration::from_secs(2)).await >= 3,
        "the stream keeps flowing"
    );
    wait_for(
        "the dead node to leave",
        Duration::from_secs(10),
        async || worker(&cluster(control).await, targets[0].0).is_none(),
    )
    .await;

    // It restarts, rejoins and gets work again.
    let (name, target, ns) = targets[0];
    nodes[0] = start_node(control, name, target, COOKIE, &[], ns);
    wait_joined(control, name).await;
    wait_for(
        "the restarted node to get work",
        Duration::from_secs(60),
        async || jobs_done(&cluster(control).await, name) > 2,
    )
    .await;
    drop(live);
}

#[actix_web::test]
async fn two_gpu_nodes_share_a_stream_and_survive_a_kill_on_loopback() {
    let control = start_control("127.0.0.1", &[]);
    let target = format!("127.0.0.1:{}", control.cluster_port);
    node_loss_costs_a_frame(&control, [("gpua", &target, None), ("gpub", &target, None)]).await;
}

#[actix_web::test]
async fn a_stopped_node_is_declared_lost_within_the_configured_silence() {
    let control = start_control("127.0.0.1", &[]);
    let target = format!("127.0.0.1:{}", control.cluster_port);
    let node = start_node(&control, "frozen", &target, COOKIE, &[], None);
    wait_joined(&control, "frozen").await;
    node.signal("STOP");
    // lost_after 1500 ms + one heartbeat (250 ms) + scheduling slack.
    let took = wait_for(
        "the frozen node to be declared lost",
        Duration::from_secs(4),
        async || worker(&cluster(&control).await, "frozen").is_none(),
    )
    .await;
    assert!(
        took >= Duration::from_millis(1200),
        "declared lost too early ({took:?})"
    );
    assert!(
        control.proc.log_text().contains("remote worker lost"),
        "the control node says so"
    );
    node.signal("CONT");
    // Its session was cut; it reconnects and is back.
    wait_joined(&control, "frozen").await;
}

#[actix_web::test]
async fn a_node_with_the_wrong_cookie_is_refused_and_gets_no_work() {
    let control = start_control("127.0.0.1", &[]);
    let target = format!("127.0.0.1:{}", control.cluster_port);
    let intruder = start_node(
        &control,
        "intruder",
        &target,
        "not-the-right-cookie-1234",
        &[],
        None,
    );
    let live = Live::start(&control, "lonely").await;
    assert_eq!(
        live.frames_within(Duration::from_secs(4)).await,
        0,
        "no frame was processed"
    );
    let status = cluster(&control).await;
    assert!(worker(&status, "intruder").is_none(), "{status}");
    assert!(
        status["ready"].as_array().is_some_and(|r| !r.is_empty()),
        "the stream waits for a worker"
    );
    let log = intruder.log_text();
    assert!(!log.contains("joined the cluster"), "{log}");
}

/// A CA, certificates it signed (control node and GPU node), and a rogue
/// self-signed one, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl failed: {script}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    sh(&format!(
        "openssl req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null"
    ));
    for name in ["control", "node"] {
        sh(&format!(
            "openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name} 2>/dev/null
             printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\nbasicConstraints=CA:FALSE\\n' > {name}.ext
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext 2>/dev/null"
        ));
    }
    sh(&format!(
        "openssl req -x509 {key} -keyout rogue.key -out rogue.pem -days 2 -subj /CN=rogue \
         -addext subjectAltName=DNS:localhost 2>/dev/null"
    ));
}

#[actix_web::test]
async fn with_tls_the_link_works_and_a_node_without_a_ca_certificate_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls = |cert: &str, key: &str| {
        vec![
            ("DREAMSTREAM_CLUSTER__REQUIRE_TLS", "true".to_string()),
            ("DREAMSTREAM_CLUSTER__TLS__CA", p("ca.pem")),
            ("DREAMSTREAM_CLUSTER__TLS__CERT", p(cert)),
            ("DREAMSTREAM_CLUSTER__TLS__KEY", p(key)),
            (
                "DREAMSTREAM_GPU_NODE__TLS_SERVER_NAME",
                "localhost".to_string(),
            ),
        ]
    };
    let control = start_control("127.0.0.1", &tls("control.pem", "control.key"));
    let target = format!("127.0.0.1:{}", control.cluster_port);
    let _good = start_node(
        &control,
        "trusted",
        &target,
        COOKIE,
        &tls("node.pem", "node.key"),
        None,
    );
    let rogue = start_node(
        &control,
        "rogue",
        &target,
        COOKIE,
        &tls("rogue.pem", "rogue.key"),
        None,
    );
    wait_joined(&control, "trusted").await;
    let live = Live::start(&control, "secure").await;
    wait_for(
        "frames over the TLS link",
        Duration::from_secs(60),
        async || live.count() >= 3,
    )
    .await;
    let status = cluster(&control).await;
    assert!(worker(&status, "rogue").is_none(), "{status}");
    assert!(!rogue.log_text().contains("joined the cluster"));
    drop(live);
}

/// Network namespaces with a veth pair each; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
}

impl Netns {
    fn create(tag: &str, subnet: u8) -> Netns {
        let id = std::process::id() % 10_000;
        let name = format!("ds{tag}{id}");
        let (host_if, ns_if) = (format!("dsh{tag}{id}"), format!("dsn{tag}{id}"));
        let net = format!("10.{}.{subnet}", 100 + (id % 100));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["link", "set", &ns_if, "netns", &name]);
        run(&["addr", "add", &format!("{net}.1/24"), "dev", &host_if]);
        run(&["link", "set", &host_if, "up"]);
        run(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            &ns_if,
        ]);
        run(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        run(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Netns {
            name,
            host_ip: format!("{net}.1"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[actix_web::test]
async fn each_gpu_node_in_its_own_network_namespace() {
    let a = Netns::create("a", 1);
    let b = Netns::create("b", 2);
    let control = start_control("0.0.0.0", &[]);
    let ta = format!("{}:{}", a.host_ip, control.cluster_port);
    let tb = format!("{}:{}", b.host_ip, control.cluster_port);
    node_loss_costs_a_frame(
        &control,
        [("nsa", &ta, Some(&a.name)), ("nsb", &tb, Some(&b.name))],
    )
    .await;
}
