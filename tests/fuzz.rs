//! Fuzz targets: what a stranger's bytes go through, by the programs' own
//! paths. Each target takes one input and must return (an `Err` is fine)
//! without panicking, aborting inside ggml or hanging. The cargo-fuzz
//! targets in `fuzz/`, the stable mutation driver (`examples/fuzz.rs`,
//! `scripts/fuzz.sh`) and the corpus replay test (`tests/fuzz_corpus.rs`)
//! all call [`run`].
//!
//! A model or tokenizer file that loads is also run (a prompt and two
//! frames; two frames through the vocoder): a value that passes the load
//! checks but breaks a graph must be found too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::codec_encoder::CodecEncoder;
use qwen3_tts::config::TtsConfig;
use qwen3_tts::ggml::{Backend, GgmlType};
use qwen3_tts::gguf_schema::ARCH_TTS;
use qwen3_tts::model_file::{GgufFile, Overwrite};
use qwen3_tts::pipeline::{GenerateOptions, Session, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::voice::VoicePrompt;

/// The targets, by name.
pub const TARGETS: [&str; 7] = [
    "gguf_model",
    "gguf_tokenizer",
    "convert_config",
    "convert_safetensors",
    "ref_audio",
    "qvoice",
    "text",
];

/// A set of fuzz targets for the driver ([`crate::fuzz_driver`]).
pub struct Suite {
    pub targets: &'static [&'static str],
    /// The seed input of a target.
    pub seed: fn(&str) -> Vec<u8>,
    /// Runs one input through a target.
    pub run: fn(&str, &[u8]),
}

/// The library's targets.
pub const SUITE: Suite = Suite {
    targets: &TARGETS,
    seed,
    run,
};

/// The files the targets start from (built once per process).
struct Base {
    dir: tempfile::TempDir,
    /// Tiny CustomVoice model with a slim text vocabulary (F32), and the
    /// speech tokenizer (F16).
    tts: PathBuf,
    tokenizer: PathBuf,
    /// The tiny Base model (for `.qvoice` checks).
    base_config: TtsConfig,
    model: Arc<TtsModel>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let full = crate::convert_tiny("0.6B-CustomVoice", GgmlType::F32, dir.path());
        let tts = crate::slim_tts(&full, &dir.path().join("slim.gguf"));
        let tokenizer = crate::convert_tiny_tokenizer(GgmlType::F16, dir.path());
        let base_dir = dir.path().join("base");
        std::fs::create_dir_all(&base_dir).expect("dir");
        let base_tts = crate::convert_tiny("0.6B-Base", GgmlType::F32, &base_dir);
        let file = GgufFile::open_arch(&base_tts, ARCH_TTS).expect("Base model");
        let base_config = TtsConfig::from_gguf(&file).expect("Base config");
        let model = Arc::new(TtsModel::load(&tts).expect("slim model"));
        Base {
            dir,
            tts,
            tokenizer,
            base_config,
            model,
        }
    })
}

/// A seed input for `target`: the file it mutates.
pub fn seed(target: &str) -> Vec<u8> {
    let b = base();
    let read = |p: &Path| std::fs::read(p).expect("seed file");
    let checkpoint = crate::tiny_checkpoint("0.6B-CustomVoice");
    match target {
        "gguf_model" => read(&b.tts),
        "gguf_tokenizer" => read(&b.tokenizer),
        "convert_config" => read(&checkpoint.join("config.json")),
        "convert_safetensors" => read(&checkpoint.join("model.safetensors")),
        "ref_audio" => read(&crate::fixtures().join("audio/ref_24k.wav")),
        "qvoice" => {
            let v = VoicePrompt {
                x_vector: (0..b.base_config.talker.hidden)
                    .map(|i| (i as f32 * 0.37).sin())
                    .collect(),
                icl: Some((vec![vec![1; 16], vec![2; 16]], "Hello.".into())),
                model_size: b.base_config.model_size.as_str().to_string(),
                model_name: "tiny".into(),
            };
            let path = b.dir.path().join("seed.qvoice");
            v.save(&path, Overwrite::Replace).expect("save voice");
            read(&path)
        }
        "text" => "Hello there. 今天天气很好。 Dr. Smith paid $3.14!"
            .as_bytes()
            .to_vec(),
        other => panic!("no fuzz target {other}"),
    }
}

/// A per-process scratch file for an input.
fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = base()
        .dir
        .path()
        .join(format!("input-{}-{name}", std::process::id()));
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// Runs one input through `target`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "gguf_model" => gguf_model(data),
        "gguf_tokenizer" => gguf_tokenizer(data),
        "convert_config" => convert(data, "config.json"),
        "convert_safetensors" => convert(data, "model.safetensors"),
        "ref_audio" => ref_audio(data),
        "qvoice" => qvoice(data),
        "text" => text(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// A loaded model speaks: a prompt and two frames.
fn speak(model: Arc<TtsModel>, text: &str) {
    let cfg = &model.config;
    let voice = match cfg.speakers.first() {
        Some(s) => Voice::Speaker(s.name.clone()),
        None => Voice::None,
    };
    let req = Request {
        text: text.into(),
        language: "auto".into(),
        voice,
        instruct: None,
        non_streaming: None,
    };
    let mut opts = GenerateOptions::from_config(cfg).greedy();
    opts.set_max_new_tokens(3);
    let mut session = Session::new(model, Arc::new(Backend::cpu(1)));
    if let Ok(prompt) = session.prompt(&req) {
        let _ = session.generate(&prompt, &opts, 0, |_, _| {});
    }
}

fn gguf_model(data: &[u8]) {
    let path = scratch("model.gguf", data);
    // `--list-voices` reads the metadata only.
    if let Ok(file) = GgufFile::open_arch(&path, ARCH_TTS) {
        let _ = TtsConfig::from_gguf(&file);
    }
    if let Ok(model) = TtsModel::load(&path) {
        speak(Arc::new(model), "Hi there.");
    }
}

fn gguf_tokenizer(data: &[u8]) {
    let path = scratch("tokenizer.gguf", data);
    if let Ok(decoder) = CodecDecoder::load(&path) {
        let decoder = Arc::new(decoder);
        let n = decoder.config.num_quantizers;
        let mut session =
            qwen3_tts::codec_decoder::DecoderSession::new(decoder, Arc::new(Backend::cpu(1)));
        let _ = session.decode(&[vec![0; n], vec![1; n]]);
    }
    if let Ok(encoder) = CodecEncoder::load(&path, 1) {
        let clip: Vec<f32> = (0..24_000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let _ = encoder.encode(&clip);
    }
}

/// A checkpoint directory of links to the tiny CustomVoice fixture's
/// files, with `file` replaced by `data`, converted; the result loaded and
/// run.
fn convert(data: &[u8], file: &str) {
    let b = base();
    let dir = b
        .dir
        .path()
        .join(format!("checkpoint-{}", std::process::id()));
    let out = b
        .dir
        .path()
        .join(format!("converted-{}", std::process::id()));
    let fixture = crate::tiny_checkpoint("0.6B-CustomVoice");
    if !dir.exists() {
        std::fs::create_dir_all(&dir).expect("dir");
        for entry in std::fs::read_dir(&fixture).expect("fixture").flatten() {
            let name = entry.file_name();
            link(&entry.path(), &dir.join(&name));
        }
    }
    let target = dir.join(file);
    let _ = std::fs::remove_file(&target);
    std::fs::write(&target, data).expect("input");
    let opts = qwen3_tts_convert::Options {
        input: dir.clone(),
        outdir: out.clone(),
        ty: GgmlType::F32,
        tokenizer_ty: GgmlType::F16,
        overwrite: Overwrite::Replace,
        parts: qwen3_tts_convert::Parts::TtsOnly,
    };
    let converted = qwen3_tts_convert::convert(&opts);
    // Put the fixture's file back for the other target.
    let _ = std::fs::remove_file(&target);
    link(&fixture.join(file), &target);
    if converted.is_ok() {
        if let Ok(model) = TtsModel::load(out.join("tts-f32.gguf")) {
            speak(Arc::new(model), "Hi there.");
        }
    }
}

fn link(src: &Path, dst: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(src, dst).expect("symlink");
    #[cfg(not(unix))]
    std::fs::copy(src, dst).map(drop).expect("copy");
}

fn ref_audio(data: &[u8]) {
    let path = scratch("ref.wav", data);
    for rate in [16_000, 24_000] {
        let _ = qwen3_tts::audio::load_resampled_with_limit(&path, rate, 60.0);
    }
}

fn qvoice(data: &[u8]) {
    let path = scratch("voice.qvoice", data);
    if let Ok(v) = VoicePrompt::load(&path) {
        let _ = v.check_model(&base().base_config, &path);
        let _ = v.voice(false);
    }
}

fn text(data: &[u8]) {
    let b = base();
    let text = String::from_utf8_lossy(data);
    let _ = b.model.tokenizer.encode(&text);
    let parts = qwen3_tts::long_text::split_text(&text, 40);
    // Every part speaks (a cut never leaves nothing to say).
    for part in &parts {
        assert!(
            !qwen3_tts::prompt::has_speech(&text) || qwen3_tts::prompt::has_speech(&part.text),
            "a part without speech: {part:?} of {text:?}"
        );
    }
    let session = Session::new(b.model.clone(), Arc::new(Backend::cpu(1)));
    for language in ["auto", "chinese"] {
        let req = Request {
            text: text.to_string(),
            language: language.into(),
            voice: Voice::Speaker("ryan".into()),
            instruct: None,
            non_streaming: None,
        };
        if qwen3_tts::prompt::validate(&b.model.config, &req).is_ok() {
            let _ = session.prompt(&req);
        }
    }
}

/// Inputs of `target` in `dir` (a corpus), sorted by name.
pub fn corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect()
}

/// Where the committed corpus of `target` lives.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}
