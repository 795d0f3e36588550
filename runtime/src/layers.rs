//! The small layer library every model part is built from: RMSNorm, linear,
//! SwiGLU, Qwen3 self-attention (q/k norm, NEOX RoPE, GQA) and the Qwen3
//! decoder block. Tensors are in ggml order: activations `[width, tokens]`.

use crate::config::TransformerConfig;
use crate::ggml::{Context, GgmlType, Tensor, TensorStore};

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
pub fn linear<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let y = ctx.mul_mat(w, x);
    add_bias(ctx, y, b)
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
    /// Per-head q/k RMSNorm (Qwen3; absent in the codec's transformers).
    pub q_norm: Option<Tensor<'a>>,
    pub k_norm: Option<Tensor<'a>>,
    pub ffn_norm: Tensor<'a>,
    /// Norm biases: present = LayerNorm (codec encoder), absent = RMSNorm.
    pub attn_norm_bias: Option<Tensor<'a>>,
    pub ffn_norm_bias: Option<Tensor<'a>>,
    /// Present = SwiGLU MLP; absent = GELU MLP (`down(gelu(up x))`).
    pub gate: Option<Tensor<'a>>,
    pub up: Tensor<'a>,
    pub down: Tensor<'a>,
    /// LayerScale of the attention / MLP branch (codec transformers only).
    pub attn_scale: Option<Tensor<'a>>,
    pub ffn_scale: Option<Tensor<'a>>,
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
    /// The block under `prefix`; the optional parts are used when present.
    pub fn new(store: &'a TensorStore, prefix: &str) -> Self {
        let w = |s: &str| weight(store, &format!("{prefix}.{s}.weight"));
        let opt = |s: &str| store.get(&format!("{prefix}.{s}"));
        Self {
            attn_norm: w("attn_norm"),
            q: w("attn_q"),
            k: w("attn_k"),
            v: w("attn_v"),
            o: w("attn_o"),
            q_norm: opt("attn_q_norm.weight"),
            k_norm: opt("attn_k_norm.weight"),
            ffn_norm: w("ffn_norm"),
            attn_norm_bias: opt("attn_norm.bias"),
            ffn_norm_bias: opt("ffn_norm.bias"),
            gate: opt("ffn_gate.weight"),
            up: w("ffn_up"),
            down: w("ffn_down"),
            attn_scale: opt("attn_scale"),
            ffn_scale: opt("ffn_scale"),
        }
    }
}

/// Self-attention over `x` `[hidden, n]` at positions `pos` (I32 `[n]`):
/// per-head RMSNorm on q and k (Qwen3, when present), NEOX RoPE, grouped-query attention with
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
    let q = w.q_norm.map_or(q, |qn| rms_norm(ctx, q, qn, cfg.rms_eps));
    let k = w.k_norm.map_or(k, |kn| rms_norm(ctx, k, kn, cfg.rms_eps));
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

/// One pre-norm transformer block: Qwen3 (RMSNorm, q/k norm, SwiGLU), the
/// codec decoder's (plus LayerScale) or the codec encoder's (LayerNorm,
/// GELU MLP, LayerScale), told apart by which weights exist. Returns the block output and the keys /
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
    let norm = |x, w, b: Option<Tensor<'a>>| match b {
        Some(b) => layer_norm(ctx, x, w, b, cfg.rms_eps),
        None => rms_norm(ctx, x, w, cfg.rms_eps),
    };
    let h = norm(x, w.attn_norm, w.attn_norm_bias);
    let a = self_attention(ctx, cfg, w, h, pos, kv, mask);
    let scaled = |y, s: Option<Tensor<'a>>| s.map_or(y, |s| ctx.mul(y, s));
    let x = ctx.add(x, scaled(a.out, w.attn_scale));
    let h = norm(x, w.ffn_norm, w.ffn_norm_bias);
    let mlp = match w.gate {
        Some(gate) => swiglu_mlp(ctx, h, gate, w.up, w.down),
        None => ctx.mul_mat(w.down, ctx.gelu_erf(ctx.mul_mat(w.up, h))),
    };
    let out = ctx.add(x, scaled(mlp, w.ffn_scale));
    AttentionOut {
        out,
        k: a.k,
        v: a.v,
    }
}

// ---- convolutional layers (codec) -------------------------------------------
//
// Activations are `[channels, time]` (channels fastest), the transformer's
// layout, so no transposes are needed between the parts. Kernels are
// rearranged at load time (see `codec_decoder::prepare`) so that every conv is
// one matrix product over a view of its input.

/// Where the causal layers of a graph get their left context from.
pub struct CausalContext<'a> {
    /// Persistent `[channels, pad]` tensors by layer name holding the last
    /// input columns of the previous call (streaming); `None`: zero padding.
    states: Option<&'a TensorStore>,
    updates: std::cell::RefCell<Vec<Tensor<'a>>>,
}

impl<'a> CausalContext<'a> {
    /// Zero left padding: every call is a fresh, stateless pass.
    pub fn zeros() -> Self {
        Self {
            states: None,
            updates: Default::default(),
        }
    }

    /// Left context from `states`, which the graph updates for the next call.
    pub fn streaming(states: &'a TensorStore) -> Self {
        Self {
            states: Some(states),
            updates: Default::default(),
        }
    }

    /// The state writes the graph must run (add them to its outputs).
    pub fn into_updates(self) -> Vec<Tensor<'a>> {
        self.updates.into_inner()
    }

    /// `x` `[c, n]` with `pad` columns of left context prepended (and, when
    /// streaming, the last `pad` columns saved as `name`'s next context).
    pub fn extend(&self, ctx: &'a Context, name: &str, x: Tensor<'a>, pad: usize) -> Tensor<'a> {
        if pad == 0 {
            return x;
        }
        let Some(states) = self.states else {
            return ctx.pad(x, [0, pad as i32, 0, 0], [0; 4]);
        };
        let state = weight(states, &state_name(name));
        let [c, n, ..] = x.ne();
        assert_eq!(state.ne()[..2], [c, pad as i64], "state shape of {name}");
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

/// Name of the streaming-state tensor of the causal layer `layer`.
pub fn state_name(layer: &str) -> String {
    format!("{layer}.state")
}

/// Causal conv (stride 1) over `x` `[c_in, n]` → `[c_out, n]`. `w` is
/// `[c_in, k, c_out]` (rearranged at load so that a column of the unfolded
/// input lines up with a kernel row); left context `(k − 1)·dilation`.
pub fn causal_conv1d<'a>(
    ctx: &'a Context,
    cc: &CausalContext<'a>,
    name: &str,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Option<Tensor<'a>>,
    dilation: usize,
) -> Tensor<'a> {
    let [c_in, k, c_out, _] = w.ne();
    let pad = (k as usize - 1) * dilation;
    let xp = cc.extend(ctx, name, x, pad);
    let cols = if k == 1 {
        xp
    } else {
        // In the kernel's type: an F16 product would otherwise convert it.
        let ty = if w.ty() == GgmlType::F16 {
            GgmlType::F16
        } else {
            GgmlType::F32
        };
        ctx.unfold_columns(xp, k as usize, dilation, ty)
    };
    let y = ctx.mul_mat(ctx.reshape(w, &[c_in * k, c_out]), cols);
    add_bias(ctx, y, b)
}

/// Causal transposed conv with stride `s` over `x` `[c_in, n]` → `[c_out, s·n]`
/// (the reference's ConvTranspose1d with the last `k − s` samples dropped).
/// `w` is `[c_in, c_out, k]` with `k` a multiple of `s`.
pub fn causal_transposed_conv1d<'a>(
    ctx: &'a Context,
    cc: &CausalContext<'a>,
    name: &str,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Option<Tensor<'a>>,
    s: usize,
) -> Tensor<'a> {
    let [c_in, c_out, k, _] = w.ne();
    let (k, c_out) = (k as usize, c_out as usize);
    assert!(
        k % s == 0,
        "{name}: kernel {k} not a multiple of stride {s}"
    );
    let m = k / s; // input frames that overlap one output stretch
    let n = x.ne()[1] as usize;
    let xp = cc.extend(ctx, name, x, m - 1);
    // z[:, t] = every tap's contribution of input column t, ordered (tap, c_out).
    let z = ctx.mul_mat(ctx.reshape(w, &[c_in, (c_out * k) as i64]), xp);
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
    add_bias(ctx, y, b)
}

/// Depthwise causal conv over `x` `[c, n]`; `w` is `[c, k]`.
pub fn causal_depthwise_conv1d<'a>(
    ctx: &'a Context,
    cc: &CausalContext<'a>,
    name: &str,
    x: Tensor<'a>,
    w: Tensor<'a>,
    b: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let [c, k, ..] = w.ne();
    let n = x.ne()[1];
    let xp = cc.extend(ctx, name, x, k as usize - 1);
    let (es, wes) = (xp.element_size(), w.element_size());
    let y = sum(
        ctx,
        (0..k as usize).map(|j| {
            let xj = ctx.view(xp, &[c, n], &[c as usize * es], j * c as usize * es);
            ctx.mul(xj, ctx.view(w, &[c], &[], j * c as usize * wes))
        }),
    );
    add_bias(ctx, y, b)
}

/// SnakeBeta with the exponentials folded at load time:
/// `x + inv_beta ⊙ sin(alpha ⊙ x)²` per channel (`alpha`, `inv_beta`: `[c]`),
/// in one pass over `x` `[c, n]` (as separate ggml ops it took five passes
/// and libm's scalar `sinf`).
pub fn snake<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    alpha: Tensor<'a>,
    inv_beta: Tensor<'a>,
) -> Tensor<'a> {
    ctx.map_rows(x, &[alpha, inv_beta], snake_row)
}

/// [`snake`] over one time step.
fn snake_row(out: &mut [f32], x: &[f32], params: &[&[f32]]) {
    let [alpha, inv_beta] = params else {
        unreachable!("snake takes alpha and inv_beta")
    };
    let n = out.len();
    let (x, alpha, inv_beta) = (&x[..n], &alpha[..n], &inv_beta[..n]);
    for i in 0..n {
        out[i] = x[i] + inv_beta[i] * sin_squared(alpha[i] * x[i]);
    }
}

/// `sin(z)²`, absolute error < 2.5e-7 for |z| ≤ 2·10⁴ (see the test), branch-free
/// so that loops over it vectorise: sin² has period π, so z is reduced to
/// r = z − kπ ∈ [−π/2, π/2] (π in three parts, k·π₁ exact) and sin r is a
/// degree-9 odd minimax polynomial (error 5e-9 before f32 rounding).
#[inline(always)]
fn sin_squared(z: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const PI: [f32; 3] = [3.140625, 9.675_026e-4, 1.509_958e-7];
    const C: [f32; 4] = [-0.166_666_57, 8.333_017e-3, -1.980_661_5e-4, 2.600_054_8e-6];
    let k = (z * std::f32::consts::FRAC_1_PI + ROUND) - ROUND;
    let r = ((z - k * PI[0]) - k * PI[1]) - k * PI[2];
    let s = r * r;
    let sin = r + r * s * (C[0] + s * (C[1] + s * (C[2] + s * C[3])));
    sin * sin
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

/// ConvNeXt block: `x + γ ⊙ pw2(GELU(pw1(LayerNorm(dwconv(x)))))`, weights
/// under `prefix` (`dwconv.conv`, `norm`, `pwconv1`, `pwconv2`, `gamma`).
pub fn convnext_block<'a>(
    ctx: &'a Context,
    cc: &CausalContext<'a>,
    w: &'a TensorStore,
    prefix: &str,
    x: Tensor<'a>,
) -> Tensor<'a> {
    let p = |s: &str| weight(w, &format!("{prefix}.{s}"));
    let dw = format!("{prefix}.dwconv");
    let h = causal_depthwise_conv1d(
        ctx,
        cc,
        &dw,
        x,
        p("dwconv.conv.weight"),
        Some(p("dwconv.conv.bias")),
    );
    // LayerNorm eps 1e-6 (nn.LayerNorm in the reference block).
    let h = layer_norm(ctx, h, p("norm.weight"), p("norm.bias"), 1e-6);
    let h = ctx.gelu_erf(linear(ctx, h, p("pwconv1.weight"), Some(p("pwconv1.bias"))));
    let h = linear(ctx, h, p("pwconv2.weight"), Some(p("pwconv2.bias")));
    ctx.add(x, ctx.mul(h, p("gamma")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::{FRAC_PI_2, PI};

    /// The error bound `sin_squared` documents, against f64 `sin` over the
    /// arguments SnakeBeta sees (and far beyond).
    #[test]
    fn sin_squared_error_bound() {
        let mut worst = (0f64, 0f32);
        let mut check = |z: f32| {
            let err = (sin_squared(z) as f64 - (z as f64).sin().powi(2)).abs();
            if err > worst.0 {
                worst = (err, z);
            }
        };
        for i in -2_000_000..=2_000_000 {
            check(i as f32 * 1e-4); // |z| ≤ 200, dense
        }
        for i in -1_000_000..=1_000_000 {
            check(i as f32 * 0.02 + 0.0123); // |z| ≤ 2e4
        }
        for z in [0.0, 1e-30, FRAC_PI_2, PI, 2e4] {
            check(z);
            check(-z);
        }
        assert!(worst.0 < 2.5e-7, "sin² error {:e} at {}", worst.0, worst.1);
        // Beyond, k·π₂ is no longer exact and the error grows slowly with |z|.
        for i in 0..=100_000 {
            let z = 2e4 + i as f32 * 0.8 + 0.0123;
            let err = (sin_squared(z) as f64 - (z as f64).sin().powi(2)).abs();
            assert!(err < 3e-6, "sin² error {err:e} at {z}");
        }
    }
}
