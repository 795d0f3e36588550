//! Reusable voice prompts (`.qvoice`): what cloning a voice from reference
//! audio produces — the speaker x-vector and, for in-context cloning, the
//! reference codes and transcript — stored so a voice is encoded once.
//!
//! The file is a small GGUF (architecture `qwen3-tts-voice`) with metadata
//! only, so it is versioned and self-describing like the model files.

use std::path::Path;

use crate::config::TtsConfig;
use crate::error::{Error, Result};
use crate::ggml::gguf::Value;
use crate::gguf_schema::keys;
use crate::model_file::{write_gguf, GgufFile, Overwrite};
use crate::prompt::Voice;

pub const ARCH_VOICE: &str = "qwen3-tts-voice";
/// Layout version of voice files (bump on incompatible changes).
pub const VOICE_VERSION: u32 = 1;

mod key {
    pub const VERSION: &str = "qwen3-tts-voice.version";
    pub const MODEL_SIZE: &str = "qwen3-tts-voice.model.size";
    pub const MODEL_NAME: &str = "qwen3-tts-voice.model.name";
    pub const X_VECTOR: &str = "qwen3-tts-voice.x_vector";
    pub const REF_CODES: &str = "qwen3-tts-voice.ref_codes";
    pub const CODE_GROUPS: &str = "qwen3-tts-voice.code_groups";
    pub const REF_TEXT: &str = "qwen3-tts-voice.ref_text";
}

/// A cloned voice.
#[derive(Clone, Debug, PartialEq)]
pub struct VoicePrompt {
    /// Speaker embedding (the talker's hidden size).
    pub x_vector: Vec<f32>,
    /// In-context cloning: the reference's codes (16 per frame) and transcript.
    pub icl: Option<(Vec<Vec<u32>>, String)>,
    /// `tts_model_size` of the model it was made with (`0b6`, `1b7`).
    pub model_size: String,
    /// `general.name` of that model file (informational).
    pub model_name: String,
}

impl VoicePrompt {
    /// The talker voice: ICL when the prompt has reference codes and text,
    /// unless `x_vector_only`.
    pub fn voice(&self, x_vector_only: bool) -> Voice {
        match (&self.icl, x_vector_only) {
            (Some((codes, text)), false) => Voice::Icl {
                x_vector: self.x_vector.clone(),
                ref_codes: codes.clone(),
                ref_text: text.clone(),
            },
            _ => Voice::XVector(self.x_vector.clone()),
        }
    }

    /// Checks the prompt fits a model: same size family and x-vector width.
    pub fn check_model(&self, cfg: &TtsConfig, path: &Path) -> Result<()> {
        if self.model_size != cfg.model_size.as_str() || self.x_vector.len() != cfg.talker.hidden {
            return Err(Error::WrongModel {
                path: path.to_path_buf(),
                reason: format!(
                    "voice made with a {} model ({}-wide x-vector); this model is {} ({}-wide)",
                    self.model_size,
                    self.x_vector.len(),
                    cfg.model_size.as_str(),
                    cfg.talker.hidden
                ),
            });
        }
        Ok(())
    }

    /// Writes the prompt (refusing to replace a file unless `overwrite`).
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<()> {
        let mut meta = vec![
            (
                keys::ARCHITECTURE.to_string(),
                Value::Str(ARCH_VOICE.into()),
            ),
            (key::VERSION.to_string(), Value::U32(VOICE_VERSION)),
            (
                key::MODEL_SIZE.to_string(),
                Value::Str(self.model_size.clone()),
            ),
            (
                key::MODEL_NAME.to_string(),
                Value::Str(self.model_name.clone()),
            ),
            (
                key::X_VECTOR.to_string(),
                Value::ArrF32(self.x_vector.clone()),
            ),
        ];
        if let Some((codes, text)) = &self.icl {
            let groups = codes.first().map_or(0, Vec::len);
            let flat: Vec<i32> = codes.iter().flatten().map(|&c| c as i32).collect();
            meta.push((key::REF_CODES.to_string(), Value::ArrI32(flat)));
            meta.push((key::CODE_GROUPS.to_string(), Value::U32(groups as u32)));
            meta.push((key::REF_TEXT.to_string(), Value::Str(text.clone())));
        }
        write_gguf(path, &meta, &[], overwrite, |_, _, _| Ok(()))?.commit()
    }

    /// Reads a prompt written by [`VoicePrompt::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_VOICE)?;
        let bad = |key: &str, reason: String| Error::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let version = file.get_int(key::VERSION)?;
        if version != VOICE_VERSION as i64 {
            return Err(bad(
                key::VERSION,
                format!("version {version}; this build reads version {VOICE_VERSION}"),
            ));
        }
        let x_vector = match file.get(key::X_VECTOR) {
            Some(Value::ArrF32(v)) if !v.is_empty() => v,
            other => {
                return Err(bad(
                    key::X_VECTOR,
                    format!("expected floats, found {other:?}"),
                ))
            }
        };
        let icl = match file.get(key::REF_CODES) {
            None => None,
            Some(Value::ArrI32(flat)) => {
                let groups = file.get_int(key::CODE_GROUPS)? as usize;
                if groups == 0 || flat.len() % groups != 0 || flat.iter().any(|&c| c < 0) {
                    return Err(bad(
                        key::REF_CODES,
                        format!("{} codes in groups of {groups}", flat.len()),
                    ));
                }
                let codes = flat
                    .chunks(groups)
                    .map(|f| f.iter().map(|&c| c as u32).collect())
                    .collect();
                Some((codes, file.get_str(key::REF_TEXT)?))
            }
            Some(other) => {
                return Err(bad(
                    key::REF_CODES,
                    format!("expected integers, found {other:?}"),
                ))
            }
        };
        Ok(Self {
            x_vector,
            icl,
            model_size: file.get_str(key::MODEL_SIZE)?,
            model_name: file.get_str(key::MODEL_NAME).unwrap_or_default(),
        })
    }
}
