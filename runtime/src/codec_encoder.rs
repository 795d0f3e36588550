//! The speech-tokenizer encoder (Mimi-style): 24 kHz audio → 16 codes per
//! 80 ms frame, the reference codes of ICL voice cloning (the reference's
//! `Qwen3TTSTokenizerV2Encoder`).
//!
//! SEANet causal conv stack (25 Hz) → causal transformer (full causal
//! attention, as the reference runs it) → stride-2 downsample (12.5 Hz) →
//! split RVQ: the semantic codebook and the first 15 acoustic ones, each
//! picking the nearest entry by `‖e‖² − 2 e·r`, as torch's `cdist` does.
//! Convs run with time fastest (`[t, c]`, for im2col), the transformer with
//! channels fastest.

use std::path::Path;
use std::sync::Arc;

use crate::config::CodecEncoderConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, StoredTensor, Tensor};
use crate::gguf_schema::tensors::{self, codec_encoder as names};
use crate::gguf_schema::ARCH_TOKENIZER;
use crate::layers::{conv1d_time_major, decoder_block, BlockKind, BlockWeights, KvCache};
use crate::model_file::GgufFile;
use crate::weights::{load_weights_with, upcast_to_f32, WeightSource};

/// SEANet layer indices: the first conv, then per stage a residual block,
/// ELU and strided conv; then ELU and the last conv.
const FIRST_CONV: usize = 0;
const LAST_CONV: usize = 14;

/// Causal conv over `x` `[t, c_in]`: left padding `(k−1)·d + 1 − s`, right
/// padding up to a whole number of strides, zeros or (`replicate`) edge
/// values. Output `[⌈t/s⌉, c_out]`.
fn causal_conv<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    conv: &Conv,
    stride: usize,
    replicate: bool,
) -> Tensor<'a> {
    let kernel = ctx.stored(&conv.weight);
    let bias = conv.bias.as_ref().map(|b| ctx.stored(b));
    let k = kernel.ne()[0] as usize;
    let [t, c, ..] = x.ne();
    let t = t as usize;
    let left = k - stride;
    let right = t.div_ceil(stride) * stride - t;
    let xp = if replicate {
        let es = x.element_size();
        let edge = |at: usize, n: usize| {
            let col = ctx.cont(ctx.view(x, &[1, c], &[t * es], at * es));
            ctx.repeat(col, ctx.new_tensor(GgmlType::F32, &[n as i64, c]))
        };
        let mut xp = x;
        if left > 0 {
            xp = ctx.concat(edge(0, left), xp, 0);
        }
        if right > 0 {
            xp = ctx.concat(xp, edge(t - 1, right), 0);
        }
        xp
    } else {
        ctx.pad(x, [left as i32, 0, 0, 0], [right as i32, 0, 0, 0])
    };
    conv1d_time_major(ctx, xp, kernel, bias, stride, 1)
}

/// A conv layer: kernel `[k, c_in, c_out]` (F32) and bias `[c_out]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub weight: StoredTensor,
    pub bias: Option<StoredTensor>,
}

impl Conv {
    fn load(src: &WeightSource, stem: &str, bias: bool) -> Result<Self> {
        let weight = src.kernel(&tensors::join(stem, tensors::CONV_WEIGHT))?;
        let c_out = weight.ne()[2] as usize;
        let bias = bias
            .then(|| src.tensor(&tensors::join(stem, tensors::CONV_BIAS), &[c_out]))
            .transpose()?;
        Ok(Self { weight, bias })
    }
}

/// A SEANet stage: residual block (two convs), then a strided conv.
#[derive(Clone, Debug)]
pub struct SeanetStage {
    pub residual: [Conv; 2],
    pub downsample: Conv,
    pub stride: usize,
}

/// The encoder's weights.
#[derive(Clone, Debug)]
pub struct CodecEncoderWeights {
    pub first_conv: Conv,
    pub stages: Vec<SeanetStage>,
    pub last_conv: Conv,
    pub blocks: Vec<BlockWeights>,
    pub downsample: Conv,
    pub rvq_first_input_proj: StoredTensor,
    pub rvq_rest_input_proj: StoredTensor,
    /// `[dim, codebook_size]`, semantic first.
    pub codebooks: Vec<StoredTensor>,
}

impl CodecEncoderWeights {
    fn load(src: &WeightSource, cfg: &CodecEncoderConfig) -> Result<Self> {
        let stages = cfg
            .strides
            .iter()
            .enumerate()
            .map(|(i, &stride)| {
                let res = 1 + 3 * i;
                Ok(SeanetStage {
                    residual: [
                        Conv::load(src, &names::seanet_residual(res, 1), true)?,
                        Conv::load(src, &names::seanet_residual(res, 3), true)?,
                    ],
                    downsample: Conv::load(src, &names::seanet(res + 2), true)?,
                    stride,
                })
            })
            .collect::<Result<_>>()?;
        let t = &cfg.transformer;
        Ok(Self {
            first_conv: Conv::load(src, &names::seanet(FIRST_CONV), true)?,
            stages,
            last_conv: Conv::load(src, &names::seanet(LAST_CONV), true)?,
            blocks: (0..t.layers)
                .map(|l| BlockWeights::load(src, &names::block(l), t, BlockKind::CodecEncoder))
                .collect::<Result<_>>()?,
            downsample: Conv::load(src, names::DOWNSAMPLE, false)?,
            rvq_first_input_proj: src.kernel(names::RVQ_FIRST_INPUT_PROJ)?,
            rvq_rest_input_proj: src.kernel(names::RVQ_REST_INPUT_PROJ)?,
            codebooks: (0..cfg.num_quantizers)
                .map(|q| {
                    let name = names::codebook(cfg.num_semantic_quantizers, q);
                    let dim = src.any(&name)?.ne()[0] as usize;
                    src.tensor(&name, &[dim, cfg.codebook_size])
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// The encoding graph over `samples`: `[audio, pos, mask]` inputs and the `codes` output.
fn build<'a>(
    ctx: &'a Context,
    w: &CodecEncoderWeights,
    cfg: &CodecEncoderConfig,
    samples: usize,
) -> [Tensor<'a>; 4] {
    let audio = ctx
        .new_tensor(GgmlType::F32, &[samples as i64, 1])
        .set_input();

    // SEANet, time fastest.
    let mut x = causal_conv(ctx, audio, &w.first_conv, 1, false);
    for stage in &w.stages {
        let y = causal_conv(ctx, ctx.elu(x), &stage.residual[0], 1, false);
        let y = causal_conv(ctx, ctx.elu(y), &stage.residual[1], 1, false);
        x = ctx.add(x, y);
        x = causal_conv(ctx, ctx.elu(x), &stage.downsample, stage.stride, false);
    }
    let x = causal_conv(ctx, ctx.elu(x), &w.last_conv, 1, false);

    // Causal transformer, channels fastest.
    let t = &cfg.transformer;
    let frames = x.ne()[0];
    let mut h = ctx.cont(ctx.transpose(x));
    let pos = ctx.new_tensor(GgmlType::I32, &[frames]).set_input();
    let mask = ctx.new_tensor(GgmlType::F32, &[frames, frames]).set_input();
    for bw in &w.blocks {
        let kv = KvCache::InGraph { k: None, v: None };
        h = decoder_block(ctx, t, bw, h, pos, kv, Some(mask)).out;
    }

    // Downsample to 12.5 Hz (replicate padding, no bias), time fastest.
    let x = ctx.cont(ctx.transpose(h));
    let x = causal_conv(ctx, x, &w.downsample, 2, true);
    let x = ctx.cont(ctx.transpose(x)); // [c, frames]

    // Split RVQ: semantic from the projection, acoustic residual from its own.
    let project = |k: &StoredTensor| {
        let k = ctx.stored(k);
        let [_, c_in, c_out, _] = k.ne();
        ctx.mul_mat(ctx.reshape(k, &[c_in, c_out]), x)
    };
    let nearest = |q: usize, r: Tensor<'a>| {
        let book = ctx.stored(&w.codebooks[q]); // [dim, entries]
        let entries = book.ne()[1];
        let norms = ctx.reshape(ctx.sum_rows(ctx.sqr(book)), &[entries, 1]);
        // argmin ‖e‖² − 2 e·r = argmax 2 e·r − ‖e‖²
        let score = ctx.sub(ctx.scale(ctx.mul_mat(book, r), 2.0), norms);
        let ids = ctx.argmax(score);
        (ids, ctx.get_rows(book, ids))
    };
    let mut codes = Vec::new();
    let semantic = project(&w.rvq_first_input_proj);
    for q in 0..cfg.num_semantic_quantizers {
        codes.push(nearest(q, semantic).0);
    }
    let mut residual = project(&w.rvq_rest_input_proj);
    for q in cfg.num_semantic_quantizers..cfg.num_quantizers {
        let (ids, rows) = nearest(q, residual);
        codes.push(ids);
        residual = ctx.sub(residual, rows);
    }
    let all = codes
        .into_iter()
        .reduce(|a, c| ctx.concat(a, c, 0))
        .expect("at least one codebook");
    [audio, pos, mask, all]
}

/// The loaded encoder.
pub struct CodecEncoder {
    pub weights: CodecEncoderWeights,
    pub config: CodecEncoderConfig,
    backend: Arc<Backend>,
}

impl CodecEncoder {
    /// Opens the encoder of a `tokenizer-*.gguf` file.
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_TOKENIZER)?;
        let config = CodecEncoderConfig::from_gguf(&file)?;
        let store = load_weights_with(
            &file,
            |name| name.starts_with(names::PREFIX),
            |name, _| upcast_to_f32(&file, name),
        )?;
        let weights = CodecEncoderWeights::load(&WeightSource::new(&store, file.path()), &config)?;
        Ok(Self {
            weights,
            config,
            backend: Arc::new(Backend::cpu(threads)),
        })
    }

    pub fn set_threads(&self, threads: usize) {
        self.backend.set_threads(threads);
    }

    /// Codes (16 per frame, ⌈N / 1920⌉ frames) of mono audio at the
    /// encoder's sample rate.
    pub fn encode(&self, samples: &[f32]) -> Result<Vec<Vec<u32>>> {
        if samples.is_empty() {
            return Err(Error::bad_audio(
                "reference audio",
                "cannot encode empty audio",
            ));
        }
        let cfg = &self.config;
        let seanet_stride: usize = cfg.strides.iter().product();
        let frames25 = samples.len().div_ceil(seanet_stride);
        let frames = frames25.div_ceil(2);
        let pos: Vec<i32> = (0..frames25 as i32).collect();
        let mut mask = vec![f32::NEG_INFINITY; frames25 * frames25];
        for i in 0..frames25 {
            mask[i * frames25..=i * frames25 + i].fill(0.0);
        }
        let n = samples.len();
        let nodes = 2048 + cfg.transformer.layers * 64 + cfg.num_quantizers * 16;
        let mut graph = OwnedGraph::build(&self.backend, nodes, |ctx| {
            let [audio, pos, mask, codes] = build(ctx, &self.weights, cfg, n);
            let io = [audio, pos, mask, codes].map(|t| ctx.slot(t));
            (io, vec![codes])
        });
        let [audio_in, pos_in, mask_in, codes_out] = *graph.io();
        graph.compute(|g| {
            g.tensor(audio_in).set_f32(samples);
            g.tensor(pos_in).set_i32(&pos);
            g.tensor(mask_in).set_f32(&mask);
        })?;
        let ids: Vec<u32> = graph
            .tensor(codes_out)
            .get_i32()
            .into_iter()
            .map(|id| id as u32)
            .collect();
        let nq = cfg.num_quantizers;
        Ok((0..frames)
            .map(|t| (0..nq).map(|q| ids[q * frames + t]).collect())
            .collect())
    }
}
