//! The Qwen2 text tokenizer against the reference ids of
//! `tests/fixtures/reference/tokenizer_cases.json` (genuine Qwen2 regex).
//!
//! The vocabulary is written into a metadata-only GGUF file from the released
//! `vocab.json` / `merges.txt` and the `added_tokens_decoder` of
//! `tokenizer_config.json`, the way the converter stores it (docs/gguf.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::gguf_schema::{keys, ARCH_TTS};
use qwen3_tts::model_file::{write_gguf, GgufFile, Overwrite};
use qwen3_tts::text_tokenizer::TextTokenizer;
use qwen3_tts::Error;
use unicode_normalization_alignments::UnicodeNormalization;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `tokenizer.ggml.*` metadata of the released tokenizer files.
fn tokenizer_metadata() -> Vec<(String, Value)> {
    let dir = fixtures();
    let vocab = read_json(&dir.join("tokenizer/vocab.json"));
    let config = read_json(&dir.join("tiny-0.6B-Base/tokenizer_config.json"));
    let mut entries: Vec<(usize, String, i32)> = vocab
        .as_object()
        .unwrap()
        .iter()
        .map(|(tok, id)| (id.as_u64().unwrap() as usize, tok.clone(), 1))
        .collect();
    for (id, tok) in config["added_tokens_decoder"].as_object().unwrap() {
        let ty = if tok["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
        entries.push((
            id.parse().unwrap(),
            tok["content"].as_str().unwrap().to_string(),
            ty,
        ));
    }
    entries.sort();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.0, i, "token ids must be dense");
    }
    let merges: Vec<String> = std::fs::read_to_string(dir.join("tokenizer/merges.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#version"))
        .map(str::to_string)
        .collect();
    vec![
        (keys::ARCHITECTURE.to_string(), Value::Str(ARCH_TTS.into())),
        (keys::TOKENIZER_MODEL.to_string(), Value::Str("gpt2".into())),
        (keys::TOKENIZER_PRE.to_string(), Value::Str("qwen2".into())),
        (
            keys::TOKENIZER_TOKENS.to_string(),
            Value::ArrStr(entries.iter().map(|e| e.1.clone()).collect()),
        ),
        (
            keys::TOKENIZER_TOKEN_TYPE.to_string(),
            Value::ArrI32(entries.iter().map(|e| e.2).collect()),
        ),
        (keys::TOKENIZER_MERGES.to_string(), Value::ArrStr(merges)),
    ]
}

/// Writes a metadata-only GGUF file and opens it.
fn write_file(dir: &Path, name: &str, metadata: &[(String, Value)]) -> GgufFile {
    let path = dir.join(name);
    write_gguf(&path, metadata, &[], Overwrite::Refuse, |_, _, _| Ok(()))
        .unwrap()
        .commit()
        .unwrap();
    GgufFile::open(&path).unwrap()
}

/// The tokenizer loaded from a GGUF file holding the released vocabulary
/// (built once for all tests).
fn tokenizer() -> &'static TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path(), "tok.gguf", &tokenizer_metadata());
        TextTokenizer::from_gguf(&file).unwrap()
    })
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn cases() -> Vec<serde_json::Value> {
    let doc = read_json(&fixtures().join("reference/tokenizer_cases.json"));
    let cases = doc["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len() as u64, doc["n_cases"].as_u64().unwrap());
    cases
}

#[test]
fn every_reference_case_gives_the_genuine_qwen2_ids() {
    let tok = tokenizer();
    let cases = cases();
    let mut failures = Vec::new();
    let mut package_differs = 0;
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n  got  {got:?}\n  want {want:?}"));
        }
        if let Some(pkg) = case.get("package_ids") {
            package_differs += 1;
            assert_ne!(
                got,
                ids_of(pkg),
                "{text:?}: must not match the Mistral-regex ids"
            );
        }
    }
    println!(
        "{} of {} cases match the reference ids ({} where the package's regex differs)",
        cases.len() - failures.len(),
        cases.len(),
        package_differs
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        package_differs > 0,
        "the corpus must exercise the regex trap"
    );
}

#[test]
fn decode_round_trips_where_the_reference_does() {
    let tok = tokenizer();
    let mut checked = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let decoded = tok.decode(&ids).unwrap();
        // The reference compares with the NFC form of the text.
        let nfc: String = text.nfc().map(|(c, _)| c).collect();
        if case["decoded_roundtrip"].as_bool() == Some(true) {
            assert_eq!(decoded, nfc, "decode(ids) of {text:?}");
            assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), nfc);
            checked += 1;
        } else {
            assert_ne!(decoded, nfc, "{text:?} is marked as not round-tripping");
        }
    }
    assert!(checked > 0);
}

#[test]
fn chat_template_strings() {
    let tok = tokenizer();
    let mut n = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        if !text.starts_with("<|im_start|>") || !text.ends_with('\n') {
            continue;
        }
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, ids_of(&case["ids"]), "{text:?}");
        assert_eq!(ids[0], 151644);
        n += 1;
    }
    assert!(n >= 5, "only {n} template strings in the corpus");

    // The layout the talker slices ([3:-5] of the assistant template).
    let ids = tok
        .encode("<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    assert_eq!(&ids[..3], &[151644, 77091, 198]);
    assert_eq!(&ids[ids.len() - 5..], &[151645, 198, 151644, 77091, 198]);
    assert_eq!(
        tok.decode(&ids[3..ids.len() - 5]).unwrap(),
        "Hello",
        "text part of the template"
    );
}

#[test]
fn special_tokens_and_vocabulary() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 151_676);
    for (s, id) in [
        ("<|endoftext|>", 151643),
        ("<|im_start|>", 151644),
        ("<|im_end|>", 151645),
        ("<tool_call>", 151657),
        ("<think>", 151667),
        ("<tts_pad>", 151671),
        ("<tts_text_bos>", 151672),
        ("<tts_text_eod>", 151673),
        ("<tts_text_bos_single>", 151674),
        ("<|audio_pad|>", 151675),
    ] {
        assert_eq!(tok.token_id(s), Some(id), "{s}");
        assert_eq!(tok.encode(s).unwrap(), vec![id], "{s}");
        assert_eq!(tok.decode(&[id]).unwrap(), s);
    }
    assert_eq!(tok.token_id("assistant"), Some(77091));
    assert_eq!(tok.token_id("user"), Some(872));
    assert_eq!(tok.token_id("Ċ"), Some(198));
    assert_eq!(tok.token_id("<not a token>"), None);
    assert_eq!(tok.encode("\n").unwrap(), vec![198]);
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
    // Digits are split one per token; no BOS/EOS.
    assert_eq!(tok.encode("12").unwrap().len(), 2);
    // "iPhone" is one token with the Qwen2 regex (the Mistral regex splits it).
    assert_eq!(tok.encode("iPhone").unwrap(), vec![44740]);
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let tok = tokenizer();
    let err = tok.decode(&[9, 151_676]).unwrap_err();
    assert!(err.to_string().contains("151676"), "{err}");
}

fn expect_metadata_error(metadata: &[(String, Value)], key: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "bad.gguf", metadata);
    match TextTokenizer::from_gguf(&file) {
        Err(Error::Metadata { key: k, reason, .. }) => {
            assert_eq!(k, key, "reason: {reason}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        Err(e) => panic!("expected a metadata error for {key}, got {e}"),
        Ok(_) => panic!("expected a metadata error for {key}"),
    }
}

/// A tiny but valid vocabulary: the bytes "a", "b", the merge "a b" and one
/// added token.
fn small_metadata() -> Vec<(String, Value)> {
    vec![
        (keys::ARCHITECTURE.to_string(), Value::Str(ARCH_TTS.into())),
        (
            keys::TOKENIZER_TOKENS.to_string(),
            Value::ArrStr(vec!["a".into(), "b".into(), "ab".into(), "<x>".into()]),
        ),
        (
            keys::TOKENIZER_TOKEN_TYPE.to_string(),
            Value::ArrI32(vec![1, 1, 1, 3]),
        ),
        (
            keys::TOKENIZER_MERGES.to_string(),
            Value::ArrStr(vec!["a b".into()]),
        ),
    ]
}

fn without(md: &[(String, Value)], key: &str) -> Vec<(String, Value)> {
    md.iter().filter(|(k, _)| k != key).cloned().collect()
}

fn replaced(md: &[(String, Value)], key: &str, v: Value) -> Vec<(String, Value)> {
    let mut md = without(md, key);
    md.push((key.to_string(), v));
    md
}

#[test]
fn small_vocabulary_works() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "small.gguf", &small_metadata());
    let tok = TextTokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.vocab_size(), 4);
    assert_eq!(tok.encode("ab<x>ba").unwrap(), vec![2, 3, 1, 0]);
    assert_eq!(tok.decode(&[2, 3, 1, 0]).unwrap(), "ab<x>ba");
}

#[test]
fn malformed_metadata_is_rejected_clearly() {
    let md = small_metadata();
    expect_metadata_error(
        &without(&md, keys::TOKENIZER_MERGES),
        keys::TOKENIZER_MERGES,
        "missing",
    );
    expect_metadata_error(
        &without(&md, keys::TOKENIZER_TOKENS),
        keys::TOKENIZER_TOKENS,
        "missing",
    );
    expect_metadata_error(
        &without(&md, keys::TOKENIZER_TOKEN_TYPE),
        keys::TOKENIZER_TOKEN_TYPE,
        "missing",
    );
    expect_metadata_error(
        &replaced(&md, keys::TOKENIZER_MERGES, Value::I32(3)),
        keys::TOKENIZER_MERGES,
        "string array",
    );
    expect_metadata_error(
        &replaced(
            &md,
            keys::TOKENIZER_MERGES,
            Value::ArrStr(vec!["ab".into()]),
        ),
        keys::TOKENIZER_MERGES,
        "left right",
    );
    expect_metadata_error(
        &replaced(
            &md,
            keys::TOKENIZER_MERGES,
            Value::ArrStr(vec!["a c".into()]),
        ),
        keys::TOKENIZER_MERGES,
        "invalid BPE model",
    );
    expect_metadata_error(
        &replaced(&md, keys::TOKENIZER_TOKEN_TYPE, Value::ArrI32(vec![1, 1])),
        keys::TOKENIZER_TOKEN_TYPE,
        "entries",
    );
    expect_metadata_error(
        &replaced(
            &md,
            keys::TOKENIZER_TOKENS,
            Value::ArrStr(vec!["a".into(), "b".into(), "a".into(), "<x>".into()]),
        ),
        keys::TOKENIZER_TOKENS,
        "twice",
    );
    expect_metadata_error(
        &replaced(&md, keys::TOKENIZER_PRE, Value::Str("llama3".into())),
        keys::TOKENIZER_PRE,
        "qwen2",
    );
}
