//! The speaker encoder against the reference (issue #5): log-mel max |diff|
//! ≤ 1e-4 (against the front end's float64 evaluation) and x-vector cosine
//! ≥ 0.99999 at F32 on the tiny Base models.

use qwen3_tts::ggml::GgmlType;
use std::sync::Arc;

use qwen3_tts::ggml::Backend;
use qwen3_tts::pipeline::TtsModel;
use qwen3_tts_tests::{convert_tiny, cosine, fixtures, max_abs_diff, serial, Dump};

fn dump(name: &str) -> Dump {
    Dump::open(&fixtures().join(format!("reference/codec/{name}.safetensors")))
}

#[test]
fn mel_and_xvector_match_reference() {
    let _g = serial();
    let samples = dump("encode_ref").f32("input_samples");
    let mel64 = dump("speaker_mel_f64").f32("mel_f64");
    let backend = Arc::new(Backend::cpu(2));
    for variant in ["0.6B-Base", "1.7B-Base"] {
        let d = dump(&format!("speaker_tiny-{variant}"));
        let tmp = tempfile::tempdir().unwrap();
        let model = TtsModel::load(convert_tiny(variant, GgmlType::F32, tmp.path())).unwrap();
        let enc = model
            .speaker_encoder
            .as_ref()
            .expect("Base has a speaker encoder");
        let mel = enc.mel(&samples).unwrap();
        let want = d.f32("mel");
        assert_eq!(mel.len(), want.len(), "{variant}: frame count");
        // The mel math is held to 1e-4 against its float64 evaluation; the
        // package's own float32 output differs from that by up to 5.6e-4 near
        // the log floor (FFT rounding), so against it the bound is that noise.
        let exact = max_abs_diff(&mel, &mel64);
        let package = max_abs_diff(&mel, &want);
        let xvec = enc.embed(&backend, &samples).unwrap();
        let want_x = d.f32("xvector");
        let cos = cosine(&xvec, &want_x);
        eprintln!(
            "{variant}: mel max |diff| {exact:.2e} (vs float64), {package:.2e} (vs the package's f32); \
             x-vector cosine {cos:.8}"
        );
        assert!(
            exact <= 1e-4,
            "{variant}: mel max |diff| {exact:.2e} vs float64"
        );
        assert!(
            package <= 1e-3,
            "{variant}: mel max |diff| {package:.2e} vs float32"
        );
        assert!(cos >= 0.99999, "{variant}: x-vector cosine {cos}");
        assert!(
            max_abs_diff(&xvec, &want_x) <= 1e-3 * want_x.iter().fold(0f32, |m, v| m.max(v.abs()))
        );
    }
}

#[test]
fn speaker_encoder_only_on_base_and_short_audio_is_an_error() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cv = TtsModel::load(convert_tiny("0.6B-CustomVoice", GgmlType::F32, tmp.path())).unwrap();
    assert!(cv.speaker_encoder.is_none());
    let tmp2 = tempfile::tempdir().unwrap(); // convert_tiny caches by directory and type
    let base = TtsModel::load(convert_tiny("0.6B-Base", GgmlType::F32, tmp2.path())).unwrap();
    let enc = base.speaker_encoder.as_ref().unwrap();
    let backend = Arc::new(Backend::cpu(1));
    let err = enc.embed(&backend, &[0.1; 300]).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    let err = enc.embed(&backend, &[0.1; 1000]).unwrap_err().to_string();
    assert!(err.contains("mel frames"), "{err}");
}
