//! The Base models' speaker encoder: ECAPA-TDNN on ggml over the log-mel
//! front end ([`crate::audio::mel`]), turning 24 kHz reference audio into the
//! x-vector the talker takes as the speaker (the reference's
//! `Qwen3TTSSpeakerEncoder`).
//!
//! Activations are `[time, channels]` (time fastest) here: the TDNN convs pad
//! by reflection and pool over time, which ggml does along `ne[0]`.

use std::sync::Arc;

use crate::audio::mel::log_mel_spectrogram;
use crate::config::SpeakerEncoderConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, StoredTensor, Tensor};
use crate::gguf_schema::tensors::{self, speaker as names};
use crate::layers::{add_bias, concat_columns, conv1d_time_major};
use crate::model_file::GgufFile;
use crate::weights::{load_weights_with, upcast_to_f32, WeightSource};

/// Frames the TDNN stack needs at least (its widest reflect padding is 4).
pub const MIN_FRAMES: usize = 9;

/// A conv layer: kernel `[k, c_in, c_out]` (F32) and bias `[c_out]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub weight: StoredTensor,
    pub bias: StoredTensor,
}

impl Conv {
    fn load(src: &WeightSource, stem: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let name = tensors::join(stem, tensors::WEIGHT);
        let k = src.any(&name)?.ne()[0] as usize;
        Ok(Self {
            weight: src.tensor(&name, &[k, c_in, c_out])?,
            bias: src.tensor(&tensors::join(stem, tensors::BIAS), &[c_out])?,
        })
    }
}

/// An SE-Res2Net block.
#[derive(Clone, Debug)]
pub struct SeRes2NetBlock {
    pub tdnn1: Conv,
    /// `res2net_scale − 1` convs over the channel groups.
    pub res2net: Vec<Conv>,
    pub tdnn2: Conv,
    pub se_conv1: Conv,
    pub se_conv2: Conv,
    pub dilation: usize,
}

/// The speaker encoder's weights.
#[derive(Clone, Debug)]
pub struct SpeakerEncoderWeights {
    pub first: Conv,
    pub blocks: Vec<SeRes2NetBlock>,
    pub mfa: Conv,
    pub asp_tdnn: Conv,
    pub asp_conv: Conv,
    pub fc: Conv,
}

impl SpeakerEncoderWeights {
    fn load(src: &WeightSource, cfg: &SpeakerEncoderConfig) -> Result<Self> {
        let ch = &cfg.channels;
        let n_blocks = ch.len() - 2;
        let mut blocks = Vec::new();
        for b in 1..=n_blocks {
            let stem = names::block(b);
            let part = |p: &str| tensors::join(&stem, p);
            let (c_in, c) = (ch[b - 1], ch[b]);
            let width = c / cfg.res2net_scale;
            blocks.push(SeRes2NetBlock {
                tdnn1: Conv::load(src, &part(names::TDNN1), c_in, c)?,
                res2net: (0..cfg.res2net_scale - 1)
                    .map(|i| Conv::load(src, &part(&names::res2net_conv(i)), width, width))
                    .collect::<Result<_>>()?,
                tdnn2: Conv::load(src, &part(names::TDNN2), c, c)?,
                se_conv1: Conv::load(src, &part(names::SE_CONV1), c, cfg.se_channels)?,
                se_conv2: Conv::load(src, &part(names::SE_CONV2), cfg.se_channels, c)?,
                dilation: cfg.dilations[b],
            });
        }
        let mfa_in: usize = ch[1..=n_blocks].iter().sum();
        let mfa = *ch.last().expect("channels checked by the config");
        Ok(Self {
            first: Conv::load(src, names::FIRST_TDNN, cfg.mel_dim, ch[0])?,
            blocks,
            mfa: Conv::load(src, names::MFA, mfa_in, mfa)?,
            asp_tdnn: Conv::load(src, names::ASP_TDNN, mfa * 3, cfg.attention_channels)?,
            asp_conv: Conv::load(src, names::ASP_CONV, cfg.attention_channels, mfa)?,
            fc: Conv::load(src, names::FC, mfa * 2, cfg.dim)?,
        })
    }
}

/// TDNN: reflect-"same"-padded conv over `x` `[t, c_in]` → `[t, c_out]`,
/// then ReLU when `relu`. Kernel `[k, c_in, c_out]` (F32).
fn tdnn<'a>(
    ctx: &'a Context,
    conv: &Conv,
    x: Tensor<'a>,
    dilation: usize,
    relu: bool,
) -> Tensor<'a> {
    let kernel = ctx.stored(&conv.weight);
    let k = kernel.ne()[0];
    let pad = dilation * (k as usize - 1);
    let xp = if pad > 0 {
        ctx.pad_reflect(x, (pad / 2) as i32, (pad - pad / 2) as i32)
    } else {
        x
    };
    let bias = ctx.stored(&conv.bias);
    let y = conv1d_time_major(ctx, xp, kernel, Some(bias), 1, dilation);
    if relu {
        ctx.relu(y)
    } else {
        y
    }
}

/// A 1×1 conv applied to one vector `v` `[c_in, 1]` → `[c_out, 1]`.
fn pointwise<'a>(ctx: &'a Context, conv: &Conv, v: Tensor<'a>) -> Tensor<'a> {
    let kernel = ctx.stored(&conv.weight);
    let [_, c_in, c_out, _] = kernel.ne();
    let y = ctx.mul_mat(ctx.reshape(kernel, &[c_in, c_out]), v);
    add_bias(ctx, y, Some(ctx.stored(&conv.bias)))
}

/// `sqrt(max(v, 1e-12))`.
fn safe_sqrt<'a>(ctx: &'a Context, v: Tensor<'a>) -> Tensor<'a> {
    ctx.sqrt(ctx.clamp(v, 1e-12, f32::MAX))
}

/// An SE-Res2Net block.
fn se_res2net<'a>(ctx: &'a Context, blk: &SeRes2NetBlock, x: Tensor<'a>) -> Tensor<'a> {
    let d = blk.dilation;
    let scale = blk.res2net.len() + 1;
    let u = tdnn(ctx, &blk.tdnn1, x, 1, true);
    let [t, c, ..] = u.ne();
    let width = c as usize / scale;
    let es = u.element_size();
    let chunk = |i: usize| {
        ctx.view(
            u,
            &[t, width as i64],
            &[t as usize * es],
            i * width * t as usize * es,
        )
    };
    let mut ys = vec![chunk(0)];
    for i in 1..scale {
        let input = if i == 1 {
            chunk(1)
        } else {
            ctx.add(chunk(i), ys[i - 1])
        };
        ys.push(tdnn(ctx, &blk.res2net[i - 1], input, d, true));
    }
    let u = tdnn(ctx, &blk.tdnn2, concat_columns(ctx, &ys), 1, true);
    // Squeeze-excitation: a channel gate from the time average.
    let m = ctx.reshape(ctx.mean(u), &[c, 1]);
    let m = ctx.relu(pointwise(ctx, &blk.se_conv1, m));
    let m = ctx.sigmoid(pointwise(ctx, &blk.se_conv2, m));
    ctx.add(ctx.mul(u, ctx.reshape(m, &[1, c])), x)
}

/// Mean and standard deviation over time of `z` `[t, c]` with weights
/// `p` (`None`: uniform), each `[1, c]`.
fn statistics<'a>(
    ctx: &'a Context,
    z: Tensor<'a>,
    p: Option<Tensor<'a>>,
) -> (Tensor<'a>, Tensor<'a>) {
    match p {
        None => {
            let mu = ctx.mean(z);
            let var = ctx.mean(ctx.sqr(ctx.sub(z, mu)));
            (mu, safe_sqrt(ctx, var))
        }
        Some(p) => {
            let mu = ctx.sum_rows(ctx.mul(p, z));
            let var = ctx.sum_rows(ctx.mul(p, ctx.sqr(ctx.sub(z, mu))));
            (mu, safe_sqrt(ctx, var))
        }
    }
}

/// The x-vector graph over `frames` log-mel frames; returns (mel input, x-vector).
fn build<'a>(
    ctx: &'a Context,
    w: &SpeakerEncoderWeights,
    cfg: &SpeakerEncoderConfig,
    frames: usize,
) -> (Tensor<'a>, Tensor<'a>) {
    let mel = ctx
        .new_tensor(GgmlType::F32, &[frames as i64, cfg.mel_dim as i64])
        .set_input();
    let mut h = tdnn(ctx, &w.first, mel, cfg.dilations[0], true);
    let mut outs = Vec::new();
    for blk in &w.blocks {
        h = se_res2net(ctx, blk, h);
        outs.push(h);
    }
    let mfa_dilation = cfg.dilations[w.blocks.len() + 1];
    let z = tdnn(ctx, &w.mfa, concat_columns(ctx, &outs), mfa_dilation, true);

    // Attentive statistics pooling.
    let (mu, sd) = statistics(ctx, z, None);
    let a = concat_columns(ctx, &[z, ctx.repeat(mu, z), ctx.repeat(sd, z)]);
    let a = ctx.tanh(tdnn(ctx, &w.asp_tdnn, a, 1, true));
    let a = tdnn(ctx, &w.asp_conv, a, 1, false);
    let attention = ctx.soft_max_ext(a, None, 1.0); // over time, per channel
    let (mu, sd) = statistics(ctx, z, Some(attention));
    let c = mu.ne()[1];
    let pooled = ctx.concat(ctx.reshape(mu, &[c, 1]), ctx.reshape(sd, &[c, 1]), 0); // [2c, 1]
    (mel, pointwise(ctx, &w.fc, pooled))
}

/// The loaded speaker encoder (immutable; each call builds its own graph).
pub struct SpeakerEncoder {
    pub weights: SpeakerEncoderWeights,
    pub config: SpeakerEncoderConfig,
}

impl SpeakerEncoder {
    /// Loads the `spk.*` tensors of a Base model file (`None` for models
    /// without a speaker encoder), stored F32.
    pub fn from_file(file: &GgufFile) -> Result<Option<Self>> {
        let Some(config) = SpeakerEncoderConfig::from_gguf(file)? else {
            return Ok(None);
        };
        let store = load_weights_with(
            file,
            |name| name.starts_with(names::PREFIX),
            |name, _| upcast_to_f32(file, name),
        )?;
        let weights =
            SpeakerEncoderWeights::load(&WeightSource::new(&store, file.path()), &config)?;
        Ok(Some(Self { weights, config }))
    }

    /// Log-mel frames of `samples` (mono, at the encoder's sample rate).
    pub fn mel(&self, samples: &[f32]) -> Result<Vec<f32>> {
        log_mel_spectrogram(samples, self.config.sample_rate, self.config.mel_dim)
    }

    /// The x-vector of a reference clip (mono, at the encoder's sample rate),
    /// computed on `backend`.
    pub fn embed(&self, backend: &Arc<Backend>, samples: &[f32]) -> Result<Vec<f32>> {
        let mel = self.mel(samples)?;
        self.embed_mel(backend, &mel)
    }

    /// The x-vector from log-mel frames `[T, mel_dim]` (row-major).
    pub fn embed_mel(&self, backend: &Arc<Backend>, mel: &[f32]) -> Result<Vec<f32>> {
        let n_mels = self.config.mel_dim;
        let frames = mel.len() / n_mels;
        if frames < MIN_FRAMES || !mel.len().is_multiple_of(n_mels) {
            return Err(Error::bad_audio(
                "reference audio",
                format!(
                    "{frames} mel frames for the speaker encoder; at least {MIN_FRAMES} needed"
                ),
            ));
        }
        // The graph takes time fastest: transpose [T, mel] → [mel, T] rows.
        let mut by_channel = vec![0f32; mel.len()];
        for t in 0..frames {
            for m in 0..n_mels {
                by_channel[m * frames + t] = mel[t * n_mels + m];
            }
        }
        let nodes = 1024 + self.config.res2net_scale * 64;
        let mut graph = OwnedGraph::build(backend, nodes, |ctx| {
            let (mel, xvec) = build(ctx, &self.weights, &self.config, frames);
            ((ctx.slot(mel), ctx.slot(xvec)), vec![xvec])
        });
        let (mel_in, xvec) = *graph.io();
        graph.compute(|g| g.tensor(mel_in).set_f32(&by_channel))?;
        Ok(graph.tensor(xvec).get_f32())
    }
}
