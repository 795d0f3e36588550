//! The runaway guard: a generation that misses its end code stops at the
//! bound for its text (`pipeline::runaway_frames`), offline, streamed and
//! batched alike, and says so; a caller's own limit replaces the bound.
//! The test model is the tiny random-weight one with its end code's row of
//! the codec head zeroed: that logit stays 0 while thousands of others are
//! random, so a greedy generation never ends by itself.

use std::sync::Arc;

use qwen3_tts::batch::{BatchEvent, BatchSynthesizer};
use qwen3_tts::codec_decoder::CodecDecoder;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{
    runaway_frames, GenerateOptions, Stop, StreamOptions, Synthesizer, TtsModel, FRAMES_PER_SECOND,
};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, model_without_end, serial};

fn speaker(text: &str, language: &str) -> Request {
    Request {
        text: text.into(),
        language: language.into(),
        voice: Voice::Speaker("ryan".into()),
        instruct: None,
        non_streaming: None,
    }
}

#[test]
fn a_generation_without_end_stops_at_the_bound_for_its_text() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let tiny = convert_tiny("0.6B-CustomVoice", GgmlType::F32, tmp.path());
    let tts = model_without_end(&tiny, tmp.path().join("no-end.gguf"));
    let tokenizer = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    let model = Arc::new(TtsModel::load(tts).unwrap());
    let vocoder = Arc::new(CodecDecoder::load(&tokenizer).unwrap());
    let mut synth = Synthesizer::with_models(model.clone(), vocoder.clone(), &tokenizer, 2);

    // The bounds the guard sets for ordinary sentences: several times
    // their spoken length (~4 s), well short of the model's own limit.
    let english = speaker(
        "The quick brown fox jumps over the lazy dog today.",
        "english",
    );
    let chinese = speaker("今天天气很好，我们去公园散步。你觉得呢？", "chinese");
    assert_eq!(chinese.text.chars().count(), 20);
    for (what, req) in [
        ("10 English words", &english),
        ("20 Chinese characters", &chinese),
    ] {
        let tokens = synth.session().prompt(req).unwrap().text_tokens();
        let bound = runaway_frames(tokens);
        let seconds = bound as f64 / FRAMES_PER_SECOND;
        println!("{what}: {tokens} text tokens, bound {bound} frames ({seconds:.1} s)");
        assert!((8..=24).contains(&tokens), "{what}: {tokens} tokens");
        assert!((12.0..=30.0).contains(&seconds), "{what}: {seconds} s");
    }

    // Offline: stops exactly at the bound, and says why.
    let req = speaker("Hi.", "english");
    let tokens = synth.session().prompt(&req).unwrap().text_tokens();
    let bound = runaway_frames(tokens);
    let opts = GenerateOptions::from_config(&model.config).greedy();
    assert!(
        opts.max_new_tokens > bound + 1,
        "the model's own limit is further"
    );
    let out = synth.synthesize(&req, &opts, |_| {}).unwrap();
    assert_eq!(out.stop, Stop::RunawayGuard);
    assert_eq!(out.frames.len(), bound);
    assert_eq!(out.samples.len(), bound * 1920);

    // Streamed: the same frames.
    let stream = StreamOptions {
        first_chunk_frames: 4,
        chunk_frames: 40,
    };
    let summary = synth
        .synthesize_stream(&req, &opts, &stream, |_| Ok(()))
        .unwrap();
    assert_eq!(summary.stop, Stop::RunawayGuard);
    assert_eq!(summary.frames, out.frames);

    // Batched: the same frames and the same reason.
    let mut batch = BatchSynthesizer::new(model.clone(), vocoder.clone(), 2, 2);
    batch.join(&req, &opts, &stream).unwrap();
    let mut done = None;
    while !batch.is_empty() {
        batch.step(|_, event| match event {
            BatchEvent::Done(s) => done = Some(s),
            BatchEvent::Failed(e) => panic!("{e}"),
            BatchEvent::Audio(_) => {}
        });
    }
    let done = done.expect("the sequence finished");
    assert_eq!(done.stop, Stop::RunawayGuard);
    assert_eq!(done.frames, out.frames);

    // A limit of the caller's own replaces the bound, either way; a
    // minimum above the bound wins over it.
    let prompt = synth.session().prompt(&req).unwrap();
    let mut generate = |o: &GenerateOptions| {
        let (frames, trace) = synth.session().generate(&prompt, o, 0, |_, _| {}).unwrap();
        (trace.stop, frames.len())
    };
    let mut longer = opts.clone();
    longer.set_max_new_tokens(bound + 11);
    assert_eq!(generate(&longer), (Stop::Limit, bound + 10));
    let mut shorter = opts.clone();
    shorter.set_max_new_tokens(6);
    assert_eq!(generate(&shorter), (Stop::Limit, 5));
    let mut at_least = opts.clone();
    at_least.min_new_tokens = bound + 4;
    assert_eq!(generate(&at_least), (Stop::RunawayGuard, bound + 3));
}
