//! Starting `qwen3-tts-server` on the tiny fixture models, and a small HTTP
//! client for it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod decode;

use qwen3_tts::ggml::GgmlType;
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, fixtures};

pub const BIN: &str = env!("CARGO_BIN_EXE_qwen3-tts-server");

/// Tiny models of `variant` at F32, converted once per test binary: (tts, tokenizer).
pub fn models(variant: &str) -> (PathBuf, PathBuf) {
    static DIRS: OnceLock<Mutex<HashMap<String, (PathBuf, PathBuf)>>> = OnceLock::new();
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| tempfile::tempdir().unwrap());
    let mut dirs = DIRS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    dirs.entry(variant.to_string())
        .or_insert_with(|| {
            let dir = root.path().join(variant);
            std::fs::create_dir_all(&dir).unwrap();
            (
                convert_tiny(variant, GgmlType::F32, &dir),
                convert_tiny_tokenizer(GgmlType::F32, &dir),
            )
        })
        .clone()
}

pub fn ref_audio() -> PathBuf {
    fixtures().join("audio/ref_24k.wav")
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub voices_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server of `variant` with its own voices dir and `extra` flags.
    pub fn start(variant: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let voices = tmp.path().join("voices");
        let mut s = Server::start_with(variant, &voices, extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server of `variant` on the voices dir `voices`.
    pub fn start_with(variant: &str, voices: &Path, extra: &[&str]) -> Server {
        let (tts, tok) = models(variant);
        let mut child = Command::new(BIN)
            .args(["-m", tts.to_str().unwrap(), "-t", tok.to_str().unwrap()])
            .args(["--port", "0", "--threads", "1"])
            .args(["--voices-dir", voices.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start qwen3-tts-server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        break rest.trim().to_string();
                    }
                    seen.push(line);
                }
                _ => {
                    let status = child.wait();
                    panic!("the server did not start ({status:?}): {seen:?}");
                }
            }
        };
        let log = Arc::new(Mutex::new(seen));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let s = Server {
            child,
            base,
            log,
            voices_dir: voices.to_path_buf(),
            _tmp: None,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get("/health");
            if r.status == 200 {
                assert_eq!(r.json()["status"], "ready");
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {}", r.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, &[], None)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
    }

    pub fn speech(&self, body: serde_json::Value) -> Reply {
        self.post_json("/v1/audio/speech", &body)
    }

    /// A multipart/form-data POST of text fields and files (name, file name, bytes).
    pub fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Reply {
        let boundary = "----qwen3ttsboundary7MA4YWxk";
        let mut body = Vec::new();
        for (name, value) in fields {
            write!(
                body,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .unwrap();
        }
        for (name, file, bytes) in files {
            write!(
                body,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .unwrap();
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        let ct = format!("multipart/form-data; boundary={boundary}");
        self.request("POST", path, &[("Content-Type", &ct)], Some(body))
    }

    /// Uploads the fixture reference audio as voice `name`.
    pub fn upload_ref(&self, name: &str, transcript: Option<&str>) -> Reply {
        let audio = std::fs::read(ref_audio()).unwrap();
        let mut fields = vec![("name", name)];
        if let Some(t) = transcript {
            fields.push(("transcript", t));
        }
        self.post_form("/v1/audio/voices", &fields, &[("audio", "ref.wav", &audio)])
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        request(&self.url(path), method, headers, body)
    }

    /// The value of a metric line `name{labels} value` (labels as written, or "").
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines().find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Polls `cond` on the metric until it holds (or panics after `secs`).
    pub fn wait_metric(&self, name_and_labels: &str, secs: u64, cond: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.metric(name_and_labels);
            if let Some(v) = v.filter(|v| cond(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "metric {name_and_labels} = {v:?}; metrics:\n{}",
                self.get("/metrics").text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An OpenAI-shaped error: (message, param, type).
    pub fn error(&self) -> (String, Option<String>, String) {
        let v = self.json();
        let e = &v["error"];
        assert!(e.is_object(), "not an error: {v}");
        (
            e["message"].as_str().unwrap().to_string(),
            e["param"].as_str().map(str::to_string),
            e["type"].as_str().unwrap().to_string(),
        )
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), the
/// response read to its end (chunked bodies decoded).
pub fn request(url: &str, method: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let mut conn = Conn::open(url, method, headers, body.as_deref());
    let (status, headers) = conn.head();
    let mut body = Vec::new();
    while let Some(chunk) = conn.chunk() {
        body.extend(chunk);
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A raw HTTP/1.1 connection: the response read piece by piece.
pub struct Conn {
    reader: BufReader<TcpStream>,
    chunked: bool,
    remaining: Option<usize>,
    finished: bool,
}

fn host_port(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hp, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (hp, if path.is_empty() { "/" } else { path })
}

impl Conn {
    pub fn open(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Conn {
        let (hp, path) = host_port(url);
        let mut stream = TcpStream::connect(hp).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hp}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        if let Some(b) = body {
            // The server may answer (413) before reading everything: a
            // large body is written by another thread while this one reads.
            if b.len() > 1 << 16 {
                let mut w = stream.try_clone().unwrap();
                let b = b.to_vec();
                std::thread::spawn(move || {
                    let _ = w.write_all(&b);
                });
            } else {
                let _ = stream.write_all(b);
            }
        }
        Conn {
            reader: BufReader::new(stream),
            chunked: false,
            remaining: None,
            finished: false,
        }
    }

    /// Status and headers.
    pub fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let h = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        self.chunked = h("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        self.remaining = h("content-length").map(|v| v.parse().unwrap());
        (status, headers)
    }

    /// The next piece of the body (a chunk of a chunked body), `None` at its end.
    pub fn chunk(&mut self) -> Option<Vec<u8>> {
        if self.finished {
            return None;
        }
        if self.chunked {
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                panic!("chunked body cut short");
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if n == 0 {
                self.finished = true;
                return None;
            }
            let mut buf = vec![0; n + 2];
            self.reader.read_exact(&mut buf).expect("chunk");
            buf.truncate(n);
            return Some(buf);
        }
        match self.remaining {
            Some(0) => {
                self.finished = true;
                None
            }
            Some(n) => {
                let mut buf = vec![0; n];
                self.reader.read_exact(&mut buf).expect("body");
                self.finished = true;
                Some(buf)
            }
            None => {
                let mut buf = Vec::new();
                self.reader.read_to_end(&mut buf).unwrap();
                self.finished = true;
                Some(buf)
            }
        }
    }
}

/// Samples and sample rate of a 16-bit WAV.
pub fn read_wav(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
    let r = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a valid WAV");
    let spec = r.spec();
    let samples = r.into_samples::<i16>().map(Result::unwrap).collect();
    (spec, samples)
}
