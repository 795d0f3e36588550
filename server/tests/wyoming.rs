//! The Wyoming front end (`--wyoming-port`), on the tiny CustomVoice model:
//! describe/info, synthesize (bit-equal to the HTTP API's PCM), the
//! streaming form, errors, a queue that is full, and a client that hangs up.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

const VARIANT: &str = "0.6B-CustomVoice";

fn start(extra: &[&str]) -> (Server, String) {
    start_variant(VARIANT, extra)
}

/// A server of `variant` with `--wyoming-port 0`, and its Wyoming address.
fn start_variant(variant: &str, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--wyoming-port", "0"];
    args.extend_from_slice(extra);
    let s = Server::start(variant, &args);
    let addr = s
        .log_text()
        .lines()
        .find_map(|l| l.strip_prefix("wyoming listening on tcp://"))
        .unwrap_or_else(|| panic!("no wyoming line: {}", s.log_text()))
        .trim()
        .to_string();
    (s, addr)
}

/// An event read: type, data, payload.
#[derive(Debug)]
struct Ev {
    kind: String,
    data: Value,
    payload: Vec<u8>,
}

struct Wy {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Wy {
    fn connect(addr: &str) -> Wy {
        let w = TcpStream::connect(addr).expect("connect to the wyoming port");
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Wy {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Writes an event as the `wyoming` package does (data after the header).
    fn send(&mut self, kind: &str, data: Value) {
        let mut header = json!({"type": kind, "version": "1.10.2"});
        let bytes = if data.as_object().is_some_and(|o| !o.is_empty()) {
            let b = data.to_string().into_bytes();
            header["data_length"] = json!(b.len());
            b
        } else {
            Vec::new()
        };
        let mut out = header.to_string().into_bytes();
        out.push(b'\n');
        out.extend(bytes);
        self.w.write_all(&out).unwrap();
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// The next event, `None` at the end of the connection.
    fn read(&mut self) -> Option<Ev> {
        let mut line = String::new();
        if self.r.read_line(&mut line).expect("read a header") == 0 {
            return None;
        }
        let header: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let mut data = header.get("data").cloned().unwrap_or(json!({}));
        if let Some(n) = header["data_length"].as_u64() {
            let mut b = vec![0; n as usize];
            self.r.read_exact(&mut b).unwrap();
            let extra: Value = serde_json::from_slice(&b).unwrap();
            for (k, v) in extra.as_object().unwrap() {
                data[k] = v.clone();
            }
        }
        let mut payload = vec![0; header["payload_length"].as_u64().unwrap_or(0) as usize];
        self.r.read_exact(&mut payload).unwrap();
        Some(Ev {
            kind: header["type"].as_str().unwrap().to_string(),
            data,
            payload,
        })
    }

    fn expect(&mut self, kind: &str) -> Ev {
        let ev = self
            .read()
            .unwrap_or_else(|| panic!("connection closed, {kind} expected"));
        assert_eq!(ev.kind, kind, "{ev:?}");
        ev
    }

    /// audio-start, audio-chunks, audio-stop: the PCM bytes and the chunk count.
    fn audio(&mut self) -> (Vec<u8>, usize) {
        let start = self.expect("audio-start");
        assert_eq!(start.data["rate"], 24000);
        assert_eq!(start.data["width"], 2);
        assert_eq!(start.data["channels"], 1);
        let mut pcm = Vec::new();
        let mut chunks = 0;
        loop {
            let ev = self.read().expect("audio events");
            match ev.kind.as_str() {
                "audio-chunk" => {
                    assert_eq!(ev.data["rate"], 24000);
                    assert_eq!(ev.data["width"], 2);
                    assert_eq!(ev.data["channels"], 1);
                    assert!(!ev.payload.is_empty());
                    pcm.extend(ev.payload);
                    chunks += 1;
                }
                "audio-stop" => return (pcm, chunks),
                _ => panic!("unexpected {ev:?}"),
            }
        }
    }

    fn closed(&mut self) -> bool {
        self.read().is_none()
    }
}

/// The HTTP API's PCM for the same utterance.
fn http_pcm(s: &Server, text: &str, voice: &str, frames: u32) -> Vec<u8> {
    let r = s.speech(json!({
        "input": text, "voice": voice, "response_format": "pcm",
        "seed": 42, "max_frames": frames, "min_frames": frames,
    }));
    assert_eq!(r.status, 200, "{}", r.text());
    r.body
}

fn synth(text: &str, voice: Option<&str>, frames: u32) -> Value {
    let mut d = json!({"text": text, "seed": 42, "max_frames": frames, "min_frames": frames});
    if let Some(v) = voice {
        d["voice"] = json!({"name": v});
    }
    d
}

#[test]
fn describe_lists_the_voices() {
    let (s, addr) = start(&[]);
    let presets: Vec<String> = s.get("/v1/audio/voices").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let mut c = Wy::connect(&addr);
    c.send("describe", json!({}));
    let info = c.expect("info").data;
    let tts = info["tts"].as_array().unwrap();
    assert_eq!(tts.len(), 1);
    let p = &tts[0];
    assert_eq!(p["name"], "qwen3-tts");
    assert_eq!(p["installed"], true);
    assert_eq!(p["supports_synthesize_streaming"], true);
    assert!(p["version"].is_string());
    assert!(p["attribution"]["name"].is_string() && p["attribution"]["url"].is_string());
    let voices = p["voices"].as_array().unwrap();
    let names: Vec<&str> = voices.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, presets);
    for v in voices {
        assert_eq!(v["installed"], true);
        assert!(v["description"].is_string() && v["attribution"]["name"].is_string());
        let langs: Vec<&str> = v["languages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        for l in ["en", "zh", "de", "ja"] {
            assert!(langs.contains(&l), "{langs:?}");
        }
        assert!(!langs.contains(&"auto"), "{langs:?}");
    }
    // Inline data (the older form) and ping on the same connection.
    c.raw(b"{\"type\":\"ping\",\"data\":{\"text\":\"hi\"}}\n");
    assert_eq!(c.expect("pong").data["text"], "hi");
    c.send("describe", json!({}));
    c.expect("info");
}

#[test]
fn synthesize_equals_the_http_pcm() {
    let (s, addr) = start(&[]);
    let text = "Hello there, this is a test.";
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth(text, Some("ryan"), 12));
    let (pcm, chunks) = c.audio();
    assert!(chunks >= 1);
    assert_eq!(pcm.len(), 2 * 12 * 1920);
    assert_eq!(pcm, http_pcm(&s, text, "ryan", 12));
    // The connection stays open for another request; no voice: the first one.
    let first = s.get("/v1/audio/voices").json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.send("synthesize", synth("Another one.", None, 4));
    let (pcm, _) = c.audio();
    assert_eq!(pcm, http_pcm(&s, "Another one.", &first, 4));
    // A language code, as Home Assistant has them.
    let mut d = synth("Hallo.", Some("ryan"), 3);
    d["voice"]["language"] = json!("de-DE");
    c.send("synthesize", d);
    assert_eq!(c.audio().0.len(), 2 * 3 * 1920);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        s.log_text().contains("voice=ryan chars=28 frames=12"),
        "{}",
        s.log_text()
    );
}

#[test]
fn streaming_synthesizes_sentence_by_sentence() {
    let (s, addr) = start(&[]);
    let mut c = Wy::connect(&addr);
    c.send(
        "synthesize-start",
        json!({"voice": {"name": "ryan"}, "seed": 42, "max_frames": 5, "min_frames": 5}),
    );
    c.send("synthesize-chunk", json!({"text": "Hello the"}));
    c.send("synthesize-chunk", json!({"text": "re. This"}));
    // The first sentence is complete: its audio comes before the stream ends.
    let (first, _) = c.audio();
    c.send("synthesize-chunk", json!({"text": " is a test."}));
    // Home Assistant's copy of the whole text for non-streaming servers: ignored.
    c.send(
        "synthesize",
        json!({"text": "Hello there. This is a test."}),
    );
    c.send("synthesize-stop", json!({}));
    let (second, _) = c.audio();
    c.expect("synthesize-stopped");
    assert_eq!(first, http_pcm(&s, "Hello there.", "ryan", 5));
    assert_eq!(second, http_pcm(&s, "This is a test.", "ryan", 5));
    // Nothing else was synthesized; the connection takes a new request.
    c.send("describe", json!({}));
    c.expect("info");
    assert_eq!(
        s.metric("qwen3_tts_requests_total{outcome=\"ok\"}"),
        Some(4.0)
    );
}

#[test]
fn unknown_voice_and_too_long_text_are_errors() {
    let (_s, addr) = start(&["--max-input-chars", "20"]);
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth("Hello.", Some("nobody"), 3));
    let e = c.expect("error").data;
    assert_eq!(e["code"], "unknown-voice");
    let text = e["text"].as_str().unwrap();
    assert!(text.contains("nobody") && text.contains("ryan"), "{text}");
    assert!(c.closed());
    // --max-input-chars: for a synthesize, and for a stream's whole text.
    let mut c = Wy::connect(&addr);
    c.send(
        "synthesize",
        synth("This text is longer than twenty.", Some("ryan"), 3),
    );
    assert_eq!(c.expect("error").data["code"], "too-long");
    assert!(c.closed());
    let mut c = Wy::connect(&addr);
    c.send("synthesize-start", json!({"voice": {"name": "ryan"}}));
    c.send("synthesize-chunk", json!({"text": "Twelve chars"}));
    c.send("synthesize-chunk", json!({"text": " and twelve more"}));
    assert_eq!(c.expect("error").data["code"], "too-long");
    assert!(c.closed());
}

#[test]
fn garbage_gets_an_error_and_the_server_stays_up() {
    let (s, addr) = start(&[]);
    let mut c = Wy::connect(&addr);
    c.raw(b"this is not json\n");
    assert_eq!(c.expect("error").data["code"], "bad-event");
    c.send("frobnicate", json!({}));
    let e = c.expect("error").data;
    assert_eq!(e["code"], "unknown-event");
    assert!(e["text"].as_str().unwrap().contains("frobnicate"));
    // The connection still follows the stream.
    c.send("describe", json!({}));
    c.expect("info");
    // A header line without an end: an error, then the connection is closed.
    c.raw(&vec![b'{'; 70 << 10]);
    assert_eq!(c.expect("error").data["code"], "bad-event");
    assert!(c.closed());
    // An oversized payload: the same.
    let mut c = Wy::connect(&addr);
    c.raw(b"{\"type\":\"audio-chunk\",\"payload_length\":100000000}\n");
    let e = c.expect("error").data;
    assert!(
        e["text"].as_str().unwrap().contains("payload_length"),
        "{e}"
    );
    assert!(c.closed());
    // Cut short inside a payload.
    let mut c = Wy::connect(&addr);
    c.raw(b"{\"type\":\"synthesize\",\"data_length\":50}\n{\"text\":");
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.expect("error").data["code"], "bad-event");
    assert!(c.closed());
    assert_eq!(s.get("/health").status, 200);
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth("Still here.", Some("ryan"), 2));
    assert_eq!(c.audio().0.len(), 2 * 2 * 1920);
}

/// A synthesis that runs long (frames the tiny model makes for seconds),
/// its first chunk read.
fn long_synthesis(addr: &str) -> Wy {
    let mut c = Wy::connect(addr);
    c.send(
        "synthesize",
        synth("Hello there, this is a test.", Some("ryan"), 16000),
    );
    c.expect("audio-start");
    assert!(!c.expect("audio-chunk").payload.is_empty());
    c
}

#[test]
fn disconnect_mid_synthesis_frees_the_engine() {
    let (s, addr) = start(&[]);
    let c = long_synthesis(&addr);
    assert_eq!(s.metric("qwen3_tts_active_sessions"), Some(1.0));
    let dropped = Instant::now();
    drop(c);
    s.wait_metric("qwen3_tts_requests_total{outcome=\"cancelled\"}", 10, |v| {
        v == 1.0
    });
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth("Next.", Some("ryan"), 3));
    assert_eq!(c.audio().0.len(), 2 * 3 * 1920);
    let took = dropped.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn full_queue_is_a_busy_error() {
    let (s, addr) = start(&["--max-batch", "1", "--max-queue", "1"]);
    let running = long_synthesis(&addr);
    let mut waiting = Wy::connect(&addr);
    waiting.send("synthesize", synth("Waiting.", Some("ryan"), 16000));
    s.wait_metric("qwen3_tts_queue_depth", 10, |v| v == 1.0);
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth("One more.", Some("ryan"), 2));
    let e = c.expect("error").data;
    assert_eq!(e["code"], "busy");
    assert!(e["text"].as_str().unwrap().contains("busy"));
    assert!(c.closed());
    drop(running);
    drop(waiting);
    s.wait_metric("qwen3_tts_requests_total{outcome=\"cancelled\"}", 15, |v| {
        v == 2.0
    });
    s.wait_metric("qwen3_tts_queue_depth", 5, |v| v == 0.0);
    let mut c = Wy::connect(&addr);
    c.send("synthesize", synth("Free again.", Some("ryan"), 2));
    assert_eq!(c.audio().0.len(), 2 * 2 * 1920);
}

#[test]
fn base_model_voices_are_the_stored_ones() {
    let (s, addr) = start_variant("0.6B-Base", &[]);
    let mut c = Wy::connect(&addr);
    c.send("describe", json!({}));
    let info = c.expect("info").data;
    assert_eq!(info["tts"][0]["voices"], json!([]));
    // No voice given and none stored: a clear error.
    c.send("synthesize", synth("Hello.", None, 3));
    let e = c.expect("error").data;
    assert!(e["text"].as_str().unwrap().contains("none stored"), "{e}");
    assert!(c.closed());
    let r = s.upload_ref("me", None);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut c = Wy::connect(&addr);
    c.send("describe", json!({}));
    let info = c.expect("info").data;
    assert_eq!(info["tts"][0]["voices"][0]["name"], "me");
    c.send("synthesize", synth("Hello.", None, 3));
    let (pcm, _) = c.audio();
    assert_eq!(pcm, http_pcm(&s, "Hello.", "me", 3));
}
