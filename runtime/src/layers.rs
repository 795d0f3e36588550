//! The small layer library every model part is built from: RMSNorm, linear,
//! SwiGLU, Qwen3 self-attention (q/k norm, NEOX RoPE, GQA) and the Qwen3
//! decoder block. Tensors are in ggml order: activations `[width, tokens]`.

use crate::config::TransformerConfig;
use crate::ggml::{Context, Tensor, TensorStore};

/// Looks a weight up by its GGUF name. Loaders check every required name
/// when the model is opened, so a miss here is a bug.
pub fn weight<'a>(store: &'a TensorStore, name: &str) -> Tensor<'a> {
    store
        .get(name)
        .unwrap_or_else(|| panic!("weight '{name}' missing (not checked at load?)"))
}

/// `w ⊙ x / sqrt(mean(x²) + eps)` over `ne[0]`.
pub fn rms_norm<'a>(ctx: &'a Context, x: Tensor<'a>, w: Tensor<'a>, eps: f32) -> Tensor<'a> {
    ctx.mul(ctx.rms_norm(x, eps), w)
}

/// `x Wᵀ (+ b)`.
pub fn linear<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let y = ctx.mul_mat(w, x);
    match b {
        Some(b) => ctx.add(y, b),
        None => y,
    }
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

/// Names of one decoder block's weights under `prefix` (e.g. `talker.blk.3`).
pub struct BlockWeights<'a> {
    pub attn_norm: Tensor<'a>,
    pub q: Tensor<'a>,
    pub k: Tensor<'a>,
    pub v: Tensor<'a>,
    pub o: Tensor<'a>,
    pub q_norm: Tensor<'a>,
    pub k_norm: Tensor<'a>,
    pub ffn_norm: Tensor<'a>,
    pub gate: Tensor<'a>,
    pub up: Tensor<'a>,
    pub down: Tensor<'a>,
}

/// The GGUF names of one Qwen3 decoder block (for load-time checks).
pub fn block_weight_names(prefix: &str) -> Vec<String> {
    [
        "attn_norm.weight",
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_o.weight",
        "attn_q_norm.weight",
        "attn_k_norm.weight",
        "ffn_norm.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ]
    .iter()
    .map(|s| format!("{prefix}.{s}"))
    .collect()
}

impl<'a> BlockWeights<'a> {
    pub fn new(store: &'a TensorStore, prefix: &str) -> Self {
        let w = |s: &str| weight(store, &format!("{prefix}.{s}.weight"));
        Self {
            attn_norm: w("attn_norm"),
            q: w("attn_q"),
            k: w("attn_k"),
            v: w("attn_v"),
            o: w("attn_o"),
            q_norm: w("attn_q_norm"),
            k_norm: w("attn_k_norm"),
            ffn_norm: w("ffn_norm"),
            gate: w("ffn_gate"),
            up: w("ffn_up"),
            down: w("ffn_down"),
        }
    }
}

/// Qwen3 self-attention over `x` `[hidden, n]` at positions `pos` (I32 `[n]`):
/// per-head RMSNorm on q and k, NEOX RoPE, grouped-query attention with
/// `mask` (`[n_kv, n]`, additive) or none, output projection.
pub fn self_attention<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights<'a>,
    x: Tensor<'a>,
    pos: Tensor<'a>,
    kv: KvCache<'a>,
    mask: Option<Tensor<'a>>,
) -> AttentionOut<'a> {
    let n = x.ne()[1];
    let (hd, nh, nkv) = (cfg.head_dim as i64, cfg.heads as i64, cfg.kv_heads as i64);
    let q = ctx.reshape(ctx.mul_mat(w.q, x), &[hd, nh, n]);
    let k = ctx.reshape(ctx.mul_mat(w.k, x), &[hd, nkv, n]);
    let v = ctx.reshape(ctx.mul_mat(w.v, x), &[hd, nkv, n]);
    let q = rms_norm(ctx, q, w.q_norm, cfg.rms_eps);
    let k = rms_norm(ctx, k, w.k_norm, cfg.rms_eps);
    let q = ctx.rope_neox(q, pos, cfg.head_dim as i32, cfg.rope_theta);
    let k = ctx.rope_neox(k, pos, cfg.head_dim as i32, cfg.rope_theta);

    let (k_all, v_all) = match kv {
        KvCache::Persistent {
            k: kc,
            v: vc,
            rows,
            n_kv,
        } => {
            let kw = ctx.set_rows(kc, ctx.reshape(k, &[hd * nkv, n]), rows);
            let vw = ctx.set_rows(vc, ctx.reshape(v, &[hd * nkv, n]), rows);
            // Read through the set_rows results so the writes come first.
            let es = kw.element_size();
            let view = |t| {
                ctx.view(
                    t,
                    &[hd, nkv, n_kv as i64],
                    &[hd as usize * es, (hd * nkv) as usize * es],
                    0,
                )
            };
            (view(kw), view(vw))
        }
        KvCache::InGraph { k: pk, v: pv } => {
            let k = ctx.cont(k);
            let v = ctx.cont(v);
            match (pk, pv) {
                (Some(pk), Some(pv)) => (ctx.concat(pk, k, 2), ctx.concat(pv, v, 2)),
                _ => (k, v),
            }
        }
    };

    // scores [n_kv, n, heads] = K·Q per head (KV head h/(nh/nkv) serves query head h)
    let qp = ctx.permute(q, [0, 2, 1, 3]); // [hd, n, nh]
    let kp = ctx.permute(k_all, [0, 2, 1, 3]); // [hd, n_kv, nkv]
    let scores = ctx.mul_mat(kp, qp);
    let probs = ctx.soft_max_ext(scores, mask, 1.0 / (cfg.head_dim as f32).sqrt());
    let vt = ctx.cont(ctx.permute(v_all, [1, 2, 0, 3])); // [n_kv, hd, nkv]
    let attn = ctx.mul_mat(vt, probs); // [hd, n, nh]
    let attn = ctx.cont(ctx.permute(attn, [0, 2, 1, 3])); // [hd, nh, n]
    let out = ctx.mul_mat(w.o, ctx.reshape(attn, &[hd * nh, n]));
    AttentionOut {
        out,
        k: k_all,
        v: v_all,
    }
}

/// One pre-norm Qwen3 decoder block. Returns the block output and the keys /
/// values (for in-graph caches).
pub fn decoder_block<'a>(
    ctx: &'a Context,
    cfg: &TransformerConfig,
    w: &BlockWeights<'a>,
    x: Tensor<'a>,
    pos: Tensor<'a>,
    kv: KvCache<'a>,
    mask: Option<Tensor<'a>>,
) -> AttentionOut<'a> {
    let h = rms_norm(ctx, x, w.attn_norm, cfg.rms_eps);
    let a = self_attention(ctx, cfg, w, h, pos, kv, mask);
    let x = ctx.add(x, a.out);
    let h = rms_norm(ctx, x, w.ffn_norm, cfg.rms_eps);
    let out = ctx.add(x, swiglu_mlp(ctx, h, w.gate, w.up, w.down));
    AttentionOut {
        out,
        k: a.k,
        v: a.v,
    }
}
