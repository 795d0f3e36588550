//! The official `openai` Python package, unmodified, against the server:
//! `tests/openai_client.py` fetches every format whole, as an `audio` stream
//! and as an `sse` stream through an API key; the files it writes are decoded
//! and checked here.
//!
//! The Python is `$QWEN3_TTS_PYTHON` (default `python3`). Without an
//! importable `openai` the test passes with a "skipped" message, unless
//! `QWEN3_TTS_REQUIRE_OPENAI=1` (as `.ci/run` sets), where it fails.

mod common;

use std::process::Command;

use common::decode::check;
use common::Server;

/// The version `.ci/run` installs.
const OPENAI_VERSION: &str = "3.57.0";
const FRAMES: usize = 10;
const FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];

#[test]
fn openai_python_client() {
    let python = std::env::var("QWEN3_TTS_PYTHON").unwrap_or_else(|_| "python3".into());
    let required = std::env::var("QWEN3_TTS_REQUIRE_OPENAI").is_ok_and(|v| v == "1");
    let probe = Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .output();
    let version = match probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => format!("cannot run {python}: {e}"),
            };
            assert!(
                !required,
                "QWEN3_TTS_REQUIRE_OPENAI=1 but {python} cannot import openai: {why}"
            );
            eprintln!(
                "skipped: the openai package is not importable by {python} ({why}); \
                 pip install openai=={OPENAI_VERSION} (or set QWEN3_TTS_PYTHON to a Python that has it)"
            );
            return;
        }
    };
    eprintln!("openai {version} ({python})");

    let s = Server::start("0.6B-CustomVoice", &["--api-key", "sk-test-key"]);
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let run = Command::new(&python)
        .arg(script)
        .args(["--base-url", &s.url("/v1"), "--api-key", "sk-test-key"])
        .args(["--model", "tts-1", "--voice", "ryan"])
        .args(["--frames", &FRAMES.to_string()])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run openai_client.py");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "openai_client.py failed ({}):\n{stderr}\nserver log:\n{}",
        run.status,
        s.log_text()
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&run.stdout)));
    eprintln!("{summary}");
    assert_eq!(summary["openai_version"], version);

    let n = FRAMES * 1920;
    for format in FORMATS {
        let got = &summary["formats"][format];
        let file = |kind: &str| std::fs::read(out.path().join(format!("{format}.{kind}"))).unwrap();
        let (whole, audio, sse) = (file("whole"), file("audio"), file("sse"));
        assert_eq!(got["whole"], whole.len(), "{format}");
        assert_eq!(got["x_samples"], n, "{format}");
        assert!(
            got["content_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("audio/")),
            "{format}: {got}"
        );
        assert_eq!(got["audio_content_type"], got["content_type"], "{format}");
        assert_eq!(got["sse_content_type"], "text/event-stream", "{format}");
        assert_eq!(got["sse_last"], "speech.audio.done", "{format}");
        assert!(got["sse_deltas"].as_u64().unwrap() >= 1, "{format}");
        for (kind, bytes) in [("whole", &whole), ("audio", &audio), ("sse", &sse)] {
            eprintln!("{format} {kind}: {} bytes", bytes.len());
            check(format, bytes, n);
        }
        assert!(sse == audio, "{format}: sse deltas != audio stream");
        if format == "wav" {
            assert_eq!(&whole[44..], &audio[44..]);
        } else {
            assert!(whole == audio, "{format}: whole != streamed");
        }
    }
    assert_eq!(summary["speed2_x_samples"], n / 2);
    assert_eq!(summary["speed2_pcm_bytes"], n);
    assert_eq!(summary["bad_speed"]["status"], 400, "{summary}");
    assert_eq!(summary["bad_speed"]["param"], "speed", "{summary}");
    assert_eq!(summary["wrong_key"], 401, "{summary}");
}
