//! Voice-cloning front end on real-size files: speaker-encoder time and
//! x-vector cosine against the reference, speech-tokenizer encoder time per
//! second of audio and codes identical to the reference's. Used by
//! `scripts/bench_clone.sh`.
//!
//!     cargo run --release -p qwen3-tts-tests --example bench_clone -- TTS.gguf TOKENIZER.gguf \
//!         models/reference-real/0.6B-Base/xvec.safetensors models/reference-real/encode_ref.safetensors 2 3
//!
//! `-` for TTS times the codec encoder alone; `-` for the x-vector dump skips the cosine; an
//! ENCODE_DUMP ending in `.wav` is timed with no codes to compare.

use std::path::Path;
use std::time::Instant;

use qwen3_tts::codec_encoder::CodecEncoder;
use qwen3_tts::pipeline::TtsModel;
use qwen3_tts_tests::{cosine, frames_of, Dump};

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!(
            "usage: bench_clone TTS.gguf TOKENIZER.gguf XVEC_DUMP ENCODE_DUMP [threads] [runs]"
        );
        std::process::exit(2);
    }
    let threads: usize = a.get(5).map_or(2, |t| t.parse().expect("threads"));
    let runs: usize = a.get(6).map_or(3, |t| t.parse().expect("runs"));
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // ENCODE_DUMP may be an audio file instead: timed, with no codes to compare.
    let enc_dump = (!a[4].ends_with(".wav")).then(|| Dump::open(Path::new(&a[4])));
    let samples = match &enc_dump {
        Some(d) => d.f32("input_samples"),
        None => {
            qwen3_tts::audio::load_resampled(Path::new(&a[4]), 24_000)
                .unwrap_or_else(|e| panic!("{e}"))
                .samples
        }
    };
    let seconds = samples.len() as f64 / 24000.0;

    // TTS "-": the codec encoder only; XVEC_DUMP "-": no x-vector comparison.
    if a[1] != "-" {
        let model = TtsModel::load(&a[1]).unwrap_or_else(|e| panic!("{e}"));
        let spk = model.speaker_encoder.as_ref().expect("a Base model");
        let mut xvec = Vec::new();
        let backend = std::sync::Arc::new(qwen3_tts::ggml::Backend::cpu(threads));
        let mel_ms = median_ms(runs, || drop(spk.mel(&samples).unwrap()));
        let spk_ms = median_ms(runs, || xvec = spk.embed(&backend, &samples).unwrap());
        let cosine = match a[3].as_str() {
            "-" => String::new(),
            dump => {
                let want = Dump::open(Path::new(dump)).f32("x_vector");
                format!("; x-vector cosine {:.6}", cosine(&xvec, &want))
            }
        };
        println!(
            "speaker encoder ({}): {spk_ms:.0} ms for {seconds:.2} s of audio (log-mel {mel_ms:.0} ms){cosine}",
            name(&a[1]),
        );
    }

    let enc = CodecEncoder::load(&a[2], threads).unwrap_or_else(|e| panic!("{e}"));
    let mut codes = Vec::new();
    let enc_ms = median_ms(runs, || codes = enc.encode(&samples).unwrap());
    let want = enc_dump.map_or(Vec::new(), |d| frames_of(&d.i64("codes")));
    let total = want.len() * 16;
    let same = codes
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .filter(|(x, y)| x == y)
        .count();
    let compared = match total {
        0 => "no reference codes".to_string(),
        _ => format!(
            "codes {same}/{total} identical ({:.2} %)",
            100.0 * same as f64 / total as f64
        ),
    };
    println!(
        "codec encoder ({}): {:.0} ms per second of audio; {compared}",
        name(&a[2]),
        enc_ms / seconds,
    );
}
