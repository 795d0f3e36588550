//! A model file from a stranger never crashes the program (issue #15): a
//! config value out of range, a tensor of the wrong size, a name ggml cannot
//! store, a config.json the runtime would refuse, each ends in an error that
//! names the key, tensor or file. `scripts/mutate_models.sh` runs the full
//! sweep through `qwen3-tts-run`; here are one case per class of failure
//! found that way and a compact sweep of every metadata key through the
//! loaders.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::codec_encoder::CodecEncoder;
use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::gguf_schema::{keys, ARCH_TOKENIZER, ARCH_TTS};
use qwen3_tts::model_file::{write_gguf, GgufFile, Overwrite, TensorPlan};
use qwen3_tts::pipeline::TtsModel;
use qwen3_tts_tests::{
    convert_tiny, convert_tiny_tokenizer, cosine, retype_gguf, rewrite_gguf, serial, snr_db,
    tiny_checkpoint,
};

/// The tiny CustomVoice model and speech tokenizer, converted once per test.
struct Files {
    dir: tempfile::TempDir,
    tts: PathBuf,
    tokenizer: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::F32, dir.path());
    let tokenizer = convert_tiny_tokenizer(GgmlType::F16, dir.path());
    Files {
        dir,
        tts,
        tokenizer,
    }
}

/// Loads a TTS model or a speech tokenizer (decoder) file.
fn load(path: &Path, tokenizer: bool) -> qwen3_tts::Result<()> {
    if tokenizer {
        CodecDecoder::load(path).map(drop)
    } else {
        TtsModel::load(path).map(drop)
    }
}

/// The load error of `src` with `metadata` / a reshaped tensor; panics if it
/// loads. Checks the message names the file.
fn error_of(
    files: &Files,
    tokenizer: bool,
    metadata: &[(String, Value)],
    reshape: Option<(&str, &[i64])>,
) -> String {
    let src = if tokenizer {
        &files.tokenizer
    } else {
        &files.tts
    };
    let out = files.dir.path().join("mutant.gguf");
    rewrite_gguf(&GgufFile::open(src).unwrap(), &out, metadata, reshape).unwrap();
    let e = match load(&out, tokenizer) {
        Ok(()) => panic!("loaded with {metadata:?} {reshape:?}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&out.display().to_string()), "{e}");
    e
}

fn tts_key(k: &str) -> String {
    keys::config(ARCH_TTS, k)
}

fn tok_key(k: &str) -> String {
    keys::config(ARCH_TOKENIZER, k)
}

#[test]
fn out_of_range_config_values_name_their_key() {
    let _g = serial();
    let f = files();
    let file = GgufFile::open(&f.tts).unwrap();
    let int = |k: &str| file.get_int(&tts_key(k)).unwrap();
    let heads = int("talker_config.num_attention_heads");
    let vocab = int("talker_config.vocab_size");
    let cases: Vec<(String, Value, &str)> = vec![
        // ggml asserts eps >= 0 (NaN fails it too)
        (
            tts_key("talker_config.rms_norm_eps"),
            Value::F64(-1e-6),
            "not a positive number",
        ),
        (
            tts_key("talker_config.rms_norm_eps"),
            Value::F64(f64::NAN),
            "not a positive number",
        ),
        (
            tts_key("talker_config.code_predictor_config.rope_theta"),
            Value::F64(0.0),
            "not a positive number",
        ),
        (
            tts_key("talker_config.num_attention_heads"),
            Value::I32(0),
            "out of range",
        ),
        (
            tts_key("talker_config.num_hidden_layers"),
            Value::I32(0),
            "out of range",
        ),
        (
            tts_key("talker_config.head_dim"),
            Value::I64(1 << 40),
            "out of range",
        ),
        (
            tts_key("talker_config.num_key_value_heads"),
            Value::I32(heads as i32 + 1),
            "do not split",
        ),
        (
            tts_key("talker_config.num_code_groups"),
            Value::I32(1),
            "out of range",
        ),
        (
            tts_key("talker_config.codec_pad_id"),
            Value::I32(vocab as i32),
            "outside the codec vocabulary",
        ),
        (keys::generation("top_p"), Value::F64(2.0), "not in (0, 1]"),
        (
            keys::generation("repetition_penalty"),
            Value::F64(0.0),
            "out of range",
        ),
    ];
    for (key, value, reason) in cases {
        let e = error_of(&f, false, &[(key.clone(), value.clone())], None);
        assert!(
            e.contains(&key) && e.contains(reason),
            "{key} = {value:?}: {e}"
        );
    }
    // More query heads than the q projection has rows: its shape is refused.
    let e = error_of(
        &f,
        false,
        &[(
            tts_key("talker_config.num_attention_heads"),
            Value::I32(2 * heads as i32),
        )],
        None,
    );
    assert!(
        e.contains("attn_q.weight") && e.contains("does not match"),
        "{e}"
    );

    let Some(Value::ArrI32(mut ids)) = file.get(keys::SPEAKER_IDS) else {
        panic!("speaker ids")
    };
    ids[0] = vocab as i32;
    let e = error_of(
        &f,
        false,
        &[(keys::SPEAKER_IDS.into(), Value::ArrI32(ids))],
        None,
    );
    assert!(
        e.contains(keys::SPEAKER_IDS) && e.contains("outside"),
        "{e}"
    );

    for (key, value) in [
        (tok_key("decoder_config.rms_norm_eps"), Value::F64(f64::NAN)),
        (tok_key("decoder_config.num_hidden_layers"), Value::I32(0)),
        (tok_key("output_sample_rate"), Value::I32(0)),
        (
            tok_key("decoder_config.upsample_rates"),
            Value::ArrI32(Vec::new()),
        ),
    ] {
        let e = error_of(&f, true, &[(key.clone(), value.clone())], None);
        assert!(e.contains(&key), "{key} = {value:?}: {e}");
    }
}

/// One tensor of each kind the vocoder chains channels through, one dim
/// changed: the channel walk at load names it (these aborted inside ggml or
/// panicked on a stream-state shape when the graph was built).
/// The dims of tensor `name` with one of them grown by one, for each dim
/// but a conv kernel's first (its size, which the file may choose).
fn channel_dims_off_by_one(file: &GgufFile, name: &str) -> Vec<Vec<i64>> {
    let ne = &file.tensor_info(name).unwrap().ne;
    let first = usize::from(name.ends_with("conv.weight"));
    (first..ne.len())
        .map(|d| {
            let mut changed = ne.clone();
            changed[d] += 1;
            changed
        })
        .collect()
}

#[test]
fn mis_sized_vocoder_tensors_name_the_tensor() {
    let _g = serial();
    let f = files();
    let file = GgufFile::open(&f.tokenizer).unwrap();
    for name in [
        "dec.dec.0.conv.bias",
        "dec.dec.0.conv.weight",
        "dec.dec.1.block.0.alpha",
        "dec.dec.1.block.1.conv.weight",
        "dec.dec.1.block.2.conv2.conv.weight",
        "dec.upsample.0.1.dwconv.conv.weight",
        "dec.upsample.0.1.gamma",
        "dec.upsample.0.1.pwconv2.weight",
        "dec.pre_conv.conv.weight",
        "dec.rvq_first.output_proj.weight",
        "dec.rvq_rest.blk.0.codebook.embed",
        "dec.pre_transformer.output_proj.weight",
    ] {
        for changed in channel_dims_off_by_one(&file, name) {
            // The error names this tensor or the one it disagrees with.
            let e = error_of(&f, true, &[], Some((name, &changed)));
            assert!(e.contains("tensor 'dec."), "{name} {changed:?}: {e}");
        }
    }
}

/// The codec encoder's convs, projections and codebooks with a wrong
/// channel count fail to load naming a tensor (ggml would abort on the
/// mismatched product otherwise), and a strided conv's kernel may not be
/// narrower than its stride.
#[test]
fn mis_sized_encoder_tensors_name_the_tensor() {
    let _g = serial();
    let f = files();
    let file = GgufFile::open(&f.tokenizer).unwrap();
    let out = f.dir.path().join("mutant.gguf");
    let encoder_error = |name: &str, ne: &[i64]| {
        rewrite_gguf(&file, &out, &[], Some((name, ne))).unwrap();
        match CodecEncoder::load(&out, 1) {
            Ok(_) => panic!("{name} {ne:?} loaded"),
            Err(e) => e.to_string(),
        }
    };
    for name in [
        "enc.conv.0.conv.weight",
        "enc.conv.1.block.1.conv.weight",
        "enc.conv.1.block.3.conv.weight",
        "enc.conv.3.conv.weight",
        "enc.conv.14.conv.weight",
        "enc.downsample.conv.weight",
        "enc.rvq_first.input_proj.weight",
        "enc.rvq_rest.input_proj.weight",
        "enc.rvq_rest.blk.3.codebook.embed",
    ] {
        for changed in channel_dims_off_by_one(&file, name) {
            let e = encoder_error(name, &changed);
            assert!(e.contains("tensor 'enc."), "{name} {changed:?}: {e}");
        }
    }
    // enc.conv.3 downsamples by 4 (kernel 8): a kernel of 3 is refused.
    let mut narrow = file
        .tensor_info("enc.conv.3.conv.weight")
        .unwrap()
        .ne
        .clone();
    narrow[0] = 3;
    let e = encoder_error("enc.conv.3.conv.weight", &narrow);
    assert!(e.contains("narrower than its stride 4"), "{e}");
}

#[test]
fn names_with_nul_bytes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tensor = |name: &str| TensorPlan {
        name: name.into(),
        ty: GgmlType::F32,
        ne: vec![4],
    };
    let write = |metadata: &[(String, Value)], plan: &[TensorPlan]| {
        write_gguf(
            &dir.path().join("x.gguf"),
            metadata,
            plan,
            Overwrite::Replace,
            |_, _, w| {
                w.write_all(&[0; 16])
                    .map_err(|e| qwen3_tts::Error::io("x", e))
            },
        )
        .map(drop)
        .unwrap_err()
        .to_string()
    };
    let e = write(&[], &[tensor("talker.\0.weight")]);
    assert!(e.contains("NUL byte") && e.contains("talker."), "{e}");
    let e = write(&[("k".into(), Value::Str("a\0b".into()))], &[tensor("t")]);
    assert!(
        e.contains("metadata key 'k'") && e.contains("NUL byte"),
        "{e}"
    );
    let e = write(
        &[("k".into(), Value::ArrStr(vec!["\0".into()]))],
        &[tensor("t")],
    );
    assert!(e.contains("'k'") && e.contains("NUL byte"), "{e}");
    let e = write(&[("k\0".into(), Value::I32(1))], &[tensor("t")]);
    assert!(e.contains("NUL byte"), "{e}");
}

/// A copy of the tiny CustomVoice checkpoint (symlinks followed) whose
/// config.json (or the speech tokenizer's) `edit` changes.
fn edited_checkpoint(
    dir: &Path,
    tokenizer: bool,
    edit: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let src = tiny_checkpoint("0.6B-CustomVoice");
    let out = dir.join("checkpoint");
    let copy_dir = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            }
        }
    };
    copy_dir(&src, &out);
    copy_dir(&src.join("speech_tokenizer"), &out.join("speech_tokenizer"));
    let config = match tokenizer {
        true => out.join("speech_tokenizer/config.json"),
        false => out.join("config.json"),
    };
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&config, json.to_string()).unwrap();
    out
}

/// The converter loads what it wrote before committing it: a config.json
/// the runtime would refuse is refused, naming the key, and nothing is left.
#[test]
fn converter_refuses_configs_the_runtime_would_refuse() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(bool, &str, &str, serde_json::Value); 4] = [
        (
            false,
            "talker_config",
            "rms_norm_eps",
            serde_json::json!(-1e-6),
        ),
        (
            false,
            "talker_config",
            "num_key_value_heads",
            serde_json::json!(3),
        ),
        (
            false,
            "talker_config",
            "codec_bos_id",
            serde_json::json!(1 << 30),
        ),
        (
            true,
            "decoder_config",
            "sliding_window",
            serde_json::json!(0),
        ),
    ];
    for (tokenizer, section, key, value) in cases {
        let case = dir.path().join(key);
        let input = edited_checkpoint(&case, tokenizer, |j| j[section][key] = value.clone());
        let outdir = case.join("out");
        let e = qwen3_tts_convert::convert(&qwen3_tts_convert::Options {
            input,
            outdir: outdir.clone(),
            ty: GgmlType::F32,
            tokenizer_ty: GgmlType::F16,
            overwrite: Overwrite::Refuse,
            parts: match tokenizer {
                true => qwen3_tts_convert::Parts::TokenizerOnly,
                false => qwen3_tts_convert::Parts::TtsOnly,
            },
        })
        .map(drop)
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains(&format!("{section}.{key}")) && e.contains("would not load"),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(&outdir).unwrap().collect();
        assert!(left.is_empty(), "{key}: left {left:?}");
    }
}

/// A few replacements of one metadata value.
fn replacements(v: &Value) -> Vec<Value> {
    match v {
        Value::U32(_) | Value::I32(_) | Value::U64(_) | Value::I64(_) => {
            let x = match *v {
                Value::U32(x) => x as i64,
                Value::I32(x) => x as i64,
                Value::U64(x) => x as i64,
                Value::I64(x) => x,
                _ => unreachable!(),
            };
            vec![
                Value::I32(0),
                Value::I32(-1),
                Value::I64(x + 1),
                Value::I64(1 << 40),
            ]
        }
        Value::F32(_) | Value::F64(_) => {
            vec![Value::F64(f64::NAN), Value::F64(-1.0), Value::F64(0.0)]
        }
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Str(_) => vec![Value::Str(String::new()), Value::I32(1)],
        Value::ArrI32(a) if !a.is_empty() => {
            let mut first = a.clone();
            first[0] = first[0].wrapping_mul(2).wrapping_add(1);
            vec![
                Value::ArrI32(Vec::new()),
                Value::ArrI32(a[1..].to_vec()),
                Value::ArrI32(first),
            ]
        }
        Value::ArrStr(a) if !a.is_empty() => {
            vec![Value::ArrStr(Vec::new()), Value::ArrStr(a[1..].to_vec())]
        }
        _ => vec![Value::ArrI32(Vec::new())],
    }
}

fn slim_tts(files: &Files) -> PathBuf {
    let out = files.dir.path().join("slim.gguf");
    qwen3_tts_tests::slim_tts(&files.tts, &out);
    load(&out, false).unwrap();
    out
}

/// Every metadata key of both files, a few values each: the loaders return
/// Ok or an error naming the file, never panic.
#[test]
fn every_metadata_key_mutated_loads_or_fails_cleanly() {
    let _g = serial();
    let f = files();
    let tts = slim_tts(&f);
    let out = f.dir.path().join("sweep.gguf");
    let mut failures = Vec::new();
    let mut runs = 0;
    for (path, tokenizer) in [(&tts, false), (&f.tokenizer, true)] {
        let src = GgufFile::open(path).unwrap();
        for key in src.header().keys() {
            let Some(v) = src.get(&key) else { continue };
            for m in replacements(&v) {
                runs += 1;
                rewrite_gguf(&src, &out, &[(key.clone(), m.clone())], None).unwrap();
                let file = out.display().to_string();
                match catch_unwind(AssertUnwindSafe(|| load(&out, tokenizer))) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.to_string().contains(&file) => {}
                    Ok(Err(e)) => failures.push(format!("{key} = {m:?}: no file in: {e}")),
                    Err(_) => failures.push(format!("{key} = {m:?}: panicked")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} mutants:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Norms, biases and scales stored as F16 or Q8_0 (as other writers may)
/// aborted inside ggml's elementwise ops (found by `mutate_models --kind
/// retype`); they are converted to F32 at load, and the outputs stay those
/// of the F32 file up to that rounding.
#[test]
fn vectors_in_other_types_load_as_f32() {
    use qwen3_tts::pipeline::GenerateOptions;
    use qwen3_tts::prompt::{Request, Voice};
    let _serial = serial();
    let f = files();
    let vectors = |path: &Path| -> Vec<String> {
        let file = GgufFile::open(path).unwrap();
        file.tensors()
            .iter()
            .filter(|t| t.ne.iter().filter(|&&d| d != 1).count() <= 1)
            .map(|t| t.name.clone())
            .collect()
    };
    // The talker's first-step logits, F32 vectors vs F16 ones.
    let names = vectors(&f.tts);
    assert!(names.iter().any(|n| n.contains("norm")), "{names:?}");
    let retyped = f.dir.path().join("tts-f16-vectors.gguf");
    let list: Vec<(&str, GgmlType)> = names.iter().map(|n| (n.as_str(), GgmlType::F16)).collect();
    retype_gguf(&GgufFile::open(&f.tts).unwrap(), &retyped, &list).unwrap();
    let logits = |path: &Path| {
        let mut s = std::sync::Arc::new(TtsModel::load(path).unwrap()).session(1);
        let req = Request {
            text: "Hello.".into(),
            language: "english".into(),
            voice: Voice::Speaker(s.model().config.speakers[0].name.clone()),
            instruct: None,
            non_streaming: None,
        };
        let prompt = s.prompt(&req).unwrap();
        let mut opts = GenerateOptions::from_config(&s.model().config).greedy();
        opts.set_max_new_tokens(3);
        s.generate(&prompt, &opts, 1, |_, _| {})
            .unwrap()
            .1
            .talker_logits[0]
            .clone()
    };
    let c = cosine(&logits(&retyped), &logits(&f.tts));
    assert!(c >= 0.9999, "first-step logits cosine {c}");
    // The vocoder: Q8_0 vectors where the rows fit, F16 elsewhere.
    let names = vectors(&f.tokenizer);
    let src = GgufFile::open(&f.tokenizer).unwrap();
    let list: Vec<(&str, GgmlType)> = names
        .iter()
        .map(|n| {
            let fits = src.tensor_info(n).unwrap().ne[0] % 32 == 0;
            (
                n.as_str(),
                if fits { GgmlType::Q8_0 } else { GgmlType::F16 },
            )
        })
        .collect();
    let retyped = f.dir.path().join("tokenizer-q8-vectors.gguf");
    retype_gguf(&src, &retyped, &list).unwrap();
    let frames: Vec<Vec<u32>> = (0..4)
        .map(|i| (0..16).map(|q| (i * 7 + q) % 20).collect())
        .collect();
    let decode = |path: &Path| {
        let d = std::sync::Arc::new(CodecDecoder::load(path).unwrap());
        d.session(1).decode(&frames).unwrap()
    };
    let snr = snr_db(&decode(&retyped), &decode(&f.tokenizer));
    assert!(snr >= 30.0, "vocoder SNR {snr} dB");
    eprintln!("F16 vectors: logits cosine {c:.7}; Q8_0/F16 vocoder vectors: SNR {snr:.1} dB");
}
