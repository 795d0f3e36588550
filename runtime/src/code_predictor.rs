//! The code predictor ("sub-talker"): given the talker's hidden state and
//! code 0 of a frame, predicts codes 1..15 with a small Qwen3 decoder whose
//! cache is fresh every frame (spec/03 §3).
//!
//! All 15 sequential passes of a frame are one ggml graph, built once per
//! sampling setting and reused every frame: each pass picks its code in-graph
//! (argmax, or Gumbel-max over temperature/top-k/top-p filtered logits with
//! noise drawn by the host's seeded RNG) and embeds it for the next pass. The
//! graph also sums the frame's 16 code embeddings for the talker's next input.

use std::sync::Arc;

use crate::config::TtsConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, Tensor, TensorStore};
use crate::layers::{
    block_weight_names, decoder_block, linear, rms_norm, weight, BlockWeights, KvCache,
};
use crate::sampler::{Sampler, SamplingParams};

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

/// GGUF names the code predictor reads.
pub fn weight_names(cfg: &TtsConfig) -> Vec<String> {
    let groups = cfg.num_code_groups - 1;
    let mut names = vec!["cp.output_norm.weight".to_string()];
    for g in 0..groups {
        names.push(format!("cp.codec_embd.{g}.weight"));
        names.push(format!("cp.head.{g}.weight"));
    }
    for l in 0..cfg.code_predictor.layers {
        names.extend(block_weight_names(&format!("cp.blk.{l}")));
    }
    if cfg.talker.hidden != cfg.code_predictor.hidden {
        names.push("cp.mtp_proj.weight".into());
        names.push("cp.mtp_proj.bias".into());
    }
    names
}

/// The 1.7B models project every input from talker width to predictor width.
fn project<'a>(
    ctx: &'a Context,
    proj: Option<(Tensor<'a>, Tensor<'a>)>,
    x: Tensor<'a>,
) -> Tensor<'a> {
    match proj {
        Some((w, b)) => linear(ctx, x, w, Some(b)),
        None => x,
    }
}

/// Picks a code from `logits` `[cb]` for pass `s` as `params` say.
fn pick<'a>(ctx: &'a Context, logits: Tensor<'a>, s: usize, params: &SamplingParams) -> Tensor<'a> {
    if !params.do_sample {
        return ctx.argmax(ctx.reshape(logits, &[logits.ne()[0], 1]));
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
        let top_p = ctx
            .new_tensor(GgmlType::F32, &[1])
            .set_name(&format!("top_p_{s}"))
            .set_input();
        let keep_sorted = ctx.step(ctx.sub(ctx.scale(before, -1.0), ctx.scale(top_p, -1.0)));
        let scratch = ctx
            .new_tensor(GgmlType::F32, &[1, cb])
            .set_name(&format!("scratch_{s}"))
            .set_input();
        let keep = ctx.set_rows(scratch, ctx.reshape(keep_sorted, &[1, cb]), order);
        l = ctx.add(
            l,
            ctx.reshape(ctx.scale_bias(keep, FILTERED.abs(), FILTERED), &[cb]),
        );
    }
    let noise = ctx
        .new_tensor(GgmlType::F32, &[cb])
        .set_name(&format!("noise_{s}"))
        .set_input();
    ctx.argmax(ctx.reshape(ctx.add(l, noise), &[cb, 1]))
}

pub struct CodePredictor {
    /// The frame graph for the sampling settings (and teacher forcing) in use.
    graph: Option<((SamplingParams, bool), OwnedGraph)>,
    weights: Arc<TensorStore>,
    cfg: TtsConfig,
    backend: Arc<Backend>,
}

impl CodePredictor {
    pub fn new(cfg: &TtsConfig, weights: Arc<TensorStore>, backend: Arc<Backend>) -> Self {
        Self {
            graph: None,
            weights,
            cfg: cfg.clone(),
            backend,
        }
    }

    fn graph_nodes(cfg: &TtsConfig) -> usize {
        (cfg.num_code_groups - 1) * (cfg.code_predictor.layers * 48 + 64) + 256
    }

    /// `forced`: the passes read their inputs from the `forced` input (given
    /// codes 1..15, teacher forcing) instead of their own picks.
    fn build(&self, params: &SamplingParams, forced: bool) -> OwnedGraph {
        let cfg = self.cfg.clone();
        let params = params.clone();
        OwnedGraph::build(
            &self.backend,
            Self::graph_nodes(&cfg),
            vec![self.weights.clone()],
            move |ctx, stores| {
                let w = &stores[0];
                let (t, c) = (&cfg.talker, &cfg.code_predictor);
                let groups = cfg.num_code_groups - 1;
                let hidden = ctx
                    .new_tensor(GgmlType::F32, &[t.hidden as i64, 1])
                    .set_name("hidden")
                    .set_input();
                let c0 = ctx
                    .new_tensor(GgmlType::I32, &[1])
                    .set_name("c0")
                    .set_input();
                let pos = ctx
                    .new_tensor(GgmlType::I32, &[groups as i64 + 1])
                    .set_name("pos")
                    .set_input();
                let mask0 = ctx
                    .new_tensor(GgmlType::F32, &[2, 2])
                    .set_name("mask0")
                    .set_input();
                let given = forced.then(|| {
                    ctx.new_tensor(GgmlType::I32, &[groups as i64])
                        .set_name("forced")
                        .set_input()
                });
                let proj = (t.hidden != c.hidden).then(|| {
                    (
                        weight(w, "cp.mtp_proj.weight"),
                        weight(w, "cp.mtp_proj.bias"),
                    )
                });
                let project = |x| project(ctx, proj, x);
                let blocks: Vec<BlockWeights<'_>> = (0..c.layers)
                    .map(|l| BlockWeights::new(w, &format!("cp.blk.{l}")))
                    .collect();
                let mut kv: Vec<(Option<Tensor<'_>>, Option<Tensor<'_>>)> =
                    vec![(None, None); c.layers];

                let e0 = ctx.get_rows(weight(w, "talker.codec_embd.weight"), c0);
                let mut frame = e0;
                // pass 0 sees [talker hidden, C(c0)]; pass s>0 sees the code it just picked
                let mut x = project(ctx.concat(hidden, e0, 1));
                let mut outputs = Vec::new();
                for s in 0..groups {
                    let n = if s == 0 { 2 } else { 1 };
                    let p = ctx.view(pos, &[n], &[], if s == 0 { 0 } else { (s + 1) * 4 });
                    let mut h = x;
                    for (l, bw) in blocks.iter().enumerate() {
                        let cache = KvCache::InGraph {
                            k: kv[l].0,
                            v: kv[l].1,
                        };
                        let mask = (s == 0).then_some(mask0);
                        let out = decoder_block(ctx, c, bw, h, p, cache, mask);
                        kv[l] = (Some(out.k), Some(out.v));
                        h = out.out;
                    }
                    let last =
                        ctx.view(h, &[c.hidden as i64], &[], (n as usize - 1) * c.hidden * 4);
                    let y = rms_norm(ctx, last, weight(w, "cp.output_norm.weight"), c.rms_eps);
                    let logits = ctx
                        .mul_mat(weight(w, &format!("cp.head.{s}.weight")), y)
                        .set_name(&format!("logits_{s}"));
                    let code = pick(ctx, logits, s, &params).set_name(&format!("code_{s}"));
                    // teacher forcing feeds the given code instead of the pick
                    let input = match given {
                        Some(g) => ctx.view(g, &[1], &[], s * 4),
                        None => code,
                    };
                    let e = ctx.get_rows(weight(w, &format!("cp.codec_embd.{s}.weight")), input);
                    frame = ctx.add(frame, e);
                    if s + 1 < groups {
                        x = project(e);
                    }
                    outputs.push(logits);
                    outputs.push(code);
                }
                outputs.push(frame.set_name("frame"));
                outputs
            },
        )
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
        let cb = self.cfg.codebook_size;
        if frame.len() != self.cfg.num_code_groups || frame[1..].iter().any(|&c| c as usize >= cb) {
            return Err(Error::Other(format!(
                "forced frame {frame:?} is not {} codes below {cb}",
                self.cfg.num_code_groups
            )));
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
        let (t, cb) = (self.cfg.talker.hidden, self.cfg.codebook_size);
        if hidden.len() != t {
            return Err(Error::Other(format!(
                "code predictor: hidden of {} values, expected {t}",
                hidden.len()
            )));
        }
        if c0 as usize >= self.cfg.codec_vocab {
            return Err(Error::Other(format!(
                "code predictor: code 0 = {c0} out of range"
            )));
        }
        params
            .validate()
            .map_err(|e| Error::Other(format!("sub-talker sampling: {e}")))?;
        let key = (params.clone(), forced.is_some());
        if self.graph.as_ref().is_none_or(|(k, _)| *k != key) {
            self.graph = Some((key.clone(), self.build(params, forced.is_some())));
        }
        let (_, g) = self.graph.as_mut().expect("built above");
        let groups = self.cfg.num_code_groups - 1;
        let noise: Vec<Vec<f32>> = if params.do_sample {
            (0..groups).map(|_| rng.gumbel_noise(cb)).collect()
        } else {
            Vec::new()
        };
        g.compute(|g| {
            g.tensor("hidden").set_f32(hidden);
            g.tensor("c0").set_i32(&[c0 as i32]);
            g.tensor("pos")
                .set_i32(&(0..=groups as i32).collect::<Vec<_>>());
            g.tensor("mask0")
                .set_f32(&[0.0, f32::NEG_INFINITY, 0.0, 0.0]);
            if let Some(f) = forced {
                g.tensor("forced")
                    .set_i32(&f.iter().map(|&c| c as i32).collect::<Vec<_>>());
            }
            for (s, n) in noise.iter().enumerate() {
                g.tensor(&format!("noise_{s}")).set_f32(n);
                if params.top_p < 1.0 {
                    g.tensor(&format!("top_p_{s}")).set_f32(&[params.top_p]);
                    g.tensor(&format!("scratch_{s}")).set_f32(&vec![0.0; cb]);
                }
            }
        })
        .map_err(Error::Other)?;
        let mut codes = Vec::with_capacity(groups);
        let mut logits = Vec::with_capacity(groups * cb);
        for s in 0..groups {
            let code = g.tensor(&format!("code_{s}")).get_bytes();
            codes.push(i32::from_le_bytes([code[0], code[1], code[2], code[3]]) as u32);
            logits.extend(g.tensor(&format!("logits_{s}")).get_f32());
        }
        Ok(FrameCodes {
            codes,
            frame_embed: g.tensor("frame").get_f32(),
            logits,
        })
    }
}
