//! The speech-tokenizer encoder (Mimi-style): 24 kHz audio → 16 codes per
//! 80 ms frame, the reference codes of ICL voice cloning (spec/05).
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
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Tensor, TensorStore};
use crate::gguf_schema::ARCH_TOKENIZER;
use crate::layers::{conv1d_time_major, decoder_block, weight, BlockWeights, KvCache};
use crate::model_file::GgufFile;
use crate::weights::{load_weights_with, upcast_to_f32};

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
    kernel: Tensor<'a>,
    bias: Option<Tensor<'a>>,
    stride: usize,
    replicate: bool,
) -> Tensor<'a> {
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

fn codebook_name(cfg: &CodecEncoderConfig, q: usize) -> String {
    if q < cfg.num_semantic_quantizers {
        format!("enc.rvq_first.blk.{q}.codebook.embed")
    } else {
        format!(
            "enc.rvq_rest.blk.{}.codebook.embed",
            q - cfg.num_semantic_quantizers
        )
    }
}

/// GGUF names the encoder reads.
pub fn weight_names(cfg: &CodecEncoderConfig) -> Vec<String> {
    let mut names = Vec::new();
    let conv = |names: &mut Vec<String>, p: &str, bias: bool| {
        names.push(format!("{p}.conv.weight"));
        if bias {
            names.push(format!("{p}.conv.bias"));
        }
    };
    conv(&mut names, &format!("enc.conv.{FIRST_CONV}"), true);
    for i in 0..cfg.strides.len() {
        let res = 1 + 3 * i;
        conv(&mut names, &format!("enc.conv.{res}.block.1"), true);
        conv(&mut names, &format!("enc.conv.{res}.block.3"), true);
        conv(&mut names, &format!("enc.conv.{}", res + 2), true);
    }
    conv(&mut names, &format!("enc.conv.{LAST_CONV}"), true);
    for l in 0..cfg.transformer.layers {
        let p = format!("enc.tfm.blk.{l}");
        for s in [
            "attn_norm.weight",
            "attn_norm.bias",
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_o.weight",
            "attn_scale",
            "ffn_norm.weight",
            "ffn_norm.bias",
            "ffn_up.weight",
            "ffn_down.weight",
            "ffn_scale",
        ] {
            names.push(format!("{p}.{s}"));
        }
    }
    conv(&mut names, "enc.downsample", false);
    names.push("enc.rvq_first.input_proj.weight".into());
    names.push("enc.rvq_rest.input_proj.weight".into());
    for q in 0..cfg.num_quantizers {
        names.push(codebook_name(cfg, q));
    }
    names
}

fn build<'a>(
    ctx: &'a Context,
    w: &'a TensorStore,
    cfg: &CodecEncoderConfig,
    samples: usize,
) -> Vec<Tensor<'a>> {
    let conv_w = |p: &str| weight(w, &format!("{p}.conv.weight"));
    let conv_b = |p: &str| Some(weight(w, &format!("{p}.conv.bias")));
    let audio = ctx
        .new_tensor(GgmlType::F32, &[samples as i64, 1])
        .set_name("audio")
        .set_input();

    // SEANet, time fastest.
    let p0 = format!("enc.conv.{FIRST_CONV}");
    let mut x = causal_conv(ctx, audio, conv_w(&p0), conv_b(&p0), 1, false);
    for (i, &stride) in cfg.strides.iter().enumerate() {
        let res = 1 + 3 * i;
        let (a, b) = (
            format!("enc.conv.{res}.block.1"),
            format!("enc.conv.{res}.block.3"),
        );
        let y = causal_conv(ctx, ctx.elu(x), conv_w(&a), conv_b(&a), 1, false);
        let y = causal_conv(ctx, ctx.elu(y), conv_w(&b), conv_b(&b), 1, false);
        x = ctx.add(x, y);
        let down = format!("enc.conv.{}", res + 2);
        x = causal_conv(ctx, ctx.elu(x), conv_w(&down), conv_b(&down), stride, false);
    }
    let last = format!("enc.conv.{LAST_CONV}");
    let x = causal_conv(ctx, ctx.elu(x), conv_w(&last), conv_b(&last), 1, false).set_name("seanet");

    // Causal transformer, channels fastest.
    let t = &cfg.transformer;
    let frames = x.ne()[0];
    let mut h = ctx.cont(ctx.transpose(x));
    let pos = ctx
        .new_tensor(GgmlType::I32, &[frames])
        .set_name("pos")
        .set_input();
    let mask = ctx
        .new_tensor(GgmlType::F32, &[frames, frames])
        .set_name("mask")
        .set_input();
    for l in 0..t.layers {
        let bw = BlockWeights::new(w, &format!("enc.tfm.blk.{l}"));
        let kv = KvCache::InGraph { k: None, v: None };
        h = decoder_block(ctx, t, &bw, h, pos, kv, Some(mask)).out;
    }

    // Downsample to 12.5 Hz (replicate padding, no bias), time fastest.
    let x = ctx.cont(ctx.transpose(h));
    let x = causal_conv(ctx, x, conv_w("enc.downsample"), None, 2, true);
    let x = ctx.cont(ctx.transpose(x)); // [c, frames]

    // Split RVQ: semantic from the projection, acoustic residual from its own.
    let project = |name: &str| {
        let k = weight(w, name);
        let [_, c_in, c_out, _] = k.ne();
        ctx.mul_mat(ctx.reshape(k, &[c_in, c_out]), x)
    };
    let nearest = |q: usize, r: Tensor<'a>| {
        let book = weight(w, &codebook_name(cfg, q)); // [dim, entries]
        let entries = book.ne()[1];
        let norms = ctx.reshape(ctx.sum_rows(ctx.sqr(book)), &[entries, 1]);
        // argmin ‖e‖² − 2 e·r = argmax 2 e·r − ‖e‖²
        let score = ctx.sub(ctx.scale(ctx.mul_mat(book, r), 2.0), norms);
        let ids = ctx.argmax(score);
        (ids, ctx.get_rows(book, ids))
    };
    let mut codes = Vec::new();
    let semantic = project("enc.rvq_first.input_proj.weight");
    for q in 0..cfg.num_semantic_quantizers {
        codes.push(nearest(q, semantic).0);
    }
    let mut residual = project("enc.rvq_rest.input_proj.weight");
    for q in cfg.num_semantic_quantizers..cfg.num_quantizers {
        let (ids, rows) = nearest(q, residual);
        codes.push(ids);
        residual = ctx.sub(residual, rows);
    }
    let all = codes
        .into_iter()
        .reduce(|a, c| ctx.concat(a, c, 0))
        .expect("at least one codebook")
        .set_name("codes");
    vec![all]
}

/// The loaded encoder.
pub struct CodecEncoder {
    weights: Arc<TensorStore>,
    pub config: CodecEncoderConfig,
    backend: Arc<Backend>,
}

impl CodecEncoder {
    /// Opens the encoder of a `tokenizer-*.gguf` file.
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_TOKENIZER)?;
        let config = CodecEncoderConfig::from_gguf(&file)?;
        for name in weight_names(&config) {
            file.tensor_info(&name)?;
        }
        let backend = Arc::new(Backend::cpu(threads));
        let weights = load_weights_with(
            &file,
            &backend,
            |name| name.starts_with("enc."),
            |name, _| upcast_to_f32(&file, name),
        )?;
        Ok(Self {
            weights: Arc::new(weights),
            config,
            backend,
        })
    }

    pub fn set_threads(&self, threads: usize) {
        self.backend.set_threads(threads);
    }

    /// Codes (16 per frame, ⌈N / 1920⌉ frames) of mono audio at the
    /// encoder's sample rate.
    pub fn encode(&self, samples: &[f32]) -> Result<Vec<Vec<u32>>> {
        if samples.is_empty() {
            return Err(Error::Other("cannot encode empty audio".into()));
        }
        let cfg = self.config.clone();
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
        let mut graph = OwnedGraph::build(
            &self.backend,
            nodes,
            vec![self.weights.clone()],
            move |ctx, stores| build(ctx, &stores[0], &cfg, n),
        );
        graph
            .compute(|g| {
                g.tensor("audio").set_f32(samples);
                g.tensor("pos").set_i32(&pos);
                g.tensor("mask").set_f32(&mask);
            })
            .map_err(|e| Error::Other(format!("encoder graph: {e}")))?;
        let ids = graph.tensor("codes").get_bytes();
        let ids: Vec<u32> = ids
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
            .collect();
        let nq = self.config.num_quantizers;
        Ok((0..frames)
            .map(|t| (0..nq).map(|q| ids[q * frames + t]).collect())
            .collect())
    }
}
