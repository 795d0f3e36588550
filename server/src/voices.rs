//! Stored voices: `.qvoice` files in the voices directory, loaded at start
//! and kept in memory. Writes go to a temporary file renamed into place, so
//! a failed request never loses a stored voice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qwen3_tts::model_file::Overwrite;
use qwen3_tts::voice::VoicePrompt;

/// The request a stored voice is warmed for: what a request naming it
/// gets by default (ICL when it has a transcript, language `auto`, the
/// model's default layout).
pub fn warm_request(v: &VoicePrompt) -> qwen3_tts::prompt::Request {
    qwen3_tts::prompt::Request {
        text: String::new(),
        language: "auto".into(),
        voice: v.voice(false),
        instruct: None,
        non_streaming: None,
    }
}

/// A valid voice id: `[A-Za-z0-9_-]{1,64}` (so it is a safe file name).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a voice was not stored or removed.
#[derive(Debug)]
pub enum VoiceError {
    /// A voice of that id exists and overwriting was not asked for.
    Exists,
    NotFound,
    Io(String),
}

pub struct Voices {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, Arc<VoicePrompt>>>,
}

impl Voices {
    /// Opens (creating it if needed) the voices directory and loads every
    /// `ID.qvoice` in it; unreadable files are skipped with a warning.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".qvoice"))
            else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            match VoicePrompt::load(&path) {
                Ok(v) => {
                    map.insert(id.to_string(), Arc::new(v));
                }
                Err(e) => tracing::warn!("skipping voice {}: {e}", path.display()),
            }
        }
        tracing::info!("{} stored voice(s) in {}", map.len(), dir.display());
        Ok(Self {
            dir: dir.to_path_buf(),
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<VoicePrompt>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.qvoice"))
    }

    pub fn get(&self, id: &str) -> Option<Arc<VoicePrompt>> {
        self.lock().get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Every stored voice, by id.
    pub fn list(&self) -> Vec<(String, Arc<VoicePrompt>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Stores a voice (`id` must be valid), replacing one of the same id
    /// only if `overwrite`.
    /// Returns the voice it replaced.
    pub fn save(
        &self,
        id: &str,
        voice: VoicePrompt,
        overwrite: bool,
    ) -> Result<Option<Arc<VoicePrompt>>, VoiceError> {
        debug_assert!(valid_id(id));
        let mut map = self.lock();
        let path = self.path(id);
        if !overwrite && (map.contains_key(id) || path.exists()) {
            return Err(VoiceError::Exists);
        }
        let mode = if overwrite {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        };
        // Written to a temporary file in the directory and renamed into place.
        voice.save(&path, mode).map_err(|e| match e {
            qwen3_tts::Error::OutputExists { .. } => VoiceError::Exists,
            e => VoiceError::Io(e.to_string()),
        })?;
        Ok(map.insert(id.to_string(), Arc::new(voice)))
    }

    /// Removes a stored voice; returns it.
    pub fn delete(&self, id: &str) -> Result<Arc<VoicePrompt>, VoiceError> {
        let mut map = self.lock();
        if !map.contains_key(id) {
            return Err(VoiceError::NotFound);
        }
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VoiceError::Io(e.to_string())),
        }
        map.remove(id).ok_or(VoiceError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn ids() {
        assert!(valid_id("my-voice_1"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id("a.b"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(65)));
        assert!(valid_id(&"x".repeat(64)));
    }
}
