//! `gpu-node bench`: times the 26-style network and the whole JPEG → JPEG path.
//! Prints medians and minimums over `--iters` runs after a warm-up; the last line
//! is one JSON object for scripts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dreamstream_actors::style::{PresetMix, StyleImage, StyleParams};
use serde_json::json;

use crate::image_io::{self, ResizeQuality, RgbImage};
use crate::neural_style::multistyle::{CandleMultiStyle, STYLE_COUNT};
use crate::neural_style::{NeuralStyle, embedded};
use crate::processor::Processor;

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Frame size WIDTHxHEIGHT.
    #[arg(long, default_value = "640x480")]
    pub size: String,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// A photo to use as the frame (default: a generated test picture).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Also time the plain candle implementation of the network (slow).
    #[arg(long)]
    pub candle: bool,
    /// Style spec for the run.
    #[arg(long, default_value = "19")]
    pub style: String,
    /// "neural-style" (default) or "diffusion" (needs --model).
    #[arg(long, default_value = "neural-style")]
    pub processor: String,
    /// Diffusion: a diffusers-layout model folder.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Diffusion: the model family (sd15, sd-turbo, sdxl-turbo, sdxl-lightning).
    #[arg(long, default_value = "sd-turbo")]
    pub family: String,
    /// Diffusion: steps (default: the family's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Diffusion: img2img strength.
    #[arg(long, default_value_t = 0.5)]
    pub strength: f64,
    /// Diffusion: the prompt.
    #[arg(
        long,
        default_value = "a photo of a cat sitting on a rocket, oil painting"
    )]
    pub prompt: String,
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .context("size must look like 640x480")?;
    let (w, h): (u32, u32) = (w.trim().parse()?, h.trim().parse()?);
    if w < 16 || h < 16 || w > 4096 || h > 4096 {
        bail!("size must be between 16x16 and 4096x4096");
    }
    Ok((w, h))
}

/// Median and minimum in milliseconds.
fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[times.len() / 2]), ms(times[0]))
}

/// A deterministic picture with edges, gradients and texture (so JPEG and the
/// network see something photo-like).
pub fn test_picture(w: u32, h: u32) -> RgbImage {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    let mut seed = 0x2545_f491u32;
    for y in 0..h {
        for x in 0..w {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed % 24) as i32 - 12;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let disc = ((fx - 0.5).powi(2) + (fy - 0.45).powi(2)).sqrt() < 0.25;
            let base = if disc {
                [210.0, 120.0 + 80.0 * fy, 60.0]
            } else {
                [40.0 + 150.0 * fx, 90.0 + 100.0 * fy, 160.0 - 60.0 * fx]
            };
            let stripes = if ((x / 16 + y / 16) % 2 == 0) && !disc {
                18
            } else {
                0
            };
            for b in base {
                data.push((b as i32 + noise + stripes).clamp(0, 255) as u8);
            }
        }
    }
    RgbImage::new(w, h, data)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.processor.as_str() {
        "neural-style" => {}
        "diffusion" => return run_diffusion(args),
        other => bail!("unknown processor {other:?} (neural-style or diffusion)"),
    }
    let (w, h) = parse_size(&args.size)?;
    let iters = args.iters.max(1);
    let picture = match &args.image {
        Some(path) => {
            let img = image_io::decode(&std::fs::read(path)?)
                .with_context(|| format!("failed to decode {}", path.display()))?;
            image_io::resize(&img, w, h, ResizeQuality::Best)
        }
        None => test_picture(w, h),
    };
    let net = NeuralStyle::load_with_threads(args.threads)?;
    let threads = net.pool().current_num_threads();
    let mix = PresetMix::parse(&args.style)?;
    let weights: [f32; STYLE_COUNT] = mix.dense();
    let isa = crate::cpu::simd::Isa::detect().name();
    println!("gpu-node bench: {w}x{h}, {iters} iterations, {threads} threads, CPU kernels: {isa}");

    // The network alone, on a frame whose sides are multiples of 4.
    let (w4, h4) = ((w as usize).div_ceil(4) * 4, (h as usize).div_ceil(4) * 4);
    let input: Vec<f32> = (0..3 * h4 * w4)
        .map(|i| {
            let (c, p) = (i / (h4 * w4), i % (h4 * w4));
            let (y, x) = ((p / w4).min(h as usize - 1), (p % w4).min(w as usize - 1));
            picture.data[(y * w as usize + x) * 3 + c] as f32 / 255.0
        })
        .collect();
    let mut net_times = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t = Instant::now();
        net.pool()
            .install(|| net.multistyle().forward_nchw(&input, h4, w4, &weights))?;
        if i > 0 {
            net_times.push(t.elapsed());
        }
    }
    let (net_med, net_min) = summary(net_times);
    println!("network {w4}x{h4}: median {net_med:.1} ms, min {net_min:.1} ms");

    // JPEG in → JPEG out, as a worker runs it.
    let frame = image_io::encode_jpeg(&picture, 85)?;
    let params = StyleParams {
        max_side: w.max(h),
        ..StyleParams::preset(mix.clone())
    };
    let (mut frame_times, mut decode, mut encode) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=iters {
        let t = Instant::now();
        let out = net.process(&frame, &params)?;
        if i > 0 {
            frame_times.push(t.elapsed());
            decode.push(out.timings.decode);
            encode.push(out.timings.encode);
        }
    }
    let (frame_med, frame_min) = summary(frame_times);
    let (dec_med, _) = summary(decode);
    let (enc_med, _) = summary(encode);
    println!(
        "jpeg->jpeg {w}x{h}: median {frame_med:.1} ms, min {frame_min:.1} ms (decode {dec_med:.2} ms, encode {enc_med:.2} ms, frame {} KiB)",
        frame.len() / 1024
    );

    // Arbitrary style (style vector cached, as in a live stream).
    let vector = net.pool().install(|| {
        net.arbitrary()
            .style_vector(&StyleImage::new(image_io::encode_png(&test_picture(
                256, 256,
            ))?))
            .map_err(anyhow::Error::from)
    })?;
    let mut arb_times = Vec::new();
    for i in 0..=iters.min(10) {
        let t = Instant::now();
        net.pool()
            .install(|| net.arbitrary().stylize(&picture, &vector))?;
        if i > 0 {
            arb_times.push(t.elapsed());
        }
    }
    let (arb_med, arb_min) = summary(arb_times);
    println!(
        "arbitrary-style network ({w}x{h} frame, run at 384 px): median {arb_med:.1} ms, min {arb_min:.1} ms"
    );

    let mut candle = serde_json::Value::Null;
    if args.candle {
        let device = candle_core::Device::Cpu;
        let plain = CandleMultiStyle::load_bytes(embedded::MULTISTYLE26, &device)?;
        let x = candle_core::Tensor::from_slice(&input, (1, 3, h4, w4), &device)?;
        let s = candle_core::Tensor::from_slice(&weights, STYLE_COUNT, &device)?;
        let mut times = Vec::new();
        for i in 0..=iters.min(5) {
            let t = Instant::now();
            plain.forward(&x, &s)?;
            if i > 0 {
                times.push(t.elapsed());
            }
        }
        let (med, min) = summary(times);
        println!("plain candle network {w4}x{h4}: median {med:.1} ms, min {min:.1} ms");
        candle = json!({"median_ms": med, "min_ms": min});
    }

    let rss = peak_rss_mb();
    if let Some(mb) = rss {
        println!("peak RSS: {mb:.0} MB");
    }
    let codec = if cfg!(feature = "turbojpeg") {
        "libjpeg-turbo"
    } else {
        "zune-jpeg+jpeg-encoder"
    };
    println!(
        "{}",
        json!({
            "size": format!("{w}x{h}"),
            "threads": threads,
            "iters": iters,
            "isa": isa,
            "network_ms": {"median": net_med, "min": net_min},
            "jpeg_to_jpeg_ms": {"median": frame_med, "min": frame_min},
            "decode_ms": dec_med,
            "encode_ms": enc_med,
            "jpeg_codec": codec,
            "candle_network_ms": candle,
            "arbitrary_ms": {"median": arb_med, "min": arb_min},
            "peak_rss_mb": rss,
        })
    );
    Ok(())
}

/// `bench --processor diffusion`: per-stage times of the diffusion processor
/// (text encode uncached and cached, VAE encode, each UNet step, VAE decode, JPEG).
fn run_diffusion(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::diffusion::pipeline::StepSelection;
    use crate::diffusion::{DiffusionProcessor, DiffusionRequest, ModelSpec};

    let dir = args
        .model
        .clone()
        .context("--processor diffusion needs --model DIR (a diffusers-layout folder)")?;
    let (w, h) = parse_size(&args.size)?;
    let family: crate::diffusion::Family = args.family.parse()?;
    let spec = ModelSpec {
        id: "bench".into(),
        family,
        path: dir.clone(),
        unet_file: None,
    };
    let device = candle_core::Device::Cpu;
    let t = Instant::now();
    let proc = DiffusionProcessor::load(std::slice::from_ref(&spec), &device)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut req = DiffusionRequest::new(&args.prompt, family);
    req.width = (w as usize / 8) * 8;
    req.height = (h as usize / 8) * 8;
    if let Some(s) = args.steps {
        req.steps = s;
    }
    req.schedule = StepSelection::Strength(args.strength);
    let iters = args.iters.max(1);
    println!(
        "gpu-node bench --processor diffusion: {} ({family}), {}x{}, {} steps, strength {}, {iters} iterations, CPU fp32",
        dir.display(),
        req.width,
        req.height,
        req.steps,
        args.strength
    );
    let picture = match &args.image {
        Some(path) => image_io::decode(&std::fs::read(path)?)
            .with_context(|| format!("failed to decode {}", path.display()))?,
        None => test_picture(w, h),
    };
    let frame = image_io::encode_jpeg(&picture, 85)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (mut text, mut venc, mut vdec, mut total, mut dec, mut enc) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut steps: Vec<Vec<Duration>> = Vec::new();
    // The first run is uncached (text encoder runs); the others hit the prompt cache.
    let first = {
        let img = image_io::decode(&frame)?;
        let (_, info) = proc.run(&img, &req)?;
        info.text_encode
    };
    for _ in 0..iters {
        let t = Instant::now();
        let img = image_io::decode(&frame)?;
        let d = t.elapsed();
        let (out, info) = proc.run(&img, &req)?;
        let t2 = Instant::now();
        image_io::encode_jpeg(&out, req.jpeg_quality)?;
        let e = t2.elapsed();
        total.push(t.elapsed());
        dec.push(d);
        enc.push(e);
        text.push(info.text_encode);
        venc.push(info.vae_encode);
        vdec.push(info.vae_decode);
        for (i, s) in info.unet_steps.iter().enumerate() {
            if steps.len() <= i {
                steps.push(Vec::new());
            }
            steps[i].push(*s);
        }
    }
    let (text_med, _) = summary(text);
    let (venc_med, _) = summary(venc);
    let (vdec_med, _) = summary(vdec);
    let (dec_med, _) = summary(dec);
    let (enc_med, _) = summary(enc);
    let (total_med, total_min) = summary(total);
    let step_meds: Vec<f64> = steps.into_iter().map(|s| summary(s).0).collect();
    println!("load: {load_ms:.1} ms");
    println!(
        "text encode: first (uncached) {:.2} ms, cached median {text_med:.3} ms",
        ms(first)
    );
    println!("jpeg decode: median {dec_med:.2} ms");
    println!("vae encode: median {venc_med:.2} ms");
    for (i, s) in step_meds.iter().enumerate() {
        println!("unet step {i}: median {s:.2} ms");
    }
    println!("vae decode: median {vdec_med:.2} ms");
    println!("jpeg encode: median {enc_med:.2} ms");
    println!("jpeg->jpeg total: median {total_med:.2} ms, min {total_min:.2} ms");
    println!(
        "{}",
        json!({
            "processor": "diffusion",
            "model": dir.display().to_string(),
            "family": family.as_str(),
            "size": format!("{}x{}", req.width, req.height),
            "steps": req.steps,
            "strength": args.strength,
            "iters": iters,
            "load_ms": load_ms,
            "text_encode_ms": {"uncached": ms(first), "cached_median": text_med},
            "jpeg_decode_ms": dec_med,
            "vae_encode_ms": venc_med,
            "unet_step_ms": step_meds,
            "vae_decode_ms": vdec_med,
            "jpeg_encode_ms": enc_med,
            "total_ms": {"median": total_med, "min": total_min},
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}
