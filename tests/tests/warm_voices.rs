//! Warm voices change nothing but the time: a request served from a voice's
//! warm state (the talker's saved prompt prefix, and for ICL the vocoder's
//! state after the reference frames) gives bit for bit the codes and samples
//! it gives computed from scratch, in every mode with a voice or speaker
//! prefix (CustomVoice speaker with and without instruction, VoiceDesign,
//! x-vector, ICL in both text layouts), greedy and seeded, offline and
//! streamed with several chunk schedules, batched with other voices, and for
//! every part of a long text; and the warm path is taken (cache hits). The
//! cache stays within its budget (least recently used out, recomputed to the
//! same result) and drops a forgotten voice's state at once.

use std::sync::Arc;

use qwen3_tts::batch::{BatchEvent, BatchSynthesizer};
use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::long_text::{part_request, split_text};
use qwen3_tts::pipeline::{icl_cut, GenerateOptions, StreamOptions, Synthesizer, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts::warm::{WarmCache, WarmPiece, WarmStats, WarmUp};
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, fixtures, serial, Dump};

const BUDGET: usize = 64 << 20;

struct Models {
    model: Arc<TtsModel>,
    vocoder: Arc<CodecDecoder>,
    tokenizer: std::path::PathBuf,
}

fn models(variant: &str, ty: GgmlType, dir: &std::path::Path) -> Models {
    let dir = dir.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    let tts = convert_tiny(variant, ty, &dir);
    let tokenizer = convert_tiny_tokenizer(GgmlType::F32, &dir);
    Models {
        model: Arc::new(TtsModel::load(tts).unwrap()),
        vocoder: Arc::new(CodecDecoder::load(&tokenizer).unwrap()),
        tokenizer,
    }
}

/// A synthesizer over `m` keeping warm state in `cache`.
fn synth(m: &Models, cache: &Arc<WarmCache>) -> Synthesizer {
    let mut s = Synthesizer::with_models(m.model.clone(), m.vocoder.clone(), &m.tokenizer, 2);
    s.set_warm_cache(cache.clone());
    s
}

/// A fresh synthesizer that keeps nothing: every request from scratch.
fn cold(m: &Models) -> Synthesizer {
    synth(m, &Arc::new(WarmCache::new(0)))
}

/// Exactly `frames` frames; greedy, or sampled with a fixed seed.
fn options(m: &Models, frames: usize, greedy: bool) -> GenerateOptions {
    let mut o = GenerateOptions::from_config(&m.model.config);
    if greedy {
        o = o.greedy();
    }
    o.seed = 1234;
    o.set_max_new_tokens(frames + 1);
    o.min_new_tokens = frames + 1;
    o
}

fn bits(samples: &[f32]) -> Vec<u32> {
    samples.iter().map(|x| x.to_bits()).collect()
}

/// Codes and sample bits of one way of running a request.
type Output = (Vec<Vec<u32>>, Vec<u32>);

const SCHEDULES: [(usize, usize); 3] = [(1, 12), (2, 3), (1, 1)];

/// `req` offline, then streamed with each schedule, on `s`.
fn outputs(s: &mut Synthesizer, req: &Request, opts: &GenerateOptions) -> Vec<(String, Output)> {
    let offline = s.synthesize(req, opts, |_| {}).unwrap();
    let mut out = vec![(
        "offline".to_string(),
        (offline.frames, bits(&offline.samples)),
    )];
    for (first, every) in SCHEDULES {
        let stream = StreamOptions {
            first_chunk_frames: first,
            chunk_frames: every,
        };
        let mut samples = Vec::new();
        let summary = s
            .synthesize_stream(req, opts, &stream, |c| {
                samples.extend_from_slice(c.samples);
                Ok(())
            })
            .unwrap();
        out.push((
            format!("stream {first}/{every}"),
            (summary.frames, bits(&samples)),
        ));
    }
    out
}

/// Each way of running `req`, each on a fresh cold synthesizer.
fn cold_outputs(m: &Models, req: &Request, opts: &GenerateOptions) -> Vec<(String, Output)> {
    let mut all = Vec::new();
    for i in 0..=SCHEDULES.len() {
        let mut s = cold(m);
        let mut o = outputs(&mut s, req, opts);
        all.push(o.remove(i));
    }
    all
}

fn compare(what: &str, got: &[(String, Output)], want: &[(String, Output)]) -> Vec<String> {
    let mut failures = Vec::new();
    for ((how, g), (_, w)) in got.iter().zip(want) {
        let differ = g.1.iter().zip(&w.1).filter(|(a, b)| a != b).count();
        eprintln!(
            "{what} {how}: {} frames, {} samples, {differ} differ",
            g.0.len(),
            g.1.len()
        );
        if g != w {
            failures.push(format!(
                "{what} {how}: codes equal {}, samples {} vs {}, {differ} differ",
                g.0 == w.0,
                g.1.len(),
                w.1.len()
            ));
        }
    }
    failures
}

fn request(
    text: &str,
    voice: Voice,
    instruct: Option<&str>,
    non_streaming: Option<bool>,
) -> Request {
    Request {
        text: text.into(),
        language: "english".into(),
        voice,
        instruct: instruct.map(Into::into),
        non_streaming,
    }
}

/// A voice cloned from the fixture's reference clip, with its transcript.
fn cloned_voice(m: &Models) -> VoicePrompt {
    let audio =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");
    cold(m)
        .clone_voice(&audio, Some("Okay. Yeah. I resent you. I love you."))
        .unwrap()
}

/// `req` served warm equals `req` cold, for a cache warmed by another
/// request with the same voice (`first`), and for one warmed ahead with
/// [`Synthesizer::warm_voice`]; the warm runs hit the cache.
fn check(m: &Models, what: &str, first: &Request, req: &Request, lookups: u64) -> Vec<String> {
    let mut failures = Vec::new();
    for greedy in [true, false] {
        let opts = options(m, 14, greedy);
        let want = cold_outputs(m, req, &opts);
        let what = format!("{what} greedy={greedy}");

        // Warmed by an earlier request of the voice.
        let cache = Arc::new(WarmCache::new(BUDGET));
        let mut s = synth(m, &cache);
        s.synthesize(first, &options(m, 5, greedy), |_| {}).unwrap();
        let before = cache.stats();
        assert_eq!(before.misses, lookups, "{what}: the first request computes");
        let got = outputs(&mut s, req, &opts);
        let after = cache.stats();
        assert_eq!(after.misses, before.misses, "{what}: later requests hit");
        assert_eq!(
            after.hits - before.hits,
            lookups * got.len() as u64,
            "{what}: a hit per lookup"
        );
        failures.extend(compare(&format!("{what} after a request"), &got, &want));

        // Warmed ahead, on a fresh synthesizer (a server's warm-up at start).
        let cache = Arc::new(WarmCache::new(BUDGET));
        let mut s = synth(m, &cache);
        s.warm_voice(req).unwrap();
        assert_eq!(cache.stats().entries as u64, lookups, "{what}: warmed");
        let got = outputs(&mut s, req, &opts);
        let stats = cache.stats();
        assert_eq!(stats.misses, 0, "{what}: warmed ahead, every lookup hits");
        failures.extend(compare(&format!("{what} warmed ahead"), &got, &want));
    }
    failures
}

#[test]
fn warm_speakers_and_instructions_equal_cold() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();

    let cv = models("0.6B-CustomVoice", GgmlType::F32, tmp.path());
    let ryan = || Voice::Speaker("ryan".into());
    for layout in [None, Some(false)] {
        failures.extend(check(
            &cv,
            &format!("0.6B CustomVoice layout={layout:?}"),
            &request("Something else first.", ryan(), None, layout),
            &request("Hello there, how are you today?", ryan(), None, layout),
            1,
        ));
    }

    let cv17 = models("1.7B-CustomVoice", GgmlType::Q8_0, tmp.path());
    let calm = Some("Speak calmly and slowly.");
    failures.extend(check(
        &cv17,
        "1.7B CustomVoice Q8_0 with instruct",
        &request("First line.", ryan(), calm, None),
        &request("The second line, a bit longer.", ryan(), calm, None),
        1,
    ));

    let vd = models("1.7B-VoiceDesign", GgmlType::F32, tmp.path());
    let design = Some("A bright, quick voice.");
    failures.extend(check(
        &vd,
        "1.7B VoiceDesign",
        &request("Designed first.", Voice::None, design, None),
        &request(
            "Designed, and then a second line.",
            Voice::None,
            design,
            None,
        ),
        1,
    ));
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn warm_cloned_voices_equal_cold() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let base = models("0.6B-Base", ty, tmp.path().join(ty.name()).as_path());
        let voice = cloned_voice(&base);
        let t = ty.name();
        let xv = voice.voice(true);
        failures.extend(check(
            &base,
            &format!("{t} x-vector"),
            &request("Cloned, first.", xv.clone(), None, None),
            &request("Cloned, and then a second one.", xv, None, None),
            1,
        ));
        let icl = voice.voice(false);
        for layout in [None, Some(true)] {
            failures.extend(check(
                &base,
                &format!("{t} ICL layout={layout:?}"),
                &request("In context, first.", icl.clone(), None, layout),
                &request("In context, and a second line.", icl.clone(), None, layout),
                2,
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// ICL lengths where the reference's cut keeps the reference's last sample
/// (float64 rounding) and where it does not: warm state must supply it.
#[test]
fn warm_icl_cut_equals_cold_for_every_length() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = models("0.6B-Base", GgmlType::F32, tmp.path());
    let icl = cloned_voice(&base).voice(false);
    let Voice::Icl { ref_codes, .. } = &icl else {
        unreachable!()
    };
    let (r, spf) = (ref_codes.len(), base.vocoder.samples_per_frame());
    let keeps_one = |f: usize| icl_cut(r, f, (r + f) * spf) + 1 == r * spf;
    let mut lengths: Vec<usize> = (1..400).filter(|&f| keeps_one(f)).take(2).collect();
    assert_eq!(
        lengths.len(),
        2,
        "lengths whose cut keeps a reference sample"
    );
    lengths.extend([lengths[0] + 1, 3]);
    let req = request("Cut where the reference cuts.", icl.clone(), None, None);
    let cache = Arc::new(WarmCache::new(BUDGET));
    let mut warm = synth(&base, &cache);
    for frames in lengths {
        let opts = options(&base, frames, true);
        let want = cold(&base).synthesize(&req, &opts, |_| {}).unwrap();
        let got = warm.synthesize(&req, &opts, |_| {}).unwrap();
        assert_eq!(
            want.samples.len(),
            frames * spf + keeps_one(frames) as usize,
            "{frames} frames"
        );
        assert_eq!(bits(&got.samples), bits(&want.samples), "{frames} frames");
    }
    assert_eq!(cache.stats().misses, 2, "computed once");
}

#[test]
fn warm_batches_equal_cold_solo_streams() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = models("0.6B-Base", GgmlType::Q8_0, tmp.path());
    let voice = cloned_voice(&base);
    // A second ICL voice: the same clip cut shorter, another transcript.
    let other = match voice.voice(false) {
        Voice::Icl {
            x_vector,
            ref_codes,
            ..
        } => Voice::Icl {
            x_vector,
            ref_codes: ref_codes[..ref_codes.len() - 7].to_vec(),
            ref_text: "Okay. Yeah. I resent you.".into(),
        },
        _ => unreachable!(),
    };
    let jobs = [
        (
            request("Batched in context.", voice.voice(false), None, None),
            12,
            true,
        ),
        (
            request("Batched by x-vector.", voice.voice(true), None, None),
            9,
            false,
        ),
        (
            request("Another voice in context.", other.clone(), None, None),
            15,
            false,
        ),
        (
            request(
                "The first voice again, later.",
                voice.voice(false),
                None,
                None,
            ),
            8,
            true,
        ),
    ];
    let stream = StreamOptions {
        first_chunk_frames: 1,
        chunk_frames: 4,
    };
    let want: Vec<Output> = jobs
        .iter()
        .map(|(req, frames, greedy)| {
            let mut samples = Vec::new();
            let s = cold(&base)
                .synthesize_stream(req, &options(&base, *frames, *greedy), &stream, |c| {
                    samples.extend_from_slice(c.samples);
                    Ok(())
                })
                .unwrap();
            (s.frames, bits(&samples))
        })
        .collect();

    let cache = Arc::new(WarmCache::new(BUDGET));
    let mut batch = BatchSynthesizer::new(base.model.clone(), base.vocoder.clone(), 2, 4);
    batch.set_warm_cache(cache.clone());
    // The first voice warmed ahead in steps, as a server does between frames.
    let mut w = WarmUp::voice(voice.voice(false), "english");
    let mut steps = 0;
    while !batch.warm_up(&mut w, WarmPiece::BETWEEN_FRAMES).unwrap() {
        steps += 1;
    }
    assert!(steps > 3, "warmed in several steps ({steps})");
    let warmed = cache.stats();
    assert_eq!((warmed.prefixes, warmed.contexts), (1, 1));

    let mut got: Vec<Output> = vec![Default::default(); jobs.len()];
    let mut ids = Vec::new();
    let mut joined = 0;
    let mut other_warm = WarmUp::voice(other, "english");
    let mut step = 0;
    while joined < jobs.len() || !batch.is_empty() {
        // Join one every other step; the other voice warms meanwhile.
        if joined < jobs.len() && step % 2 == 0 {
            let (req, frames, greedy) = &jobs[joined];
            ids.push(
                batch
                    .join(req, &options(&base, *frames, *greedy), &stream)
                    .unwrap(),
            );
            joined += 1;
        } else if !other_warm.is_done() {
            batch
                .warm_up(&mut other_warm, WarmPiece::BETWEEN_FRAMES)
                .unwrap();
        }
        step += 1;
        batch.step(|id, event| {
            let i = ids.iter().position(|&x| x == id).unwrap();
            match event {
                BatchEvent::Audio(c) => got[i].1.extend(bits(c.samples)),
                BatchEvent::Done(s) => got[i].0 = s.frames,
                BatchEvent::Failed(e) => panic!("job {i}: {e}"),
            }
        });
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.0, w.0, "job {i}: codes");
        assert_eq!(g.1, w.1, "job {i}: samples");
    }
    let stats = cache.stats();
    eprintln!("{stats:?}");
    // The first voice's two requests and the x-vector voice's prefix... the
    // first voice hit both times (prefix and context).
    assert!(stats.hits >= 4, "{stats:?}");
}

#[test]
fn every_part_of_a_long_text_equals_cold_and_the_voice_is_computed_once() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = models("0.6B-Base", GgmlType::F32, tmp.path());
    let icl = cloned_voice(&base).voice(false);
    let text = "The first sentence is here. A second one follows it. \
                And a third, to end the paragraph.\n\nA new paragraph starts.";
    let req = request(text, icl, None, None);
    let parts = split_text(text, 40);
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let cache = Arc::new(WarmCache::new(BUDGET));
    let mut warm = synth(&base, &cache);
    for (i, part) in parts.iter().enumerate() {
        let (r, o) = part_request(&req, &options(&base, 6, false), part, i);
        let want = cold(&base).synthesize(&r, &o, |_| {}).unwrap();
        let got = warm.synthesize(&r, &o, |_| {}).unwrap();
        assert_eq!(got.frames, want.frames, "part {i}");
        assert_eq!(bits(&got.samples), bits(&want.samples), "part {i}");
    }
    let s = cache.stats();
    assert_eq!(
        s.misses, 2,
        "the voice is computed for the first part only: {s:?}"
    );
    assert_eq!(s.hits, 2 * (parts.len() as u64 - 1), "{s:?}");

    // `synthesize_long` (what qwen3-tts-run does), offline and streamed.
    let stream = StreamOptions::default();
    for stream in [None, Some(&stream)] {
        let cache = Arc::new(WarmCache::new(BUDGET));
        let opts = options(&base, 6, false);
        synth(&base, &cache)
            .synthesize_long(&req, &opts, &parts, stream, |_| Ok(()))
            .unwrap();
        let s = cache.stats();
        assert_eq!(s.misses, 2, "stream={}: once: {s:?}", stream.is_some());
        assert_eq!(s.hits, 2 * (parts.len() as u64 - 1), "{s:?}");
    }
}

/// A cache that holds one ICL voice evicts the least recently used one for
/// another, within its budget, and recomputes it to the same result; a
/// forgotten voice's state goes at once.
#[test]
fn the_cache_evicts_within_its_budget_and_forgets_voices() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = models("0.6B-Base", GgmlType::F32, tmp.path());
    let a = cloned_voice(&base).voice(false);
    let b = match &a {
        Voice::Icl {
            x_vector,
            ref_codes,
            ..
        } => Voice::Icl {
            x_vector: x_vector.clone(),
            ref_codes: ref_codes[..ref_codes.len() - 5].to_vec(),
            ref_text: "Okay. Yeah.".into(),
        },
        _ => unreachable!(),
    };
    let say = |v: &Voice| request("Say it once more.", v.clone(), None, None);
    let opts = options(&base, 8, true);
    let want_a = cold(&base).synthesize(&say(&a), &opts, |_| {}).unwrap();

    // One voice's size, then a budget for one and a half.
    let probe = Arc::new(WarmCache::new(BUDGET));
    synth(&base, &probe).warm_voice(&say(&a)).unwrap();
    let one = probe.stats().bytes;
    assert!(one > 0);
    let cache = Arc::new(WarmCache::new(one + one / 2));
    let mut s = synth(&base, &cache);
    s.warm_voice(&say(&a)).unwrap();
    assert_eq!(cache.stats().entries, 2);
    s.warm_voice(&say(&b)).unwrap();
    let st: WarmStats = cache.stats();
    assert!(st.bytes <= st.budget, "{st:?}");
    assert!(st.evictions >= 1, "{st:?}");
    // A came back: recomputed (misses), the same samples.
    let got = s.synthesize(&say(&a), &opts, |_| {}).unwrap();
    let after = cache.stats();
    assert!(after.misses > st.misses, "{after:?}");
    assert!(after.bytes <= after.budget, "{after:?}");
    assert_eq!(bits(&got.samples), bits(&want_a.samples));

    // Forgetting A drops its entries at once; the next request recomputes.
    let dropped = cache.forget(&a);
    assert!(dropped >= 1, "{dropped}");
    let left = cache.stats();
    assert_eq!(left.entries, after.entries - dropped);
    let again = s.synthesize(&say(&a), &opts, |_| {}).unwrap();
    assert_eq!(cache.stats().misses, left.misses + 2);
    assert_eq!(bits(&again.samples), bits(&want_a.samples));

    // Budget 0 keeps nothing.
    let off = Arc::new(WarmCache::new(0));
    synth(&base, &off).warm_voice(&say(&a)).unwrap();
    assert_eq!(off.stats(), WarmStats::default());
}
