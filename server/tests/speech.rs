//! `POST /v1/audio/speech` and the service endpoints, on the tiny
//! CustomVoice model: formats, streaming, errors, auth, queue, cancel.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{read_wav, Conn, Server};
use serde_json::json;

const VARIANT: &str = "0.6B-CustomVoice";

/// A short request of exactly `frames` frames.
fn req(format: &str, frames: u32) -> serde_json::Value {
    json!({
        "model": "tts-1",
        "input": "Hello there, this is a test.",
        "voice": "ryan",
        "response_format": format,
        "seed": 42,
        "max_frames": frames,
        "min_frames": frames,
    })
}

fn header_num(r: &common::Reply, name: &str) -> usize {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap()
}

#[test]
fn wav_and_pcm_whole() {
    let s = Server::start(VARIANT, &[]);
    let r = s.speech(req("wav", 7));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("audio/wav"));
    let frames = header_num(&r, "x-frames");
    assert_eq!(frames, 7);
    let (spec, samples) = read_wav(&r.body);
    assert_eq!(spec.sample_rate, 24000);
    assert_eq!(spec.channels, 1);
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(samples.len(), frames * 1920);
    assert_eq!(samples.len(), header_num(&r, "x-samples"));
    assert!(samples.iter().any(|&x| x != 0));

    let p = s.speech(req("pcm", 7));
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(p.header("content-type"), Some("audio/pcm"));
    assert_eq!(p.body.len(), 2 * 7 * 1920);
    // Same seed, same samples: the WAV's data is the PCM body.
    assert_eq!(&r.body[44..], &p.body[..]);
    // One log line per request, with its figures.
    std::thread::sleep(Duration::from_millis(100));
    let log = s.log_text();
    assert!(
        log.contains("voice=ryan chars=28 frames=7") && log.contains("outcome=ok"),
        "{log}"
    );
}

#[test]
fn streamed_audio_and_sse_equal_the_whole_response() {
    let s = Server::start(VARIANT, &[]);
    let whole = s.speech(req("pcm", 30));
    assert_eq!(whole.status, 200, "{}", whole.text());
    let frames = header_num(&whole, "x-frames");

    // stream_format audio: chunked, several chunks, the same bytes.
    let mut body = req("pcm", 30);
    body["stream_format"] = json!("audio");
    let mut c = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"));
    let mut chunks = 0;
    let mut streamed = Vec::new();
    while let Some(b) = c.chunk() {
        chunks += 1;
        streamed.extend(b);
    }
    assert!(chunks >= 3, "{chunks} chunks");
    assert_eq!(streamed, whole.body);

    // A streamed WAV: open-ended header, then the same samples.
    let mut body = req("wav", 30);
    body["stream_format"] = json!("audio");
    let w = s.speech(body);
    assert_eq!(w.status, 200);
    assert_eq!(&w.body[0..4], b"RIFF");
    assert_eq!(&w.body[4..8], &u32::MAX.to_le_bytes());
    assert_eq!(&w.body[40..44], &u32::MAX.to_le_bytes());
    assert_eq!(&w.body[44..], &whole.body[..]);

    // SSE: deltas of base64 PCM, then done with the usage.
    let mut body = req("pcm", 30);
    body["stream_format"] = json!("sse");
    let e = s.speech(body);
    assert_eq!(e.status, 200, "{}", e.text());
    assert_eq!(e.header("content-type"), Some("text/event-stream"));
    let events: Vec<serde_json::Value> = e
        .text()
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let data = b.strip_prefix("data: ").unwrap_or_else(|| panic!("{b:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect();
    let (last, deltas) = events.split_last().unwrap();
    assert!(deltas.len() >= 3);
    let mut audio = Vec::new();
    for d in deltas {
        assert_eq!(d["type"], "speech.audio.delta");
        audio.extend(
            base64::engine::general_purpose::STANDARD
                .decode(d["audio"].as_str().unwrap())
                .unwrap(),
        );
    }
    assert_eq!(audio, whole.body);
    assert_eq!(last["type"], "speech.audio.done");
    let u = &last["usage"];
    assert_eq!(u["output_tokens"], frames);
    assert!(u["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + frames as u64
    );
}

#[test]
fn models_health_metrics() {
    let s = Server::start(VARIANT, &[]);
    let h = s.get("/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ready");
    let m = s.get("/v1/models").json();
    let ids: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"qwen3-tts-0.6b-customvoice"), "{ids:?}");
    assert!(ids.contains(&"tts-1"));
    assert!(
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["device"] == "cpu"),
        "{m}"
    );
    assert_eq!(s.get("/v1/models/tts-1").status, 200);
    assert_eq!(s.get("/v1/models/nope").status, 404);
    let v = s.get("/v1/audio/voices").json();
    let voices: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(voices.contains(&"ryan"), "{v}");
    assert_eq!(v["model_size"], "0.6B");

    assert_eq!(s.speech(req("pcm", 3)).status, 200);
    assert_eq!(s.speech(req("ogg", 3)).status, 400);
    let text = s.get("/metrics").text();
    for want in [
        "qwen3_tts_requests_total{outcome=\"ok\"} 1",
        "qwen3_tts_requests_total{outcome=\"invalid\"} 1",
        "qwen3_tts_queue_depth 0",
        "qwen3_tts_active_sessions 0",
        "qwen3_tts_time_to_first_audio_seconds_bucket",
        "qwen3_tts_request_duration_seconds_count 1",
        "qwen3_tts_frames_total 3",
        "qwen3_tts_frames_per_second",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let nf = s.get("/v1/nothing");
    assert_eq!(nf.status, 404);
    nf.error();
}

#[test]
fn api_key() {
    let s = Server::start(VARIANT, &["--api-key", "sekret"]);
    // /health is open.
    let h = common::request(&s.url("/health"), "GET", &[], None);
    assert_eq!(h.status, 200);
    let none = s.get("/v1/models");
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "invalid_api_key");
    let wrong = s.request(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(s.get("/metrics").status, 401);
    let ok = s.request(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sekret")],
        None,
    );
    assert_eq!(ok.status, 200);
    let body = req("pcm", 2).to_string().into_bytes();
    let sp = s.request(
        "POST",
        "/v1/audio/speech",
        &[
            ("Authorization", "Bearer sekret"),
            ("Content-Type", "application/json"),
        ],
        Some(body.clone()),
    );
    assert_eq!(sp.status, 200, "{}", sp.text());
    let sp = s.request("POST", "/v1/audio/speech", &[], Some(body));
    assert_eq!(sp.status, 401);
}

#[test]
fn request_errors() {
    let s = Server::start(VARIANT, &["--max-input-chars", "40"]);
    let check = |body: serde_json::Value, status: u16, param: Option<&str>, msg: &[&str]| {
        let r = s.speech(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let (message, p, _) = r.error();
        assert_eq!(p.as_deref(), param, "{body}: {message}");
        for m in msg {
            assert!(message.contains(m), "{body}: {message:?} lacks {m:?}");
        }
        message
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut b = req("pcm", 2);
        b[k] = v;
        b
    };
    check(
        with("model", json!("gpt-5")),
        404,
        Some("model"),
        &["gpt-5", "tts-1"],
    );
    check(
        with("voice", json!("nobody")),
        400,
        Some("voice"),
        &["nobody", "ryan", "vivian"],
    );
    check(
        with("voice", json!("alloy")),
        400,
        Some("voice"),
        &["OpenAI", "ryan"],
    );
    check(
        with("voice", json!({"id": "shimmer"})),
        400,
        Some("voice"),
        &["OpenAI"],
    );
    check(with("voice", json!(7)), 400, Some("voice"), &["voice"]);
    check(
        with("response_format", json!("ogg")),
        400,
        Some("response_format"),
        &["ogg"],
    );
    check(
        with("response_format", json!("MP3")),
        400,
        Some("response_format"),
        &["MP3", "mp3, opus, aac, flac, wav, pcm"],
    );
    // Default format is mp3, as OpenAI's.
    let mut b = req("pcm", 2);
    b.as_object_mut().unwrap().remove("response_format");
    let r = s.speech(b);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    check(
        with("speed", json!(5.0)),
        400,
        Some("speed"),
        &["speed", "0.25"],
    );
    check(with("speed", json!(0.1)), 400, Some("speed"), &["speed"]);
    check(with("speed", json!(-1)), 400, Some("speed"), &["speed"]);
    check(
        with("speed", json!("fast")),
        400,
        Some("speed"),
        &["speed", "number"],
    );
    check(
        with("input", json!("x".repeat(41))),
        400,
        Some("input"),
        &["41", "40"],
    );
    check(with("input", json!("   ")), 400, Some("input"), &["empty"]);
    check(
        with("input", json!("\u{1}\u{200b}\u{7f}")),
        400,
        Some("input"),
        &["only control characters"],
    );
    check(
        with("input", json!(["a"])),
        400,
        Some("input"),
        &["input", "string"],
    );
    let mut b = req("pcm", 2);
    b.as_object_mut().unwrap().remove("input");
    check(b, 400, Some("input"), &["required"]);
    check(
        with("temperature", json!("hot")),
        400,
        Some("temperature"),
        &["temperature"],
    );
    check(with("top_k", json!(-1)), 400, Some("top_k"), &["top_k"]);
    check(with("top_p", json!(2.0)), 400, Some("top_p"), &["top_p"]);
    check(with("seed", json!(1.5)), 400, Some("seed"), &["seed"]);
    check(
        with("greedy", json!("yes")),
        400,
        Some("greedy"),
        &["greedy"],
    );
    check(
        with("max_frames", json!(0)),
        400,
        Some("max_frames"),
        &["max_frames"],
    );
    check(
        with("min_frames", json!(50)),
        400,
        Some("min_frames"),
        &["min_frames"],
    );
    check(
        with("stream_format", json!("ws")),
        400,
        Some("stream_format"),
        &["ws"],
    );
    check(
        with("language", json!("klingon")),
        400,
        Some("language"),
        &["klingon", "english"],
    );
    // 0.6B CustomVoice has no instruct: refused, not dropped.
    check(
        with("instructions", json!("Speak slowly")),
        400,
        Some("instructions"),
        &["instructions"],
    );
    // Not JSON / not an object.
    let r = s.request("POST", "/v1/audio/speech", &[], Some(b"{not json".to_vec()));
    assert_eq!(r.status, 400, "{}", r.text());
    r.error();
    let r = s.request("POST", "/v1/audio/speech", &[], Some(b"[1]".to_vec()));
    assert_eq!(r.status, 400);
    // Over the JSON body limit.
    let big = json!({"input": "x".repeat(2 << 20), "voice": "ryan"}).to_string();
    let r = s.request("POST", "/v1/audio/speech", &[], Some(big.into_bytes()));
    assert_eq!(r.status, 413, "{}", r.text());
    r.error();
    // Unknown fields are ignored; null is absent; the voice as an object.
    let mut ok = with("voice", json!({"id": "Ryan"}));
    ok["some_future_field"] = json!({"x": 1});
    ok["instructions"] = serde_json::Value::Null;
    let r = s.speech(ok);
    assert_eq!(r.status, 200, "{}", r.text());
    // The server is still there.
    assert_eq!(s.get("/health").status, 200);
}

/// A streamed request that runs long (frames the tiny model makes for
/// seconds), its head read.
fn long_stream(s: &Server) -> Conn {
    let mut body = req("pcm", 16000);
    body["stream_format"] = json!("audio");
    let mut c = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    let (status, _) = c.head();
    assert_eq!(status, 200);
    c
}

#[test]
fn disconnect_cancels_the_generation() {
    let s = Server::start(VARIANT, &[]);
    let mut c = long_stream(&s);
    assert!(!c.chunk().unwrap().is_empty());
    assert_eq!(s.metric("qwen3_tts_active_sessions"), Some(1.0));
    let dropped = Instant::now();
    drop(c);
    s.wait_metric("qwen3_tts_requests_total{outcome=\"cancelled\"}", 10, |v| {
        v == 1.0
    });
    s.wait_metric("qwen3_tts_active_sessions", 5, |v| v == 0.0);
    let took = dropped.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The engine is free: the next request runs at once.
    let r = s.speech(req("pcm", 3));
    assert_eq!(r.status, 200);
    assert!(
        s.log_text().contains("outcome=cancelled"),
        "{}",
        s.log_text()
    );
}

#[test]
fn full_queue_is_429() {
    // One decoded at a time, one waiting: the third is refused.
    let s = Server::start(VARIANT, &["--max-batch", "1", "--max-queue", "1"]);
    let mut running = long_stream(&s);
    assert!(!running.chunk().unwrap().is_empty());
    // A second one waits in the queue (its handler waits for the engine).
    let mut body = req("pcm", 16000);
    body["stream_format"] = json!("audio");
    let waiting = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    s.wait_metric("qwen3_tts_queue_depth", 10, |v| v == 1.0);
    let r = s.speech(req("pcm", 2));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "queue_full");
    assert!(s
        .get("/metrics")
        .text()
        .contains("qwen3_tts_requests_total{outcome=\"busy\"} 1"));
    // Both hang up: the running one stops, the waiting one is skipped or stopped.
    drop(running);
    drop(waiting);
    s.wait_metric("qwen3_tts_requests_total{outcome=\"cancelled\"}", 15, |v| {
        v == 2.0
    });
    s.wait_metric("qwen3_tts_queue_depth", 5, |v| v == 0.0);
    assert_eq!(s.speech(req("pcm", 2)).status, 200);
}

#[test]
fn request_timeout() {
    let s = Server::start(VARIANT, &["--request-timeout", "1"]);
    let r = s.speech(req("pcm", 16000));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    s.wait_metric("qwen3_tts_requests_total{outcome=\"timeout\"}", 5, |v| {
        v == 1.0
    });
    assert_eq!(s.speech(req("pcm", 2)).status, 200);
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    let s = Server::start(VARIANT, &[]);
    let mut body = req("pcm", 60);
    body["stream_format"] = json!("audio");
    let mut c = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(c.head().0, 200);
    let first = c.chunk().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = first;
        while let Some(b) = c.chunk() {
            all.extend(b);
        }
        all
    });
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(reader.join().unwrap().len(), 2 * 60 * 1920);
}

#[test]
fn disconnect_cancels_a_whole_response_too() {
    let s = Server::start(VARIANT, &[]);
    let body = req("pcm", 16000).to_string();
    let c = Conn::open(
        &s.url("/v1/audio/speech"),
        "POST",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    s.wait_metric("qwen3_tts_active_sessions", 10, |v| v == 1.0);
    drop(c);
    s.wait_metric("qwen3_tts_requests_total{outcome=\"cancelled\"}", 10, |v| {
        v == 1.0
    });
    s.wait_metric("qwen3_tts_active_sessions", 5, |v| v == 0.0);
}

#[test]
fn instructions_go_to_models_that_take_them() {
    // 1.7B CustomVoice: a preset speaker with a style instruction.
    let s = Server::start("1.7B-CustomVoice", &[]);
    let mut b = req("pcm", 3);
    b["instructions"] = json!("Speak slowly and warmly.");
    let r = s.speech(b);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), 2 * 3 * 1920);
    drop(s);

    // VoiceDesign: the voice comes from the instructions; `voice` is omitted
    // or "default", and OpenAI's names are refused with that list.
    let s = Server::start("1.7B-VoiceDesign", &[]);
    let mut b = req("pcm", 3);
    b["instructions"] = json!("A calm, low narrator.");
    b.as_object_mut().unwrap().remove("voice");
    let r = s.speech(b.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    b["voice"] = json!("default");
    assert_eq!(s.speech(b.clone()).status, 200);
    b["voice"] = json!("nova");
    let r = s.speech(b);
    assert_eq!(r.status, 400);
    let (msg, param, _) = r.error();
    assert_eq!(param.as_deref(), Some("voice"));
    assert!(msg.contains("OpenAI") && msg.contains("default"), "{msg}");
    let v = s.get("/v1/audio/voices").json();
    assert_eq!(v["data"][0]["id"], "default");
}

/// Requests that arrive together are decoded together (`--max-batch`), and
/// each gives exactly what it gives alone.
#[test]
fn concurrent_requests_are_batched_and_each_equals_alone() {
    let s = Server::start(VARIANT, &["--max-batch", "3"]);
    let bodies: Vec<serde_json::Value> = [
        ("The first of three at once.", "ryan", 1, 150),
        ("A second one, sampled with another seed.", "vivian", 2, 190),
        ("And a third.", "ryan", 3, 120),
    ]
    .iter()
    .map(|&(text, voice, seed, frames)| {
        json!({
            "model": "tts-1", "input": text, "voice": voice, "response_format": "pcm",
            "stream_format": "audio", "seed": seed, "max_frames": frames, "min_frames": frames,
        })
    })
    .collect();
    // Alone: one after the other.
    let alone: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| {
            let r = s.speech(b.clone());
            assert_eq!(r.status, 200, "{}", r.text());
            r.body
        })
        .collect();
    assert_eq!(s.metric("qwen3_tts_peak_active_sessions"), Some(1.0));
    // Together.
    let together: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| scope.spawn(|| s.speech(b.clone())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let r = h.join().unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                r.body
            })
            .collect()
    });
    let peak = s.metric("qwen3_tts_peak_active_sessions").unwrap();
    assert!(peak >= 2.0, "decoded together: peak batch {peak}");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert!(!a.is_empty());
        assert!(
            a == t,
            "request {i}: batched audio differs from alone ({} vs {} bytes)",
            t.len(),
            a.len()
        );
    }
}

#[test]
fn a_long_input_is_spoken_in_parts_each_as_if_alone() {
    use qwen3_tts::long_text::{part_seed, pause_samples, split_text, Boundary};
    let s = Server::start(VARIANT, &["--max-part-chars", "40"]);
    let input = "The first sentence is here. And a second one follows it!\n\nA new paragraph.";
    let parts = split_text(input, 40);
    let boundaries: Vec<Boundary> = parts.iter().map(|p| p.boundary).collect();
    assert_eq!(
        boundaries,
        [Boundary::Sentence, Boundary::Paragraph, Boundary::End]
    );
    let mut body = req("pcm", 5); // 5 frames a part
    body["input"] = json!(input);
    let whole = s.speech(body.clone());
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(header_num(&whole, "x-frames"), 15);
    let pauses: Vec<usize> = parts
        .iter()
        .map(|p| 2 * pause_samples(p.boundary, 24000))
        .collect();
    let part_bytes = 2 * 5 * 1920;
    assert_eq!(
        whole.body.len(),
        3 * part_bytes + pauses.iter().sum::<usize>()
    );
    assert_eq!(header_num(&whole, "x-samples") * 2, whole.body.len());
    // Each part is the request of its text alone, with the part's seed;
    // silence between them.
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        let mut alone = req("pcm", 5);
        alone["input"] = json!(part.text);
        alone["seed"] = json!(part_seed(42, i));
        let alone = s.speech(alone);
        assert_eq!(alone.status, 200, "{}", alone.text());
        assert_eq!(
            &whole.body[at..at + part_bytes],
            &alone.body[..],
            "part {i}"
        );
        at += part_bytes;
        assert!(whole.body[at..at + pauses[i]].iter().all(|&b| b == 0));
        at += pauses[i];
    }
    // Streamed: the same bytes.
    body["stream_format"] = json!("audio");
    let streamed = s.speech(body);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body, whole.body);
    std::thread::sleep(Duration::from_millis(100));
    let log = s.log_text();
    assert!(log.contains("parts=3/3 frames=15"), "{log}");
}
