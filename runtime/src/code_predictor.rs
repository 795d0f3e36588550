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
//! Several sequences' frames can run in one graph (see [`CodePredictor`]).

use std::sync::Arc;

use crate::config::{TransformerConfig, TtsConfig};
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Slot, StoredTensor, Tensor};
use crate::gguf_schema::tensors::code_predictor as names;
use crate::layers::{
    attend, attention_inputs, block_with, kv_tensors, linear, rms_norm, value_slots, BlockKind,
    BlockWeights,
};
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

/// Picks one code per column of `logits` `[cb, n]` as `params` say → I32
/// `[n]`. Every operation works row by row, so each column gets what it
/// gets alone; the noise input is `[cb, n]`, one row per sequence.
fn pick<'a>(
    ctx: &'a Context,
    logits: Tensor<'a>,
    params: &SamplingParams,
) -> (Tensor<'a>, PickInputs) {
    let mut inputs = PickInputs::default();
    let [cb, n, ..] = logits.ne();
    if !params.do_sample {
        return (ctx.argmax(logits), inputs);
    }
    let rows = |x| ctx.reshape(x, &[1, cb, n]);
    let mut l = ctx.scale(logits, 1.0 / params.temperature);
    if params.top_k > 0 && (params.top_k as i64) < cb {
        // keep every token whose score ≥ the k-th largest (ties kept)
        let order = ctx.argsort_desc(l);
        let kth = ctx.view(order, &[1, n], &[cb as usize * 4], (params.top_k - 1) * 4);
        let thr = ctx.reshape(ctx.get_rows(rows(l), kth), &[1, n]);
        let below = ctx.step(ctx.scale(ctx.sub(l, thr), -1.0));
        l = ctx.add(l, ctx.scale(below, -FILTERED.abs()));
    }
    if params.top_p < 1.0 {
        // HF TopP: drop tokens whose higher-ranked probability mass ≥ top_p
        let order = ctx.argsort_desc(l);
        let sorted = ctx.reshape(ctx.get_rows(rows(l), order), &[cb, n]);
        let p = ctx.soft_max_ext(sorted, None, 1.0);
        let before = ctx.sub(ctx.cumsum(p), p);
        let top_p = ctx.new_tensor(GgmlType::F32, &[1]).set_input();
        inputs.top_p = Some(ctx.slot(top_p));
        let keep_sorted = ctx.step(ctx.sub(ctx.scale(before, -1.0), ctx.scale(top_p, -1.0)));
        let scratch = ctx.new_tensor(GgmlType::F32, &[1, cb, n]).set_input();
        inputs.scratch = Some(ctx.slot(scratch));
        let keep = ctx.set_rows(scratch, rows(keep_sorted), order);
        l = ctx.add(
            l,
            ctx.reshape(ctx.scale_bias(keep, FILTERED.abs(), FILTERED), &[cb, n]),
        );
    }
    let noise = ctx.new_tensor(GgmlType::F32, &[cb, n]).set_input();
    inputs.noise = Some(ctx.slot(noise));
    (ctx.argmax(ctx.add(l, noise)), inputs)
}

/// Runs of consecutive sequences with the same entry of a [`FrameKey`]
/// (same sampling settings, both forced or not), as `start..end`: each run
/// picks its codes with one set of operations.
fn runs(key: &FrameKey) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, entry) in key.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if key[run.start] == *entry => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// One run's pick in one pass: its sampling inputs and its codes `[run]`.
struct RunPick {
    sequences: std::ops::Range<usize>,
    inputs: PickInputs,
    codes: Slot,
}

/// The keys and values of a frame's tokens (2 + 14 positions for 16 code
/// groups) for each
/// layer and sequence, written by each pass where the next ones read them
/// (the graph's own memory, rewritten every frame): keys `[hd·kv_heads,
/// positions, batch]`, values transposed `[positions, hd·kv_heads, batch]`,
/// as [`attend`] takes them, so no pass copies what came before.
struct FrameCache {
    k: Vec<StoredTensor>,
    v: Vec<StoredTensor>,
}

impl FrameCache {
    /// Positions per frame of `groups` − 1 passes: the first pass has two
    /// tokens.
    fn positions(groups: usize) -> usize {
        groups
    }

    fn new(backend: &Backend, cfg: &TransformerConfig, positions: usize, batch: usize) -> Self {
        let width = (cfg.head_dim * cfg.kv_heads) as i64;
        let (positions, b) = (positions as i64, batch as i64);
        let (_, k, v) = kv_tensors(
            backend,
            cfg.layers,
            GgmlType::F32,
            &[width, positions, b],
            &[positions, width, b],
        );
        Self { k, v }
    }

    /// The first position pass `s` writes (pass 0 writes 0 and 1).
    fn first_position(s: usize) -> usize {
        if s == 0 {
            0
        } else {
            s + 1
        }
    }

    /// Pass `s`'s key rows (position + `per`·sequence, per token in the
    /// order of the pass's columns) and value slots (see [`value_slots`];
    /// each sequence's values a further `per`·width on) for `batch`
    /// sequences of `per` positions.
    fn slots(cfg: &TransformerConfig, per: usize, s: usize, batch: usize) -> (Vec<i32>, Vec<i32>) {
        let width = cfg.head_dim * cfg.kv_heads;
        let first = Self::first_position(s);
        let positions: Vec<usize> = (first..first + if s == 0 { 2 } else { 1 }).collect();
        let rows = (0..batch)
            .flat_map(|i| positions.iter().map(move |p| (p + per * i) as i32))
            .collect();
        let one = value_slots(&positions, width, per);
        let slots = (0..batch)
            .flat_map(|i| one.iter().map(move |&v| v + (per * width * i) as i32))
            .collect();
        (rows, slots)
    }

    /// Writes layer `l`'s keys `k` `[hd, kv_heads, n·batch]` and values
    /// `v` (the same) at `key_rows` / `value_slots`; returns the first
    /// `n_kv` positions of every sequence, keys `[hd, kv_heads, n_kv,
    /// batch]` and values `[n_kv, hd, kv_heads, batch]`, read through the
    /// writes.
    #[allow(clippy::too_many_arguments)]
    fn write<'a>(
        &self,
        ctx: &'a Context,
        l: usize,
        k: Tensor<'a>,
        v: Tensor<'a>,
        key_rows: Tensor<'a>,
        value_slots: Tensor<'a>,
        n_kv: usize,
    ) -> (Tensor<'a>, Tensor<'a>) {
        let [hd, nkv, ..] = k.ne();
        let (k_cache, v_cache) = (ctx.stored(&self.k[l]), ctx.stored(&self.v[l]));
        let [width, per, b, _] = k_cache.ne();
        let tokens = k.ne()[2];
        let keys = ctx.set_rows(
            ctx.reshape(k_cache, &[width, per * b]),
            ctx.reshape(k, &[width, tokens]),
            key_rows,
        );
        let values = ctx.set_rows(
            ctx.reshape(v_cache, &[1, per * width * b]),
            ctx.reshape(v, &[1, width * tokens]),
            value_slots,
        );
        let (per, width) = (per as usize, width as usize);
        let keys = ctx.view(
            keys,
            &[hd, nkv, n_kv as i64, b],
            &[hd as usize * 4, width * 4, per * width * 4],
            0,
        );
        let values = ctx.view(
            values,
            &[n_kv as i64, hd, nkv, b],
            &[per * 4, per * hd as usize * 4, per * width * 4],
            0,
        );
        (keys, values)
    }
}

/// Inputs and outputs of the frame graph of a batch of sequences.
struct FrameIo {
    /// `[talker hidden, batch]`, `[batch]`.
    hidden: Slot,
    c0: Slot,
    pos: Slot,
    mask0: Slot,
    /// Per sequence: its given codes 1..15 (teacher forcing).
    forced: Vec<Option<Slot>>,
    /// Per pass: where its tokens' keys and values go in the frame cache.
    cache_slots: Vec<(Slot, Slot)>,
    /// Per pass: the raw logits `[codebook, batch]`, and per run of
    /// sequences with the same settings its sampling inputs and codes.
    passes: Vec<(Slot, Vec<RunPick>)>,
    /// `[talker hidden, batch]`.
    frame: Slot,
}

/// What a frame graph is built for: per sequence its sampling settings and
/// whether it is teacher-forced.
type FrameKey = Vec<(SamplingParams, bool)>;

/// One sequence's part of a frame: the talker hidden `[talker hidden]`,
/// code 0, the sampling settings and the sequence's RNG (for the noise;
/// unused when greedy), and for teacher forcing the given codes 1..15.
pub struct FrameInput<'a> {
    pub hidden: &'a [f32],
    pub c0: u32,
    pub forced: Option<&'a [u32]>,
    pub params: &'a SamplingParams,
    pub rng: &'a mut Sampler,
}

/// The code predictor's frame graph for the sequences in use: one for a
/// session, one for a batch of sequences decoded together (continuous
/// batching). Its weight products take all sequences' vectors at once, its
/// attention is batched over the sequences (each over its own tokens: they
/// all have the same length), and every product gives each column the
/// one-column result, so each sequence gets what it gets alone.
pub struct CodePredictor {
    /// The frame graph for the batch's sampling settings.
    graph: Option<(FrameKey, OwnedGraph<FrameIo>)>,
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

    fn graph_nodes(w: &CodePredictorWeights, batch: usize) -> usize {
        (w.groups() - 1) * (w.cfg.layers * 48 + 64 + batch * 48) + 256
    }

    fn build(&self, key: &FrameKey) -> OwnedGraph<FrameIo> {
        let w = &*self.weights;
        let b = key.len();
        OwnedGraph::build(&self.backend, Self::graph_nodes(w, b), |ctx| {
            // Each sequence's products as if alone.
            ctx.set_row_dots(true);
            let c = &w.cfg;
            let (t, cb) = (w.talker_hidden as i64, w.codebook_size);
            let (hd, nh, nkv) = (c.head_dim as i64, c.heads as i64, c.kv_heads as i64);
            let groups = w.groups() - 1;
            let bi = b as i64;
            let hidden = ctx.new_tensor(GgmlType::F32, &[t, bi]).set_input();
            let c0 = ctx.new_tensor(GgmlType::I32, &[bi]).set_input();
            // pass 0: positions 0, 1 per sequence; pass s > 0: s + 1
            let pos = ctx
                .new_tensor(GgmlType::I32, &[(groups as i64 + 1) * bi])
                .set_input();
            let mask0 = ctx.new_tensor(GgmlType::F32, &[2, 2]).set_input();
            let given: Vec<Option<Tensor<'_>>> = key
                .iter()
                .map(|&(_, forced)| {
                    forced.then(|| ctx.new_tensor(GgmlType::I32, &[groups as i64]).set_input())
                })
                .collect();
            let project = |x| project(ctx, w.mtp_proj.as_ref(), x);
            let runs = runs(key);
            let cache = FrameCache::new(&self.backend, c, FrameCache::positions(w.groups()), b);
            let mut cache_slots = Vec::with_capacity(groups);

            let e0 = ctx.get_rows(ctx.stored(&w.talker_codec_embd), c0);
            let mut frame = e0;
            // pass 0 sees [talker hidden, C(c0)] of each sequence; pass s > 0
            // the code it just picked
            let pairs = |x| ctx.reshape(x, &[t, 1, bi]);
            let mut x = project(ctx.reshape(ctx.concat(pairs(hidden), pairs(e0), 1), &[t, 2 * bi]));
            let mut outputs = Vec::new();
            let mut passes = Vec::new();
            for s in 0..groups {
                let n: i64 = if s == 0 { 2 } else { 1 };
                let first = if s == 0 { 0 } else { (s + 1) * b };
                let p = ctx.view(pos, &[n * bi], &[], first * 4);
                let key_rows = ctx.new_tensor(GgmlType::I32, &[n * bi]).set_input();
                let value_slots = ctx
                    .new_tensor(GgmlType::I32, &[hd * nkv * n * bi])
                    .set_input();
                cache_slots.push((ctx.slot(key_rows), ctx.slot(value_slots)));
                let n_kv = FrameCache::first_position(s) + n as usize;
                let mut h = x;
                for (l, bw) in w.blocks.iter().enumerate() {
                    h = block_with(ctx, c, bw, h, |xn| {
                        let (q, k, v) = attention_inputs(ctx, c, bw, xn, p);
                        let q = ctx.reshape(q, &[hd, nh, n, bi]);
                        let (k_all, v_t) = cache.write(ctx, l, k, v, key_rows, value_slots, n_kv);
                        let mask = (s == 0).then_some(mask0);
                        let attn = attend(ctx, c, q, k_all, v_t, mask);
                        ctx.mul_mat(ctx.stored(&bw.o), attn)
                    });
                }
                // each sequence's last token
                let width = c.hidden;
                let last = match n {
                    1 => h,
                    _ => ctx.view(h, &[width as i64, bi], &[2 * width * 4], width * 4),
                };
                let y = rms_norm(ctx, last, ctx.stored(&w.output_norm), c.rms_eps);
                let logits = ctx.mul_mat(ctx.stored(&w.heads[s]), y);
                let mut picks = Vec::with_capacity(runs.len());
                let mut fed = Vec::with_capacity(runs.len());
                for run in &runs {
                    let (params, forced) = &key[run.start];
                    let len = run.len() as i64;
                    let own = ctx.view(logits, &[cb as i64, len], &[cb * 4], run.start * cb * 4);
                    let (codes, inputs) = pick(ctx, own, params);
                    // teacher forcing feeds the given codes instead of the picks
                    match forced {
                        true => fed.extend(run.clone().map(|i| {
                            let g = given[i].expect("a forced sequence has its codes");
                            ctx.view(g, &[1], &[], s * 4)
                        })),
                        false => fed.push(codes),
                    }
                    picks.push(RunPick {
                        sequences: run.clone(),
                        inputs,
                        codes: ctx.slot(codes),
                    });
                    outputs.push(codes);
                }
                let fed = fed[1..]
                    .iter()
                    .fold(fed[0], |all, &f| ctx.concat(all, f, 0));
                let e = ctx.get_rows(ctx.stored(&w.codec_embd[s]), fed);
                frame = ctx.add(frame, e);
                if s + 1 < groups {
                    x = project(e);
                }
                passes.push((ctx.slot(logits), picks));
                outputs.push(logits);
            }
            outputs.push(frame);
            let io = FrameIo {
                hidden: ctx.slot(hidden),
                c0: ctx.slot(c0),
                pos: ctx.slot(pos),
                mask0: ctx.slot(mask0),
                forced: given.iter().map(|g| g.map(|g| ctx.slot(g))).collect(),
                cache_slots,
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
        let input = FrameInput {
            hidden,
            c0,
            forced: None,
            params,
            rng,
        };
        Ok(self.predict_batch(&mut [input])?.remove(0))
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
        let input = FrameInput {
            hidden,
            c0: frame[0],
            forced: Some(&frame[1..]),
            params,
            rng,
        };
        Ok(self.predict_batch(&mut [input])?.remove(0))
    }

    /// One frame of each sequence, in one graph; returns their codes in
    /// order. Each is what [`CodePredictor::predict`] of the same input gives.
    pub fn predict_batch(&mut self, inputs: &mut [FrameInput<'_>]) -> Result<Vec<FrameCodes>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let w = &*self.weights;
        let (t, cb) = (w.talker_hidden, w.codebook_size);
        let groups = w.groups() - 1;
        for input in inputs.iter() {
            if input.hidden.len() != t {
                return Err(Error::invalid(
                    "hidden",
                    format!(
                        "code predictor: hidden of {} values, expected {t}",
                        input.hidden.len()
                    ),
                ));
            }
            if input.c0 as usize >= w.codec_vocab {
                return Err(Error::invalid(
                    "frames",
                    format!("code 0 = {} out of range", input.c0),
                ));
            }
            if input.forced.is_some_and(|f| f.len() != groups) {
                return Err(Error::invalid(
                    "frames",
                    format!("a forced frame needs codes 1..{groups}"),
                ));
            }
            input
                .params
                .validate()
                .map_err(|e| Error::invalid("subtalker", format!("sub-talker sampling: {e}")))?;
        }
        let key: FrameKey = inputs
            .iter()
            .map(|i| (i.params.clone(), i.forced.is_some()))
            .collect();
        if self.graph.as_ref().is_none_or(|(k, _)| *k != key) {
            self.graph = None;
            self.graph = Some((key.clone(), self.build(&key)));
        }
        let b = inputs.len();
        // Each sequence's noise from its own RNG, in the order it draws alone.
        let noise: Vec<Vec<Vec<f32>>> = inputs
            .iter_mut()
            .map(|i| match i.params.do_sample {
                true => (0..groups).map(|_| i.rng.gumbel_noise(cb)).collect(),
                false => Vec::new(),
            })
            .collect();
        let hidden: Vec<f32> = inputs
            .iter()
            .flat_map(|i| i.hidden.iter().copied())
            .collect();
        let c0: Vec<i32> = inputs.iter().map(|i| i.c0 as i32).collect();
        let mut pos: Vec<i32> = (0..b).flat_map(|_| [0, 1]).collect();
        pos.extend((2..=groups as i32).flat_map(|p| std::iter::repeat_n(p, b)));
        let (_, g) = self.graph.as_mut().expect("built above");
        g.compute(|g| {
            let io = g.io();
            g.tensor(io.hidden).set_f32(&hidden);
            g.tensor(io.c0).set_i32(&c0);
            g.tensor(io.pos).set_i32(&pos);
            g.tensor(io.mask0)
                .set_f32(&[0.0, f32::NEG_INFINITY, 0.0, 0.0]);
            for (slot, input) in io.forced.iter().zip(inputs.iter()) {
                if let (Some(slot), Some(f)) = (slot, input.forced) {
                    g.tensor(*slot)
                        .set_i32(&f.iter().map(|&c| c as i32).collect::<Vec<_>>());
                }
            }
            for (s, &(key_rows, value_slots)) in io.cache_slots.iter().enumerate() {
                let per = FrameCache::positions(self.weights.groups());
                let (rows, slots) = FrameCache::slots(&self.weights.cfg, per, s, b);
                g.tensor(key_rows).set_i32(&rows);
                g.tensor(value_slots).set_i32(&slots);
            }
            for (s, (_, picks)) in io.passes.iter().enumerate() {
                for pick in picks {
                    let run = pick.sequences.clone();
                    if let Some(slot) = pick.inputs.noise {
                        let noise: Vec<f32> =
                            run.clone().flat_map(|i| noise[i][s].clone()).collect();
                        g.tensor(slot).set_f32(&noise);
                    }
                    if let Some(slot) = pick.inputs.top_p {
                        g.tensor(slot).set_f32(&[inputs[run.start].params.top_p]);
                    }
                    if let Some(slot) = pick.inputs.scratch {
                        g.tensor(slot).set_f32(&vec![0.0; cb * run.len()]);
                    }
                }
            }
        })?;
        let io = g.io();
        let mut out: Vec<FrameCodes> = (0..b)
            .map(|_| FrameCodes {
                codes: Vec::with_capacity(groups),
                frame_embed: Vec::new(),
                logits: Vec::with_capacity(groups * cb),
            })
            .collect();
        for (logits, picks) in &io.passes {
            let logits = g.tensor(*logits).get_f32();
            for (seq, own) in out.iter_mut().zip(logits.chunks_exact(cb)) {
                seq.logits.extend_from_slice(own);
            }
            for pick in picks {
                let codes = g.tensor(pick.codes).get_i32();
                for (seq, code) in out[pick.sequences.clone()].iter_mut().zip(codes) {
                    seq.codes.push(code as u32);
                }
            }
        }
        let frame = g.tensor(io.frame).get_f32();
        for (seq, embed) in out.iter_mut().zip(frame.chunks_exact(t)) {
            seq.frame_embed = embed.to_vec();
        }
        Ok(out)
    }
}
