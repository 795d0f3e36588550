//! Stored voices: `.qvoice` files in the voices directory, loaded at start
//! and kept in memory, kept in step with other servers sharing the
//! directory. Writes go to a temporary file renamed into place, so a failed
//! request never loses a stored voice and no reader sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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

/// What a rescan of the directory found another process (or a person) did.
#[derive(Debug)]
pub enum Change {
    /// A new voice file (or one first seen on a lookup).
    Added(String, Arc<VoicePrompt>),
    /// A voice whose file now holds another voice: (id, old, new).
    Replaced(String, Arc<VoicePrompt>, Arc<VoicePrompt>),
    /// A voice whose file is gone.
    Removed(String, Arc<VoicePrompt>),
}

/// How a file looked when it was read: a replaced file (written elsewhere
/// and renamed into place) has a new inode even within one mtime tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            len: m.len(),
            mtime: m.modified().ok(),
            ino: inode(&m),
        })
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

struct Entry {
    voice: Arc<VoicePrompt>,
    stamp: Stamp,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<String, Entry>,
    /// Files that did not load, as they were (not retried until they change).
    bad: BTreeMap<String, Stamp>,
    /// Voices first read on a lookup, reported by the next [`Voices::refresh`].
    found: Vec<Change>,
}

/// Temporary files of writes in progress (`model_file::write_gguf`'s names);
/// left behind only by a crash, and removed once this old.
const STALE_PARTIAL: Duration = Duration::from_secs(15 * 60);

/// The stored voices of one directory, which several servers may share (a
/// local disk or a network filesystem). Every write is a complete file
/// renamed into place, so no reader ever sees half of one; a new id is
/// linked in only if absent (one of two concurrent uploads wins, the other
/// gets [`VoiceError::Exists`]). What other servers do is seen on a lookup
/// of an unknown id at once, and by [`Voices::refresh`] (run twice a second
/// by the server) for changes and removals.
pub struct Voices {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

impl Voices {
    /// Opens (creating it if needed) the voices directory and loads every
    /// `ID.qvoice` in it; unreadable files are skipped with a warning.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let voices = Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner::default()),
        };
        voices.scan()?;
        voices.lock().found.clear();
        tracing::info!(
            "{} stored voice(s) in {}",
            voices.lock().map.len(),
            dir.display()
        );
        Ok(voices)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.qvoice"))
    }

    /// The voice `id`: from memory, or (stored by another server since the
    /// last rescan) read from the directory now.
    pub fn get(&self, id: &str) -> Option<Arc<VoicePrompt>> {
        if let Some(e) = self.lock().map.get(id) {
            return Some(e.voice.clone());
        }
        if !valid_id(id) {
            return None;
        }
        let path = self.path(id);
        let stamp = Stamp::of(&path).ok()?;
        let voice = Arc::new(VoicePrompt::load(&path).ok()?);
        let mut inner = self.lock();
        if let Some(e) = inner.map.get(id) {
            return Some(e.voice.clone()); // read meanwhile by a rescan
        }
        inner.map.insert(
            id.to_string(),
            Entry {
                voice: voice.clone(),
                stamp,
            },
        );
        inner
            .found
            .push(Change::Added(id.to_string(), voice.clone()));
        Some(voice)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().map.contains_key(id) || self.path(id).exists()
    }

    /// Every stored voice, by id.
    pub fn list(&self) -> Vec<(String, Arc<VoicePrompt>)> {
        self.lock()
            .map
            .iter()
            .map(|(k, e)| (k.clone(), e.voice.clone()))
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
        let path = self.path(id);
        // Held through the write (a small file), so a rescan meanwhile does
        // not take this server's own write for another's.
        let mut inner = self.lock();
        if !overwrite && (inner.map.contains_key(id) || path.exists()) {
            return Err(VoiceError::Exists);
        }
        let mode = if overwrite {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        };
        // Written to a temporary file in the directory and renamed (or, when
        // refusing to overwrite, linked) into place: atomic between servers.
        voice.save(&path, mode).map_err(|e| match e {
            qwen3_tts::Error::OutputExists { .. } => VoiceError::Exists,
            e => VoiceError::Io(e.to_string()),
        })?;
        let stamp = Stamp::of(&path).map_err(|e| VoiceError::Io(e.to_string()))?;
        let old = inner.map.insert(
            id.to_string(),
            Entry {
                voice: Arc::new(voice),
                stamp,
            },
        );
        Ok(old.map(|e| e.voice))
    }

    /// Removes a stored voice; returns it.
    pub fn delete(&self, id: &str) -> Result<Arc<VoicePrompt>, VoiceError> {
        // Known here, or stored by another server since the last rescan.
        let Some(voice) = self.get(id) else {
            return Err(VoiceError::NotFound);
        };
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VoiceError::Io(e.to_string())),
        }
        self.lock().map.remove(id);
        Ok(voice)
    }

    /// Rescans the directory: voices added, replaced or removed by other
    /// servers since the last look (and those first read by [`Voices::get`]),
    /// so the caller can warm or forget them; crash leftovers of writes
    /// (temporary files older than 15 minutes) are removed.
    pub fn refresh(&self) -> Vec<Change> {
        match self.scan() {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!("cannot rescan {}: {e}", self.dir.display());
                std::mem::take(&mut self.lock().found)
            }
        }
    }

    fn scan(&self) -> std::io::Result<Vec<Change>> {
        let mut seen = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".qwen3-tts-") && name.ends_with(".partial") {
                remove_if_stale(&entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".qvoice").filter(|id| valid_id(id)) else {
                continue;
            };
            if let Ok(stamp) = Stamp::of(&entry.path()) {
                seen.insert(id.to_string(), stamp);
            }
        }
        // Read what is new or changed outside the lock (files are small,
        // but a network filesystem may be slow), noting what was known then.
        let stale: Vec<(String, Stamp, Option<Stamp>)> = {
            let inner = self.lock();
            seen.iter()
                .filter_map(|(id, s)| {
                    let known = inner.map.get(id).map(|e| e.stamp);
                    (known != Some(*s) && inner.bad.get(id) != Some(s))
                        .then(|| (id.clone(), *s, known))
                })
                .collect()
        };
        let mut read = Vec::new();
        for (id, stamp, known) in stale {
            let path = self.path(&id);
            match VoicePrompt::load(&path) {
                Ok(v) => read.push((id, stamp, known, Ok(Arc::new(v)))),
                Err(e) => read.push((id, stamp, known, Err(e.to_string()))),
            }
        }
        let mut inner = self.lock();
        let mut changes = std::mem::take(&mut inner.found);
        for (id, stamp, known, voice) in read {
            // Stored (or read by a lookup) meanwhile: newer than this read,
            // which the next rescan redoes if the file changed again.
            if inner.map.get(&id).map(|e| e.stamp) != known {
                continue;
            }
            match voice {
                Ok(voice) => {
                    inner.bad.remove(&id);
                    let entry = Entry {
                        voice: voice.clone(),
                        stamp,
                    };
                    match inner.map.insert(id.clone(), entry) {
                        None => changes.push(Change::Added(id, voice)),
                        Some(old) if *old.voice != *voice => {
                            changes.push(Change::Replaced(id, old.voice, voice))
                        }
                        Some(_) => {} // the same voice, written again
                    }
                }
                Err(e) => {
                    tracing::warn!("skipping voice {}: {e}", self.path(&id).display());
                    inner.bad.insert(id, stamp);
                }
            }
        }
        let gone: Vec<String> = inner
            .map
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            // Not when this server wrote it after the listing was taken.
            if self.path(&id).exists() {
                continue;
            }
            if let Some(old) = inner.map.remove(&id) {
                changes.push(Change::Removed(id, old.voice));
            }
        }
        inner.bad.retain(|id, _| seen.contains_key(id));
        Ok(changes)
    }
}

fn remove_if_stale(path: &Path) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_PARTIAL);
    if old && std::fs::remove_file(path).is_ok() {
        tracing::info!("removed {} (left by an interrupted write)", path.display());
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
