//! One loaded model serves several sessions: two synthesizers over the same
//! `Arc`'d TTS model and vocoder, run at once on two threads with different
//! requests, give exactly (bit for bit) what each gives alone.

use std::sync::Arc;

use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{GenerateOptions, Session, Synthesis, Synthesizer, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, serial};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn models_are_shareable_and_sessions_movable() {
    assert_send_sync::<TtsModel>();
    assert_send_sync::<CodecDecoder>();
    assert_send::<Session>();
    assert_send::<Synthesizer>();
}

fn request(text: &str, speaker: &str) -> Request {
    Request {
        text: text.into(),
        language: "english".into(),
        voice: Voice::Speaker(speaker.into()),
        instruct: None,
        non_streaming: None,
    }
}

#[test]
fn two_sessions_at_once_give_what_each_gives_alone() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::F32, tmp.path());
    let tok = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    let model = Arc::new(TtsModel::load(&tts).unwrap());
    let vocoder = Arc::new(CodecDecoder::load(&tok).unwrap());
    let speakers: Vec<String> = model
        .config
        .speakers
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(speakers.len() >= 2, "the fixture has several speakers");

    // A: greedy; B: sampled with a seed, another speaker and text.
    let jobs = {
        let mut greedy = GenerateOptions::from_config(&model.config).greedy();
        greedy.set_max_new_tokens(25);
        greedy.min_new_tokens = 25;
        let mut sampled = GenerateOptions::from_config(&model.config);
        sampled.seed = 1234;
        sampled.set_max_new_tokens(31);
        sampled.min_new_tokens = 31;
        [
            (request("Hello there, how are you?", &speakers[0]), greedy),
            (
                request("A different sentence entirely.", &speakers[1]),
                sampled,
            ),
        ]
    };
    let run = |(req, opts): &(Request, GenerateOptions)| -> Synthesis {
        let mut synth = Synthesizer::with_models(model.clone(), vocoder.clone(), &tok, 1);
        synth.synthesize(req, opts, |_| {}).unwrap()
    };

    let alone: Vec<Synthesis> = jobs.iter().map(run).collect();
    // the two requests really differ
    assert_ne!(alone[0].frames, alone[1].frames);
    assert_eq!(alone[0].frames.len(), 24);
    assert_eq!(alone[1].frames.len(), 30);

    let together: Vec<Synthesis> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs.iter().map(|job| s.spawn(move || run(job))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.frames, b.frames, "request {i}: codes");
        assert_eq!(a.samples.len(), b.samples.len(), "request {i}: length");
        assert!(
            a.samples
                .iter()
                .zip(&b.samples)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "request {i}: samples differ"
        );
    }

    // The thread count (fixed or adaptive, which may change it between
    // frames) does not change the result.
    for threads in [2, 0] {
        let mut synth = Synthesizer::with_models(model.clone(), vocoder.clone(), &tok, threads);
        let out = synth.synthesize(&jobs[1].0, &jobs[1].1, |_| {}).unwrap();
        assert_eq!(out.frames, alone[1].frames, "{threads} threads: codes");
        assert_eq!(out.samples, alone[1].samples, "{threads} threads: samples");
    }

    // A session can run another request after the first (state is reset).
    let mut synth = Synthesizer::with_models(model.clone(), vocoder.clone(), &tok, 1);
    let first = synth.synthesize(&jobs[1].0, &jobs[1].1, |_| {}).unwrap();
    let second = synth.synthesize(&jobs[0].0, &jobs[0].1, |_| {}).unwrap();
    assert_eq!(first.frames, alone[1].frames);
    assert_eq!(second.frames, alone[0].frames);
    assert_eq!(second.samples, alone[0].samples);
}
