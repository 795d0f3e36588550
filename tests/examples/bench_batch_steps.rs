//! Cost of one batched decode step by batch size: the talker's one-position
//! step (`DecodeBatch`) and the code predictor's frame (`predict_batch`,
//! greedy), on real-size weights, after a warm-up.
//!
//!     bench_batch_steps --tts F [--threads 2] [--sizes 1,2,4,8] [--iters 10]
//!
//! Prints one JSON line per batch size: ms per step and per sequence.

use std::sync::Arc;
use std::time::Instant;

use qwen3_tts::code_predictor::{CodePredictor, FrameInput};
use qwen3_tts::ggml::Backend;
use qwen3_tts::pipeline::TtsModel;
use qwen3_tts::sampler::{Sampler, SamplingParams};
use qwen3_tts::talker::{DecodeBatch, StepInput, Talker};

fn main() {
    let args = qwen3_tts_tests::ExampleArgs::from_env();
    let get = |k: &str| args.get(k);
    let tts = get("tts").expect("--tts");
    let threads: usize = get("threads").map_or(2, |v| v.parse().expect("threads"));
    let iters: usize = get("iters").map_or(10, |v| v.parse().expect("iters"));
    let sizes: Vec<usize> = get("sizes")
        .unwrap_or("1,2,4,8".into())
        .split(',')
        .map(|s| s.parse().expect("sizes"))
        .collect();
    let model = Arc::new(TtsModel::load(&tts).expect("load"));
    let backend = Arc::new(Backend::cpu(threads));
    let hidden = model.config.talker.hidden;
    let prompt: Vec<f32> = (0..hidden * 24)
        .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
        .collect();
    let embed: Vec<f32> = (0..hidden)
        .map(|i| ((i % 13) as f32 - 6.0) * 1e-2)
        .collect();
    let greedy = SamplingParams::greedy();
    for &b in &sizes {
        let mut talkers: Vec<Talker> = (0..b)
            .map(|_| Talker::new(model.talker.clone(), backend.clone()))
            .collect();
        for t in &mut talkers {
            t.prefill(&prompt, 24 + 2 * iters + 8).expect("prefill");
        }
        let mut batch = DecodeBatch::default();
        let mut predictor = CodePredictor::new(model.code_predictor.clone(), backend.clone());
        let mut rngs: Vec<Sampler> = (0..b).map(|i| Sampler::new(i as u64)).collect();
        let (mut talker_s, mut predictor_s) = (0.0, 0.0);
        for it in 0..iters + 2 {
            let t0 = Instant::now();
            let mut inputs: Vec<StepInput<'_>> = talkers
                .iter_mut()
                .map(|talker| StepInput {
                    talker,
                    embed: &embed,
                    position: 24 + it,
                })
                .collect();
            let steps = batch.step(&mut inputs).expect("step");
            let t1 = Instant::now();
            let mut frames: Vec<FrameInput<'_>> = steps
                .iter()
                .zip(rngs.iter_mut())
                .map(|(s, rng)| FrameInput {
                    hidden: &s.hidden,
                    c0: 5,
                    forced: None,
                    params: &greedy,
                    rng,
                })
                .collect();
            predictor.predict_batch(&mut frames).expect("frame");
            let t2 = Instant::now();
            if it >= 2 {
                talker_s += (t1 - t0).as_secs_f64();
                predictor_s += (t2 - t1).as_secs_f64();
            }
        }
        let (talker_ms, predictor_ms) = (
            talker_s * 1000.0 / iters as f64,
            predictor_s * 1000.0 / iters as f64,
        );
        println!(
            "{{\"batch\": {b}, \"talker_ms\": {talker_ms:.1}, \"predictor_ms\": {predictor_ms:.1}, \
             \"step_ms\": {:.1}, \"ms_per_sequence\": {:.1}}}",
            talker_ms + predictor_ms,
            (talker_ms + predictor_ms) / b as f64
        );
    }
}
