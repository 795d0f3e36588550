//! Our GGUF writer and validating reader: round trip and clear rejections.

use std::path::{Path, PathBuf};

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::{quantize, GgmlType};
use qwen3_tts::gguf_schema::{keys, ARCH_TOKENIZER, ARCH_TTS};
use qwen3_tts::model_file::{write_gguf, GgufFile, Overwrite, TensorPlan};
use qwen3_tts::Error;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn ramp(n: usize) -> Vec<f32> {
    // black_box: a constant `n` lets the optimiser fold `sin` at compile time,
    // which may round differently from the runtime `sinf` that wrote the file.
    let n = std::hint::black_box(n);
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// Writes a small file with an F32 vector and a Q8_0 matrix.
fn write_sample(dir: &Path) -> PathBuf {
    let path = dir.join("sample.gguf");
    let md = vec![
        (keys::ARCHITECTURE.to_string(), Value::Str(ARCH_TTS.into())),
        (
            "qwen3-tts.config.talker_config.hidden_size".to_string(),
            Value::I32(64),
        ),
        (
            "qwen3-tts.config.talker_config.rms_norm_eps".to_string(),
            Value::F64(1e-6),
        ),
        (
            "qwen3-tts.languages.names".to_string(),
            Value::ArrStr(vec!["english".into(), "chinese".into()]),
        ),
    ];
    let plan = vec![
        TensorPlan {
            name: "talker.output_norm.weight".into(),
            ty: GgmlType::F32,
            ne: vec![64],
        },
        TensorPlan {
            name: "talker.blk.0.attn_q.weight".into(),
            ty: GgmlType::Q8_0,
            ne: vec![64, 3],
        },
    ];
    let pending = write_gguf(&path, &md, &plan, Overwrite::Refuse, |_, t, out| {
        out.write_all(&quantize(t.ty, &ramp(t.n_elements()), t.row_len()))
            .unwrap();
        Ok(())
    })
    .unwrap();
    assert!(!path.exists(), "nothing may appear before commit");
    pending.commit().unwrap();
    path
}

#[test]
fn round_trip_of_metadata_and_tensors() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let f = GgufFile::open_arch(&path, ARCH_TTS).unwrap();
    assert_eq!(
        f.get_int("qwen3-tts.config.talker_config.hidden_size")
            .unwrap(),
        64
    );
    assert_eq!(
        f.get_float("qwen3-tts.config.talker_config.rms_norm_eps")
            .unwrap(),
        1e-6
    );
    assert_eq!(
        f.get("qwen3-tts.languages.names"),
        Some(Value::ArrStr(vec!["english".into(), "chinese".into()]))
    );
    assert_eq!(f.tensor_f32("talker.output_norm.weight").unwrap(), ramp(64));
    let q = f.tensor_f32("talker.blk.0.attn_q.weight").unwrap();
    let err: f32 = q
        .iter()
        .zip(ramp(192))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 0.01, "q8_0 max error {err}");
    assert_eq!(
        f.tensor_type("talker.blk.0.attn_q.weight").unwrap(),
        GgmlType::Q8_0
    );
    let missing = f
        .tensor_f32("talker.blk.9.attn_q.weight")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("talker.blk.9.attn_q.weight") && missing.contains("missing"),
        "{missing}"
    );
}

#[test]
fn refuses_to_overwrite_and_leaves_no_partial_file() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let before = std::fs::read(&path).unwrap();
    let err = write_gguf(&path, &[], &[], Overwrite::Refuse, |_, _, _| Ok(()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("--force"), "{err}");
    // A producer that fails half way leaves neither a new file nor a temp file.
    let other = dir.path().join("other.gguf");
    let plan = vec![TensorPlan {
        name: "x".into(),
        ty: GgmlType::F32,
        ne: vec![4],
    }];
    let err = write_gguf(&other, &[], &plan, Overwrite::Refuse, |_, _, _| {
        Err(Error::Internal("boom".into()))
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("boom"));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("sample.gguf")],
        "leftover files"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

fn open_err(path: &Path) -> String {
    GgufFile::open(path)
        .err()
        .expect("expected an error")
        .to_string()
}

#[test]
fn rejects_a_truncated_file() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 50]).unwrap();
    let e = open_err(&path);
    assert!(e.contains("sample.gguf") && e.contains("truncated"), "{e}");
    // Cut inside the header: ggml's own parser complains.
    std::fs::write(&path, &bytes[..40]).unwrap();
    let e = open_err(&path);
    assert!(e.contains("not a valid GGUF file"), "{e}");
}

#[test]
fn rejects_wrong_magic() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let e = open_err(&path);
    assert!(e.contains("wrong magic"), "{e}");
    std::fs::write(&path, b"hello").unwrap();
    assert!(open_err(&path).contains("wrong magic"));
    let e = open_err(&dir.path().join("absent.gguf"));
    assert!(e.contains("absent.gguf"), "{e}");
}

#[test]
fn rejects_wrong_architecture() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let e = GgufFile::open_arch(&path, ARCH_TOKENIZER)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("architecture is 'qwen3-tts'") && e.contains(ARCH_TOKENIZER),
        "{e}"
    );
}

#[test]
fn rejects_an_out_of_bounds_tensor_offset() {
    let dir = tmpdir();
    let path = write_sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Tensor info: name, n_dims (u32), ne (u64 × n_dims), type (u32), offset (u64).
    let name = b"talker.blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let offset_pos = at + 4 + 2 * 8 + 4;
    bytes[offset_pos..offset_pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains("not a valid GGUF file") && e.contains("offset"),
        "{e}"
    );
}
