//! Talker + code predictor + prompts against the reference dumps of every
//! case of every tiny variant (issue #3): F32 prefill and logits within
//! 1e-4 × max|ref|, greedy codes 100 % identical over 100 frames.

use std::path::Path;

use qwen3_tts::ggml::GgmlType;
use std::sync::Arc;

use qwen3_tts::pipeline::{GenerateOptions, Session, TtsModel};
use qwen3_tts_tests::{
    convert_tiny, cosine, fixtures, max_rel_diff, request, serial, Dump, VARIANTS,
};
use serde_json::Value as Json;

fn cases(variant: &str) -> Vec<(String, Json, Dump)> {
    let dir = fixtures().join("reference/talker").join(variant);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "json")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let json: Json = serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("{n}.json"))).unwrap(),
            )
            .unwrap();
            let dump = Dump::open(&dir.join(format!("{n}.safetensors")));
            (n, json, dump)
        })
        .collect()
}

/// The reference's forced-length greedy setting: EOS blocked for all 101
/// samples → exactly 100 frames.
fn forced_greedy(model: &Session) -> GenerateOptions {
    let mut o = GenerateOptions::from_config(&model.model().config).greedy();
    // A small first reservation makes the KV cache grow (and be copied)
    // twice during the 100 frames.
    o.reserve_frames = 8;
    o.set_max_new_tokens(101);
    o.min_new_tokens = 101;
    o
}

fn check_variant_f32(variant: &str, tmp: &Path) {
    let _serial = serial();
    let path = convert_tiny(variant, GgmlType::F32, tmp);
    let mut model = TtsModel::load(&path)
        .map(|m| Arc::new(m).session(2))
        .unwrap();
    for (name, case, dump) in cases(variant) {
        let what = format!("{variant}/{name}");
        let req = request(&case, &dump);
        let prompt = model.prompt(&req).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ids = |v: &[u32]| v.iter().map(|&i| i as i64).collect::<Vec<_>>();
        assert_eq!(
            ids(&prompt.input_ids),
            dump.i64("input_ids"),
            "{what}: input_ids"
        );
        if dump.has("instruct_ids") {
            assert_eq!(
                ids(&prompt.instruct_ids),
                dump.i64("instruct_ids"),
                "{what}: instruct_ids"
            );
        } else {
            assert!(
                prompt.instruct_ids.is_empty(),
                "{what}: instruction must be ignored"
            );
        }
        if dump.has("ref_ids") {
            assert_eq!(ids(&prompt.ref_ids), dump.i64("ref_ids"), "{what}: ref_ids");
        }
        let tol = 1e-4;
        let e = max_rel_diff(&prompt.prefill, &dump.f32("prefill_embeds"));
        assert!(e <= tol, "{what}: prefill_embeds rel diff {e}");
        let e = max_rel_diff(&prompt.trailing, &dump.f32("trailing_text"));
        assert!(e <= tol, "{what}: trailing_text rel diff {e}");

        let opts = forced_greedy(&model);
        let (frames, trace) = model.generate(&prompt, &opts, 8, |_, _| {}).unwrap();
        let ref_logits = dump.f32("talker_logits");
        let ref_hidden = dump.f32("talker_hidden");
        let (v, h) = (
            model.model().config.codec_vocab,
            model.model().config.talker.hidden,
        );
        for s in 0..8 {
            let e = max_rel_diff(&trace.talker_logits[s], &ref_logits[s * v..(s + 1) * v]);
            assert!(e <= tol, "{what}: talker logits step {s} rel diff {e}");
            let e = max_rel_diff(&trace.talker_hidden[s], &ref_hidden[s * h..(s + 1) * h]);
            assert!(e <= tol, "{what}: talker hidden step {s} rel diff {e}");
        }
        let e = max_rel_diff(&trace.cp_logits, &dump.f32("cp_logits"));
        assert!(e <= tol, "{what}: code-predictor logits rel diff {e}");
        let want: Vec<u32> = dump.i64("codes").iter().map(|&c| c as u32).collect();
        let got: Vec<u32> = frames.concat();
        assert_eq!(frames.len(), 100, "{what}: frames");
        let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        assert_eq!(
            same,
            want.len(),
            "{what}: {same}/{} codes identical",
            want.len()
        );
        // Teacher forcing reproduces the same frames at F32.
        let forced = model.predict_forced(&prompt, &opts, &frames).unwrap();
        assert_eq!(forced, frames, "{what}: teacher-forced prediction differs");
        eprintln!("{what}: prefill/logits within {tol}, 100/100 frames identical");
    }
}

#[test]
fn f32_matches_reference_0_6b_base() {
    check_variant_f32("0.6B-Base", tempfile::tempdir().unwrap().path());
}

#[test]
fn f32_matches_reference_0_6b_custom_voice() {
    check_variant_f32("0.6B-CustomVoice", tempfile::tempdir().unwrap().path());
}

#[test]
fn f32_matches_reference_1_7b_base() {
    check_variant_f32("1.7B-Base", tempfile::tempdir().unwrap().path());
}

#[test]
fn f32_matches_reference_1_7b_custom_voice() {
    check_variant_f32("1.7B-CustomVoice", tempfile::tempdir().unwrap().path());
}

#[test]
fn f32_matches_reference_1_7b_voice_design() {
    check_variant_f32("1.7B-VoiceDesign", tempfile::tempdir().unwrap().path());
}

#[test]
fn all_variants_have_cases() {
    for v in VARIANTS {
        assert!(cases(v).len() >= 3, "{v}");
    }
    let _ = cosine(&[1.0], &[1.0]);
}
