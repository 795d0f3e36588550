//! Qwen2 byte-level BPE text tokenizer, built from the vocabulary
//! stored in our GGUF file.
//!
//! The tokenizer is assembled with the `tokenizers` crate exactly as
//! transformers' `Qwen2Converter` does for `Qwen2TokenizerFast`:
//!
//! * added tokens (`token_type` 3 = control, 4 = user-defined) are cut out of
//!   the raw text verbatim (not normalised, no lstrip/rstrip) and emitted as
//!   their ids;
//! * normaliser: Unicode NFC;
//! * pre-tokenizer: `Split` with the **genuine Qwen2 regex** ([`QWEN2_REGEX`],
//!   behaviour "isolated"), then `ByteLevel(add_prefix_space = false,
//!   use_regex = false)`;
//! * model: BPE by merge rank (no dropout, no unk token, no byte fallback);
//! * post-processor: ByteLevel (offsets only) — no BOS/EOS is ever added;
//! * decoder: ByteLevel.
//!
//! The Mistral-style regex that the official package swaps in when loading
//! from a local directory (`fix_mistral_regex=True`) is
//! deliberately *not* used.

use std::collections::HashSet;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use crate::gguf_schema::keys;
use crate::model_file::GgufFile;

/// The Qwen2 pre-tokenizer regex (transformers `Qwen2Converter`,
/// `tokenization_qwen2.PRETOKENIZE_REGEX`).
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.token_type` values (llama.cpp convention).
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The Qwen2 text tokenizer used for the talker's text prompts.
pub struct TextTokenizer {
    inner: Tokenizer,
    vocab_size: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` metadata of `file`:
    /// `tokens` (token text by id, added tokens included), `token_type`
    /// (1 normal, 3 control, 4 user-defined) and `merges` (`"a b"` lines).
    /// `tokenizer.ggml.model` / `tokenizer.ggml.pre`, when present, must be
    /// `gpt2` / `qwen2`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let meta_err = |key: &str, reason: String| Error::Metadata {
            path: file.path().to_path_buf(),
            key: key.to_string(),
            reason,
        };
        for (key, expected) in [
            (keys::TOKENIZER_MODEL, "gpt2"),
            (keys::TOKENIZER_PRE, "qwen2"),
        ] {
            match file.get_opt_str(key)? {
                Some(s) if s != expected => {
                    return Err(meta_err(
                        key,
                        format!("is '{s}', only '{expected}' is supported"),
                    ))
                }
                _ => {}
            }
        }
        let tokens = read_tokens(file)?;
        let token_types = file.get_int_array(keys::TOKENIZER_TOKEN_TYPE)?;
        if token_types.len() != tokens.len() {
            return Err(meta_err(
                keys::TOKENIZER_TOKEN_TYPE,
                format!(
                    "has {} entries but {} has {}",
                    token_types.len(),
                    keys::TOKENIZER_TOKENS,
                    tokens.len()
                ),
            ));
        }
        let merges = read_merges(file)?;
        Self::build(file, tokens, &token_types, merges)
    }

    /// The tokenizer of `tokens` (by id) of `token_types`, with `merges`.
    fn build(
        file: &GgufFile,
        tokens: Vec<String>,
        token_types: &[i64],
        merges: Vec<(String, String)>,
    ) -> Result<Self> {
        let meta_err = |key: &str, reason: String| Error::Metadata {
            path: file.path().to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let n = tokens.len();
        // Every token (added ones included) goes into the BPE vocabulary with
        // its own id, so that registering the added tokens below keeps the
        // ids of the file whatever their order.
        let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(n);
        let mut added = Vec::new();
        let mut seen = HashSet::with_capacity(n);
        for (id, (tok, &ty)) in tokens.iter().zip(token_types).enumerate() {
            if tok.is_empty() {
                return Err(meta_err(
                    keys::TOKENIZER_TOKENS,
                    format!("token {id} is an empty string"),
                ));
            }
            if !seen.insert(tok.as_str()) {
                return Err(meta_err(
                    keys::TOKENIZER_TOKENS,
                    format!("token {id} ({tok:?}) appears twice"),
                ));
            }
            vocab.insert(tok.clone(), id as u32);
            match ty {
                TOKEN_TYPE_NORMAL => {}
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED => added.push(
                    AddedToken::from(tok.clone(), ty == TOKEN_TYPE_CONTROL)
                        .normalized(false)
                        .lstrip(false)
                        .rstrip(false)
                        .single_word(false),
                ),
                other => {
                    return Err(meta_err(
                        keys::TOKENIZER_TOKEN_TYPE,
                        format!(
                            "token {id} ({tok:?}) has type {other}; only 1 (normal), \
                             3 (control) and 4 (user-defined) are supported"
                        ),
                    ))
                }
            }
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| meta_err(keys::TOKENIZER_MERGES, format!("invalid BPE model: {e}")))?;

        let split = Split::new(
            SplitPattern::Regex(QWEN2_REGEX.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Internal(format!("text tokenizer: Qwen2 regex rejected: {e}")))?;
        let pre_tokenizer = Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ]);

        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NFC))
            .map_err(|e| Error::Internal(format!("text tokenizer: {e}")))?;
        inner
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_post_processor(Some(ByteLevel::new(false, false, false)))
            .with_decoder(Some(ByteLevel::new(false, false, false)));
        let n_added = added.len();
        let registered = inner.add_tokens(added).map_err(|e| {
            meta_err(
                keys::TOKENIZER_TOKENS,
                format!("cannot register added tokens: {e}"),
            )
        })?;
        if registered != n_added {
            return Err(meta_err(
                keys::TOKENIZER_TOKENS,
                format!("only {registered} of {n_added} added tokens could be registered"),
            ));
        }
        // The added tokens must have kept the ids of the file.
        for (id, (tok, &ty)) in tokens.iter().zip(token_types).enumerate() {
            if ty != TOKEN_TYPE_NORMAL && inner.token_to_id(tok) != Some(id as u32) {
                return Err(meta_err(
                    keys::TOKENIZER_TOKENS,
                    format!("added token {tok:?} did not keep its id {id}"),
                ));
            }
        }

        Ok(Self {
            inner,
            vocab_size: n,
        })
    }

    /// Token ids of `text`: added-token strings (e.g. `<|im_start|>`) found
    /// verbatim in the text become their ids, the rest is NFC-normalised,
    /// split with the Qwen2 regex and BPE-encoded. No BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::invalid("text", format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens included, as their strings). Byte
    /// sequences that are not valid UTF-8 decode to U+FFFD. Fails for an id
    /// outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::invalid(
                "ids",
                format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    self.vocab_size
                ),
            ));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::invalid("ids", format!("cannot decode: {e}")))
    }

    /// Id of `token`, spelled as in the vocabulary: an added token verbatim
    /// (`"<tts_pad>"` → 151671), an ordinary token in its byte-level form
    /// (`"Ġthe"`, `"Ċ"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of entries in `tokenizer.ggml.tokens` (151,676 for the
    /// released files): ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// `tokenizer.ggml.tokens`: the token text by id, non-empty, ids in 32 bits.
fn read_tokens(file: &GgufFile) -> Result<Vec<String>> {
    let key = keys::TOKENIZER_TOKENS;
    let tokens = file.get_str_array(key)?;
    let bad = |reason: String| Error::Metadata {
        path: file.path().to_path_buf(),
        key: key.to_string(),
        reason,
    };
    if tokens.is_empty() {
        return Err(bad("is empty".into()));
    }
    if u32::try_from(tokens.len()).is_err() {
        return Err(bad(format!(
            "{} tokens do not fit 32-bit ids",
            tokens.len()
        )));
    }
    Ok(tokens)
}

/// `tokenizer.ggml.merges`: `"left right"` lines (a leading `#version`
/// header, as merges.txt has, is skipped).
fn read_merges(file: &GgufFile) -> Result<Vec<(String, String)>> {
    let key = keys::TOKENIZER_MERGES;
    let lines = file.get_str_array(key)?;
    let bad = |reason: String| Error::Metadata {
        path: file.path().to_path_buf(),
        key: key.to_string(),
        reason,
    };
    if lines.is_empty() {
        return Err(bad("is empty".into()));
    }
    let mut merges = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i == 0 && line.starts_with("#version") {
            continue;
        }
        match line.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(bad(format!(
                    "entry {i} ({line:?}) is not of the form \"left right\""
                )))
            }
        }
    }
    Ok(merges)
}
