//! The vocoder (speech-tokenizer decoder) against the reference (issue #4):
//! F32 SNR ≥ 60 dB and max |diff| ≤ 1e-4, F16 weights SNR ≥ 40 dB, the
//! reference's 300/25 chunking past 300 frames, and streaming in pieces equal
//! to the offline decode within 1e-5.

use std::sync::Arc;

use qwen3_tts::codec_decoder::{CodecDecoder, DecoderSession};
use qwen3_tts::ggml::GgmlType;
use qwen3_tts_tests::{
    convert_tiny_tokenizer, fixtures, frames_of, max_abs_diff, serial, snr_db, Dump,
};

fn dump(name: &str) -> Dump {
    Dump::open(&fixtures().join(format!("reference/codec/{name}.safetensors")))
}

fn decoder(ty: GgmlType, dir: &std::path::Path) -> DecoderSession {
    let model = CodecDecoder::load(convert_tiny_tokenizer(ty, dir)).expect("load decoder");
    Arc::new(model).session(2)
}

#[test]
fn decode_matches_reference_f32_and_f16() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let d = dump("decode_short");
    let frames = frames_of(&d.i64("codes"));
    let want = d.f32("wav");
    let got = decoder(GgmlType::F32, tmp.path()).decode(&frames).unwrap();
    assert_eq!(got.len(), frames.len() * 1920);
    let (snr, mad) = (snr_db(&got, &want), max_abs_diff(&got, &want));
    eprintln!("decode_short F32: SNR {snr:.1} dB, max |diff| {mad:.2e}");
    assert!(snr >= 60.0, "F32 SNR {snr:.1} dB < 60");
    assert!(mad <= 1e-4, "F32 max |diff| {mad:.2e} > 1e-4");

    let got = decoder(GgmlType::F16, tmp.path()).decode(&frames).unwrap();
    let snr = snr_db(&got, &want);
    eprintln!("decode_short F16: SNR {snr:.1} dB");
    assert!(snr >= 40.0, "F16 SNR {snr:.1} dB < 40");
}

#[test]
fn long_decode_follows_reference_chunking() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let d = dump("decode_long");
    let frames = frames_of(&d.i64("codes"));
    assert!(frames.len() > 300);
    let want = d.f32("wav");
    let mut dec = decoder(GgmlType::F32, tmp.path());
    let got = dec.decode(&frames).unwrap();
    let (snr, mad) = (snr_db(&got, &want), max_abs_diff(&got, &want));
    eprintln!("decode_long F32: SNR {snr:.1} dB, max |diff| {mad:.2e}");
    assert!(snr >= 60.0, "SNR {snr:.1} dB < 60");
    assert!(mad <= 1e-4, "max |diff| {mad:.2e} > 1e-4");
    // The second chunk really is the reference's, not a single full pass.
    let tail = d.f32("wav_fullpass_tail");
    let ours_tail = &got[got.len() - tail.len()..];
    assert!(max_abs_diff(ours_tail, &tail) > 1e-3);

    // Streaming in uneven pieces across the chunk boundary gives the same
    // samples, and so does another tile size.
    let mut streamed = Vec::new();
    let mut stream = dec.stream();
    let mut at = 0;
    for piece in [1usize, 2, 7, 13, 25, 40, 3, 200, 9, 30].iter().cycle() {
        if at == frames.len() {
            break;
        }
        let end = (at + piece).min(frames.len());
        let samples = stream.push(&frames[at..end]).unwrap();
        assert_eq!(samples.len(), (end - at) * 1920);
        streamed.extend(samples);
        at = end;
    }
    let mad = max_abs_diff(&streamed, &got);
    eprintln!("streamed vs offline: max |diff| {mad:.2e}");
    assert!(mad <= 1e-5, "streamed differs by {mad:.2e}");
    dec.set_tile_frames(11);
    let tiled = dec.decode(&frames).unwrap();
    assert!(max_abs_diff(&tiled, &got) <= 1e-5);
}

#[test]
fn bad_codes_and_files_are_errors() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut dec = decoder(GgmlType::F32, tmp.path());
    let err = dec.decode(&[vec![0; 15]]).unwrap_err().to_string();
    assert!(err.contains("15 codes"), "{err}");
    let mut frame = vec![0; 16];
    frame[3] = 256;
    let err = dec.decode(&[frame]).unwrap_err().to_string();
    assert!(err.contains("code 256"), "{err}");
    assert!(dec.decode(&[]).unwrap().is_empty());

    let tts = qwen3_tts_tests::convert_tiny("0.6B-Base", GgmlType::F32, tmp.path());
    let err = CodecDecoder::load(&tts)
        .err()
        .expect("TTS file as tokenizer")
        .to_string();
    assert!(err.contains("qwen3-tts-tokenizer"), "{err}");
    let err = CodecDecoder::load(tmp.path().join("missing.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.gguf"), "{err}");
}

#[test]
fn icl_decode_and_cut_match_reference() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let d = dump("icl_cut_0.6B-Base");
    let reference = frames_of(&d.i64("ref_codes"));
    let generated = frames_of(&d.i64("codes"));
    let all: Vec<Vec<u32>> = reference.iter().chain(&generated).cloned().collect();
    let want = d.f32("wav_full");
    let got = decoder(GgmlType::F32, tmp.path()).decode(&all).unwrap();
    let snr = snr_db(&got, &want);
    assert!(snr >= 60.0, "SNR {snr:.1} dB");
    let cut = qwen3_tts::pipeline::icl_cut(reference.len(), generated.len(), got.len());
    assert_eq!(cut as i64, d.i64("cut")[0]);
    // The formula, not 1920·T_ref: (1, 48) is one of the pairs one short.
    assert_eq!(qwen3_tts::pipeline::icl_cut(1, 48, 49 * 1920), 1919);
}

/// The fast convolution (issue #24) against the direct F32 convolution on
/// the same F32 file: waveform SNR ≥ 90 dB, short and past the reference's
/// 300-frame chunk; and with it a stream pushed in uneven pieces, or decoded
/// in other tiles, equals the offline decode bit for bit.
#[test]
fn fast_convolution_matches_direct_and_streams_exactly() {
    use qwen3_tts::codec_decoder::DecoderOptions;
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    let session = |fast_convolution| {
        let options = DecoderOptions { fast_convolution };
        Arc::new(CodecDecoder::load_with(&path, options).unwrap()).session(2)
    };
    let (mut fast, mut direct) = (session(true), session(false));
    for name in ["decode_short", "decode_long"] {
        let frames = frames_of(&dump(name).i64("codes"));
        let (got, want) = (
            fast.decode(&frames).unwrap(),
            direct.decode(&frames).unwrap(),
        );
        let snr = snr_db(&got, &want);
        eprintln!("{name}: fast vs direct F32 SNR {snr:.1} dB");
        assert!(snr >= 90.0, "{name}: fast vs direct SNR {snr:.1} dB < 90");
    }

    let frames = frames_of(&dump("decode_long").i64("codes"));
    let offline = fast.decode(&frames).unwrap();
    let mut streamed = Vec::new();
    let mut stream = fast.stream();
    let mut at = 0;
    for piece in [1usize, 2, 7, 13, 25, 40, 3, 200, 9, 30].iter().cycle() {
        if at == frames.len() {
            break;
        }
        let end = (at + piece).min(frames.len());
        streamed.extend(stream.push(&frames[at..end]).unwrap());
        at = end;
    }
    assert!(streamed == offline, "streamed differs from offline");
    fast.set_tile_frames(11);
    assert!(
        fast.decode(&frames).unwrap() == offline,
        "tiles of 11 differ"
    );
}
