//! diffusers' `UNet2DConditionModel` for SD 1.x/2.x and SDXL.
//!
//! candle-transformers' UNet cannot be used as is: its transformer blocks use
//! the tanh GELU in GEGLU (diffusers uses the exact one), and it has no SDXL
//! added conditioning (`add_time_proj` + `add_embedding` over the pooled text
//! embeds and the six time ids), so its SDXL output differs from diffusers'.
//! We reuse its `ResnetBlock2D`, `Timesteps` and `TimestepEmbedding` (those match
//! diffusers) and write the transformer, the blocks and the wiring here.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

use super::Result;
use super::config::UNetConfig;

fn conv3(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(candle_nn::conv2d(cin, cout, 3, cfg, vb)?)
}

/// Multi-head attention as diffusers' `Attention` (no q/k/v bias, output bias).
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: candle_nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            k: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            v: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            out: candle_nn::linear(dim, dim, vb.pp("to_out").pp("0"))?,
            heads,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, t, dim) = xs.dims3()?;
        let head_dim = dim / self.heads;
        let split = |x: Tensor| -> candle_core::Result<Tensor> {
            let s = x.dim(1)?;
            x.reshape((b, s, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let dtype = xs.dtype();
        // Scores and softmax in float32 even under fp16 (SD 2.x's upcast_attention:
        // fp16 scores overflow); a no-op in float32.
        let q = split(self.q.forward(xs)?)?.to_dtype(DType::F32)?;
        let k = split(self.k.forward(context)?)?.to_dtype(DType::F32)?;
        let v = split(self.v.forward(context)?)?;
        let scores = (q.matmul(&k.t()?)? * (head_dim as f64).powf(-0.5))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, dim))?;
        Ok(self.out.forward(&out)?)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let ln = |n: &str| candle_nn::layer_norm(dim, 1e-5, vb.pp(n));
        let inner = dim * 4;
        Ok(Self {
            norm1: ln("norm1")?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: ln("norm2")?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads)?,
            norm3: ln("norm3")?,
            ff_in: candle_nn::linear(dim, inner * 2, vb.pp("ff.net.0.proj"))?,
            ff_out: candle_nn::linear(inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let n = self.norm1.forward(xs)?;
        let xs = (self.attn1.forward(&n, &n)? + xs)?;
        let xs = (self.attn2.forward(&self.norm2.forward(&xs)?, context)? + &xs)?;
        let h = self.ff_in.forward(&self.norm3.forward(&xs)?)?;
        let half = h.dim(D::Minus1)? / 2;
        // GEGLU with the exact (erf) GELU, as diffusers.
        let g = (h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?)?;
        Ok((self.ff_out.forward(&g)? + xs)?)
    }
}

enum Proj {
    Linear(Linear),
    Conv(Conv2d),
}

/// diffusers' `Transformer2DModel` (continuous input).
struct Transformer2D {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

impl Transformer2D {
    fn new(vb: VarBuilder, ch: usize, heads: usize, layers: usize, c: &UNetConfig) -> Result<Self> {
        let norm = candle_nn::group_norm(c.norm_num_groups, ch, 1e-6, vb.pp("norm"))?;
        let proj = |name: &str| -> Result<Proj> {
            Ok(if c.use_linear_projection {
                Proj::Linear(candle_nn::linear(ch, ch, vb.pp(name))?)
            } else {
                Proj::Conv(candle_nn::conv2d(
                    ch,
                    ch,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..layers)
            .map(|i| {
                TransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i.to_string()),
                    ch,
                    c.cross_attention_dim,
                    heads,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let n = self.norm.forward(xs)?;
        let to_seq = |x: &Tensor| x.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let mut s = match &self.proj_in {
            Proj::Conv(p) => to_seq(&p.forward(&n)?)?,
            Proj::Linear(p) => p.forward(&to_seq(&n)?)?,
        };
        for blk in &self.blocks {
            s = blk.forward(&s, context)?;
        }
        let to_img = |x: &Tensor| x.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous();
        let out = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_img(&s)?)?,
            Proj::Linear(p) => to_img(&p.forward(&s)?)?,
        };
        Ok((out + xs)?)
    }
}

struct Layer {
    resnet: ResnetBlock2D,
    attn: Option<Transformer2D>,
}

struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Conv2d>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Conv2d>,
}

struct MidBlock {
    resnet0: ResnetBlock2D,
    attn: Transformer2D,
    resnet1: ResnetBlock2D,
}

/// SDXL's `text_time` added conditioning.
struct TextTime {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// The added conditioning SDXL's UNet takes beside the text states.
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// Pooled, projected embeds of the second text encoder (B, P).
    pub text_embeds: Tensor,
    /// [orig_h, orig_w, crop_top, crop_left, target_h, target_w] per batch row (B, 6).
    pub time_ids: Tensor,
}

pub struct UNet {
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTime>,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
}

impl UNet {
    pub fn new(vb: VarBuilder, c: &UNetConfig) -> Result<Self> {
        let Some(first) = c.blocks.first() else {
            return Err(candle_core::Error::Msg("a UNet needs at least one block".into()).into());
        };
        let ch0 = first.out_channels;
        let temb = ch0 * 4;
        let resnet = |vb: VarBuilder, cin: usize, cout: usize, scale: f64| {
            ResnetBlock2D::new(
                vb,
                cin,
                ResnetBlock2DConfig {
                    out_channels: Some(cout),
                    temb_channels: Some(temb),
                    // Every UNet resnet uses the config's groups (candle's own blocks hard-code 32).
                    groups: c.norm_num_groups,
                    groups_out: None,
                    eps: c.norm_eps,
                    use_in_shortcut: None,
                    output_scale_factor: scale,
                },
            )
        };
        let text_time = match c.text_time {
            Some((time_dim, in_dim)) => Some(TextTime {
                time_proj: Timesteps::new(time_dim, c.flip_sin_to_cos, c.freq_shift),
                embedding: TimestepEmbedding::new(vb.pp("add_embedding"), in_dim, temb)?,
            }),
            None => None,
        };
        let n = c.blocks.len();
        let mut down = Vec::with_capacity(n);
        let mut cin = ch0;
        for (i, b) in c.blocks.iter().enumerate() {
            let vbb = vb.pp("down_blocks").pp(i.to_string());
            let mut layers = Vec::new();
            for j in 0..c.layers_per_block {
                let r_in = if j == 0 { cin } else { b.out_channels };
                let resnet = resnet(
                    vbb.pp("resnets").pp(j.to_string()),
                    r_in,
                    b.out_channels,
                    1.0,
                )?;
                let attn = if b.cross_attention {
                    Some(Transformer2D::new(
                        vbb.pp("attentions").pp(j.to_string()),
                        b.out_channels,
                        b.heads,
                        b.transformer_layers,
                        c,
                    )?)
                } else {
                    None
                };
                layers.push(Layer { resnet, attn });
            }
            let downsample = if i + 1 < n {
                let cfg = Conv2dConfig {
                    padding: c.downsample_padding,
                    stride: 2,
                    ..Default::default()
                };
                Some(candle_nn::conv2d(
                    b.out_channels,
                    b.out_channels,
                    3,
                    cfg,
                    vbb.pp("downsamplers.0.conv"),
                )?)
            } else {
                None
            };
            down.push(DownBlock { layers, downsample });
            cin = b.out_channels;
        }
        let last = &c.blocks[n - 1];
        let vbm = vb.pp("mid_block");
        let mid = MidBlock {
            resnet0: resnet(
                vbm.pp("resnets.0"),
                last.out_channels,
                last.out_channels,
                c.mid_block_scale_factor,
            )?,
            attn: Transformer2D::new(
                vbm.pp("attentions.0"),
                last.out_channels,
                last.heads,
                last.transformer_layers,
                c,
            )?,
            resnet1: resnet(
                vbm.pp("resnets.1"),
                last.out_channels,
                last.out_channels,
                c.mid_block_scale_factor,
            )?,
        };
        let mut up = Vec::with_capacity(n);
        let rev: Vec<_> = c.blocks.iter().rev().collect();
        let mut prev_out = last.out_channels;
        for (i, b) in rev.iter().enumerate() {
            let vbb = vb.pp("up_blocks").pp(i.to_string());
            let out = b.out_channels;
            let input = rev[(i + 1).min(n - 1)].out_channels;
            let num = c.layers_per_block + 1;
            let mut layers = Vec::new();
            for j in 0..num {
                let skip = if j + 1 == num { input } else { out };
                let r_in = if j == 0 { prev_out } else { out };
                let resnet = resnet(vbb.pp("resnets").pp(j.to_string()), r_in + skip, out, 1.0)?;
                let attn = if b.cross_attention {
                    Some(Transformer2D::new(
                        vbb.pp("attentions").pp(j.to_string()),
                        out,
                        b.heads,
                        b.transformer_layers,
                        c,
                    )?)
                } else {
                    None
                };
                layers.push(Layer { resnet, attn });
            }
            let upsample = if i + 1 < n {
                Some(conv3(out, out, 1, vbb.pp("upsamplers.0.conv"))?)
            } else {
                None
            };
            up.push(UpBlock { layers, upsample });
            prev_out = out;
        }
        Ok(Self {
            time_proj: Timesteps::new(ch0, c.flip_sin_to_cos, c.freq_shift),
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), ch0, temb)?,
            text_time,
            conv_in: conv3(c.in_channels, ch0, 1, vb.pp("conv_in"))?,
            down,
            mid,
            up,
            norm_out: candle_nn::group_norm(
                c.norm_num_groups,
                ch0,
                c.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv3(ch0, c.out_channels, 1, vb.pp("conv_out"))?,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// One UNet call. `timestep` is the (float) training timestep shared by the batch;
    /// `added` is required for SDXL models and ignored otherwise.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let b = sample.dim(0)?;
        let dtype = sample.dtype();
        let device = sample.device();
        // Timestep features in float32 as diffusers, then the model's dtype.
        let t = Tensor::full(timestep as f32, (b,), device)?;
        let t_emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        if let Some(tt) = &self.text_time {
            let added = added.ok_or_else(|| {
                candle_core::Error::Msg("this SDXL UNet needs text_embeds and time_ids".into())
            })?;
            let ids = added
                .time_ids
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?;
            let time_embeds = tt
                .time_proj
                .forward(&ids)?
                .reshape((b, ()))?
                .to_dtype(dtype)?;
            let add = Tensor::cat(
                &[&added.text_embeds.to_dtype(dtype)?, &time_embeds],
                D::Minus1,
            )?;
            emb = (emb + tt.embedding.forward(&add)?)?;
        }
        let mut h = self.conv_in.forward(sample)?;
        let mut skips = vec![h.clone()];
        for blk in &self.down {
            for l in &blk.layers {
                h = l.resnet.forward(&h, Some(&emb))?;
                if let Some(a) = &l.attn {
                    h = a.forward(&h, context)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &blk.downsample {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.resnet0.forward(&h, Some(&emb))?;
        h = self.mid.attn.forward(&h, context)?;
        h = self.mid.resnet1.forward(&h, Some(&emb))?;
        for blk in &self.up {
            for l in &blk.layers {
                let skip = skips.pop().ok_or_else(|| {
                    candle_core::Error::Msg("UNet skip connections exhausted".into())
                })?;
                h = Tensor::cat(&[&h, &skip], 1)?;
                h = l.resnet.forward(&h, Some(&emb))?;
                if let Some(a) = &l.attn {
                    h = a.forward(&h, context)?;
                }
            }
            if let Some(u) = &blk.upsample {
                // Nearest 2x, or to the next skip's size when the latent size is odd somewhere.
                let (th, tw) = match skips.last() {
                    Some(s) => (s.dim(2)?, s.dim(3)?),
                    None => (h.dim(2)? * 2, h.dim(3)? * 2),
                };
                h = u.forward(&h.upsample_nearest2d(th, tw)?)?;
            }
        }
        let h = candle_nn::ops::silu(&self.norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}
