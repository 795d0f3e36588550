//! What each quantisation type costs in accuracy, measured against the F32
//! files of the same checkpoint (used by `scripts/quality_report.sh`).
//!
//! ```text
//! quality_report --f32 TTS-F32.gguf --f32-tokenizer TOK-F32.gguf --tokenizer TOK-F16.gguf \
//!     [--ref-audio WAV] [--frames 50] [--threads 2] [--seed 1] [--kv-cache f32|f16] \
//!     TYPE=TTS.gguf,TOKENIZER.gguf ...
//! ```
//!
//! The F32 model speaks a sentence (sampled, so that the history is varied;
//! Base models clone `--ref-audio` by x-vector, CustomVoice models use their
//! first speaker). Then every file, the F32 one included, is fed those
//! frames back (teacher forcing) and its greedy picks and raw logits are
//! compared step by step with the F32 file's:
//! - talker logits cosine (mean and minimum over the steps),
//! - code 0 top-1 agreement,
//! - code predictor agreement (codes 1..15, each pass fed the given codes),
//! - speech SNR: the waveform of its picks (decoded by `--tokenizer`, the
//!   F16 file users run) against the F32 file's picks decoded at F32,
//! - vocoder SNR: the sentence's frames decoded by the speech-tokenizer
//!   file of that type against the F32 one,
//! - the speaker encoder's x-vector of the reference clip, cosine (Base).
//!
//! The F32 file runs with an F32 KV cache; the others with the default
//! (F32) unless `--kv-cache` says otherwise.
//! Prints a Markdown table, one row per type.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qwen3_tts::audio;
use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::pipeline::{GenerateOptions, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{cosine, snr_db, ExampleArgs};

const TEXT: &str = "The quick brown fox jumps over the lazy dog, and then it runs far away.";

/// One file's teacher-forced outputs.
struct Forced {
    picks: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
}

fn main() {
    let args = ExampleArgs::from_env();
    let f32_tts = PathBuf::from(args.get("f32").expect("--f32 TTS-F32.gguf"));
    let f32_tok = PathBuf::from(args.get("f32-tokenizer").expect("--f32-tokenizer TOK.gguf"));
    let shipped_tok = PathBuf::from(args.get("tokenizer").expect("--tokenizer TOK-F16.gguf"));
    let frames_wanted = args.num("frames", 50);
    let threads = args.num("threads", 2);
    let seed = args.num("seed", 1) as u64;
    let ref_audio = args.get("ref-audio").map(PathBuf::from);
    let kv_cache = args
        .get("kv-cache")
        .map(|t| qwen3_tts::ggml::GgmlType::parse(&t).unwrap_or_else(|| panic!("--kv-cache {t}")));
    let candidates: Vec<(String, PathBuf, PathBuf)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (ty, files) = a.split_once('=')?;
            let (tts, tok) = files.split_once(',').expect("TYPE=TTS.gguf,TOKENIZER.gguf");
            Some((ty.to_string(), tts.into(), tok.into()))
        })
        .collect();

    let clip = ref_audio.map(|p| {
        audio::load_resampled(&p, 24_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .samples
    });

    // The F32 model's sentence, and its own teacher-forced picks.
    let reference = Arc::new(TtsModel::load(&f32_tts).unwrap_or_else(|e| panic!("{e}")));
    let mut session = reference.session(threads);
    session.set_kv_type(qwen3_tts::ggml::GgmlType::F32).unwrap();
    let x_vector = match (&clip, reference.cloning()) {
        (Some(clip), Ok(_)) => Some(session.x_vector(clip).unwrap_or_else(|e| panic!("{e}"))),
        _ => None,
    };
    let voice = match &x_vector {
        Some(x) => Voice::XVector(x.clone()),
        None => match reference.config.speakers.first() {
            Some(s) => Voice::Speaker(s.name.clone()),
            None => Voice::None,
        },
    };
    let req = Request {
        text: TEXT.into(),
        language: "english".into(),
        voice,
        instruct: None,
        non_streaming: None,
    };
    let mut sampled = GenerateOptions::from_config(&reference.config);
    sampled.seed = seed;
    sampled.set_max_new_tokens(frames_wanted + 1);
    sampled.min_new_tokens = frames_wanted;
    let prompt = session.prompt(&req).unwrap_or_else(|e| panic!("{e}"));
    let (frames, _) = session
        .generate(&prompt, &sampled, 0, |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let greedy = GenerateOptions::from_config(&reference.config).greedy();
    let forced = |session: &mut qwen3_tts::pipeline::Session| {
        let prompt = session.prompt(&req).unwrap_or_else(|e| panic!("{e}"));
        let (picks, trace) = session
            .predict_forced_traced(&prompt, &greedy, &frames, frames.len())
            .unwrap_or_else(|e| panic!("{e}"));
        Forced {
            picks,
            logits: trace.talker_logits,
        }
    };
    let want = forced(&mut session);
    drop(session);
    drop(reference);
    let decode = |tokenizer: &Path, frames: &[Vec<u32>]| {
        CodecDecoder::load(tokenizer)
            .map(|d| Arc::new(d).session(threads))
            .and_then(|mut d| d.decode(frames))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let want_wav = decode(&f32_tok, &frames);
    let want_speech = decode(&f32_tok, &want.picks);
    eprintln!(
        "reference: {} frames of {} ({})",
        frames.len(),
        f32_tts.display(),
        if x_vector.is_some() {
            "x-vector clone"
        } else {
            "preset speaker"
        }
    );

    println!(
        "| type | KV cache | TTS file MB | talker logits cosine (mean / min) | code 0 top-1 | \
         code predictor | speech SNR dB | vocoder SNR dB | x-vector cosine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (ty, tts, tok) in &candidates {
        let model = Arc::new(TtsModel::load(tts).unwrap_or_else(|e| panic!("{e}")));
        let mut session = model.session(threads);
        if let Some(ty) = kv_cache {
            session.set_kv_type(ty).unwrap_or_else(|e| panic!("{e}"));
        }
        let kv = session.kv_type().name();
        let got = forced(&mut session);
        let cosines: Vec<f64> = got
            .logits
            .iter()
            .zip(&want.logits)
            .map(|(a, b)| cosine(a, b))
            .collect();
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        let pairs = || got.picks.iter().zip(&want.picks);
        let code0 = pairs().filter(|(a, b)| a[0] == b[0]).count() as f64 / pairs().count() as f64;
        let (same, all) = pairs().fold((0, 0), |(s, n), (a, b)| {
            let same = a[1..].iter().zip(&b[1..]).filter(|(x, y)| x == y).count();
            (s + same, n + a.len() - 1)
        });
        let x_cos = match (&clip, &x_vector) {
            (Some(clip), Some(want)) => {
                format!("{:.7}", cosine(&session.x_vector(clip).unwrap(), want))
            }
            _ => "–".into(),
        };
        drop(session);
        drop(model);
        let speech = snr(&decode(&shipped_tok, &got.picks), &want_speech);
        let vocoder = snr(&decode(tok, &frames), &want_wav);
        println!(
            "| {ty} | {kv} | {:.0} | {mean:.6} / {min:.6} | {:.1} % | {:.1} % | {speech} | {vocoder} | {x_cos} |",
            megabytes(tts),
            100.0 * code0,
            100.0 * same as f64 / all as f64,
        );
    }
}

/// SNR in dB, "exact" for identical waveforms.
fn snr(got: &[f32], want: &[f32]) -> String {
    match got == want {
        true => "exact".into(),
        false => format!("{:.1}", snr_db(got, want)),
    }
}

fn megabytes(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / 1e6)
}
