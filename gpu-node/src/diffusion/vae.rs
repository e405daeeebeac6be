//! The autoencoder (diffusers' `AutoencoderKL`) from candle-transformers' VAE
//! blocks, wired here because candle's `AutoEncoderKL::encode` hides the
//! posterior's mean and std and only offers `sample()` with its own,
//! unseedable noise. img2img needs `z0 = (mean + std·n)·scale` with the
//! caller's `n` (per-stream fixed noise live; the reference's noise in tests).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
    UpDecoderBlock2D, UpDecoderBlock2DConfig,
};

use super::Result;
use super::config::VaeConfig;

/// The posterior of one encode: a diagonal Gaussian.
#[derive(Debug, Clone)]
pub struct Posterior {
    /// quant_conv output, [mean, logvar] on the channel axis (B, 2·latent, h, w).
    pub moments: Tensor,
    pub mean: Tensor,
    pub std: Tensor,
}

impl Posterior {
    /// `mean + std·noise` (noise from the caller, same shape as `mean`).
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        Ok((&self.mean + (&self.std * noise)?)?)
    }
}

pub struct Vae {
    enc_conv_in: Conv2d,
    enc_down: Vec<DownEncoderBlock2D>,
    enc_mid: UNetMidBlock2D,
    enc_norm: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: UNetMidBlock2D,
    dec_up: Vec<UpDecoderBlock2D>,
    dec_norm: GroupNorm,
    dec_conv_out: Conv2d,
    config: VaeConfig,
}

fn conv3(cin: usize, cout: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(candle_nn::conv2d(cin, cout, 3, cfg, vb)?)
}

impl Vae {
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        if !c.mid_block_add_attention {
            return Err(candle_core::Error::Msg(
                "VAE without mid-block attention is not supported".into(),
            )
            .into());
        }
        let chans = &c.block_out_channels;
        let n = chans.len();
        if n == 0 {
            return Err(candle_core::Error::Msg("a VAE needs at least one block".into()).into());
        }
        let g = c.norm_num_groups;
        // diffusers' AutoencoderKL uses eps 1e-6 in every VAE norm.
        let mid_cfg = UNetMidBlock2DConfig {
            num_layers: 1,
            resnet_eps: 1e-6,
            resnet_groups: Some(g),
            attn_num_head_channels: None,
            output_scale_factor: 1.0,
        };
        let e = vb.pp("encoder");
        let mut enc_down = Vec::with_capacity(n);
        for i in 0..n {
            let cin = if i == 0 { chans[0] } else { chans[i - 1] };
            enc_down.push(DownEncoderBlock2D::new(
                e.pp("down_blocks").pp(i.to_string()),
                cin,
                chans[i],
                DownEncoderBlock2DConfig {
                    num_layers: c.layers_per_block,
                    resnet_eps: 1e-6,
                    resnet_groups: g,
                    output_scale_factor: 1.0,
                    add_downsample: i + 1 < n,
                    // diffusers pads (0,1,0,1) then convolves without padding; candle's
                    // Downsample2D does the same for padding 0.
                    downsample_padding: 0,
                },
            )?);
        }
        let last = chans[n - 1];
        let lat = c.latent_channels;
        let enc_mid = UNetMidBlock2D::new(e.pp("mid_block"), last, None, mid_cfg)?;
        let enc_norm = candle_nn::group_norm(g, last, 1e-6, e.pp("conv_norm_out"))?;
        let enc_conv_out = conv3(last, 2 * lat, e.pp("conv_out"))?;
        let quant_conv = if c.use_quant_conv {
            Some(candle_nn::conv2d(
                2 * lat,
                2 * lat,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        let post_quant_conv = if c.use_post_quant_conv {
            Some(candle_nn::conv2d(
                lat,
                lat,
                1,
                Default::default(),
                vb.pp("post_quant_conv"),
            )?)
        } else {
            None
        };
        let d = vb.pp("decoder");
        let dec_conv_in = conv3(lat, last, d.pp("conv_in"))?;
        let dec_mid = UNetMidBlock2D::new(d.pp("mid_block"), last, None, mid_cfg)?;
        let rev: Vec<usize> = chans.iter().rev().copied().collect();
        let mut dec_up = Vec::with_capacity(n);
        for i in 0..n {
            let cin = if i == 0 { rev[0] } else { rev[i - 1] };
            dec_up.push(UpDecoderBlock2D::new(
                d.pp("up_blocks").pp(i.to_string()),
                cin,
                rev[i],
                UpDecoderBlock2DConfig {
                    num_layers: c.layers_per_block + 1,
                    resnet_eps: 1e-6,
                    resnet_groups: g,
                    output_scale_factor: 1.0,
                    add_upsample: i + 1 < n,
                },
            )?);
        }
        let dec_norm = candle_nn::group_norm(g, chans[0], 1e-6, d.pp("conv_norm_out"))?;
        let dec_conv_out = conv3(chans[0], c.out_channels, d.pp("conv_out"))?;
        Ok(Self {
            enc_conv_in: conv3(c.in_channels, chans[0], e.pp("conv_in"))?,
            enc_down,
            enc_mid,
            enc_norm,
            enc_conv_out,
            quant_conv,
            post_quant_conv,
            dec_conv_in,
            dec_mid,
            dec_up,
            dec_norm,
            dec_conv_out,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Image in [-1, 1], NCHW -> the latent posterior.
    pub fn encode(&self, image: &Tensor) -> Result<Posterior> {
        let mut h = self.enc_conv_in.forward(image)?;
        for b in &self.enc_down {
            h = b.forward(&h)?;
        }
        h = self.enc_mid.forward(&h, None)?;
        h = candle_nn::ops::silu(&self.enc_norm.forward(&h)?)?;
        h = self.enc_conv_out.forward(&h)?;
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&h)?,
            None => h,
        };
        let lat = self.config.latent_channels;
        let mean = moments.narrow(1, 0, lat)?;
        // diffusers clamps the log-variance to [-30, 20] before exp.
        let logvar = moments.narrow(1, lat, lat)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(Posterior { moments, mean, std })
    }

    /// Unscaled latents -> image in about [-1, 1], NCHW.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let h = match &self.post_quant_conv {
            Some(p) => p.forward(latents)?,
            None => latents.clone(),
        };
        let mut h = self.dec_mid.forward(&self.dec_conv_in.forward(&h)?, None)?;
        for b in &self.dec_up {
            h = b.forward(&h)?;
        }
        h = candle_nn::ops::silu(&self.dec_norm.forward(&h)?)?;
        Ok(self.dec_conv_out.forward(&h)?)
    }
}
