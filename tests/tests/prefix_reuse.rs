//! A session reuses the keys and values of the prompt rows its previous
//! request shared (same voice, language and instruct): the second request
//! of a session gives exactly (bit for bit: logits, hidden states, codes)
//! what the same request gives on a fresh session, in every mode, at F32
//! and in the quantised types.

use std::sync::Arc;

use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{GenerateOptions, Session, Trace, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts_tests::{convert_tiny, fixtures, max_abs_diff, serial, Dump};

fn run(session: &mut Session, req: &Request, greedy: bool) -> (Vec<Vec<u32>>, Trace) {
    let mut opts = GenerateOptions::from_config(&session.model().config);
    if greedy {
        opts = opts.greedy();
    }
    opts.seed = 7;
    opts.set_max_new_tokens(12);
    opts.min_new_tokens = 12;
    let prompt = session.prompt(req).unwrap();
    session.generate(&prompt, &opts, 4, |_, _| {}).unwrap()
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// `first` then `second` on one session, `second` alone on a fresh one.
fn check(model: &Arc<TtsModel>, what: &str, first: &Request, second: &Request) -> Vec<String> {
    let mut failures = Vec::new();
    for greedy in [true, false] {
        let mut warm = model.session(2);
        run(&mut warm, first, greedy);
        let (codes, trace) = run(&mut warm, second, greedy);
        let reused = trace.times.prefill_reused;
        let (want_codes, want) = run(&mut model.session(2), second, greedy);
        let what = format!("{what} greedy={greedy}");
        assert!(
            reused >= 2,
            "{what}: the prompt head was reused ({reused} rows)"
        );
        assert_eq!(
            want.times.prefill_reused, 0,
            "{what}: a fresh session reuses nothing"
        );
        let diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| max_abs_diff(x, y))
                .fold(0.0f32, f32::max)
        };
        let (dl, dh) = (
            diff(&trace.talker_logits, &want.talker_logits),
            diff(&trace.talker_hidden, &want.talker_hidden),
        );
        eprintln!("{what}: {reused} prompt rows reused; max |diff| logits {dl:e}, hidden {dh:e}");
        if bits(&trace.talker_logits) != bits(&want.talker_logits)
            || bits(&trace.talker_hidden) != bits(&want.talker_hidden)
            || codes != want_codes
        {
            failures.push(format!("{what}: not identical"));
        }
    }
    failures
}

fn request(text: &str, voice: Voice, instruct: Option<&str>) -> Request {
    Request {
        text: text.into(),
        language: "english".into(),
        voice,
        instruct: instruct.map(Into::into),
        non_streaming: None,
    }
}

#[test]
fn a_reused_prompt_head_gives_what_a_fresh_session_gives() {
    let _g = serial();
    let mut failures = Vec::new();
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_K] {
        let tmp = tempfile::tempdir().unwrap();
        let load = |variant: &str| {
            let dir = tmp.path().join(variant);
            std::fs::create_dir_all(&dir).unwrap();
            Arc::new(TtsModel::load(convert_tiny(variant, ty, &dir)).unwrap())
        };
        let t = ty.name();

        let cv = load("0.6B-CustomVoice");
        let ryan = || Voice::Speaker("ryan".into());
        for non_streaming in [None, Some(true)] {
            let mut a = request("Hello there, how are you?", ryan(), None);
            let mut b = request("A different sentence, same speaker.", ryan(), None);
            a.non_streaming = non_streaming;
            b.non_streaming = non_streaming;
            failures.extend(check(
                &cv,
                &format!("{t} CustomVoice {non_streaming:?}"),
                &a,
                &b,
            ));
        }

        let vd = load("1.7B-VoiceDesign");
        let calm = Some("A calm, low voice.");
        let a = request("First designed line.", Voice::None, calm);
        let b = request("Second designed line, longer.", Voice::None, calm);
        failures.extend(check(&vd, &format!("{t} VoiceDesign"), &a, &b));

        let base = load("0.6B-Base");
        let audio = Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors"))
            .f32("input_samples");
        let voice = cloned_voice(&base, &audio);
        for x_vector_only in [true, false] {
            let a = request("Cloned, first.", voice.voice(x_vector_only), None);
            let b = request(
                "Cloned, and then a second one.",
                voice.voice(x_vector_only),
                None,
            );
            let what = format!("{t} Base x_vector_only={x_vector_only}");
            failures.extend(check(&base, &what, &a, &b));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A voice cloned from the fixture's reference clip, with its transcript.
fn cloned_voice(model: &Arc<TtsModel>, audio: &[f32]) -> VoicePrompt {
    let dir = tempfile::tempdir().unwrap();
    let tok = qwen3_tts_tests::convert_tiny_tokenizer(GgmlType::F32, dir.path());
    let vocoder = Arc::new(qwen3_tts::codec_decoder::CodecDecoder::load(&tok).unwrap());
    let mut synth = qwen3_tts::pipeline::Synthesizer::with_models(model.clone(), vocoder, &tok, 2);
    synth
        .clone_voice(audio, Some("Okay. Yeah. I resent you. I love you."))
        .unwrap()
}
