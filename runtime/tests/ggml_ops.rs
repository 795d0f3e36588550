//! Proves the ggml build and our safe wrappers: small graphs run through
//! `ggml_backend_sched` on the CPU backend and are compared with naive Rust.

use qwen3_tts::ggml::{dequantize, quantize, Backend, Context, GgmlType, Scheduler, Tensor};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn rel_rms(got: &[f32], want: &[f32]) -> f32 {
    let num: f32 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let den: f32 = want.iter().map(|w| w * w).sum();
    (num / den).sqrt()
}

/// Inputs of a test graph: a tensor and the f32 values to put in it
/// (converted to the tensor's type).
type Inputs<'a> = Vec<(Tensor<'a>, Vec<f32>)>;

/// Builds a graph with `build` (returns its inputs and output), allocates it
/// through the scheduler, sets the inputs, computes, and returns the output.
fn run_graph<F>(build: F) -> Vec<f32>
where
    F: for<'a> FnOnce(&'a Context) -> (Inputs<'a>, Tensor<'a>),
{
    let backend = Backend::cpu(2);
    let ctx = Context::new(64, 256);
    let (inputs, out) = build(&ctx);
    for (t, _) in &inputs {
        t.set_input();
    }
    let out = out.set_output();
    let graph = ctx.build_graph(&[out], 256);
    let mut sched = Scheduler::new(&[&backend], 256);
    sched.alloc_graph(&graph).unwrap();
    for (t, data) in &inputs {
        assert_eq!(data.len() as i64, t.n_elements());
        if t.ty() == GgmlType::I32 {
            t.set_i32(&data.iter().map(|&v| v as i32).collect::<Vec<_>>());
        } else {
            t.set_bytes(&quantize(t.ty(), data, t.ne()[0] as usize));
        }
    }
    sched.compute(&graph).unwrap();
    let result = out.get_f32();
    drop(sched);
    result
}

/// out[m][n] = Σ_k w[n][k] x[m][k] with the weights as ggml stores them.
fn naive_matmul(w: &[f32], x: &[f32], k: usize, n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for mi in 0..m {
        for ni in 0..n {
            out[mi * n + ni] = (0..k)
                .map(|ki| w[ni * k + ki] as f64 * x[mi * k + ki] as f64)
                .sum::<f64>() as f32;
        }
    }
    out
}

#[test]
fn mul_mat_matches_naive_for_each_weight_type() {
    let (k, n, m) = (512, 24, 3);
    let w = values(k * n, 1);
    let x = values(k * m, 2);
    for (ty, tol) in [
        (GgmlType::F32, 1e-5),
        (GgmlType::F16, 2e-3),
        (GgmlType::Q8_0, 1e-2),
        (GgmlType::Q4_K, 1e-2),
    ] {
        // Weights as stored: the reference product uses the dequantised values,
        // so the tolerance only covers ggml's quantisation of the activations.
        let stored = dequantize(ty, &quantize(ty, &w, k), k * n);
        let want = naive_matmul(&stored, &x, k, n, m);
        let (w_in, x_in) = (w.clone(), x.clone());
        let got = run_graph(move |ctx| {
            let wt = ctx.new_tensor(ty, &[k as i64, n as i64]);
            let xt = ctx.new_tensor(GgmlType::F32, &[k as i64, m as i64]);
            (vec![(wt, w_in), (xt, x_in)], ctx.mul_mat(wt, xt))
        });
        let err = rel_rms(&got, &want);
        assert!(err <= tol, "{ty:?}: relative RMS error {err} > {tol}");
    }
}

#[test]
fn weights_in_their_own_buffer_work_with_the_scheduler() {
    // The runtime keeps weights in a separate, pre-allocated backend buffer.
    let (k, n) = (64, 5);
    let w = values(k * n, 3);
    let x = values(k, 4);
    let backend = Backend::cpu(1);
    let wctx = Context::new(4, 0);
    let wt = wctx
        .new_tensor(GgmlType::F32, &[k as i64, n as i64])
        .set_name("w");
    let buffer = wctx.alloc_tensors(&backend);
    assert!(buffer.size() >= k * n * 4);
    wt.set_f32(&w);

    let gctx = Context::new(8, 64);
    let xt = gctx.new_tensor(GgmlType::F32, &[k as i64, 1]).set_input();
    let out = gctx.mul_mat(wt, xt).set_output();
    let graph = gctx.build_graph(&[out], 64);
    let mut sched = Scheduler::new(&[&backend], 64);
    // Reused graph: allocate and compute twice with different inputs.
    for seed in [4, 5] {
        let x = values(k, seed);
        sched.alloc_graph(&graph).unwrap();
        xt.set_f32(&x);
        sched.compute(&graph).unwrap();
        assert!(max_abs_diff(&out.get_f32(), &naive_matmul(&w, &x, k, n, 1)) < 1e-5);
    }
    let _ = x;
}

#[test]
fn conv_1d_matches_naive() {
    let (kw, cin, cout, t, stride, pad, dil) =
        (3usize, 4usize, 5usize, 11usize, 2usize, 2usize, 2usize);
    let kernel = values(kw * cin * cout, 5);
    let data = values(t * cin, 6);
    let kernel_f16 = dequantize(
        GgmlType::F16,
        &quantize(GgmlType::F16, &kernel, kw),
        kernel.len(),
    );
    let t_out = (t + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
    let mut want = vec![0f32; t_out * cout];
    for o in 0..cout {
        for to in 0..t_out {
            let mut acc = 0f64;
            for c in 0..cin {
                for j in 0..kw {
                    let ti = (to * stride + j * dil) as isize - pad as isize;
                    if ti >= 0 && (ti as usize) < t {
                        // ggml's im2col rounds the data to the kernel type (F16).
                        let x = half::f16::from_f32(data[c * t + ti as usize]).to_f32();
                        acc += (kernel_f16[(o * cin + c) * kw + j] * x) as f64;
                    }
                }
            }
            want[o * t_out + to] = acc as f32;
        }
    }
    let got = run_graph(move |ctx| {
        let k = ctx.new_tensor(GgmlType::F16, &[kw as i64, cin as i64, cout as i64]);
        let d = ctx.new_tensor(GgmlType::F32, &[t as i64, cin as i64]);
        (
            vec![(k, kernel), (d, data)],
            ctx.conv_1d(k, d, stride as i32, pad as i32, dil as i32),
        )
    });
    assert!(
        max_abs_diff(&got, &want) < 1e-4,
        "conv_1d diff {}",
        max_abs_diff(&got, &want)
    );
}

#[test]
fn conv_transpose_1d_matches_naive() {
    let (kw, cin, cout, t, stride) = (4usize, 3usize, 2usize, 6usize, 2usize);
    let kernel = values(kw * cout * cin, 7);
    let data = values(t * cin, 8);
    let kernel_f16 = dequantize(
        GgmlType::F16,
        &quantize(GgmlType::F16, &kernel, kw),
        kernel.len(),
    );
    let t_out = (t - 1) * stride + kw;
    let mut want = vec![0f32; t_out * cout];
    for ci in 0..cin {
        for ti in 0..t {
            let x = half::f16::from_f32(data[ci * t + ti]).to_f32();
            for o in 0..cout {
                for j in 0..kw {
                    // PyTorch ConvTranspose1d weight [in, out, k] ↔ ggml [k, out, in].
                    want[o * t_out + ti * stride + j] += kernel_f16[(ci * cout + o) * kw + j] * x;
                }
            }
        }
    }
    let got = run_graph(move |ctx| {
        let k = ctx.new_tensor(GgmlType::F16, &[kw as i64, cout as i64, cin as i64]);
        let d = ctx.new_tensor(GgmlType::F32, &[t as i64, cin as i64]);
        (
            vec![(k, kernel), (d, data)],
            ctx.conv_transpose_1d(k, d, stride as i32),
        )
    });
    assert!(
        max_abs_diff(&got, &want) < 1e-4,
        "conv_transpose_1d diff {}",
        max_abs_diff(&got, &want)
    );
}

#[test]
fn rms_norm_matches_naive() {
    let (d, rows, eps) = (48usize, 3usize, 1e-6f32);
    let x = values(d * rows, 9);
    let mut want = x.clone();
    for r in want.chunks_mut(d) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        r.iter_mut().for_each(|v| *v *= inv);
    }
    let got = run_graph(move |ctx| {
        let t = ctx.new_tensor(GgmlType::F32, &[d as i64, rows as i64]);
        (vec![(t, x)], ctx.rms_norm(t, eps))
    });
    assert!(max_abs_diff(&got, &want) < 1e-5);
}

#[test]
fn rope_neox_matches_rotate_half() {
    let (d, heads, positions, theta) = (16usize, 2usize, [0i32, 5, 9], 1e6f32);
    let t = positions.len();
    let x = values(d * heads * t, 10);
    let mut want = x.clone();
    for (ti, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (ti * heads + h) * d;
            for i in 0..d / 2 {
                let freq = theta.powf(-2.0 * i as f32 / d as f32);
                let (s, c) = (p as f32 * freq).sin_cos();
                let (a, b) = (x[base + i], x[base + i + d / 2]);
                want[base + i] = a * c - b * s;
                want[base + i + d / 2] = b * c + a * s;
            }
        }
    }
    let pos_f: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
    let got = run_graph(move |ctx| {
        let xt = ctx.new_tensor(GgmlType::F32, &[d as i64, heads as i64, t as i64]);
        let pt = ctx.new_tensor(GgmlType::I32, &[t as i64]);
        (
            vec![(xt, x), (pt, pos_f)],
            ctx.rope_neox(xt, pt, d as i32, theta),
        )
    });
    assert!(
        max_abs_diff(&got, &want) < 1e-5,
        "rope diff {}",
        max_abs_diff(&got, &want)
    );
}

#[test]
fn soft_max_ext_with_mask_matches_naive() {
    let (n, rows, scale) = (7usize, 3usize, 0.5f32);
    let x = values(n * rows, 11);
    // Causal-style mask: -inf above the diagonal offset.
    let mask: Vec<f32> = (0..rows * n)
        .map(|i| {
            if i % n > i / n + 3 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mut want = vec![0f32; n * rows];
    for r in 0..rows {
        let logits: Vec<f32> = (0..n)
            .map(|j| x[r * n + j] * scale + mask[r * n + j])
            .collect();
        let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = logits.iter().map(|l| (l - mx).exp()).sum();
        for j in 0..n {
            want[r * n + j] = (logits[j] - mx).exp() / sum;
        }
    }
    let got = run_graph(move |ctx| {
        let xt = ctx.new_tensor(GgmlType::F32, &[n as i64, rows as i64]);
        let mt = ctx.new_tensor(GgmlType::F32, &[n as i64, rows as i64]);
        (
            vec![(xt, x), (mt, mask)],
            ctx.soft_max_ext(xt, Some(mt), scale),
        )
    });
    assert!(max_abs_diff(&got, &want) < 1e-6);
}

#[test]
fn flash_attn_ext_matches_naive_gqa() {
    let (d, n_q, n_kv, heads, kv_heads) = (16usize, 3usize, 5usize, 4usize, 2usize);
    let scale = 1.0 / (d as f32).sqrt();
    let q = values(d * n_q * heads, 12);
    let k = values(d * n_kv * kv_heads, 13);
    let v = values(d * n_kv * kv_heads, 14);
    let f16 = |x: &[f32]| dequantize(GgmlType::F16, &quantize(GgmlType::F16, x, d), x.len());
    let (k16, v16) = (f16(&k), f16(&v));
    // Causal mask for queries at positions n_kv-n_q .. n_kv-1.
    let mask: Vec<f32> = (0..n_q * n_kv)
        .map(|i| {
            let (qi, kj) = (i / n_kv, i % n_kv);
            if kj > n_kv - n_q + qi {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    // Result layout [d, heads, n_q].
    let mut want = vec![0f32; d * heads * n_q];
    for h in 0..heads {
        let kh = h / (heads / kv_heads);
        for qi in 0..n_q {
            let qv = &q[(h * n_q + qi) * d..][..d];
            let scores: Vec<f32> = (0..n_kv)
                .map(|j| {
                    let kv = &k16[(kh * n_kv + j) * d..][..d];
                    qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale + mask[qi * n_kv + j]
                })
                .collect();
            let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
            let sum: f32 = w.iter().sum();
            for e in 0..d {
                let acc: f32 = (0..n_kv).map(|j| w[j] * v16[(kh * n_kv + j) * d + e]).sum();
                want[(qi * heads + h) * d + e] = acc / sum;
            }
        }
    }
    let got = run_graph(move |ctx| {
        let qt = ctx.new_tensor(GgmlType::F32, &[d as i64, n_q as i64, heads as i64]);
        let kt = ctx.new_tensor(GgmlType::F16, &[d as i64, n_kv as i64, kv_heads as i64]);
        let vt = ctx.new_tensor(GgmlType::F16, &[d as i64, n_kv as i64, kv_heads as i64]);
        let mt = ctx.new_tensor(GgmlType::F16, &[n_kv as i64, n_q as i64]);
        (
            vec![(qt, q), (kt, k), (vt, v), (mt, mask)],
            ctx.flash_attn_ext(qt, kt, vt, Some(mt), scale),
        )
    });
    // ggml rounds Q to F16 inside the kernel for F16 K/V.
    assert!(
        max_abs_diff(&got, &want) < 2e-3,
        "flash_attn diff {}",
        max_abs_diff(&got, &want)
    );
}

#[test]
fn get_rows_from_quantized_table() {
    let (d, rows) = (64usize, 10usize);
    let table = values(d * rows, 15);
    let stored = dequantize(
        GgmlType::Q8_0,
        &quantize(GgmlType::Q8_0, &table, d),
        table.len(),
    );
    let ids = [7i32, 0, 7, 3];
    let mut want = Vec::new();
    for &i in &ids {
        want.extend_from_slice(&stored[i as usize * d..][..d]);
    }
    let ids_f: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
    let got = run_graph(move |ctx| {
        let tt = ctx.new_tensor(GgmlType::Q8_0, &[d as i64, rows as i64]);
        let it = ctx.new_tensor(GgmlType::I32, &[ids.len() as i64]);
        (vec![(tt, table), (it, ids_f)], ctx.get_rows(tt, it))
    });
    assert_eq!(got, want);
}

/// Standard normal samples (Box-Muller over `values`).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let u = values(2 * n, seed);
    (0..n)
        .map(|i| {
            let a = (u[2 * i] * 0.5 + 0.5).max(1e-7);
            let b = u[2 * i + 1] * std::f32::consts::PI;
            (-2.0 * a.ln()).sqrt() * b.cos()
        })
        .collect()
}

#[test]
fn quantize_round_trip_errors_on_gaussian_weights() {
    let n = 256 * 64;
    let x = gaussian(n, 16);
    let err = |ty| rel_rms(&dequantize(ty, &quantize(ty, &x, 256), n), &x);
    assert_eq!(err(GgmlType::F32), 0.0);
    assert!(err(GgmlType::F16) < 1e-3);
    assert!(err(GgmlType::Q8_0) < 0.01, "Q8_0 {}", err(GgmlType::Q8_0));
    // ggml's Q4_K (4.5 bits/weight, affine blocks of 32) measures 7.2 % on
    // Gaussian data; this pins that figure so a quantiser regression shows.
    let q4k = err(GgmlType::Q4_K);
    assert!((0.05..0.08).contains(&q4k), "Q4_K {q4k}");
}
