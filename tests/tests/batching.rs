//! Continuous batching changes nothing: every request decoded in a
//! `BatchSynthesizer`, whatever else is in the batch and whenever it joined,
//! gives bit for bit the codes and the audio chunks that
//! `Synthesizer::synthesize_stream` gives it alone with the same seed: mixed
//! modes (CustomVoice speakers, Base x-vector and ICL), greedy and sampled,
//! different lengths, joins and leaves mid-run, at F32 and quantised.
//! Cancelled sequences leave at once and free their slot.

use std::collections::HashMap;
use std::sync::Arc;

use qwen3_tts::batch::{BatchEvent, BatchSynthesizer, SequenceId};
use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{CancelFlag, GenerateOptions, StreamOptions, Synthesizer, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::talker;
use qwen3_tts::Error;
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, fixtures, serial, Dump};

struct Models {
    model: Arc<TtsModel>,
    vocoder: Arc<CodecDecoder>,
    tokenizer: std::path::PathBuf,
}

fn models(variant: &str, ty: GgmlType, dir: &std::path::Path) -> Models {
    let tts = convert_tiny(variant, ty, dir);
    let tokenizer = convert_tiny_tokenizer(GgmlType::F32, dir);
    Models {
        model: Arc::new(TtsModel::load(tts).unwrap()),
        vocoder: Arc::new(CodecDecoder::load(&tokenizer).unwrap()),
        tokenizer,
    }
}

/// One request of a test: what to say, how, and its stream's chunking.
#[derive(Clone)]
struct Job {
    req: Request,
    opts: GenerateOptions,
    stream: StreamOptions,
}

/// Exactly `frames` frames (or fewer with `eos`: the model may stop).
fn job(m: &Models, req: Request, frames: usize, greedy: bool, seed: u64) -> Job {
    let mut opts = GenerateOptions::from_config(&m.model.config);
    if greedy {
        opts = opts.greedy();
    }
    opts.seed = seed;
    opts.set_max_new_tokens(frames + 1);
    opts.min_new_tokens = frames + 1;
    Job {
        req,
        opts,
        stream: StreamOptions {
            first_chunk_frames: 1,
            chunk_frames: 5,
        },
    }
}

/// What a stream delivered: its chunks (first sample, frames, last, samples as bits) and codes.
#[derive(Debug, Default, PartialEq)]
struct Output {
    chunks: Vec<(usize, usize, bool, Vec<u32>)>,
    frames: Vec<Vec<u32>>,
}

fn bits(samples: &[f32]) -> Vec<u32> {
    samples.iter().map(|x| x.to_bits()).collect()
}

/// `got` equals `want` bit for bit (else: how many differ, by how much).
fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let differ = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert!(
        differ == 0,
        "{what}: {differ} of {} values differ (max |diff| {:e})",
        got.len(),
        qwen3_tts_tests::max_abs_diff(got, want)
    );
}

fn alone(m: &Models, job: &Job) -> Output {
    alone_with_kv(m, job, talker::DEFAULT_KV_TYPE)
}

/// [`alone`] with the talker's KV cache in `kv`.
fn alone_with_kv(m: &Models, job: &Job, kv: GgmlType) -> Output {
    let mut synth = Synthesizer::with_models(m.model.clone(), m.vocoder.clone(), &m.tokenizer, 2);
    synth.session().set_kv_type(kv).unwrap();
    let mut out = Output::default();
    let summary = synth
        .synthesize_stream(&job.req, &job.opts, &job.stream, |c| {
            out.chunks
                .push((c.first_sample, c.frames, c.last, bits(c.samples)));
            Ok(())
        })
        .unwrap();
    out.frames = summary.frames;
    out
}

/// Runs `jobs` through a batch of `max_batch`: job i joins before step
/// `joins[i]` (or as soon as there is room after that). Returns each job's
/// output and the batch sizes seen at each step.
fn batched(
    m: &Models,
    jobs: &[Job],
    joins: &[usize],
    max_batch: usize,
) -> (Vec<Output>, Vec<usize>) {
    batched_with_kv(m, jobs, joins, max_batch, talker::DEFAULT_KV_TYPE)
}

/// [`batched`] with the talker's KV caches in `kv`.
fn batched_with_kv(
    m: &Models,
    jobs: &[Job],
    joins: &[usize],
    max_batch: usize,
    kv: GgmlType,
) -> (Vec<Output>, Vec<usize>) {
    let mut batch = BatchSynthesizer::new(m.model.clone(), m.vocoder.clone(), 2, max_batch);
    batch.set_kv_type(kv).unwrap();
    let mut ids: HashMap<SequenceId, usize> = HashMap::new();
    let mut outputs: Vec<Output> = jobs.iter().map(|_| Output::default()).collect();
    let mut done = vec![false; jobs.len()];
    let mut next = 0;
    let mut sizes = Vec::new();
    for step in 0.. {
        while next < jobs.len() && joins[next] <= step && batch.has_room() {
            let j = &jobs[next];
            let id = batch.join(&j.req, &j.opts, &j.stream).unwrap();
            ids.insert(id, next);
            next += 1;
        }
        if batch.is_empty() && next == jobs.len() {
            break;
        }
        sizes.push(batch.len());
        batch.step(|id, event| {
            let i = ids[&id];
            match event {
                BatchEvent::Audio(c) => {
                    outputs[i]
                        .chunks
                        .push((c.first_sample, c.frames, c.last, bits(c.samples)))
                }
                BatchEvent::Done(summary) => {
                    outputs[i].frames = summary.frames;
                    done[i] = true;
                }
                BatchEvent::Failed(e) => panic!("job {i} failed: {e}"),
            }
        });
        assert!(step < 10_000, "the batch never emptied");
    }
    assert!(done.iter().all(|&d| d), "every job finished");
    (outputs, sizes)
}

fn speaker(text: &str, name: &str, language: &str) -> Request {
    Request {
        text: text.into(),
        language: language.into(),
        voice: Voice::Speaker(name.into()),
        instruct: None,
        non_streaming: None,
    }
}

fn check(what: &str, jobs: &[Job], got: &[Output], want: &[Output]) {
    for (i, ((g, w), j)) in got.iter().zip(want).zip(jobs).enumerate() {
        assert!(!w.frames.is_empty(), "{what} job {i}: frames");
        assert_eq!(
            g.frames,
            w.frames,
            "{what} job {i} ({:?}): codes",
            j.req.voice_kind()
        );
        assert_eq!(
            g.chunks.len(),
            w.chunks.len(),
            "{what} job {i}: chunk count"
        );
        for (k, (gc, wc)) in g.chunks.iter().zip(&w.chunks).enumerate() {
            let (head, want_head) = ((gc.0, gc.1, gc.2), (wc.0, wc.1, wc.2));
            assert_eq!(
                head, want_head,
                "{what} job {i}: chunk {k} (first sample, frames, last)"
            );
            let differ = gc.3.iter().zip(&wc.3).filter(|(a, b)| a != b).count();
            assert!(
                gc.3.len() == wc.3.len() && differ == 0,
                "{what} job {i}: chunk {k}: {differ} of {} samples differ ({} long)",
                wc.3.len(),
                gc.3.len()
            );
        }
    }
}

trait VoiceKind {
    fn voice_kind(&self) -> &'static str;
}

impl VoiceKind for Request {
    fn voice_kind(&self) -> &'static str {
        match self.voice {
            Voice::None => "none",
            Voice::Speaker(_) => "speaker",
            Voice::XVector(_) => "x-vector",
            Voice::Icl { .. } => "icl",
        }
    }
}

/// With the opt-in F16 KV cache (`--kv-cache f16`) a batch still gives
/// each sequence exactly what it gives alone with that cache.
#[test]
fn f16_kv_cache_batch_equals_each_alone() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let m = models("0.6B-CustomVoice", GgmlType::Q8_0, tmp.path());
    let jobs = vec![
        job(
            &m,
            speaker("Half-precision keys.", "ryan", "english"),
            12,
            true,
            1,
        ),
        job(
            &m,
            speaker("And values, sampled.", "vivian", "english"),
            17,
            false,
            2,
        ),
        job(
            &m,
            speaker("Joins at step three.", "serena", "auto"),
            8,
            false,
            3,
        ),
    ];
    let want: Vec<Output> = jobs
        .iter()
        .map(|j| alone_with_kv(&m, j, GgmlType::F16))
        .collect();
    let (got, sizes) = batched_with_kv(&m, &jobs, &[0, 0, 3], 3, GgmlType::F16);
    check("CustomVoice q8_0, F16 KV cache", &jobs, &got, &want);
    assert_eq!(sizes.iter().max(), Some(&3), "three at once: {sizes:?}");
    // And the cache type matters: F32-cache runs differ somewhere.
    let f32_alone: Vec<Output> = jobs.iter().map(|j| alone(&m, j)).collect();
    assert!(
        f32_alone.iter().zip(&want).any(|(a, b)| a != b),
        "an F16 cache changed nothing: was it used?"
    );
}

#[test]
fn custom_voice_batch_equals_each_alone() {
    let _g = serial();
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_K] {
        let tmp = tempfile::tempdir().unwrap();
        let m = models("0.6B-CustomVoice", ty, tmp.path());
        let mut jobs = vec![
            job(
                &m,
                speaker("The first one, greedy.", "ryan", "english"),
                14,
                true,
                1,
            ),
            job(
                &m,
                speaker("Sampled, and longer than the first.", "vivian", "chinese"),
                23,
                false,
                2,
            ),
            job(&m, speaker("Joins later.", "ryan", "auto"), 9, false, 3),
            job(
                &m,
                speaker("Waits for a free slot.", "serena", "english"),
                11,
                true,
                4,
            ),
        ];
        // Other sampling settings for one of them (its own graph inputs).
        jobs[2].opts.subtalker.top_k = 7;
        jobs[2].opts.talker.temperature = 0.7;
        jobs[1].stream.chunk_frames = 3;
        let want: Vec<Output> = jobs.iter().map(|j| alone(&m, j)).collect();
        // 0 and 1 start together, 2 joins at step 4, 3 when a slot frees up.
        let (got, sizes) = batched(&m, &jobs, &[0, 0, 4, 5], 3);
        check(&format!("CustomVoice {}", ty.name()), &jobs, &got, &want);
        assert_eq!(sizes.iter().max(), Some(&3), "three at once: {sizes:?}");
        assert!(sizes.contains(&1), "and one alone at the end: {sizes:?}");
    }
}

#[test]
fn cloned_voices_batch_equals_each_alone() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let m = models("0.6B-Base", GgmlType::Q8_0, tmp.path());
    let mut synth = Synthesizer::with_models(m.model.clone(), m.vocoder.clone(), &m.tokenizer, 2);
    let audio =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");
    let voice = synth
        .clone_voice(&audio, Some("Okay. Yeah. I resent you. I love you."))
        .unwrap();
    let req = |text: &str, x_vector_only| Request {
        text: text.into(),
        language: "english".into(),
        voice: voice.voice(x_vector_only),
        instruct: None,
        non_streaming: None,
    };
    let jobs = vec![
        job(&m, req("In context, cloned.", false), 12, true, 5),
        job(
            &m,
            req("From the x-vector alone, sampled.", true),
            17,
            false,
            6,
        ),
        job(
            &m,
            req("In context again, sampled, joining later.", false),
            8,
            false,
            7,
        ),
    ];
    let want: Vec<Output> = jobs.iter().map(|j| alone(&m, j)).collect();
    let (got, sizes) = batched(&m, &jobs, &[0, 0, 3], 4);
    check("Base", &jobs, &got, &want);
    assert_eq!(sizes.iter().max(), Some(&3), "{sizes:?}");
}

#[test]
fn cancelled_sequences_leave_and_free_their_slot() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let m = models("0.6B-CustomVoice", GgmlType::Q8_0, tmp.path());
    let mut batch = BatchSynthesizer::new(m.model.clone(), m.vocoder.clone(), 2, 2);
    let long = job(
        &m,
        speaker("A long one that will not finish.", "ryan", "english"),
        200,
        true,
        1,
    );
    let flagged = {
        let mut j = job(
            &m,
            speaker("Cancelled by its flag.", "vivian", "english"),
            200,
            false,
            2,
        );
        j.opts.cancel = Some(CancelFlag::new());
        j
    };
    let a = batch.join(&long.req, &long.opts, &long.stream).unwrap();
    let b = batch
        .join(&flagged.req, &flagged.opts, &flagged.stream)
        .unwrap();
    assert!(!batch.has_room());
    let full = batch.join(&long.req, &long.opts, &long.stream);
    assert!(
        matches!(&full, Err(Error::InvalidRequest { field: "batch", .. })),
        "a full batch refuses: {full:?}"
    );
    let mut events: Vec<(SequenceId, String)> = Vec::new();
    fn record(
        events: &mut Vec<(SequenceId, String)>,
    ) -> impl FnMut(SequenceId, BatchEvent<'_>) + '_ {
        |id, e| {
            let kind = match e {
                BatchEvent::Audio(_) => "audio".to_string(),
                BatchEvent::Done(_) => "done".to_string(),
                BatchEvent::Failed(e) => format!("failed: {e}"),
            };
            events.push((id, kind));
        }
    }
    for _ in 0..3 {
        batch.step(record(&mut events));
    }
    assert_eq!(batch.len(), 2);
    // The flag: the sequence fails with Cancelled at the next step and leaves.
    flagged.opts.cancel.as_ref().unwrap().cancel();
    batch.step(record(&mut events));
    assert_eq!(batch.len(), 1, "the flagged one left");
    assert!(
        events.contains(&(b, "failed: cancelled".into())),
        "{events:?}"
    );
    // Its slot takes a new sequence.
    let c = batch.join(&long.req, &long.opts, &long.stream).unwrap();
    assert_eq!(batch.len(), 2);
    // Direct cancellation: gone at once, no further events.
    assert!(batch.cancel(a));
    assert!(!batch.cancel(a), "cancelled once");
    assert_eq!(batch.len(), 1);
    let before = events.len();
    batch.step(record(&mut events));
    assert!(
        events[before..].iter().all(|(id, _)| *id == c),
        "only c is left: {events:?}"
    );
    // A lone survivor still gives what it gives alone.
    assert!(batch.cancel(c));
    assert!(batch.is_empty());
    batch.step(record(&mut events));
}

/// Deterministic pseudo-random values in [−scale, scale].
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Below the codes: the batched talker step and code-predictor frame give
/// each sequence bit for bit the logits, hidden states and frame embeddings
/// it gets alone, across cache buckets and with mixed sampling settings.
#[test]
fn batched_steps_equal_solo_steps_bit_for_bit() {
    use qwen3_tts::code_predictor::{CodePredictor, FrameInput};
    use qwen3_tts::ggml::Backend;
    use qwen3_tts::sampler::{Sampler, SamplingParams};
    use qwen3_tts::talker::{DecodeBatch, StepInput, Talker};

    let _g = serial();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
        let tmp = tempfile::tempdir().unwrap();
        let m = models("0.6B-CustomVoice", ty, tmp.path());
        let backend = Arc::new(Backend::cpu(2));
        let session = m.model.session(2);
        let texts = [
            "One.",
            "A somewhat longer prompt than that.",
            "Medium length here.",
        ];
        let prompts: Vec<_> = texts
            .iter()
            .map(|t| session.prompt(&speaker(t, "ryan", "english")).unwrap())
            .collect();
        let new_talker = || Talker::new(m.model.talker.clone(), backend.clone());
        let mut solo: Vec<Talker> = prompts.iter().map(|_| new_talker()).collect();
        let mut together: Vec<Talker> = prompts.iter().map(|_| new_talker()).collect();
        let hidden = m.model.config.talker.hidden;
        let mut last = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let (a, _) = solo[i].prefill(&p.prefill, p.len() + 8).unwrap();
            let (b, _) = together[i].prefill(&p.prefill, p.len() + 8).unwrap();
            same_bits("prefill", &a.logits, &b.logits);
            last.push(a.hidden);
        }
        let mut batch = DecodeBatch::default();
        // 70 steps: every cache grows past its reservation and crosses a 64-position bucket.
        for step in 0..70 {
            let embeds: Vec<Vec<f32>> = (0..prompts.len())
                .map(|i| noise(hidden, (step * 7 + i) as u64, 0.5))
                .collect();
            let positions: Vec<usize> = prompts.iter().map(|p| p.len() + step).collect();
            let want: Vec<_> = solo
                .iter_mut()
                .zip(&embeds)
                .zip(&positions)
                .map(|((t, e), &p)| t.forward(e, p).unwrap())
                .collect();
            let mut inputs: Vec<StepInput<'_>> = together
                .iter_mut()
                .zip(&embeds)
                .zip(&positions)
                .map(|((talker, embed), &position)| StepInput {
                    talker,
                    embed,
                    position,
                })
                .collect();
            let got = batch.step(&mut inputs).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let what = format!("{} step {step} sequence {i}", ty.name());
                same_bits(&format!("{what}: logits"), &g.logits, &w.logits);
                same_bits(&format!("{what}: hidden"), &g.hidden, &w.hidden);
            }
            last = want.into_iter().map(|s| s.hidden).collect();
        }

        let top_k = SamplingParams {
            do_sample: true,
            temperature: 0.9,
            top_k: 5,
            top_p: 1.0,
        };
        let top_p = SamplingParams {
            do_sample: true,
            temperature: 1.1,
            top_k: 0,
            top_p: 0.8,
        };
        let both = SamplingParams {
            do_sample: true,
            temperature: 0.7,
            top_k: 9,
            top_p: 0.9,
        };
        // Neighbours with the same settings pick together (one run): runs of
        // one, two and three sequences, and a teacher-forced run of two.
        let params = [
            SamplingParams::greedy(),
            top_k.clone(),
            top_k.clone(),
            top_p,
            both.clone(),
            both.clone(),
            both.clone(),
            top_k.clone(),
            top_k,
        ];
        let forced = |i: usize| i >= 7;
        let n = params.len();
        let mut alone = CodePredictor::new(m.model.code_predictor.clone(), backend.clone());
        let mut shared = CodePredictor::new(m.model.code_predictor.clone(), backend.clone());
        let mut rngs_alone: Vec<Sampler> = (0..n).map(|i| Sampler::new(40 + i as u64)).collect();
        let mut rngs_shared: Vec<Sampler> = (0..n).map(|i| Sampler::new(40 + i as u64)).collect();
        let groups = m.model.config.num_code_groups;
        let given = |frame: u32, i: usize| -> Vec<u32> {
            (0..groups as u32)
                .map(|g| (3 + frame + i as u32 + 11 * g) % 97)
                .collect()
        };
        for frame in 0..3u32 {
            let want: Vec<_> = (0..n)
                .map(|i| {
                    let (hidden, rng) = (&last[i % last.len()], &mut rngs_alone[i]);
                    match forced(i) {
                        true => alone.predict_forced(hidden, &given(frame, i), &params[i], rng),
                        false => alone.predict(hidden, 3 + frame + i as u32, &params[i], rng),
                    }
                    .unwrap()
                })
                .collect();
            let frames: Vec<Vec<u32>> = (0..n).map(|i| given(frame, i)).collect();
            let mut inputs: Vec<FrameInput<'_>> = rngs_shared
                .iter_mut()
                .enumerate()
                .map(|(i, rng)| FrameInput {
                    hidden: &last[i % last.len()],
                    c0: match forced(i) {
                        true => frames[i][0],
                        false => 3 + frame + i as u32,
                    },
                    forced: forced(i).then(|| &frames[i][1..]),
                    params: &params[i],
                    rng,
                })
                .collect();
            let got = shared.predict_batch(&mut inputs).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let what = format!("{} frame {frame} sequence {i}", ty.name());
                assert_eq!(g.codes, w.codes, "{what}: codes");
                same_bits(&format!("{what}: logits"), &g.logits, &w.logits);
                same_bits(&format!("{what}: frame"), &g.frame_embed, &w.frame_embed);
            }
        }
    }
}
