//! Proves the ggml build and our safe wrappers: small graphs run through
//! `ggml_backend_sched` on the CPU backend and are compared with naive Rust.

use qwen3_tts::ggml::{
    dequantize, quantize, Backend, Context, GgmlType, Scheduler, Tensor, TensorStore,
};

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
        (GgmlType::Q6_K, 1e-2),
        (GgmlType::Q5_K, 1e-2),
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
    let store = TensorStore::new(&[("w".into(), GgmlType::F32, vec![k as i64, n as i64])]);
    assert!(store.size() >= k * n * 4);
    let stored = store.get("w").unwrap();
    stored.set_bytes_at(0, qwen3_tts::ggml::as_bytes(&w));

    let gctx = Context::new(8, 64);
    let wt = gctx.stored(&stored);
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
    // Q6_K (6.56 bits/weight) measures 1.8 %, Q5_K (5.5 bits) 3.7 %.
    let q6k = err(GgmlType::Q6_K);
    assert!((0.012..0.025).contains(&q6k), "Q6_K {q6k}");
    let q5k = err(GgmlType::Q5_K);
    assert!((0.025..0.05).contains(&q5k), "Q5_K {q5k}");
}

/// `unfold_columns` against a naive loop over the zero-padded input, for
/// strides, dilations and padding the convs use, in F32 and F16.
#[test]
fn unfold_columns_matches_naive() {
    use qwen3_tts::ggml::Unfold;
    let (c, len) = (5usize, 23usize);
    let x = values(c * len, 17);
    let cases = [
        (3, Unfold::PLAIN),
        (
            7,
            Unfold {
                dilation: 3,
                ..Unfold::PLAIN
            },
        ),
        (
            8,
            Unfold {
                stride: 4,
                left: 4,
                right: 1,
                ..Unfold::PLAIN
            },
        ),
        (
            3,
            Unfold {
                stride: 2,
                dilation: 2,
                left: 5,
                right: 6,
            },
        ),
        (
            1,
            Unfold {
                stride: 3,
                ..Unfold::PLAIN
            },
        ),
    ];
    for (k, g) in cases {
        let padded = g.left + len + g.right;
        let n = (padded - (k - 1) * g.dilation - 1) / g.stride + 1;
        let mut want = vec![0.0; k * c * n];
        for t in 0..n {
            for j in 0..k {
                let col = (t * g.stride + j * g.dilation) as isize - g.left as isize;
                if (0..len as isize).contains(&col) {
                    let col = col as usize;
                    want[(t * k + j) * c..][..c].copy_from_slice(&x[col * c..][..c]);
                }
            }
        }
        for ty in [GgmlType::F32, GgmlType::F16] {
            let got = run_graph(|ctx| {
                let input = ctx.new_tensor(GgmlType::F32, &[c as i64, len as i64]);
                let cols = ctx.unfold_columns(input, k, g, ty);
                assert_eq!(cols.ne()[..2], [(k * c) as i64, n as i64], "{k} {g:?}");
                (vec![(input, x.clone())], ctx.cast(cols, GgmlType::F32))
            });
            let tol = if ty == GgmlType::F16 { 1e-3 } else { 0.0 };
            assert!(max_abs_diff(&got, &want) <= tol, "k {k} {g:?} {ty:?}");
        }
    }
}
