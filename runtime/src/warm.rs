//! Warm voices: what a request's voice alone decides, computed once and
//! reused bit for bit by every later request with that voice.
//!
//! Two parts of a synthesis depend on the voice and not on the text:
//!
//! - the talker's keys and values of the prompt's head (instruction, role,
//!   language, speaker or x-vector; for ICL also the rows that pair the
//!   transcript with reference frames): a [`TalkerPrefix`], reused by
//!   [`Talker::prefill_warm`] for a prompt that begins with the same rows;
//! - for ICL, the vocoder's stream state after the reference frames, which
//!   the reference decodes in front of every request's own: a
//!   [`DecoderContext`], from which [`DecoderSession::resume`] goes on.
//!
//! A [`WarmCache`] keeps both for one pair of loaded models, looked up by
//! content (the prompt rows, the reference codes; a hit is checked bit for
//! bit, so a stale entry can only be unused, never wrong) and bounded by a
//! memory budget, least recently used first out. Entries carry the tag of
//! the voice that made them ([`voice_tag`]), so that a deleted or replaced
//! voice's state can be dropped at once ([`WarmCache::forget`]).
//!
//! A [`WarmUp`] builds a voice's state ahead of its first request, in small
//! steps (a few prompt rows or vocoder frames each), so that a server can
//! warm its stored voices between the frames of running requests.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::codec_decoder::{DecoderContext, DecoderSession, StreamCursor};
use crate::error::{Error, Result};
use crate::ggml::GgmlType;
use crate::pipeline::TtsModel;
use crate::prompt::{Prompt, Request, Voice};
use crate::talker::{Talker, TalkerPrefix, TalkerStep};

/// The budget of a [`WarmCache`] by default: about 25 ICL voices (a warm
/// ICL voice of a ~4 s clip holds ~10 MB, an x-vector or speaker prefix
/// ~1 MB).
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a loaded model (warm state is per model).
pub(crate) fn next_model_id() -> u64 {
    NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed)
}

/// Names a voice by its content: equal voices get equal tags.
pub fn voice_tag(voice: &Voice) -> u64 {
    let mut h = DefaultHasher::new();
    match voice {
        Voice::None => 0u8.hash(&mut h),
        Voice::Speaker(name) => {
            1u8.hash(&mut h);
            name.to_lowercase().hash(&mut h);
        }
        Voice::XVector(x) => {
            2u8.hash(&mut h);
            x.iter().for_each(|v| v.to_bits().hash(&mut h));
        }
        Voice::Icl {
            x_vector,
            ref_codes,
            ref_text,
        } => {
            3u8.hash(&mut h);
            x_vector.iter().for_each(|v| v.to_bits().hash(&mut h));
            ref_codes.hash(&mut h);
            ref_text.hash(&mut h);
        }
    }
    h.finish()
}

fn hash_rows(rows: &[f32]) -> u64 {
    let mut h = DefaultHasher::new();
    rows.iter().for_each(|v| v.to_bits().hash(&mut h));
    h.finish()
}

fn hash_frames(frames: &[Vec<u32>]) -> u64 {
    let mut h = DefaultHasher::new();
    frames.hash(&mut h);
    h.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Prefix { model: u64, ty: GgmlType, hash: u64 },
    Decoder { decoder: u64, hash: u64 },
}

#[derive(Clone)]
enum Value {
    Prefix(Arc<TalkerPrefix>),
    Decoder(Arc<DecoderContext>),
}

struct Entry {
    value: Value,
    voice: u64,
    bytes: usize,
    used: u64,
}

/// What a [`WarmCache`] holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Entries (talker prefixes and vocoder contexts) and their bytes.
    pub entries: usize,
    pub bytes: usize,
    pub budget: usize,
    /// Talker prefixes and vocoder contexts among the entries.
    pub prefixes: usize,
    pub contexts: usize,
    /// Lookups that found their state, and that had to compute it.
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to stay within the budget.
    pub evictions: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// Warm per-voice state of one pair of loaded models (see the module doc),
/// shared by every session over them (`Send + Sync`).
pub struct WarmCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl WarmCache {
    /// A cache of at most `budget_bytes` (0: disabled, nothing is kept).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            budget: budget_bytes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> WarmStats {
        let g = self.lock();
        let prefixes = g
            .entries
            .values()
            .filter(|e| matches!(e.value, Value::Prefix(_)))
            .count();
        WarmStats {
            entries: g.entries.len(),
            bytes: g.bytes,
            budget: self.budget,
            prefixes,
            contexts: g.entries.len() - prefixes,
            hits: g.hits,
            misses: g.misses,
            evictions: g.evictions,
        }
    }

    /// Looks `key` up; `check` confirms a found entry is the one asked for.
    fn get(&self, key: Key, check: impl Fn(&Value) -> bool, count: bool) -> Option<Value> {
        if !self.enabled() {
            return None;
        }
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        let found = g
            .entries
            .get_mut(&key)
            .filter(|e| check(&e.value))
            .map(|e| {
                e.used = clock;
                e.value.clone()
            });
        if count {
            match found {
                Some(_) => g.hits += 1,
                None => g.misses += 1,
            }
        }
        found
    }

    fn insert(&self, key: Key, voice: u64, value: Value, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        let mut g = self.lock();
        if let Some(old) = g.entries.remove(&key) {
            g.bytes -= old.bytes;
        }
        while g.bytes + bytes > self.budget {
            let Some(oldest) = g
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            let e = g.entries.remove(&oldest).expect("found above");
            g.bytes -= e.bytes;
            g.evictions += 1;
        }
        g.clock += 1;
        let used = g.clock;
        g.bytes += bytes;
        g.entries.insert(
            key,
            Entry {
                value,
                voice,
                bytes,
                used,
            },
        );
    }

    /// Drops every entry `voice` made (a voice deleted or replaced); returns
    /// how many.
    pub fn forget(&self, voice: &Voice) -> usize {
        let tag = voice_tag(voice);
        let mut g = self.lock();
        let before = g.entries.len();
        let mut freed = 0;
        g.entries.retain(|_, e| {
            let keep = e.voice != tag;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        g.bytes -= freed;
        before - g.entries.len()
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut g = self.lock();
        g.entries.clear();
        g.bytes = 0;
    }

    fn prefix_key(model: &TtsModel, ty: GgmlType, rows: &[f32]) -> Key {
        Key::Prefix {
            model: model.id(),
            ty,
            hash: hash_rows(rows),
        }
    }

    /// The saved talker prefix of exactly these prompt rows.
    fn prefix(
        &self,
        model: &TtsModel,
        ty: GgmlType,
        rows: &[f32],
        count: bool,
    ) -> Option<Arc<TalkerPrefix>> {
        let key = Self::prefix_key(model, ty, rows);
        let same = |v: &Value| match v {
            Value::Prefix(p) => bits_equal(p.rows(), rows),
            Value::Decoder(_) => false,
        };
        match self.get(key, same, count)? {
            Value::Prefix(p) => Some(p),
            Value::Decoder(_) => None,
        }
    }

    fn insert_prefix(&self, model: &TtsModel, voice: u64, prefix: TalkerPrefix) {
        let key = Self::prefix_key(model, prefix.ty(), prefix.rows());
        let bytes = prefix.bytes();
        self.insert(key, voice, Value::Prefix(Arc::new(prefix)), bytes);
    }

    fn context_key(session: &DecoderSession, frames: &[Vec<u32>]) -> Key {
        Key::Decoder {
            decoder: session.decoder().id(),
            hash: hash_frames(frames),
        }
    }

    fn context(
        &self,
        session: &DecoderSession,
        frames: &[Vec<u32>],
        count: bool,
    ) -> Option<Arc<DecoderContext>> {
        let same = |v: &Value| match v {
            Value::Decoder(c) => c.frames() == frames,
            Value::Prefix(_) => false,
        };
        match self.get(Self::context_key(session, frames), same, count)? {
            Value::Decoder(c) => Some(c),
            Value::Prefix(_) => None,
        }
    }

    fn insert_context(&self, session: &DecoderSession, voice: u64, context: Arc<DecoderContext>) {
        let key = Self::context_key(session, context.frames());
        let bytes = context.bytes();
        self.insert(key, voice, Value::Decoder(context), bytes);
    }

    /// [`Talker::prefill_warm`] of `prompt` from the voice's saved prefix
    /// when there is one; otherwise a whole prefill, whose voice prefix is
    /// then saved. Returns the step and the rows reused.
    pub(crate) fn prefill(
        &self,
        model: &TtsModel,
        talker: &mut Talker,
        prompt: &Prompt,
        positions: usize,
    ) -> Result<(TalkerStep, usize)> {
        let rows = prompt.voice_rows();
        let wanted = self.enabled() && prompt.voice_prefix >= MIN_PREFIX_ROWS;
        let warm = match wanted {
            true => self.prefix(model, talker.kv_type(), rows, true),
            false => None,
        };
        let out = talker.prefill_warm(&prompt.prefill, positions, warm.as_deref())?;
        if wanted && warm.is_none() {
            if let Some(p) = talker.save_prefix(prompt.voice_prefix) {
                self.insert_prefix(model, prompt.voice_tag, p);
            }
        }
        Ok(out)
    }

    /// The decoder's state after `voice`'s reference frames, from the cache
    /// or decoded now (and kept).
    pub(crate) fn decoder_context(
        &self,
        session: &mut DecoderSession,
        voice: &Voice,
        frames: &[Vec<u32>],
    ) -> Result<Arc<DecoderContext>> {
        if let Some(c) = self.context(session, frames, true) {
            return Ok(c);
        }
        let c = Arc::new(session.context(frames)?);
        if self.enabled() {
            self.insert_context(session, voice_tag(voice), c.clone());
        }
        Ok(c)
    }

    /// Starts `voice`'s ICL stream on `session`: the state after its
    /// reference frames (see [`WarmCache::decoder_context`]) resumed.
    pub(crate) fn resume_icl(
        &self,
        session: &mut DecoderSession,
        voice: &Voice,
    ) -> Result<Option<(StreamCursor, Arc<DecoderContext>)>> {
        let Voice::Icl { ref_codes, .. } = voice else {
            return Ok(None);
        };
        let c = self.decoder_context(session, voice, ref_codes)?;
        Ok(Some((session.resume(&c), c)))
    }
}

/// Shorter voice prefixes are not kept (one row is never reused).
const MIN_PREFIX_ROWS: usize = 2;

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// How much a [`WarmUp`] step computes at most: prompt rows (a prefill
/// piece; never one row alone) or reference frames of the vocoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmPiece {
    pub rows: usize,
    pub frames: usize,
}

impl WarmPiece {
    /// Between the frames of running requests: about a frame's time each
    /// (a vocoder frame; four prompt rows of the 0.6B talker).
    pub const BETWEEN_FRAMES: Self = Self { rows: 4, frames: 1 };
    /// When nothing else runs: a request that comes waits for at most
    /// one (~80 ms at 0.6B, ~120 ms at 1.7B on two cores).
    pub const IDLE: Self = Self { rows: 4, frames: 2 };
    /// Everything at once.
    pub const ALL: Self = Self {
        rows: usize::MAX,
        frames: usize::MAX,
    };
}

/// Building one voice's warm state ahead of its first request, a step at a
/// time (see [`WarmUp::step`]).
pub struct WarmUp {
    request: Request,
    stage: Stage,
}

enum Stage {
    Start,
    /// The talker prefix, `done` rows of `prompt`'s voice prefix so far.
    Prefix {
        prompt: Box<Prompt>,
        done: usize,
    },
    /// The vocoder context, decoded so far.
    Context(Box<DecoderContext>),
    Done,
}

impl WarmUp {
    /// Warms what `req`'s voice decides for requests like it: its voice,
    /// language, instruction and text layout (its text does not matter).
    pub fn new(req: &Request) -> Self {
        Self {
            request: Request {
                // Any text: only the voice's rows are computed.
                text: "Hello.".into(),
                ..req.clone()
            },
            stage: Stage::Start,
        }
    }

    /// [`WarmUp::new`] for a request with `voice` in `language` and the
    /// model's default layout, without instruction.
    pub fn voice(voice: Voice, language: &str) -> Self {
        Self::new(&Request {
            text: String::new(),
            language: language.into(),
            voice,
            instruct: None,
            non_streaming: None,
        })
    }

    /// The request whose voice is being warmed.
    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// One step of at most `piece` (prompt building and lookups aside).
    /// `talker` is a scratch talker on the model; `decoder` may hold another
    /// stream's state (it is overwritten: save it first). Returns whether the
    /// voice is warm.
    pub fn step(
        &mut self,
        cache: &WarmCache,
        model: &TtsModel,
        talker: &mut Talker,
        decoder: &mut DecoderSession,
        piece: WarmPiece,
    ) -> Result<bool> {
        loop {
            // (the start only builds the prompt: a piece follows it)
            let starting = matches!(self.stage, Stage::Start);
            self.advance(cache, model, talker, decoder, piece)?;
            if self.is_done() || (!starting && piece != WarmPiece::ALL) {
                return Ok(self.is_done());
            }
        }
    }

    /// Runs the next piece.
    fn advance(
        &mut self,
        cache: &WarmCache,
        model: &TtsModel,
        talker: &mut Talker,
        decoder: &mut DecoderSession,
        piece: WarmPiece,
    ) -> Result<()> {
        let ty = talker.kv_type();
        match &mut self.stage {
            Stage::Start => {
                if !cache.enabled() {
                    self.stage = Stage::Done;
                    return Ok(());
                }
                let prompt = Box::new(crate::pipeline::build_prompt(model, talker, &self.request)?);
                let rows = prompt.voice_rows();
                let warm = prompt.voice_prefix < MIN_PREFIX_ROWS
                    || cache.prefix(model, ty, rows, false).is_some();
                self.stage = match warm {
                    true => self.context_stage(cache, decoder),
                    false => {
                        talker.reset(prompt.voice_prefix);
                        Stage::Prefix { prompt, done: 0 }
                    }
                };
            }
            Stage::Prefix { prompt, done } => {
                let h = prompt.hidden;
                let n = prompt.voice_prefix;
                // Never a one-row piece (another kernel than a prefill's).
                let mut end = done.saturating_add(piece.rows.max(2)).min(n);
                if n - end == 1 {
                    end = n;
                }
                talker.prefill_piece(&prompt.prefill[*done * h..end * h], *done)?;
                *done = end;
                if end == n {
                    let p = talker.save_prefix(n).ok_or_else(|| {
                        Error::Internal("the voice prefix was not in the talker's cache".into())
                    })?;
                    cache.insert_prefix(model, prompt.voice_tag, p);
                    self.stage = self.context_stage(cache, decoder);
                }
            }
            Stage::Context(context) => {
                context.extend(decoder, piece.frames)?;
                if context.is_complete() {
                    let Stage::Context(c) = std::mem::replace(&mut self.stage, Stage::Done) else {
                        unreachable!("matched above")
                    };
                    cache.insert_context(decoder, voice_tag(&self.request.voice), Arc::new(*c));
                }
            }
            Stage::Done => {}
        }
        Ok(())
    }

    /// After the prefix: the vocoder context for an ICL voice not yet warm.
    fn context_stage(&self, cache: &WarmCache, decoder: &DecoderSession) -> Stage {
        match &self.request.voice {
            Voice::Icl { ref_codes, .. } if cache.context(decoder, ref_codes, false).is_none() => {
                Stage::Context(Box::new(DecoderContext::begin(ref_codes.clone())))
            }
            _ => Stage::Done,
        }
    }
}
