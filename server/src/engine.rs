//! The engine: one thread that owns the [`Synthesizer`] and runs one job at a
//! time from a bounded queue. It is the only compute of the server.
//!
//! Front ends (the HTTP API, later Wyoming) talk to it through a cloneable
//! [`Engine`] handle: a [`Job`] is the work (a [`SpeechJob`] with a sink for
//! its audio, or a voice to clone with a reply channel) plus a [`CancelFlag`]
//! the front end raises when its client goes away. A batching engine can
//! replace this one behind the same handle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qwen3_tts::pipeline::{
    CancelFlag, GenerateOptions, StreamOptions, Synthesizer, TtsModel, MAX_REFERENCE_SECONDS,
};
use qwen3_tts::prompt::{self, Request};
use qwen3_tts::voice::VoicePrompt;
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
    watchdog: Watchdog,
}

/// A handle on the engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

/// Where the engine loads its models from.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// 0: adaptive (up to the physical cores, fewer while the machine is busy).
    pub threads: usize,
    /// Jobs that may wait beyond the running one.
    pub max_queue: usize,
}

impl Engine {
    /// Starts the engine thread, which loads the models first (see
    /// [`Engine::state`]); the thread ends once every handle is dropped and
    /// the queue is drained.
    pub fn start(cfg: EngineConfig) -> std::io::Result<(Engine, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(cfg.max_queue);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            model: OnceLock::new(),
            sample_rate: OnceLock::new(),
            load_error: OnceLock::new(),
            watchdog: Watchdog::default(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("qwen3-tts-watchdog".into())
            .spawn(move || s.watchdog.run())?;
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("qwen3-tts-engine".into())
            .spawn(move || run(cfg, rx, s))?;
        Ok((Engine { tx, shared }, handle))
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

    /// The vocoder's sample rate, once ready.
    pub fn sample_rate(&self) -> Option<u32> {
        self.shared.sample_rate.get().copied()
    }

    /// Jobs waiting (not counting the one running).
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Jobs running (0 or 1).
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

fn run(cfg: EngineConfig, rx: Receiver<Job>, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut synth = match Synthesizer::load(&cfg.model, &cfg.tokenizer, cfg.threads) {
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
    let _ = shared.sample_rate.set(synth.vocoder.sample_rate());
    let _ = shared.model.set(synth.model.clone());
    tracing::info!(
        "model ready: {} {:?} {} in {:.2} s",
        synth.model.name,
        synth.model.config.model_type,
        synth.model.config.model_size,
        started.elapsed().as_secs_f64()
    );
    for job in rx {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        shared.active.store(1, Ordering::SeqCst);
        let Job {
            work,
            cancel,
            received,
            deadline,
        } = job;
        // The last word is sent once the engine is free again, so that a
        // client that has its answer sees an idle engine.
        match work {
            Work::Speech { job, events } => {
                let last = speech(
                    &mut synth, &shared, *job, &events, cancel, received, deadline,
                );
                shared.active.store(0, Ordering::SeqCst);
                let _ = events.send(last);
            }
            Work::CloneVoice {
                audio,
                transcript,
                reply,
            } => {
                let r = clone_voice(&mut synth, &audio, transcript.as_deref());
                shared.active.store(0, Ordering::SeqCst);
                let _ = reply.send(r.map_err(JobError::Failed));
            }
        }
    }
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

fn speech(
    synth: &mut Synthesizer,
    shared: &Shared,
    job: SpeechJob,
    events: &tmpsc::UnboundedSender<Event>,
    cancel: CancelFlag,
    received: Instant,
    deadline: Instant,
) -> Event {
    let chars = job.request.text.chars().count();
    let mut frames = 0;
    let mut first_audio: Option<f64> = None;
    let result = (|| {
        if Instant::now() >= deadline {
            return Err(JobError::Timeout);
        }
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let mut opts = job.options.clone();
        opts.cancel = Some(cancel.clone());
        prompt::validate(&synth.model.config, &job.request).map_err(JobError::Failed)?;
        opts.validate().map_err(JobError::Failed)?;
        events
            .send(Event::Started)
            .map_err(|_| JobError::Cancelled)?;
        shared.watchdog.arm(deadline, cancel.clone());
        let r = synth.synthesize_stream(&job.request, &opts, &job.stream, |chunk| {
            frames = chunk.frames;
            if !chunk.samples.is_empty() {
                first_audio.get_or_insert_with(|| received.elapsed().as_secs_f64());
                events
                    .send(Event::Audio(chunk.samples.to_vec()))
                    .map_err(|_| qwen3_tts::Error::Cancelled)?;
            }
            Ok(())
        });
        let timed_out = shared.watchdog.disarm();
        match r {
            Ok(s) => Ok((s.frames.len(), s.samples)),
            Err(qwen3_tts::Error::Cancelled) if timed_out => Err(JobError::Timeout),
            Err(qwen3_tts::Error::Cancelled) => Err(JobError::Cancelled),
            Err(e) => Err(JobError::Failed(e)),
        }
    })();
    let total = received.elapsed().as_secs_f64();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(JobError::Cancelled) => "cancelled",
        Err(JobError::Timeout) => "timeout",
        Err(JobError::Failed(qwen3_tts::Error::InvalidRequest { .. })) => "invalid",
        Err(_) => "error",
    };
    let ttfa = first_audio.map_or("-".to_string(), |t| format!("{t:.3}s"));
    match &result {
        Ok(_) | Err(JobError::Cancelled) | Err(JobError::Timeout) => tracing::info!(
            "request {} voice={} chars={chars} frames={frames} first_audio={ttfa} total={total:.3}s outcome={outcome}",
            job.id,
            job.voice_name
        ),
        Err(e) => tracing::info!(
            "request {} voice={} chars={chars} frames={frames} first_audio={ttfa} total={total:.3}s outcome={outcome} error={e}",
            job.id,
            job.voice_name
        ),
    }
    metrics::request_done(outcome, first_audio, total, frames);
    match result {
        Ok((frames, samples)) => Event::Done(Summary {
            frames,
            samples,
            first_audio: first_audio.unwrap_or(total),
            total,
        }),
        Err(e) => Event::Failed(e),
    }
}

/// Raises the running job's cancel flag at its deadline.
#[derive(Default)]
struct Watchdog {
    current: Mutex<Option<Armed>>,
    wake: Condvar,
}

struct Armed {
    deadline: Instant,
    cancel: CancelFlag,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(&self, deadline: Instant, cancel: CancelFlag) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *cur = Some(Armed {
            deadline,
            cancel,
            fired: Arc::new(AtomicBool::new(false)),
        });
        self.wake.notify_all();
    }

    /// Ends the watch; true if the deadline had passed.
    fn disarm(&self) -> bool {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.take()
            .is_some_and(|a| a.fired.load(Ordering::SeqCst) || Instant::now() >= a.deadline)
    }

    fn run(&self) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let wait = match cur.as_ref() {
                Some(a) if !a.fired.load(Ordering::SeqCst) => {
                    let now = Instant::now();
                    if now >= a.deadline {
                        a.fired.store(true, Ordering::SeqCst);
                        a.cancel.cancel();
                        Duration::from_secs(3600)
                    } else {
                        a.deadline - now
                    }
                }
                _ => Duration::from_secs(3600),
            };
            cur = self
                .wake
                .wait_timeout(cur, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
