//! Times our decoder on the codes of a `scripts/bench_vocoder_ref.py` dump
//! and compares its waveform with the reference's. Used by
//! `scripts/bench_vocoder.sh`.
//!
//!     cargo run --release -p qwen3-tts-tests --example bench_vocoder -- \
//!         models/convert-0.6B-Base/tokenizer-f16.gguf models/reference-real/vocoder_50f.safetensors 2 3

use std::time::Instant;

use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts_tests::{frames_of, max_abs_diff, snr_db, Dump};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench_vocoder TOKENIZER.gguf DUMP.safetensors [threads] [runs]");
        std::process::exit(2);
    }
    let threads: usize = args.get(3).map_or(2, |t| t.parse().expect("threads"));
    let runs: usize = args.get(4).map_or(3, |t| t.parse().expect("runs"));
    let dump = Dump::open(std::path::Path::new(&args[2]));
    let frames = frames_of(&dump.i64("codes"));
    let want = dump.f32("wav");
    let t = Instant::now();
    let model = std::sync::Arc::new(CodecDecoder::load(&args[1]).unwrap_or_else(|e| panic!("{e}")));
    let mut dec = model.session(threads);
    let load_s = t.elapsed().as_secs_f64();
    let audio_s = frames.len() as f64 * dec.samples_per_frame() as f64 / dec.sample_rate() as f64;
    let mut times = Vec::new();
    let mut wav = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        wav = dec.decode(&frames).unwrap_or_else(|e| panic!("{e}"));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "ours {}: {threads} thread(s): {:.0} ms per second of audio (median of {runs}; min {:.0}); \
         SNR vs reference {:.1} dB, max |diff| {:.2e}; load {load_s:.2} s, weights {:.0} MB",
        std::path::Path::new(&args[1]).file_name().unwrap().to_string_lossy(),
        1000.0 * median / audio_s,
        1000.0 * times[0] / audio_s,
        snr_db(&wav, &want),
        max_abs_diff(&wav, &want),
        model.weights_size() as f64 / 1e6,
    );
}
