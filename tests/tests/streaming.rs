//! Streamed synthesis gives the offline result: the chunks of
//! `Synthesizer::synthesize_stream`, joined, equal `synthesize`'s samples
//! (max |diff| ≤ 1e-6 at F32) for every mode, for chunk sizes 1, 4, 25 and
//! ≥ 300, across the vocoder's 300-frame chunk boundary, and for ICL (whose
//! reference part is cut from the start).

use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{icl_cut, GenerateOptions, StreamOptions, Synthesizer};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, fixtures, max_abs_diff, serial, Dump};

fn synthesizer(variant: &str, dir: &std::path::Path) -> Synthesizer {
    let tts = convert_tiny(variant, GgmlType::F32, dir);
    let tok = convert_tiny_tokenizer(GgmlType::F32, dir);
    Synthesizer::load(tts, tok, 2).unwrap()
}

/// Exactly `frames` frames; sampled with a seed unless `greedy`.
fn options(synth: &Synthesizer, frames: usize, greedy: bool) -> GenerateOptions {
    let mut o = GenerateOptions::from_config(&synth.model.config);
    if greedy {
        o = o.greedy();
    }
    o.seed = 99;
    o.set_max_new_tokens(frames + 1);
    o.min_new_tokens = frames + 1;
    o
}

/// The chunks of a stream, checked for continuity, joined.
fn streamed(
    synth: &mut Synthesizer,
    req: &Request,
    opts: &GenerateOptions,
    stream: StreamOptions,
) -> (Vec<f32>, Vec<Vec<u32>>) {
    let mut joined = Vec::new();
    let mut chunks: Vec<(usize, bool)> = Vec::new();
    let summary = synth
        .synthesize_stream(req, opts, &stream, |c| {
            assert_eq!(c.first_sample, joined.len(), "chunks are contiguous");
            assert!(
                chunks.last().is_none_or(|&(_, last)| !last),
                "nothing after the last chunk"
            );
            chunks.push((c.frames, c.last));
            joined.extend_from_slice(c.samples);
            Ok(())
        })
        .unwrap();
    assert_eq!(summary.samples, joined.len());
    assert_eq!(chunks.last().map(|c| c.1), Some(true), "a last chunk");
    // The first chunk comes after `first_chunk_frames` frames, later ones every `chunk_frames`.
    let n = summary.frames.len();
    let mut want = vec![];
    let mut at = stream.first_chunk_frames;
    while at <= n {
        want.push((at, false));
        at += stream.chunk_frames;
    }
    want.push((n, true));
    assert_eq!(chunks, want, "chunk schedule");
    (joined, summary.frames)
}

fn check(what: &str, offline: &[f32], stream: &[f32]) {
    assert_eq!(offline.len(), stream.len(), "{what}: length");
    let diff = max_abs_diff(offline, stream);
    eprintln!("{what}: {} samples, max |diff| {diff:.2e}", offline.len());
    assert!(diff <= 1e-6, "{what}: max |diff| {diff:e}");
}

const SCHEDULES: [(usize, usize); 5] = [(1, 1), (4, 4), (2, 25), (300, 300), (1, 301)];

fn speaker_request(text: &str) -> Request {
    Request {
        text: text.into(),
        language: "english".into(),
        voice: Voice::Speaker("ryan".into()),
        instruct: None,
        non_streaming: None,
    }
}

#[test]
fn custom_voice_and_voice_design_streams_equal_offline() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cv = synthesizer("0.6B-CustomVoice", tmp.path());
    let req = speaker_request("Streaming should change nothing at all.");
    for (greedy, frames) in [(true, 40), (false, 37)] {
        let opts = options(&cv, frames, greedy);
        let offline = cv.synthesize(&req, &opts, |_| {}).unwrap();
        for (first, every) in SCHEDULES {
            let stream = StreamOptions {
                first_chunk_frames: first,
                chunk_frames: every,
            };
            let (samples, codes) = streamed(&mut cv, &req, &opts, stream);
            assert_eq!(codes, offline.frames, "codes");
            check(
                &format!("CustomVoice greedy={greedy} {first}/{every}"),
                &offline.samples,
                &samples,
            );
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut vd = synthesizer("1.7B-VoiceDesign", tmp.path());
    let req = Request {
        text: "A designed voice, streamed.".into(),
        language: "auto".into(),
        voice: Voice::None,
        instruct: Some("A calm, low voice.".into()),
        non_streaming: None,
    };
    let opts = options(&vd, 30, false);
    let offline = vd.synthesize(&req, &opts, |_| {}).unwrap();
    for (first, every) in [(1, 4), (4, 25)] {
        let stream = StreamOptions {
            first_chunk_frames: first,
            chunk_frames: every,
        };
        let (samples, _) = streamed(&mut vd, &req, &opts, stream);
        check(
            &format!("VoiceDesign {first}/{every}"),
            &offline.samples,
            &samples,
        );
    }
}

#[test]
fn long_stream_crosses_the_vocoders_chunk_boundary() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cv = synthesizer("0.6B-CustomVoice", tmp.path());
    let req = speaker_request("A long one.");
    // 340 frames: the reference decodes 0..300, then 300..340 with 25 frames of context.
    let opts = options(&cv, 340, true);
    let offline = cv.synthesize(&req, &opts, |_| {}).unwrap();
    assert_eq!(offline.frames.len(), 340);
    for (first, every) in [(2, 12), (1, 7), (299, 2), (300, 300)] {
        let stream = StreamOptions {
            first_chunk_frames: first,
            chunk_frames: every,
        };
        let (samples, _) = streamed(&mut cv, &req, &opts, stream);
        check(
            &format!("340 frames {first}/{every}"),
            &offline.samples,
            &samples,
        );
    }
}

#[test]
fn cloned_voices_stream_equal_offline() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut base = synthesizer("0.6B-Base", tmp.path());
    let audio =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");
    let voice = base
        .clone_voice(&audio, Some("Okay. Yeah. I resent you. I love you."))
        .unwrap();
    let spf = base.vocoder.samples_per_frame();
    for x_vector_only in [true, false] {
        let req = Request {
            text: "Cloned and streamed.".into(),
            language: "english".into(),
            voice: voice.voice(x_vector_only),
            instruct: None,
            non_streaming: None,
        };
        // ICL lengths on both sides of the reference's rounding: its cut is
        // 1920·T_ref for most lengths and one sample earlier for a few.
        for frames in [20, 21, 22, 23, 24, 25, 26] {
            let opts = options(&base, frames, true);
            let offline = base.synthesize(&req, &opts, |_| {}).unwrap();
            let stream = StreamOptions {
                first_chunk_frames: 1,
                chunk_frames: 4,
            };
            let (samples, _) = streamed(&mut base, &req, &opts, stream);
            let what = format!("x_vector_only={x_vector_only}, {frames} frames");
            match &req.voice {
                Voice::Icl { ref_codes, .. } => {
                    let r = ref_codes.len();
                    let cut = icl_cut(r, frames, (r + frames) * spf);
                    assert!(cut == r * spf || cut == r * spf - 1, "{what}: cut {cut}");
                    // The stream starts at 1920·T_ref (see synthesize_stream).
                    let skip = r * spf - cut;
                    check(&what, &offline.samples[skip..], &samples);
                }
                _ => check(&what, &offline.samples, &samples),
            }
        }
    }
}

#[test]
fn f16_vocoder_streams_equal_offline() {
    // The released files' type: F16 convs, whose unfolded columns are F16.
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::F32, tmp.path());
    let tok = convert_tiny_tokenizer(GgmlType::F16, tmp.path());
    let mut cv = Synthesizer::load(tts, tok, 2).unwrap();
    let req = speaker_request("Half precision, streamed.");
    let opts = options(&cv, 30, true);
    let offline = cv.synthesize(&req, &opts, |_| {}).unwrap();
    for (first, every) in [(1, 1), (2, 3), (4, 25)] {
        let stream = StreamOptions {
            first_chunk_frames: first,
            chunk_frames: every,
        };
        let (samples, _) = streamed(&mut cv, &req, &opts, stream);
        check(
            &format!("F16 vocoder {first}/{every}"),
            &offline.samples,
            &samples,
        );
    }
}

#[test]
fn a_failing_consumer_stops_the_stream() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cv = synthesizer("0.6B-CustomVoice", tmp.path());
    let req = speaker_request("Stop early.");
    let opts = options(&cv, 50, true);
    let mut calls = 0;
    let err = cv
        .synthesize_stream(&req, &opts, &StreamOptions::default(), |_| {
            calls += 1;
            if calls == 2 {
                return Err(qwen3_tts::Error::invalid("client", "hung up"));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(calls, 2);
    assert!(err.to_string().contains("hung up"), "{err}");
    let bad = StreamOptions {
        first_chunk_frames: 0,
        chunk_frames: 4,
    };
    let err = cv
        .synthesize_stream(&req, &opts, &bad, |_| Ok(()))
        .unwrap_err();
    assert!(err.to_string().starts_with("stream:"), "{err}");
    // The session still works after an interrupted stream.
    let after = cv.synthesize(&req, &opts, |_| {}).unwrap();
    assert_eq!(after.frames.len(), 50);
}

#[test]
fn a_cancel_flag_stops_the_generation_at_the_next_frame() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cv = synthesizer("0.6B-CustomVoice", tmp.path());
    let req = speaker_request("Cancel me.");
    let mut opts = options(&cv, 50, true);
    let flag = qwen3_tts::pipeline::CancelFlag::new();
    opts.cancel = Some(flag.clone());
    let one_by_one = StreamOptions {
        first_chunk_frames: 1,
        chunk_frames: 1,
    };
    let mut seen = Vec::new();
    let err = cv
        .synthesize_stream(&req, &opts, &one_by_one, |c| {
            seen.push(c.frames);
            if c.frames == 3 {
                flag.cancel(); // as a server's disconnect watcher would
            }
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, qwen3_tts::Error::Cancelled), "{err}");
    assert_eq!(seen, vec![1, 2, 3], "no frame after the cancel");
    // A fresh flag: the session serves the next request in full.
    opts.cancel = Some(qwen3_tts::pipeline::CancelFlag::new());
    let after = cv.synthesize(&req, &opts, |_| {}).unwrap();
    assert_eq!(after.frames.len(), 50);
}

#[test]
fn a_concurrent_vocoder_streams_equal_offline_and_stops_with_its_consumer() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cv = synthesizer("0.6B-CustomVoice", tmp.path());
    let req = speaker_request("The vocoder on its own thread.");
    let opts = options(&cv, 40, false);
    let offline = cv.synthesize(&req, &opts, |_| {}).unwrap();
    cv.set_vocoder_threads(1);
    for (first, every) in [(1, 1), (2, 12), (300, 300)] {
        let stream = StreamOptions {
            first_chunk_frames: first,
            chunk_frames: every,
        };
        let (samples, codes) = streamed(&mut cv, &req, &opts, stream);
        assert_eq!(codes, offline.frames, "codes");
        check(
            &format!("concurrent {first}/{every}"),
            &offline.samples,
            &samples,
        );
    }
    let one_by_one = StreamOptions {
        first_chunk_frames: 1,
        chunk_frames: 1,
    };
    let mut calls = 0;
    let err = cv
        .synthesize_stream(&req, &opts, &one_by_one, |_| {
            calls += 1;
            match calls {
                3 => Err(qwen3_tts::Error::invalid("client", "hung up")),
                _ => Ok(()),
            }
        })
        .unwrap_err();
    assert_eq!(calls, 3, "no chunk after the consumer failed");
    assert!(err.to_string().contains("hung up"), "{err}");
    // Back to interleaved: the same samples again.
    cv.set_vocoder_threads(0);
    let (samples, _) = streamed(&mut cv, &req, &opts, one_by_one);
    check("interleaved again", &offline.samples, &samples);
}
