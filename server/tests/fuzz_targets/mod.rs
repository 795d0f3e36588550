//! Fuzz targets of the server: what a client sends, through the real
//! router (`api::router`) and engine on the tiny Base model. A response of
//! any status is fine; a panic, an abort or a hang is not. Used by the
//! `fuzz` example (the stable driver, `scripts/fuzz.sh`) and the corpus
//! replay test.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::model_file::{GgufFile, Overwrite};
use qwen3_tts::voice::VoicePrompt;
use qwen3_tts_server::api::{router, AppState};
use qwen3_tts_server::engine::{Engine, EngineConfig, State};
use qwen3_tts_server::voices::Voices;
use qwen3_tts_tests::fuzz::Suite;
use tower::ServiceExt;

pub const TARGETS: [&str; 2] = ["speech_request", "voice_upload"];

#[allow(dead_code)] // the fuzz_server example's; the replay test calls `run` itself
pub const SUITE: Suite = Suite {
    targets: &TARGETS,
    seed,
    run,
};

const BOUNDARY: &str = "XfuzzBOUNDARY";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let tts = qwen3_tts_tests::convert_tiny("0.6B-Base", GgmlType::F32, dir.path());
        let tokenizer = qwen3_tts_tests::convert_tiny_tokenizer(GgmlType::F16, dir.path());
        let cfg = qwen3_tts::config::TtsConfig::from_gguf(&GgufFile::open(&tts).expect("model"))
            .expect("config");
        // A stored voice for the speech requests.
        let voices_dir = dir.path().join("voices");
        std::fs::create_dir_all(&voices_dir).expect("voices dir");
        VoicePrompt {
            x_vector: (0..cfg.talker.hidden)
                .map(|i| (i as f32 * 0.1).cos())
                .collect(),
            icl: None,
            model_size: cfg.model_size.as_str().to_string(),
            model_name: "tiny".into(),
        }
        .save(&voices_dir.join("v1.qvoice"), Overwrite::Refuse)
        .expect("voice");
        let (engine, _thread) = Engine::start(EngineConfig {
            model: tts,
            tokenizer,
            threads: 1,
            max_queue: 4,
            max_batch: 2,
            max_part_chars: 300,
            kv_cache: None,
            voice_cache_bytes: 16 << 20,
            device: None,
        })
        .expect("engine");
        let deadline = Instant::now() + Duration::from_secs(60);
        while engine.state() != State::Ready {
            assert!(Instant::now() < deadline, "engine: {:?}", engine.state());
            std::thread::sleep(Duration::from_millis(20));
        }
        let voices = Voices::open(&voices_dir).expect("voices");
        // A short time limit: a valid request for minutes of audio is cut
        // off (a 500 with code "timeout"), not counted as a hang.
        let state = AppState::new(engine, voices, None, 4096, Duration::from_secs(3), None);
        Fixture {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            app: router(Arc::new(state)),
            _dir: dir,
        }
    })
}

pub fn seed(target: &str) -> Vec<u8> {
    match target {
        "speech_request" => serde_json::json!({
            "model": "tts-1", "input": "Hello there. Dr. Smith paid $3.14!", "voice": "v1",
            "response_format": "wav", "seed": 3, "max_frames": 3, "speed": 1.25,
            "temperature": 0.9, "top_k": 20, "stream_format": "sse", "language": "english"
        })
        .to_string()
        .into_bytes(),
        "voice_upload" => {
            let wav = std::fs::read(qwen3_tts_tests::fixtures().join("audio/ref_24k.wav"))
                .expect("ref audio");
            let mut body = Vec::new();
            for (name, value) in [
                ("name", "fuzzed"),
                ("transcript", "Hello."),
                ("overwrite", "true"),
            ] {
                body.extend(
                    format!(
                        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                    )
                    .bytes(),
                );
            }
            body.extend(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"ref.wav\"\r\n\
                     Content-Type: audio/wav\r\n\r\n"
                )
                .bytes(),
            );
            body.extend(wav);
            body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
            body
        }
        other => panic!("no server fuzz target {other}"),
    }
}

pub fn run(target: &str, data: &[u8]) {
    let f = fixture();
    let request = match target {
        "speech_request" => Request::post("/v1/audio/speech")
            .header("content-type", "application/json")
            .body(Body::from(data.to_vec())),
        "voice_upload" => Request::post("/v1/audio/voices")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(data.to_vec())),
        other => panic!("no server fuzz target {other}"),
    }
    .expect("request");
    f.runtime.block_on(async {
        let response = f.app.clone().oneshot(request).await.expect("infallible");
        // The whole body: a stream must end (a panic in it shows here).
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    });
}
