//! Several servers behind a balancer: replicas on one voices directory see
//! each other's uploads, replacements and deletions (a lookup of an unknown
//! id reads the file at once; a rescan twice a second notices the rest);
//! concurrent uploads of one id: one wins, the other gets 409, the file is
//! whole; a crash's temporary file is ignored, then removed once stale;
//! SIGTERM drains (`/health` 503 `draining`, new work a retryable 503, the
//! requests in flight finish, exit 0).

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{Conn, Server};
use serde_json::json;

fn speak(s: &Server, voice: &str) -> common::Reply {
    s.speech(
        json!({"model": "tts-1", "voice": voice, "input": "Hello there.",
        "max_frames": 3, "response_format": "pcm"}),
    )
}

/// Polls `cond` every 20 ms; the time it took to hold (panics after 10 s).
fn until(what: &str, cond: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn listed(s: &Server) -> Vec<(String, bool)> {
    s.get("/v1/audio/voices").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["icl"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn replicas_share_one_voices_directory() {
    let dir = tempfile::tempdir().unwrap();
    let voices = dir.path().join("voices");
    let a = Server::start_with("0.6B-Base", &voices, &[]);
    let b = Server::start_with("0.6B-Base", &voices, &[]);

    // Uploaded through A, spoken through B at once (read on the miss).
    let r = a.upload_ref("shared", None);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = speak(&b, "shared");
    assert_eq!(r.status, 200, "B: {}", r.text());
    assert_eq!(listed(&b), [("shared".to_string(), false)]);

    // Replaced through A (now ICL): B follows within a second.
    let audio = std::fs::read(common::ref_audio()).unwrap();
    let r = a.post_form(
        "/v1/audio/voices",
        &[
            ("name", "shared"),
            ("transcript", "Okay. Yeah. I resent you. I love you."),
            ("overwrite", "true"),
        ],
        &[("audio", "ref.wav", &audio)],
    );
    assert!(matches!(r.status, 200 | 201), "{}", r.text());
    let took = until("B sees the replacement", || {
        listed(&b) == [("shared".to_string(), true)]
    });
    assert!(
        took <= Duration::from_secs(1),
        "replacement seen after {took:?}"
    );
    b.wait_metric("qwen3_tts_voice_cache_entries{kind=\"vocoder\"}", 10, |v| {
        v >= 1.0
    });

    // Deleted through A: B refuses it within a second.
    assert_eq!(a.delete("/v1/audio/voices/shared").status, 200);
    let took = until("B refuses the deleted voice", || {
        speak(&b, "shared").status == 400
    });
    assert!(
        took <= Duration::from_secs(1),
        "deletion seen after {took:?}"
    );
    assert!(listed(&b).is_empty());
    assert!(b.log_text().contains("voice shared was removed"));

    // Concurrent uploads of one id through both: one wins, one gets 409.
    for round in 0..3 {
        let id = format!("race-{round}");
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.upload_ref(&id, None));
            let hb = s.spawn(|| b.upload_ref(&id, Some("Okay. Yeah. I resent you. I love you.")));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{} / {}", ra.text(), rb.text());
        let winner_icl = if ra.status == 201 {
            ra.json()["icl"].as_bool()
        } else {
            rb.json()["icl"].as_bool()
        };
        // The file is the winner's, whole, and both servers agree on it.
        let file = qwen3_tts::voice::VoicePrompt::load(&voices.join(format!("{id}.qvoice")))
            .expect("a whole voice file");
        assert_eq!(Some(file.icl.is_some()), winner_icl);
        for s in [&a, &b] {
            until("both list the winner", || {
                listed(s).contains(&(id.clone(), winner_icl.unwrap()))
            });
        }
    }
    let names: Vec<String> = std::fs::read_dir(&voices)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.ends_with(".qvoice")),
        "left behind: {names:?}"
    );
}

#[test]
fn a_crashs_temporary_files_are_ignored_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let voices = dir.path().join("voices");
    std::fs::create_dir_all(&voices).unwrap();
    let stale = voices.join(".qwen3-tts-Ab12Cd.partial");
    let young = voices.join(".qwen3-tts-Ef34Gh.partial");
    for p in [&stale, &young] {
        std::fs::write(p, b"GGUF half a voice").unwrap();
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    // A half-copied voice (not ours: written in place) is skipped, not fatal.
    std::fs::write(voices.join("copied.qvoice"), b"GGUF\x03\x00").unwrap();
    let s = Server::start_with("0.6B-Base", &voices, &[]);
    until("the stale temporary file is removed", || !stale.exists());
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        young.exists(),
        "a write in progress elsewhere is left alone"
    );
    assert!(listed(&s).is_empty());
    assert_eq!(speak(&s, "copied").status, 400);
    // Once the copy is complete, it is a voice.
    let r = s.upload_ref("whole", None);
    assert_eq!(r.status, 201);
    std::fs::copy(voices.join("whole.qvoice"), voices.join("copied.qvoice")).unwrap();
    until("the completed copy is listed", || {
        listed(&s).iter().any(|(id, _)| id == "copied")
    });
    assert_eq!(speak(&s, "copied").status, 200);
}

#[test]
fn sigterm_drains() {
    let s = Server::start("0.6B-CustomVoice", &[]);
    assert_eq!(s.get("/health").json()["status"], "ready");
    // A long stream in flight.
    let body = json!({"model": "tts-1", "voice": "ryan", "input": "A long one.",
        "max_frames": 400, "min_frames": 400, "response_format": "pcm", "stream_format": "audio"})
    .to_string();
    let mut conn = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    let (status, _) = conn.head();
    assert_eq!(status, 200);
    let first = conn.chunk().expect("first audio");
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    until("health says draining", || {
        let r = s.get("/health");
        r.status == 503 && r.json()["status"] == "draining"
    });
    let r = s.speech(
        json!({"model": "tts-1", "voice": "ryan", "input": "Too late.",
        "response_format": "pcm"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "draining");
    assert_eq!(s.metric("qwen3_tts_draining"), Some(1.0));
    // The stream in flight is finished, whole.
    let mut bytes = first.len();
    while let Some(c) = conn.chunk() {
        bytes += c.len();
    }
    assert_eq!(bytes, 400 * 1920 * 2, "the stream in flight was cut");
    let mut s = s;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(s.log_text().contains("drained"));
}
