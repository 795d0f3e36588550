//! The speech-tokenizer encoder against the reference (issue #5): codes of
//! the 24 kHz reference clip ≥ 99.5 % identical over all 16 codebooks.

use qwen3_tts::codec_encoder::CodecEncoder;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts_tests::{convert_tiny_tokenizer, fixtures, frames_of, serial, Dump};

#[test]
fn codes_match_reference() {
    let _g = serial();
    let d = Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors"));
    let samples = d.f32("input_samples");
    let want = frames_of(&d.i64("codes"));
    let tmp = tempfile::tempdir().unwrap();
    let enc = CodecEncoder::load(convert_tiny_tokenizer(GgmlType::F32, tmp.path()), 2).unwrap();
    let got = enc.encode(&samples).unwrap();
    assert_eq!(got.len(), want.len(), "frames");
    let total = want.len() * 16;
    let same = got
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .filter(|(a, b)| a == b)
        .count();
    let per_book: Vec<usize> = (0..16)
        .map(|q| got.iter().zip(&want).filter(|(a, b)| a[q] == b[q]).count())
        .collect();
    eprintln!(
        "encoder codes: {same}/{total} identical ({:.2} %); per codebook {per_book:?}",
        100.0 * same as f64 / total as f64
    );
    assert!(same as f64 >= 0.995 * total as f64);
    assert!(enc.encode(&[]).is_err());
}
