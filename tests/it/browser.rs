//! Headless Chromium for page tests: Debian's chromium driven through
//! chromedriver (WebDriver) with fantoccini, a fake camera, screenshots into
//! `test-output/`. Missing browsers fail the test with what to install.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    pub async fn start() -> Chromedriver {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: run .ci/run, or `apt-get install chromium chromium-driver`"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own: the browsers it starts are in it too,
        // so dropping the driver ends them even when a test failed mid-way.
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        Chromedriver { child, url }
    }

    /// A new browser (its own profile: cookies and storage are not shared)
    /// whose camera is Chromium's generated test pattern.
    pub async fn browser(&self) -> Client {
        self.browser_with_camera(None).await
    }

    /// A new browser whose camera plays `y4m` in a loop (see [`photo_camera`]).
    pub async fn browser_with_camera(&self, y4m: Option<&std::path::Path>) -> Client {
        self.browser_with(y4m, None).await
    }

    /// A phone: a 390×844 viewport (CSS pixels, device pixel ratio 3) with
    /// touch, as Chromium's mobile emulation makes it.
    pub async fn phone(&self) -> Client {
        self.browser_with(
            None,
            Some(serde_json::json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 3.0, "touch": true },
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36"
            })),
        )
        .await
    }

    async fn browser_with(
        &self,
        y4m: Option<&std::path::Path>,
        mobile: Option<serde_json::Value>,
    ) -> Client {
        gpu_node::cluster::install_crypto_provider();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-gpu".into(),
            "--window-size=1280,1100".into(),
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
        ];
        if let Some(file) = y4m {
            args.push(format!(
                "--use-file-for-fake-video-capture={}",
                file.display()
            ));
        }
        let mut caps = serde_json::Map::new();
        let mut options = serde_json::json!({ "binary": "/usr/bin/chromium", "args": args });
        if let Some(m) = mobile {
            options["mobileEmulation"] = m;
        }
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `test-output/` at the repository root.
pub fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&dir).expect("test-output/");
    dir
}

pub async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let _ = c
        .execute(
            "window.scrollTo(0, 0); document.activeElement && document.activeElement.blur();",
            vec![],
        )
        .await;
    let png = c.screenshot().await.expect("screenshot");
    let path = output_dir().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    path
}

/// A screenshot for the README: into `test-output/`, and also into
/// `docs/screenshots/` when `DREAMSTREAM_UPDATE_SCREENSHOTS=1`
/// (`DREAMSTREAM_UPDATE_SCREENSHOTS=1 cargo nextest run -E 'test(/first_minutes::/)'`).
pub async fn docs_screenshot(c: &Client, name: &str) -> PathBuf {
    let path = screenshot(c, name).await;
    if std::env::var("DREAMSTREAM_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots/");
        std::fs::copy(&path, docs.join(name)).expect("copy the screenshot into docs/screenshots/");
    }
    path
}

/// Polls a JavaScript expression until it is truthy; returns its value.
pub async fn wait_js(c: &Client, what: &str, expr: &str, limit: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    let script = format!("return ({expr});");
    loop {
        if let Ok(v) = c.execute(&script, vec![]).await
            && !(v.is_null() || v == false || v == 0 || v == "")
        {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            let page = c
                .execute(
                    "return location.href + '\\n' + document.body.innerText;",
                    vec![],
                )
                .await
                .unwrap_or_default();
            let shot = screenshot(c, "failure.png").await;
            panic!(
                "timed out waiting for {what} ({expr}); screenshot {}; page:\n{}",
                shot.display(),
                page.as_str().unwrap_or_default()
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn fill(c: &Client, css: &str, text: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.ok();
    el.send_keys(text).await.expect("type");
}

pub async fn click(c: &Client, css: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    // In the middle of the screen, away from the sticky header.
    if let Ok(arg) = serde_json::to_value(&el) {
        let _ = c
            .execute(
                "arguments[0].scrollIntoView({ block: 'center' });",
                vec![arg],
            )
            .await;
    }
    el.click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Registers an account through the page's form (ends on `next`).
pub async fn register(c: &Client, base: &str, name: &str, next: &str) {
    c.goto(&format!("{base}/register?next={next}"))
        .await
        .expect("register page");
    fill(c, "input[name=username]", name).await;
    fill(c, "input[name=password]", "browser password 1").await;
    click(c, "form.stack button[type=submit]").await;
    wait_js(
        c,
        "the page after registering",
        &format!("location.pathname === '{next}'"),
        Duration::from_secs(20),
    )
    .await;
}

/// A camera made of test photos: a 640×480 Y4M (4:2:0) file, each photo held
/// for `frames_each` frames at 15 fps, that Chromium plays in a loop.
pub fn photo_camera(path: &std::path::Path, photos: &[&str], frames_each: usize) {
    use gpu_node::image_io::{self, ResizeQuality};
    use std::io::Write;
    let (w, h) = (640u32, 480u32);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("y4m file"));
    writeln!(out, "YUV4MPEG2 W{w} H{h} F15:1 Ip A1:1 C420jpeg").unwrap();
    for name in photos {
        let bytes = std::fs::read(
            crate::helpers::shared_dir()
                .join("testdata/images")
                .join(name),
        )
        .expect("a test photo");
        let img = image_io::resize(
            &image_io::decode(&bytes).unwrap(),
            w,
            h,
            ResizeQuality::Best,
        );
        let px = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            (
                img.data[i] as f32,
                img.data[i + 1] as f32,
                img.data[i + 2] as f32,
            )
        };
        // BT.601 full range, as JPEG uses (C420jpeg).
        let mut planes = Vec::with_capacity((w * h * 3 / 2) as usize);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = px(x, y);
                planes.push(
                    (0.299 * r + 0.587 * g + 0.114 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
        let mut u = Vec::new();
        let mut v = Vec::new();
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let (r, g, b) = px(x, y);
                u.push(
                    (128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
                v.push(
                    (128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
        planes.extend(u);
        planes.extend(v);
        for _ in 0..frames_each {
            out.write_all(b"FRAME\n").unwrap();
            out.write_all(&planes).unwrap();
        }
    }
    out.flush().unwrap();
}
