//! Stored voices on the tiny Base models: upload, list, use, delete, the
//! checks on ids and audio, restarts, and voices of another model size.

mod common;

use common::{read_wav, Server};
use serde_json::json;

const BASE: &str = "0.6B-Base";
const TRANSCRIPT: &str = "This is the reference recording.";

fn speech(voice: serde_json::Value) -> serde_json::Value {
    json!({
        "model": "qwen3-tts-0.6b-base",
        "input": "Something new to say.",
        "voice": voice,
        "response_format": "wav",
        "seed": 1,
        "max_frames": 5,
        "min_frames": 5,
    })
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn upload_list_use_delete() {
    let s = Server::start(BASE, &[]);
    // No voice yet: a clear error says how to make one.
    let r = s.speech(speech(json!("me")));
    assert_eq!(r.status, 400);
    assert!(
        r.error().0.contains("POST /v1/audio/voices"),
        "{}",
        r.text()
    );

    let up = s.upload_ref("me", Some(TRANSCRIPT));
    assert_eq!(up.status, 201, "{}", up.text());
    let v = up.json();
    assert_eq!(v["id"], "me");
    assert_eq!(v["icl"], true);
    assert_eq!(v["model_size"], "0.6B");
    assert_eq!(files(&s.voices_dir), ["me.qvoice"]);

    let x = s.upload_ref("xvec", None);
    assert_eq!(x.status, 201, "{}", x.text());
    assert_eq!(x.json()["icl"], false);

    let list = s.get("/v1/audio/voices").json();
    assert_eq!(ids(&list), ["me", "xvec"]);
    assert_eq!(list["data"][0]["icl"], true);
    assert_eq!(list["data"][0]["model_size"], "0.6B");

    for voice in [json!("me"), json!({"id": "xvec"})] {
        let r = s.speech(speech(voice.clone()));
        assert_eq!(r.status, 200, "{voice}: {}", r.text());
        let (spec, samples) = read_wav(&r.body);
        assert_eq!(spec.sample_rate, 24000);
        assert_eq!(samples.len(), 5 * 1920);
    }
    // x_vector_only with an ICL voice.
    let mut b = speech(json!("me"));
    b["x_vector_only"] = json!(true);
    assert_eq!(s.speech(b).status, 200);
    // Base models take no instructions.
    let mut b = speech(json!("me"));
    b["instructions"] = json!("whisper");
    let r = s.speech(b);
    assert_eq!(r.status, 400);
    assert_eq!(r.error().1.as_deref(), Some("instructions"));

    // The same name again: 409 unless overwrite=true.
    let again = s.upload_ref("me", None);
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["error"]["code"], "voice_exists");
    let audio = std::fs::read(common::ref_audio()).unwrap();
    let over = s.post_form(
        "/v1/audio/voices",
        &[("name", "me"), ("overwrite", "true")],
        &[("audio", "ref.wav", &audio)],
    );
    assert_eq!(over.status, 201, "{}", over.text());
    assert_eq!(over.json()["icl"], false);

    let d = s.delete("/v1/audio/voices/me");
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json()["deleted"], true);
    assert_eq!(ids(&s.get("/v1/audio/voices").json()), ["xvec"]);
    assert_eq!(files(&s.voices_dir), ["xvec.qvoice"]);
    assert_eq!(s.delete("/v1/audio/voices/me").status, 404);
    let r = s.speech(speech(json!("me")));
    assert_eq!(r.status, 400);
    assert!(r.error().0.contains("xvec"), "{}", r.text());
}

#[test]
fn bad_ids_and_uploads() {
    let s = Server::start(BASE, &[]);
    let audio = std::fs::read(common::ref_audio()).unwrap();
    for bad in ["../evil", "a/b", "", "x.y", &"n".repeat(65)] {
        let r = s.post_form(
            "/v1/audio/voices",
            &[("name", bad)],
            &[("audio", "ref.wav", &audio)],
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert_eq!(r.error().1.as_deref(), Some("name"));
    }
    let r = s.delete("/v1/audio/voices/..%2Fevil");
    assert!(r.status == 400 || r.status == 404, "{}", r.text());
    let r = s.delete("/v1/audio/voices/a.b");
    assert_eq!(r.status, 400);
    // Not audio: refused, nothing stored.
    let r = s.post_form(
        "/v1/audio/voices",
        &[("name", "junk")],
        &[("audio", "notes.txt", b"these are not samples at all")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().1.as_deref(), Some("audio"));
    // Too short a clip (under a second): refused by the library's limits.
    let short = {
        let mut b = Vec::new();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 24000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(std::io::Cursor::new(&mut b), spec).unwrap();
        for i in 0..2400 {
            w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
        b
    };
    let r = s.post_form(
        "/v1/audio/voices",
        &[("name", "short")],
        &[("audio", "s.wav", &short)],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().0.contains("at least"), "{}", r.text());
    // Missing parts.
    let r = s.post_form("/v1/audio/voices", &[("name", "noaudio")], &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.error().1.as_deref(), Some("audio"));
    let r = s.post_form("/v1/audio/voices", &[], &[("audio", "ref.wav", &audio)]);
    assert_eq!(r.status, 400);
    assert_eq!(r.error().1.as_deref(), Some("name"));
    // Not multipart at all.
    let r = s.post_json("/v1/audio/voices", &json!({"name": "x"}));
    assert_eq!(r.status, 400, "{}", r.text());
    // Over the upload limit.
    let big = vec![0u8; 21 << 20];
    let r = s.post_form(
        "/v1/audio/voices",
        &[("name", "big")],
        &[("audio", "big.wav", &big)],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        files(&s.voices_dir).is_empty(),
        "{:?}",
        files(&s.voices_dir)
    );
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn upload_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let uploads = tmp.path().join("tmp");
    std::fs::create_dir_all(&uploads).unwrap();
    // With TMPDIR pointed at a folder of its own, a failed and a good upload
    // leave nothing there.
    let (tts, tok) = common::models(BASE);
    let voices = tmp.path().join("v2");
    let mut child = std::process::Command::new(common::BIN)
        .args(["-m", tts.to_str().unwrap(), "-t", tok.to_str().unwrap()])
        .args([
            "--port",
            "0",
            "--threads",
            "1",
            "--voices-dir",
            voices.to_str().unwrap(),
        ])
        .env("TMPDIR", &uploads)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let url = |p: &str| format!("{base}{p}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::request(&url("/health"), "GET", &[], None).status != 200 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let form = |name: &str, file: &[u8]| {
        let boundary = "XyZ";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        common::request(
            &url("/v1/audio/voices"),
            "POST",
            &[("Content-Type", "multipart/form-data; boundary=XyZ")],
            Some(body),
        )
    };
    assert_eq!(form("junk", b"RIFF....nonsense").status, 400);
    assert_eq!(
        form("good", &std::fs::read(common::ref_audio()).unwrap()).status,
        201
    );
    assert!(files(&uploads).is_empty(), "{:?}", files(&uploads));
    assert_eq!(files(&voices), ["good.qvoice"]);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn restart_keeps_voices_and_other_sizes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("voices");
    let s = Server::start_with(BASE, &dir, &[]);
    assert_eq!(s.upload_ref("keep", Some(TRANSCRIPT)).status, 201);
    assert!(s.terminate().success());

    let s = Server::start_with(BASE, &dir, &[]);
    let list = s.get("/v1/audio/voices").json();
    assert_eq!(ids(&list), ["keep"]);
    assert_eq!(list["data"][0]["icl"], true);
    let r = s.speech(speech(json!("keep")));
    assert_eq!(r.status, 200, "{}", r.text());
    drop(s);

    // A 1.7B server on the same voices: listed as not usable, refused.
    let s = Server::start_with("1.7B-Base", &dir, &[]);
    let list = s.get("/v1/audio/voices").json();
    assert_eq!(list["data"][0]["usable"], false);
    assert_eq!(list["data"][0]["model_size"], "0.6B");
    let mut b = speech(json!("keep"));
    b["model"] = json!("tts-1");
    let r = s.speech(b);
    assert_eq!(r.status, 400, "{}", r.text());
    let (msg, param, _) = r.error();
    assert_eq!(param.as_deref(), Some("voice"));
    assert!(msg.contains("0.6B") && msg.contains("1.7B"), "{msg}");
    // And the file is untouched.
    assert_eq!(files(&dir), ["keep.qvoice"]);
}

#[test]
fn custom_voice_models_refuse_uploads() {
    let s = Server::start("0.6B-CustomVoice", &[]);
    let r = s.upload_ref("me", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().0.contains("Base"), "{}", r.text());
    assert!(files(&s.voices_dir).is_empty());
}
