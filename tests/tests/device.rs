//! The models on a GPU backend (issue #25), against the CPU's F32 path: the
//! tolerances of `standard_ops.rs` — vocoder waveform SNR ≥ 60 dB with the
//! F32 speech tokenizer, teacher-forced talker logits cosine ≥ 0.9999 with
//! an F32 model file, code-predictor picks ≥ 99 % identical — and on the
//! device streamed == offline and batched == solo bit for bit. The device is
//! `QWEN3_TTS_TEST_DEVICE` (default `vulkan:0`; in CI Mesa's lavapipe, which
//! ggml lists only with `GGML_VK_VISIBLE_DEVICES=0`). Each test asserts that
//! its graphs ran on the device, not on the CPU fallback.
#![cfg(any(feature = "vulkan", feature = "cuda", feature = "metal"))]

use std::sync::Arc;

use qwen3_tts::batch::{BatchEvent, BatchSynthesizer};
use qwen3_tts::codec_decoder::{CodecDecoder, DecoderOptions};
use qwen3_tts::ggml::device::{resolve, DeviceChoice, DeviceInfo};
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::pipeline::{GenerateOptions, StreamOptions, Synthesizer, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts_tests::{
    check_vocoder_against, convert_tiny, convert_tiny_tokenizer, fixtures, forced_agreement,
    forced_run, request, serial, Dump,
};

fn device() -> DeviceInfo {
    let choice = std::env::var("QWEN3_TTS_TEST_DEVICE").unwrap_or_else(|_| "vulkan:0".into());
    let choice: DeviceChoice = choice.parse().unwrap();
    let device = resolve(choice)
        .unwrap_or_else(|e| {
            panic!("{e} (with only Mesa's lavapipe, set GGML_VK_VISIBLE_DEVICES=0)")
        })
        .expect("a GPU device");
    eprintln!("device: {device}");
    device
}

#[test]
fn vocoder_on_the_device_matches_the_cpu() {
    let _g = serial();
    let device = device();
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    let cpu = Arc::new(CodecDecoder::load_with(&path, DecoderOptions::default()).unwrap());
    let gpu =
        Arc::new(CodecDecoder::load_on(&path, DecoderOptions::default(), Some(&device)).unwrap());
    let mut want_session = cpu.session(2);
    let mut session = gpu.session(2);
    check_vocoder_against(
        &format!("{} vs CPU", device.name),
        &mut session,
        &mut want_session,
    );
}

/// Every mode (Base x-vector and in-context cloning, CustomVoice with an
/// instruction, VoiceDesign), teacher-forced over the reference's frames.
#[test]
fn talker_and_code_predictor_on_the_device_match_the_cpu() {
    let _g = serial();
    let device = device();
    let tmp = tempfile::tempdir().unwrap();
    for (variant, case) in [
        ("0.6B-Base", "xvec"),
        ("0.6B-Base", "icl"),
        ("0.6B-CustomVoice", "vivian_instruct"),
        ("1.7B-VoiceDesign", "instruct_english"),
    ] {
        let dir = fixtures().join("reference/talker").join(variant);
        let dump = Dump::open(&dir.join(format!("{case}.safetensors")));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap(),
        )
        .unwrap();
        let req = request(&json, &dump);
        let reference: Vec<Vec<u32>> = dump
            .i64("codes")
            .chunks(16)
            .map(|f| f.iter().map(|&c| c as u32).collect())
            .collect();
        let out = tmp.path().join(variant);
        std::fs::create_dir_all(&out).unwrap();
        let path = convert_tiny(variant, GgmlType::F32, &out);
        let run = |model: TtsModel| forced_run(&mut Arc::new(model).session(2), &req, &reference);
        let (want_codes, want_logits) = run(TtsModel::load(&path).unwrap());
        let (codes, logits) = run(TtsModel::load_on(&path, Some(&device)).unwrap());
        let (min_cosine, predictor_same) =
            forced_agreement((&codes, &logits), (&want_codes, &want_logits));
        eprintln!(
            "{variant}/{case}: {} vs CPU over {} frames: talker logits cosine ≥ \
             {min_cosine:.7}, code-predictor picks {:.2} % identical",
            device.name,
            reference.len(),
            100.0 * predictor_same
        );
        assert!(
            min_cosine >= 0.9999,
            "{variant}/{case}: talker logits cosine {min_cosine}"
        );
        assert!(
            predictor_same >= 0.99,
            "{variant}/{case}: predictor picks {predictor_same}"
        );
    }
}

/// A request's stream: its codes and its chunks' samples as bits.
type Output = (Vec<Vec<u32>>, Vec<Vec<u32>>);

fn bits(samples: &[f32]) -> Vec<u32> {
    samples.iter().map(|x| x.to_bits()).collect()
}

/// On the device, requests decoded together in a `BatchSynthesizer` (one
/// joining later), and sessions of their own run at once on threads (the
/// server's streams, each starting its own backend on the shared device),
/// give bit for bit the codes and audio each gives alone.
#[test]
fn batched_and_concurrent_sessions_equal_solo_on_the_device() {
    let _g = serial();
    let device = device();
    let tmp = tempfile::tempdir().unwrap();
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::Q8_0, tmp.path());
    let tokenizer = convert_tiny_tokenizer(GgmlType::F32, tmp.path());
    let model = Arc::new(TtsModel::load_on(&tts, Some(&device)).unwrap());
    let vocoder = Arc::new(
        CodecDecoder::load_on(&tokenizer, DecoderOptions::default(), Some(&device)).unwrap(),
    );
    let speaker = |text: &str, name: &str| Request {
        text: text.into(),
        language: "english".into(),
        voice: Voice::Speaker(name.into()),
        instruct: None,
        non_streaming: None,
    };
    let jobs: Vec<(Request, GenerateOptions)> = [
        (speaker("The first one, greedy.", "ryan"), 9, true, 1),
        (
            speaker("Sampled, and a little longer.", "vivian"),
            13,
            false,
            2,
        ),
        (speaker("Joins later.", "serena"), 6, false, 3),
    ]
    .into_iter()
    .map(|(req, frames, greedy, seed)| {
        let mut opts = GenerateOptions::from_config(&model.config);
        if greedy {
            opts = opts.greedy();
        }
        opts.seed = seed;
        opts.set_max_new_tokens(frames + 1);
        opts.min_new_tokens = frames + 1;
        (req, opts)
    })
    .collect();
    let stream = StreamOptions {
        first_chunk_frames: 1,
        chunk_frames: 4,
    };
    let run = |(req, opts): &(Request, GenerateOptions)| -> Output {
        let mut synth = Synthesizer::with_models(model.clone(), vocoder.clone(), &tokenizer, 2);
        assert_eq!(
            synth.device(),
            format!("{}:{}", device.backend.to_ascii_lowercase(), device.index)
        );
        let mut chunks = Vec::new();
        let summary = synth
            .synthesize_stream(req, opts, &stream, |c| {
                chunks.push(bits(c.samples));
                Ok(())
            })
            .unwrap();
        (summary.frames, chunks)
    };
    let alone: Vec<Output> = jobs.iter().map(run).collect();
    let together: Vec<Output> = std::thread::scope(|s| {
        let threads: Vec<_> = jobs.iter().map(|job| s.spawn(move || run(job))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, (got, want)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(got.0, want.0, "job {i}: codes on a thread at once vs alone");
        assert!(
            got.1 == want.1,
            "job {i}: audio on a thread at once vs alone"
        );
    }

    let mut batch = BatchSynthesizer::new(model.clone(), vocoder.clone(), 2, 3);
    let mut outputs: Vec<Output> = vec![Default::default(); jobs.len()];
    let mut ids = Vec::new();
    let mut done = 0;
    for step in 0.. {
        // Two start together, the third joins at step 3.
        if step == 0 || step == 3 {
            for (req, opts) in &jobs[ids.len()..if step == 0 { 2 } else { 3 }] {
                ids.push(batch.join(req, opts, &stream).unwrap());
            }
        }
        if done == jobs.len() {
            break;
        }
        batch.step(|id, event| {
            let i = ids.iter().position(|&j| j == id).unwrap();
            match event {
                BatchEvent::Audio(c) => outputs[i].1.push(bits(c.samples)),
                BatchEvent::Done(summary) => {
                    outputs[i].0 = summary.frames;
                    done += 1;
                }
                BatchEvent::Failed(e) => panic!("job {i} failed: {e}"),
            }
        });
        assert!(step < 1000, "the batch never emptied");
    }
    for (i, (got, want)) in outputs.iter().zip(&alone).enumerate() {
        assert!(!want.0.is_empty(), "job {i} made frames");
        assert_eq!(got.0, want.0, "job {i}: codes batched vs alone");
        assert_eq!(got.1.len(), want.1.len(), "job {i}: chunk count");
        for (k, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
            assert!(g == w, "job {i}: chunk {k} differs batched vs alone");
        }
    }
}
