//! The talker: a Qwen3 decoder over summed text + codec embeddings that
//! predicts codebook 0 of each 80 ms frame (spec/03 §1–2).
//!
//! Graphs: one prefill graph per prompt length, and decode graphs keyed by
//! the attended cache length (rounded up to [`KV_BUCKET`]) that are built once
//! and reused for every token in that bucket. The KV cache is persistent and
//! written in-graph with `set_rows`, so a reused graph needs only new inputs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{TransformerConfig, TtsConfig};
use crate::error::{Error, Result};
use crate::ggml::{Backend, Context, GgmlType, OwnedGraph, TensorStore};
use crate::layers::{
    block_weight_names, decoder_block, linear, rms_norm, weight, BlockWeights, KvCache,
};

/// Cache lengths are rounded up to this many positions per decode graph.
pub const KV_BUCKET: usize = 64;

/// Output of one talker pass for its last position.
pub struct TalkerStep {
    /// Raw codec-head logits `[codec_vocab]`.
    pub logits: Vec<f32>,
    /// Post-final-norm hidden `[hidden]` (the code predictor's first input).
    pub hidden: Vec<f32>,
}

/// GGUF names the talker reads.
pub fn weight_names(cfg: &TtsConfig) -> Vec<String> {
    let mut names: Vec<String> = [
        "talker.text_embd.weight",
        "talker.codec_embd.weight",
        "talker.text_proj.fc1.weight",
        "talker.text_proj.fc1.bias",
        "talker.text_proj.fc2.weight",
        "talker.text_proj.fc2.bias",
        "talker.output_norm.weight",
        "talker.codec_head.weight",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for l in 0..cfg.talker.layers {
        names.extend(block_weight_names(&format!("talker.blk.{l}")));
    }
    names
}

pub struct Talker {
    // Drop order: graphs before the stores and the backend.
    /// Decode graphs (one token) by attended cache length.
    graphs: HashMap<usize, OwnedGraph>,
    cache: Option<Arc<TensorStore>>,
    capacity: usize,
    weights: Arc<TensorStore>,
    cfg: TtsConfig,
    backend: Arc<Backend>,
}

fn graph_nodes(cfg: &TransformerConfig) -> usize {
    64 + cfg.layers * 48
}

impl Talker {
    pub fn new(cfg: &TtsConfig, weights: Arc<TensorStore>, backend: Arc<Backend>) -> Self {
        Self {
            graphs: HashMap::new(),
            cache: None,
            capacity: 0,
            weights,
            cfg: cfg.clone(),
            backend,
        }
    }

    /// Starts a new sequence, reserving cache for `positions` positions (the
    /// cache grows later if the sequence gets longer).
    pub fn reset(&mut self, positions: usize) {
        let capacity = positions.div_ceil(KV_BUCKET) * KV_BUCKET;
        if capacity > self.capacity || self.cache.is_none() {
            self.replace_cache(capacity, 0);
        }
        if let Some(c) = &self.cache {
            c.clear(0);
        }
    }

    /// Allocates a cache of `capacity` positions, keeping the first `keep`
    /// positions of the current one. Cached graphs point at the old cache and
    /// are dropped.
    fn replace_cache(&mut self, capacity: usize, keep: usize) {
        let t = &self.cfg.talker;
        let width = t.head_dim * t.kv_heads;
        let names: Vec<String> = (0..t.layers)
            .flat_map(|l| [format!("k{l}"), format!("v{l}")])
            .collect();
        let specs: Vec<_> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    GgmlType::F32,
                    vec![width as i64, capacity as i64],
                )
            })
            .collect();
        let new = TensorStore::new(&self.backend, &specs);
        if let Some(old) = &self.cache {
            new.clear(0);
            for n in &names {
                let bytes = old.get(n).expect("cache tensor").get_bytes();
                new.get(n)
                    .expect("cache tensor")
                    .set_bytes_at(0, &bytes[..keep * width * 4]);
            }
        }
        self.graphs.clear();
        self.cache = Some(Arc::new(new));
        self.capacity = capacity;
    }

    fn build_step_graph(&self, n: usize, n_kv: usize) -> OwnedGraph {
        let cfg = self.cfg.clone();
        let cache = self.cache.clone().expect("reset() before forward()");
        let nodes = graph_nodes(&cfg.talker);
        OwnedGraph::build(
            &self.backend,
            nodes,
            vec![self.weights.clone(), cache],
            move |ctx, stores| {
                let (w, c) = (&stores[0], &stores[1]);
                let t = &cfg.talker;
                let x = ctx
                    .new_tensor(GgmlType::F32, &[t.hidden as i64, n as i64])
                    .set_name("embd")
                    .set_input();
                let pos = ctx
                    .new_tensor(GgmlType::I32, &[n as i64])
                    .set_name("pos")
                    .set_input();
                let mask = ctx
                    .new_tensor(GgmlType::F32, &[n_kv as i64, n as i64])
                    .set_name("mask")
                    .set_input();
                let mut h = x;
                for l in 0..t.layers {
                    let bw = BlockWeights::new(w, &format!("talker.blk.{l}"));
                    let kv = KvCache::Persistent {
                        k: weight(c, &format!("k{l}")),
                        v: weight(c, &format!("v{l}")),
                        rows: pos,
                        n_kv,
                    };
                    h = decoder_block(ctx, t, &bw, h, pos, kv, Some(mask)).out;
                }
                let last = ctx.view(h, &[t.hidden as i64], &[], (n - 1) * t.hidden * 4);
                let y = rms_norm(ctx, last, weight(w, "talker.output_norm.weight"), t.rms_eps)
                    .set_name("hidden");
                let logits = ctx
                    .mul_mat(weight(w, "talker.codec_head.weight"), y)
                    .set_name("logits");
                vec![y, logits]
            },
        )
    }

    /// Runs `embeds` (`n × hidden`, row-major) at positions `start..start+n`,
    /// appending to the KV cache; returns logits and hidden of the last one.
    pub fn forward(&mut self, embeds: &[f32], start: usize) -> Result<TalkerStep> {
        let h = self.cfg.talker.hidden;
        let n = embeds.len() / h;
        if n == 0 || !embeds.len().is_multiple_of(h) {
            return Err(Error::Other(format!(
                "talker input of {} values is not n × {h}",
                embeds.len()
            )));
        }
        if self.cache.is_none() {
            return Err(Error::Other("talker: reset() must start a sequence".into()));
        }
        if start + n > self.capacity {
            // Grow geometrically so long outputs reallocate only a few times.
            let needed = (start + n).max(self.capacity * 2).div_ceil(KV_BUCKET) * KV_BUCKET;
            self.replace_cache(needed, start);
        }
        let n_kv = ((start + n).div_ceil(KV_BUCKET) * KV_BUCKET).min(self.capacity);
        let mut mask = vec![f32::NEG_INFINITY; n_kv * n];
        for i in 0..n {
            mask[i * n_kv..i * n_kv + start + i + 1].fill(0.0);
        }
        let pos: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let set_inputs = |g: &OwnedGraph| {
            g.tensor("embd").set_f32(embeds);
            g.tensor("pos").set_i32(&pos);
            g.tensor("mask").set_f32(&mask);
        };
        let read = |g: &OwnedGraph| TalkerStep {
            logits: g.tensor("logits").get_f32(),
            hidden: g.tensor("hidden").get_f32(),
        };
        if n > 1 {
            // Prompts differ in length: their graphs are used once.
            let mut g = self.build_step_graph(n, n_kv);
            g.compute(set_inputs).map_err(Error::Other)?;
            return Ok(read(&g));
        }
        if !self.graphs.contains_key(&n_kv) {
            let g = self.build_step_graph(1, n_kv);
            self.graphs.insert(n_kv, g);
        }
        let g = self.graphs.get_mut(&n_kv).expect("inserted above");
        g.compute(set_inputs).map_err(Error::Other)?;
        Ok(read(g))
    }

    /// Text-stream vectors `T(ids) = fc2(silu(fc1(text_embedding[ids])))`,
    /// `ids.len() × hidden` row-major.
    pub fn text_embed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids, "talker.text_embd.weight")?;
        self.run_embedding(ids, move |ctx, w, ids| {
            let e = ctx.get_rows(weight(w, "talker.text_embd.weight"), ids);
            let h = linear(
                ctx,
                e,
                weight(w, "talker.text_proj.fc1.weight"),
                Some(weight(w, "talker.text_proj.fc1.bias")),
            );
            let h = ctx.silu(h);
            linear(
                ctx,
                h,
                weight(w, "talker.text_proj.fc2.weight"),
                Some(weight(w, "talker.text_proj.fc2.bias")),
            )
        })
    }

    /// Codec-stream vectors `C(ids)` (talker codec embedding rows).
    pub fn codec_embed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids, "talker.codec_embd.weight")?;
        self.run_embedding(ids, |ctx, w, ids| {
            ctx.get_rows(weight(w, "talker.codec_embd.weight"), ids)
        })
    }

    /// Frame embeddings `F(frame) = C(c0) + Σ_g Cg(g, c_g)` of 16-code
    /// frames (reference codes for ICL), `frames.len() × hidden`.
    pub fn frame_embeds(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        let groups = self.cfg.num_code_groups;
        let cb = self.cfg.codebook_size as u32;
        for (i, f) in frames.iter().enumerate() {
            if f.len() != groups || f.iter().any(|&c| c >= cb) {
                return Err(Error::Other(format!(
                    "reference frame {i}: expected {groups} codes below {cb}, got {f:?}"
                )));
            }
        }
        // One graph: group-major ids, one lookup per codebook table, summed.
        let n = frames.len();
        let ids: Vec<u32> = (0..groups)
            .flat_map(|g| frames.iter().map(move |f| f[g]))
            .collect();
        self.run_embedding(&ids, |ctx, w, ids| {
            let table = |g: usize| match g {
                0 => weight(w, "talker.codec_embd.weight"),
                g => weight(w, &format!("cp.codec_embd.{}.weight", g - 1)),
            };
            let rows =
                |g: usize| ctx.get_rows(table(g), ctx.view(ids, &[n as i64], &[], g * n * 4));
            (1..groups).fold(rows(0), |sum, g| ctx.add(sum, rows(g)))
        })
    }

    fn check_ids(&self, ids: &[u32], table: &str) -> Result<()> {
        let rows = self.weights.get(table).map_or(0, |t| t.ne()[1] as u32);
        match ids.iter().find(|&&i| i >= rows) {
            Some(bad) => Err(Error::Other(format!(
                "id {bad} is outside '{table}' ({rows} rows)"
            ))),
            None => Ok(()),
        }
    }

    fn run_embedding<F>(&mut self, ids: &[u32], f: F) -> Result<Vec<f32>>
    where
        F: for<'a> FnOnce(
            &'a Context,
            &'a TensorStore,
            crate::ggml::Tensor<'a>,
        ) -> crate::ggml::Tensor<'a>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let n = ids.len();
        // Room for the 16-table frame sum (views, lookups, adds).
        let mut g = OwnedGraph::build(
            &self.backend,
            128,
            vec![self.weights.clone()],
            |ctx, stores| {
                let t = ctx
                    .new_tensor(GgmlType::I32, &[n as i64])
                    .set_name("ids")
                    .set_input();
                let out = ctx.cont(f(ctx, &stores[0], t)).set_name("out");
                vec![out]
            },
        );
        let ids_i32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        g.compute(|g| g.tensor("ids").set_i32(&ids_i32))
            .map_err(Error::Other)?;
        Ok(g.tensor("out").get_f32())
    }
}
