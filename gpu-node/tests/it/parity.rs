//! The candle networks against onnxruntime's outputs (../shared/testdata/style-reference).

use candle_core::{Device, Tensor};
use gpu_node::neural_style::embedded;
use gpu_node::neural_style::multistyle::{CandleMultiStyle, STYLE_COUNT};

use crate::{net, testdata};

fn npy(name: &str) -> Tensor {
    let path = testdata(&format!("style-reference/{name}"));
    Tensor::read_npy(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// (max, mean) absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "sizes");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len() as f64) as f32)
}

#[derive(serde::Deserialize)]
struct Case {
    case: String,
    network: String,
}

fn cases(network: &str) -> Vec<String> {
    let path = testdata("style-reference/cases.json");
    let text = std::fs::read_to_string(&path).expect("cases.json");
    let all: Vec<Case> = serde_json::from_str(&text).expect("cases.json parses");
    all.into_iter()
        .filter(|c| c.network == network)
        .map(|c| c.case)
        .collect()
}

#[test]
fn multistyle26_matches_onnxruntime() {
    let names = cases("multistyle26");
    assert_eq!(names.len(), 3, "the reference has three 26-style cases");
    for name in names {
        let input = npy(&format!("{name}.input.npy"));
        let (_, _, h, w) = input.dims4().unwrap();
        let weights: [f32; STYLE_COUNT] = values(&npy(&format!("{name}.weights.npy")))
            .try_into()
            .expect("26 weights");
        let want = values(&npy(&format!("{name}.output.npy")));
        let got = net()
            .pool()
            .install(|| {
                net()
                    .multistyle()
                    .forward_nchw(&values(&input), h, w, &weights)
            })
            .unwrap();
        let (max, mean) = diff(&got, &want);
        println!("{name}: max {max:.2e} mean {mean:.2e}");
        assert!(max <= 2e-3 && mean <= 2e-4, "{name}: max {max} mean {mean}");
    }
}

#[test]
fn plain_candle_network_matches_onnxruntime() {
    let plain = CandleMultiStyle::load_bytes(embedded::MULTISTYLE26, &Device::Cpu).unwrap();
    let name = &cases("multistyle26")[0];
    let input = npy(&format!("{name}.input.npy"));
    let weights = npy(&format!("{name}.weights.npy"));
    let got = plain.forward(&input, &weights).unwrap();
    let (max, mean) = diff(&values(&got), &values(&npy(&format!("{name}.output.npy"))));
    println!("{name} (plain candle): max {max:.2e} mean {mean:.2e}");
    assert!(max <= 2e-3 && mean <= 2e-4, "{name}: max {max} mean {mean}");
}

#[test]
fn arbitrary_pair_matches_onnxruntime() {
    let names = cases("arbitrary_predict+arbitrary_transform");
    assert_eq!(names.len(), 1);
    for name in names {
        let style = npy(&format!("{name}.style_input.npy"));
        let vector = net()
            .pool()
            .install(|| net().arbitrary().predict_nhwc(values(&style)))
            .unwrap();
        let (vmax, vmean) = diff(&vector, &values(&npy(&format!("{name}.style_vector.npy"))));
        println!("{name} style vector: max {vmax:.2e} mean {vmean:.2e}");
        let content = npy(&format!("{name}.content_input.npy"));
        let (_, h, w, _) = content.dims4().unwrap();
        let got = net()
            .pool()
            .install(|| {
                net()
                    .arbitrary()
                    .transform_nhwc(values(&content), h, w, &vector)
            })
            .unwrap();
        let (max, mean) = diff(&got, &values(&npy(&format!("{name}.output.npy"))));
        println!("{name} stylized: max {max:.2e} mean {mean:.2e}");
        assert!(mean <= 2e-3, "{name}: stylized mean difference {mean}");
        assert!(
            vmean <= 2e-3,
            "{name}: style vector mean difference {vmean}"
        );
    }
}
