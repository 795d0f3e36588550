//! The graphs another backend gets (issue #25): with `Backend::cpu_standard_ops`
//! every graph holds standard ggml ops only — none of the ops layer's CPU
//! kernels (custom ops), which would bounce to the CPU on a GPU — and
//! computes what the CPU kernels compute, within the tolerances a device
//! must meet: vocoder waveform SNR ≥ 60 dB with the F32 speech tokenizer,
//! teacher-forced talker logits cosine ≥ 0.9999 with an F32 model file and
//! code-predictor picks ≥ 99 % identical. Streamed == offline stays exact.

use std::sync::Arc;

use qwen3_tts::codec_decoder::{CodecDecoder, DecoderOptions, DecoderSession};
use qwen3_tts::ggml::{Backend, GgmlType};
use qwen3_tts::pipeline::{Session, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{
    check_vocoder_against, convert_tiny, convert_tiny_tokenizer, fixtures, forced_agreement,
    forced_run, serial, Dump,
};

/// The CPU backend's graphs held the ops layer's CPU kernels (so the count
/// works) and the standard-ops backend's none.
fn assert_kernels_only_on_the_cpu(cpu: &Backend, standard: &Backend) {
    assert!(
        cpu.custom_ops_built() > 0,
        "the CPU graphs use the CPU kernels"
    );
    assert_eq!(
        standard.custom_ops_built(),
        0,
        "a standard-ops graph holds a custom op"
    );
}

#[test]
fn vocoder_in_standard_ops_matches_the_cpu_kernels() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    // Another backend has no fast convolution: the direct layouts.
    let options = DecoderOptions {
        fast_convolution: false,
    };
    let decoder = Arc::new(CodecDecoder::load_with(&path, options).unwrap());
    let (cpu, standard) = (
        Arc::new(Backend::cpu(2)),
        Arc::new(Backend::cpu_standard_ops(2)),
    );
    let mut want_session = DecoderSession::new(decoder.clone(), cpu.clone());
    let mut session = DecoderSession::new(decoder, standard.clone());
    check_vocoder_against(
        "standard ops vs CPU kernels",
        &mut session,
        &mut want_session,
    );
    assert_kernels_only_on_the_cpu(&cpu, &standard);
}

#[test]
fn talker_and_code_predictor_in_standard_ops_match_the_cpu_kernels() {
    let _g = serial();
    let variant = "0.6B-Base";
    let dir = fixtures().join("reference/talker").join(variant);
    let dump = Dump::open(&dir.join("xvec.safetensors"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("xvec.json")).unwrap()).unwrap();
    let kw = &json["api_kwargs"];
    let req = Request {
        text: kw["text"].as_str().unwrap().into(),
        language: kw["language"].as_str().unwrap().into(),
        voice: Voice::XVector(dump.f32("x_vector")),
        instruct: None,
        non_streaming: kw["non_streaming_mode"].as_bool(),
    };
    let reference: Vec<Vec<u32>> = dump
        .i64("codes")
        .chunks(16)
        .map(|f| f.iter().map(|&c| c as u32).collect())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let model = Arc::new(TtsModel::load(convert_tiny(variant, GgmlType::F32, tmp.path())).unwrap());
    let run = |backend: &Arc<Backend>| {
        forced_run(
            &mut Session::new(model.clone(), backend.clone()),
            &req,
            &reference,
        )
    };
    let (cpu, standard) = (
        Arc::new(Backend::cpu(2)),
        Arc::new(Backend::cpu_standard_ops(2)),
    );
    let (want_codes, want_logits) = run(&cpu);
    let (codes, logits) = run(&standard);
    let (min_cosine, predictor_same) =
        forced_agreement((&codes, &logits), (&want_codes, &want_logits));
    eprintln!(
        "standard ops vs CPU kernels over {} frames: talker logits cosine ≥ {min_cosine:.7}, \
         code-predictor picks {:.2} % identical",
        reference.len(),
        100.0 * predictor_same
    );
    assert!(min_cosine >= 0.9999, "talker logits cosine {min_cosine}");
    assert!(predictor_same >= 0.99, "predictor picks {predictor_same}");
    assert_kernels_only_on_the_cpu(&cpu, &standard);
}
