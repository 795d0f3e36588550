//! Compares one GGUF file with a reference dump (same format as the
//! fixtures): prompt, first-step logits, greedy codes free-running and
//! teacher-forced, and timings. Used by `scripts/talker_real.sh` on the
//! real-size random checkpoints.
//!
//!     cargo run --release -p qwen3-tts-tests --example compare_reference -- \
//!         models/convert-0.6B-Base/tts-q8_0.gguf models/reference-real/0.6B-Base/xvec [threads]

use std::path::PathBuf;
use std::time::Instant;

use std::sync::Arc;

use qwen3_tts::pipeline::{GenerateOptions, TtsModel};
use qwen3_tts_tests::{cosine, max_rel_diff, request, Dump};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: compare_reference MODEL.gguf DUMP_STEM [threads]");
        std::process::exit(2);
    }
    let gguf = PathBuf::from(&args[1]);
    let stem = PathBuf::from(&args[2]);
    let threads: usize = args.get(3).map_or(2, |t| t.parse().expect("threads"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stem.with_extension("json")).expect("dump json"),
    )
    .expect("json");
    let dump = Dump::open(&stem.with_extension("safetensors"));

    let t = Instant::now();
    let mut model = TtsModel::load(&gguf)
        .map(|m| Arc::new(m).session(threads))
        .unwrap_or_else(|e| panic!("{e}"));
    let load_s = t.elapsed().as_secs_f64();
    let req = request(&json, &dump);
    let prompt = model.prompt(&req).unwrap_or_else(|e| panic!("{e}"));
    let prefill = max_rel_diff(&prompt.prefill, &dump.f32("prefill_embeds"));

    let want: Vec<u32> = dump.i64("codes").iter().map(|&c| c as u32).collect();
    let frames_ref: Vec<Vec<u32>> = want.chunks(16).map(<[u32]>::to_vec).collect();
    let mut opts = GenerateOptions::from_config(&model.model().config).greedy();
    opts.set_max_new_tokens(frames_ref.len() + 1);
    opts.min_new_tokens = opts.max_new_tokens;

    let t = Instant::now();
    let (frames, trace) = model
        .generate(&prompt, &opts, 1, |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let gen_s = t.elapsed().as_secs_f64();
    let v = model.model().config.codec_vocab;
    let ref_logits = &dump.f32("talker_logits")[..v];
    let free = frames
        .concat()
        .iter()
        .zip(&want)
        .filter(|(a, b)| a == b)
        .count();
    let forced = model
        .predict_forced(&prompt, &opts, &frames_ref)
        .unwrap_or_else(|e| panic!("{e}"));
    let forced_same = forced
        .concat()
        .iter()
        .zip(&want)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "{}: load {load_s:.1} s | prefill rel diff {prefill:.2e} | step-0 logits rel diff {:.2e}, cosine {:.6} | \
         codes identical: free-running {free}/{n} ({:.1} %), teacher-forced {forced_same}/{n} ({:.2} %) | \
         {:.0} ms/frame ({} threads)",
        gguf.display(),
        max_rel_diff(&trace.talker_logits[0], ref_logits),
        cosine(&trace.talker_logits[0], ref_logits),
        100.0 * free as f64 / want.len() as f64,
        100.0 * forced_same as f64 / want.len() as f64,
        1000.0 * gen_s / frames.len() as f64,
        threads,
        n = want.len(),
    );
}
