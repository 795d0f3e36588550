//! The Wyoming front end (Home Assistant's protocol for local voice
//! services): a TCP listener on `--wyoming-port` that submits the same
//! speech jobs to the same [`Engine`](crate::engine::Engine) as the HTTP API.
//!
//! The wire format: each event is one JSON line
//! `{"type": …, "data": {…}?, "data_length": N?, "payload_length": M?, "version": …}`
//! followed by N bytes of JSON (merged into `data`) and M bytes of binary
//! payload. Both the inline `data` and the `data_length` forms are read;
//! events are written in the `data_length` form, as the `wyoming` Python
//! package writes them.
//!
//! Events served: `describe` → `info`; `synthesize` → `audio-start`,
//! `audio-chunk`s (s16le, as the engine produces them), `audio-stop`; the
//! streaming form `synthesize-start`, `synthesize-chunk`…, `synthesize-stop`
//! → one `audio-start`/`audio-chunk`s/`audio-stop` per sentence, each
//! synthesized as soon as it is complete, then `synthesize-stopped`; `ping`
//! → `pong`. A request that fails gets an `error` event
//! `{"text", "code"}` and the connection is closed (as the `wyoming`
//! servers do: their clients wait for `audio-stop` otherwise).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qwen3_tts::config::{ModelType, TtsConfig};
use qwen3_tts::pipeline::CancelFlag;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::api::{self, AppState};
use crate::engine::{Event, Job, JobError, State as EngineState, SubmitError, Work};
use crate::formats::{self, AudioFormat, StreamEncoder};
use crate::metrics;

/// Longest event header line accepted (beyond it the connection is closed).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest `data_length` accepted.
pub const MAX_DATA_BYTES: usize = 1 << 20;
/// Largest `payload_length` accepted.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// A connection with no complete event for this long (and no synthesis
/// running) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A client that does not take an event within this long is dropped (its
/// synthesis cancelled).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `describe` waits for the model to load before answering.
pub const DESCRIBE_WAIT: Duration = Duration::from_secs(60);
/// The protocol version written in each event (that of the `wyoming`
/// package whose framing this follows).
pub const PROTOCOL_VERSION: &str = "1.10.2";
/// The program's name in `info`.
pub const PROGRAM: &str = "qwen3-tts";
/// The audio format of every `audio-*` event.
pub const WIDTH: u32 = 2;
pub const CHANNELS: u32 = 1;
/// Extra (non-standard) fields of `synthesize` and `synthesize-start` data,
/// passed on as the HTTP API's fields of the same names.
pub const EXTRA_FIELDS: [&str; 16] = [
    "language",
    "instructions",
    "seed",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "greedy",
    "subtalker_temperature",
    "subtalker_top_k",
    "subtalker_top_p",
    "subtalker_greedy",
    "max_frames",
    "min_frames",
    "text_layout",
    "x_vector_only",
];
/// Events buffered while a synthesis runs (more: the connection is closed).
const MAX_DEFERRED: usize = 64;

// ---------------------------------------------------------------- events

/// One Wyoming event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WyEvent {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl WyEvent {
    pub fn new(kind: &str, data: Value) -> Self {
        let data = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Self {
            kind: kind.to_string(),
            data,
            payload: Vec::new(),
        }
    }

    /// The event as written: the header line, its data, its payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = Map::new();
        header.insert("type".into(), Value::String(self.kind.clone()));
        header.insert("version".into(), Value::String(PROTOCOL_VERSION.into()));
        let data = (!self.data.is_empty())
            .then(|| serde_json::to_vec(&self.data).unwrap_or_else(|_| b"{}".to_vec()));
        if let Some(d) = &data {
            header.insert("data_length".into(), json!(d.len()));
        }
        if !self.payload.is_empty() {
            header.insert("payload_length".into(), json!(self.payload.len()));
        }
        let mut out = serde_json::to_vec(&header).unwrap_or_default();
        out.push(b'\n');
        if let Some(d) = data {
            out.extend(d);
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Why no event was read.
#[derive(Debug)]
pub enum ReadError {
    /// The event was malformed but its bytes were all consumed: the next
    /// event can be read.
    Bad(String),
    /// The stream cannot be followed any more (oversized or cut short).
    Fatal(String),
    Io(std::io::Error),
}

fn length_field(header: &Map<String, Value>, field: &str, max: usize) -> Result<usize, ReadError> {
    match header.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => {
            let n = v.as_u64().ok_or_else(|| {
                ReadError::Fatal(format!("{field}: expected a byte count, got {v}"))
            })?;
            if n > max as u64 {
                return Err(ReadError::Fatal(format!(
                    "{field} {n} is too large (at most {max} bytes)"
                )));
            }
            Ok(n as usize)
        }
    }
}

/// Reads one event; `Ok(None)` at the end of the stream (between events).
pub async fn read_event<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<WyEvent>, ReadError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        loop {
            let buf = r.fill_buf().await.map_err(ReadError::Io)?;
            if buf.is_empty() {
                if line.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Fatal(
                    "the connection ended inside an event header".into(),
                ));
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    r.consume(i + 1);
                    break;
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    r.consume(n);
                }
            }
            if line.len() > MAX_HEADER_BYTES {
                return Err(ReadError::Fatal(format!(
                    "event header too long (at most {MAX_HEADER_BYTES} bytes)"
                )));
            }
        }
        if line.len() > MAX_HEADER_BYTES {
            return Err(ReadError::Fatal(format!(
                "event header too long (at most {MAX_HEADER_BYTES} bytes)"
            )));
        }
        // Blank lines between events are skipped.
        if !line.iter().all(u8::is_ascii_whitespace) {
            break;
        }
    }
    let header: Value = serde_json::from_slice(&line)
        .map_err(|e| ReadError::Bad(format!("the event header is not JSON: {e}")))?;
    let Value::Object(header) = header else {
        return Err(ReadError::Bad(
            "the event header is not a JSON object".into(),
        ));
    };
    let data_length = length_field(&header, "data_length", MAX_DATA_BYTES)?;
    let payload_length = length_field(&header, "payload_length", MAX_PAYLOAD_BYTES)?;
    let mut extra = vec![0; data_length];
    let mut payload = vec![0; payload_length];
    let cut = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Fatal("the connection ended inside an event".into())
        } else {
            ReadError::Io(e)
        }
    };
    r.read_exact(&mut extra).await.map_err(cut)?;
    r.read_exact(&mut payload).await.map_err(cut)?;
    // Everything of the event is read: what follows are errors the stream survives.
    let kind = match header.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err(ReadError::Bad("the event has no \"type\" string".into())),
    };
    let mut data = match header.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ReadError::Bad(format!("{kind}: \"data\" is not an object"))),
    };
    if data_length > 0 {
        match serde_json::from_slice::<Value>(&extra) {
            Ok(Value::Object(m)) => data.extend(m),
            Ok(_) => return Err(ReadError::Bad(format!("{kind}: its data is not an object"))),
            Err(e) => return Err(ReadError::Bad(format!("{kind}: its data is not JSON: {e}"))),
        }
    }
    Ok(Some(WyEvent {
        kind,
        data,
        payload,
    }))
}

fn audio_event(kind: &str, rate: u32, payload: Vec<u8>) -> WyEvent {
    let mut ev = WyEvent::new(
        kind,
        json!({"rate": rate, "width": WIDTH, "channels": CHANNELS}),
    );
    ev.payload = payload;
    ev
}

fn error_event(text: &str, code: &str) -> WyEvent {
    WyEvent::new("error", json!({"text": text, "code": code}))
}

// ---------------------------------------------------------------- info

/// ISO 639-1 codes of the model's language names (Home Assistant matches
/// voices by language code); names without one are listed as they are.
pub fn language_code(name: &str) -> &str {
    match name {
        "chinese" => "zh",
        "english" => "en",
        "german" => "de",
        "italian" => "it",
        "portuguese" => "pt",
        "spanish" => "es",
        "japanese" => "ja",
        "korean" => "ko",
        "french" => "fr",
        "russian" => "ru",
        other => other,
    }
}

/// The model's language for a client's language (`en`, `en-US`, `en_US`,
/// `English`, `auto`): its name when known, else the input as given.
pub fn language_name(cfg: &TtsConfig, lang: &str) -> String {
    let l = lang.trim().to_lowercase();
    if cfg.language_id(&l).is_some() {
        return l;
    }
    let primary = l.split(['-', '_']).next().unwrap_or("");
    cfg.supported_languages()
        .into_iter()
        .find(|n| language_code(n) == primary)
        .unwrap_or_else(|| lang.to_string())
}

fn attribution() -> Value {
    json!({"name": "Qwen (Alibaba Cloud)", "url": "https://github.com/QwenLM/Qwen3-TTS"})
}

/// The `info` event's data.
fn info(state: &AppState) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let (description, voices) = match state.engine.model() {
        Some(model) => {
            let cfg = &model.config;
            let languages: Vec<String> = cfg
                .supported_languages()
                .iter()
                .filter(|n| *n != "auto")
                .map(|n| language_code(n).to_string())
                .collect();
            let voices: Vec<Value> = api::valid_voices(state, cfg)
                .into_iter()
                .map(|name| {
                    let description = match cfg.model_type {
                        ModelType::CustomVoice => {
                            match cfg.speaker(&name).and_then(|s| s.dialect.as_ref()) {
                                Some(d) => format!("preset speaker {name} ({d})"),
                                None => format!("preset speaker {name}"),
                            }
                        }
                        ModelType::VoiceDesign => "the voice the instructions describe".to_string(),
                        ModelType::Base => format!("stored voice {name}"),
                    };
                    json!({
                        "name": name,
                        "description": description,
                        "attribution": attribution(),
                        "installed": true,
                        "version": null,
                        "languages": languages,
                        "speakers": null,
                    })
                })
                .collect();
            (
                format!("Qwen3-TTS {} ({})", cfg.model_size, api::model_id(cfg)),
                voices,
            )
        }
        None => ("Qwen3-TTS (model not loaded)".to_string(), Vec::new()),
    };
    json!({
        "asr": [],
        "tts": [{
            "name": PROGRAM,
            "description": description,
            "attribution": attribution(),
            "installed": true,
            "version": version,
            "supports_synthesize_streaming": true,
            "voices": voices,
        }],
        "handle": [],
        "intent": [],
        "wake": [],
    })
}

// ---------------------------------------------------------------- sentences

/// Takes the complete sentences off the front of `buf`: text up to a `.`,
/// `!`, `?` or `…` (with closing quotes or brackets) followed by
/// whitespace, up to a CJK `。！？`, or up to a line break.
pub fn take_sentences(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = buf.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (_, c) = chars[i];
        let mut end = None;
        if matches!(c, '。' | '！' | '？' | '\n') {
            end = Some(i + 1);
        } else if matches!(c, '.' | '!' | '?' | '…') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’' | '»')
            {
                j += 1;
            }
            if j < chars.len() && chars[j].1.is_whitespace() {
                end = Some(j);
            }
        }
        if let Some(e) = end {
            let byte_end = chars.get(e).map_or(buf.len(), |(b, _)| *b);
            let s = buf[start..byte_end].trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            start = byte_end;
            i = e;
        } else {
            i += 1;
        }
    }
    buf.drain(..start);
    out
}

// ---------------------------------------------------------------- server

/// A bound Wyoming listener.
pub struct Listener {
    listener: TcpListener,
    pub local_addr: std::net::SocketAddr,
}

/// Binds `host:port` (0: any free port).
pub async fn bind(host: &str, port: u16) -> Result<Listener, String> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("--wyoming-port: cannot listen on {addr}: {e}"))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("--wyoming-port: cannot listen on {addr}: {e}"))?;
    Ok(Listener {
        listener,
        local_addr,
    })
}

impl Listener {
    /// Accepts connections until `shutdown` turns true; each connection ends
    /// once it is idle after that (a synthesis in progress finishes first).
    pub async fn serve(self, state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
        let ids = Arc::new(AtomicU64::new(1));
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let conn = Connection::new(state.clone(), stream, shutdown.clone(), ids.clone());
                        tokio::spawn(async move {
                            tracing::debug!("wyoming connection from {peer}");
                            conn.run().await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!("wyoming accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

/// Closes the connection (after what was to be said was said).
struct Close;

/// Raises a job's cancel flag when dropped unless disarmed.
struct CancelOnDrop(Option<CancelFlag>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// The job the engine runs for this connection.
struct Running {
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    deadline: Instant,
    started: bool,
    encoder: Option<Box<dyn StreamEncoder>>,
    rate: u32,
}

/// A `synthesize-start` … `synthesize-stop` session.
struct Stream {
    /// The `synthesize-start` data (voice and extra fields).
    start: Map<String, Value>,
    /// Text not yet a complete sentence.
    buf: String,
    /// Complete sentences waiting for the engine.
    pending: VecDeque<String>,
    chars: usize,
    stopped: bool,
}

struct Connection {
    state: Arc<AppState>,
    stream: Option<TcpStream>,
    writer: Option<OwnedWriteHalf>,
    shutdown: watch::Receiver<bool>,
    ids: Arc<AtomicU64>,
    job: Option<Running>,
    session: Option<Stream>,
    deferred: VecDeque<WyEvent>,
}

type Incoming = Result<Option<WyEvent>, ReadError>;

impl Connection {
    fn new(
        state: Arc<AppState>,
        stream: TcpStream,
        shutdown: watch::Receiver<bool>,
        ids: Arc<AtomicU64>,
    ) -> Self {
        Self {
            state,
            stream: Some(stream),
            writer: None,
            shutdown,
            ids,
            job: None,
            session: None,
            deferred: VecDeque::new(),
        }
    }

    async fn run(mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        self.writer = Some(wr);
        let (tx, mut rx) = mpsc::channel::<Incoming>(16);
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(rd);
            loop {
                let ev = read_event(&mut r).await;
                let fatal = matches!(ev, Err(ReadError::Fatal(_)));
                let go_on = matches!(ev, Ok(Some(_)) | Err(ReadError::Bad(_)));
                if tx.send(ev).await.is_err() || !go_on {
                    if fatal {
                        // What the client still sends is read and dropped
                        // (closing with unread data would reset the
                        // connection before it reads the error).
                        let mut sink = vec![0; 16 << 10];
                        let mut left = MAX_PAYLOAD_BYTES;
                        while left > 0 {
                            match r.read(&mut sink).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => left = left.saturating_sub(n),
                            }
                        }
                    }
                    break;
                }
            }
        });
        let _ = self.serve(&mut rx).await;
        // Dropping the job raises its cancel flag (the client went away or
        // the connection failed).
        self.job = None;
        if let Some(mut w) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
        }
        // The reader ends at the client's end of the stream (it has been told
        // we are done), or is stopped.
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    fn busy(&self) -> bool {
        match &self.session {
            Some(s) => s.stopped,
            None => self.job.is_some(),
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Incoming>) -> Result<(), Close> {
        let mut last_event = Instant::now();
        let mut stopping = *self.shutdown.borrow();
        loop {
            loop {
                self.pump().await?;
                if self.busy() {
                    break;
                }
                let Some(ev) = self.deferred.pop_front() else {
                    break;
                };
                self.handle(ev).await?;
            }
            let idle = self.job.is_none() && self.session.is_none();
            if stopping && idle {
                return Ok(());
            }
            let queued_until = self.job.as_ref().filter(|j| !j.started).map(|j| j.deadline);
            let has_job = self.job.is_some();
            let idle_at = last_event + IDLE_TIMEOUT;
            let job_rx = self.job.as_mut().map(|j| &mut j.rx);
            let shutdown = &mut self.shutdown;
            tokio::select! {
                inc = rx.recv() => match inc {
                    None | Some(Ok(None)) | Some(Err(ReadError::Io(_))) => return Err(Close),
                    Some(Ok(Some(ev))) => {
                        last_event = Instant::now();
                        if self.busy() {
                            if self.deferred.len() >= MAX_DEFERRED {
                                return self.fail("too many events while synthesizing", "too-many-events").await;
                            }
                            self.deferred.push_back(ev);
                        } else {
                            self.handle(ev).await?;
                        }
                    }
                    Some(Err(ReadError::Bad(m))) => {
                        last_event = Instant::now();
                        self.send(error_event(&m, "bad-event")).await?;
                    }
                    Some(Err(ReadError::Fatal(m))) => return self.fail(&m, "bad-event").await,
                },
                ev = async {
                    match job_rx {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                }, if has_job => {
                    self.on_job_event(ev).await?;
                }
                _ = tokio::time::sleep_until(queued_until.unwrap_or_else(Instant::now).into()), if queued_until.is_some() => {
                    // Queued past the time limit; the engine drops it when it comes up.
                    self.job = None;
                    return self.fail("the request waited past the server's time limit", "timeout").await;
                }
                _ = tokio::time::sleep_until(idle_at.into()), if !has_job => {
                    tracing::debug!("wyoming connection idle: closed");
                    return Err(Close);
                }
                r = shutdown.changed(), if !stopping => {
                    stopping = r.is_err() || *self.shutdown.borrow();
                }
            }
        }
    }

    async fn send(&mut self, ev: WyEvent) -> Result<(), Close> {
        let w = self.writer.as_mut().ok_or(Close)?;
        match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&ev.encode())).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Close),
        }
    }

    /// Sends an `error` event and closes the connection.
    async fn fail(&mut self, text: &str, code: &str) -> Result<(), Close> {
        self.send(error_event(text, code)).await?;
        Err(Close)
    }

    async fn handle(&mut self, ev: WyEvent) -> Result<(), Close> {
        let streaming = self.session.is_some();
        match ev.kind.as_str() {
            "describe" => {
                let until = Instant::now() + DESCRIBE_WAIT;
                while self.state.engine.state() == EngineState::Loading && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let info = info(&self.state);
                self.send(WyEvent::new("info", info)).await
            }
            "ping" => {
                let text = ev.data.get("text").cloned().unwrap_or(Value::Null);
                self.send(WyEvent::new("pong", json!({"text": text}))).await
            }
            // Home Assistant sends the whole text once more inside a stream
            // (for servers without streaming): ignored there.
            "synthesize" if streaming => Ok(()),
            "synthesize" => {
                let text = match ev.data.get("text") {
                    Some(Value::String(t)) => t.clone(),
                    _ => {
                        return self
                            .fail("synthesize: \"text\" (a string) is required", "bad-request")
                            .await
                    }
                };
                self.start_job(&text, &ev.data).await
            }
            "synthesize-start" if streaming => {
                self.fail("synthesize-start: a stream is already open", "bad-request")
                    .await
            }
            "synthesize-start" => {
                self.session = Some(Stream {
                    start: ev.data,
                    buf: String::new(),
                    pending: VecDeque::new(),
                    chars: 0,
                    stopped: false,
                });
                Ok(())
            }
            "synthesize-chunk" | "synthesize-stop" if !streaming => {
                let msg = format!(
                    "{}: no stream is open (send synthesize-start first)",
                    ev.kind
                );
                self.fail(&msg, "bad-request").await
            }
            "synthesize-chunk" => {
                let text = match ev.data.get("text") {
                    Some(Value::String(t)) => t.clone(),
                    _ => {
                        return self
                            .fail(
                                "synthesize-chunk: \"text\" (a string) is required",
                                "bad-request",
                            )
                            .await
                    }
                };
                let max = self.state.max_input_chars;
                let s = self.session.as_mut().expect("streaming");
                s.chars += text.chars().count();
                if s.chars > max {
                    let msg = format!(
                        "the streamed text is too long: over {max} characters are not accepted"
                    );
                    return self.fail(&msg, "too-long").await;
                }
                s.buf.push_str(&text);
                let done = take_sentences(&mut s.buf);
                s.pending.extend(done);
                Ok(())
            }
            "synthesize-stop" => {
                let s = self.session.as_mut().expect("streaming");
                let rest = std::mem::take(&mut s.buf);
                if !rest.trim().is_empty() {
                    s.pending.push_back(rest.trim().to_string());
                }
                s.stopped = true;
                Ok(())
            }
            other => {
                let msg = format!(
                    "unknown event type '{other}' (this server answers describe, synthesize, \
                     synthesize-start/-chunk/-stop and ping)"
                );
                self.send(error_event(&msg, "unknown-event")).await
            }
        }
    }

    /// Moves a stream on: starts its next sentence, or ends it.
    async fn pump(&mut self) -> Result<(), Close> {
        if self.job.is_some() {
            return Ok(());
        }
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if let Some(text) = s.pending.pop_front() {
            let start = s.start.clone();
            return self.start_job(&text, &start).await;
        }
        if s.stopped {
            self.session = None;
            self.send(WyEvent::new("synthesize-stopped", Value::Null))
                .await?;
        }
        Ok(())
    }

    /// The voice to use: `voice.name`, else `voice.speaker`, else the
    /// model's first voice.
    fn voice_name(&self, cfg: &TtsConfig, data: &Map<String, Value>) -> Result<String, String> {
        let voice = match data.get("voice") {
            None | Some(Value::Null) => None,
            Some(Value::Object(v)) => Some(v),
            Some(_) => return Err("\"voice\" must be an object {\"name\": …}".into()),
        };
        let named = |f: &str| -> Result<Option<String>, String> {
            match voice.and_then(|v| v.get(f)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(Value::String(_)) => Ok(None),
                Some(_) => Err(format!("voice.{f} must be a string")),
            }
        };
        if let Some(n) = named("name")?.or(named("speaker")?) {
            return Ok(n);
        }
        match api::valid_voices(&self.state, cfg).into_iter().next() {
            Some(v) => Ok(v),
            None => Err(match cfg.model_type {
                ModelType::Base => "no voice given and none stored yet: store one with \
                                    POST /v1/audio/voices on the HTTP API"
                    .into(),
                _ => "no voice given and the model has none".into(),
            }),
        }
    }

    /// Submits one utterance with the voice and extra fields of `data`.
    async fn start_job(&mut self, text: &str, data: &Map<String, Value>) -> Result<(), Close> {
        let received = Instant::now();
        let id = format!("wy-{}", self.ids.fetch_add(1, Ordering::Relaxed));
        let model = match self.state.engine.state() {
            EngineState::Ready => match self.state.engine.model() {
                Some(m) => m.clone(),
                None => return self.fail("the model is not loaded", "not-ready").await,
            },
            EngineState::Loading => {
                return self
                    .fail(
                        "the model is still loading; try again shortly",
                        "model-loading",
                    )
                    .await
            }
            EngineState::Failed(e) => {
                let msg = format!("the model could not be loaded: {e}");
                return self.fail(&msg, "not-ready").await;
            }
        };
        let cfg = &model.config;
        let voice = match self.voice_name(cfg, data) {
            Ok(v) => v,
            Err(m) => return self.reject(&id, &m, "unknown-voice").await,
        };
        let mut body = Map::new();
        for f in EXTRA_FIELDS {
            if let Some(v) = data.get(f) {
                body.insert(f.to_string(), v.clone());
            }
        }
        let language = data
            .get("voice")
            .and_then(|v| v.get("language"))
            .or(data.get("language"))
            .and_then(Value::as_str);
        if let Some(l) = language {
            body.insert("language".into(), Value::String(language_name(cfg, l)));
        }
        body.insert("input".into(), Value::String(text.to_string()));
        body.insert("voice".into(), Value::String(voice));
        body.insert("response_format".into(), Value::String("pcm".into()));
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let speech = match api::parse_speech(&self.state, &model, id.clone(), &bytes) {
            Ok(s) => s,
            Err(e) => {
                let code = match e.code {
                    Some("voice_not_found") | Some("voice_model_mismatch") => "unknown-voice",
                    Some("string_above_max_length") => "too-long",
                    _ => "bad-request",
                };
                return self.reject(&id, &e.message, code).await;
            }
        };
        let rate = self.state.engine.sample_rate().unwrap_or(24000);
        let encoder = match formats::encoder(AudioFormat::Pcm, rate) {
            Ok(e) => e,
            Err(e) => return self.fail(&e.to_string(), "failed").await,
        };
        let cancel = CancelFlag::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let deadline = received + self.state.request_timeout;
        let submitted = self.state.engine.submit(Job {
            work: Work::Speech {
                job: Box::new(speech.job),
                events: tx,
            },
            cancel: cancel.clone(),
            received,
            deadline,
        });
        match submitted {
            Ok(()) => {
                self.job = Some(Running {
                    rx,
                    guard: CancelOnDrop(Some(cancel)),
                    deadline,
                    started: false,
                    encoder: Some(encoder),
                    rate,
                });
                Ok(())
            }
            Err(SubmitError::Full) => {
                tracing::info!("request {id} outcome=busy (wyoming)");
                metrics::request_rejected("busy");
                self.fail(
                    "the server is busy (request queue full); retry later",
                    "busy",
                )
                .await
            }
            Err(SubmitError::Stopped) => {
                self.fail("the server is shutting down", "shutting-down")
                    .await
            }
        }
    }

    /// A request refused before the engine: logged, counted, answered.
    async fn reject(&mut self, id: &str, msg: &str, code: &str) -> Result<(), Close> {
        tracing::info!("request {id} outcome=invalid error={msg} (wyoming)");
        metrics::request_rejected("invalid");
        self.fail(msg, code).await
    }

    async fn on_job_event(&mut self, ev: Option<Event>) -> Result<(), Close> {
        let Some(job) = self.job.as_mut() else {
            return Ok(());
        };
        let rate = job.rate;
        match ev {
            Some(Event::Started) => {
                job.started = true;
                let start = audio_event("audio-start", rate, Vec::new());
                self.send(start).await
            }
            Some(Event::Audio(samples)) => {
                let bytes = match job.encoder.as_mut().map(|e| e.push(&samples)) {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return self.fail(&e.to_string(), "failed").await,
                    None => Vec::new(),
                };
                if bytes.is_empty() {
                    return Ok(());
                }
                let chunk = audio_event("audio-chunk", rate, bytes);
                self.send(chunk).await
            }
            Some(Event::Done(_)) => {
                let mut job = self.job.take().expect("checked");
                job.guard.0 = None;
                let tail = match job.encoder.take().map(|e| e.finish()) {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return self.fail(&e.to_string(), "failed").await,
                    None => Vec::new(),
                };
                if !tail.is_empty() {
                    let chunk = audio_event("audio-chunk", rate, tail);
                    self.send(chunk).await?;
                }
                self.send(WyEvent::new("audio-stop", Value::Null)).await
            }
            Some(Event::Failed(e)) => {
                self.job = None;
                let (code, text) = match &e {
                    JobError::Timeout => (
                        "timeout",
                        "the request ran past the server's time limit".to_string(),
                    ),
                    JobError::Cancelled => ("cancelled", e.to_string()),
                    JobError::NotLoaded(_) => ("not-ready", e.to_string()),
                    JobError::Failed(qwen3_tts::Error::InvalidRequest { .. }) => {
                        ("bad-request", e.to_string())
                    }
                    JobError::Failed(_) => ("failed", e.to_string()),
                };
                self.fail(&text, code).await
            }
            None => {
                self.job = None;
                self.fail("the engine stopped", "failed").await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_both_data_forms() {
        let mut ev = WyEvent::new(
            "audio-chunk",
            json!({"rate": 24000, "width": 2, "channels": 1}),
        );
        ev.payload = vec![1, 2, 3, 4];
        let bytes = ev.encode();
        let line = &bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()];
        let header: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(header["type"], "audio-chunk");
        assert_eq!(header["version"], PROTOCOL_VERSION);
        assert!(header.get("data").is_none());
        assert_eq!(header["payload_length"], 4);
        let mut r = &bytes[..];
        assert_eq!(read_event(&mut r).await.unwrap().unwrap(), ev);
        assert!(read_event(&mut r).await.unwrap().is_none());

        // Inline data, merged with data_length data (which wins).
        let extra = br#"{"b":2,"a":3}"#;
        let mut input = format!(
            "\n{{\"type\":\"x\",\"data\":{{\"a\":1}},\"data_length\":{}}}\n",
            extra.len()
        )
        .into_bytes();
        input.extend_from_slice(extra);
        input.extend_from_slice(b"{\"type\":\"describe\"}\n");
        let mut r = &input[..];
        let e = read_event(&mut r).await.unwrap().unwrap();
        assert_eq!(e.kind, "x");
        assert_eq!(Value::Object(e.data), json!({"a": 3, "b": 2}));
        let e = read_event(&mut r).await.unwrap().unwrap();
        assert_eq!(e.kind, "describe");
        assert!(e.data.is_empty() && e.payload.is_empty());
    }

    #[tokio::test]
    async fn malformed_events() {
        let mut r = &b"not json\n{\"type\":\"describe\"}\n"[..];
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Bad(_))));
        assert_eq!(read_event(&mut r).await.unwrap().unwrap().kind, "describe");
        let mut r = &b"{\"data\":{}}\n"[..];
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Bad(_))));
        let big = format!(
            "{{\"type\":\"x\",\"payload_length\":{}}}\n",
            MAX_PAYLOAD_BYTES + 1
        );
        let mut r = big.as_bytes();
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Fatal(_))));
        let mut r = &b"{\"type\":\"x\",\"payload_length\":10}\nabc"[..];
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Fatal(_))));
        let long = vec![b'a'; MAX_HEADER_BYTES + 10];
        let mut r = &long[..];
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Fatal(_))));
        let mut r = &b"{\"type\":\"x\",\"data_length\":-1}\n"[..];
        assert!(matches!(read_event(&mut r).await, Err(ReadError::Fatal(_))));
    }

    #[test]
    fn sentences() {
        let mut b = String::from("Hello there. This is");
        assert_eq!(take_sentences(&mut b), vec!["Hello there."]);
        assert_eq!(b, " This is");
        b.push_str(" 3.5 tests! \"Quoted?\" And");
        assert_eq!(
            take_sentences(&mut b),
            vec!["This is 3.5 tests!", "\"Quoted?\""]
        );
        assert_eq!(b, " And");
        let mut c = String::from("你好。世界！还有");
        assert_eq!(take_sentences(&mut c), vec!["你好。", "世界！"]);
        assert_eq!(c, "还有");
        let mut d = String::from("Line one\nLine two.");
        assert_eq!(take_sentences(&mut d), vec!["Line one"]);
        assert_eq!(d, "Line two.");
    }
}
