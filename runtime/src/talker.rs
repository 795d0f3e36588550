//! The talker: a Qwen3 decoder over summed text + codec embeddings that
//! predicts codebook 0 of each 80 ms frame (the reference's
//! `Qwen3TTSTalkerForConditionalGeneration`; see docs/architecture.md).
//!
//! [`TalkerWeights`] are the model's, shared by every session; a [`Talker`]
//! is one session's state: its KV cache and graphs. Graphs: one prefill graph
//! per prompt, and a decode graph for the attended cache length rounded up to
//! [`KV_BUCKET`], built once and reused for every token in that bucket. The
//! KV cache is persistent and written in-graph with `set_rows`, so a reused
//! graph needs only new inputs.
//!
//! A [`DecodeBatch`] steps several sequences at once (continuous batching):
//! one graph whose weight products take every sequence's vector together
//! (the weights are read once for all) and whose attention is per sequence,
//! over its own cache. A lone sequence's step is a batch of one, and every
//! product gives each column the one-column result (a row-dot context), so
//! a sequence's values do not depend on what else is in its batch.

use std::sync::Arc;

use crate::config::{TransformerConfig, TtsConfig};
use crate::error::{Error, Result};
use crate::ggml::{
    Backend, Context, GgmlType, OwnedGraph, Slot, StoredTensor, Tensor, TensorStore,
};
use crate::gguf_schema::tensors::talker as names;
use crate::layers::{
    attend, attention_inputs, block_with, cache_view, concat_columns, decoder_block, kv_tensors,
    linear, rms_norm, value_slots, write_transposed, BlockKind, BlockWeights, KvCache,
};
use crate::weights::{Linear, WeightSource};

/// Cache lengths are rounded up to this many positions per decode graph.
pub const KV_BUCKET: usize = 64;

/// The talker's weights.
#[derive(Clone, Debug)]
pub struct TalkerWeights {
    pub cfg: TransformerConfig,
    /// `[text_hidden, text_vocab]`.
    pub text_embd: StoredTensor,
    /// `[hidden, codec_vocab]`.
    pub codec_embd: StoredTensor,
    /// Text projection `fc2(silu(fc1(e)))`: text width → talker width.
    pub text_proj_fc1: Linear,
    pub text_proj_fc2: Linear,
    pub blocks: Vec<BlockWeights>,
    pub output_norm: StoredTensor,
    /// `[hidden, codec_vocab]`.
    pub codec_head: StoredTensor,
}

/// Refuses KV cache types other than F32 and F16.
pub fn check_kv_type(ty: GgmlType) -> Result<()> {
    match ty {
        GgmlType::F32 | GgmlType::F16 => Ok(()),
        _ => Err(Error::invalid(
            "kv_cache",
            format!("KV cache type {} (expected f32 or f16)", ty.name()),
        )),
    }
}

/// Parses a `--kv-cache` argument (`f32` or `f16`).
pub fn parse_kv_type(s: &str) -> std::result::Result<GgmlType, String> {
    GgmlType::parse(s)
        .filter(|&t| check_kv_type(t).is_ok())
        .ok_or_else(|| format!("unknown KV cache type '{s}' (expected f32 or f16)"))
}

/// The KV cache type by default: F32 for every file type. F16 (half the
/// cache's memory) is opt-in: it moves the logits less than Q8_0 weights do,
/// but on the tiny 1.7B-CustomVoice Q8_0 file it takes the first-step logits'
/// cosine to the reference from ≥ 0.9999 (the Q8_0 threshold) to 0.99988.
pub const DEFAULT_KV_TYPE: GgmlType = GgmlType::F32;

impl TalkerWeights {
    pub fn load(src: &WeightSource, cfg: &TtsConfig) -> Result<Self> {
        let t = &cfg.talker;
        let text_embd = src.any(names::TEXT_EMBD)?;
        let text_vocab = text_embd.ne()[1] as usize;
        let text_embd = src.tensor(names::TEXT_EMBD, &[cfg.text_hidden, text_vocab])?;
        let blocks: Vec<BlockWeights> = (0..t.layers)
            .map(|l| BlockWeights::load(src, &names::block(l), t, BlockKind::Qwen3))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: t.clone(),
            text_embd,
            codec_embd: src.tensor(names::CODEC_EMBD, &[t.hidden, cfg.codec_vocab])?,
            text_proj_fc1: src.linear(
                names::TEXT_PROJ_FC1,
                cfg.text_hidden,
                cfg.text_hidden,
                true,
            )?,
            text_proj_fc2: src.linear(names::TEXT_PROJ_FC2, cfg.text_hidden, t.hidden, true)?,
            blocks,
            output_norm: src.tensor(names::OUTPUT_NORM, &[t.hidden])?,
            codec_head: src.tensor(names::CODEC_HEAD, &[t.hidden, cfg.codec_vocab])?,
        })
    }

    /// Rows of an embedding table.
    fn rows(table: &StoredTensor) -> u32 {
        table.ne()[1] as u32
    }
}

/// Output of one talker pass for its last position.
pub struct TalkerStep {
    /// Raw codec-head logits `[codec_vocab]`.
    pub logits: Vec<f32>,
    /// Post-final-norm hidden `[hidden]` (the code predictor's first input).
    pub hidden: Vec<f32>,
}

/// Inputs and outputs of a prefill pass.
#[derive(Clone, Copy)]
struct StepIo {
    embd: Slot,
    pos: Slot,
    /// Where the values go (see `layers::value_slots`).
    value_slots: Slot,
    mask: Slot,
    hidden: Slot,
    logits: Slot,
}

/// Inputs and outputs of a decode step of a batch of sequences.
struct DecodeIo {
    /// `[hidden, batch]`.
    embd: Slot,
    /// Each sequence's position, `[batch]`.
    pos: Slot,
    /// Each sequence's mask, `[n_kv]`, and value slots.
    masks: Vec<Slot>,
    value_slots: Vec<Slot>,
    /// `[hidden, batch]`, `[codec_vocab, batch]`.
    hidden: Slot,
    logits: Slot,
}

/// The per-layer KV cache of one sequence: keys `[head_dim·kv_heads,
/// capacity]`, values transposed, `[capacity, head_dim·kv_heads]` (see
/// `layers::KvCache::PersistentTransposed`).
struct KvStore {
    /// Holds the memory (and clears it); graphs reach it through `k`/`v`.
    store: TensorStore,
    k: Vec<StoredTensor>,
    v: Vec<StoredTensor>,
    capacity: usize,
    ty: GgmlType,
    /// Tells caches apart (a decode graph is built for given caches).
    id: u64,
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl KvStore {
    fn new(backend: &Backend, cfg: &TransformerConfig, capacity: usize, ty: GgmlType) -> Self {
        let width = (cfg.head_dim * cfg.kv_heads) as i64;
        let capacity_i = capacity as i64;
        let (store, k, v) = kv_tensors(
            backend,
            cfg.layers,
            ty,
            &[width, capacity_i],
            &[capacity_i, width],
        );
        store.clear(0);
        Self {
            k,
            v,
            store,
            capacity,
            ty,
            id: NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A decode graph's composition: each sequence's cache and attended length.
type BatchKey = Vec<(u64, usize)>;

/// One-position steps of several sequences at once (see the module doc),
/// with the graph of the current composition: it is rebuilt when a
/// sequence joins or leaves, or crosses a [`KV_BUCKET`].
#[derive(Default)]
pub struct DecodeBatch {
    graph: Option<(BatchKey, OwnedGraph<DecodeIo>)>,
}

/// One sequence's part of a [`DecodeBatch`] step: its next input
/// `[hidden]` at `position`.
pub struct StepInput<'a> {
    pub talker: &'a mut Talker,
    pub embed: &'a [f32],
    pub position: usize,
}

impl DecodeBatch {
    /// Runs one position of every sequence (all on one model and backend);
    /// returns their steps in order. Each is what the sequence's own
    /// [`Talker::forward`] of the same input gives.
    pub fn step(&mut self, inputs: &mut [StepInput<'_>]) -> Result<Vec<TalkerStep>> {
        let Some(first) = inputs.first() else {
            return Ok(Vec::new());
        };
        let (weights, backend) = (first.talker.weights.clone(), first.talker.backend.clone());
        let h = weights.cfg.hidden;
        let mut key = Vec::with_capacity(inputs.len());
        let mut masks = Vec::with_capacity(inputs.len());
        let mut slots = Vec::with_capacity(inputs.len());
        let width = weights.cfg.head_dim * weights.cfg.kv_heads;
        for input in inputs.iter_mut() {
            if input.embed.len() != h {
                return Err(Error::invalid(
                    "embeddings",
                    format!(
                        "talker step input of {} values, expected {h}",
                        input.embed.len()
                    ),
                ));
            }
            let n_kv = input.talker.prepare_step(input.position)?;
            let cache = input.talker.cache.as_ref().expect("prepared");
            key.push((cache.id, n_kv));
            slots.push(value_slots(&[input.position], width, cache.capacity));
            let mut mask = vec![f32::NEG_INFINITY; n_kv];
            mask[..input.position + 1].fill(0.0);
            masks.push(mask);
        }
        if self.graph.as_ref().is_none_or(|(k, _)| *k != key) {
            // Drop the old graph first: it keeps its caches alive.
            self.graph = None;
            let caches: Vec<(&KvStore, usize)> = inputs
                .iter()
                .zip(&key)
                .map(|(i, &(_, n_kv))| (i.talker.cache.as_ref().expect("prepared"), n_kv))
                .collect();
            let graph = build_decode_graph(&weights, &backend, &caches);
            self.graph = Some((key, graph));
        }
        let (_, g) = self.graph.as_mut().expect("built above");
        let embeds: Vec<f32> = inputs
            .iter()
            .flat_map(|i| i.embed.iter().copied())
            .collect();
        let pos: Vec<i32> = inputs.iter().map(|i| i.position as i32).collect();
        g.compute(|g| {
            let io = g.io();
            g.tensor(io.embd).set_f32(&embeds);
            g.tensor(io.pos).set_i32(&pos);
            for (slot, mask) in io.masks.iter().zip(&masks) {
                g.tensor(*slot).set_f32(mask);
            }
            for (slot, slots) in io.value_slots.iter().zip(&slots) {
                g.tensor(*slot).set_i32(slots);
            }
        })?;
        let io = g.io();
        let (hidden, logits) = (g.tensor(io.hidden).get_f32(), g.tensor(io.logits).get_f32());
        let vocab = logits.len() / inputs.len();
        Ok(hidden
            .chunks_exact(h)
            .zip(logits.chunks_exact(vocab))
            .map(|(hidden, logits)| TalkerStep {
                logits: logits.to_vec(),
                hidden: hidden.to_vec(),
            })
            .collect())
    }

    /// Drops the graph (and with it its hold on the caches' memory).
    pub fn release(&mut self) {
        self.graph = None;
    }
}

/// The decode graph of one new position of each sequence, over `caches`
/// (each with its attended length).
fn build_decode_graph(
    w: &TalkerWeights,
    backend: &Arc<Backend>,
    caches: &[(&KvStore, usize)],
) -> OwnedGraph<DecodeIo> {
    let t = &w.cfg;
    let b = caches.len();
    let (hd, nh, nkv) = (t.head_dim, t.heads, t.kv_heads);
    let nodes = graph_nodes(t) + b * t.layers * 32;
    OwnedGraph::build(backend, nodes, |ctx| {
        ctx.set_row_dots(true);
        let embd = ctx
            .new_tensor(GgmlType::F32, &[t.hidden as i64, b as i64])
            .set_input();
        let pos = ctx.new_tensor(GgmlType::I32, &[b as i64]).set_input();
        let masks: Vec<Tensor<'_>> = caches
            .iter()
            .map(|&(_, n_kv)| ctx.new_tensor(GgmlType::F32, &[n_kv as i64, 1]).set_input())
            .collect();
        let slots: Vec<Tensor<'_>> = caches
            .iter()
            .map(|_| {
                ctx.new_tensor(GgmlType::I32, &[(hd * nkv) as i64])
                    .set_input()
            })
            .collect();
        let mut h = embd;
        for (l, bw) in w.blocks.iter().enumerate() {
            h = block_with(ctx, t, bw, h, |x| {
                let (q, k, v) = attention_inputs(ctx, t, bw, x, pos);
                let parts: Vec<_> = caches
                    .iter()
                    .enumerate()
                    .map(|(i, &(cache, n_kv))| {
                        let column = |x, heads: usize| {
                            let width = hd * heads;
                            ctx.view(x, &[width as i64, 1], &[width * 4], i * width * 4)
                        };
                        let row = ctx.view(pos, &[1], &[], i * 4);
                        let kw = ctx.set_rows(ctx.stored(&cache.k[l]), column(k, nkv), row);
                        let v_t = ctx.stored(&cache.v[l]);
                        let v = column(v, nkv);
                        let q = ctx.view(
                            q,
                            &[hd as i64, nh as i64, 1],
                            &[hd * 4, hd * nh * 4],
                            i * hd * nh * 4,
                        );
                        let v_t = write_transposed(ctx, t, v_t, v, slots[i], n_kv);
                        attend(ctx, t, q, cache_view(ctx, t, kw, n_kv), v_t, Some(masks[i]))
                    })
                    .collect();
                ctx.mul_mat(ctx.stored(&bw.o), concat_columns(ctx, &parts))
            });
        }
        let hidden = rms_norm(ctx, h, ctx.stored(&w.output_norm), t.rms_eps);
        let logits = ctx.mul_mat(ctx.stored(&w.codec_head), hidden);
        let io = DecodeIo {
            embd: ctx.slot(embd),
            pos: ctx.slot(pos),
            masks: masks.iter().map(|&m| ctx.slot(m)).collect(),
            value_slots: slots.iter().map(|&s| ctx.slot(s)).collect(),
            hidden: ctx.slot(hidden),
            logits: ctx.slot(logits),
        };
        (io, vec![hidden, logits])
    })
}

/// One session's talker state: KV cache and graphs.
pub struct Talker {
    // Drop order: graphs before the cache.
    /// This sequence's own decode steps (a batch of one).
    solo: DecodeBatch,
    cache: Option<KvStore>,
    /// The prompt rows whose keys and values are still at the start of the
    /// cache, for [`Talker::prefill`] to reuse.
    cached_prompt: Vec<f32>,
    kv_type: GgmlType,
    weights: Arc<TalkerWeights>,
    backend: Arc<Backend>,
}

/// A voice's prompt prefix as the talker computed it: the prompt rows that
/// depend only on the voice (with its language and instruction), and their
/// keys and values in every layer. A prefill of a prompt that begins with
/// these rows starts from them ([`Talker::prefill_warm`]): the keys and
/// values of a row depend only on the rows up to it, and the prefill graph
/// computes each row's alike whatever the rows after it, so what follows is
/// bit for bit what a prefill of the whole prompt gives.
#[derive(Clone, Debug)]
pub struct TalkerPrefix {
    /// `len × hidden` prompt rows.
    rows: Vec<f32>,
    len: usize,
    ty: GgmlType,
    /// Per layer: keys `[width, len]`; values `[len]` per value row (the
    /// cache's transposed layout).
    k: Vec<Vec<u8>>,
    v: Vec<Vec<u8>>,
}

impl TalkerPrefix {
    /// Prompt rows covered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The prompt rows (`len × hidden`).
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// The KV cache type the keys and values are in.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.rows.len() * 4 + self.k.iter().chain(&self.v).map(Vec::len).sum::<usize>()
    }
}

/// Fewer shared rows than this are recomputed: not worth a special case.
const MIN_REUSED_ROWS: usize = 2;

/// How many leading rows of `width` values `a` and `b` share, bit for bit.
fn shared_rows(a: &[f32], b: &[f32], width: usize) -> usize {
    a.chunks_exact(width)
        .zip(b.chunks_exact(width))
        .take_while(|(x, y)| x.iter().zip(*y).all(|(p, q)| p.to_bits() == q.to_bits()))
        .count()
}

fn graph_nodes(cfg: &TransformerConfig) -> usize {
    64 + cfg.layers * 48
}

impl Talker {
    pub fn new(weights: Arc<TalkerWeights>, backend: Arc<Backend>) -> Self {
        Self {
            solo: DecodeBatch::default(),
            cache: None,
            cached_prompt: Vec::new(),
            kv_type: DEFAULT_KV_TYPE,
            weights,
            backend,
        }
    }

    /// The KV cache's element type.
    pub fn kv_type(&self) -> GgmlType {
        self.kv_type
    }

    /// Sets the KV cache's element type (F32 or F16) for the next sequence;
    /// the current cache is dropped when the type changes.
    pub fn set_kv_type(&mut self, ty: GgmlType) -> Result<()> {
        check_kv_type(ty)?;
        if ty != self.kv_type {
            self.kv_type = ty;
            self.solo.release();
            self.cache = None;
            self.cached_prompt.clear();
        }
        Ok(())
    }

    /// Starts a new sequence, reserving cache for `positions` positions (the
    /// cache grows later if the sequence gets longer).
    pub fn reset(&mut self, positions: usize) {
        self.cached_prompt.clear();
        let capacity = positions.div_ceil(KV_BUCKET) * KV_BUCKET;
        match &self.cache {
            Some(c) if c.capacity >= capacity => c.store.clear(0),
            _ => self.replace_cache(capacity, 0),
        }
    }

    /// Starts a new sequence with `prompt` (`n × hidden`), reserving cache
    /// for `positions` positions; returns the last prompt position's step.
    /// Leading rows equal to the previous prompt's (same voice, language and
    /// instruct: the prompt's head) keep their cached keys and values, which
    /// are what recomputing them would give: only the rest is computed.
    /// Also returns how many rows were reused.
    pub fn prefill(&mut self, prompt: &[f32], positions: usize) -> Result<(TalkerStep, usize)> {
        self.prefill_warm(prompt, positions, None)
    }

    /// [`Talker::prefill`] that may also start from `warm`, a voice's saved
    /// prompt prefix (see [`TalkerPrefix`]): from as many of its leading rows
    /// as `prompt` shares bit for bit (never the prompt's last two), when
    /// that is more than the session's previous prompt shares.
    pub fn prefill_warm(
        &mut self,
        prompt: &[f32],
        positions: usize,
        warm: Option<&TalkerPrefix>,
    ) -> Result<(TalkerStep, usize)> {
        let h = self.weights.cfg.hidden;
        let n = prompt.len() / h;
        // The last two rows are always computed: the last one's logits start
        // the generation, and a one-row pass (other kernels) can differ from
        // a batched one in the last bit at F32.
        let most = n.saturating_sub(2);
        let own = shared_rows(&self.cached_prompt, prompt, h).min(most);
        // The prefix's rows the prompt begins with (all of them but where
        // the prompt ends within two rows of the prefix's end).
        let warm = warm
            .filter(|w| w.ty == self.kv_type)
            .map(|w| (w, shared_rows(&w.rows, prompt, h).min(most)))
            .filter(|&(_, n)| n > own);
        let shared = warm.map_or(own, |(_, n)| n);
        let reused = if shared >= MIN_REUSED_ROWS { shared } else { 0 };
        let capacity = positions.max(n).div_ceil(KV_BUCKET) * KV_BUCKET;
        match &self.cache {
            // Rows past the reused ones are stale but masked until rewritten.
            Some(c) if c.capacity >= capacity && reused > 0 => {}
            Some(c) if c.capacity >= capacity => c.store.clear(0),
            // (the reused rows are copied over, or written from `warm` below)
            _ => self.replace_cache(capacity, if warm.is_some() { 0 } else { reused }),
        }
        if let Some((w, n)) = warm.filter(|_| reused > 0) {
            self.write_prefix(w, n);
        }
        self.cached_prompt.clear();
        let step = self.forward(&prompt[reused * h..], reused)?;
        self.cached_prompt = prompt.to_vec();
        Ok((step, reused))
    }

    /// The keys and values of the first `rows` rows of the current prompt
    /// (`None` when the session's last prefill did not cover them).
    pub fn save_prefix(&self, rows: usize) -> Option<TalkerPrefix> {
        let h = self.weights.cfg.hidden;
        let cache = self.cache.as_ref()?;
        if rows == 0 || self.cached_prompt.len() < rows * h || rows > cache.capacity {
            return None;
        }
        let t = &self.weights.cfg;
        let es = cache.ty.type_size();
        let width = t.head_dim * t.kv_heads;
        let k = cache
            .k
            .iter()
            .map(|k| k.get_bytes_at(0, rows * width * es))
            .collect();
        // Values are transposed: the first `rows` of each row of positions.
        let v = cache
            .v
            .iter()
            .map(|v| {
                let all = v.get_bytes();
                all.chunks_exact(cache.capacity * es)
                    .flat_map(|r| &r[..rows * es])
                    .copied()
                    .collect()
            })
            .collect();
        Some(TalkerPrefix {
            rows: self.cached_prompt[..rows * h].to_vec(),
            len: rows,
            ty: cache.ty,
            k,
            v,
        })
    }

    /// Writes the keys and values of a saved prefix's first `n` rows at the
    /// cache's start.
    fn write_prefix(&mut self, w: &TalkerPrefix, n: usize) {
        let cache = self.cache.as_ref().expect("allocated by prefill");
        let es = cache.ty.type_size();
        let width = self.weights.cfg.head_dim * self.weights.cfg.kv_heads;
        for (to, from) in cache.k.iter().zip(&w.k) {
            to.set_bytes_at(0, &from[..n * width * es]);
        }
        for (to, from) in cache.v.iter().zip(&w.v) {
            for (j, row) in from.chunks_exact(w.len * es).enumerate() {
                to.set_bytes_at(j * cache.capacity * es, &row[..n * es]);
            }
        }
    }

    /// Runs prompt rows `rows` (at least two) at positions from `start` on,
    /// as a piece of a prefill: the prompt the cache holds is then its rows
    /// before `start` and these (see [`Talker::save_prefix`]).
    pub(crate) fn prefill_piece(&mut self, rows: &[f32], start: usize) -> Result<TalkerStep> {
        let h = self.weights.cfg.hidden;
        if rows.len() < 2 * h {
            return Err(Error::Internal("a prefill piece of one row".into()));
        }
        let step = self.forward(rows, start)?;
        self.cached_prompt.extend_from_slice(rows);
        Ok(step)
    }

    /// Allocates a cache of `capacity` positions, keeping the first `keep`
    /// positions of the current one. The graph points at the old cache and
    /// is dropped.
    fn replace_cache(&mut self, capacity: usize, keep: usize) {
        let t = &self.weights.cfg;
        let new = KvStore::new(&self.backend, t, capacity, self.kv_type);
        // (`set_kv_type` drops a cache of another type.)
        if let Some(old) = self.cache.as_ref().filter(|old| old.ty == new.ty) {
            let width = t.head_dim * t.kv_heads;
            let es = new.ty.type_size();
            for (from, to) in old.k.iter().zip(&new.k) {
                to.set_bytes_at(0, &from.get_bytes()[..keep * width * es]);
            }
            // Values are transposed: the first `keep` of each row of positions.
            for (from, to) in old.v.iter().zip(&new.v) {
                let from = from.get_bytes();
                for (j, row) in from.chunks_exact(old.capacity * es).enumerate() {
                    to.set_bytes_at(j * capacity * es, &row[..keep * es]);
                }
            }
        }
        self.solo.release();
        self.cache = Some(new);
    }

    fn build_step_graph(&self, n: usize, n_kv: usize) -> OwnedGraph<StepIo> {
        let w = &*self.weights;
        let cache = self.cache.as_ref().expect("reset() before forward()");
        let t = &w.cfg;
        OwnedGraph::build(&self.backend, graph_nodes(t), |ctx| {
            let embd = ctx
                .new_tensor(GgmlType::F32, &[t.hidden as i64, n as i64])
                .set_input();
            let pos = ctx.new_tensor(GgmlType::I32, &[n as i64]).set_input();
            let width = t.head_dim * t.kv_heads;
            let value_slots = ctx
                .new_tensor(GgmlType::I32, &[(width * n) as i64])
                .set_input();
            let mask = ctx
                .new_tensor(GgmlType::F32, &[n_kv as i64, n as i64])
                .set_input();
            let mut h = embd;
            for (l, bw) in w.blocks.iter().enumerate() {
                let kv = KvCache::PersistentTransposed {
                    k: ctx.stored(&cache.k[l]),
                    v_t: ctx.stored(&cache.v[l]),
                    rows: pos,
                    value_slots,
                    n_kv,
                };
                h = decoder_block(ctx, t, bw, h, pos, kv, Some(mask)).out;
            }
            let last = ctx.view(h, &[t.hidden as i64], &[], (n - 1) * t.hidden * 4);
            let hidden = rms_norm(ctx, last, ctx.stored(&w.output_norm), t.rms_eps);
            let logits = ctx.mul_mat(ctx.stored(&w.codec_head), hidden);
            let io = StepIo {
                embd: ctx.slot(embd),
                pos: ctx.slot(pos),
                value_slots: ctx.slot(value_slots),
                mask: ctx.slot(mask),
                hidden: ctx.slot(hidden),
                logits: ctx.slot(logits),
            };
            (io, vec![hidden, logits])
        })
    }

    /// Runs `embeds` (`n × hidden`, row-major) at positions `start..start+n`,
    /// appending to the KV cache; returns logits and hidden of the last one.
    pub fn forward(&mut self, embeds: &[f32], start: usize) -> Result<TalkerStep> {
        let h = self.weights.cfg.hidden;
        let n = embeds.len() / h;
        if n == 0 || !embeds.len().is_multiple_of(h) {
            return Err(Error::invalid(
                "embeddings",
                format!("talker input of {} values is not n × {h}", embeds.len()),
            ));
        }
        if n == 1 {
            let mut solo = std::mem::take(&mut self.solo);
            let step = solo.step(&mut [StepInput {
                talker: self,
                embed: embeds,
                position: start,
            }]);
            self.solo = solo;
            return Ok(step?.remove(0));
        }
        let n_kv = self.prepare(start, n)?;
        let mut mask = vec![f32::NEG_INFINITY; n_kv * n];
        for i in 0..n {
            mask[i * n_kv..i * n_kv + start + i + 1].fill(0.0);
        }
        let pos: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let positions: Vec<usize> = (start..start + n).collect();
        let t = &self.weights.cfg;
        let capacity = self.cache.as_ref().map_or(0, |c| c.capacity);
        let slots = value_slots(&positions, t.head_dim * t.kv_heads, capacity);
        // Prompts differ in length: their graphs are used once.
        let mut g = self.build_step_graph(n, n_kv);
        let io = *g.io();
        g.compute(|g| {
            g.tensor(io.embd).set_f32(embeds);
            g.tensor(io.pos).set_i32(&pos);
            g.tensor(io.value_slots).set_i32(&slots);
            g.tensor(io.mask).set_f32(&mask);
        })?;
        Ok(TalkerStep {
            logits: g.tensor(io.logits).get_f32(),
            hidden: g.tensor(io.hidden).get_f32(),
        })
    }

    /// Makes room for positions `start..start + n` (the cache grows when
    /// needed); returns the cache length they attend over.
    fn prepare(&mut self, start: usize, n: usize) -> Result<usize> {
        // Rows from `start` on are rewritten: they are no longer the prompt's.
        self.cached_prompt.truncate(start * self.weights.cfg.hidden);
        let capacity = match &self.cache {
            Some(c) => c.capacity,
            None => {
                return Err(Error::invalid(
                    "session",
                    "the talker's reset() must start a sequence",
                ))
            }
        };
        if start + n > capacity {
            // Grow geometrically so long outputs reallocate only a few times.
            let needed = (start + n).max(capacity * 2).div_ceil(KV_BUCKET) * KV_BUCKET;
            self.replace_cache(needed, start);
        }
        let capacity = self.cache.as_ref().map_or(0, |c| c.capacity);
        Ok(((start + n).div_ceil(KV_BUCKET) * KV_BUCKET).min(capacity))
    }

    /// [`Talker::prepare`] for a one-position step at `position`.
    fn prepare_step(&mut self, position: usize) -> Result<usize> {
        self.prepare(position, 1)
    }

    /// Text-stream vectors `T(ids) = fc2(silu(fc1(text_embedding[ids])))`,
    /// `ids.len() × hidden` row-major.
    pub fn text_embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let w = &*self.weights;
        check_ids(ids, &w.text_embd, "text token")?;
        self.run_embedding(ids, |ctx, ids| {
            let e = ctx.get_rows(ctx.stored(&w.text_embd), ids);
            let h = ctx.silu(linear(ctx, e, &w.text_proj_fc1));
            linear(ctx, h, &w.text_proj_fc2)
        })
    }

    /// Codec-stream vectors `C(ids)` (talker codec embedding rows).
    pub fn codec_embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let w = &*self.weights;
        check_ids(ids, &w.codec_embd, "codec id")?;
        self.run_embedding(ids, |ctx, ids| ctx.get_rows(ctx.stored(&w.codec_embd), ids))
    }

    /// Frame embeddings `F(frame) = C(c0) + Σ_g Cg(g, c_g)` of 16-code
    /// frames (reference codes for ICL), `frames.len() × hidden`, with the
    /// code predictor's tables `Cg` for codebooks 1..
    pub fn frame_embeds(
        &self,
        group_tables: &[StoredTensor],
        frames: &[Vec<u32>],
    ) -> Result<Vec<f32>> {
        let groups = group_tables.len() + 1;
        let cb = group_tables.first().map_or(0, TalkerWeights::rows);
        for (i, f) in frames.iter().enumerate() {
            if f.len() != groups || f.iter().any(|&c| c >= cb) {
                return Err(Error::invalid(
                    "voice",
                    format!("reference frame {i}: expected {groups} codes below {cb}, got {f:?}"),
                ));
            }
        }
        // One graph: group-major ids, one lookup per codebook table, summed.
        let n = frames.len();
        let ids: Vec<u32> = (0..groups)
            .flat_map(|g| frames.iter().map(move |f| f[g]))
            .collect();
        let w = &*self.weights;
        self.run_embedding(&ids, |ctx, ids| {
            let table = |g: usize| match g {
                0 => ctx.stored(&w.codec_embd),
                g => ctx.stored(&group_tables[g - 1]),
            };
            let rows =
                |g: usize| ctx.get_rows(table(g), ctx.view(ids, &[n as i64], &[], g * n * 4));
            (1..groups).fold(rows(0), |sum, g| ctx.add(sum, rows(g)))
        })
    }

    fn run_embedding<F>(&self, ids: &[u32], f: F) -> Result<Vec<f32>>
    where
        F: for<'a> FnOnce(&'a Context, Tensor<'a>) -> Tensor<'a>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let n = ids.len();
        // Room for the 16-table frame sum (views, lookups, adds).
        let mut g = OwnedGraph::build(&self.backend, 128, |ctx| {
            let ids = ctx.new_tensor(GgmlType::I32, &[n as i64]).set_input();
            let out = ctx.cont(f(ctx, ids));
            ((ctx.slot(ids), ctx.slot(out)), vec![out])
        });
        let (ids_slot, out) = *g.io();
        let ids_i32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        g.compute(|g| g.tensor(ids_slot).set_i32(&ids_i32))?;
        Ok(g.tensor(out).get_f32())
    }
}

/// Checks that every id has a row in `table`.
fn check_ids(ids: &[u32], table: &StoredTensor, what: &str) -> Result<()> {
    let rows = TalkerWeights::rows(table);
    match ids.iter().find(|&&i| i >= rows) {
        Some(bad) => Err(Error::invalid(
            "text",
            format!("{what} {bad} is outside '{}' ({rows} rows)", table.name()),
        )),
        None => Ok(()),
    }
}
