//! Text in, 16-codebook speech codes out: model loading and the reference's
//! decode loop (spec/07 §4).

use std::path::Path;
use std::sync::Arc;

use crate::code_predictor::{self, CodePredictor};
use crate::config::TtsConfig;
use crate::error::{Error, Result};
use crate::ggml::{Backend, TensorStore};
use crate::gguf_schema::ARCH_TTS;
use crate::model_file::GgufFile;
use crate::prompt::{self, Prompt, Request};
use crate::sampler::{Sampler, SamplingParams, TalkerProcessors};
use crate::talker::{self, Talker};
use crate::text_tokenizer::TextTokenizer;
use crate::weights::load_weights;

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
}

/// A loaded TTS model (talker, code predictor, text tokenizer).
pub struct TtsModel {
    pub talker: Talker,
    pub code_predictor: CodePredictor,
    pub tokenizer: TextTokenizer,
    pub config: TtsConfig,
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
        let weights = Arc::new(load_weights(&file, &backend)?);
        Ok(Self {
            talker: Talker::new(&config, weights.clone(), backend.clone()),
            code_predictor: CodePredictor::new(&config, weights.clone(), backend.clone()),
            tokenizer,
            config,
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
        let mut step = self.talker.forward(&prompt.prefill, 0)?;
        let mut trace = Trace::default();
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
            if frames.is_empty() && trace_steps > 0 {
                trace.cp_logits = fc.logits.clone();
            }
            let mut frame = vec![c0];
            frame.extend(&fc.codes);
            on_frame(frames.len(), &frame);
            frames.push(frame);
            let mut next = fc.frame_embed;
            next.iter_mut()
                .zip(prompt.trailing_vector(frames.len() - 1))
                .for_each(|(a, b)| *a += b);
            step = self.talker.forward(&next, len + frames.len() - 1)?;
        }
        Ok((frames, trace))
    }
}
