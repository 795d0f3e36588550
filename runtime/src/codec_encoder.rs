//! The speech-tokenizer encoder (Mimi-style): 24 kHz audio → 16 codes per
//! 80 ms frame, the reference codes of ICL voice cloning (the reference's
//! `Qwen3TTSTokenizerV2Encoder`).
//!
//! SEANet causal conv stack (25 Hz) → causal transformer (full causal
//! attention, as the reference runs it) → stride-2 downsample (12.5 Hz) →
//! split RVQ: the semantic codebook and the first 15 acoustic ones, each
//! picking the nearest entry by `‖e‖² − 2 e·r`, as torch's `cdist` does.
//! Everything runs with channels fastest (`[c, t]`): each conv is its
//! input unfolded into columns times the kernel, as in the vocoder.

use std::path::Path;
use std::sync::Arc;

use crate::config::CodecEncoderConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, StoredTensor, Tensor, Unfold};
use crate::gguf_schema::tensors::{self, codec_encoder as names};
use crate::gguf_schema::ARCH_TOKENIZER;
use crate::layers::{add_bias, decoder_block, BlockKind, BlockWeights, KvCache};
use crate::model_file::GgufFile;
use crate::weights::{
    kernel_dims, load_weights_with, permute3, upcast_to_f32, Prepared, WeightSource,
};

/// SEANet layer indices: the first conv, then per stage a residual block,
/// ELU and strided conv; then ELU and the last conv.
const FIRST_CONV: usize = 0;
const LAST_CONV: usize = 14;
/// 25 Hz → 12.5 Hz after the transformer.
const DOWNSAMPLE_STRIDE: usize = 2;

/// Causal conv over `x` `[c_in, t]`: left padding `(k−1)·d + 1 − s`, right
/// padding up to a whole number of strides, zeros or (`replicate`) edge
/// columns. Output `[c_out, ⌈t/s⌉]`.
fn causal_conv<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    conv: &Conv,
    stride: usize,
    replicate: bool,
) -> Tensor<'a> {
    let kernel = ctx.stored(&conv.weight);
    let bias = conv.bias.as_ref().map(|b| ctx.stored(b));
    let [c_out, c_in, k, _] = kernel.ne();
    let [c, t, ..] = x.ne();
    let (k, t) = (k as usize, t as usize);
    let left = k - stride;
    let right = t.div_ceil(stride) * stride - t;
    let (xp, zeros) = if replicate {
        let es = x.element_size();
        let edge = |at: usize, n: usize| {
            let col = ctx.view(x, &[c, 1], &[c as usize * es], at * c as usize * es);
            ctx.repeat(col, ctx.new_tensor(GgmlType::F32, &[c, n as i64]))
        };
        let mut xp = x;
        if left > 0 {
            xp = ctx.concat(edge(0, left), xp, 1);
        }
        if right > 0 {
            xp = ctx.concat(xp, edge(t - 1, right), 1);
        }
        (xp, (0, 0))
    } else {
        (x, (left, right))
    };
    let cols = if k == 1 && stride == 1 {
        xp
    } else {
        let geometry = Unfold {
            stride,
            left: zeros.0,
            right: zeros.1,
            ..Unfold::PLAIN
        };
        ctx.unfold_columns(xp, k, geometry, GgmlType::F32)
    };
    let y = ctx.product_outputs_fastest(ctx.reshape(kernel, &[c_out, c_in * k as i64]), cols);
    add_bias(ctx, y, bias.map(|b| ctx.reshape(b, &[c_out, 1])))
}

/// A conv layer: kernel `[c_out, c_in, k]` (F32, rearranged at load so that
/// a column of the unfolded input lines up with a kernel column, outputs
/// fastest for the ops layer's product) and bias `[c_out]`.
#[derive(Clone, Debug)]
pub struct Conv {
    pub weight: StoredTensor,
    pub bias: Option<StoredTensor>,
}

impl Conv {
    /// The conv at `stem`, run with `stride`, which must take `c_in`
    /// channels; its output channels are `Conv::c_out`.
    fn load(
        src: &WeightSource,
        stem: &str,
        bias: bool,
        c_in: usize,
        stride: usize,
    ) -> Result<Self> {
        let name = tensors::join(stem, tensors::CONV_WEIGHT);
        let weight = src.kernel(&name)?;
        let [c_out, got_in, k, _] = weight.ne();
        let stored = [c_out, got_in, k]; // PyTorch's order
        if got_in as usize != c_in {
            return Err(src.error(
                &name,
                format!(
                    "kernel {stored:?} (c_out, c_in, k) does not take the {c_in} channels of \
                     the layer before"
                ),
            ));
        }
        if (k as usize) < stride {
            return Err(src.error(
                &name,
                format!("kernel {stored:?} (c_out, c_in, k) is narrower than its stride {stride}"),
            ));
        }
        let bias = bias
            .then(|| src.tensor(&tensors::join(stem, tensors::CONV_BIAS), &[c_out as usize]))
            .transpose()?;
        Ok(Self { weight, bias })
    }

    fn c_out(&self) -> usize {
        self.weight.ne()[0] as usize
    }
}

/// Rearranges a stored conv kernel `[k, c_in, c_out]` to `[c_out, c_in, k]`
/// (every tensor F32: the encoder runs once per clone, so rounding matters
/// more than memory).
fn prepare(file: &GgufFile, name: &str) -> Result<Option<Prepared>> {
    let is_conv = name.ends_with(tensors::CONV_WEIGHT);
    if !is_conv {
        return upcast_to_f32(file, name);
    }
    let ne = kernel_dims(file, name)?;
    let v = file.tensor_f32(name)?;
    Ok(Some(Prepared {
        ty: GgmlType::F32,
        ne: vec![ne[2] as i64, ne[1] as i64, ne[0] as i64],
        bytes: permute3(crate::ggml::as_bytes(&v), 4, ne, [2, 1, 0]),
    }))
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
        // Each conv must take the channels of the one before (mono audio first).
        let first_conv = Conv::load(src, &names::seanet(FIRST_CONV), true, 1, 1)?;
        let mut channels = first_conv.c_out();
        let mut stages = Vec::new();
        for (i, &stride) in cfg.strides.iter().enumerate() {
            let res = 1 + 3 * i;
            let squeeze = Conv::load(src, &names::seanet_residual(res, 1), true, channels, 1)?;
            let expand = Conv::load(
                src,
                &names::seanet_residual(res, 3),
                true,
                squeeze.c_out(),
                1,
            )?;
            if expand.c_out() != channels {
                return Err(src.error(
                    &tensors::join(&names::seanet_residual(res, 3), tensors::CONV_WEIGHT),
                    format!(
                        "{} output channels, the residual needs {channels}",
                        expand.c_out()
                    ),
                ));
            }
            let downsample = Conv::load(src, &names::seanet(res + 2), true, channels, stride)?;
            channels = downsample.c_out();
            stages.push(SeanetStage {
                residual: [squeeze, expand],
                downsample,
                stride,
            });
        }
        let t = &cfg.transformer;
        let last_conv = Conv::load(src, &names::seanet(LAST_CONV), true, channels, 1)?;
        if last_conv.c_out() != t.hidden {
            return Err(src.error(
                &tensors::join(&names::seanet(LAST_CONV), tensors::CONV_WEIGHT),
                format!(
                    "{} output channels, the transformer's width is {}",
                    last_conv.c_out(),
                    t.hidden
                ),
            ));
        }
        let downsample = Conv::load(src, names::DOWNSAMPLE, false, t.hidden, DOWNSAMPLE_STRIDE)?;
        if downsample.c_out() != t.hidden {
            return Err(src.error(
                &tensors::join(names::DOWNSAMPLE, tensors::CONV_WEIGHT),
                format!(
                    "{} output channels, the quantizer takes {}",
                    downsample.c_out(),
                    t.hidden
                ),
            ));
        }
        // The RVQ input projections (1×1) take the downsampled channels; each
        // codebook's entries have its branch's projected width.
        let projection = |name: &str| {
            let proj = src.kernel(name)?;
            let [k, c_in, c_out, _] = proj.ne();
            if k != 1 || c_in as usize != t.hidden {
                return Err(src.error(
                    name,
                    format!(
                        "projection {:?} (c_out, c_in, k) is not 1×1 over {} channels",
                        [c_out, c_in, k],
                        t.hidden
                    ),
                ));
            }
            Ok((proj, c_out as usize))
        };
        let (rvq_first_input_proj, semantic_dim) = projection(names::RVQ_FIRST_INPUT_PROJ)?;
        let (rvq_rest_input_proj, acoustic_dim) = projection(names::RVQ_REST_INPUT_PROJ)?;
        Ok(Self {
            first_conv,
            stages,
            last_conv,
            blocks: (0..t.layers)
                .map(|l| BlockWeights::load(src, &names::block(l), t, BlockKind::CodecEncoder))
                .collect::<Result<_>>()?,
            downsample,
            rvq_first_input_proj,
            rvq_rest_input_proj,
            codebooks: (0..cfg.num_quantizers)
                .map(|q| {
                    let name = names::codebook(cfg.num_semantic_quantizers, q);
                    let dim = match q < cfg.num_semantic_quantizers {
                        true => semantic_dim,
                        false => acoustic_dim,
                    };
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
        .new_tensor(GgmlType::F32, &[1, samples as i64])
        .set_input();

    // SEANet.
    let mut x = causal_conv(ctx, audio, &w.first_conv, 1, false);
    for stage in &w.stages {
        let y = causal_conv(ctx, ctx.elu(x), &stage.residual[0], 1, false);
        let y = causal_conv(ctx, ctx.elu(y), &stage.residual[1], 1, false);
        x = ctx.add(x, y);
        x = causal_conv(ctx, ctx.elu(x), &stage.downsample, stage.stride, false);
    }
    let x = causal_conv(ctx, ctx.elu(x), &w.last_conv, 1, false);

    // Causal transformer.
    let t = &cfg.transformer;
    let frames = x.ne()[1];
    let mut h = x;
    let pos = ctx.new_tensor(GgmlType::I32, &[frames]).set_input();
    let mask = ctx.new_tensor(GgmlType::F32, &[frames, frames]).set_input();
    for bw in &w.blocks {
        let kv = KvCache::InGraph { k: None, v: None };
        h = decoder_block(ctx, t, bw, h, pos, kv, Some(mask)).out;
    }

    // Downsample to 12.5 Hz (replicate padding, no bias): [c, frames].
    let x = causal_conv(ctx, h, &w.downsample, DOWNSAMPLE_STRIDE, true);

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
            |name, _| prepare(&file, name),
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
