//! The CLIP text encoder (transformers' `CLIPTextModel` and
//! `CLIPTextModelWithProjection`), written here because candle-transformers'
//! CLIP config cannot be built outside that crate and because SD needs several
//! of its outputs at once: the final (layer-normed) hidden states for SD 1.x/2.x,
//! the penultimate layer's output (no final norm) for SDXL, and the pooled
//! (EOS-token) state, projected for SDXL's second encoder.
//!
//! The activation follows the config: `gelu` is the exact erf GELU (OpenCLIP),
//! `quick_gelu` is x·σ(1.702x); candle's `Tensor::gelu` (tanh) would be 10–60×
//! float32 noise off.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::Result;
use super::config::{ClipActivation, ClipConfig};

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let split = |x: Tensor| -> candle_core::Result<Tensor> {
            x.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // transformers scales q before the product; same order here.
        let q = split((self.q.forward(xs)? * (self.head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        Ok(self.out.forward(&out)?)
    }
}

struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl Layer {
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = (xs + self.attn.forward(&self.ln1.forward(xs)?, mask)?)?;
        let m = self.fc1.forward(&self.ln2.forward(&h)?)?;
        let m = match self.act {
            ClipActivation::GeluErf => m.gelu_erf()?,
            ClipActivation::QuickGelu => (&m * candle_nn::ops::sigmoid(&(&m * 1.702)?)?)?,
        };
        Ok((h + self.fc2.forward(&m)?)?)
    }
}

/// All outputs of one encoder call.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Final layer's output after `final_layer_norm` (B, 77, D): SD 1.x/2.x's prompt embeddings.
    pub last_hidden_state: Tensor,
    /// The penultimate layer's output, no final norm (B, 77, D): SDXL's prompt embeddings.
    pub penultimate: Tensor,
    /// `last_hidden_state` at the first EOS token (B, D).
    pub pooled: Tensor,
    /// `pooled` through `text_projection` (B, P), for encoders with a projection.
    pub text_embeds: Option<Tensor>,
}

pub struct ClipTextEncoder {
    token_embedding: candle_nn::Embedding,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
    config: ClipConfig,
}

impl ClipTextEncoder {
    /// `vb` points at the safetensors root (tensors under `text_model.` and `text_projection`).
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> Result<Self> {
        let tm = vb.pp("text_model");
        let d = config.hidden_size;
        let emb = tm.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(config.vocab_size, d, emb.pp("token_embedding"))?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((config.max_position_embeddings, d), "weight")?;
        let ln = |name: &str, vb: &VarBuilder| {
            candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp(name))
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let lb = tm.pp("encoder").pp("layers").pp(i.to_string());
            layers.push(Layer {
                ln1: ln("layer_norm1", &lb)?,
                attn: Attention::new(lb.pp("self_attn"), config)?,
                ln2: ln("layer_norm2", &lb)?,
                fc1: candle_nn::linear(d, config.intermediate_size, lb.pp("mlp").pp("fc1"))?,
                fc2: candle_nn::linear(config.intermediate_size, d, lb.pp("mlp").pp("fc2"))?,
                act: config.activation,
            });
        }
        let final_ln = ln("final_layer_norm", &tm)?;
        let projection = match config.projection_dim {
            Some(p) => Some(candle_nn::linear_no_bias(d, p, vb.pp("text_projection"))?),
            None => None,
        };
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            projection,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Encodes one sequence of exactly `max_position_embeddings` token ids.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<ClipOutput> {
        let t = ids.len();
        let ids_t = Tensor::new(ids, device)?.unsqueeze(0)?;
        let pos = self.position_embedding.i(..t)?;
        let mut h = self.token_embedding.forward(&ids_t)?.broadcast_add(&pos)?;
        let mask = causal_mask(t, device)?.to_dtype(h.dtype())?;
        let mut penultimate = h.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, &mask)?;
            if i + 2 == n {
                penultimate = h.clone();
            }
        }
        let last = self.final_ln.forward(&h)?;
        // transformers pools at the first EOS id (eos_token_id != 2 in these configs).
        let eos = ids
            .iter()
            .position(|&x| x == self.config.eos_token_id)
            .unwrap_or(t - 1);
        let pooled = last.i((.., eos, ..))?;
        let text_embeds = match &self.projection {
            Some(p) => Some(p.forward(&pooled)?),
            None => None,
        };
        Ok(ClipOutput {
            last_hidden_state: last,
            penultimate,
            pooled,
            text_embeds,
        })
    }
}

fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_slice(&mask, (t, t), device)?.to_dtype(DType::F32)?)
}
