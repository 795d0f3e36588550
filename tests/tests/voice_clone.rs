//! Voice cloning from reference audio end to end (issue #5): x-vector and
//! ICL modes from the reference clip give greedy codes identical to the
//! reference pipeline at F32, the ICL waveform matches the reference's cut
//! decode, and a saved voice prompt reproduces the direct run bit for bit.

use qwen3_tts::ggml::GgmlType;
use qwen3_tts::model_file::Overwrite;
use qwen3_tts::pipeline::{GenerateOptions, Synthesizer};
use qwen3_tts::prompt::Request;
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts_tests::{
    convert_tiny, convert_tiny_tokenizer, cosine, fixtures, frames_of, serial, snr_db, Dump,
};

fn synthesizer(dir: &std::path::Path) -> Synthesizer {
    let tts = convert_tiny("0.6B-Base", GgmlType::F32, dir);
    let tok = convert_tiny_tokenizer(GgmlType::F32, dir);
    Synthesizer::load(tts, tok, 2).unwrap()
}

fn case(name: &str) -> (serde_json::Value, Dump) {
    let dir = fixtures().join("reference/talker/0.6B-Base");
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (json, Dump::open(&dir.join(format!("{name}.safetensors"))))
}

fn forced(synth: &Synthesizer, frames: usize) -> GenerateOptions {
    let mut o = GenerateOptions::from_config(&synth.model.config).greedy();
    o.set_max_new_tokens(frames + 1);
    o.min_new_tokens = frames + 1;
    o
}

#[test]
fn icl_and_xvector_clones_match_reference() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut synth = synthesizer(tmp.path());
    let samples =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");

    for name in ["icl", "xvec"] {
        let (json, dump) = case(name);
        let kw = &json["api_kwargs"];
        let ref_text = kw["ref_text"].as_str();
        let x_only = kw["x_vector_only_mode"].as_bool().unwrap();
        let voice = synth.clone_voice(&samples, ref_text).unwrap();
        let cos = cosine(&voice.x_vector, &dump.f32("x_vector"));
        assert!(cos >= 0.99999, "{name}: x-vector cosine {cos}");
        if let Some((codes, _)) = &voice.icl {
            assert_eq!(
                codes,
                &frames_of(&dump.i64("ref_codes")),
                "{name}: reference codes"
            );
        }
        let want = frames_of(&dump.i64("codes"));
        let req = Request {
            text: kw["text"].as_str().unwrap().into(),
            language: kw["language"].as_str().unwrap().into(),
            voice: voice.voice(x_only),
            instruct: None,
            non_streaming: None,
        };
        let out = synth
            .synthesize(&req, &forced(&synth, want.len()), |_| {})
            .unwrap();
        let same = out.frames.iter().zip(&want).filter(|(a, b)| a == b).count();
        eprintln!(
            "{name}: {same}/{} frames identical, x-vector cosine {cos:.8}",
            want.len()
        );
        assert_eq!(out.frames, want, "{name}: greedy codes");
        assert_eq!(out.samples.len(), want.len() * 1920);
        if name == "icl" {
            let d = Dump::open(&fixtures().join("reference/codec/icl_cut_0.6B-Base.safetensors"));
            let full = d.f32("wav_full");
            let cut = d.i64("cut")[0] as usize;
            let snr = snr_db(&out.samples, &full[cut..]);
            eprintln!("icl: waveform SNR {snr:.1} dB");
            assert!(snr >= 60.0, "ICL waveform SNR {snr:.1}");
        }
    }
}

#[test]
fn saved_voice_reproduces_the_direct_run() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut synth = synthesizer(tmp.path());
    let samples =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");
    let voice = synth.clone_voice(&samples, Some("A reference.")).unwrap();
    let path = tmp.path().join("voice.qvoice");
    voice.save(&path, Overwrite::Refuse).unwrap();
    assert!(
        voice.save(&path, Overwrite::Refuse).is_err(),
        "refuses to overwrite"
    );
    let loaded = VoicePrompt::load(&path).unwrap();
    assert_eq!(loaded, voice);

    let mut opts = GenerateOptions::from_config(&synth.model.config);
    opts.seed = 11;
    opts.set_max_new_tokens(21);
    let req = |v: &VoicePrompt| Request {
        text: "Sampling with a seed.".into(),
        language: "auto".into(),
        voice: v.voice(false),
        instruct: None,
        non_streaming: None,
    };
    let a = synth.synthesize(&req(&voice), &opts, |_| {}).unwrap();
    let b = synth.synthesize(&req(&loaded), &opts, |_| {}).unwrap();
    assert_eq!(a.frames, b.frames);
    assert_eq!(a.samples, b.samples, "bit-identical audio");

    // A voice for another model size is refused with a clear error.
    let mut other = voice.clone();
    other.model_size = "1b7".into();
    other.x_vector.push(0.0);
    let err = other
        .check_model(&synth.model.config, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1b7") && err.contains("0b6"), "{err}");
    // Too short a clip and a model without a speaker encoder are errors.
    let err = synth
        .clone_voice(&samples[..2400], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0.10 s"), "{err}");
}
