//! The vocoder's fast convolution against its direct convolution on one
//! file, in one process: waveform SNR of the fast decode against the direct
//! one (random codes, 50 frames) and milliseconds per second of audio of
//! each, runs interleaved (fast, direct, fast, …) so that machine drift hits
//! both alike; median of the runs; and each load's time.
//!
//!     vocoder_fast_conv TOKENIZER.gguf [threads 2] [frames 50] [runs 5]

use std::sync::Arc;
use std::time::Instant;

use qwen3_tts::codec_decoder::{CodecDecoder, DecoderOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: vocoder_fast_conv TOKENIZER.gguf [threads] [frames] [runs]");
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (threads, n, runs) = (arg(2, 2), arg(3, 50), arg(4, 5));
    let load = |fast_convolution| {
        let options = DecoderOptions { fast_convolution };
        let t = Instant::now();
        let model = CodecDecoder::load_with(path, options).unwrap_or_else(|e| panic!("{e}"));
        (Arc::new(model), t.elapsed().as_secs_f64() * 1000.0)
    };
    let ((fast, load_fast), (direct, load_direct)) = (load(true), load(false));
    let (nq, cb) = (fast.config.num_quantizers, fast.config.codebook_size);
    let frames = qwen3_tts_tests::random_frames(n, nq, cb);
    let mut sessions = [fast.session(threads), direct.session(threads)];
    let mut times = [Vec::new(), Vec::new()];
    let mut wavs = [Vec::new(), Vec::new()];
    for _ in 0..=runs {
        for (i, s) in sessions.iter_mut().enumerate() {
            let t = Instant::now();
            wavs[i] = s.decode(&frames).unwrap();
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    let audio_s = n as f64 * 0.08;
    let median = |v: &mut Vec<f64>| {
        v.remove(0); // the first run builds the graphs
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1000.0 / audio_s
    };
    let (tf, td) = (median(&mut times[0]), median(&mut times[1]));
    let (mut err, mut pow) = (0.0f64, 0.0f64);
    for (&a, &b) in wavs[0].iter().zip(&wavs[1]) {
        err += ((a - b) as f64).powi(2);
        pow += (b as f64).powi(2);
    }
    let snr = 10.0 * (pow / err.max(f64::MIN_POSITIVE)).log10();
    println!(
        "{path}: {n} frames, {threads} thread(s), median of {runs}: fast {tf:.1} ms per audio s, \
         direct {td:.1} ms ({:.2}×); fast vs direct SNR {snr:.1} dB; load {load_fast:.0} ms fast, \
         {load_direct:.0} ms direct",
        td / tf
    );
}
