//! One row of `scripts/bench.sh`: loads the model files, clones a voice (or
//! picks a preset speaker), generates exactly `--frames` frames greedily
//! (EOS suppressed) and vocodes them, `--runs` times, each from a fresh load.
//! Prints one JSON object with the median and min of every stage and the
//! peak RSS of a run (VmHWM, reset before each run).
//!
//!     bench_e2e --tts F --tokenizer F --mode xvec|icl|speaker --frames N --threads T --runs R \
//!         [--ref-audio WAV --ref-text TEXT] [--speaker NAME] [--text TEXT] [--decode-only 1] \
//!         [--kv-cache f32|f16] [--device auto|cpu|vulkan[:N]|cuda[:N]|metal]
//!
//! `--decode-only 1` skips the vocoder (talker and code predictor only);
//! `--device` as for `qwen3-tts-run` (default cpu), named in the JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use qwen3_tts::audio;
use qwen3_tts::config::CodecDecoderConfig;
use qwen3_tts::ggml::device::DeviceInfo;
use qwen3_tts::model_file::GgufFile;
use qwen3_tts::pipeline::{GenerateOptions, Synthesizer, Timings};
use qwen3_tts::prompt::{Request, Voice};

struct Args {
    tts: PathBuf,
    tokenizer: PathBuf,
    mode: String,
    frames: usize,
    threads: usize,
    runs: usize,
    ref_audio: PathBuf,
    ref_text: String,
    speaker: Option<String>,
    text: String,
    decode_only: bool,
    kv_cache: Option<qwen3_tts::ggml::GgmlType>,
    device: Option<DeviceInfo>,
}

fn parse() -> Args {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(key) = k.strip_prefix("--") else {
            panic!("unexpected argument {k:?}")
        };
        let v = it.next().unwrap_or_else(|| panic!("--{key} needs a value"));
        kv.insert(key.to_string(), v);
    }
    let get = |k: &str| kv.get(k).cloned();
    let need = |k: &str| get(k).unwrap_or_else(|| panic!("--{k} is required"));
    let num = |k: &str, d: usize| get(k).map_or(d, |v| v.parse().expect(k));
    Args {
        tts: need("tts").into(),
        tokenizer: need("tokenizer").into(),
        mode: need("mode"),
        frames: num("frames", 50),
        threads: num("threads", 2),
        runs: num("runs", 3),
        ref_audio: get("ref-audio")
            .unwrap_or("tests/fixtures/audio/ref_24k.wav".into())
            .into(),
        ref_text: get("ref-text").unwrap_or("Okay. Yeah. I resent you. I love you.".into()),
        speaker: get("speaker"),
        text: get("text")
            .unwrap_or("Hello there, this is a benchmark of the speech engine.".into()),
        decode_only: get("decode-only").is_some_and(|v| v == "1"),
        kv_cache: get("kv-cache")
            .map(|t| qwen3_tts::talker::parse_kv_type(&t).unwrap_or_else(|e| panic!("{e}"))),
        device: qwen3_tts_tests::device_arg(get("device").as_deref()).0,
    }
}

/// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Multiply-adds of the vocoder per frame ×2: every weight matrix or conv
/// kernel of `dec.*` times the steps per frame at which it is applied
/// (transposed convs at their input rate). Attention scores (72-frame window)
/// and elementwise ops are left out (< 1 %).
fn vocoder_flops_per_frame(path: &std::path::Path) -> f64 {
    let file = GgufFile::open(path).expect("tokenizer file");
    let cfg = CodecDecoderConfig::from_gguf(&file).expect("decoder config");
    let up: usize = cfg.upsampling_ratios.iter().product();
    // steps per frame after the first `i` waveform blocks
    let rate_after = |i: usize| up * cfg.upsample_rates[..i].iter().product::<usize>();
    let blocks = cfg.upsample_rates.len();
    let mut flops = 0.0;
    for t in file.tensors() {
        let n = &t.name;
        let numel: i64 = t.ne.iter().product();
        if !n.starts_with("dec.") || t.ne.len() < 2 || n.contains("codebook") {
            continue;
        }
        let parts: Vec<&str> = n.split('.').collect();
        let rate = if n.starts_with("dec.upsample.") {
            let u: usize = parts[2].parse().expect("stage");
            let input: usize = cfg.upsampling_ratios[..u].iter().product();
            // `u.0` is the transposed conv (input rate), `u.1` the ConvNeXt block
            if parts[3] == "0" {
                input
            } else {
                input * cfg.upsampling_ratios[u]
            }
        } else if n.starts_with("dec.dec.") {
            let i: usize = parts[2].parse().expect("block");
            match i {
                0 => up,
                i if i <= blocks && parts[4] == "1" => rate_after(i - 1),
                i if i <= blocks => rate_after(i),
                _ => cfg.samples_per_frame,
            }
        } else {
            1 // pre-conv, pre-transformer, quantizer projections: frame rate
        };
        flops += 2.0 * numel as f64 * rate as f64;
    }
    flops
}

fn run_once(a: &Args, samples: &[f32]) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    let t0 = Instant::now();
    let mut synth =
        Synthesizer::load_on(&a.tts, &a.tokenizer, a.threads, a.device.as_ref()).expect("load");
    if let Some(ty) = a.kv_cache {
        synth.session().set_kv_type(ty).expect("--kv-cache");
    }
    let load = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let voice = match a.mode.as_str() {
        "xvec" => synth.clone_voice(samples, None).expect("clone").voice(true),
        "icl" => synth
            .clone_voice(samples, Some(&a.ref_text))
            .expect("clone")
            .voice(false),
        "speaker" => Voice::Speaker(a.speaker.clone().unwrap_or_else(|| {
            let speakers = &synth.model.config.speakers;
            speakers.first().expect("a CustomVoice model").name.clone()
        })),
        m => panic!("unknown --mode {m}"),
    };
    let ref_encode = t1.elapsed().as_secs_f64();
    let req = Request {
        text: a.text.clone(),
        language: "English".into(),
        voice,
        instruct: None,
        non_streaming: None,
    };
    let mut opts = GenerateOptions::from_config(&synth.model.config).greedy();
    opts.set_max_new_tokens(a.frames + 1);
    opts.min_new_tokens = a.frames + 1;
    let (t, audio_s) = if a.decode_only {
        // Talker + code predictor only (profiling the per-frame path).
        let t1 = Instant::now();
        let prompt = synth.session().prompt(&req).expect("prompt");
        let prompt_s = t1.elapsed().as_secs_f64();
        let (frames, trace) = synth
            .session()
            .generate(&prompt, &opts, 0, |_, _| {})
            .expect("generate");
        assert_eq!(frames.len(), a.frames, "forced frame count");
        let timings = Timings {
            prompt: prompt_s,
            decode: trace.times,
            ..Default::default()
        };
        (timings, a.frames as f64 * 0.08)
    } else {
        let out = synth.synthesize(&req, &opts, |_| {}).expect("synthesize");
        assert_eq!(out.frames.len(), a.frames, "forced frame count");
        (out.timings, out.seconds())
    };
    let total = t0.elapsed().as_secs_f64();
    let d = t.decode;
    // ICL vocodes the reference frames too: rate per decoded second.
    let decoded_frames = match &req.voice {
        Voice::Icl { ref_codes, .. } => ref_codes.len() + a.frames,
        _ => a.frames,
    };
    let decoded_s = decoded_frames as f64 * 0.08;
    let after_load = total - load;
    m.insert("load_ms", load * 1e3);
    m.insert("ref_encode_ms", ref_encode * 1e3);
    m.insert("prompt_ms", t.prompt * 1e3);
    m.insert("prefill_ms", d.prefill * 1e3);
    m.insert(
        "talker_ms_per_frame",
        d.talker * 1e3 / d.talker_steps.max(1) as f64,
    );
    m.insert(
        "cp_ms_per_frame",
        d.predictor * 1e3 / d.predictor_frames.max(1) as f64,
    );
    m.insert(
        "talker_cp_ms_per_frame",
        (d.talker + d.predictor) * 1e3 / a.frames as f64,
    );
    m.insert("vocoder_ms", t.vocode * 1e3);
    m.insert("vocoder_ms_per_audio_s", t.vocode * 1e3 / decoded_s);
    m.insert(
        "first_frame_ms",
        (ref_encode + t.prompt + d.first_frame) * 1e3,
    );
    m.insert("first_frame_after_prompt_ms", d.first_frame * 1e3);
    m.insert("total_ms", after_load * 1e3);
    m.insert("audio_s", audio_s);
    m.insert("rtf", after_load / audio_s);
    m.insert("rtf_with_load", total / audio_s);
    m
}

fn main() {
    let a = parse();
    let samples = if a.mode == "speaker" {
        Vec::new()
    } else {
        audio::load_resampled(&a.ref_audio, 24000)
            .expect("reference audio")
            .samples
    };
    let mut runs = Vec::new();
    let mut peak: f64 = 0.0;
    for _ in 0..a.runs {
        reset_peak_rss();
        runs.push(run_once(&a, &samples));
        peak = peak.max(qwen3_tts_tests::peak_rss_mb());
    }
    let mut metrics = serde_json::Map::new();
    for key in runs[0].keys() {
        let mut v: Vec<f64> = runs.iter().map(|r| r[key]).collect();
        v.sort_by(f64::total_cmp);
        metrics.insert(
            key.to_string(),
            serde_json::json!({"median": v[v.len() / 2], "min": v[0]}),
        );
    }
    let gflop_per_audio_s = vocoder_flops_per_frame(&a.tokenizer) / 0.08 / 1e9;
    let row = serde_json::json!({
        "vocoder_gflop_per_audio_s": gflop_per_audio_s,
        "tts": a.tts, "tokenizer": a.tokenizer, "mode": a.mode, "frames": a.frames,
        "threads": a.threads, "runs": a.runs, "peak_rss_mb": peak, "metrics": metrics,
        "device": a.device.as_ref().map_or("cpu".to_string(), |d| d.name.clone()),
    });
    println!("{row}");
}
