//! One voice through a long text: speaks a text file in parts
//! (`Synthesizer::synthesize_long`) with a voice cloned from a reference
//! clip (x-vector), and measures each part's output with the speaker
//! encoder: the cosine of its x-vector with the first part's (and with the
//! reference's), the frames and the peak RSS.
//!
//!     long_text_voice --tts BASE.gguf --tokenizer F --ref-audio WAV --text-file F
//!         [--max-frames N] [--max-part-chars 300] [--threads 2] [--stream] [--seed 1]
//!
//! `--max-frames` caps each part (random-weight models never end by
//! themselves: without it every part runs to the runaway guard's bound).
//! Prints one line per part and a JSON summary.

use std::path::PathBuf;
use std::time::Instant;

use qwen3_tts::audio;
use qwen3_tts::ggml::Backend;
use qwen3_tts::long_text::{split_text, LongEvent, DEFAULT_MAX_PART};
use qwen3_tts::pipeline::{GenerateOptions, StreamOptions, Synthesizer};
use qwen3_tts::prompt::Request;
use qwen3_tts_tests::{cosine, peak_rss_mb};

fn main() {
    let args = qwen3_tts_tests::ExampleArgs::from_env();
    let get = |k: &str| args.get(k);
    let num = |k: &str, d: usize| args.num(k, d);
    let tts = PathBuf::from(get("tts").expect("--tts"));
    let tokenizer = PathBuf::from(get("tokenizer").expect("--tokenizer"));
    let ref_audio = PathBuf::from(get("ref-audio").expect("--ref-audio"));
    let text_file = PathBuf::from(get("text-file").expect("--text-file"));
    let text = std::fs::read_to_string(&text_file).expect("--text-file");
    let parts = split_text(&text, num("max-part-chars", DEFAULT_MAX_PART));

    let mut synth = Synthesizer::load(&tts, &tokenizer, num("threads", 2)).expect("load");
    let clip = audio::load_resampled(&ref_audio, 24_000).expect("reference audio");
    let voice = synth.clone_voice(&clip.samples, None).expect("clone");
    let reference = voice.x_vector.clone();
    let req = Request {
        text: text.clone(),
        language: "auto".into(),
        voice: voice.voice(true),
        instruct: None,
        non_streaming: None,
    };
    let mut opts = GenerateOptions::from_config(&synth.model.config);
    opts.seed = num("seed", 1) as u64;
    if let Some(n) = get("max-frames") {
        opts.set_max_new_tokens(n.parse::<usize>().expect("--max-frames") + 1);
    }
    let stream = StreamOptions::default();
    let streaming = args.flag("stream");

    // The parts' x-vectors, measured on a backend of their own while the
    // synthesis goes on (each part's audio is kept only until its end).
    let model = synth.model.clone();
    let encoder_backend = std::sync::Arc::new(Backend::cpu(1));
    let x_vector = |samples: &[f32]| {
        let encoder = model.cloning().expect("a Base model");
        encoder.embed(&encoder_backend, samples).expect("x-vector")
    };
    let started = Instant::now();
    let mut current: Vec<f32> = Vec::new();
    let mut x_vectors: Vec<Vec<f32>> = Vec::new();
    let summary = synth
        .synthesize_long(&req, &opts, &parts, streaming.then_some(&stream), |e| {
            match e {
                LongEvent::Part { index, .. } if index > 0 => {
                    x_vectors.push(x_vector(&current));
                    current.clear();
                }
                // The pause after a part is silence: not the part's voice.
                LongEvent::Audio(chunk) if chunk.samples.iter().any(|&s| s != 0.0) => {
                    current.extend_from_slice(chunk.samples)
                }
                _ => {}
            }
            Ok(())
        })
        .expect("synthesis");
    x_vectors.push(x_vector(&current));
    let wall = started.elapsed().as_secs_f64();
    let first = x_vectors[0].clone();
    let mut to_first = Vec::new();
    let mut to_ref = Vec::new();
    for (i, (xv, part)) in x_vectors.iter().zip(&summary.parts).enumerate() {
        let (c1, cr) = (cosine(xv, &first), cosine(xv, &reference));
        println!(
            "part {:>3}: {:>4} frames, stop {:?}, cosine to part 1 {c1:.4}, to the reference {cr:.4}",
            i + 1,
            part.frames,
            part.stop
        );
        if i > 0 {
            to_first.push(c1);
        }
        to_ref.push(cr);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "{{\"chars\": {}, \"parts\": {}, \"frames\": {}, \"audio_s\": {:.1}, \"wall_s\": {wall:.1}, \
         \"streaming\": {streaming}, \"cosine_to_first_min\": {:.4}, \"cosine_to_first_mean\": {:.4}, \
         \"cosine_to_reference_min\": {:.4}, \"cosine_to_reference_mean\": {:.4}, \"peak_rss_mb\": {:.0}}}",
        text.chars().count(),
        summary.parts.len(),
        summary.frames(),
        summary.samples as f64 / summary.sample_rate as f64,
        if to_first.is_empty() { 1.0 } else { min(&to_first) },
        if to_first.is_empty() { 1.0 } else { mean(&to_first) },
        min(&to_ref),
        mean(&to_ref),
        peak_rss_mb()
    );
}
