//! Text in, 16-codebook speech codes out: model loading and the reference's
//! decode loop (spec/07 §4).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::code_predictor::{self, CodePredictor};
use crate::codec_decoder::CodecDecoder;
use crate::codec_encoder::CodecEncoder;
use crate::config::TtsConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, TensorStore};
use crate::gguf_schema::ARCH_TTS;
use crate::model_file::GgufFile;
use crate::prompt::{self, Prompt, Request, Voice};
use crate::sampler::{Sampler, SamplingParams, TalkerProcessors};
use crate::speaker_encoder::SpeakerEncoder;
use crate::talker::{self, Talker};
use crate::text_tokenizer::TextTokenizer;
use crate::voice::VoicePrompt;
use crate::weights::load_weights_with;

/// The default thread count: physical cores. Decoding streams weights from
/// memory and the vocoder fills the FMA units; a core's second hardware
/// thread adds nothing to either, and ggml's spinning workers slow down
/// badly when they outnumber the cores that run them.
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

/// Checks that `names` exist with the expected leading dims where given.
fn require(file: &GgufFile, names: &[String], shapes: &[(&str, Vec<i64>)]) -> Result<()> {
    for n in names {
        file.tensor_info(n)?;
    }
    for (name, want) in shapes {
        let got = &file.tensor_info(name)?.ne;
        if got[..want.len().min(got.len())] != want[..] {
            return Err(Error::Tensor {
                path: file.path().to_path_buf(),
                name: name.to_string(),
                reason: format!("shape {got:?} does not match the config (expected {want:?})"),
            });
        }
    }
    Ok(())
}

/// Sampling and stopping settings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub talker: SamplingParams,
    pub subtalker: SamplingParams,
    pub repetition_penalty: f32,
    /// Talker samples at most (frames = samples − 1, as the reference).
    pub max_new_tokens: usize,
    /// EOS is blocked until this many samples (reference: 2).
    pub min_new_tokens: usize,
    pub seed: u64,
    /// Frames the talker's KV cache is first sized for; it grows (doubling)
    /// past that, so long texts cost memory only when they happen.
    pub reserve_frames: usize,
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
            min_new_tokens: 2,
            seed: 0,
            reserve_frames: 256,
        }
    }

    /// Both samplers greedy (the deterministic reference setting).
    pub fn greedy(mut self) -> Self {
        self.talker = SamplingParams::greedy();
        self.subtalker = SamplingParams::greedy();
        self
    }
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
}

/// Wall time of the decode loop's parts, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeTimes {
    /// The talker's pass over the prompt.
    pub prefill: f64,
    /// The talker's one-token passes (after the prefill), and how many.
    pub talker: f64,
    pub talker_steps: usize,
    /// The code predictor's frame passes, and how many.
    pub predictor: f64,
    pub predictor_frames: usize,
    /// From the start of the loop (prefill included) to the first full frame.
    pub first_frame: f64,
}

/// A loaded TTS model (talker, code predictor, text tokenizer).
pub struct TtsModel {
    pub talker: Talker,
    pub code_predictor: CodePredictor,
    pub tokenizer: TextTokenizer,
    /// Base models: reference audio → x-vector.
    pub speaker_encoder: Option<SpeakerEncoder>,
    pub config: TtsConfig,
    /// `general.name` of the model file.
    pub name: String,
    weights: Arc<TensorStore>,
    backend: Arc<Backend>,
}

impl TtsModel {
    /// Opens a `tts-*.gguf` file written by `qwen3-tts-convert`.
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self> {
        let file = GgufFile::open_arch(path, ARCH_TTS)?;
        let config = TtsConfig::from_gguf(&file)?;
        let (t, cp) = (&config.talker, &config.code_predictor);
        let mut names = talker::weight_names(&config);
        names.extend(code_predictor::weight_names(&config));
        require(
            &file,
            &names,
            &[
                (
                    "talker.codec_embd.weight",
                    vec![t.hidden as i64, config.codec_vocab as i64],
                ),
                ("talker.text_embd.weight", vec![config.text_hidden as i64]),
                (
                    "talker.blk.0.attn_q.weight",
                    vec![t.hidden as i64, (t.heads * t.head_dim) as i64],
                ),
                (
                    "cp.blk.0.attn_k.weight",
                    vec![cp.hidden as i64, (cp.kv_heads * cp.head_dim) as i64],
                ),
                (
                    "cp.head.0.weight",
                    vec![cp.hidden as i64, config.codebook_size as i64],
                ),
            ],
        )?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let backend = Arc::new(Backend::cpu(threads));
        // The speaker encoder keeps its own (F32) copy of the spk.* tensors.
        let weights = Arc::new(load_weights_with(
            &file,
            &backend,
            |name| !name.starts_with("spk."),
            |_, _| Ok(None),
        )?);
        let speaker_encoder = SpeakerEncoder::from_file(&file, backend.clone())?;
        Ok(Self {
            talker: Talker::new(&config, weights.clone(), backend.clone()),
            code_predictor: CodePredictor::new(&config, weights.clone(), backend.clone()),
            tokenizer,
            speaker_encoder,
            config,
            name: file
                .get_str(crate::gguf_schema::keys::NAME)
                .unwrap_or_default(),
            weights,
            backend,
        })
    }

    /// Bytes of model weights held in backend memory.
    pub fn weights_size(&self) -> usize {
        self.weights.size()
    }

    pub fn set_threads(&self, threads: usize) {
        self.backend.set_threads(threads);
    }

    /// Builds the prompt for a request.
    pub fn prompt(&mut self, req: &Request) -> Result<Prompt> {
        prompt::build(&self.config, &self.tokenizer, &mut self.talker, req)
    }

    /// Runs the decode loop; returns the frames (16 codes each). `trace_steps`
    /// > 0 records that many steps' logits and hidden states.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        trace_steps: usize,
        on_frame: impl FnMut(usize, &[u32]),
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        self.decode(prompt, opts, None, trace_steps, on_frame)
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
        let mut o = opts.clone();
        o.max_new_tokens = frames.len() + 1;
        o.min_new_tokens = o.max_new_tokens;
        Ok(self.decode(prompt, &o, Some(frames), 0, |_, _| {})?.0)
    }

    fn decode(
        &mut self,
        prompt: &Prompt,
        opts: &GenerateOptions,
        forced: Option<&[Vec<u32>]>,
        trace_steps: usize,
        mut on_frame: impl FnMut(usize, &[u32]),
    ) -> Result<(Vec<Vec<u32>>, Trace)> {
        opts.talker
            .validate()
            .map_err(|e| Error::Other(format!("talker sampling: {e}")))?;
        opts.subtalker
            .validate()
            .map_err(|e| Error::Other(format!("sub-talker sampling: {e}")))?;
        if !(opts.repetition_penalty.is_finite() && opts.repetition_penalty > 0.0) {
            return Err(Error::Other(format!(
                "repetition penalty must be a finite number > 0 (1 = off), got {}",
                opts.repetition_penalty
            )));
        }
        if opts.max_new_tokens == 0 {
            return Err(Error::Other("max_new_tokens must be at least 1".into()));
        }
        let processors = TalkerProcessors {
            repetition_penalty: opts.repetition_penalty,
            eos_id: self.config.codec.eos,
            min_new_tokens: opts.min_new_tokens,
            suppress: self.config.suppressed_ids(),
        };
        let mut rng = Sampler::new(opts.seed);
        let len = prompt.len();
        // Reserve for a first stretch of audio; the cache grows if needed.
        self.talker
            .reset(len + opts.max_new_tokens.min(opts.reserve_frames));
        let started = Instant::now();
        let mut step = self.talker.forward(&prompt.prefill, 0)?;
        let mut trace = Trace::default();
        trace.times.prefill = started.elapsed().as_secs_f64();
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
            if c0 == self.config.codec.eos || history.len() >= opts.max_new_tokens {
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
            on_frame(frames.len(), &frame);
            frames.push(frame);
            let mut next = fc.frame_embed;
            next.iter_mut()
                .zip(prompt.trailing_vector(frames.len() - 1))
                .for_each(|(a, b)| *a += b);
            let stepping = Instant::now();
            step = self.talker.forward(&next, len + frames.len() - 1)?;
            trace.times.talker += stepping.elapsed().as_secs_f64();
            trace.times.talker_steps += 1;
        }
        Ok((frames, trace))
    }
}

/// Samples of the reference part to drop after an ICL decode: the
/// reference's own formula, `int(T_ref / max(T_ref + T, 1) · n_samples)` in
/// float64 (spec/07 §5; about 4 % of (T_ref, T) pairs give 1920·T_ref − 1).
pub fn icl_cut(ref_frames: usize, frames: usize, n_samples: usize) -> usize {
    let ratio = ref_frames as f64 / (ref_frames + frames).max(1) as f64;
    (ratio * n_samples as f64) as usize
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
}

impl Synthesis {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Text in, 24 kHz audio out: the TTS model and the speech-tokenizer
/// decoder, as the reference's `generate_*` APIs combine them.
pub struct Synthesizer {
    pub model: TtsModel,
    pub vocoder: CodecDecoder,
    tokenizer_path: PathBuf,
    threads: usize,
}

/// Shortest reference clip accepted for cloning.
pub const MIN_REFERENCE_SECONDS: f64 = 1.0;
/// Longest reference clip accepted: the encoder attends over the whole clip
/// and ICL puts all its frames in the prompt (3–10 s is what the model wants).
pub const MAX_REFERENCE_SECONDS: f64 = 60.0;

impl Synthesizer {
    /// Opens `tts-*.gguf` and `tokenizer-*.gguf` and checks they belong together.
    pub fn load(
        tts_path: impl AsRef<Path>,
        tokenizer_path: impl AsRef<Path>,
        threads: usize,
    ) -> Result<Self> {
        let model = TtsModel::load(tts_path, threads)?;
        let vocoder = CodecDecoder::load(tokenizer_path.as_ref(), threads)?;
        let (m, v) = (&model.config, &vocoder.config);
        if m.codebook_size != v.codebook_size || m.num_code_groups != v.num_quantizers {
            return Err(Error::WrongModel {
                path: tokenizer_path.as_ref().to_path_buf(),
                reason: format!(
                    "speech tokenizer has {} codebooks of {} codes, the TTS model makes {} of {}: \
                     not this model's tokenizer",
                    v.num_quantizers, v.codebook_size, m.num_code_groups, m.codebook_size
                ),
            });
        }
        Ok(Self {
            model,
            vocoder,
            tokenizer_path: tokenizer_path.as_ref().to_path_buf(),
            threads,
        })
    }

    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
        self.model.set_threads(threads);
        self.vocoder.set_threads(threads);
    }

    /// Clones a voice from mono reference audio at 24 kHz: the x-vector, and
    /// with `ref_text` (its transcript) the reference codes for in-context
    /// cloning. Base models only.
    pub fn clone_voice(&mut self, samples: &[f32], ref_text: Option<&str>) -> Result<VoicePrompt> {
        let Some(speaker) = &self.model.speaker_encoder else {
            return Err(Error::Other(format!(
                "this {:?} model has no speaker encoder: voice cloning needs a Base model",
                self.model.config.model_type
            )));
        };
        let rate = speaker.config.sample_rate as f64;
        let seconds = samples.len() as f64 / rate;
        if seconds < MIN_REFERENCE_SECONDS {
            return Err(Error::Other(format!(
                "reference audio is {seconds:.2} s long; at least {MIN_REFERENCE_SECONDS} s is needed \
                 (3–10 s works best)"
            )));
        }
        if seconds > MAX_REFERENCE_SECONDS {
            return Err(Error::Other(format!(
                "reference audio is {seconds:.1} s long; at most {MAX_REFERENCE_SECONDS} s is \
                 accepted (3–10 s works best): trim it"
            )));
        }
        let x_vector = speaker.embed(samples)?;
        let icl = match ref_text {
            Some(text) => {
                // Loaded for this clip only: it is used once per voice (voices
                // are saved and reused), and its F32 weights and activations
                // would otherwise stay resident through every synthesis.
                let codes =
                    CodecEncoder::load(&self.tokenizer_path, self.threads)?.encode(samples)?;
                Some((codes, text.to_string()))
            }
            None => None,
        };
        Ok(VoicePrompt {
            x_vector,
            icl,
            model_size: self.model.config.model_size.clone(),
            model_name: self.model.name.clone(),
        })
    }

    /// Generates speech for `req`; `progress` gets [`Progress::Frames`]`(n)`
    /// after each of the `n` frames generated so far, then
    /// [`Progress::Vocoding`] once before the vocoder runs.
    pub fn synthesize(
        &mut self,
        req: &Request,
        opts: &GenerateOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Synthesis> {
        let t0 = Instant::now();
        let prompt = self.model.prompt(req)?;
        let t1 = Instant::now();
        let (frames, trace) = self
            .model
            .generate(&prompt, opts, 0, |i, _| progress(Progress::Frames(i + 1)))?;
        let t2 = Instant::now();
        progress(Progress::Vocoding);
        let samples = match &req.voice {
            // ICL: vocode with the reference as left context, then cut it off.
            Voice::Icl { ref_codes, .. } => {
                let all: Vec<Vec<u32>> = ref_codes.iter().chain(&frames).cloned().collect();
                let wav = self.vocoder.decode(&all)?;
                let cut = icl_cut(ref_codes.len(), frames.len(), wav.len());
                wav[cut..].to_vec()
            }
            _ => self.vocoder.decode(&frames)?,
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
        })
    }
}

/// What [`Synthesizer::synthesize`] is doing, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// This many frames (80 ms each) generated so far.
    Frames(usize),
    /// Generation is done; the vocoder turns the frames into samples.
    Vocoding,
}
