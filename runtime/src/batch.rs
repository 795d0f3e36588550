//! Continuous batching: several streamed requests generated together on one
//! backend, each exactly as if alone.
//!
//! Generation is memory-bound: a frame streams the talker's weights once and
//! the code predictor's fifteen times. A [`BatchSynthesizer`] advances all
//! its active sequences by one frame per [`BatchSynthesizer::step`]: one
//! talker step and one code-predictor frame graph for all of them (each
//! weight read once for the batch), sampling per sequence with its own RNG
//! and options, then each stream's vocoder when its chunk is due. Requests
//! join between steps (their prefill runs alone, once) and leave when they
//! finish, fail or are cancelled, freeing their KV cache at once.
//!
//! Every product in the decode graphs gives each sequence's column what it
//! gives alone (see `talker::DecodeBatch`), so a request's codes and audio do
//! not depend on the batch: they are those of
//! [`crate::pipeline::Synthesizer::synthesize_stream`] with the same seed.

use std::sync::Arc;
use std::time::Instant;

use crate::code_predictor::{CodePredictor, FrameInput};
use crate::codec_decoder::{CodecDecoder, DecoderSession, SavedState, StreamCursor};
use crate::error::{Error, Result};
use crate::ggml::{Backend, GgmlType};
use crate::pipeline::{
    build_prompt, default_threads, talker_processors, AudioChunk, CancelFlag, Chunker, DecodeTimes,
    GenerateOptions, Stop, StreamOptions, StreamSummary, Timings, TtsModel,
};
use crate::prompt::{Prompt, Request, Voice};
use crate::sampler::{Sampler, TalkerProcessors};
use crate::talker::{check_kv_type, DecodeBatch, StepInput, Talker, TalkerStep, DEFAULT_KV_TYPE};
use crate::threads::ThreadGovernor;
use crate::warm::{WarmCache, WarmPiece, WarmUp, DEFAULT_BUDGET_BYTES};

/// The largest batch: the code predictor's first pass takes two vectors per
/// sequence, and products of more than `MAX_ROW_DOT_VECTORS` vectors
/// would leave the row-dot path (and each sequence's one-column results).
pub const MAX_BATCH: usize = crate::ggml::MAX_ROW_DOT_VECTORS as usize / 2;

/// Names a sequence of a batch (unique for the batch's lifetime).
pub type SequenceId = u64;

/// What a step tells about one sequence.
#[derive(Debug)]
pub enum BatchEvent<'a> {
    /// A piece of its audio, as [`crate::pipeline::Synthesizer::synthesize_stream`]
    /// delivers it (the last one has `last` set, then `Done` follows).
    Audio(AudioChunk<'a>),
    /// It finished and left the batch.
    Done(StreamSummary),
    /// It failed, or was cancelled ([`Error::Cancelled`]), and left the batch.
    Failed(Error),
}

/// One request in the batch.
struct Sequence {
    id: SequenceId,
    talker: Talker,
    /// Its vocoder stream's state while another stream's is in the session.
    audio_state: SavedState,
    audio: Chunker,
    prompt: Prompt,
    opts: GenerateOptions,
    /// The most talker samples, and why (`GenerateOptions::token_limit`).
    limit: (usize, Stop),
    stop: Stop,
    processors: TalkerProcessors,
    rng: Sampler,
    /// The talker's output the next code 0 is sampled from.
    step: TalkerStep,
    /// Code 0 of the frame being generated (set between sampling and the
    /// code predictor).
    c0: Option<u32>,
    history: Vec<u32>,
    frames: Vec<Vec<u32>>,
    times: DecodeTimes,
    /// Seconds spent building the prompt.
    prompt_time: f64,
    joined: Instant,
}

impl Sequence {
    fn cancelled(&self) -> bool {
        self.opts
            .cancel
            .as_ref()
            .is_some_and(CancelFlag::is_cancelled)
    }

    fn summary(&self, sample_rate: u32) -> StreamSummary {
        let generate = self.joined.elapsed().as_secs_f64() - self.prompt_time;
        StreamSummary {
            sample_rate,
            samples: self.audio.delivered,
            frames: self.frames.clone(),
            timings: Timings {
                prompt: self.prompt_time,
                generate: generate - self.audio.vocode,
                vocode: self.audio.vocode,
                decode: self.times,
            },
            first_audio: self
                .audio
                .first_audio
                .unwrap_or_else(|| self.joined.elapsed().as_secs_f64()),
            stop: self.stop,
        }
    }
}

/// Up to `max_batch` streamed requests generated together on one backend
/// over shared models (see the module doc).
pub struct BatchSynthesizer {
    model: Arc<TtsModel>,
    vocoder: Arc<CodecDecoder>,
    backend: Arc<Backend>,
    max_batch: usize,
    active: Vec<Sequence>,
    /// One vocoder session for all streams (its graphs and their compute
    /// buffers are the big part); each stream's state is swapped in before
    /// its chunk and saved after it.
    vocoder_session: DecoderSession,
    /// The sequence whose stream state the session holds.
    live: Option<SequenceId>,
    talker_batch: DecodeBatch,
    code_predictor: CodePredictor,
    next_id: SequenceId,
    /// Adapts the thread count to the machine's load (threads = 0).
    governor: Option<ThreadGovernor>,
    /// The KV cache type of the sequences that join.
    kv_type: GgmlType,
    /// Voices' warm state (talker prefixes, ICL vocoder contexts).
    warm: Arc<WarmCache>,
    /// The talker a [`WarmUp`] in progress computes its prefix with.
    warm_talker: Option<Talker>,
}

impl BatchSynthesizer {
    /// A batch of at most `max_batch` sequences (1 to [`MAX_BATCH`]; others
    /// are clamped) computing on `threads` threads (0: up to
    /// [`default_threads`], fewer while other processes keep cores busy).
    pub fn new(
        model: Arc<TtsModel>,
        vocoder: Arc<CodecDecoder>,
        threads: usize,
        max_batch: usize,
    ) -> Self {
        let governor = (threads == 0).then(|| ThreadGovernor::new(default_threads()));
        let threads = match threads {
            0 => default_threads(),
            n => n,
        };
        let backend = Arc::new(Backend::on_loaded(model.device(), threads));
        Self {
            code_predictor: CodePredictor::new(model.code_predictor.clone(), backend.clone()),
            vocoder_session: DecoderSession::new(vocoder.clone(), backend.clone()),
            model,
            vocoder,
            backend,
            max_batch: max_batch.clamp(1, MAX_BATCH),
            active: Vec::new(),
            live: None,
            talker_batch: DecodeBatch::default(),
            next_id: 0,
            governor,
            kv_type: DEFAULT_KV_TYPE,
            warm: Arc::new(WarmCache::new(DEFAULT_BUDGET_BYTES)),
            warm_talker: None,
        }
    }

    /// Keeps voices' warm state in `cache` (by default a cache of its own
    /// of [`DEFAULT_BUDGET_BYTES`]; one of budget 0 keeps none).
    pub fn set_warm_cache(&mut self, cache: Arc<WarmCache>) {
        self.warm = cache;
    }

    pub fn warm_cache(&self) -> &Arc<WarmCache> {
        &self.warm
    }

    /// Advances `w` by one step of at most `piece`, on this batch's backend
    /// between its steps: the running streams wait for no more than that.
    /// Returns whether the voice is warm; an error leaves the batch as it was.
    pub fn warm_up(&mut self, w: &mut WarmUp, piece: WarmPiece) -> Result<bool> {
        let mut talker = match self.warm_talker.take() {
            Some(t) => t,
            None => {
                let mut t = Talker::new(self.model.talker.clone(), self.backend.clone());
                t.set_kv_type(self.kv_type)?;
                t
            }
        };
        // The vocoder session's state is the live stream's, saved after its
        // chunks: a warm-up may use the session.
        self.live = None;
        let done = w.step(
            &self.warm,
            &self.model,
            &mut talker,
            &mut self.vocoder_session,
            piece,
        );
        if matches!(done, Ok(false)) {
            self.warm_talker = Some(talker);
        }
        done
    }

    /// The KV cache type of sequences that join from now on (F32 or F16;
    /// default: [`crate::talker::DEFAULT_KV_TYPE`]).
    pub fn set_kv_type(&mut self, ty: GgmlType) -> Result<()> {
        check_kv_type(ty)?;
        self.kv_type = ty;
        Ok(())
    }

    pub fn kv_type(&self) -> GgmlType {
        self.kv_type
    }

    pub fn model(&self) -> &Arc<TtsModel> {
        &self.model
    }

    pub fn vocoder(&self) -> &Arc<CodecDecoder> {
        &self.vocoder
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether another sequence may join.
    pub fn has_room(&self) -> bool {
        self.active.len() < self.max_batch
    }

    /// A fixed thread count (ends adaptive threading).
    pub fn set_threads(&mut self, threads: usize) {
        self.governor = None;
        self.backend.set_threads(threads.max(1));
    }

    /// Starts `req`: builds its prompt and runs its prefill (the other
    /// sequences wait for it: one prefill), so that the next
    /// [`BatchSynthesizer::step`] generates its first frame. A request that
    /// cannot start leaves nothing behind.
    pub fn join(
        &mut self,
        req: &Request,
        opts: &GenerateOptions,
        stream: &StreamOptions,
    ) -> Result<SequenceId> {
        let joined = Instant::now();
        if !self.has_room() {
            return Err(Error::invalid(
                "batch",
                format!("the batch is full ({} sequences)", self.max_batch),
            ));
        }
        if stream.first_chunk_frames == 0 || stream.chunk_frames == 0 {
            return Err(Error::invalid(
                "stream",
                "chunks need at least one frame each",
            ));
        }
        opts.validate()?;
        let model = self.model.clone();
        let mut talker = Talker::new(model.talker.clone(), self.backend.clone());
        talker.set_kv_type(self.kv_type)?;
        let prompt = build_prompt(&model, &talker, req)?;
        let prompt_time = joined.elapsed().as_secs_f64();
        if opts.cancel.as_ref().is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        // A fresh stream, or for ICL the state after the reference frames
        // (the voice's, from the warm cache or decoded now on the session:
        // the live stream's state was saved after its last chunk).
        let (audio_state, cursor) = match &req.voice {
            Voice::Icl { ref_codes, .. } => {
                self.live = None;
                let c =
                    self.warm
                        .decoder_context(&mut self.vocoder_session, &req.voice, ref_codes)?;
                (c.state().clone(), c.cursor().clone())
            }
            _ => (SavedState::default(), StreamCursor::default()),
        };
        let audio = Chunker::with_cursor(cursor, *stream, joined);
        let prefilling = Instant::now();
        let limit = opts.token_limit(&prompt);
        // Reserve for a first stretch of audio; the cache grows if needed.
        let reserve = prompt.len() + limit.0.min(opts.reserve_frames);
        let (step, reused) = self.warm.prefill(&model, &mut talker, &prompt, reserve)?;
        let times = DecodeTimes {
            prefill: prefilling.elapsed().as_secs_f64(),
            prefill_reused: reused,
            ..Default::default()
        };
        let id = self.next_id;
        self.next_id += 1;
        self.active.push(Sequence {
            id,
            talker,
            audio_state,
            audio,
            processors: talker_processors(&model.config, opts),
            rng: Sampler::new(opts.seed),
            prompt,
            opts: opts.clone(),
            limit,
            stop: Stop::EndCode,
            step,
            c0: None,
            history: Vec::new(),
            frames: Vec::new(),
            times,
            prompt_time,
            joined,
        });
        Ok(id)
    }

    /// Removes a sequence now, freeing its cache; false when it is not in
    /// the batch. (A raised [`GenerateOptions::cancel`] flag does the same
    /// at the next step, with a `Failed(Cancelled)` event.)
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        match self.active.iter().position(|s| s.id == id) {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// Generates one frame of every sequence and delivers what it gives:
    /// audio chunks as they are due, and sequences that finished or failed
    /// (which leave the batch).
    pub fn step(&mut self, mut on_event: impl FnMut(SequenceId, BatchEvent<'_>)) {
        if let Some(g) = &mut self.governor {
            let n = g.poll();
            if n != self.backend.threads() {
                self.backend.set_threads(n);
            }
        }
        let sample_rate = self.vocoder.sample_rate();
        let eos = self.model.config.codec.eos;
        // Code 0 of each sequence from its own logits, options and RNG.
        let mut ended: Vec<(SequenceId, Option<Error>)> = Vec::new();
        for seq in &mut self.active {
            if seq.cancelled() {
                ended.push((seq.id, Some(Error::Cancelled)));
                continue;
            }
            let mut logits = std::mem::take(&mut seq.step.logits);
            seq.processors.apply(&mut logits, &seq.history);
            let c0 = seq.rng.sample(&mut logits, &seq.opts.talker);
            seq.history.push(c0);
            if c0 == eos {
                ended.push((seq.id, None));
            } else if seq.history.len() >= seq.limit.0 {
                seq.stop = seq.limit.1;
                ended.push((seq.id, None));
            } else {
                seq.c0 = Some(c0);
            }
        }
        // The others' codes 1..15, in one graph.
        let predicting = Instant::now();
        let mut inputs: Vec<FrameInput<'_>> = self
            .active
            .iter_mut()
            .filter_map(|seq| {
                Some(FrameInput {
                    c0: seq.c0?,
                    hidden: &seq.step.hidden,
                    forced: None,
                    params: &seq.opts.subtalker,
                    rng: &mut seq.rng,
                })
            })
            .collect();
        let predicted = self.code_predictor.predict_batch(&mut inputs);
        drop(inputs);
        let predicted = match predicted {
            Ok(p) => p,
            Err(e) => return self.fail_all(&e, &mut on_event),
        };
        let predict_time = predicting.elapsed().as_secs_f64();
        // Frames out (chunks as due), next inputs in.
        let mut next: Vec<(usize, Vec<f32>)> = Vec::new();
        let generating = self
            .active
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.c0.is_some());
        for ((i, seq), fc) in generating.zip(predicted) {
            let mut frame = vec![seq.c0.take().expect("filtered")];
            frame.extend(&fc.codes);
            seq.times.predictor += predict_time;
            seq.times.predictor_frames += 1;
            if seq.frames.is_empty() {
                seq.times.first_frame = seq.joined.elapsed().as_secs_f64() - seq.prompt_time;
            }
            seq.frames.push(frame.clone());
            let n = seq.frames.len();
            let id = seq.id;
            let vocoding = seq.audio.chunk_due();
            if vocoding {
                activate(&mut self.vocoder_session, &mut self.live, seq);
            }
            let delivered = seq
                .audio
                .frame(&mut self.vocoder_session, frame, n, &mut |chunk| {
                    on_event(id, BatchEvent::Audio(chunk));
                    Ok(())
                });
            if vocoding {
                self.vocoder_session.save_state(&mut seq.audio_state);
            }
            if let Err(e) = delivered {
                ended.push((seq.id, Some(e)));
                continue;
            }
            if seq.cancelled() {
                ended.push((seq.id, Some(Error::Cancelled)));
                continue;
            }
            let mut embed = fc.frame_embed;
            embed
                .iter_mut()
                .zip(seq.prompt.trailing_vector(n - 1))
                .for_each(|(a, b)| *a += b);
            next.push((i, embed));
        }
        // The finished and failed ones leave before the talker step.
        for (id, error) in ended {
            let Some(i) = self.active.iter().position(|s| s.id == id) else {
                continue;
            };
            let mut seq = self.remove(i);
            next.retain(|(j, _)| *j != i);
            next.iter_mut()
                .filter(|(j, _)| *j > i)
                .for_each(|(j, _)| *j -= 1);
            let outcome = match error {
                Some(e) => Err(e),
                None => {
                    let n = seq.frames.len();
                    let mut deliver = |chunk: AudioChunk<'_>| {
                        on_event(id, BatchEvent::Audio(chunk));
                        Ok(())
                    };
                    activate(&mut self.vocoder_session, &mut self.live, &seq);
                    seq.audio
                        .emit(&mut self.vocoder_session, n, true, &mut deliver)
                        .map(|()| seq.summary(sample_rate))
                }
            };
            match outcome {
                Ok(summary) => on_event(id, BatchEvent::Done(summary)),
                Err(e) => on_event(id, BatchEvent::Failed(e)),
            }
        }
        // One talker step for every sequence still generating.
        let stepping = Instant::now();
        let mut inputs: Vec<StepInput<'_>> = Vec::with_capacity(next.len());
        let mut rest = self.active.iter_mut().enumerate();
        for (i, embed) in &next {
            let seq = rest
                .find(|(j, _)| j == i)
                .map(|(_, s)| s)
                .expect("indices ascend");
            inputs.push(StepInput {
                position: seq.prompt.len() + seq.frames.len() - 1,
                talker: &mut seq.talker,
                embed,
            });
        }
        let stepped = self.talker_batch.step(&mut inputs);
        drop(inputs);
        match stepped {
            Ok(steps) => {
                let step_time = stepping.elapsed().as_secs_f64();
                for ((i, _), step) in next.iter().zip(steps) {
                    let seq = &mut self.active[*i];
                    seq.step = step;
                    seq.times.talker += step_time;
                    seq.times.talker_steps += 1;
                }
            }
            Err(e) => self.fail_all(&e, &mut on_event),
        }
    }

    /// Takes sequence `i` out of the batch, freeing its cache and its
    /// stream state.
    fn remove(&mut self, i: usize) -> Sequence {
        let seq = self.active.remove(i);
        // The batch graph holds the caches of its sequences.
        self.talker_batch.release();
        seq
    }

    /// A computation shared by the batch failed: every sequence fails with it.
    fn fail_all(&mut self, e: &Error, on_event: &mut impl FnMut(SequenceId, BatchEvent<'_>)) {
        while !self.active.is_empty() {
            let seq = self.remove(0);
            on_event(seq.id, BatchEvent::Failed(Error::Compute(e.to_string())));
        }
    }
}

/// Puts `seq`'s stream state in the vocoder session (unless it is there).
fn activate(session: &mut DecoderSession, live: &mut Option<SequenceId>, seq: &Sequence) {
    if *live != Some(seq.id) {
        session.restore_state(&seq.audio_state);
        *live = Some(seq.id);
    }
}
