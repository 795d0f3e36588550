//! Warm voices through the server (tiny 0.6B-Base): stored voices are warmed
//! in the background at start and on upload, so that a stored ICL voice's
//! first request after a restart is served from warm state (cache hits, no
//! misses, in `/metrics`) and sounds exactly as it does computed cold; a
//! deleted or replaced voice's state goes at once.

mod common;

use common::Server;
use serde_json::json;

const BASE: &str = "0.6B-Base";
const TRANSCRIPT: &str = "This is the reference recording.";
const PREFIXES: &str = "qwen3_tts_voice_cache_entries{kind=\"prefix\"}";
const CONTEXTS: &str = "qwen3_tts_voice_cache_entries{kind=\"vocoder\"}";
const HITS: &str = "qwen3_tts_voice_cache_hits_total";
const MISSES: &str = "qwen3_tts_voice_cache_misses_total";

fn speech(voice: &str, stream: bool) -> serde_json::Value {
    let mut body = json!({
        "model": "qwen3-tts-0.6b-base",
        "input": "Something new to say.",
        "voice": voice,
        "response_format": "pcm",
        "seed": 3,
        "max_frames": 6,
        "min_frames": 6,
    });
    if stream {
        body["stream_format"] = json!("audio");
    }
    body
}

fn counter(s: &Server, name: &str) -> f64 {
    s.metric(name).unwrap_or(0.0)
}

/// Waits until the voice cache holds `prefixes` talker prefixes and
/// `contexts` vocoder contexts.
fn wait_warm(s: &Server, prefixes: f64, contexts: f64) {
    s.wait_metric(PREFIXES, 30, |v| v == prefixes);
    s.wait_metric(CONTEXTS, 30, |v| v == contexts);
}

#[test]
fn a_stored_icl_voice_is_served_warm_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let voices = tmp.path().join("voices");

    let s = Server::start_with(BASE, &voices, &[]);
    let up = s.upload_ref("me", Some(TRANSCRIPT));
    assert_eq!(up.status, 201, "{}", up.text());
    // Warmed in the background after the upload.
    wait_warm(&s, 1.0, 1.0);
    assert_eq!(counter(&s, MISSES), 0.0);
    let first = s.speech(speech("me", true));
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body.len(), 6 * 1920 * 2);
    assert_eq!(counter(&s, HITS), 2.0, "{}", s.get("/metrics").text());
    assert_eq!(counter(&s, MISSES), 0.0);
    assert!(s.terminate().success());

    // After a restart: warmed at start; the first request hits.
    let s = Server::start_with(BASE, &voices, &[]);
    wait_warm(&s, 1.0, 1.0);
    let again = s.speech(speech("me", true));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(counter(&s, HITS), 2.0, "{}", s.get("/metrics").text());
    assert_eq!(counter(&s, MISSES), 0.0);
    assert_eq!(
        again.body, first.body,
        "warm after a restart: the same audio"
    );
    let whole = s.speech(speech("me", false));
    assert_eq!(whole.body, first.body, "whole and streamed");
    assert!(s.terminate().success());

    // Cold (no cache): the same audio, nothing kept.
    let s = Server::start_with(BASE, &voices, &["--voice-cache-mb", "0"]);
    let cold = s.speech(speech("me", true));
    assert_eq!(cold.status, 200, "{}", cold.text());
    assert_eq!(cold.body, first.body, "cold and warm give the same audio");
    assert_eq!(s.metric(PREFIXES), Some(0.0));
    assert_eq!(s.metric(CONTEXTS), Some(0.0));
    assert_eq!(counter(&s, HITS), 0.0);
    assert_eq!(s.metric("qwen3_tts_voice_cache_budget_bytes"), Some(0.0));
}

#[test]
fn a_deleted_or_replaced_voice_drops_its_state_at_once() {
    let s = Server::start(BASE, &[]);
    let up = s.upload_ref("me", Some(TRANSCRIPT));
    assert_eq!(up.status, 201, "{}", up.text());
    wait_warm(&s, 1.0, 1.0);
    assert!(counter(&s, "qwen3_tts_voice_cache_bytes") > 0.0);

    let del = s.delete("/v1/audio/voices/me");
    assert_eq!(del.status, 200, "{}", del.text());
    // At once: the first scrape after the answer.
    assert_eq!(s.metric(PREFIXES), Some(0.0));
    assert_eq!(s.metric(CONTEXTS), Some(0.0));
    assert_eq!(s.metric("qwen3_tts_voice_cache_bytes"), Some(0.0));

    // Replaced (same clip, another transcript): the old prefix goes, the
    // new voice is warmed; one of each is left, and it serves the new voice.
    let up = s.upload_ref("me", Some(TRANSCRIPT));
    assert_eq!(up.status, 201, "{}", up.text());
    wait_warm(&s, 1.0, 1.0);
    let audio = std::fs::read(common::ref_audio()).unwrap();
    let r = s.post_form(
        "/v1/audio/voices",
        &[
            ("name", "me"),
            ("transcript", "Another transcript of it."),
            ("overwrite", "true"),
        ],
        &[("audio", "ref.wav", &audio)],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_warm(&s, 1.0, 1.0);
    let misses = counter(&s, MISSES);
    let r = s.speech(speech("me", true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counter(&s, MISSES), misses, "the new voice was warm");
    assert_eq!(s.metric(PREFIXES), Some(1.0), "the old prefix is gone");
}
