//! The quantised matrix × vector path of `Context::mul_mat` (prefetching row
//! walk, inline Q8_0 loop) gives ggml's own results.

use std::sync::Arc;

use qwen3_tts::ggml::{quantize, Backend, GgmlType, OwnedGraph, StoredTensor, TensorStore};

/// Weights `[k, n]` of type `ty` in a store, and `m` input vectors of `k`.
fn inputs(ty: GgmlType, k: usize, n: usize, m: usize) -> (StoredTensor, Vec<f32>) {
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
        .collect();
    let x: Vec<f32> = (0..k * m)
        .map(|i| ((i * 104_729 % 997) as f32 / 997.0 - 0.5) * 3.0)
        .collect();
    let store = TensorStore::new(&[("w".to_string(), ty, vec![k as i64, n as i64])]);
    let stored = store.get("w").unwrap();
    stored.set_bytes_at(0, &quantize(ty, &w, k));
    (stored, x)
}

/// `w · x` through `mul_mat` and through ggml's `mul_mat`, with 2 threads.
fn both_paths(ty: GgmlType, k: usize, n: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
    let (stored, x) = inputs(ty, k, n, m);
    let backend = Arc::new(Backend::cpu(2));
    let mut g = OwnedGraph::build(&backend, 16, |ctx| {
        let w = ctx.stored(&stored);
        let x = ctx
            .new_tensor(GgmlType::F32, &[k as i64, m as i64])
            .set_input();
        let (ours, ggml) = (ctx.mul_mat(w, x), ctx.mul_mat_ggml(w, x));
        assert_eq!((ours.op(), ggml.op()), ("CUSTOM".into(), "MUL_MAT".into()));
        (
            [ctx.slot(x), ctx.slot(ours), ctx.slot(ggml)],
            vec![ours, ggml],
        )
    });
    let [x_in, ours, ggml] = *g.io();
    g.compute(|g| g.tensor(x_in).set_f32(&x)).unwrap();
    (g.tensor(ours).get_f32(), g.tensor(ggml).get_f32())
}

#[test]
fn one_vector_is_bit_identical_to_ggml() {
    for (ty, k) in [
        (GgmlType::Q8_0, 1024),
        (GgmlType::Q4_K, 1024),
        (GgmlType::Q6_K, 1024),
        (GgmlType::Q5_K, 1024),
        (GgmlType::Q8_0, 96),
    ] {
        // odd row counts: the threads' row ranges differ in length
        let (ours, ggml) = both_paths(ty, k, 67, 1);
        assert_eq!(ours.len(), 67);
        assert_eq!(ours, ggml, "{ty:?} k={k}");
    }
}

#[test]
fn several_vectors_match_ggml() {
    for m in 2..=4 {
        let (ours, ggml) = both_paths(GgmlType::Q8_0, 512, 33, m);
        assert_eq!(ours.len(), 33 * m);
        // ggml multiplies several vectors with a tiled GEMM (another sum order)
        for (i, (a, b)) in ours.iter().zip(&ggml).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "m={m} [{i}] {a} vs {b}"
            );
        }
        let (ours, ggml) = both_paths(GgmlType::Q4_K, 512, 33, m);
        assert_eq!(ours, ggml, "Q4_K m={m}");
    }
}

/// `w · x` of `m` columns in a row-dot context, and each column alone
/// through ggml's one-column product.
fn row_dots_and_columns(ty: GgmlType, k: usize, n: usize, m: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (stored, x) = inputs(ty, k, n, m);
    let backend = Arc::new(Backend::cpu(2));
    let mut g = OwnedGraph::build(&backend, 64, |ctx| {
        ctx.set_row_dots(true);
        let w = ctx.stored(&stored);
        let x = ctx
            .new_tensor(GgmlType::F32, &[k as i64, m as i64])
            .set_input();
        let all = ctx.mul_mat(w, x);
        assert_eq!(all.op(), "CUSTOM");
        let columns: Vec<_> = (0..m)
            .map(|c| ctx.mul_mat_ggml(w, ctx.view(x, &[k as i64, 1], &[k * 4], c * k * 4)))
            .collect();
        let mut outputs = vec![all];
        outputs.extend(&columns);
        let io = (
            ctx.slot(x),
            ctx.slot(all),
            columns.iter().map(|&c| ctx.slot(c)).collect::<Vec<_>>(),
        );
        (io, outputs)
    });
    let x_in = g.io().0;
    g.compute(|g| g.tensor(x_in).set_f32(&x)).unwrap();
    let (_, all, columns) = g.io();
    (
        g.tensor(*all).get_f32(),
        columns.iter().map(|&c| g.tensor(c).get_f32()).collect(),
    )
}

/// A batch's product gives every column what ggml's one-column product
/// gives it, bit for bit, for every weight type and batch size.
#[test]
fn row_dot_columns_equal_one_column_products() {
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q4_K,
    ] {
        for m in [1, 2, 3, 4, 5, 7, 9] {
            let (all, columns) = row_dots_and_columns(ty, 512, 37, m);
            for (c, column) in columns.iter().enumerate() {
                let got = &all[c * 37..(c + 1) * 37];
                let same = got
                    .iter()
                    .zip(column)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty:?} m={m} column {c}: {got:?} vs {column:?}");
            }
        }
    }
}
