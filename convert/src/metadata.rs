//! GGUF metadata from the checkpoint's JSON files and text-tokenizer files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{bail, Context, Result};
use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::gguf_schema::keys;
use serde_json::Value as Json;

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json(path: &Path) -> Result<(String, Json)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let json =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    Ok((text, json))
}

/// The GGUF value for a JSON leaf (`None` for null, which is not stored).
pub fn json_leaf_value(v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Number(n) => Some(if let Some(i) = n.as_i64() {
            i32::try_from(i).map_or(Value::I64(i), Value::I32)
        } else {
            Value::F64(n.as_f64().unwrap_or(f64::NAN))
        }),
        Json::String(s) => Some(Value::Str(s.clone())),
        Json::Array(items) => Some(json_array_value(items)),
        Json::Object(_) => None,
    }
}

fn json_array_value(items: &[Json]) -> Value {
    if items
        .iter()
        .all(|x| x.as_i64().is_some_and(|i| i32::try_from(i).is_ok()))
    {
        Value::ArrI32(items.iter().map(|x| x.as_i64().unwrap() as i32).collect())
    } else if items.iter().all(|x| x.is_number()) {
        Value::ArrF32(items.iter().map(|x| x.as_f64().unwrap() as f32).collect())
    } else if items.iter().all(|x| x.is_string()) {
        Value::ArrStr(
            items
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        )
    } else {
        // Mixed or nested arrays are kept as their JSON text.
        Value::Str(Json::Array(items.to_vec()).to_string())
    }
}

/// Flattens a JSON object into `(prefix.path.to.leaf, value)` pairs; objects
/// recurse, nulls are skipped (see docs/gguf.md).
pub fn flatten(prefix: &str, json: &Json, out: &mut Vec<(String, Value)>) {
    match json {
        Json::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        leaf => {
            if let Some(v) = json_leaf_value(leaf) {
                out.push((prefix.to_string(), v));
            }
        }
    }
}

/// Name → codec id arrays from a talker config map whose values are ints or
/// one-element int lists (both occur in published configs).
fn id_map(obj: Option<&Json>, what: &str) -> Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    if let Some(Json::Object(map)) = obj {
        for (name, v) in map {
            let id = match v {
                Json::Number(n) => n.as_i64(),
                Json::Array(a) if a.len() == 1 => a[0].as_i64(),
                _ => None,
            }
            .with_context(|| {
                format!("config.json: talker_config.{what}.{name}: expected an integer id")
            })?;
            out.push((name.to_lowercase(), id as i32));
        }
    }
    out.sort();
    Ok(out)
}

/// Convenience arrays for languages and speakers (sorted by name).
pub fn speaker_and_language_arrays(config: &Json) -> Result<Vec<(String, Value)>> {
    let talker = &config["talker_config"];
    let langs = id_map(talker.get("codec_language_id"), "codec_language_id")?;
    let spks = id_map(talker.get("spk_id"), "spk_id")?;
    let dialects: Vec<String> = spks
        .iter()
        .map(|(name, _)| {
            talker["spk_is_dialect"]
                .as_object()
                .and_then(|m| m.iter().find(|(k, _)| k.to_lowercase() == *name))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    Ok(vec![
        (
            keys::LANGUAGE_NAMES.into(),
            Value::ArrStr(langs.iter().map(|l| l.0.clone()).collect()),
        ),
        (
            keys::LANGUAGE_IDS.into(),
            Value::ArrI32(langs.iter().map(|l| l.1).collect()),
        ),
        (
            keys::SPEAKER_NAMES.into(),
            Value::ArrStr(spks.iter().map(|s| s.0.clone()).collect()),
        ),
        (
            keys::SPEAKER_IDS.into(),
            Value::ArrI32(spks.iter().map(|s| s.1).collect()),
        ),
        (keys::SPEAKER_DIALECTS.into(), Value::ArrStr(dialects)),
    ])
}

/// GGUF token types (llama.cpp convention).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// The Qwen2 byte-level BPE vocabulary: `vocab.json`, `merges.txt` and the
/// added tokens of `tokenizer_config.json`, as `tokenizer.ggml.*` arrays.
pub fn text_tokenizer(dir: &Path, tokenizer_config: &Json) -> Result<Vec<(String, Value)>> {
    let vocab_path = dir.join("vocab.json");
    let (_, vocab) = read_json(&vocab_path)?;
    let vocab = vocab
        .as_object()
        .with_context(|| format!("{}: expected a token → id object", vocab_path.display()))?;
    let mut by_id: BTreeMap<i64, (String, i32)> = BTreeMap::new();
    for (tok, id) in vocab {
        let id = id.as_i64().with_context(|| {
            format!("{}: id of '{tok}' is not an integer", vocab_path.display())
        })?;
        by_id.insert(id, (tok.clone(), TOKEN_NORMAL));
    }
    if let Some(added) = tokenizer_config["added_tokens_decoder"].as_object() {
        for (id, info) in added {
            let id: i64 = id
                .parse()
                .with_context(|| format!("tokenizer_config.json: added token id '{id}'"))?;
            let content = info["content"].as_str().with_context(|| {
                format!("tokenizer_config.json: added token {id} has no content")
            })?;
            let ty = if info["special"].as_bool().unwrap_or(false) {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
            by_id.insert(id, (content.to_string(), ty));
        }
    }
    let n = by_id.keys().next_back().map_or(0, |&m| m + 1);
    if by_id.len() as i64 != n || by_id.keys().next() != Some(&0) {
        bail!(
            "{}: token ids are not contiguous from 0 ({} tokens, highest id {})",
            vocab_path.display(),
            by_id.len(),
            n - 1
        );
    }
    let (tokens, types): (Vec<String>, Vec<i32>) = by_id.into_values().unzip();

    let merges_path = dir.join("merges.txt");
    let merges_text = std::fs::read_to_string(&merges_path)
        .with_context(|| format!("{}: cannot read", merges_path.display()))?;
    let merges: Vec<String> = merges_text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with("#version"))
        .map(str::to_string)
        .collect();
    if merges.iter().any(|m| m.split(' ').count() != 2) {
        bail!(
            "{}: every merge line must hold two tokens",
            merges_path.display()
        );
    }
    Ok(vec![
        (keys::TOKENIZER_MODEL.into(), Value::Str("gpt2".into())),
        (keys::TOKENIZER_PRE.into(), Value::Str("qwen2".into())),
        (keys::TOKENIZER_TOKENS.into(), Value::ArrStr(tokens)),
        (keys::TOKENIZER_TOKEN_TYPE.into(), Value::ArrI32(types)),
        (keys::TOKENIZER_MERGES.into(), Value::ArrStr(merges)),
    ])
}
