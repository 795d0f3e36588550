//! Converting every tiny variant at every type and reading the GGUF back gives
//! every tensor equal to the source within the type's tolerance, and every
//! config value, generation default and tokenizer entry round-trips.

use std::collections::BTreeSet;
use std::path::Path;

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::gguf_schema::{self as schema, keys};
use qwen3_tts::model_file::{GgufFile, Overwrite};
use qwen3_tts_convert::{convert, Options, Parts, Safetensors, TensorSource};
use qwen3_tts_tests::{rel_rms, tiny_checkpoint, VARIANTS};
use serde_json::Value as Json;

/// Tolerance of each storage type (issue #2): F32 exact, F16 exact after f16
/// rounding, Q8_0 relative RMS ≤ 1 %, Q4_K ≤ 5 %; Q6_K ≤ 2 % and Q5_K ≤ 4 %
/// (issue #16; ggml's quantisers measure 1.8 % and 3.7 % on Gaussian data).
fn check_values(name: &str, ty: GgmlType, got: &[f32], src: &[f32]) {
    match ty {
        GgmlType::F32 => assert!(got == src, "{name}: F32 differs from the source"),
        GgmlType::F16 => {
            let rounded: Vec<f32> = src
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
            assert!(
                got == rounded.as_slice(),
                "{name}: F16 differs from the f16-rounded source"
            );
        }
        GgmlType::Q8_0 | GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q4_K => {
            let max = match ty {
                GgmlType::Q8_0 => 0.01,
                GgmlType::Q6_K => 0.02,
                GgmlType::Q5_K => 0.04,
                _ => 0.05,
            };
            let e = rel_rms(got, src);
            assert!(e <= max, "{name}: {} relative RMS {e}", ty.name());
        }
        other => panic!("{name}: unexpected storage type {other:?}"),
    }
}

fn read_all(src: &Safetensors, name: &str) -> Vec<f32> {
    let t = src.tensors().into_iter().find(|t| t.name == name).unwrap();
    let mut v = vec![0f32; t.n_elements()];
    src.read_f32(name, 0, &mut v).unwrap();
    v
}

/// Checks every tensor of `gguf` against the checkpoint in `dir`, and that no
/// checkpoint tensor is missing (besides the documented drops).
fn check_tensors(
    gguf: &GgufFile,
    dir: &Path,
    requested: GgmlType,
    valid_encoder_quantizers: Option<usize>,
) {
    let src = Safetensors::open_dir(dir).unwrap();
    let mut expected = BTreeSet::new();
    for t in src.tensors() {
        if t.name.ends_with(".initialized") || t.name.ends_with(".cluster_usage") {
            continue;
        }
        if let (Some(valid), Some(rest)) = (
            valid_encoder_quantizers,
            t.name
                .strip_prefix("encoder.quantizer.acoustic_residual_vector_quantizer.layers."),
        ) {
            let layer: usize = rest.split('.').next().unwrap().parse().unwrap();
            if layer + 1 >= valid {
                continue;
            }
        }
        // Source values, with EMA codebooks resolved independently here.
        let (gguf_name, want) = match t
            .name
            .strip_suffix("embed_sum")
            .or(t.name.strip_suffix("embedding_sum"))
        {
            Some(stem) => {
                let sum = read_all(&src, &t.name);
                let usage = read_all(&src, &format!("{stem}cluster_usage"));
                let dim = t.shape[1];
                let v: Vec<f32> = sum
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s / usage[i / dim].max(1e-5))
                    .collect();
                (schema::gguf_name(&format!("{stem}embed")), v)
            }
            None => (schema::gguf_name(&t.name), read_all(&src, &t.name)),
        };
        let info = gguf
            .tensor_info(&gguf_name)
            .unwrap_or_else(|e| panic!("{e}"));
        let ne: Vec<i64> = t.shape.iter().rev().map(|&d| d as i64).collect();
        let trimmed = ne.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
        assert_eq!(info.ne, ne[..trimmed], "{gguf_name}: shape");
        let ty = gguf.tensor_type(&gguf_name).unwrap();
        // The precision rules: norms/biases F32; convs/codebooks never quantised.
        if t.shape.len() == 1 {
            assert_eq!(ty, GgmlType::F32, "{gguf_name}: 1-D tensors stay F32");
        }
        if requested != GgmlType::F32 && (t.shape.len() == 3 || gguf_name.contains("codebook")) {
            assert_eq!(
                ty,
                GgmlType::F16,
                "{gguf_name}: convs and codebooks stay F16"
            );
        }
        if gguf_name.contains("_embd") || gguf_name.contains("head") {
            assert!(
                !ty.is_k_quant(),
                "{gguf_name}: embeddings and heads stay ≥ Q8_0"
            );
        }
        check_values(&gguf_name, ty, &gguf.tensor_f32(&gguf_name).unwrap(), &want);
        expected.insert(gguf_name);
    }
    let written: BTreeSet<String> = gguf.tensors().iter().map(|t| t.name.clone()).collect();
    assert_eq!(written, expected, "tensor set of {}", gguf.path().display());
}

/// Every non-null JSON leaf is stored under `prefix.path` with the same value.
fn check_json_leaves(gguf: &GgufFile, prefix: &str, json: &Json) {
    match json {
        Json::Object(map) => {
            for (k, v) in map {
                check_json_leaves(gguf, &format!("{prefix}.{k}"), v);
            }
        }
        Json::Null => assert!(gguf.get(prefix).is_none()),
        Json::Bool(b) => assert_eq!(gguf.get(prefix), Some(Value::Bool(*b)), "{prefix}"),
        Json::String(s) => assert_eq!(gguf.get_str(prefix).unwrap(), *s, "{prefix}"),
        Json::Number(n) => match n.as_i64() {
            Some(i) => assert_eq!(gguf.get_int(prefix).unwrap(), i, "{prefix}"),
            None => assert_eq!(
                gguf.get_float(prefix).unwrap(),
                n.as_f64().unwrap(),
                "{prefix}"
            ),
        },
        Json::Array(items) => {
            let got = gguf
                .get(prefix)
                .unwrap_or_else(|| panic!("{prefix} missing"));
            let n = match &got {
                Value::ArrI32(v) => v.len(),
                Value::ArrF32(v) => v.len(),
                Value::ArrStr(v) => v.len(),
                Value::Str(s) => serde_json::from_str::<Vec<Json>>(s).unwrap().len(),
                other => panic!("{prefix}: {other:?}"),
            };
            assert_eq!(n, items.len(), "{prefix}: array length");
            if let Value::ArrI32(v) = &got {
                let want: Vec<i32> = items.iter().map(|x| x.as_i64().unwrap() as i32).collect();
                assert_eq!(*v, want, "{prefix}");
            }
        }
    }
}

fn read_json(path: &Path) -> (String, Json) {
    let text = std::fs::read_to_string(path).unwrap();
    let json = serde_json::from_str(&text).unwrap();
    (text, json)
}

fn check_tts_metadata(gguf: &GgufFile, dir: &Path, ty: GgmlType) {
    assert_eq!(gguf.get_int(keys::FILE_TYPE).unwrap(), ty.id() as i64);
    let (config_text, config) = read_json(&dir.join("config.json"));
    check_json_leaves(gguf, "qwen3-tts.config", &config);
    assert_eq!(gguf.get_str("qwen3-tts.json.config").unwrap(), config_text);
    let (_, gen) = read_json(&dir.join("generation_config.json"));
    check_json_leaves(gguf, "qwen3-tts.generation", &gen);

    // Speakers and languages as parallel arrays.
    let talker = &config["talker_config"];
    let names = match gguf.get(keys::SPEAKER_NAMES) {
        Some(Value::ArrStr(v)) => v,
        other => panic!("speaker names: {other:?}"),
    };
    let ids = match gguf.get(keys::SPEAKER_IDS) {
        Some(Value::ArrI32(v)) => v,
        other => panic!("speaker ids: {other:?}"),
    };
    let spk = talker["spk_id"].as_object().map(|m| m.len()).unwrap_or(0);
    assert_eq!(names.len(), spk);
    for (n, id) in names.iter().zip(&ids) {
        let want = &talker["spk_id"][n.as_str()];
        let want = want.as_i64().or_else(|| want[0].as_i64()).unwrap();
        assert_eq!(*id as i64, want, "speaker {n}");
    }
    match gguf.get(keys::LANGUAGE_NAMES) {
        Some(Value::ArrStr(v)) => assert_eq!(
            v.len(),
            talker["codec_language_id"].as_object().unwrap().len()
        ),
        other => panic!("languages: {other:?}"),
    }

    // Text tokenizer: every vocab entry and added token at its id; all merges.
    let tokens = match gguf.get(keys::TOKENIZER_TOKENS) {
        Some(Value::ArrStr(v)) => v,
        other => panic!("tokens: {other:?}"),
    };
    let (_, vocab) = read_json(&dir.join("vocab.json"));
    for (tok, id) in vocab.as_object().unwrap() {
        assert_eq!(tokens[id.as_u64().unwrap() as usize], *tok);
    }
    let (_, tok_cfg) = read_json(&dir.join("tokenizer_config.json"));
    let added = tok_cfg["added_tokens_decoder"].as_object().unwrap();
    for (id, info) in added {
        assert_eq!(
            tokens[id.parse::<usize>().unwrap()],
            info["content"].as_str().unwrap()
        );
    }
    assert_eq!(tokens.len(), vocab.as_object().unwrap().len() + added.len());
    assert_eq!(tokens[151671], "<tts_pad>");
    let merges = match gguf.get(keys::TOKENIZER_MERGES) {
        Some(Value::ArrStr(v)) => v,
        other => panic!("merges: {other:?}"),
    };
    let merge_lines = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let want: Vec<&str> = merge_lines
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#version"))
        .collect();
    assert_eq!(merges, want);
}

#[test]
fn every_variant_at_every_type_round_trips() {
    let out = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let dir = tiny_checkpoint(variant);
        for ty in schema::FILE_TYPES {
            let opts = Options {
                input: dir.clone(),
                outdir: out.path().join(variant),
                ty,
                tokenizer_ty: ty,
                overwrite: Overwrite::Refuse,
                // The speech tokenizer is shared by all variants: convert it once.
                parts: if variant == VARIANTS[0] {
                    Parts::Both
                } else {
                    Parts::TtsOnly
                },
            };
            let summaries = convert(&opts).unwrap_or_else(|e| panic!("{variant} {ty:?}: {e:#}"));
            let tts = GgufFile::open_arch(&summaries[0].path, schema::ARCH_TTS).unwrap();
            check_tensors(&tts, &dir, ty, None);
            check_tts_metadata(&tts, &dir, ty);
            if let Some(tok) = summaries.get(1) {
                let tok_dir = dir.join("speech_tokenizer");
                let tok = GgufFile::open_arch(&tok.path, schema::ARCH_TOKENIZER).unwrap();
                let (_, config) = read_json(&tok_dir.join("config.json"));
                let valid = config["encoder_valid_num_quantizers"].as_u64().unwrap() as usize;
                check_tensors(&tok, &tok_dir, ty, Some(valid));
                check_json_leaves(&tok, "qwen3-tts-tokenizer.config", &config);
            }
        }
    }
}

#[test]
fn quantizer_matches_direct_conversion() {
    // F32 → q8_0 via the quantizer equals converting straight to q8_0, metadata
    // apart from nothing (the file type is set by both).
    let out = tempfile::tempdir().unwrap();
    let dir = tiny_checkpoint("1.7B-CustomVoice");
    let mk = |ty, sub: &str| {
        convert(&Options {
            input: dir.clone(),
            outdir: out.path().join(sub),
            ty,
            tokenizer_ty: ty,
            overwrite: Overwrite::Refuse,
            parts: Parts::TtsOnly,
        })
        .unwrap()
        .remove(0)
        .path
    };
    let f32_path = mk(GgmlType::F32, "a");
    let direct = mk(GgmlType::Q8_0, "b");
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q4_K,
        GgmlType::F16,
    ] {
        let requant = out.path().join(format!("re-{}.gguf", ty.name()));
        qwen3_tts_quantize::requantize(&f32_path, &requant, ty, Overwrite::Refuse).unwrap();
        let r = GgufFile::open_arch(&requant, schema::ARCH_TTS).unwrap();
        assert_eq!(r.get_int(keys::FILE_TYPE).unwrap(), ty.id() as i64);
        check_tensors(&r, &dir, ty, None);
        check_tts_metadata(&r, &dir, ty);
        if ty == GgmlType::Q8_0 {
            let d = GgufFile::open(&direct).unwrap();
            for t in d.tensors() {
                assert_eq!(
                    d.tensor_bytes(&t.name).unwrap(),
                    r.tensor_bytes(&t.name).unwrap(),
                    "{}",
                    t.name
                );
            }
        }
    }
    // A speech-tokenizer file re-quantised keeps convs and codebooks F16.
    let tok = convert(&Options {
        input: dir.clone(),
        outdir: out.path().join("t"),
        ty: GgmlType::F32,
        tokenizer_ty: GgmlType::F32,
        overwrite: Overwrite::Refuse,
        parts: Parts::TokenizerOnly,
    })
    .unwrap()
    .remove(0)
    .path;
    let requant = out.path().join("tok-q4_k.gguf");
    qwen3_tts_quantize::requantize(&tok, &requant, GgmlType::Q4_K, Overwrite::Refuse).unwrap();
    let r = GgufFile::open_arch(&requant, schema::ARCH_TOKENIZER).unwrap();
    let tok_dir = dir.join("speech_tokenizer");
    let (_, config) = read_json(&tok_dir.join("config.json"));
    check_tensors(
        &r,
        &tok_dir,
        GgmlType::Q4_K,
        Some(config["encoder_valid_num_quantizers"].as_u64().unwrap() as usize),
    );
}

#[test]
fn in_memory_state_dict_converts_like_the_files() {
    // The path the Python module takes: tensors handed over in memory.
    use qwen3_tts_convert::{convert_source, FileKind, MemorySource};
    let out = tempfile::tempdir().unwrap();
    let dir = tiny_checkpoint("0.6B-Base");
    for (kind, cfg_dir, parts) in [
        (FileKind::Tts, dir.clone(), Parts::TtsOnly),
        (
            FileKind::Tokenizer,
            dir.join("speech_tokenizer"),
            Parts::TokenizerOnly,
        ),
    ] {
        let files = Safetensors::open_dir(&cfg_dir).unwrap();
        let mut mem = MemorySource::new();
        for t in files.tensors() {
            mem.insert(&t.name, t.shape.clone(), read_all(&files, &t.name))
                .unwrap();
        }
        let from_mem = convert_source(
            kind,
            &cfg_dir,
            &mem,
            GgmlType::Q8_0,
            &out.path().join("mem"),
            Overwrite::Refuse,
        )
        .unwrap()
        .path;
        let from_files = convert(&Options {
            input: dir.clone(),
            outdir: out.path().join("files"),
            ty: GgmlType::Q8_0,
            tokenizer_ty: GgmlType::Q8_0,
            overwrite: Overwrite::Refuse,
            parts,
        })
        .unwrap()
        .remove(0)
        .path;
        assert_eq!(
            std::fs::read(&from_mem).unwrap(),
            std::fs::read(&from_files).unwrap(),
            "{kind:?}"
        );
    }
}

#[test]
fn sharded_f16_checkpoint_converts() {
    // Re-save a tiny checkpoint as two F16 shards with an index file, the way
    // large Hugging Face checkpoints ship, and convert it at F32.
    use safetensors::tensor::TensorView;
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tiny_checkpoint("1.7B-VoiceDesign");
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(src_dir.join(f), dir.join(f)).unwrap();
    }
    let files = Safetensors::open_dir(&src_dir).unwrap();
    let all = files.tensors();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in all.chunks(all.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = part
            .iter()
            .map(|t| {
                let bytes = read_all(&files, &t.name)
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect();
                weight_map.insert(t.name.clone(), Json::String(file.clone()));
                (t.name.clone(), bytes, t.shape.clone())
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .map(|(n, b, s)| {
                (
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F16, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let summary = convert(&Options {
        input: dir.clone(),
        outdir: tmp.path().join("out"),
        ty: GgmlType::F32,
        tokenizer_ty: GgmlType::F32,
        overwrite: Overwrite::Refuse,
        parts: Parts::TtsOnly,
    })
    .unwrap();
    let gguf = GgufFile::open_arch(&summary[0].path, schema::ARCH_TTS).unwrap();
    assert_eq!(gguf.tensors().len(), all.len());
    for t in &all {
        let want: Vec<f32> = read_all(&files, &t.name)
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert!(
            gguf.tensor_f32(&schema::gguf_name(&t.name)).unwrap() == want,
            "{}",
            t.name
        );
    }
}
