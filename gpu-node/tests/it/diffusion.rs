//! Diffusion parity with diffusers (../shared/testdata/diffusion-reference):
//! every component output and all img2img cases, within the reference's
//! suggested tolerance for an exact-GELU implementation.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use gpu_node::diffusion::config::{Family, SchedulerConfig};
use gpu_node::diffusion::pipeline::DiffusionModel;
use gpu_node::diffusion::reference::{Runner, diff, read_npy};
use gpu_node::diffusion::scheduler::Scheduler;
use gpu_node::diffusion::tokenizer::ClipTokenizer;
use gpu_node::diffusion::unet::AddedCond;
use serde_json::Value;

use crate::testdata;

fn cases_json() -> PathBuf {
    testdata("diffusion-reference/cases.json")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(cases_json()).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn npy(rel: &str) -> Tensor {
    read_npy(&testdata(&format!("diffusion-reference/{rel}"))).expect("npy")
}

fn model(family: &str, dir: &str) -> DiffusionModel {
    let dir = testdata(&format!("diffusion-reference/{dir}"));
    DiffusionModel::load(
        &dir,
        family.parse().expect("family"),
        None,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()))
}

/// Compares against a component reference within its exact-GELU tolerance.
fn assert_close(what: &str, got: &Tensor, out: &Value) {
    let want = npy(out["file"].as_str().expect("file"));
    let atol = out["suggested_atol"]["exact_gelu"].as_f64().expect("atol");
    let d = diff(got, &want).unwrap_or_else(|e| panic!("{what}: {e}"));
    println!(
        "{what}: max {:.2e} mean {:.2e} (atol {atol:.0e})",
        d.max_abs, d.mean_abs
    );
    assert!(
        d.max_abs <= atol,
        "{what}: max |diff| {} > {atol}",
        d.max_abs
    );
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn components(family: &str) {
    let r = reference();
    let comp = &r["components"][family];
    let dir = r["models"][family]["dir"].as_str().expect("dir");
    let m = model(family, dir);
    let outs = &comp["outputs"];
    for enc in ["text_encoder", "text_encoder_2"] {
        let encoder = match enc {
            "text_encoder" => &m.text_encoder,
            _ => match &m.text_encoder_2 {
                Some(e) => e,
                None => continue,
            },
        };
        for which in ["prompt", "negative"] {
            let key = |k: &str| format!("{enc}.{which}.{k}");
            let o = encoder
                .forward(&ids(&outs[key("ids")]), &Device::Cpu)
                .expect("encode");
            assert_close(
                &key("last_hidden_state"),
                &o.last_hidden_state,
                &outs[key("last_hidden_state")],
            );
            assert_close(
                &key("penultimate_hidden_state"),
                &o.penultimate,
                &outs[key("penultimate_hidden_state")],
            );
            if outs.get(key("pooler_output")).is_some() {
                assert_close(
                    &key("pooler_output"),
                    &o.pooled,
                    &outs[key("pooler_output")],
                );
            }
            if outs.get(key("text_embeds")).is_some() {
                let te = o.text_embeds.as_ref().expect("projected embeds");
                assert_close(&key("text_embeds"), te, &outs[key("text_embeds")]);
            }
        }
    }
    let inputs = &comp["inputs"];
    let inp = |k: &str| npy(inputs[k].as_str().expect("input"));
    let added = inputs.get("unet_text_embeds").map(|_| AddedCond {
        text_embeds: inp("unet_text_embeds"),
        time_ids: inp("unet_time_ids"),
    });
    let out = m
        .unet
        .forward(
            &inp("unet_latents"),
            inputs["unet_timestep"].as_f64().expect("t"),
            &inp("unet_encoder_hidden_states"),
            added.as_ref(),
        )
        .expect("unet");
    assert_close("unet.out", &out, &outs["unet.out"]);

    let post = m.vae.encode(&inp("vae_image")).expect("vae encode");
    assert_close(
        "vae.encode.moments",
        &post.moments,
        &outs["vae.encode.moments"],
    );
    assert_close("vae.encode.mean", &post.mean, &outs["vae.encode.mean"]);
    assert_close("vae.encode.std", &post.std, &outs["vae.encode.std"]);
    let dec = m.vae.decode(&inp("vae_decode_latents")).expect("decode");
    assert_close("vae.decode.of_random", &dec, &outs["vae.decode.of_random"]);
    let dec = m.vae.decode(&post.mean).expect("decode");
    assert_close("vae.decode.of_mean", &dec, &outs["vae.decode.of_mean"]);
}

#[test]
fn sd15_components_match_diffusers() {
    components("sd15");
}

#[test]
fn sd21_components_match_diffusers() {
    components("sd21");
}

#[test]
fn sdxl_components_match_diffusers() {
    components("sdxl");
}

/// Timesteps and sigmas for every case's scheduler and step count, as diffusers.
#[test]
fn schedulers_match_diffusers_timesteps_and_sigmas() {
    let r = reference();
    for c in r["cases"].as_array().expect("cases") {
        let name = c["name"].as_str().expect("name");
        let cfg = SchedulerConfig::from_value(
            &cases_json(),
            c["scheduler"]["cls"].as_str().expect("cls"),
            &c["scheduler"]["config"],
        )
        .expect("scheduler config");
        let n = c["num_inference_steps"].as_u64().expect("n") as usize;
        let s = Scheduler::new(&cfg, n).expect("scheduler");
        let want: Vec<f64> = c["all_timesteps"]
            .as_array()
            .expect("all_timesteps")
            .iter()
            .map(|x| x.as_f64().expect("t"))
            .collect();
        assert_eq!(s.timesteps(), want.as_slice(), "{name}: timesteps");
        let strength = c["strength"].as_f64().expect("strength");
        let used: Vec<f64> = s
            .strength_indices(strength)
            .expect("indices")
            .into_iter()
            .map(|i| s.timesteps()[i])
            .collect();
        let want_used: Vec<f64> = c["timesteps_used"]
            .as_array()
            .expect("used")
            .iter()
            .map(|x| x.as_f64().expect("t"))
            .collect();
        assert_eq!(used, want_used, "{name}: timesteps used");
        if let Some(sig) = c["scheduler_constants"]["sigmas_all"].as_array() {
            assert_eq!(sig.len(), s.sigmas().len(), "{name}: sigma count");
            for (a, b) in s.sigmas().iter().zip(sig) {
                let b = b.as_f64().expect("sigma");
                assert!(
                    ((*a as f64) - b).abs() <= 1e-6 * b.max(1.0),
                    "{name}: sigma {a} vs {b}"
                );
            }
        }
    }
    // Trailing spacing with n not dividing 1000 (candle's integer ratio gets n = 3 wrong).
    let r = reference();
    let c = &r["cases"][0];
    let cfg = SchedulerConfig::from_value(
        &cases_json(),
        "EulerDiscreteScheduler",
        &c["scheduler"]["config"],
    )
    .expect("config");
    for n in 1..=50 {
        let s = Scheduler::new(&cfg, n).expect("scheduler");
        assert_eq!(s.timesteps().len(), n, "n = {n}");
        assert_eq!(s.timesteps()[0], 999.0, "n = {n}");
    }
    // Indices outside the schedule are errors, not panics; so are 0 steps and strength 0.
    let s = Scheduler::new(&cfg, 4).expect("scheduler");
    let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).expect("zeros");
    assert!(s.step(&x, 4, None, &x, None).is_err());
    assert!(s.step(&x, 0, Some(9), &x, None).is_err());
    assert!(s.add_noise(&x, &x, 4).is_err());
    assert!(Scheduler::new(&cfg, 0).is_err());
    assert!(s.strength_indices(0.0).is_err());
    assert!(s.strength_indices(0.2).is_err(), "int(4 * 0.2) = 0 steps");
}

/// Our CLIP BPE gives the reference's token ids for every case's prompts.
#[test]
fn tokenizer_matches_reference_ids() {
    let r = reference();
    for c in r["cases"].as_array().expect("cases") {
        let dir = testdata(&format!(
            "diffusion-reference/{}",
            c["model_dir"].as_str().expect("dir")
        ));
        for (field, text) in [
            ("token_ids", &c["prompt"]),
            ("negative_token_ids", &c["negative_prompt"]),
        ] {
            let Some(text) = text.as_str() else { continue };
            let Some(all) = c.get(field).and_then(Value::as_object) else {
                continue;
            };
            for (tk, want) in all {
                let t = ClipTokenizer::from_dir(&dir.join(tk)).expect("tokenizer");
                let got = t.encode(text);
                assert_eq!(got.ids, ids(want), "{} {field} {tk}", c["name"]);
                assert!(!got.truncated);
            }
        }
    }
}

/// All img2img cases: final latents, image (and prompt embeds, init latents,
/// decode) within each case's suggested exact-GELU tolerance.
#[test]
fn all_img2img_cases_match_diffusers() {
    let (mut runner, file) = Runner::new(&cases_json(), Device::Cpu).expect("cases.json");
    assert_eq!(file.cases.len(), 16, "the reference has 16 cases");
    let mut failed = Vec::new();
    for case in &file.cases {
        let (_, report) = runner
            .run_case(case)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for c in &report.checks {
            println!(
                "{:40} {:22} max {:.2e} mean {:.2e} atol {:?} {}",
                report.case,
                c.what,
                c.diff.max_abs,
                c.diff.mean_abs,
                c.atol,
                if c.pass { "ok" } else { "FAIL" }
            );
        }
        if !report.pass {
            failed.push(report.case.clone());
        }
    }
    assert!(failed.is_empty(), "cases out of tolerance: {failed:?}");
}

#[test]
fn families_parse_with_reference_aliases() {
    for f in Family::ALL {
        assert_eq!(f.as_str().parse::<Family>().expect("parses"), f);
    }
    assert_eq!("sd21".parse::<Family>().expect("alias"), Family::SdTurbo);
    assert!("sd3".parse::<Family>().is_err());
}

// ---- The live processor: typed errors for bad input, caching, fixed noise. ----

mod live {
    use std::sync::OnceLock;

    use candle_core::Device;
    use dreamstream_actors::style::Interpolation;
    use gpu_node::diffusion::pipeline::StepSelection;
    use gpu_node::diffusion::{
        DiffusionError, DiffusionProcessor, DiffusionRequest, Family, ModelSpec,
    };
    use gpu_node::image_io::{self, RgbImage};

    use crate::testdata;

    fn spec(id: &str, family: Family, dir: &str) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            family,
            path: testdata(&format!("diffusion-reference/models/{dir}")),
            unet_file: None,
        }
    }

    fn proc() -> &'static DiffusionProcessor {
        static P: OnceLock<DiffusionProcessor> = OnceLock::new();
        P.get_or_init(|| {
            DiffusionProcessor::load(
                &[
                    spec("sd-turbo", Family::SdTurbo, "sd21_tiny"),
                    spec("sd15", Family::Sd15, "sd15_tiny"),
                    spec("sdxl-turbo", Family::SdxlTurbo, "sdxl_tiny"),
                ],
                &Device::Cpu,
            )
            .expect("tiny models load")
        })
    }

    fn req(model: &str, family: Family) -> DiffusionRequest {
        let mut r = DiffusionRequest::new("a cat on a rocket", family);
        r.model = Some(model.into());
        r.width = 64;
        r.height = 64;
        r
    }

    fn frame() -> RgbImage {
        let data = (0..96 * 72 * 3).map(|i| (i * 7 % 251) as u8).collect();
        RgbImage::new(96, 72, data)
    }

    fn err(r: &DiffusionRequest) -> DiffusionError {
        match proc().run(&frame(), r) {
            Ok(_) => panic!("expected an error for {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn runs_every_family_and_keeps_the_frame_size() {
        for (id, fam) in [
            ("sd-turbo", Family::SdTurbo),
            ("sd15", Family::Sd15),
            ("sdxl-turbo", Family::SdxlTurbo),
        ] {
            let mut r = req(id, fam);
            r.steps = fam.default_steps().min(4);
            let (out, info) = proc().run(&frame(), &r).expect("runs");
            assert_eq!((out.width, out.height), (96, 72), "{id}");
            assert!(!info.unet_steps.is_empty(), "{id}");
        }
    }

    #[test]
    fn unknown_model_id() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.model = Some("sd3".into());
        let e = err(&r);
        assert!(
            matches!(&e, DiffusionError::UnknownModel { id, .. } if id == "sd3"),
            "{e}"
        );
        assert!(
            e.to_string().contains("sd-turbo"),
            "names the configured ones: {e}"
        );
    }

    #[test]
    fn missing_weight_files_are_all_named() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = testdata("diffusion-reference/models/sd21_tiny");
        // Everything but the weights.
        for rel in [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "unet/config.json",
            "vae/config.json",
        ] {
            let to = tmp.path().join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(src.join(rel), &to).expect("copy");
        }
        let s = ModelSpec {
            id: "broken".into(),
            family: Family::SdTurbo,
            path: tmp.path().to_path_buf(),
            unet_file: None,
        };
        let e = DiffusionProcessor::load(&[s], &Device::Cpu)
            .err()
            .expect("fails");
        let msg = e.to_string();
        assert!(matches!(e, DiffusionError::MissingFiles { .. }), "{msg}");
        for f in [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ] {
            assert!(msg.contains(f), "{msg} names {f}");
        }
    }

    #[test]
    fn a_config_the_family_does_not_fit() {
        for (family, dir) in [
            (Family::Sd15, "sdxl_tiny"),
            (Family::SdxlTurbo, "sd21_tiny"),
            (Family::Sd15, "sd21_tiny"),
        ] {
            let e = DiffusionProcessor::load(&[spec("x", family, dir)], &Device::Cpu)
                .err()
                .expect("fails");
            assert!(
                matches!(e, DiffusionError::FamilyMismatch { .. }),
                "{family} on {dir}: {e}"
            );
        }
    }

    #[test]
    fn steps_out_of_range() {
        for steps in [0, 5] {
            let mut r = req("sd-turbo", Family::SdTurbo);
            r.steps = steps;
            let e = err(&r);
            assert!(
                matches!(e, DiffusionError::StepsOutOfRange { max: 4, .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn width_or_height_not_a_multiple_of_8() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.width = 100;
        let e = err(&r);
        assert!(
            matches!(
                e,
                DiffusionError::SizeNotMultipleOf8 {
                    width: 100,
                    height: 64
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn long_prompt_is_truncated_and_said_so() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.prompts = vec![(vec!["rocket"; 120].join(" "), 1.0)];
        let (_, info) = proc().run(&frame(), &r).expect("runs");
        assert!(
            info.notes
                .iter()
                .any(|n| n.contains("truncated to 77 tokens")),
            "{:?}",
            info.notes
        );
    }

    #[test]
    fn negative_guidance() {
        let mut r = req("sd15", Family::Sd15);
        r.guidance = -1.0;
        assert!(matches!(err(&r), DiffusionError::NegativeGuidance(g) if g == -1.0));
    }

    #[test]
    fn weights_summing_to_zero() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.prompts = vec![("a".into(), 1.0), ("b".into(), -1.0)];
        assert!(matches!(
            err(&r),
            DiffusionError::WeightsSumToZero { what: "prompt" }
        ));
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.seeds = vec![(1, 0.5), (2, -0.5)];
        assert!(matches!(
            err(&r),
            DiffusionError::WeightsSumToZero { what: "seed" }
        ));
    }

    #[test]
    fn prompt_embeddings_are_cached_and_noise_is_fixed() {
        // Its own processor: the counters of the shared one move under parallel tests.
        let own = DiffusionProcessor::load(
            &[spec("sd-turbo", Family::SdTurbo, "sd21_tiny")],
            &Device::Cpu,
        )
        .expect("loads");
        let p = &own;
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.prompts = vec![("a cached prompt".into(), 1.0)];
        let (a, _) = p.run(&frame(), &r).expect("runs");
        let encodes = p.text_encodes();
        let (b, _) = p.run(&frame(), &r).expect("runs");
        assert_eq!(
            p.text_encodes(),
            encodes,
            "the same prompt is not encoded again"
        );
        assert_eq!(
            a.data, b.data,
            "a still frame gives a still picture (fixed noise)"
        );
        r.prompts = vec![("another prompt".into(), 1.0)];
        let (c, _) = p.run(&frame(), &r).expect("runs");
        assert_eq!(
            p.text_encodes(),
            encodes + 1,
            "a new prompt: one text-encoder run"
        );
        assert_ne!(a.data, c.data, "the new prompt applies on the next frame");
        r.seeds = vec![(7, 1.0)];
        let (d, _) = p.run(&frame(), &r).expect("runs");
        assert_ne!(c.data, d.data, "a new seed applies on the next frame");
        // Weighted prompts and seeds and a t_index_list.
        r.prompts = vec![
            ("a cached prompt".into(), 0.3),
            ("another prompt".into(), 0.7),
        ];
        r.seeds = vec![(7, 0.5), (8, 0.5)];
        r.steps = 4;
        r.schedule = StepSelection::TIndexList(vec![1, 3]);
        let (_, info) = p.run(&frame(), &r).expect("runs");
        assert_eq!(info.unet_steps.len(), 2);
    }

    /// Runs `r` on the shared test frame.
    fn picture(r: &DiffusionRequest) -> Vec<u8> {
        proc().run(&frame(), r).expect("runs").0.data
    }

    fn prompts(list: &[(&str, f64)]) -> Vec<(String, f64)> {
        list.iter().map(|(p, w)| (p.to_string(), *w)).collect()
    }

    #[test]
    fn prompt_blends_weigh_their_prompts() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.prompts = prompts(&[("a red fox", 1.0)]);
        let fox = picture(&r);
        r.prompts = prompts(&[("a stone castle", 1.0)]);
        let castle = picture(&r);
        assert_ne!(fox, castle);
        for method in [Interpolation::Linear, Interpolation::Slerp] {
            r.blend.prompt_interpolation = method;
            r.prompts = prompts(&[("a red fox", 1.0), ("a stone castle", 0.0)]);
            assert_eq!(picture(&r), fox, "{method:?} (1, 0) is the first prompt");
            r.prompts = prompts(&[("a red fox", 0.0), ("a stone castle", 1.0)]);
            assert_eq!(
                picture(&r),
                castle,
                "{method:?} (0, 1) is the second prompt"
            );
            r.prompts = prompts(&[("a red fox", 0.5), ("a stone castle", 0.5)]);
            let half = picture(&r);
            assert_ne!(half, fox, "{method:?} (0.5, 0.5)");
            assert_ne!(half, castle, "{method:?} (0.5, 0.5)");
            // Normalised weights: only their ratio counts.
            r.prompts = prompts(&[("a red fox", 3.0), ("a stone castle", 3.0)]);
            assert_eq!(picture(&r), half, "{method:?} (3, 3) = (0.5, 0.5)");
        }
        r.prompts = prompts(&[("a red fox", 0.5), ("a stone castle", 0.5)]);
        r.blend.prompt_interpolation = Interpolation::Linear;
        let linear = picture(&r);
        r.blend.prompt_interpolation = Interpolation::Slerp;
        assert_ne!(picture(&r), linear, "slerp is not the weighted sum");
        // Without normalising, the weights scale the embeddings.
        r.blend.prompt_interpolation = Interpolation::Linear;
        r.blend.normalize_prompt_weights = false;
        r.prompts = prompts(&[("a red fox", 3.0), ("a stone castle", 3.0)]);
        assert_ne!(picture(&r), linear, "unnormalised (3, 3) is 6× the mean");
        r.prompts = prompts(&[("a red fox", 1.0), ("a stone castle", 0.0)]);
        assert_eq!(picture(&r), fox, "unnormalised (1, 0) is the first prompt");
    }

    #[test]
    fn seed_blends_weigh_their_seeds() {
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.seeds = vec![(7, 1.0)];
        let seven = picture(&r);
        r.seeds = vec![(8, 1.0)];
        let eight = picture(&r);
        assert_ne!(seven, eight);
        for method in [Interpolation::Linear, Interpolation::Slerp] {
            r.blend.seed_interpolation = method;
            r.seeds = vec![(7, 1.0), (8, 0.0)];
            assert_eq!(picture(&r), seven, "{method:?} (1, 0) is the first seed");
            r.seeds = vec![(7, 0.0), (8, 1.0)];
            assert_eq!(picture(&r), eight, "{method:?} (0, 1) is the second seed");
            r.seeds = vec![(7, 0.5), (8, 0.5)];
            let half = picture(&r);
            assert_ne!(half, seven, "{method:?} (0.5, 0.5)");
            assert_ne!(half, eight, "{method:?} (0.5, 0.5)");
        }
    }

    #[test]
    fn seed_noise_blends_keep_unit_variance() {
        use gpu_node::diffusion::pipeline::{Img2ImgNoise, slerp};
        let dims = (1, 4, 32, 32);
        let a = Img2ImgNoise::from_seed(7, dims, 0, &Device::Cpu).expect("noise");
        let b = Img2ImgNoise::from_seed(8, dims, 0, &Device::Cpu).expect("noise");
        let var = |t: &candle_core::Tensor| -> f32 {
            t.sqr()
                .and_then(|x| x.mean_all())
                .and_then(|x| x.to_scalar::<f32>())
                .expect("variance")
        };
        let s = slerp(&a.init, &b.init, 0.5).expect("slerp");
        assert!((var(&s) - 1.0).abs() < 0.1, "slerp variance {}", var(&s));
        assert!((var(&a.init) - 1.0).abs() < 0.1);
    }

    #[test]
    fn style_params_reach_the_request_and_the_t_index_list_runs_exactly() {
        use dreamstream_actors::style::{
            PresetMix, ProcessorKind, StyleParams, StyleSource, Weighted,
        };
        let mut params = StyleParams {
            processor: ProcessorKind::Diffusion,
            source: StyleSource::Prompt {
                prompt: "a stone castle".into(),
                negative_prompt: None,
                blend: Some(Weighted {
                    items: vec![("a red fox".into(), 0.25), ("a stone castle".into(), 0.75)],
                    interpolation: Interpolation::Slerp,
                    normalize: false,
                }),
            },
            max_side: 64,
            ..StyleParams::preset(PresetMix::single(0).expect("mix"))
        };
        params.diffusion.model = Some("sd-turbo".into());
        params.diffusion.seeds = Some(Weighted::linear(vec![(7, 0.5), (8, 0.5)]));
        params.diffusion.steps = 4;
        params.diffusion.t_index_list = Some(vec![1, 1, 3]);
        params.stamp_version();
        params.validate().expect("valid");
        let r = proc().request_from_params(&params).expect("request");
        assert_eq!(
            r.prompts,
            prompts(&[("a red fox", 0.25), ("a stone castle", 0.75)])
        );
        assert_eq!(r.seeds, vec![(7, 0.5), (8, 0.5)]);
        assert_eq!(r.blend.prompt_interpolation, Interpolation::Slerp);
        assert!(!r.blend.normalize_prompt_weights);
        assert_eq!(r.blend.seed_interpolation, Interpolation::Linear);
        assert!(r.blend.normalize_seed_weights);
        assert_eq!(r.steps, 4);
        assert_eq!(
            r.schedule,
            StepSelection::TIndexList(vec![1, 3]),
            "a repeat runs once"
        );
        let (_, info) = proc().run(&frame(), &r).expect("runs");
        // Euler trailing, 4 steps: 999, 749, 499, 249 (the reference's all_timesteps).
        assert_eq!(info.timesteps, vec![749.0, 249.0]);
        assert_eq!(info.unet_steps.len(), 2);
        // A 50-step schedule (Daydream's num_inference_steps default) on a
        // 1-to-4-pass family: the list's length is the passes.
        params.diffusion.steps = 50;
        params.diffusion.t_index_list = Some(vec![20, 35]);
        let r = proc().request_from_params(&params).expect("request");
        let (_, info) = proc().run(&frame(), &r).expect("runs");
        assert_eq!(info.timesteps, vec![599.0, 299.0]);
        // Without a list: the strength over `steps` passes, as before.
        params.diffusion.t_index_list = None;
        params.diffusion.steps = 4;
        params.strength = 0.5;
        let r = proc().request_from_params(&params).expect("request");
        assert_eq!(r.schedule, StepSelection::Strength(0.5));
        let (_, info) = proc().run(&frame(), &r).expect("runs");
        assert_eq!(info.timesteps, vec![499.0, 249.0]);
        // Too many passes for the family.
        let mut r = req("sd-turbo", Family::SdTurbo);
        r.steps = 50;
        r.schedule = StepSelection::TIndexList(vec![1, 2, 3, 4, 5]);
        assert!(matches!(
            err(&r),
            DiffusionError::StepsOutOfRange {
                steps: 5,
                max: 4,
                ..
            }
        ));
    }

    #[test]
    fn jpeg_in_jpeg_out_through_the_processor_trait() {
        use dreamstream_actors::style::{ProcessorKind, StyleParams, StyleSource};
        use gpu_node::Processor;
        let p = proc();
        let jpeg = image_io::encode_jpeg(&frame(), 90).expect("jpeg");
        let mut params = StyleParams {
            processor: ProcessorKind::Diffusion,
            source: StyleSource::Prompt {
                prompt: "a cat".into(),
                negative_prompt: None,
                blend: None,
            },
            max_side: 64,
            ..StyleParams::preset(dreamstream_actors::style::PresetMix::single(0).expect("mix"))
        };
        params.diffusion.model = Some("sd-turbo".into());
        params.diffusion.steps = 2;
        params.strength = 0.5;
        let before = p.calls();
        let out = p.process(&jpeg, &params).expect("processes");
        assert_eq!((out.width, out.height), (64, 48));
        assert!(p.calls() > before);
        let caps = p.capabilities();
        assert_eq!(caps.processor, ProcessorKind::Diffusion);
        assert!(caps.prompts);
        assert_eq!(caps.models, vec!["sd-turbo", "sd15", "sdxl-turbo"]);
    }
}

/// Each family runs its model card's scheduler on the folder's noise schedule;
/// an SD 1.5 folder's PNDM config becomes DDIM (leading, as diffusers' default).
#[test]
fn families_pick_their_schedulers() {
    use gpu_node::diffusion::config::{PredictionType, SchedulerKind, TimestepSpacing};
    let cfg = |dir: &str| {
        testdata(&format!(
            "diffusion-reference/models/{dir}/scheduler/scheduler_config.json"
        ))
    };
    let c = SchedulerConfig::for_family(&cfg("sdxl_tiny"), Family::SdxlTurbo).expect("config");
    assert_eq!(
        (c.kind, c.timestep_spacing),
        (SchedulerKind::EulerAncestral, TimestepSpacing::Trailing)
    );
    let c = SchedulerConfig::for_family(&cfg("sdxl_tiny"), Family::SdxlLightning).expect("config");
    assert_eq!(
        (c.kind, c.timestep_spacing),
        (SchedulerKind::Euler, TimestepSpacing::Trailing)
    );
    assert_eq!(
        c.for_steps(Family::SdxlLightning, 1).prediction_type,
        PredictionType::Sample
    );
    assert_eq!(
        c.for_steps(Family::SdxlLightning, 4).prediction_type,
        PredictionType::Epsilon
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let pndm = tmp.path().join("scheduler_config.json");
    std::fs::write(
        &pndm,
        r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
            "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#,
    )
    .expect("write");
    let c = SchedulerConfig::for_family(&pndm, Family::Sd15).expect("config");
    assert_eq!(
        (c.kind, c.timestep_spacing),
        (SchedulerKind::Ddim, TimestepSpacing::Leading)
    );
    let s = Scheduler::new(&c, 20).expect("scheduler");
    assert_eq!(&s.timesteps()[..3], &[951.0, 901.0, 851.0]);
}

/// v-prediction and "sample" prediction give the same step as the equivalent
/// epsilon prediction (no reference case covers them, so check the algebra).
#[test]
fn v_and_sample_prediction_agree_with_epsilon() {
    use gpu_node::diffusion::config::{PredictionType, SchedulerKind, TimestepSpacing};
    let r = reference();
    let base = SchedulerConfig::from_value(
        &cases_json(),
        "EulerDiscreteScheduler",
        &r["cases"][0]["scheduler"]["config"],
    )
    .expect("config");
    let dev = Device::Cpu;
    let x = Tensor::new(&[0.7f32, -1.3, 2.1, 0.05], &dev).expect("x");
    let eps = Tensor::new(&[0.3f32, -0.8, 1.1, -0.2], &dev).expect("eps");
    for kind in [SchedulerKind::Euler, SchedulerKind::Ddim] {
        let mut e = base.clone();
        e.kind = kind;
        e.timestep_spacing = TimestepSpacing::Trailing;
        let se = Scheduler::new(&e, 4).expect("scheduler");
        let want = se.step(&eps, 1, Some(2), &x, None).expect("step");
        // x0 and v from eps, in each scheduler's parametrisation.
        let (x0, v) = match kind {
            SchedulerKind::Ddim => {
                let t = se.timesteps()[1] as usize;
                let a = alpha_cumprod(&e, t);
                let x0 = ((&x - (&eps * (1.0 - a).sqrt()).unwrap()).unwrap() / a.sqrt()).unwrap();
                let v = ((&eps * a.sqrt()).unwrap() - (&x0 * (1.0 - a).sqrt()).unwrap()).unwrap();
                (x0, v)
            }
            _ => {
                let s = se.sigmas()[1] as f64;
                let x0 = (&x - (&eps * s).unwrap()).unwrap();
                // x0 = v·(−s/√(s²+1)) + x/(s²+1)  ⇒  v = (x/(s²+1) − x0)·√(s²+1)/s
                let v = (((&x / (s * s + 1.0)).unwrap() - &x0).unwrap()
                    * ((s * s + 1.0).sqrt() / s))
                    .unwrap();
                (x0, v)
            }
        };
        for (pred, out) in [
            (PredictionType::VPrediction, v),
            (PredictionType::Sample, x0),
        ] {
            let mut c = e.clone();
            c.prediction_type = pred;
            let got = Scheduler::new(&c, 4)
                .expect("scheduler")
                .step(&out, 1, Some(2), &x, None)
                .expect("step");
            let d = diff(&got, &want).expect("diff");
            assert!(d.max_abs < 1e-5, "{kind:?} {pred:?}: {d:?}");
        }
    }
}

/// alphas_cumprod[t] for the scaled-linear schedule, in float64 (test oracle).
fn alpha_cumprod(c: &SchedulerConfig, t: usize) -> f64 {
    let n = c.num_train_timesteps;
    let (a, b) = (c.beta_start.sqrt(), c.beta_end.sqrt());
    (0..=t)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / (n - 1) as f64).powi(2);
            1.0 - beta
        })
        .product()
}

/// A model loads in the background while the processor keeps serving: the
/// current model never stops, the new id is "loading" (never "unknown") until it
/// is in, and a reload drops the old weights' cached embeddings.
#[test]
fn models_load_in_the_background_without_stopping_the_current_one() {
    use std::sync::Arc;

    use gpu_node::diffusion::{DiffusionError, DiffusionProcessor, DiffusionRequest, ModelSpec};
    use gpu_node::image_io::RgbImage;

    let spec = |id: &str, family: Family, dir: &str| ModelSpec {
        id: id.into(),
        family,
        path: testdata(&format!("diffusion-reference/models/{dir}")),
        unet_file: None,
    };
    let p = Arc::new(
        DiffusionProcessor::load(
            &[spec("sd-turbo", Family::SdTurbo, "sd21_tiny")],
            &Device::Cpu,
        )
        .expect("loads"),
    );
    let frame = RgbImage::new(64, 64, vec![100; 64 * 64 * 3]);
    let mut turbo = DiffusionRequest::new("a cat", Family::SdTurbo);
    turbo.width = 64;
    turbo.height = 64;
    let mut xl = turbo.clone();
    xl.model = Some("sdxl-turbo".into());

    // Missing files are refused before any thread starts.
    let bad = spec("broken", Family::SdTurbo, "no_such_model");
    assert!(matches!(
        p.load_in_background(bad),
        Err(DiffusionError::MissingFiles { .. })
    ));

    let handle = p
        .load_in_background(spec("sdxl-turbo", Family::SdxlTurbo, "sdxl_tiny"))
        .expect("starts");
    let mut served = 0;
    while !handle.is_finished() {
        p.run(&frame, &turbo)
            .expect("the current model keeps serving");
        served += 1;
        match p.run(&frame, &xl) {
            Ok(_) => {}
            Err(DiffusionError::ModelLoading { id }) => assert_eq!(id, "sdxl-turbo"),
            Err(e) => panic!("the new model is loading, not: {e}"),
        }
    }
    handle.join().expect("thread").expect("loaded");
    p.run(&frame, &xl).expect("the new model serves");
    assert!(p.model_ids().contains(&"sdxl-turbo".to_string()));
    println!("served {served} frames during the load");

    // Reload sd-turbo: the cached embedding of its prompt is dropped with the old weights.
    let before = p.text_encodes();
    p.run(&frame, &turbo).expect("cached");
    assert_eq!(p.text_encodes(), before);
    let h = p
        .load_in_background(spec("sd-turbo", Family::SdTurbo, "sd21_tiny"))
        .expect("starts");
    h.join().expect("thread").expect("reloaded");
    p.run(&frame, &turbo).expect("reloaded model serves");
    assert_eq!(
        p.text_encodes(),
        before + 1,
        "re-encoded with the new weights"
    );
    assert_eq!(p.model_ids(), vec!["sd-turbo", "sdxl-turbo"]);
}

/// SDXL-Lightning ships its distilled UNet as a separate file: `unet_file`
/// replaces the folder's UNet (and is named when missing); 1 step runs with
/// "sample" prediction.
#[test]
fn sdxl_lightning_takes_its_own_unet_file() {
    use gpu_node::diffusion::{DiffusionError, DiffusionProcessor, DiffusionRequest, ModelSpec};
    use gpu_node::image_io::RgbImage;

    let dir = testdata("diffusion-reference/models/sdxl_tiny");
    let tmp = tempfile::tempdir().expect("tmp");
    let unet = tmp.path().join("sdxl_lightning_1step_unet.safetensors");
    std::fs::copy(dir.join("unet/diffusion_pytorch_model.safetensors"), &unet).expect("copy");
    let spec = |unet_file: PathBuf| ModelSpec {
        id: "sdxl-lightning".into(),
        family: Family::SdxlLightning,
        path: dir.clone(),
        unet_file: Some(unet_file),
    };
    let missing = tmp.path().join("no_such_unet.safetensors");
    match DiffusionProcessor::load(&[spec(missing)], &Device::Cpu) {
        Err(DiffusionError::MissingFiles { files, .. }) => {
            assert!(
                files.iter().any(|f| f.contains("no_such_unet.safetensors")),
                "{files:?}"
            );
        }
        other => panic!("expected missing files, got {:?}", other.err()),
    }
    let p = DiffusionProcessor::load(&[spec(unet)], &Device::Cpu).expect("loads");
    let mut r = DiffusionRequest::new("a cat", Family::SdxlLightning);
    r.width = 64;
    r.height = 64;
    r.steps = 1;
    r.schedule = gpu_node::diffusion::pipeline::StepSelection::Strength(1.0);
    let (out, info) = p
        .run(&RgbImage::new(64, 64, vec![90; 64 * 64 * 3]), &r)
        .expect("runs");
    assert_eq!(info.unet_steps.len(), 1);
    assert_eq!((out.width, out.height), (64, 64));
    r.steps = 9;
    assert!(matches!(
        p.run(&RgbImage::new(64, 64, vec![90; 64 * 64 * 3]), &r),
        Err(DiffusionError::StepsOutOfRange { max: 8, .. })
    ));
}
