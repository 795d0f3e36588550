//! The small layer library every model part is built from: RMSNorm, linear,
//! SwiGLU, Qwen3 self-attention (q/k norm, NEOX RoPE, GQA) and the Qwen3
//! decoder block. Tensors are in ggml order: activations `[width, tokens]`.

use crate::config::TransformerConfig;
use crate::error::Result;
use crate::ggml::{
    as_bytes, Backend, Context, ConvKernel, GgmlType, StoredTensor, TapsKernel, Tensor, TensorStore,
};
use crate::gguf_schema::tensors::{self, block};
use crate::weights::{permute3, Linear, Prepared, WeightSource};

/// `w ⊙ x / sqrt(mean(x²) + eps)` over `ne[0]`.
pub fn rms_norm<'a>(ctx: &'a Context, x: Tensor<'a>, w: Tensor<'a>, eps: f32) -> Tensor<'a> {
    ctx.mul(ctx.rms_norm(x, eps), w)
}

/// `y + b`, or `y` without a bias.
pub fn add_bias<'a>(ctx: &'a Context, y: Tensor<'a>, b: Option<Tensor<'a>>) -> Tensor<'a> {
    match b {
        Some(b) => ctx.add(y, b),
        None => y,
    }
}

/// The sum of `terms` (at least one), added in order.
pub fn sum<'a>(ctx: &'a Context, terms: impl IntoIterator<Item = Tensor<'a>>) -> Tensor<'a> {
    terms
        .into_iter()
        .reduce(|a, t| ctx.add(a, t))
        .expect("a sum of at least one term")
}

/// `x Wᵀ (+ b)`.
pub fn linear<'a>(ctx: &'a Context, x: Tensor<'a>, l: &Linear) -> Tensor<'a> {
    let y = ctx.mul_mat(ctx.stored(&l.weight), x);
    add_bias(ctx, y, l.bias.as_ref().map(|b| ctx.stored(b)))
}

/// `down(silu(gate x) ⊙ up x)`.
pub fn swiglu_mlp<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    gate: Tensor<'a>,
    up: Tensor<'a>,
    down: Tensor<'a>,
) -> Tensor<'a> {
    let g = ctx.mul_mat(gate, x);
    let u = ctx.mul_mat(up, x);
    ctx.mul_mat(down, ctx.swiglu(g, u))
}

/// Where a layer's keys and values come from.
pub enum KvCache<'a> {
    /// A persistent cache `[head_dim·kv_heads, capacity]` per layer (talker):
    /// the new rows are written at `rows` (I64, one per token) and attention
    /// reads the first `n_kv` rows.
    Persistent {
        k: Tensor<'a>,
        v: Tensor<'a>,
        rows: Tensor<'a>,
        n_kv: usize,
    },
    /// A persistent cache whose values are stored transposed (talker): keys
    /// `[head_dim·kv_heads, capacity]` written at `rows`, values
    /// `[capacity, head_dim·kv_heads]` (positions fastest, so that attention
    /// reads them without a transposing copy) written one element per slot
    /// of `value_slots` (I32 `[head_dim·kv_heads·n]`, see [`value_slots`]).
    PersistentTransposed {
        k: Tensor<'a>,
        v_t: Tensor<'a>,
        rows: Tensor<'a>,
        value_slots: Tensor<'a>,
        n_kv: usize,
    },
    /// Keys/values of earlier tokens of the same graph (code predictor), each
    /// `[head_dim, kv_heads, n_prev]`; the new ones are appended.
    InGraph {
        k: Option<Tensor<'a>>,
        v: Option<Tensor<'a>>,
    },
}

/// Result of an attention call: the output and (for in-graph caches) the
/// keys/values to pass to the next call.
pub struct AttentionOut<'a> {
    pub out: Tensor<'a>,
    pub k: Tensor<'a>,
    pub v: Tensor<'a>,
}

/// Which transformer block a stack uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Talker and code predictor: RMSNorm, per-head q/k RMSNorm, SwiGLU.
    Qwen3,
    /// The vocoder's transformer: RMSNorm, SwiGLU, LayerScale.
    CodecDecoder,
    /// The codec encoder's transformer: LayerNorm, GELU MLP, LayerScale.
    CodecEncoder,
}

/// One transformer block's weights.
#[derive(Clone, Debug)]
pub struct BlockWeights {
    pub attn_norm: StoredTensor,
    pub q: StoredTensor,
    pub k: StoredTensor,
    pub v: StoredTensor,
    pub o: StoredTensor,
    /// Per-head q/k RMSNorm (Qwen3; absent in the codec's transformers).
    pub q_norm: Option<StoredTensor>,
    pub k_norm: Option<StoredTensor>,
    pub ffn_norm: StoredTensor,
    /// Norm biases: present = LayerNorm (codec encoder), absent = RMSNorm.
    pub attn_norm_bias: Option<StoredTensor>,
    pub ffn_norm_bias: Option<StoredTensor>,
    /// Present = SwiGLU MLP; absent = GELU MLP (`down(gelu(up x))`).
    pub gate: Option<StoredTensor>,
    pub up: StoredTensor,
    pub down: StoredTensor,
    /// LayerScale of the attention / MLP branch (codec transformers only).
    pub attn_scale: Option<StoredTensor>,
    pub ffn_scale: Option<StoredTensor>,
}

impl BlockWeights {
    /// The block under `stem` (e.g. `talker.blk.3`) with shapes from `cfg`.
    pub fn load(
        src: &WeightSource,
        stem: &str,
        cfg: &TransformerConfig,
        kind: BlockKind,
    ) -> Result<Self> {
        let (h, hd, ff) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (q_width, kv_width) = (cfg.heads * hd, cfg.kv_heads * hd);
        let t = |suffix: &str, ne: &[usize]| src.tensor(&tensors::join(stem, suffix), ne);
        let when = |on: bool, suffix: &str, ne: &[usize]| on.then(|| t(suffix, ne)).transpose();
        let (qwen3, encoder) = (kind == BlockKind::Qwen3, kind == BlockKind::CodecEncoder);
        Ok(Self {
            attn_norm: t(block::ATTN_NORM, &[h])?,
            q: t(block::ATTN_Q, &[h, q_width])?,
            k: t(block::ATTN_K, &[h, kv_width])?,
            v: t(block::ATTN_V, &[h, kv_width])?,
            o: t(block::ATTN_O, &[q_width, h])?,
            q_norm: when(qwen3, block::ATTN_Q_NORM, &[hd])?,
            k_norm: when(qwen3, block::ATTN_K_NORM, &[hd])?,
            ffn_norm: t(block::FFN_NORM, &[h])?,
            attn_norm_bias: when(encoder, block::ATTN_NORM_BIAS, &[h])?,
            ffn_norm_bias: when(encoder, block::FFN_NORM_BIAS, &[h])?,
            gate: when(!encoder, block::FFN_GATE, &[h, ff])?,
            up: t(block::FFN_UP, &[h, ff])?,
            down: t(block::FFN_DOWN, &[ff, h])?,
            attn_scale: when(!qwen3, block::ATTN_SCALE, &[h])?,
            ffn_scale: when(!qwen3, block::FFN_SCALE, &[h])?,
        })
    }
}

/// The queries, keys and values of `x` `[hidden, n]` at positions `pos`
/// (I32 `[n]`): projected, per-head RMSNormed (Qwen3, when present), NEOX
/// RoPE; `[hd, heads, n]` and `[hd, kv_heads, n]` each. Every column is
/// computed on its own, so `n` may be tokens of several sequences.
pub fn attention_inputs<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights,
    x: Tensor<'a>,
    pos: Tensor<'a>,
) -> (Tensor<'a>, Tensor<'a>, Tensor<'a>) {
    let n = x.ne()[1];
    let p = |t: &StoredTensor| ctx.stored(t);
    let (hd, nh, nkv) = (cfg.head_dim as i64, cfg.heads as i64, cfg.kv_heads as i64);
    let q = ctx.reshape(ctx.mul_mat(p(&w.q), x), &[hd, nh, n]);
    let k = ctx.reshape(ctx.mul_mat(p(&w.k), x), &[hd, nkv, n]);
    let v = ctx.reshape(ctx.mul_mat(p(&w.v), x), &[hd, nkv, n]);
    let q = w
        .q_norm
        .as_ref()
        .map_or(q, |qn| rms_norm(ctx, q, p(qn), cfg.rms_eps));
    let k = w
        .k_norm
        .as_ref()
        .map_or(k, |kn| rms_norm(ctx, k, p(kn), cfg.rms_eps));
    let q = ctx.rope_neox(q, pos, cfg.head_dim as i32, cfg.rope_theta);
    let k = ctx.rope_neox(k, pos, cfg.head_dim as i32, cfg.rope_theta);
    (q, k, v)
}

/// Grouped-query attention of queries `q` `[hd, heads, n, b]` over keys
/// `[hd, kv_heads, n_kv, b]` and transposed values `[n_kv, hd, kv_heads, b]`
/// (see [`transposed`]) of `b` independent sequences (3-D tensors: one),
/// with `mask` (`[n_kv, n]`, additive, shared) or none → `[hd·heads, n·b]`,
/// before the output projection.
pub fn attend<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    q: Tensor<'a>,
    k_all: Tensor<'a>,
    v_t: Tensor<'a>,
    mask: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let [hd, nh, n, b] = q.ne();
    // scores [n_kv, n, heads, b] = K·Q per head (KV head h/(nh/nkv) serves query head h)
    let qp = ctx.permute(q, [0, 2, 1, 3]); // [hd, n, nh, b]
    let kp = ctx.permute(k_all, [0, 2, 1, 3]); // [hd, n_kv, nkv, b]
    let scores = ctx.mul_mat(kp, qp);
    let probs = ctx.soft_max_ext(scores, mask, 1.0 / (cfg.head_dim as f32).sqrt());
    // [hd, n, nh, b], then [hd, nh, n, b]: with one query per sequence
    // (decoding) the permute moves nothing.
    let attn = ctx.mul_mat(v_t, probs);
    let attn = ctx.contiguous(ctx.permute(attn, [0, 2, 1, 3]));
    ctx.reshape(attn, &[hd * nh, n * b])
}

/// Per-layer key and value tensors for `layers` layers, of type `ty` (F32
/// or F16) and dims `k` and `v`, in one store in `backend`'s memory
/// (contents uninitialised): a KV cache's memory.
pub fn kv_tensors(
    backend: &Backend,
    layers: usize,
    ty: GgmlType,
    k: &[i64],
    v: &[i64],
) -> (TensorStore, Vec<StoredTensor>, Vec<StoredTensor>) {
    let name = |kv: &str, l: usize| format!("{kv}{l}");
    let specs: Vec<_> = (0..layers)
        .flat_map(|l| {
            [
                (name("k", l), ty, k.to_vec()),
                (name("v", l), ty, v.to_vec()),
            ]
        })
        .collect();
    let store = TensorStore::new_on(&specs, backend);
    let get = |kv: &str| -> Vec<StoredTensor> {
        (0..layers)
            .map(|l| store.get(&name(kv, l)).expect("just created"))
            .collect()
    };
    let (k, v) = (get("k"), get("v"));
    (store, k, v)
}

/// Values `[hd, kv_heads, n_kv, b]` as [`attend`] takes them,
/// `[n_kv, hd, kv_heads, b]` (a copy).
pub fn transposed<'a>(ctx: &'a Context, v_all: Tensor<'a>) -> Tensor<'a> {
    ctx.cont(ctx.permute(v_all, [1, 2, 0, 3]))
}

/// Where the values of `positions` go in a transposed value cache of
/// `capacity` positions and `width` (= head_dim·kv_heads) values per
/// position: value `j` of the `i`-th position at element
/// `position + capacity·j`, in the order `j + width·i`.
pub fn value_slots(positions: &[usize], width: usize, capacity: usize) -> Vec<i32> {
    positions
        .iter()
        .flat_map(|&p| (0..width).map(move |j| (p + capacity * j) as i32))
        .collect()
}

/// Writes values `v` `[hd, kv_heads, n]` into a transposed value cache
/// `v_t` `[capacity, hd·kv_heads]` at `slots` (see [`value_slots`]); returns
/// its first `n_kv` positions as [`attend`] takes them,
/// `[n_kv, hd, kv_heads]`, read through the write.
pub fn write_transposed<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    v_t: Tensor<'a>,
    v: Tensor<'a>,
    slots: Tensor<'a>,
    n_kv: usize,
) -> Tensor<'a> {
    let (hd, nkv) = (cfg.head_dim, cfg.kv_heads);
    let [capacity, width, ..] = v_t.ne();
    let flat = ctx.reshape(v_t, &[1, capacity * width]);
    let values = ctx.reshape(v, &[1, v.ne().iter().product()]);
    let written = ctx.set_rows(flat, values, slots);
    let es = written.element_size();
    let capacity = capacity as usize;
    ctx.view(
        written,
        &[n_kv as i64, hd as i64, nkv as i64],
        &[capacity * es, capacity * hd * es],
        0,
    )
}

/// Self-attention over `x` `[hidden, n]` at positions `pos` (I32 `[n]`)
/// with `mask` (`[n_kv, n]`, additive) or none, output projection (see
/// [`attention_inputs`] and [`attend`]).
pub fn self_attention<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights,
    x: Tensor<'a>,
    pos: Tensor<'a>,
    kv: KvCache<'a>,
    mask: Option<Tensor<'a>>,
) -> AttentionOut<'a> {
    let n = x.ne()[1];
    let (hd, nkv) = (cfg.head_dim as i64, cfg.kv_heads as i64);
    let (q, k, v) = attention_inputs(ctx, cfg, w, x, pos);
    let (k_all, v_t, v_all) = match kv {
        KvCache::Persistent {
            k: kc,
            v: vc,
            rows,
            n_kv,
        } => {
            let kw = ctx.set_rows(kc, ctx.reshape(k, &[hd * nkv, n]), rows);
            let vw = ctx.set_rows(vc, ctx.reshape(v, &[hd * nkv, n]), rows);
            let v_all = cache_view(ctx, cfg, vw, n_kv);
            (
                cache_view(ctx, cfg, kw, n_kv),
                transposed(ctx, v_all),
                v_all,
            )
        }
        KvCache::PersistentTransposed {
            k: kc,
            v_t,
            rows,
            value_slots,
            n_kv,
        } => {
            let kw = ctx.set_rows(kc, ctx.reshape(k, &[hd * nkv, n]), rows);
            let v_t = write_transposed(ctx, cfg, v_t, v, value_slots, n_kv);
            // (the values come back transposed: no in-graph cache follows)
            (cache_view(ctx, cfg, kw, n_kv), v_t, v_t)
        }
        KvCache::InGraph { k: pk, v: pv } => {
            let k = ctx.cont(k);
            let v = ctx.cont(v);
            let (k_all, v_all) = match (pk, pv) {
                (Some(pk), Some(pv)) => (ctx.concat(pk, k, 2), ctx.concat(pv, v, 2)),
                _ => (k, v),
            };
            (k_all, transposed(ctx, v_all), v_all)
        }
    };
    let attn = attend(ctx, cfg, q, k_all, v_t, mask);
    AttentionOut {
        out: ctx.mul_mat(ctx.stored(&w.o), attn),
        k: k_all,
        v: v_all,
    }
}

/// The first `n_kv` positions of a persistent cache `[hd·kv_heads, capacity]`
/// as `[hd, kv_heads, n_kv]`. Pass the `set_rows` result that wrote the new
/// rows, so that the writes come first.
pub fn cache_view<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    written: Tensor<'a>,
    n_kv: usize,
) -> Tensor<'a> {
    let (hd, nkv) = (cfg.head_dim, cfg.kv_heads);
    let es = written.element_size();
    ctx.view(
        written,
        &[hd as i64, nkv as i64, n_kv as i64],
        &[hd * es, hd * nkv * es],
        0,
    )
}

/// One pre-norm transformer block around `attention` (normed input →
/// output-projected attention): Qwen3 (RMSNorm, q/k norm, SwiGLU), the
/// codec decoder's (plus LayerScale) or the codec encoder's (LayerNorm,
/// GELU MLP, LayerScale), told apart by which weights exist.
pub fn block_with<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights,
    x: Tensor<'a>,
    attention: impl FnOnce(Tensor<'a>) -> Tensor<'a>,
) -> Tensor<'a> {
    let p = |t: &StoredTensor| ctx.stored(t);
    let norm = |x, w: &StoredTensor, b: &Option<StoredTensor>| match b {
        Some(b) => layer_norm(ctx, x, p(w), p(b), cfg.rms_eps),
        None => rms_norm(ctx, x, p(w), cfg.rms_eps),
    };
    let h = norm(x, &w.attn_norm, &w.attn_norm_bias);
    let a = attention(h);
    let scaled = |y, s: &Option<StoredTensor>| s.as_ref().map_or(y, |s| ctx.mul(y, p(s)));
    let x = ctx.add(x, scaled(a, &w.attn_scale));
    let h = norm(x, &w.ffn_norm, &w.ffn_norm_bias);
    let (up, down) = (p(&w.up), p(&w.down));
    let mlp = match &w.gate {
        Some(gate) => swiglu_mlp(ctx, h, p(gate), up, down),
        None => ctx.mul_mat(down, ctx.gelu_erf(ctx.mul_mat(up, h))),
    };
    ctx.add(x, scaled(mlp, &w.ffn_scale))
}

/// [`block_with`] self-attention over one sequence. Returns the block
/// output and the keys / values (for in-graph caches).
pub fn decoder_block<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights,
    x: Tensor<'a>,
    pos: Tensor<'a>,
    kv: KvCache<'a>,
    mask: Option<Tensor<'a>>,
) -> AttentionOut<'a> {
    let mut keys_values = None;
    let out = block_with(ctx, cfg, w, x, |h| {
        let a = self_attention(ctx, cfg, w, h, pos, kv, mask);
        keys_values = Some((a.k, a.v));
        a.out
    });
    let (k, v) = keys_values.expect("the attention ran");
    AttentionOut { out, k, v }
}

// ---- convolutional layers (codec) -------------------------------------------
//
// Activations are `[channels, time]` (channels fastest), the transformer's
// layout, so no transposes are needed between the parts. Kernels are
// rearranged at load time (see `codec_decoder::prepare`) so that every conv is
// one matrix product over a view of its input.

/// The left-context tensors a stream of causal layers keeps between calls:
/// each layer that needs context gets a slot when it is loaded.
#[derive(Clone, Debug, Default)]
pub struct StreamStateLayout {
    /// `[channels, columns]` per slot.
    pub shapes: Vec<[usize; 2]>,
}

impl StreamStateLayout {
    /// A slot for `columns` (> 0) of `channels` each; `None` when none are needed.
    pub fn slot(&mut self, channels: usize, columns: usize) -> Option<usize> {
        (columns > 0).then(|| {
            self.shapes.push([channels, columns]);
            self.shapes.len() - 1
        })
    }
}

/// Where the causal layers of a graph get their left context from.
pub struct CausalContext<'a> {
    /// Persistent `[channels, pad]` tensors by slot holding the last input
    /// columns of the previous call (streaming); `None`: zero padding.
    states: Option<Vec<Tensor<'a>>>,
    updates: std::cell::RefCell<Vec<Tensor<'a>>>,
    /// Frames in this call: every layer's columns are whole frames, which
    /// the convs compute on their own (see [`Context::causal_conv`]).
    frames: usize,
}

impl<'a> CausalContext<'a> {
    /// Zero left padding: every call of `frames` frames is a fresh, stateless pass.
    pub fn zeros(frames: usize) -> Self {
        Self {
            states: None,
            updates: Default::default(),
            frames,
        }
    }

    /// Left context from `states` (one per slot of the layout), which the
    /// graph updates for the next call of `frames` frames.
    pub fn streaming(states: Vec<Tensor<'a>>, frames: usize) -> Self {
        Self {
            states: Some(states),
            updates: Default::default(),
            frames,
        }
    }

    /// Columns per frame of a layer's `columns`.
    pub fn frame_columns(&self, columns: i64) -> usize {
        let c = columns as usize;
        assert!(
            self.frames > 0 && c.is_multiple_of(self.frames),
            "{c} columns are not whole frames of {}",
            self.frames
        );
        c / self.frames
    }

    /// The state writes the graph must run (add them to its outputs).
    pub fn into_updates(self) -> Vec<Tensor<'a>> {
        self.updates.into_inner()
    }

    /// `x` `[c, n]` with `pad` columns of left context prepended (and, when
    /// streaming, the last `pad` columns saved in `slot` for the next call).
    fn extend(
        &self,
        ctx: &'a Context,
        slot: Option<usize>,
        x: Tensor<'a>,
        pad: usize,
    ) -> Tensor<'a> {
        if pad == 0 {
            return x;
        }
        let Some(states) = &self.states else {
            return ctx.pad(x, [0, pad as i32, 0, 0], [0; 4]);
        };
        let state = states[slot.expect("a layer with left context has a state slot")];
        let [c, n, ..] = x.ne();
        assert_eq!(
            state.ne()[..2],
            [c, pad as i64],
            "state shape of slot {slot:?}"
        );
        let full = concat_columns(ctx, &[state, x]);
        let es = full.element_size();
        let tail = ctx.view(
            full,
            &[c, pad as i64],
            &[c as usize * es],
            n as usize * c as usize * es,
        );
        self.updates.borrow_mut().push(ctx.cpy(tail, state));
        full
    }
}

/// Contiguous 2-D tensors `[r, c_i]` joined along dim 1 → `[r, Σ c_i]`.
/// (Concatenated as `[r, 1, c]`: ggml's concat splits its work over dim 2,
/// so along dim 1 it would run on one thread.)
pub fn concat_columns<'a>(ctx: &'a Context, parts: &[Tensor<'a>]) -> Tensor<'a> {
    let rows = parts[0].ne()[0];
    let as3 = |p: Tensor<'a>| ctx.reshape(p, &[rows, 1, p.ne()[1]]);
    let joined = parts[1..]
        .iter()
        .fold(as3(parts[0]), |acc, &p| ctx.concat(acc, as3(p), 2));
    ctx.reshape(joined, &[rows, joined.ne()[2]])
}

/// A causal conv (stride 1); left context `(k − 1)·dilation` columns. Its
/// kernel is laid out as `kernel` says (chosen at load, see
/// [`CausalConv::prepare_kernel`]).
#[derive(Clone, Debug)]
pub struct CausalConv {
    pub weight: StoredTensor,
    pub kernel: ConvKernel,
    pub bias: Option<StoredTensor>,
    pub dilation: usize,
    pub state: Option<usize>,
}

impl CausalConv {
    pub fn new(
        weight: StoredTensor,
        kernel: ConvKernel,
        bias: Option<StoredTensor>,
        dilation: usize,
        states: &mut StreamStateLayout,
    ) -> Self {
        let mut conv = Self {
            weight,
            kernel,
            bias,
            dilation,
            state: None,
        };
        conv.state = states.slot(conv.channels().0, (kernel.k() - 1) * dilation);
        conv
    }

    /// A kernel stored `[k, c_in, c_out]` (taps fastest; `bytes` of type
    /// `ty`, F32, F16 or BF16; `values` gives it as F32) in the layout
    /// `kernel`: `[c_in, k, c_out]` in its own type, so that a column of the
    /// unfolded input lines up with a kernel row; `[c_out, c_in]` for one
    /// tap; or transformed for the fast convolution. The last two in F32
    /// whatever the stored type: they go to the F32 broadcast product, and
    /// an F16 product would round the transformed inputs, whose error the
    /// output transform amplifies (33 dB instead of 49 against the
    /// reference on the fixture).
    pub fn prepare_kernel(
        kernel: ConvKernel,
        ty: GgmlType,
        bytes: &[u8],
        values: impl FnOnce() -> Result<Vec<f32>>,
        [k, c_in, c_out]: [usize; 3],
    ) -> Result<Prepared> {
        let ne = kernel.dims(c_in, c_out).map(|d| d as i64).to_vec();
        Ok(match kernel {
            ConvKernel::Unfolded { .. } => Prepared {
                ty,
                ne,
                bytes: permute3(bytes, ty.type_size(), [k, c_in, c_out], [1, 0, 2]),
            },
            ConvKernel::Pointwise => Prepared {
                ty: GgmlType::F32,
                ne,
                bytes: permute3(as_bytes(&values()?), 4, [1, c_in, c_out], [2, 1, 0]),
            },
            ConvKernel::Winograd { k } => Prepared {
                ty: GgmlType::F32,
                ne,
                bytes: as_bytes(&ConvKernel::winograd_kernel(k, &values()?, c_in, c_out)).to_vec(),
            },
        })
    }

    /// Channels in and out.
    pub fn channels(&self) -> (usize, usize) {
        let ne = self.weight.ne();
        match self.kernel {
            ConvKernel::Unfolded { .. } => (ne[0] as usize, ne[2] as usize),
            ConvKernel::Winograd { .. } | ConvKernel::Pointwise => (ne[1] as usize, ne[0] as usize),
        }
    }

    /// `x` `[c_in, n]` → `[c_out, n]`.
    pub fn forward<'a>(
        &self,
        ctx: &'a Context,
        cc: &CausalContext<'a>,
        x: Tensor<'a>,
    ) -> Tensor<'a> {
        let pad = (self.kernel.k() - 1) * self.dilation;
        let xp = cc.extend(ctx, self.state, x, pad);
        let bias = self.bias.as_ref().map(|b| ctx.stored(b));
        let segment = cc.frame_columns(x.ne()[1]);
        let w = ctx.stored(&self.weight);
        ctx.causal_conv(xp, w, self.kernel, bias, self.dilation, segment)
    }
}

/// A causal transposed conv with stride `s` (the reference's
/// ConvTranspose1d with the last `k − s` samples dropped); kernel
/// `[c_in, c_out, k]` with `k` a multiple of `s`; left context `k/s − 1`
/// input columns.
#[derive(Clone, Debug)]
pub struct CausalTransposedConv {
    pub weight: StoredTensor,
    pub kernel: TapsKernel,
    pub bias: Option<StoredTensor>,
    pub stride: usize,
    pub state: Option<usize>,
}

impl CausalTransposedConv {
    /// `None` when the kernel size is not a multiple of the stride.
    pub fn new(
        weight: StoredTensor,
        kernel: TapsKernel,
        bias: Option<StoredTensor>,
        stride: usize,
        states: &mut StreamStateLayout,
    ) -> Option<Self> {
        let mut conv = Self {
            weight,
            kernel,
            bias,
            stride,
            state: None,
        };
        let (c_in, _, k) = conv.dims();
        if stride == 0 || !k.is_multiple_of(stride) {
            return None;
        }
        conv.state = states.slot(c_in, k / stride - 1);
        Some(conv)
    }

    /// A kernel stored `[k, c_out, c_in]` (taps fastest; `bytes` of type
    /// `ty`) in the layout `kernel`.
    pub fn prepare_kernel(
        kernel: TapsKernel,
        ty: GgmlType,
        bytes: &[u8],
        [k, c_out, c_in]: [usize; 3],
    ) -> Prepared {
        let order = match kernel {
            TapsKernel::InputsFastest => [2, 1, 0],
            TapsKernel::OutputsFastest => [1, 0, 2],
        };
        Prepared {
            ty,
            ne: kernel.dims(c_in, c_out, k).map(|d| d as i64).to_vec(),
            bytes: permute3(bytes, ty.type_size(), [k, c_out, c_in], order),
        }
    }

    /// Channels in and out, taps.
    pub fn dims(&self) -> (usize, usize, usize) {
        let ne = self.weight.ne().map(|d| d as usize);
        match self.kernel {
            TapsKernel::InputsFastest => (ne[0], ne[1], ne[2]),
            TapsKernel::OutputsFastest => (ne[2], ne[0], ne[1]),
        }
    }

    /// `x` `[c_in, n]` → `[c_out, s·n]`.
    pub fn forward<'a>(
        &self,
        ctx: &'a Context,
        cc: &CausalContext<'a>,
        x: Tensor<'a>,
    ) -> Tensor<'a> {
        let w = ctx.stored(&self.weight);
        let s = self.stride;
        let (_, c_out, k) = self.dims();
        let m = k / s; // input frames that overlap one output stretch
        let n = x.ne()[1] as usize;
        let xp = cc.extend(ctx, self.state, x, m - 1);
        // z[:, t] = every tap's contribution of input column t, ordered (tap, c_out).
        let z = ctx.taps_product(w, self.kernel, xp);
        let es = z.element_size();
        // Taps q·s..(q+1)·s of input column t − q land on output stretch t.
        let y = sum(
            ctx,
            (0..m).map(|q| {
                let offset = ((m - 1 - q) * c_out * k + q * c_out * s) * es;
                ctx.view(
                    z,
                    &[(c_out * s) as i64, n as i64],
                    &[c_out * k * es],
                    offset,
                )
            }),
        );
        let y = ctx.reshape(y, &[c_out as i64, (s * n) as i64]);
        add_bias(ctx, y, self.bias.as_ref().map(|b| ctx.stored(b)))
    }
}

/// A depthwise causal conv, kernel `[c, k]`; left context `k − 1` columns.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    pub weight: StoredTensor,
    pub bias: Option<StoredTensor>,
    pub state: Option<usize>,
}

impl DepthwiseConv {
    pub fn new(
        weight: StoredTensor,
        bias: Option<StoredTensor>,
        states: &mut StreamStateLayout,
    ) -> Self {
        let [c, k, ..] = weight.ne();
        let state = states.slot(c as usize, k as usize - 1);
        Self {
            weight,
            bias,
            state,
        }
    }

    /// `x` `[c, n]` → `[c, n]`.
    pub fn forward<'a>(
        &self,
        ctx: &'a Context,
        cc: &CausalContext<'a>,
        x: Tensor<'a>,
    ) -> Tensor<'a> {
        let w = ctx.stored(&self.weight);
        let [c, k, ..] = w.ne();
        let n = x.ne()[1];
        let xp = cc.extend(ctx, self.state, x, k as usize - 1);
        let (es, wes) = (xp.element_size(), w.element_size());
        let y = sum(
            ctx,
            (0..k as usize).map(|j| {
                let xj = ctx.view(xp, &[c, n], &[c as usize * es], j * c as usize * es);
                ctx.mul(xj, ctx.view(w, &[c], &[], j * c as usize * wes))
            }),
        );
        add_bias(ctx, y, self.bias.as_ref().map(|b| ctx.stored(b)))
    }
}

/// SnakeBeta with the exponentials folded at load time: `alpha` = exp(α),
/// `inv_beta` = 1 / (exp(β) + 1e-9), both `[c]`.
#[derive(Clone, Debug)]
pub struct Snake {
    pub alpha: StoredTensor,
    pub inv_beta: StoredTensor,
}

impl Snake {
    /// `x + inv_beta ⊙ sin(alpha ⊙ x)²` per channel of `x` `[c, n]`.
    pub fn forward<'a>(&self, ctx: &'a Context, x: Tensor<'a>) -> Tensor<'a> {
        ctx.snake(x, ctx.stored(&self.alpha), ctx.stored(&self.inv_beta))
    }
}

/// LayerNorm over channels (`ne[0]`) with weight and bias.
pub fn layer_norm<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Tensor<'a>,
    eps: f32,
) -> Tensor<'a> {
    ctx.add(ctx.mul(ctx.norm(x, eps), w), b)
}

/// ConvNeXt block: `x + γ ⊙ pw2(GELU(pw1(LayerNorm(dwconv(x)))))`.
#[derive(Clone, Debug)]
pub struct ConvNext {
    pub dwconv: DepthwiseConv,
    pub norm_weight: StoredTensor,
    pub norm_bias: StoredTensor,
    pub pwconv1: Linear,
    pub pwconv2: Linear,
    pub gamma: StoredTensor,
}

impl ConvNext {
    pub fn forward<'a>(
        &self,
        ctx: &'a Context,
        cc: &CausalContext<'a>,
        x: Tensor<'a>,
    ) -> Tensor<'a> {
        let h = self.dwconv.forward(ctx, cc, x);
        // LayerNorm eps 1e-6 (nn.LayerNorm in the reference block).
        let (w, b) = (ctx.stored(&self.norm_weight), ctx.stored(&self.norm_bias));
        let h = layer_norm(ctx, h, w, b, 1e-6);
        let h = ctx.gelu_erf(linear(ctx, h, &self.pwconv1));
        let h = linear(ctx, h, &self.pwconv2);
        ctx.add(x, ctx.mul(h, ctx.stored(&self.gamma)))
    }
}

/// Conv over an already padded `x` `[t, c_in]` (time fastest) → `[t_out, c_out]`
/// (time fastest), F32 kernel `[k, c_in, c_out]`, bias `[c_out]`.
pub fn conv1d_time_major<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    kernel: Tensor<'a>,
    bias: Option<Tensor<'a>>,
    stride: usize,
    dilation: usize,
) -> Tensor<'a> {
    let [k, c_in, c_out, _] = kernel.ne();
    let cols = ctx.im2col_1d(kernel, x, stride as i32, dilation as i32, GgmlType::F32);
    let y = ctx.mul_mat(cols, ctx.reshape(kernel, &[k * c_in, c_out]));
    add_bias(ctx, y, bias.map(|b| ctx.reshape(b, &[1, c_out])))
}
