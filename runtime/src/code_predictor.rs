//! The code predictor ("sub-talker"): given the talker's hidden state and
//! code 0 of a frame, predicts codes 1..15 with a small Qwen3 decoder whose
//! cache is fresh every frame (the reference's
//! `Qwen3TTSTalkerCodePredictorModelForConditionalGeneration`).
//!
//! All 15 sequential passes of a frame are one ggml graph, built once per
//! sampling setting and reused every frame: each pass picks its code in-graph
//! (argmax, or Gumbel-max over temperature/top-k/top-p filtered logits with
//! noise drawn by the host's seeded RNG) and embeds it for the next pass. The
//! graph also sums the frame's 16 code embeddings for the talker's next input.

use std::sync::Arc;

use crate::config::{TransformerConfig, TtsConfig};
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Slot, StoredTensor, Tensor};
use crate::gguf_schema::tensors::code_predictor as names;
use crate::layers::{decoder_block, linear, rms_norm, BlockKind, BlockWeights, KvCache};
use crate::sampler::{Sampler, SamplingParams};
use crate::weights::{Linear, WeightSource};

/// Logit offset standing in for −∞ for filtered tokens (keeps Gumbel sums finite).
const FILTERED: f32 = -1e30;

/// The codes of one frame and what the talker needs next.
pub struct FrameCodes {
    /// Codes 1..15 (code 0 comes from the talker).
    pub codes: Vec<u32>,
    /// `C(c0) + Σ_g Cg(g, c_g)`, `[talker hidden]`.
    pub frame_embed: Vec<f32>,
    /// Raw logits of each pass, `15 × codebook_size` (before any filtering).
    pub logits: Vec<f32>,
}

/// The code predictor's weights.
#[derive(Clone, Debug)]
pub struct CodePredictorWeights {
    pub cfg: TransformerConfig,
    /// Talker width → predictor width (1.7B models; `None` when equal).
    pub mtp_proj: Option<Linear>,
    pub blocks: Vec<BlockWeights>,
    pub output_norm: StoredTensor,
    /// Embedding table of codebooks 1..15, `[talker hidden, codebook_size]`.
    pub codec_embd: Vec<StoredTensor>,
    /// Output heads of codebooks 1..15, `[hidden, codebook_size]`.
    pub heads: Vec<StoredTensor>,
    /// The talker's codec embedding (code 0 enters the first pass through it).
    pub talker_codec_embd: StoredTensor,
    pub codebook_size: usize,
    pub codec_vocab: usize,
    pub talker_hidden: usize,
}

impl CodePredictorWeights {
    pub fn load(
        src: &WeightSource,
        cfg: &TtsConfig,
        talker_codec_embd: StoredTensor,
    ) -> Result<Self> {
        let (t, c) = (&cfg.talker, &cfg.code_predictor);
        let groups = cfg.num_code_groups - 1;
        let cb = cfg.codebook_size;
        Ok(Self {
            cfg: c.clone(),
            mtp_proj: (t.hidden != c.hidden)
                .then(|| src.linear(names::MTP_PROJ, t.hidden, c.hidden, true))
                .transpose()?,
            blocks: (0..c.layers)
                .map(|l| BlockWeights::load(src, &names::block(l), c, BlockKind::Qwen3))
                .collect::<Result<_>>()?,
            output_norm: src.tensor(names::OUTPUT_NORM, &[c.hidden])?,
            codec_embd: (0..groups)
                .map(|g| src.tensor(&names::codec_embd(g), &[t.hidden, cb]))
                .collect::<Result<_>>()?,
            heads: (0..groups)
                .map(|g| src.tensor(&names::head(g), &[c.hidden, cb]))
                .collect::<Result<_>>()?,
            talker_codec_embd,
            codebook_size: cb,
            codec_vocab: cfg.codec_vocab,
            talker_hidden: t.hidden,
        })
    }

    /// Codes per frame (16).
    pub fn groups(&self) -> usize {
        self.heads.len() + 1
    }
}

/// The 1.7B models project every input from talker width to predictor width.
fn project<'a>(ctx: &'a Context, proj: Option<&Linear>, x: Tensor<'a>) -> Tensor<'a> {
    match proj {
        Some(p) => linear(ctx, x, p),
        None => x,
    }
}

/// The inputs a sampling pass reads (absent when greedy / unfiltered).
#[derive(Clone, Copy, Default)]
struct PickInputs {
    noise: Option<Slot>,
    top_p: Option<Slot>,
    scratch: Option<Slot>,
}

/// Picks a code from `logits` `[cb]` as `params` say.
fn pick<'a>(
    ctx: &'a Context,
    logits: Tensor<'a>,
    params: &SamplingParams,
) -> (Tensor<'a>, PickInputs) {
    let mut inputs = PickInputs::default();
    if !params.do_sample {
        return (
            ctx.argmax(ctx.reshape(logits, &[logits.ne()[0], 1])),
            inputs,
        );
    }
    let cb = logits.ne()[0];
    let mut l = ctx.scale(logits, 1.0 / params.temperature);
    if params.top_k > 0 && (params.top_k as i64) < cb {
        // keep every token whose score ≥ the k-th largest (ties kept)
        let order = ctx.argsort_desc(l);
        let kth = ctx.view(order, &[1], &[], (params.top_k - 1) * 4);
        let thr = ctx.get_rows(ctx.reshape(l, &[1, cb]), kth);
        let below = ctx.step(ctx.scale(ctx.sub(l, ctx.reshape(thr, &[1])), -1.0));
        l = ctx.add(l, ctx.scale(below, -FILTERED.abs()));
    }
    if params.top_p < 1.0 {
        // HF TopP: drop tokens whose higher-ranked probability mass ≥ top_p
        let order = ctx.argsort_desc(l);
        let sorted = ctx.reshape(ctx.get_rows(ctx.reshape(l, &[1, cb]), order), &[cb]);
        let p = ctx.soft_max_ext(sorted, None, 1.0);
        let before = ctx.sub(ctx.cumsum(p), p);
        let top_p = ctx.new_tensor(GgmlType::F32, &[1]).set_input();
        inputs.top_p = Some(ctx.slot(top_p));
        let keep_sorted = ctx.step(ctx.sub(ctx.scale(before, -1.0), ctx.scale(top_p, -1.0)));
        let scratch = ctx.new_tensor(GgmlType::F32, &[1, cb]).set_input();
        inputs.scratch = Some(ctx.slot(scratch));
        let keep = ctx.set_rows(scratch, ctx.reshape(keep_sorted, &[1, cb]), order);
        l = ctx.add(
            l,
            ctx.reshape(ctx.scale_bias(keep, FILTERED.abs(), FILTERED), &[cb]),
        );
    }
    let noise = ctx.new_tensor(GgmlType::F32, &[cb]).set_input();
    inputs.noise = Some(ctx.slot(noise));
    (ctx.argmax(ctx.reshape(ctx.add(l, noise), &[cb, 1])), inputs)
}

/// Inputs and outputs of the frame graph.
struct FrameIo {
    hidden: Slot,
    c0: Slot,
    pos: Slot,
    mask0: Slot,
    forced: Option<Slot>,
    /// Per pass: its sampling inputs, raw logits and picked code.
    passes: Vec<(PickInputs, Slot, Slot)>,
    frame: Slot,
}

/// One session's code-predictor state: the frame graph.
pub struct CodePredictor {
    /// The frame graph for the sampling settings (and teacher forcing) in use.
    graph: Option<((SamplingParams, bool), OwnedGraph<FrameIo>)>,
    weights: Arc<CodePredictorWeights>,
    backend: Arc<Backend>,
}

impl CodePredictor {
    pub fn new(weights: Arc<CodePredictorWeights>, backend: Arc<Backend>) -> Self {
        Self {
            graph: None,
            weights,
            backend,
        }
    }

    fn graph_nodes(w: &CodePredictorWeights) -> usize {
        (w.groups() - 1) * (w.cfg.layers * 48 + 64) + 256
    }

    /// `forced`: the passes read their inputs from the `forced` input (given
    /// codes 1..15, teacher forcing) instead of their own picks.
    fn build(&self, params: &SamplingParams, forced: bool) -> OwnedGraph<FrameIo> {
        let w = &*self.weights;
        OwnedGraph::build(&self.backend, Self::graph_nodes(w), |ctx| {
            let c = &w.cfg;
            let groups = w.groups() - 1;
            let hidden = ctx
                .new_tensor(GgmlType::F32, &[w.talker_hidden as i64, 1])
                .set_input();
            let c0 = ctx.new_tensor(GgmlType::I32, &[1]).set_input();
            let pos = ctx
                .new_tensor(GgmlType::I32, &[groups as i64 + 1])
                .set_input();
            let mask0 = ctx.new_tensor(GgmlType::F32, &[2, 2]).set_input();
            let given = forced.then(|| ctx.new_tensor(GgmlType::I32, &[groups as i64]).set_input());
            let project = |x| project(ctx, w.mtp_proj.as_ref(), x);
            let mut kv: Vec<(Option<Tensor<'_>>, Option<Tensor<'_>>)> =
                vec![(None, None); c.layers];

            let e0 = ctx.get_rows(ctx.stored(&w.talker_codec_embd), c0);
            let mut frame = e0;
            // pass 0 sees [talker hidden, C(c0)]; pass s>0 sees the code it just picked
            let mut x = project(ctx.concat(hidden, e0, 1));
            let mut outputs = Vec::new();
            let mut passes = Vec::new();
            for s in 0..groups {
                let n = if s == 0 { 2 } else { 1 };
                let p = ctx.view(pos, &[n], &[], if s == 0 { 0 } else { (s + 1) * 4 });
                let mut h = x;
                for (l, bw) in w.blocks.iter().enumerate() {
                    let cache = KvCache::InGraph {
                        k: kv[l].0,
                        v: kv[l].1,
                    };
                    let mask = (s == 0).then_some(mask0);
                    let out = decoder_block(ctx, c, bw, h, p, cache, mask);
                    kv[l] = (Some(out.k), Some(out.v));
                    h = out.out;
                }
                let last = ctx.view(h, &[c.hidden as i64], &[], (n as usize - 1) * c.hidden * 4);
                let y = rms_norm(ctx, last, ctx.stored(&w.output_norm), c.rms_eps);
                let logits = ctx.mul_mat(ctx.stored(&w.heads[s]), y);
                let (code, inputs) = pick(ctx, logits, params);
                // teacher forcing feeds the given code instead of the pick
                let input = match given {
                    Some(g) => ctx.view(g, &[1], &[], s * 4),
                    None => code,
                };
                let e = ctx.get_rows(ctx.stored(&w.codec_embd[s]), input);
                frame = ctx.add(frame, e);
                if s + 1 < groups {
                    x = project(e);
                }
                passes.push((inputs, ctx.slot(logits), ctx.slot(code)));
                outputs.push(logits);
                outputs.push(code);
            }
            outputs.push(frame);
            let io = FrameIo {
                hidden: ctx.slot(hidden),
                c0: ctx.slot(c0),
                pos: ctx.slot(pos),
                mask0: ctx.slot(mask0),
                forced: given.map(|g| ctx.slot(g)),
                passes,
                frame: ctx.slot(frame),
            };
            (io, outputs)
        })
    }

    /// Predicts codes 1..15 of a frame from the talker hidden `[talker hidden]`
    /// and code 0. `rng` supplies the sampling noise (unused when greedy).
    pub fn predict(
        &mut self,
        hidden: &[f32],
        c0: u32,
        params: &SamplingParams,
        rng: &mut Sampler,
    ) -> Result<FrameCodes> {
        self.run(hidden, c0, None, params, rng)
    }

    /// Teacher forcing: the passes are fed the given codes 1..15 (the frame
    /// embedding sums them too); `codes` are still what each pass would pick.
    pub fn predict_forced(
        &mut self,
        hidden: &[f32],
        frame: &[u32],
        params: &SamplingParams,
        rng: &mut Sampler,
    ) -> Result<FrameCodes> {
        let (cb, groups) = (self.weights.codebook_size, self.weights.groups());
        if frame.len() != groups || frame[1..].iter().any(|&c| c as usize >= cb) {
            return Err(Error::invalid(
                "frames",
                format!("forced frame {frame:?} is not {groups} codes below {cb}"),
            ));
        }
        self.run(hidden, frame[0], Some(&frame[1..]), params, rng)
    }

    fn run(
        &mut self,
        hidden: &[f32],
        c0: u32,
        forced: Option<&[u32]>,
        params: &SamplingParams,
        rng: &mut Sampler,
    ) -> Result<FrameCodes> {
        let w = &*self.weights;
        let (t, cb) = (w.talker_hidden, w.codebook_size);
        if hidden.len() != t {
            return Err(Error::invalid(
                "hidden",
                format!(
                    "code predictor: hidden of {} values, expected {t}",
                    hidden.len()
                ),
            ));
        }
        if c0 as usize >= w.codec_vocab {
            return Err(Error::invalid(
                "frames",
                format!("code 0 = {c0} out of range"),
            ));
        }
        params
            .validate()
            .map_err(|e| Error::invalid("subtalker", format!("sub-talker sampling: {e}")))?;
        let groups = w.groups() - 1;
        let key = (params.clone(), forced.is_some());
        if self.graph.as_ref().is_none_or(|(k, _)| *k != key) {
            self.graph = Some((key.clone(), self.build(params, forced.is_some())));
        }
        let (_, g) = self.graph.as_mut().expect("built above");
        let noise: Vec<Vec<f32>> = if params.do_sample {
            (0..groups).map(|_| rng.gumbel_noise(cb)).collect()
        } else {
            Vec::new()
        };
        g.compute(|g| {
            let io = g.io();
            g.tensor(io.hidden).set_f32(hidden);
            g.tensor(io.c0).set_i32(&[c0 as i32]);
            g.tensor(io.pos)
                .set_i32(&(0..=groups as i32).collect::<Vec<_>>());
            g.tensor(io.mask0)
                .set_f32(&[0.0, f32::NEG_INFINITY, 0.0, 0.0]);
            if let (Some(slot), Some(f)) = (io.forced, forced) {
                g.tensor(slot)
                    .set_i32(&f.iter().map(|&c| c as i32).collect::<Vec<_>>());
            }
            for ((inputs, _, _), n) in io.passes.iter().zip(&noise) {
                if let Some(s) = inputs.noise {
                    g.tensor(s).set_f32(n);
                }
                if let Some(s) = inputs.top_p {
                    g.tensor(s).set_f32(&[params.top_p]);
                }
                if let Some(s) = inputs.scratch {
                    g.tensor(s).set_f32(&vec![0.0; cb]);
                }
            }
        })?;
        let io = g.io();
        let mut codes = Vec::with_capacity(groups);
        let mut logits = Vec::with_capacity(groups * cb);
        for &(_, l, code) in &io.passes {
            let code = g.tensor(code).get_bytes();
            codes.push(i32::from_le_bytes([code[0], code[1], code[2], code[3]]) as u32);
            logits.extend(g.tensor(l).get_f32());
        }
        Ok(FrameCodes {
            codes,
            frame_embed: g.tensor(io.frame).get_f32(),
            logits,
        })
    }
}
