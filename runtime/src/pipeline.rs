//! Text in, 16-codebook speech codes out, and on to audio: the loaded models
//! (shared, immutable) and the sessions that run one utterance at a time on
//! them, with the reference's decode loop (see docs/architecture.md).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::code_predictor::{CodePredictor, CodePredictorWeights};
use crate::codec_decoder::{
    CodecDecoder, DecoderContext, DecoderOptions, DecoderSession, StreamCursor,
};
use crate::codec_encoder::CodecEncoder;
use crate::config::TtsConfig;
use crate::error::{Error, Result};
use crate::ggml::device::DeviceInfo;
use crate::ggml::{Backend, GgmlType, TensorStore};
use crate::gguf_schema::{tensors, ARCH_TTS};
use crate::model_file::GgufFile;
use crate::prompt::{self, Embedder, Prompt, Request};
use crate::sampler::{Sampler, SamplingParams, TalkerProcessors};
use crate::speaker_encoder::SpeakerEncoder;
use crate::talker::{Talker, TalkerWeights};
use crate::text_tokenizer::TextTokenizer;
use crate::threads::ThreadGovernor;
use crate::voice::VoicePrompt;
use crate::warm::{WarmCache, WarmPiece, WarmUp, DEFAULT_BUDGET_BYTES};
use crate::weights::{load_weights_with, WeightSource};

pub use crate::threads::default_threads;

/// Sampling and stopping settings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub talker: SamplingParams,
    pub subtalker: SamplingParams,
    pub repetition_penalty: f32,
    /// Talker samples at most (frames = samples − 1, as the reference).
    pub max_new_tokens: usize,
    /// Also stop at the runaway guard's bound for the text
    /// ([`runaway_frames`]), for a generation that misses its end code. On
    /// by default; [`GenerateOptions::set_max_new_tokens`] (a caller's own
    /// limit) turns it off.
    pub runaway_guard: bool,
    /// EOS is blocked until this many samples (reference: 2).
    pub min_new_tokens: usize,
    pub seed: u64,
    /// Frames the talker's KV cache is first sized for; it grows (doubling)
    /// past that, so long texts cost memory only when they happen.
    pub reserve_frames: usize,
    /// Raised from another thread, stops the generation at the next frame
    /// with [`Error::Cancelled`] (a client that went away, a time limit).
    pub cancel: Option<CancelFlag>,
}

/// A shared flag that cancels a running generation (see
/// [`GenerateOptions::cancel`]); clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl GenerateOptions {
    /// The model's `generation_config.json` defaults.
    pub fn from_config(cfg: &TtsConfig) -> Self {
        let g = &cfg.generation;
        Self {
            talker: SamplingParams {
                do_sample: g.do_sample,
                temperature: g.temperature,
                top_k: g.top_k,
                top_p: g.top_p,
            },
            subtalker: SamplingParams {
                do_sample: g.subtalker_do_sample,
                temperature: g.subtalker_temperature,
                top_k: g.subtalker_top_k,
                top_p: g.subtalker_top_p,
            },
            repetition_penalty: g.repetition_penalty,
            max_new_tokens: g.max_new_tokens,
            runaway_guard: true,
            min_new_tokens: 2,
            seed: 0,
            reserve_frames: 256,
            cancel: None,
        }
    }

    /// Checks every setting (errors name the option).
    pub fn validate(&self) -> Result<()> {
        self.talker.validate().map_err(|e| {
            Error::invalid("temperature/top_k/top_p", format!("talker sampling: {e}"))
        })?;
        self.subtalker.validate().map_err(|e| {
            Error::invalid("subtalker sampling", format!("sub-talker sampling: {e}"))
        })?;
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::invalid(
                "repetition_penalty",
                format!(
                    "must be a finite number > 0 (1 = off), got {}",
                    self.repetition_penalty
                ),
            ));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::invalid("max_new_tokens", "must be at least 1"));
        }
        Ok(())
    }

    /// A limit of the caller's own (`n` talker samples, `n` − 1 frames), in
    /// place of the runaway guard's.
    pub fn set_max_new_tokens(&mut self, n: usize) {
        self.max_new_tokens = n;
        self.runaway_guard = false;
    }

    /// The most talker samples for `prompt`, and why that many.
    pub(crate) fn token_limit(&self, prompt: &Prompt) -> (usize, Stop) {
        // (never below the caller's minimum)
        let guard = (runaway_frames(prompt.text_tokens()) + 1).max(self.min_new_tokens);
        match self.runaway_guard && guard < self.max_new_tokens {
            true => (guard, Stop::RunawayGuard),
            false => (self.max_new_tokens, Stop::Limit),
        }
    }

    /// Both samplers greedy (the deterministic reference setting).
    pub fn greedy(mut self) -> Self {
        self.talker = SamplingParams::greedy();
        self.subtalker = SamplingParams::greedy();
        self
    }
}

/// Codec frames per second: the 12 Hz family's 80 ms frames.
pub const FRAMES_PER_SECOND: f64 = 12.5;

/// The runaway guard's allowance before the text: a short input (a word, a
/// digit) may take a breath and a pause around it.
pub const RUNAWAY_LEAD_SECONDS: f64 = 5.0;
/// And per text token. Speech runs at about 0.25–0.35 s per token of the
/// model's tokenizer (English ~1.3 tokens a word at 2.5–3 words/s; Chinese
/// ~1–1.5 characters a token at 4–5 characters/s); an instructed slow
/// voice about twice that. One second a token is ~3× the usual rate.
pub const RUNAWAY_SECONDS_PER_TOKEN: f64 = 1.0;

/// The runaway guard: the most frames a text of `text_tokens` tokens may
/// take before the generation is taken to have missed its end code.
pub fn runaway_frames(text_tokens: usize) -> usize {
    let seconds = RUNAWAY_LEAD_SECONDS + RUNAWAY_SECONDS_PER_TOKEN * text_tokens as f64;
    (seconds * FRAMES_PER_SECOND).ceil() as usize
}

/// Why a generation stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stop {
    /// The talker's end code: the speech is complete.
    #[default]
    EndCode,
    /// The caller's limit (`max_new_tokens`, `--max-frames`).
    Limit,
    /// The runaway guard's bound for the text ([`runaway_frames`]): the
    /// model missed its end code.
    RunawayGuard,
}

/// Intermediate values recorded for the first steps (tests, debugging).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Raw talker logits of steps 0..n (step 0 = last prefill position).
    pub talker_logits: Vec<Vec<f32>>,
    /// Post-norm talker hidden of the same steps.
    pub talker_hidden: Vec<Vec<f32>>,
    /// Raw code-predictor logits of frame 0 (`15 × codebook`).
    pub cp_logits: Vec<f32>,
    /// Where the decode loop spent its time (always recorded).
    pub times: DecodeTimes,
    /// Why the generation stopped.
    pub stop: Stop,
}

/// Wall time of the decode loop's parts, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeTimes {
    /// The talker's pass over the prompt, and how many leading prompt
    /// positions it reused from the session's previous prompt.
    pub prefill: f64,
    pub prefill_reused: usize,
    /// The talker's one-token passes (after the prefill), and how many.
    pub talker: f64,
    pub talker_steps: usize,
    /// The code predictor's frame passes, and how many.
    pub predictor: f64,
    pub predictor_frames: usize,
    /// From the start of the loop (prefill included) to the first full frame.
    pub first_frame: f64,
}

/// A loaded TTS model (talker, code predictor, text tokenizer, speaker
/// encoder): immutable, shared by every [`Session`] (`Send + Sync`).
pub struct TtsModel {
    pub config: TtsConfig,
    pub tokenizer: TextTokenizer,
    pub talker: Arc<TalkerWeights>,
    pub code_predictor: Arc<CodePredictorWeights>,
    /// Base models: reference audio → x-vector.
    pub speaker_encoder: Option<SpeakerEncoder>,
    /// `general.name` of the model file.
    pub name: String,
    store: TensorStore,
    device: Option<DeviceInfo>,
    /// Tells loaded models apart (warm state is per model).
    id: u64,
}

impl TtsModel {
    /// Opens a `tts-*.gguf` file written by `qwen3-tts-convert`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(path, None)
    }

    /// [`TtsModel::load`], the talker's and code predictor's weights uploaded
    /// to `device` (`None`: the CPU) and its sessions computing there. The
    /// speaker encoder stays on the CPU (it runs once per cloned voice).
    pub fn load_on(path: impl AsRef<Path>, device: Option<&DeviceInfo>) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_TTS)?;
        let config = TtsConfig::from_gguf(&file)?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        // The speaker encoder keeps its own (F32) copy of its tensors.
        let store = load_weights_with(
            &file,
            |name| !name.starts_with(tensors::speaker::PREFIX),
            |_, _| Ok(None),
        )?
        .upload_to(device);
        let src = WeightSource::new(&store, file.path());
        let talker = TalkerWeights::load(&src, &config)?;
        let code_predictor = CodePredictorWeights::load(&src, &config, talker.codec_embd.clone())?;
        Ok(Self {
            talker: Arc::new(talker),
            code_predictor: Arc::new(code_predictor),
            speaker_encoder: SpeakerEncoder::from_file(&file)?,
            tokenizer,
            config,
            name: file
                .get_str(crate::gguf_schema::keys::NAME)
                .unwrap_or_default(),
            store,
            device: device.cloned(),
            id: crate::warm::next_model_id(),
        })
    }

    /// The GPU its weights are on (`None`: the CPU).
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device.as_ref()
    }

    /// Unique among the models this process loaded.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes of model weights held in memory (the speaker encoder's aside).
    pub fn weights_size(&self) -> usize {
        self.store.size()
    }

    /// The speaker encoder, or the error a model without one (not Base) gives
    /// when asked to clone a voice.
    pub fn cloning(&self) -> Result<&SpeakerEncoder> {
        self.speaker_encoder.as_ref().ok_or_else(|| {
            Error::invalid(
                "voice",
                format!(
                    "this {:?} model has no speaker encoder: voice cloning needs a Base model",
                    self.config.model_type
                ),
            )
        })
    }

    /// A session on its own `threads`-thread backend.
    pub fn session(self: &Arc<Self>, threads: usize) -> Session {
        Session::new(
            self.clone(),
            Arc::new(Backend::on_loaded(self.device(), threads)),
        )
    }
}

/// One utterance at a time on a shared [`TtsModel`]: the talker's KV cache,
/// the code predictor's graph and the backend they compute on. Sessions of
/// one model run independently, also on several threads at once.
pub struct Session {
    talker: Talker,
    code_predictor: CodePredictor,
    model: Arc<TtsModel>,
    backend: Arc<Backend>,
    /// Adapts the backend's thread count to the machine's load (if set).
    governor: Option<ThreadGovernor>,
    /// Voices' saved prompt prefixes (none: every prefill from scratch but
    /// for what the previous prompt shares).
    warm: Option<Arc<WarmCache>>,
}

/// The prompt for `req`, with the model's embeddings run on `talker`'s backend.
pub(crate) fn build_prompt(model: &TtsModel, talker: &Talker, req: &Request) -> Result<Prompt> {
    let emb = Embedder {
        talker,
        group_tables: &model.code_predictor.codec_embd,
    };
    prompt::build(&model.config, &model.tokenizer, &emb, req)
}

impl Session {
    pub fn new(model: Arc<TtsModel>, backend: Arc<Backend>) -> Self {
        Self {
            talker: Talker::new(model.talker.clone(), backend.clone()),
            code_predictor: CodePredictor::new(model.code_predictor.clone(), backend.clone()),
            model,
            backend,
            governor: None,
            warm: None,
        }
    }

    /// Where prefills find and keep voices' prompt prefixes (`None`: nowhere).
    pub fn set_warm_cache(&mut self, cache: Option<Arc<WarmCache>>) {
        self.warm = cache;
    }

    /// Computes with up to `max` threads, fewer while other processes keep
    /// cores busy (see [`crate::threads`]); `None`: always the backend's
    /// current count.
    pub fn set_adaptive_threads(&mut self, max: Option<usize>) {
        self.governor = max.map(ThreadGovernor::new);
        if let Some(max) = max {
            self.backend.set_threads(max);
        }
    }

    /// Follows the machine's load (called between frames).
    fn adapt_threads(&mut self) {
        if let Some(g) = &mut self.governor {
            let n = g.poll();
            if n != self.backend.threads() {
                self.backend.set_threads(n);
            }
        }
    }

    pub fn model(&self) -> &Arc<TtsModel> {
        &self.model
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// A fixed thread count (ends adaptive threading).
    pub fn set_threads(&mut self, threads: usize) {
        self.governor = None;
        self.backend.set_threads(threads);
    }

    /// The talker's KV cache type (F32 or F16; default:
    /// [`crate::talker::DEFAULT_KV_TYPE`]).
    pub fn set_kv_type(&mut self, ty: GgmlType) -> Result<()> {
        self.talker.set_kv_type(ty)
    }

    pub fn kv_type(&self) -> GgmlType {
        self.talker.kv_type()
    }

    /// Builds the prompt for a request.
    pub fn prompt(&self, req: &Request) -> Result<Prompt> {
        build_prompt(&self.model, &self.talker, req)
    }

    /// The x-vector of mono reference audio at the speaker encoder's rate.
    pub fn x_vector(&self, samples: &[f32]) -> Result<Vec<f32>> {
        self.model.cloning()?.embed(&self.backend, samples)
    }

    /// Runs the decode loop; returns the frames (16 codes each). `trace_steps`
    /// > 0 records that many steps' logits and hidden states.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        trace_steps: usize,
        mut on_frame: impl FnMut(usize, &[u32]),
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        self.decode(prompt, opts, None, trace_steps, |i, f| {
            on_frame(i, f);
            Ok(())
        })
    }

    /// [`Session::generate`] whose frame callback may fail: an error stops
    /// the generation and is returned (how a stream's consumer hangs up).
    pub fn generate_with(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        on_frame: impl FnMut(usize, &[u32]) -> Result<()>,
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        self.decode(prompt, opts, None, 0, on_frame)
    }

    /// Teacher forcing: feeds `frames` back in (instead of the model's own
    /// picks) and returns what the model predicts at every frame given the
    /// reference history: how reduced-precision files are compared with the
    /// reference without one early near-tie derailing the rest.
    pub fn predict_forced(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        frames: &[Vec<u32>],
    ) -> Result<Vec<Vec<u32>>> {
        Ok(self.predict_forced_traced(prompt, opts, frames, 0)?.0)
    }

    /// [`Session::predict_forced`], also recording the first `trace_steps`
    /// steps' raw talker logits and hidden states (quality reports).
    pub fn predict_forced_traced(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        frames: &[Vec<u32>],
        trace_steps: usize,
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        let mut o = opts.clone();
        o.set_max_new_tokens(frames.len() + 1);
        o.min_new_tokens = o.max_new_tokens;
        self.decode(prompt, &o, Some(frames), trace_steps, |_, _| Ok(()))
    }

    fn decode(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        forced: Option<&[Vec<u32>]>,
        trace_steps: usize,
        mut on_frame: impl FnMut(usize, &[u32]) -> Result<()>,
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        opts.validate()?;
        let model = self.model.clone();
        let cfg = &model.config;
        let processors = talker_processors(cfg, opts);
        let mut rng = Sampler::new(opts.seed);
        let len = prompt.len();
        if opts.cancel.as_ref().is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        let started = Instant::now();
        let (limit, at_limit) = opts.token_limit(prompt);
        // Reserve for a first stretch of audio; the cache grows if needed.
        let reserve = len + limit.min(opts.reserve_frames);
        let (mut step, reused) = match &self.warm {
            Some(cache) => cache.prefill(&model, &mut self.talker, prompt, reserve)?,
            None => self.talker.prefill(&prompt.prefill, reserve)?,
        };
        let mut trace = Trace::default();
        trace.times.prefill = started.elapsed().as_secs_f64();
        trace.times.prefill_reused = reused;
        let mut history: Vec<u32> = Vec::new();
        let mut frames: Vec<Vec<u32>> = Vec::new();
        loop {
            if trace.talker_logits.len() < trace_steps {
                trace.talker_logits.push(step.logits.clone());
                trace.talker_hidden.push(step.hidden.clone());
            }
            let mut logits = step.logits;
            processors.apply(&mut logits, &history);
            let c0 = rng.sample(&mut logits, &opts.talker);
            // Teacher forcing: the penalty history is the reference's code 0.
            let fed = forced
                .and_then(|f| f.get(history.len()))
                .map_or(c0, |f| f[0]);
            history.push(fed);
            if c0 == cfg.codec.eos {
                break;
            }
            if history.len() >= limit {
                trace.stop = at_limit;
                break;
            }
            let predicting = Instant::now();
            let fc = match forced.and_then(|f| f.get(frames.len())) {
                Some(given) => self.code_predictor.predict_forced(
                    &step.hidden,
                    given,
                    &opts.subtalker,
                    &mut rng,
                )?,
                None => self
                    .code_predictor
                    .predict(&step.hidden, c0, &opts.subtalker, &mut rng)?,
            };
            trace.times.predictor += predicting.elapsed().as_secs_f64();
            trace.times.predictor_frames += 1;
            if frames.is_empty() {
                trace.times.first_frame = started.elapsed().as_secs_f64();
                if trace_steps > 0 {
                    trace.cp_logits = fc.logits.clone();
                }
            }
            let mut frame = vec![c0];
            frame.extend(&fc.codes);
            on_frame(frames.len(), &frame)?;
            frames.push(frame);
            if opts.cancel.as_ref().is_some_and(CancelFlag::is_cancelled) {
                return Err(Error::Cancelled);
            }
            let mut next = fc.frame_embed;
            next.iter_mut()
                .zip(prompt.trailing_vector(frames.len() - 1))
                .for_each(|(a, b)| *a += b);
            self.adapt_threads();
            let stepping = Instant::now();
            step = self.talker.forward(&next, len + frames.len() - 1)?;
            trace.times.talker += stepping.elapsed().as_secs_f64();
            trace.times.talker_steps += 1;
        }
        Ok((frames, trace))
    }
}

/// The talker's logit processors for a generation with `opts`.
pub(crate) fn talker_processors(cfg: &TtsConfig, opts: &GenerateOptions) -> TalkerProcessors {
    TalkerProcessors {
        repetition_penalty: opts.repetition_penalty,
        eos_id: cfg.codec.eos,
        min_new_tokens: opts.min_new_tokens,
        suppress: cfg.suppressed_ids(),
    }
}

/// Samples of the reference part to drop after an ICL decode: the
/// reference's own formula, `int(T_ref / max(T_ref + T, 1) · n_samples)` in
/// float64 (about 4 % of (T_ref, T) pairs give 1920·T_ref − 1).
pub fn icl_cut(ref_frames: usize, frames: usize, n_samples: usize) -> usize {
    let ratio = ref_frames as f64 / (ref_frames + frames).max(1) as f64;
    (ratio * n_samples as f64) as usize
}

/// An ICL utterance's samples from those of its own `frames` (`wav`,
/// decoded after the reference frames of `context`): the reference's cut
/// ([`icl_cut`]) of the reference's audio followed by them, which keeps the
/// reference's last sample for a few lengths.
fn icl_output(
    context: &DecoderContext,
    samples_per_frame: usize,
    frames: usize,
    wav: Vec<f32>,
) -> Result<Vec<f32>> {
    let ref_frames = context.frames().len();
    let ref_samples = ref_frames * samples_per_frame;
    let cut = icl_cut(ref_frames, frames, ref_samples + wav.len());
    let kept = ref_samples.saturating_sub(cut);
    let tail = context.tail();
    if kept > tail.len() {
        return Err(Error::Internal(format!(
            "the ICL cut keeps {kept} reference samples, the voice's context has {}",
            tail.len()
        )));
    }
    let mut out = tail[tail.len() - kept..].to_vec();
    out.extend_from_slice(&wav[cut.saturating_sub(ref_samples).min(wav.len())..]);
    Ok(out)
}

/// Wall time of each stage of a synthesis, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub prompt: f64,
    pub generate: f64,
    pub vocode: f64,
    /// The generate stage's parts.
    pub decode: DecodeTimes,
}

/// The result of [`Synthesizer::synthesize`].
#[derive(Clone, Debug)]
pub struct Synthesis {
    /// Mono samples in [−1, 1].
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// The generated frames (16 codes each).
    pub frames: Vec<Vec<u32>>,
    pub timings: Timings,
    /// Why the generation stopped.
    pub stop: Stop,
}

impl Synthesis {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// How a stream cuts its audio into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Frames (80 ms each) before the first chunk: small for latency.
    pub first_chunk_frames: usize,
    /// Frames per later chunk: larger, for the vocoder's efficiency.
    pub chunk_frames: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            first_chunk_frames: 1,
            chunk_frames: 12,
        }
    }
}

/// A piece of a streamed utterance's audio.
#[derive(Clone, Copy, Debug)]
pub struct AudioChunk<'a> {
    /// Mono samples in [−1, 1], continuing the previous chunk.
    pub samples: &'a [f32],
    /// Index of `samples[0]` in the whole utterance.
    pub first_sample: usize,
    /// Frames generated so far.
    pub frames: usize,
    /// The utterance's last chunk (it may be empty).
    pub last: bool,
}

/// What a stream produced, besides the chunks it delivered.
#[derive(Clone, Debug)]
pub struct StreamSummary {
    pub sample_rate: u32,
    /// Samples delivered in all.
    pub samples: usize,
    /// The generated frames (16 codes each).
    pub frames: Vec<Vec<u32>>,
    pub timings: Timings,
    /// Seconds from the call to the first chunk with samples.
    pub first_audio: f64,
    /// Why the generation stopped.
    pub stop: Stop,
}

/// Shortest reference clip accepted for cloning.
pub const MIN_REFERENCE_SECONDS: f64 = 1.0;
/// Longest reference clip accepted: the encoder attends over the whole clip
/// and ICL puts all its frames in the prompt (3–10 s is what the model wants).
pub const MAX_REFERENCE_SECONDS: f64 = 60.0;

/// What [`Synthesizer::synthesize`] is doing, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Frames generated so far.
    Frames(usize),
    /// Generation is done; the vocoder is turning the frames into audio.
    Vocoding,
}

/// Text in, 24 kHz audio out: a TTS session and a vocoder session over
/// shared models, as the reference's `generate_*` APIs combine them.
pub struct Synthesizer {
    pub model: Arc<TtsModel>,
    pub vocoder: Arc<CodecDecoder>,
    session: Session,
    decoder: DecoderSession,
    /// 0: the vocoder runs interleaved with generation on the session's
    /// threads; n: concurrently, on its own n threads (streaming).
    vocoder_threads: usize,
    tokenizer_path: PathBuf,
    /// Voices' warm state (talker prefixes, ICL vocoder contexts).
    warm: Arc<WarmCache>,
}

/// Checks that a speech tokenizer belongs to a TTS model.
fn check_pair(model: &TtsModel, vocoder: &CodecDecoder, tokenizer_path: &Path) -> Result<()> {
    let (m, v) = (&model.config, &vocoder.config);
    if m.codebook_size != v.codebook_size || m.num_code_groups != v.num_quantizers {
        return Err(Error::WrongModel {
            path: tokenizer_path.to_path_buf(),
            reason: format!(
                "speech tokenizer has {} codebooks of {} codes, the TTS model makes {} of {}: \
                 not this model's tokenizer",
                v.num_quantizers, v.codebook_size, m.num_code_groups, m.codebook_size
            ),
        });
    }
    Ok(())
}

impl Synthesizer {
    /// Opens `tts-*.gguf` and `tokenizer-*.gguf` and checks they belong
    /// together; `threads` as for [`Synthesizer::with_models`] (0: adaptive).
    pub fn load(
        tts_path: impl AsRef<Path>,
        tokenizer_path: impl AsRef<Path>,
        threads: usize,
    ) -> Result<Self> {
        Self::load_on(tts_path, tokenizer_path, threads, None)
    }

    /// [`Synthesizer::load`] with the models on `device` (`None`: the CPU;
    /// see [`crate::ggml::device::resolve`]).
    pub fn load_on(
        tts_path: impl AsRef<Path>,
        tokenizer_path: impl AsRef<Path>,
        threads: usize,
        device: Option<&DeviceInfo>,
    ) -> Result<Self> {
        let model = Arc::new(TtsModel::load_on(tts_path, device)?);
        let vocoder = Arc::new(CodecDecoder::load_on(
            tokenizer_path.as_ref(),
            DecoderOptions::default(),
            device,
        )?);
        check_pair(&model, &vocoder, tokenizer_path.as_ref())?;
        Ok(Self::with_models(model, vocoder, tokenizer_path, threads))
    }

    /// Another synthesizer over already loaded models (its own sessions on
    /// its own `threads`-thread backend; 0: up to [`default_threads`], fewer
    /// while the machine is busy); `tokenizer_path` is where the codec
    /// encoder is loaded from when a voice is cloned in context.
    pub fn with_models(
        model: Arc<TtsModel>,
        vocoder: Arc<CodecDecoder>,
        tokenizer_path: impl AsRef<Path>,
        threads: usize,
    ) -> Self {
        let backend = Arc::new(Backend::on_loaded(model.device(), threads.max(1)));
        let mut session = Session::new(model.clone(), backend.clone());
        if threads == 0 {
            session.set_adaptive_threads(Some(default_threads()));
        }
        let warm = Arc::new(WarmCache::new(DEFAULT_BUDGET_BYTES));
        session.set_warm_cache(Some(warm.clone()));
        // The vocoder shares the session's backend where its weights are on
        // the same device.
        let same_device = model.device().map(|d| &d.name) == vocoder.device().map(|d| &d.name);
        let decoder_backend = match same_device {
            true => backend,
            false => Arc::new(Backend::on_loaded(vocoder.device(), threads.max(1))),
        };
        Self {
            session,
            decoder: DecoderSession::new(vocoder.clone(), decoder_backend),
            vocoder_threads: 0,
            model,
            vocoder,
            tokenizer_path: tokenizer_path.as_ref().to_path_buf(),
            warm,
        }
    }

    /// Keeps voices' warm state in `cache` (e.g. one shared with other
    /// synthesizers of the same models) instead of this synthesizer's own
    /// (by default [`DEFAULT_BUDGET_BYTES`]; a cache of budget 0 keeps none).
    pub fn set_warm_cache(&mut self, cache: Arc<WarmCache>) {
        self.session.set_warm_cache(Some(cache.clone()));
        self.warm = cache;
    }

    pub fn warm_cache(&self) -> &Arc<WarmCache> {
        &self.warm
    }

    /// Computes the warm state of `req`'s voice (for its language,
    /// instruction and layout; its text does not matter) now rather than at
    /// its first request: the talker's prompt prefix and, for ICL, the
    /// vocoder's state after the reference frames.
    pub fn warm_voice(&mut self, req: &Request) -> Result<()> {
        let mut w = WarmUp::new(req);
        w.step(
            &self.warm,
            &self.model,
            &mut self.session.talker,
            &mut self.decoder,
            WarmPiece::ALL,
        )?;
        Ok(())
    }

    /// The device the models compute on, as `--list-devices` names it
    /// ("cpu", or e.g. "vulkan:0").
    pub fn device(&self) -> String {
        match self.session.backend().device() {
            Some(d) => format!("{}:{}", d.backend.to_ascii_lowercase(), d.index),
            None => "cpu".into(),
        }
    }

    /// The TTS session (prompts, generation).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The vocoder session.
    pub fn decoder(&mut self) -> &mut DecoderSession {
        &mut self.decoder
    }

    /// A fixed thread count (0: adaptive, as at load).
    pub fn set_threads(&mut self, threads: usize) {
        // One backend serves both sessions.
        match threads {
            0 => self.session.set_adaptive_threads(Some(default_threads())),
            n => self.session.set_threads(n),
        }
    }

    fn threads(&self) -> usize {
        self.session.backend().threads()
    }

    /// Where a stream's vocoder runs: 0, interleaved with generation on the
    /// session's threads (the default; what two cores want); n, on its own
    /// n-thread backend concurrently with generation (more cores than the
    /// memory-bound generation needs). Results do not depend on it.
    pub fn set_vocoder_threads(&mut self, threads: usize) {
        let backend = match threads {
            0 => self.session.backend().clone(),
            n => Arc::new(Backend::on_loaded(self.vocoder.device(), n)),
        };
        self.decoder = DecoderSession::new(self.vocoder.clone(), backend);
        self.vocoder_threads = threads;
    }

    /// Clones a voice from mono reference audio at 24 kHz: the x-vector, and
    /// with `ref_text` (its transcript) the reference codes for in-context
    /// cloning. Base models only.
    pub fn clone_voice(&mut self, samples: &[f32], ref_text: Option<&str>) -> Result<VoicePrompt> {
        let rate = self.model.cloning()?.config.sample_rate as f64;
        let seconds = samples.len() as f64 / rate;
        if seconds < MIN_REFERENCE_SECONDS {
            return Err(Error::bad_audio(
                "reference audio",
                format!(
                    "{seconds:.2} s long; at least {MIN_REFERENCE_SECONDS} s is needed \
                     (3–10 s works best)"
                ),
            ));
        }
        if seconds > MAX_REFERENCE_SECONDS {
            return Err(Error::bad_audio(
                "reference audio",
                format!(
                    "{seconds:.1} s long; at most {MAX_REFERENCE_SECONDS} s is accepted \
                     (3–10 s works best): trim it"
                ),
            ));
        }
        let x_vector = self.session.x_vector(samples)?;
        let icl = match ref_text {
            Some(text) => {
                // Loaded for this clip only: it is used once per voice (voices
                // are saved and reused), and its F32 weights and activations
                // would otherwise stay resident through every synthesis.
                let codes =
                    CodecEncoder::load(&self.tokenizer_path, self.threads())?.encode(samples)?;
                Some((codes, text.to_string()))
            }
            None => None,
        };
        Ok(VoicePrompt {
            x_vector,
            icl,
            model_size: self.model.config.model_size.as_str().to_string(),
            model_name: self.model.name.clone(),
        })
    }

    /// Generates speech for `req`; `on_progress` hears of every frame and of
    /// the vocoder stage.
    pub fn synthesize(
        &mut self,
        req: &Request,
        opts: &GenerateOptions,
        mut on_progress: impl FnMut(Progress),
    ) -> Result<Synthesis> {
        let t0 = Instant::now();
        let prompt = self.session.prompt(req)?;
        let t1 = Instant::now();
        let (frames, trace) = self.session.generate(&prompt, opts, 0, |i, _| {
            on_progress(Progress::Frames(i + 1))
        })?;
        let t2 = Instant::now();
        on_progress(Progress::Vocoding);
        self.session.adapt_threads();
        let samples = match self.warm.resume_icl(&mut self.decoder, &req.voice)? {
            // ICL: vocoded after the reference frames (the state after them
            // is the voice's), then the reference's cut.
            Some((mut cursor, context)) => {
                let wav = self.decoder.push_stream(&mut cursor, &frames)?;
                icl_output(
                    &context,
                    self.vocoder.samples_per_frame(),
                    frames.len(),
                    wav,
                )?
            }
            None => self.decoder.decode(&frames)?,
        };
        let t3 = Instant::now();
        Ok(Synthesis {
            samples,
            sample_rate: self.vocoder.sample_rate(),
            frames,
            timings: Timings {
                prompt: (t1 - t0).as_secs_f64(),
                generate: (t2 - t1).as_secs_f64(),
                vocode: (t3 - t2).as_secs_f64(),
                decode: trace.times,
            },
            stop: trace.stop,
        })
    }

    /// Generates speech for `req` and hands its audio to `on_chunk` while
    /// the frames are still being generated: a first chunk after
    /// `stream.first_chunk_frames` frames, then one every
    /// `stream.chunk_frames`, then a last one. The chunks' samples, joined,
    /// are what [`Synthesizer::synthesize`] returns for the same request and
    /// options (the vocoder is causal, and its stream reproduces the
    /// reference's 300-frame chunking). An error from `on_chunk` stops the
    /// generation and is returned.
    ///
    /// ICL: the reference's frames are decoded first (as left context) and
    /// their audio is not delivered. The reference cuts at
    /// `int(T_ref / (T_ref + T) · n_samples)` in float64, which for a few
    /// lengths T is one sample before `1920 · T_ref`; a stream cannot know T
    /// when it starts, so it always starts at `1920 · T_ref`, and in those
    /// cases the offline result has one sample (42 µs) more at its start.
    pub fn synthesize_stream(
        &mut self,
        req: &Request,
        opts: &GenerateOptions,
        stream: &StreamOptions,
        mut on_chunk: impl FnMut(AudioChunk) -> Result<()>,
    ) -> Result<StreamSummary> {
        if stream.first_chunk_frames == 0 || stream.chunk_frames == 0 {
            return Err(Error::invalid(
                "stream",
                "chunks need at least one frame each",
            ));
        }
        let t0 = Instant::now();
        let prompt = self.session.prompt(req)?;
        let t1 = Instant::now();
        let decoder = &mut self.decoder;
        let mut audio = Chunker::start(decoder, *stream, t0);
        if let Some((cursor, _)) = self.warm.resume_icl(decoder, &req.voice)? {
            audio.cursor = cursor; // after the reference frames
        }
        let (frames, trace) = if self.vocoder_threads > 0 {
            // The vocoder on its own threads, concurrently with generation;
            // the generation runs on a scoped thread, the chunks come here.
            let session = &mut self.session;
            let prompt = &prompt;
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u32>>();
            std::thread::scope(|scope| -> Result<(Vec<Vec<u32>>, Trace)> {
                let generation = scope.spawn(move || {
                    session.generate_with(prompt, opts, |_, frame| {
                        // A closed channel: the consumer failed (its error is returned).
                        tx.send(frame.to_vec()).map_err(|_| Error::Cancelled)
                    })
                });
                let mut consumer = Ok(());
                for (i, frame) in rx.iter().enumerate() {
                    consumer = audio.frame(decoder, frame, i + 1, &mut on_chunk);
                    if consumer.is_err() {
                        break;
                    }
                }
                drop(rx);
                let generated = generation
                    .join()
                    .map_err(|_| Error::Internal("the generation thread panicked".into()))?;
                consumer?;
                generated
            })?
        } else {
            // Interleaved on the generation's threads.
            self.session.generate_with(&prompt, opts, |i, frame| {
                audio.frame(decoder, frame.to_vec(), i + 1, &mut on_chunk)
            })?
        };
        let t2 = Instant::now();
        audio.emit(decoder, frames.len(), true, &mut on_chunk)?;
        let t3 = Instant::now();
        let vocode_during = audio.vocode - (t3 - t2).as_secs_f64();
        let generate = (t2 - t1).as_secs_f64();
        Ok(StreamSummary {
            sample_rate: self.vocoder.sample_rate(),
            samples: audio.delivered,
            timings: Timings {
                prompt: (t1 - t0).as_secs_f64(),
                // Interleaved: the vocoder's time is not the generation's.
                generate: match self.vocoder_threads {
                    0 => generate - vocode_during,
                    _ => generate,
                },
                vocode: audio.vocode,
                decode: trace.times,
            },
            frames,
            first_audio: audio
                .first_audio
                .unwrap_or_else(|| t0.elapsed().as_secs_f64()),
            stop: trace.stop,
        })
    }
}

/// A stream's frames in, its chunks of audio out (see
/// [`Synthesizer::synthesize_stream`]), on a vocoder session the caller
/// passes in.
pub(crate) struct Chunker {
    pub(crate) cursor: StreamCursor,
    stream: StreamOptions,
    /// Frames pending before the next chunk is due.
    due: usize,
    pub(crate) pending: Vec<Vec<u32>>,
    pub(crate) delivered: usize,
    pub(crate) first_audio: Option<f64>,
    /// Seconds in the vocoder.
    pub(crate) vocode: f64,
    t0: Instant,
}

impl Chunker {
    /// Starts a stream on `decoder`; `t0`: when the request came.
    pub(crate) fn start(decoder: &mut DecoderSession, stream: StreamOptions, t0: Instant) -> Self {
        Self::with_cursor(decoder.start_stream(), stream, t0)
    }

    /// A stream continuing at `cursor` (whose state the caller keeps).
    pub(crate) fn with_cursor(cursor: StreamCursor, stream: StreamOptions, t0: Instant) -> Self {
        Self {
            cursor,
            stream,
            due: stream.first_chunk_frames,
            pending: Vec::new(),
            delivered: 0,
            first_audio: None,
            vocode: 0.0,
            t0,
        }
    }

    /// Whether the next frame makes a chunk (the vocoder runs).
    pub(crate) fn chunk_due(&self) -> bool {
        self.pending.len() + 1 >= self.due
    }

    /// Frame `n` (1-based) of the utterance; a chunk when one is due.
    pub(crate) fn frame(
        &mut self,
        decoder: &mut DecoderSession,
        frame: Vec<u32>,
        n: usize,
        on_chunk: &mut impl FnMut(AudioChunk) -> Result<()>,
    ) -> Result<()> {
        self.pending.push(frame);
        if self.pending.len() < self.due {
            return Ok(());
        }
        self.due = self.stream.chunk_frames;
        self.emit(decoder, n, false, on_chunk)
    }

    /// Vocodes the pending frames and hands their samples on.
    pub(crate) fn emit(
        &mut self,
        decoder: &mut DecoderSession,
        frames: usize,
        last: bool,
        on_chunk: &mut impl FnMut(AudioChunk) -> Result<()>,
    ) -> Result<()> {
        let started = Instant::now();
        let samples = decoder.push_stream(&mut self.cursor, &self.pending)?;
        self.pending.clear();
        self.vocode += started.elapsed().as_secs_f64();
        if self.first_audio.is_none() && !samples.is_empty() {
            self.first_audio = Some(self.t0.elapsed().as_secs_f64());
        }
        on_chunk(AudioChunk {
            samples: &samples,
            first_sample: self.delivered,
            frames,
            last,
        })?;
        self.delivered += samples.len();
        Ok(())
    }
}
