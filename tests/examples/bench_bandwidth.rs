//! The machine's limit for per-frame decoding: sustained memory read
//! bandwidth (a STREAM-style read of a buffer far larger than the caches,
//! split over `threads` threads), best of `reps`, and the bytes of weights
//! one frame streams from each model file (talker once, code predictor once
//! per pass). Prints one JSON object. Used by `scripts/bench.sh`.
//!
//! `--gemv q8_0,q4_k,…` also times our matrix × vector product alone over
//! 512 MiB of weights of each type (the talker's and code predictor's hot
//! path, without the rest of a decode step), in GB/s of weights, to compare
//! with the read bandwidth of the same run.
//!
//! ```text
//! bench_bandwidth --threads 1,2 [--mib 1024] [--reps 7] [--tts F ...] [--gemv q8_0,q4_k]
//! ```

use std::time::Instant;

use std::sync::Arc;

use qwen3_tts::config::TtsConfig;
use qwen3_tts::ggml::{quantize, Backend, GgmlType, OwnedGraph, TensorStore};
use qwen3_tts::model_file::GgufFile;

/// Sums `data` with 8 independent lanes so the loop is load-bound, not
/// add-latency-bound.
fn read_sum(data: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    for chunk in data.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l = l.wrapping_add(*v);
        }
    }
    lanes.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// Best read bandwidth in GB/s over `reps` passes with `threads` threads.
fn read_bandwidth(data: &[u64], threads: usize, reps: usize) -> f64 {
    let per = data.len().div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let start = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(per)
                .map(|part| s.spawn(move || read_sum(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("reader"))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::mem::size_of_val(data) as f64 / best / 1e9
}

/// Weights per matrix of the `--gemv` test: the 0.6B code predictor's MLP
/// shape (`[1024, 3072]`).
const GEMV_K: usize = 1024;
const GEMV_N: usize = 3072;

/// Best GB/s of weights over `reps` passes of one vector through 512 MiB of
/// `[GEMV_K, GEMV_N]` matrices of type `ty` (each its own memory, one
/// product node each) with `threads` threads.
fn gemv_rate(ty: GgmlType, threads: usize, reps: usize) -> f64 {
    let w: Vec<f32> = (0..GEMV_K * GEMV_N)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
        .collect();
    let bytes = quantize(ty, &w, GEMV_K);
    let count = (512usize << 20).div_ceil(bytes.len());
    let specs: Vec<_> = (0..count)
        .map(|i| (format!("w{i}"), ty, vec![GEMV_K as i64, GEMV_N as i64]))
        .collect();
    let store = TensorStore::new(&specs);
    let weights: Vec<_> = (0..count)
        .map(|i| {
            let t = store.get(&format!("w{i}")).expect("stored");
            t.set_bytes_at(0, &bytes);
            t
        })
        .collect();
    let backend = Arc::new(Backend::cpu(threads));
    let mut graph = OwnedGraph::build(&backend, count + 16, |ctx| {
        let x = ctx
            .new_tensor(GgmlType::F32, &[GEMV_K as i64, 1])
            .set_input();
        let outs: Vec<_> = weights
            .iter()
            .map(|w| ctx.mul_mat(ctx.stored(w), x))
            .collect();
        (ctx.slot(x), outs)
    });
    let x_in = *graph.io();
    let x: Vec<f32> = (0..GEMV_K).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
    let mut best = f64::MAX;
    for _ in 0..reps + 1 {
        let start = Instant::now();
        graph
            .compute(|g| g.tensor(x_in).set_f32(&x))
            .expect("gemv graph");
        best = best.min(start.elapsed().as_secs_f64());
    }
    (bytes.len() * count) as f64 / best / 1e9
}

/// Bytes of weights one generated frame reads from a TTS file: the talker's
/// blocks, final norm and codec head once; the code predictor's blocks (and
/// the 1.7B input projection) once per pass, and each of its heads once.
/// Embedding lookups read a row and are left out.
fn bytes_per_frame(path: &str) -> serde_json::Value {
    let file = GgufFile::open(path).expect("tts file");
    let cfg = TtsConfig::from_gguf(&file).expect("config");
    let passes = (cfg.num_code_groups - 1) as f64;
    // [stored bytes, the same weights in F32 (what the PyTorch reference streams)]
    let (mut talker, mut cp_pass, mut cp_heads) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    for t in file.tensors() {
        let n = &t.name;
        let stored = file.tensor_bytes(n).expect("tensor").len() as f64;
        let bytes = [stored, 4.0 * t.ne.iter().product::<i64>() as f64];
        let add = |acc: &mut [f64; 2]| {
            acc[0] += bytes[0];
            acc[1] += bytes[1];
        };
        if n.starts_with("talker.blk.")
            || n.starts_with("talker.codec_head.")
            || n.starts_with("talker.output_norm.")
        {
            add(&mut talker);
        } else if n.starts_with("cp.blk.")
            || n.starts_with("cp.mtp_proj.")
            || n == "cp.output_norm.weight"
        {
            add(&mut cp_pass);
        } else if n.starts_with("cp.head.") {
            add(&mut cp_heads);
        }
    }
    let cp = |i: usize| passes * cp_pass[i] + cp_heads[i];
    serde_json::json!({
        "file": path,
        "talker_bytes": talker[0],
        "cp_bytes": cp(0),
        "bytes_per_frame": talker[0] + cp(0),
        "f32_bytes_per_frame": talker[1] + cp(1),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: Vec<usize> = value("--threads")
        .unwrap_or("1,2".into())
        .split(',')
        .map(|t| t.parse().expect("--threads"))
        .collect();
    let mib: usize = value("--mib").map_or(1024, |v| v.parse().expect("--mib"));
    let reps: usize = value("--reps").map_or(7, |v| v.parse().expect("--reps"));
    // Touch every page first so the timed passes read memory, not page faults.
    let data: Vec<u64> = (0..mib * 1024 * 1024 / 8).map(|i| i as u64).collect();
    let bandwidth: serde_json::Map<String, serde_json::Value> = threads
        .iter()
        .map(|&t| (t.to_string(), read_bandwidth(&data, t, reps).into()))
        .collect();
    let files: Vec<serde_json::Value> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i > 0 && args[i - 1] == "--tts")
        .map(|(_, f)| bytes_per_frame(f))
        .collect();
    let mut out = serde_json::json!({"read_gb_per_s": bandwidth, "buffer_mib": mib, "reps": reps, "files": files});
    if let Some(types) = value("--gemv") {
        let mut rates = serde_json::Map::new();
        for name in types.split(',') {
            let ty = GgmlType::parse(name).unwrap_or_else(|| panic!("--gemv: unknown type {name}"));
            let per_thread: serde_json::Map<_, _> = threads
                .iter()
                .map(|&t| (t.to_string(), gemv_rate(ty, t, reps).into()))
                .collect();
            rates.insert(name.to_string(), per_thread.into());
        }
        out["gemv_gb_per_s"] = rates.into();
    }
    println!("{out}");
}
