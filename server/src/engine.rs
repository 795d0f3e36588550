//! The engine: one thread that owns the models and is the only compute of
//! the server. Speech jobs are decoded together, up to `--max-batch` at once
//! ([`BatchSynthesizer`], continuous batching: a job joins between frames
//! and leaves when done, each exactly as if alone); the rest wait in a
//! bounded queue. Voice cloning runs between frames (the batch waits).
//!
//! Front ends (the HTTP API, Wyoming) talk to it through a cloneable
//! [`Engine`] handle: a [`Job`] is the work (a [`SpeechJob`] with a sink for
//! its audio, or a voice to clone with a reply channel) plus a [`CancelFlag`]
//! the front end raises when its client goes away.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{
    self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qwen3_tts::batch::{BatchEvent, BatchSynthesizer, SequenceId};
use qwen3_tts::long_text::{part_request, pause_samples, split_text, TextPart};
use qwen3_tts::pipeline::{
    CancelFlag, GenerateOptions, Stop, StreamOptions, Synthesizer, TtsModel, MAX_REFERENCE_SECONDS,
};
use qwen3_tts::prompt::{self, Request, Voice};
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts::warm::{WarmCache, WarmPiece, WarmStats, WarmUp};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::metrics;

/// One utterance to synthesize.
#[derive(Debug)]
pub struct SpeechJob {
    /// Request id (for the log).
    pub id: String,
    /// The voice as the client named it (for the log).
    pub voice_name: String,
    pub request: Request,
    pub options: GenerateOptions,
    pub stream: StreamOptions,
}

/// What a speech job reports to its front end, in this order: `Started`
/// (the request was accepted and generation begins), `Audio` chunks, then
/// `Done` or `Failed` (which may also come first).
#[derive(Debug)]
pub enum Event {
    Started,
    /// Mono samples at the vocoder's rate, continuing the previous chunk.
    Audio(Vec<f32>),
    Done(Summary),
    Failed(JobError),
}

/// Figures of a finished speech job.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub frames: usize,
    pub samples: usize,
    /// Seconds from the job's arrival to its first audio.
    pub first_audio: f64,
    /// Seconds from the job's arrival to its end.
    pub total: f64,
}

/// Why a job did not complete.
#[derive(Debug)]
pub enum JobError {
    /// The front end raised the cancel flag (its client went away).
    Cancelled,
    /// The job ran past its deadline.
    Timeout,
    /// The model could not be loaded.
    NotLoaded(String),
    /// The library refused or failed the request.
    Failed(qwen3_tts::Error),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Cancelled => f.write_str("cancelled"),
            JobError::Timeout => f.write_str("request timed out"),
            JobError::NotLoaded(e) => write!(f, "the model is not loaded: {e}"),
            JobError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// The work of a job.
pub enum Work {
    Speech {
        job: Box<SpeechJob>,
        events: tmpsc::UnboundedSender<Event>,
    },
    /// Clones a voice from an audio file (any format the library reads) and
    /// its optional transcript (in-context cloning).
    CloneVoice {
        audio: PathBuf,
        transcript: Option<String>,
        reply: oneshot::Sender<Result<VoicePrompt, JobError>>,
    },
}

/// A job for the engine.
pub struct Job {
    pub work: Work,
    pub cancel: CancelFlag,
    /// When the request arrived (time to first audio and the deadline count from here).
    pub received: Instant,
    /// When the job is given up (cancelled with [`JobError::Timeout`]).
    pub deadline: Instant,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: try again later.
    Full,
    /// The engine has stopped.
    Stopped,
}

/// The engine's state for `/health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Loading,
    Ready,
    Failed(String),
}

struct Shared {
    queued: AtomicUsize,
    active: AtomicUsize,
    model: OnceLock<Arc<TtsModel>>,
    sample_rate: OnceLock<u32>,
    load_error: OnceLock<String>,
    /// Voices' warm state (once the model is loaded).
    warm: OnceLock<Arc<WarmCache>>,
    /// The device the models compute on (once loaded).
    device: OnceLock<String>,
}

/// Work on voices' warm state, outside the speech queue (it never makes a
/// request wait in line or get 429).
enum WarmMsg {
    /// Build the warm state of a request's voice (in the background); the
    /// voice's name for the log.
    Warm(Box<Request>, String),
    /// A voice went away: drop its pending warm-ups.
    Forget(Voice),
}

/// A handle on the engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    warm_tx: Sender<WarmMsg>,
    shared: Arc<Shared>,
    max_part_chars: usize,
}

/// Where the engine loads its models from.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// 0: adaptive (up to the physical cores, fewer while the machine is busy).
    pub threads: usize,
    /// Jobs that may wait beyond the running ones.
    pub max_queue: usize,
    /// Speech jobs decoded together (1 to `qwen3_tts::batch::MAX_BATCH`).
    pub max_batch: usize,
    /// A longer `input` is spoken in parts ([`split_text`]; 0: never cut).
    pub max_part_chars: usize,
    /// The talker's KV cache type (`None`: the model's default).
    pub kv_cache: Option<qwen3_tts::ggml::GgmlType>,
    /// Memory for voices' warm state, in bytes (0: none kept).
    pub voice_cache_bytes: usize,
    /// Where the models compute (`None`: the CPU).
    pub device: Option<qwen3_tts::ggml::device::DeviceInfo>,
}

impl Engine {
    /// Starts the engine thread, which loads the models first (see
    /// [`Engine::state`]); the thread ends once every handle is dropped and
    /// the queue is drained.
    pub fn start(cfg: EngineConfig) -> std::io::Result<(Engine, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(cfg.max_queue);
        let (warm_tx, warm_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            model: OnceLock::new(),
            sample_rate: OnceLock::new(),
            load_error: OnceLock::new(),
            warm: OnceLock::new(),
            device: OnceLock::new(),
        });
        let s = shared.clone();
        let max_part_chars = cfg.max_part_chars;
        let handle = std::thread::Builder::new()
            .name("qwen3-tts-engine".into())
            .spawn(move || run(cfg, rx, warm_rx, s))?;
        Ok((
            Engine {
                tx,
                warm_tx,
                shared,
                max_part_chars,
            },
            handle,
        ))
    }

    /// Builds the warm state of `req`'s voice (for its language, instruction
    /// and layout) in the background: between the frames of running
    /// requests, a piece at a time, after the model has loaded.
    pub fn warm(&self, req: Request, name: &str) {
        let _ = self
            .warm_tx
            .send(WarmMsg::Warm(Box::new(req), name.to_string()));
    }

    /// Drops a stored voice's warm state now (deleted or replaced), in both
    /// its forms (ICL and x-vector only), and its pending warm-ups.
    pub fn forget(&self, voice: &VoicePrompt) {
        for form in [voice.voice(false), voice.voice(true)] {
            if let Some(cache) = self.shared.warm.get() {
                cache.forget(&form);
            }
            let _ = self.warm_tx.send(WarmMsg::Forget(form));
        }
    }

    /// What the warm-state cache holds and has done (once loaded).
    pub fn warm_stats(&self) -> Option<WarmStats> {
        self.shared.warm.get().map(|c| c.stats())
    }

    /// Queues a job, or says why not (the job is dropped then).
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        // Counted first: the engine may take the job at once.
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    pub fn state(&self) -> State {
        if let Some(e) = self.shared.load_error.get() {
            State::Failed(e.clone())
        } else if self.shared.model.get().is_some() {
            State::Ready
        } else {
            State::Loading
        }
    }

    /// The loaded model (its configuration, tokenizer), once ready.
    pub fn model(&self) -> Option<&Arc<TtsModel>> {
        self.shared.model.get()
    }

    /// The device the models compute on ("cpu", "vulkan:0", …), once loaded.
    pub fn device(&self) -> Option<&str> {
        self.shared.device.get().map(String::as_str)
    }

    /// The vocoder's sample rate, once ready.
    pub fn sample_rate(&self) -> Option<u32> {
        self.shared.sample_rate.get().copied()
    }

    /// The parts a speech `input` is spoken in (one unless it is long).
    pub fn input_parts(&self, input: &str) -> usize {
        split_text(input, self.max_part_chars).len().max(1)
    }

    /// Jobs waiting (not counting the running ones).
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Jobs running (0 to `--max-batch`).
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

/// A voice being warmed, with what the log says of it.
struct Warming {
    w: WarmUp,
    name: String,
    queued: Instant,
    pieces: usize,
    /// Seconds of the longest piece (what a running request waited at most).
    longest: f64,
    busy: f64,
}

/// The engine's warm-ups: voices to warm, the first one in progress.
#[derive(Default)]
struct WarmQueue {
    pending: VecDeque<Warming>,
    /// Engine steps since the last piece while requests ran.
    since: usize,
}

/// While requests run, a warm-up piece (up to about a frame's work) comes
/// after this many of their frames: they slow by a third, not by half.
const WARM_EVERY_FRAMES: usize = 3;

impl WarmQueue {
    fn push(&mut self, req: &Request, name: String) {
        self.pending.push_back(Warming {
            w: WarmUp::new(req),
            name,
            queued: Instant::now(),
            pieces: 0,
            longest: 0.0,
            busy: 0.0,
        });
    }

    /// Takes the messages that came.
    fn receive(&mut self, rx: &Receiver<WarmMsg>, cache: &WarmCache) {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WarmMsg::Warm(req, name) => self.push(&req, name),
                WarmMsg::Forget(voice) => {
                    self.pending.retain(|w| w.w.request().voice != voice);
                    // (a warm-up that finished meanwhile)
                    cache.forget(&voice);
                }
            }
        }
    }

    /// One piece of the first warm-up.
    fn step(&mut self, batch: &mut BatchSynthesizer) {
        let Some(w) = self.pending.front_mut() else {
            return;
        };
        let busy = !batch.is_empty();
        if busy {
            self.since += 1;
            if self.since < WARM_EVERY_FRAMES {
                return;
            }
        }
        self.since = 0;
        let piece = match busy {
            false => WarmPiece::IDLE,
            true => WarmPiece::BETWEEN_FRAMES,
        };
        let started = Instant::now();
        let done = batch.warm_up(&mut w.w, piece);
        let elapsed = started.elapsed().as_secs_f64();
        w.pieces += 1;
        w.busy += elapsed;
        if busy {
            w.longest = w.longest.max(elapsed);
        }
        match done {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    "voice {} warm in {:.2} s ({:.2} s of compute in {} pieces; longest while \
                     requests ran: {:.0} ms)",
                    w.name,
                    w.queued.elapsed().as_secs_f64(),
                    w.busy,
                    w.pieces,
                    w.longest * 1e3
                );
                self.pending.pop_front();
            }
            Err(e) => {
                tracing::warn!("warming voice {} failed: {e}", w.name);
                self.pending.pop_front();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn run(cfg: EngineConfig, rx: Receiver<Job>, warm_rx: Receiver<WarmMsg>, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut synth =
        match Synthesizer::load_on(&cfg.model, &cfg.tokenizer, cfg.threads, cfg.device.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("loading the model failed: {msg}");
                let _ = shared.load_error.set(msg.clone());
                for job in rx {
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    fail(job, JobError::NotLoaded(msg.clone()));
                }
                return;
            }
        };
    let mut batch = BatchSynthesizer::new(
        synth.model.clone(),
        synth.vocoder.clone(),
        cfg.threads,
        cfg.max_batch,
    );
    if let Err(e) = cfg.kv_cache.map_or(Ok(()), |ty| batch.set_kv_type(ty)) {
        tracing::error!("{e}; keeping the model's default KV cache type");
    }
    let cache = Arc::new(WarmCache::new(cfg.voice_cache_bytes));
    synth.set_warm_cache(cache.clone());
    batch.set_warm_cache(cache.clone());
    let _ = shared.warm.set(cache.clone());
    let _ = shared.sample_rate.set(synth.vocoder.sample_rate());
    let _ = shared.model.set(synth.model.clone());
    let _ = shared.device.set(synth.device());
    tracing::info!(
        "model ready: {} {:?} {} on {} in {:.2} s, up to {} requests at once, {} KV cache, \
         voice cache {} MiB",
        synth.model.name,
        synth.model.config.model_type,
        synth.model.config.model_size,
        synth.device(),
        started.elapsed().as_secs_f64(),
        batch.max_batch(),
        batch.kv_type().name(),
        cfg.voice_cache_bytes >> 20
    );
    let mut engine = Running {
        batch,
        jobs: HashMap::new(),
        shared: shared.clone(),
        max_part_chars: cfg.max_part_chars,
    };
    let mut warming = WarmQueue::default();
    // A CustomVoice model's preset speakers are warmed first (about 2 MB
    // each), then the stored voices the front end sent.
    for s in &synth.model.config.speakers {
        let req = Request {
            text: String::new(),
            language: "auto".into(),
            voice: Voice::Speaker(s.name.clone()),
            instruct: None,
            non_streaming: None,
        };
        warming.push(&req, s.name.clone());
    }
    loop {
        warming.receive(&warm_rx, &cache);
        // Wait for work when idle (looking at the warm-ups now and then);
        // between frames take at most one job (a prefill makes the running
        // streams wait), while there is room.
        let job = if engine.batch.is_empty() && warming.is_empty() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else if engine.batch.is_empty() {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else if engine.batch.has_room() {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                // Handles gone: finish the running jobs, then stop.
                Err(TryRecvError::Disconnected) => None,
            }
        } else {
            None
        };
        if let Some(job) = job {
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            let Job {
                work,
                cancel,
                received,
                deadline,
            } = job;
            match work {
                Work::Speech { job, events } => {
                    engine.join(*job, events, cancel, received, deadline)
                }
                Work::CloneVoice {
                    audio,
                    transcript,
                    reply,
                } => {
                    let r = clone_voice(&mut synth, &audio, transcript.as_deref());
                    let _ = reply.send(r.map_err(JobError::Failed));
                }
            }
        }
        engine.step();
        // Warm-ups: a piece per frame of the running requests, or while idle.
        warming.step(&mut engine.batch);
    }
}

/// The speech jobs in the batch.
struct Running {
    batch: BatchSynthesizer,
    /// Each job under the sequence of the part being decoded.
    jobs: HashMap<SequenceId, Active>,
    shared: Arc<Shared>,
    max_part_chars: usize,
}

/// What the engine keeps of a job while it is decoded.
struct Active {
    job: SpeechJob,
    events: tmpsc::UnboundedSender<Event>,
    cancel: CancelFlag,
    received: Instant,
    deadline: Instant,
    /// The input's parts (one unless it is long), and the one being decoded.
    parts: Vec<TextPart>,
    part: usize,
    /// Frames of the current part so far, and of the parts before it.
    frames: usize,
    done_frames: usize,
    /// Samples sent for the parts before the current one (pauses included).
    done_samples: usize,
    first_audio: Option<f64>,
    timed_out: bool,
}

fn fail(job: Job, err: JobError) {
    let total = job.received.elapsed().as_secs_f64();
    match job.work {
        Work::Speech { job, events } => {
            tracing::info!("request {} outcome=error error={err}", job.id);
            metrics::request_done("error", None, total, 0);
            let _ = events.send(Event::Failed(err));
        }
        Work::CloneVoice { reply, .. } => {
            let _ = reply.send(Err(err));
        }
    }
}

fn clone_voice(
    synth: &mut Synthesizer,
    audio: &std::path::Path,
    transcript: Option<&str>,
) -> qwen3_tts::Result<VoicePrompt> {
    let rate = synth.model.cloning()?.config.sample_rate;
    let samples = qwen3_tts::audio::load_resampled_with_limit(audio, rate, MAX_REFERENCE_SECONDS)?;
    synth.clone_voice(&samples.samples, transcript)
}

impl Running {
    /// Starts a speech job in the batch (or ends it at once: expired,
    /// cancelled, refused).
    fn join(
        &mut self,
        job: SpeechJob,
        events: tmpsc::UnboundedSender<Event>,
        cancel: CancelFlag,
        received: Instant,
        deadline: Instant,
    ) {
        let parts = split_text(&job.request.text, self.max_part_chars);
        let active = Active {
            job,
            events,
            cancel,
            received,
            deadline,
            parts,
            part: 0,
            frames: 0,
            done_frames: 0,
            done_samples: 0,
            first_audio: None,
            timed_out: false,
        };
        let checked = (|| {
            let model = self.batch.model().clone();
            prompt::validate(&model.config, &active.job.request).map_err(JobError::Failed)?;
            active.job.options.validate().map_err(JobError::Failed)?;
            active
                .events
                .send(Event::Started)
                .map_err(|_| JobError::Cancelled)
        })();
        match checked {
            Ok(()) => self.start_part(active),
            Err(e) => self.finish(active, Err(e)),
        }
    }

    /// Starts the job's current part in the batch (or ends the job: expired,
    /// cancelled, refused).
    fn start_part(&mut self, active: Active) {
        let started = (|| {
            if Instant::now() >= active.deadline {
                return Err(JobError::Timeout);
            }
            if active.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let (req, mut opts) = part_request(
                &active.job.request,
                &active.job.options,
                &active.parts[active.part],
                active.part,
            );
            opts.cancel = Some(active.cancel.clone());
            self.batch
                .join(&req, &opts, &active.job.stream)
                .map_err(|e| match e {
                    qwen3_tts::Error::Cancelled => JobError::Cancelled,
                    e => JobError::Failed(e),
                })
        })();
        match started {
            Ok(id) => {
                self.jobs.insert(id, active);
                self.shared.active.store(self.jobs.len(), Ordering::SeqCst);
            }
            Err(e) => self.finish(active, Err(e)),
        }
    }

    /// A part of a long input is done: the pause after it, then the next.
    fn next_part(&mut self, mut a: Active, frames: usize, samples: usize) {
        let rate = self.batch.vocoder().sample_rate();
        let pause = vec![0.0; pause_samples(a.parts[a.part].boundary, rate)];
        a.done_frames += frames;
        a.done_samples += samples + pause.len();
        a.frames = 0;
        a.part += 1;
        if a.events.send(Event::Audio(pause)).is_err() {
            a.cancel.cancel();
        }
        self.start_part(a);
    }

    /// One frame of every running job; finished ones report and leave.
    fn step(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // Time limits: a job past its deadline is cancelled (and reported so).
        let now = Instant::now();
        for a in self.jobs.values_mut() {
            if now >= a.deadline && !a.cancel.is_cancelled() {
                a.timed_out = true;
                a.cancel.cancel();
            }
        }
        metrics::batch_step(self.batch.len());
        let mut ended = Vec::new();
        let jobs = &mut self.jobs;
        self.batch.step(|id, event| {
            let Some(a) = jobs.get_mut(&id) else { return };
            match event {
                BatchEvent::Audio(chunk) => {
                    a.frames = chunk.frames;
                    if !chunk.samples.is_empty() {
                        a.first_audio
                            .get_or_insert_with(|| a.received.elapsed().as_secs_f64());
                        if a.events.send(Event::Audio(chunk.samples.to_vec())).is_err() {
                            // The client went away: the batch drops it next step.
                            a.cancel.cancel();
                        }
                    }
                }
                BatchEvent::Done(summary) => {
                    if summary.stop == Stop::RunawayGuard {
                        tracing::warn!(
                            "request {}: the model did not end its speech; stopped at {} frames, \
                             the most this text should take (max_frames sets another limit)",
                            a.job.id,
                            summary.frames.len()
                        );
                        metrics::runaway_stop();
                    }
                    ended.push((id, Ok((summary.frames.len(), summary.samples))))
                }
                BatchEvent::Failed(e) => ended.push((id, Err(e))),
            }
        });
        for (id, outcome) in ended {
            let Some(a) = self.jobs.remove(&id) else {
                continue;
            };
            if let Ok((frames, samples)) = outcome {
                if a.part + 1 < a.parts.len() {
                    self.next_part(a, frames, samples);
                    continue;
                }
            }
            // Counted out first, so that a client that has its answer sees
            // the engine without it.
            self.shared.active.store(self.jobs.len(), Ordering::SeqCst);
            let outcome = outcome.map_err(|e| match e {
                qwen3_tts::Error::Cancelled if a.timed_out => JobError::Timeout,
                qwen3_tts::Error::Cancelled => JobError::Cancelled,
                e => JobError::Failed(e),
            });
            self.finish(a, outcome);
        }
        self.shared.active.store(self.jobs.len(), Ordering::SeqCst);
    }

    /// Logs a job's end, counts it and sends its last word.
    fn finish(&self, a: Active, result: Result<(usize, usize), JobError>) {
        let chars = a.job.request.text.chars().count();
        let parts = match a.parts.len() {
            1 => String::new(),
            n => format!(" parts={}/{n}", (a.part + 1).min(n)),
        };
        let total = a.received.elapsed().as_secs_f64();
        // All parts' (a long input is spoken in parts).
        let result = result.map(|(f, s)| (a.done_frames + f, a.done_samples + s));
        let frames = match &result {
            Ok((frames, _)) => *frames,
            Err(_) => a.done_frames + a.frames,
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(JobError::Cancelled) => "cancelled",
            Err(JobError::Timeout) => "timeout",
            Err(JobError::Failed(qwen3_tts::Error::InvalidRequest { .. })) => "invalid",
            Err(_) => "error",
        };
        let ttfa = a
            .first_audio
            .map_or("-".to_string(), |t| format!("{t:.3}s"));
        match &result {
            Ok(_) | Err(JobError::Cancelled) | Err(JobError::Timeout) => tracing::info!(
                "request {} voice={} chars={chars}{parts} frames={frames} first_audio={ttfa} total={total:.3}s outcome={outcome}",
                a.job.id,
                a.job.voice_name
            ),
            Err(e) => tracing::info!(
                "request {} voice={} chars={chars}{parts} frames={frames} first_audio={ttfa} total={total:.3}s outcome={outcome} error={e}",
                a.job.id,
                a.job.voice_name
            ),
        }
        metrics::request_done(outcome, a.first_audio, total, frames);
        let last = match result {
            Ok((frames, samples)) => Event::Done(Summary {
                frames,
                samples,
                first_audio: a.first_audio.unwrap_or(total),
                total,
            }),
            Err(e) => Event::Failed(e),
        };
        let _ = a.events.send(last);
    }
}
