//! Every `response_format`, whole and streamed (`audio` and `sse`), decoded
//! back to 24 kHz mono of the expected length; `speed` on the tiny
//! CustomVoice model.

mod common;

use base64::Engine as _;
use common::decode::{self, check};
use common::{Reply, Server};
use serde_json::json;

const VARIANT: &str = "0.6B-CustomVoice";
const FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];
/// Samples per frame at 24 kHz.
const FRAME: usize = 1920;

fn req(format: &str, frames: u32) -> serde_json::Value {
    json!({
        "model": "tts-1",
        "input": "Hello there, this is a test.",
        "voice": "ryan",
        "response_format": format,
        "seed": 7,
        "max_frames": frames,
        "min_frames": frames,
    })
}

fn content_type(format: &str) -> &'static str {
    match format {
        "mp3" => "audio/mpeg",
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        f => panic!("{f}"),
    }
}

fn header_num(r: &Reply, name: &str) -> usize {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap()
}

fn streamed(s: &Server, mut body: serde_json::Value, how: &str) -> Reply {
    body["stream_format"] = json!(how);
    let r = s.speech(body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-length").is_none(), "a stream is chunked");
    r
}

/// The audio bytes of an SSE body: the base64 deltas joined, checking the
/// events' shape and that `done` comes last.
fn sse_audio(r: &Reply) -> Vec<u8> {
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    let events: Vec<serde_json::Value> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done["type"], "speech.audio.done", "{done}");
    let mut audio = Vec::new();
    for d in deltas {
        assert_eq!(d["type"], "speech.audio.delta", "{d}");
        audio.extend(
            base64::engine::general_purpose::STANDARD
                .decode(d["audio"].as_str().unwrap())
                .unwrap(),
        );
    }
    audio
}

#[test]
fn every_format_whole_and_streamed_decodes() {
    let s = Server::start(VARIANT, &[]);
    let frames = 12;
    let n = frames as usize * FRAME;
    for format in FORMATS {
        let whole = s.speech(req(format, frames));
        assert_eq!(whole.status, 200, "{format}: {}", whole.text());
        assert_eq!(whole.header("content-type"), Some(content_type(format)));
        assert_eq!(
            header_num(&whole, "content-length"),
            whole.body.len(),
            "{format}"
        );
        assert_eq!(header_num(&whole, "x-frames"), frames as usize);
        assert_eq!(header_num(&whole, "x-samples"), n, "{format}");
        check(format, &whole.body, n);

        let audio = streamed(&s, req(format, frames), "audio");
        assert_eq!(audio.header("content-type"), Some(content_type(format)));
        check(format, &audio.body, n);
        let sse = sse_audio(&streamed(&s, req(format, frames), "sse"));
        // SSE deltas carry the bytes of the encoded format, the same as the
        // audio stream's.
        assert!(
            sse == audio.body,
            "{format}: sse bytes != audio stream bytes"
        );

        // Every encoder is deterministic and a whole response at speed 1 is
        // encoded chunk by chunk as the stream is, so the bytes are the same
        // (but for a whole WAV's real sizes in its header).
        if format == "wav" {
            assert_eq!(&audio.body[4..8], &[0xFF; 4], "open-ended RIFF size");
            assert_eq!(&audio.body[40..44], &[0xFF; 4], "open-ended data size");
            assert_eq!(&whole.body[40..44], &(2 * n as u32).to_le_bytes());
            assert_eq!(&whole.body[44..], &audio.body[44..], "wav data");
        } else {
            assert!(
                whole.body == audio.body,
                "{format}: whole and streamed bytes differ ({} vs {})",
                whole.body.len(),
                audio.body.len()
            );
        }
    }
    // OpenAI's default format is mp3.
    let mut b = req("pcm", 2);
    b.as_object_mut().unwrap().remove("response_format");
    let r = s.speech(b);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    check("mp3", &r.body, 2 * FRAME);
}

#[test]
fn speed_changes_the_tempo() {
    let s = Server::start(VARIANT, &[]);
    let frames = 20;
    let n = frames as usize * FRAME;
    let plain = s.speech(req("pcm", frames));
    assert_eq!(plain.status, 200);
    // speed 1.0 given is no speed at all: the same samples, bit for bit.
    let mut b = req("pcm", frames);
    b["speed"] = json!(1.0);
    let one = s.speech(b.clone());
    assert!(one.body == plain.body, "speed 1.0 changed the samples");
    assert!(streamed(&s, b, "audio").body == plain.body);

    for speed in [2.0f64, 0.5, 4.0, 0.25] {
        let want = (n as f64 / speed).round() as usize;
        let tol = want / 100;
        let within = |got: usize, what: &str| {
            assert!(
                got.abs_diff(want) <= tol,
                "speed {speed} {what}: {got} samples, want {want} ± 1 %"
            )
        };
        let mut b = req("pcm", frames);
        b["speed"] = json!(speed);
        let whole = s.speech(b.clone());
        assert_eq!(whole.status, 200, "{}", whole.text());
        let got = whole.body.len() / 2;
        within(got, "whole");
        assert_eq!(
            header_num(&whole, "x-samples"),
            got,
            "x-samples after tempo"
        );
        assert_eq!(header_num(&whole, "x-frames"), frames as usize);
        within(streamed(&s, b.clone(), "audio").body.len() / 2, "streamed");
        within(sse_audio(&streamed(&s, b, "sse")).len() / 2, "sse");
    }

    // Tempo then encoding, whole and streamed, in a compressed format.
    let half = n / 2;
    let mut b = req("mp3", frames);
    b["speed"] = json!(2.0);
    let whole = s.speech(b.clone());
    assert_eq!(header_num(&whole, "x-samples"), half);
    check("mp3", &whole.body, half);
    let d = decode::decode("mp3", &streamed(&s, b, "audio").body).unwrap();
    let (lo, hi) = decode::length_bounds("mp3", half);
    assert!(d.samples.len() + half / 100 >= lo && d.samples.len() <= hi + half / 100);
    let mut b = req("opus", frames);
    b["speed"] = json!(2.0);
    check("opus", &s.speech(b).body, half);

    for bad in [json!(0.2), json!(4.5), json!(0), json!("2"), json!(-1.0)] {
        let mut b = req("pcm", 2);
        b["speed"] = bad.clone();
        let r = s.speech(b);
        assert_eq!(r.status, 400, "speed {bad}: {}", r.text());
        let (msg, param, _) = r.error();
        assert_eq!(param.as_deref(), Some("speed"), "{msg}");
        assert!(msg.contains("speed"), "{msg}");
    }
}
