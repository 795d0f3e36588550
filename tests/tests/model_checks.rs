//! A model file whose metadata or tensors do not fit is refused at load with
//! an error naming the key or tensor: an unknown model size, a config value
//! of the wrong type, a negative id, a tensor of the wrong shape.

use std::path::{Path, PathBuf};

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::gguf_schema::{keys, ARCH_TTS};
use qwen3_tts::model_file::GgufFile;
use qwen3_tts::pipeline::TtsModel;
use qwen3_tts_tests::{convert_tiny, rewrite_gguf, serial};

/// A copy of `src` with `metadata` overriding its keys and the tensor
/// `reshape.0` stored with dims `reshape.1` (same bytes).
fn rewrite(
    src: &Path,
    out: PathBuf,
    metadata: &[(String, Value)],
    reshape: Option<(&str, Vec<i64>)>,
) -> PathBuf {
    let src = GgufFile::open(src).unwrap();
    let reshape = reshape.as_ref().map(|(name, ne)| (*name, &ne[..]));
    rewrite_gguf(&src, &out, metadata, reshape).unwrap();
    out
}

fn load_error(path: &Path) -> String {
    match TtsModel::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_metadata_and_shapes_are_load_errors() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let good = convert_tiny("0.6B-CustomVoice", GgmlType::F32, tmp.path());
    assert!(TtsModel::load(&good).is_ok());
    let at = |name: &str| tmp.path().join(name);

    let size_key = keys::config(ARCH_TTS, "tts_model_size");
    let file = rewrite(
        &good,
        at("size.gguf"),
        &[(size_key.clone(), Value::Str("2b0".into()))],
        None,
    );
    let e = load_error(&file);
    assert!(
        e.contains(&size_key) && e.contains("unknown model size '2b0'"),
        "{e}"
    );

    // A present generation value of the wrong type is not silently replaced.
    let temp_key = keys::generation("temperature");
    let file = rewrite(
        &good,
        at("temp.gguf"),
        &[(temp_key.clone(), Value::Str("hot".into()))],
        None,
    );
    let e = load_error(&file);
    assert!(
        e.contains(&temp_key) && e.contains("expected a number"),
        "{e}"
    );

    let src = GgufFile::open(&good).unwrap();
    let Some(Value::ArrI32(mut ids)) = src.get(keys::SPEAKER_IDS) else {
        panic!("speaker ids")
    };
    ids[0] = -3;
    let file = rewrite(
        &good,
        at("ids.gguf"),
        &[(keys::SPEAKER_IDS.to_string(), Value::ArrI32(ids))],
        None,
    );
    let e = load_error(&file);
    assert!(
        e.contains(keys::SPEAKER_IDS) && e.contains("negative id -3"),
        "{e}"
    );

    // Same bytes, transposed dims: the shape check names the tensor.
    let name = "talker.blk.0.attn_q.weight";
    let ne = src.tensor_info(name).unwrap().ne.clone();
    assert_ne!(ne[0], ne[1], "a non-square projection");
    let file = rewrite(
        &good,
        at("shape.gguf"),
        &[],
        Some((name, vec![ne[1], ne[0]])),
    );
    let e = load_error(&file);
    assert!(
        e.contains(name) && e.contains("does not match the model's config"),
        "{e}"
    );
}
