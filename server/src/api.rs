//! The HTTP front end: routes, request parsing, errors in OpenAI's shape.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use metrics_exporter_prometheus::PrometheusHandle;
use qwen3_tts::config::{ModelSize, ModelType, TtsConfig};
use qwen3_tts::pipeline::{CancelFlag, GenerateOptions, StreamOptions, TtsModel};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::sampler::SamplingParams;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{
    Engine, Event, Job, JobError, SpeechJob, State as EngineState, SubmitError, Summary, Work,
};
use crate::formats::{self, AudioFormat, Output, Whole};
use crate::metrics;
use crate::voices::{self, VoiceError, Voices};

/// Largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// Largest voice upload accepted (the whole multipart body).
pub const MAX_UPLOAD_BYTES: usize = 20 << 20;
/// Largest `max_frames` a request may ask for (about 22 minutes of audio).
pub const MAX_FRAMES_LIMIT: usize = 16384;
/// OpenAI's voice names, answered with a list of this model's voices.
pub const OPENAI_VOICES: [&str; 11] = [
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
];
/// OpenAI's model ids, accepted as aliases of the loaded model.
pub const MODEL_ALIASES: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// The one voice name of a VoiceDesign model (which takes its voice from the instructions).
pub const DESIGN_VOICE: &str = "default";

/// What the handlers share.
pub struct AppState {
    pub engine: Engine,
    pub voices: Voices,
    pub api_key: Option<String>,
    pub max_input_chars: usize,
    pub request_timeout: Duration,
    pub prometheus: Option<PrometheusHandle>,
    next_id: AtomicU64,
    /// After SIGTERM: `/health` says so and new work gets a retryable 503
    /// while the requests in flight finish.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        engine: Engine,
        voices: Voices,
        api_key: Option<String>,
        max_input_chars: usize,
        request_timeout: Duration,
        prometheus: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            engine,
            voices,
            api_key,
            max_input_chars,
            request_timeout,
            prometheus,
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        }
    }

    /// Stops taking new work (SIGTERM): a balancer moves it elsewhere.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::set_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A retryable 503 while draining.
    fn check_not_draining(&self) -> Result<(), ApiError> {
        if !self.is_draining() {
            return Ok(());
        }
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down; retry (another replica takes it)",
        )
        .code("draining");
        e.retry_after = Some(1);
        Err(e)
    }

    fn request_id(&self) -> String {
        format!("req-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn model(&self) -> Result<&Arc<TtsModel>, ApiError> {
        match self.engine.state() {
            EngineState::Ready => self
                .engine
                .model()
                .ok_or_else(|| ApiError::internal("the model is not loaded")),
            EngineState::Loading => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model is still loading; try again shortly (see /health)",
            )
            .kind("server_error")
            .code("model_loading")),
            EngineState::Failed(e) => Err(ApiError::internal(format!(
                "the model could not be loaded: {e}"
            ))),
        }
    }
}

/// The router of every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/audio/speech", post(speech))
        .route(
            "/v1/audio/voices",
            get(list_voices)
                .post(upload_voice)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/v1/audio/voices/{id}", delete(delete_voice))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

// ---------------------------------------------------------------- errors

/// An error response: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn bad(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).param(param)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }

    fn kind(mut self, k: &'static str) -> Self {
        self.kind = k;
        self
    }

    fn busy() -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the server is busy (request queue full); retry later",
        )
        .kind("rate_limit_error")
        .code("queue_full");
        e.retry_after = Some(1);
        e
    }

    fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large (at most {limit} bytes)"),
        )
        .code("payload_too_large")
    }

    /// The outcome label of the speech-request counter.
    fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "busy",
            _ if self.code == Some("draining") => "busy",
            s if s.is_client_error() => "invalid",
            _ if self.code == Some("timeout") => "timeout",
            _ => "error",
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The library's error as an HTTP error (its field names mapped to the API's).
fn lib_error(e: qwen3_tts::Error) -> ApiError {
    use qwen3_tts::Error as E;
    match e {
        E::InvalidRequest { field, reason } => {
            let param = match field {
                "text" => "input",
                "instruct" => "instructions",
                "temperature/top_k/top_p" => "temperature",
                "subtalker sampling" => "subtalker_temperature",
                "max_new_tokens" => "max_frames",
                f => f,
            };
            ApiError::bad(param, format!("{param}: {reason}"))
        }
        E::BadAudio { reason, .. } => ApiError::bad("audio", format!("audio: {reason}")),
        E::WrongModel { reason, .. } => ApiError::bad("voice", format!("voice: {reason}")),
        E::Cancelled => ApiError::internal("cancelled"),
        e => ApiError::internal(e.to_string()),
    }
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Failed(e) => lib_error(e),
        JobError::Timeout => {
            ApiError::internal("the request ran past the server's time limit").code("timeout")
        }
        e => ApiError::internal(e.to_string()),
    }
}

async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
    .code("not_found")
}

// ---------------------------------------------------------------- auth

/// Constant-time comparison (the key's length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<Arc<AppState>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        if req.uri().path() != "/health" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let ok = given.is_some_and(|g| same(g.as_bytes(), key.as_bytes()));
            if !ok {
                let msg = if given.is_some() {
                    "incorrect API key provided"
                } else {
                    "missing API key: send 'Authorization: Bearer KEY'"
                };
                return ApiError::new(StatusCode::UNAUTHORIZED, msg)
                    .code("invalid_api_key")
                    .into_response();
            }
        }
    }
    next.run(req).await
}

// ---------------------------------------------------------------- models, health, metrics

/// The model's id: `qwen3-tts-<size>-<type>` (e.g. `qwen3-tts-0.6b-customvoice`).
pub fn model_id(cfg: &TtsConfig) -> String {
    let size = match cfg.model_size {
        ModelSize::B0_6 => "0.6b",
        ModelSize::B1_7 => "1.7b",
    };
    let ty = match cfg.model_type {
        ModelType::Base => "base",
        ModelType::CustomVoice => "customvoice",
        ModelType::VoiceDesign => "voicedesign",
    };
    format!("qwen3-tts-{size}-{ty}")
}

fn model_ids(cfg: &TtsConfig) -> Vec<String> {
    std::iter::once(model_id(cfg))
        .chain(MODEL_ALIASES.iter().map(|s| s.to_string()))
        .collect()
}

/// A model in OpenAI's shape, plus the device it computes on and what a
/// request may ask of it (the page at `/` builds its controls from these).
fn model_object(id: &str, device: &str, cfg: &TtsConfig) -> Value {
    json!({
        "id": id, "object": "model", "created": 0, "owned_by": "qwen3-tts", "device": device,
        "model_type": format!("{:?}", cfg.model_type),
        "model_size": cfg.model_size.to_string(),
        "languages": cfg.supported_languages(),
        "instructions": takes_instructions(cfg),
        "voice_cloning": cfg.model_type == ModelType::Base,
    })
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let cfg = &state.model()?.config;
    let device = state.engine.device().unwrap_or("cpu");
    let data: Vec<Value> = model_ids(cfg)
        .iter()
        .map(|id| model_object(id, device, cfg))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cfg = &state.model()?.config;
    check_model_id(cfg, &id)?;
    Ok(Json(model_object(
        &id,
        state.engine.device().unwrap_or("cpu"),
        cfg,
    )))
}

fn check_model_id(cfg: &TtsConfig, id: &str) -> Result<(), ApiError> {
    let ids = model_ids(cfg);
    if ids.iter().any(|m| m == id) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "the model '{id}' does not exist (available: {})",
            ids.join(", ")
        ),
    )
    .param("model")
    .code("model_not_found"))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    match state.engine.state() {
        EngineState::Ready => Json(json!({"status": "ready"})).into_response(),
        EngineState::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
        EngineState::Failed(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "error": e})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    metrics::set_load(state.engine.queue_depth(), state.engine.active());
    if let Some(stats) = state.engine.warm_stats() {
        metrics::set_voice_cache(&stats);
    }
    let text = state
        .prometheus
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// ---------------------------------------------------------------- request parsing

/// Typed access to the fields of a JSON object; errors name the field.
struct Fields<'a>(&'a Map<String, Value>);

/// `{prefix}temperature`, `{prefix}top_k` and `{prefix}top_p` into `p`
/// (the talker's without a prefix, the sub-talker's with `subtalker_`).
fn sampling_fields(f: &Fields, prefix: &str, p: &mut SamplingParams) -> Result<(), ApiError> {
    if let Some(v) = f.f32_in(&format!("{prefix}temperature"), 0.0, 100.0)? {
        p.temperature = v;
    }
    if let Some(v) = f.uint(&format!("{prefix}top_k"), 0, 1 << 20)? {
        p.top_k = v as usize;
    }
    if let Some(v) = f.f32_in(&format!("{prefix}top_p"), 0.0, 1.0)? {
        p.top_p = v;
    }
    Ok(())
}

fn type_error(field: &str, want: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::bad(field, format!("{field}: expected {want}, got {got}")).code("invalid_type")
}

impl Fields<'_> {
    /// The field, absent when missing or null.
    fn get(&self, f: &str) -> Option<&Value> {
        self.0.get(f).filter(|v| !v.is_null())
    }

    fn str(&self, f: &str) -> Result<Option<&str>, ApiError> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(f, "a string", v)),
        }
    }

    fn bool(&self, f: &str) -> Result<Option<bool>, ApiError> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(f, "a boolean", v)),
        }
    }

    fn f32_in(&self, f: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        match self.get(f) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => {
                let x = n.as_f64().ok_or_else(|| type_error(f, "a number", v))?;
                if !(lo..=hi).contains(&x) {
                    return Err(ApiError::bad(
                        f,
                        format!("{f}: {x} is out of range ({lo} to {hi})"),
                    )
                    .code("out_of_range"));
                }
                Ok(Some(x as f32))
            }
            Some(v) => Err(type_error(f, "a number", v)),
        }
    }

    fn uint(&self, f: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
        match self.get(f) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => {
                let x = n
                    .as_u64()
                    .ok_or_else(|| type_error(f, "a non-negative integer", v))?;
                if !(lo..=hi).contains(&x) {
                    return Err(ApiError::bad(
                        f,
                        format!("{f}: {x} is out of range ({lo} to {hi})"),
                    )
                    .code("out_of_range"));
                }
                Ok(Some(x))
            }
            Some(v) => Err(type_error(f, "a non-negative integer", v)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamFormat {
    /// The whole file in one response (no `stream_format`).
    None,
    /// Encoded audio chunk by chunk (chunked transfer).
    Audio,
    /// Server-sent events with base64 audio deltas.
    Sse,
}

/// A parsed speech request, ready for the engine.
pub(crate) struct Speech {
    pub(crate) job: SpeechJob,
    format: AudioFormat,
    /// The tempo change (1 = none).
    speed: f32,
    stream: StreamFormat,
    seed: u64,
    input_tokens: usize,
    /// The parts a long input is spoken in (1 for most).
    input_parts: usize,
}

/// The voice a request names, for the model at hand.
fn resolve_voice(
    state: &AppState,
    cfg: &TtsConfig,
    f: &Fields,
    x_vector_only: bool,
) -> Result<(String, Voice), ApiError> {
    let name = match f.get("voice") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(type_error("voice.id", "a string", v).param("voice")),
            None => {
                return Err(ApiError::bad(
                    "voice",
                    "voice: an object voice needs an \"id\" string",
                ))
            }
        },
        Some(v) => return Err(type_error("voice", "a string or an object {\"id\": …}", v)),
    };
    let valid = valid_voices(state, cfg);
    let listing = || {
        if valid.is_empty() {
            match cfg.model_type {
                ModelType::Base => {
                    "none stored yet: upload one with POST /v1/audio/voices".to_string()
                }
                _ => "none".to_string(),
            }
        } else {
            valid.join(", ")
        }
    };
    let Some(name) = name else {
        if cfg.model_type == ModelType::VoiceDesign {
            return Ok((DESIGN_VOICE.into(), Voice::None));
        }
        return Err(ApiError::bad(
            "voice",
            format!("voice is required (available: {})", listing()),
        ));
    };
    let lower = name.to_lowercase();
    let stored = voices::valid_id(&name)
        .then(|| state.voices.get(&name))
        .flatten();
    let voice = match cfg.model_type {
        ModelType::CustomVoice if cfg.speaker(&name).is_some() => Voice::Speaker(lower.clone()),
        ModelType::VoiceDesign if lower == DESIGN_VOICE => Voice::None,
        ModelType::Base if stored.is_some() => {
            let v = stored.expect("checked");
            if v.model_size != cfg.model_size.as_str() || v.x_vector.len() != cfg.talker.hidden {
                return Err(ApiError::bad(
                    "voice",
                    format!(
                        "voice '{name}' was made with a {} model; this server's model is {} \
                         (re-create the voice with this model)",
                        size_label(&v.model_size),
                        cfg.model_size
                    ),
                )
                .code("voice_model_mismatch"));
            }
            v.voice(x_vector_only)
        }
        _ => {
            let msg = if OPENAI_VOICES.contains(&lower.as_str()) {
                format!(
                    "'{name}' is an OpenAI voice, which this {} {:?} model does not have; \
                     its voices are: {}",
                    cfg.model_size,
                    cfg.model_type,
                    listing()
                )
            } else if stored.is_some() {
                format!(
                    "'{name}' is a stored (cloned) voice, which needs a Base model; \
                     this model's voices are: {}",
                    listing()
                )
            } else {
                format!("unknown voice '{name}' (available: {})", listing())
            };
            return Err(ApiError::bad("voice", msg).code("voice_not_found"));
        }
    };
    Ok((name, voice))
}

fn size_label(size: &str) -> String {
    ModelSize::parse(size).map_or_else(|| size.to_string(), |s| s.to_string())
}

/// The voices a speech request may name with this model.
pub(crate) fn valid_voices(state: &AppState, cfg: &TtsConfig) -> Vec<String> {
    match cfg.model_type {
        ModelType::CustomVoice => cfg.speakers.iter().map(|s| s.name.clone()).collect(),
        ModelType::VoiceDesign => vec![DESIGN_VOICE.to_string()],
        ModelType::Base => state
            .voices
            .list()
            .into_iter()
            .filter(|(_, v)| v.model_size == cfg.model_size.as_str())
            .map(|(id, _)| id)
            .collect(),
    }
}

fn takes_instructions(cfg: &TtsConfig) -> bool {
    match cfg.model_type {
        ModelType::VoiceDesign => true,
        ModelType::CustomVoice => cfg.model_size == ModelSize::B1_7,
        ModelType::Base => false,
    }
}

/// Parses a `/v1/audio/speech` body (the Wyoming front end builds one too).
pub(crate) fn parse_speech(
    state: &AppState,
    model: &TtsModel,
    id: String,
    body: &[u8],
) -> Result<Speech, ApiError> {
    let cfg = &model.config;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    };
    let f = Fields(obj);
    if let Some(m) = f.str("model")? {
        check_model_id(cfg, m)?;
    }
    let input = f.str("input")?.ok_or_else(|| {
        ApiError::bad("input", "input is required").code("missing_required_parameter")
    })?;
    let chars = input.chars().count();
    if chars > state.max_input_chars {
        return Err(ApiError::bad(
            "input",
            format!(
                "input is too long: {chars} characters, at most {} are accepted",
                state.max_input_chars
            ),
        )
        .code("string_above_max_length"));
    }
    if !qwen3_tts::prompt::has_speech(input) {
        return Err(ApiError::bad(
            "input",
            "input is empty (or only control characters): there is nothing to say",
        ));
    }
    let format = match f.str("response_format")? {
        None => AudioFormat::Mp3,
        Some(s) => s
            .parse::<AudioFormat>()
            .map_err(|e| ApiError::bad("response_format", e.to_string()))?,
    };
    // Refused here, before any work, when this build cannot encode it.
    formats::encoder(format, 24000).map_err(format_error)?;
    let speed = f
        .f32_in(
            "speed",
            f64::from(formats::MIN_SPEED),
            f64::from(formats::MAX_SPEED),
        )?
        .unwrap_or(1.0);
    formats::TempoStream::new(24000, speed).map_err(format_error)?;
    let stream = match f.str("stream_format")? {
        None => StreamFormat::None,
        Some("audio") => StreamFormat::Audio,
        Some("sse") => StreamFormat::Sse,
        Some(s) => {
            return Err(ApiError::bad(
                "stream_format",
                format!("stream_format: unknown value '{s}' (audio or sse)"),
            ))
        }
    };
    let instructions = f.str("instructions")?.filter(|s| !s.trim().is_empty());
    if instructions.is_some() && !takes_instructions(cfg) {
        return Err(ApiError::bad(
            "instructions",
            format!(
                "this {} {:?} model takes no instructions (1.7B CustomVoice and VoiceDesign models do)",
                cfg.model_size, cfg.model_type
            ),
        ));
    }
    let language = f.str("language")?.unwrap_or("auto").to_string();
    if cfg.language_id(&language).is_none() {
        return Err(ApiError::bad(
            "language",
            format!(
                "unsupported language '{language}' (supported: {})",
                cfg.supported_languages().join(", ")
            ),
        ));
    }
    let x_vector_only = f.bool("x_vector_only")?.unwrap_or(false);
    let non_streaming = match f.str("text_layout")? {
        None | Some("auto") => None,
        Some("streaming") => Some(false),
        Some("non-streaming") => Some(true),
        Some(s) => {
            return Err(ApiError::bad(
                "text_layout",
                format!("text_layout: unknown value '{s}' (auto, streaming or non-streaming)"),
            ))
        }
    };
    let (voice_name, voice) = resolve_voice(state, cfg, &f, x_vector_only)?;

    let mut o = GenerateOptions::from_config(cfg);
    sampling_fields(&f, "", &mut o.talker)?;
    sampling_fields(&f, "subtalker_", &mut o.subtalker)?;
    if f.bool("greedy")?.unwrap_or(false) {
        o = o.greedy();
    }
    if f.bool("subtalker_greedy")?.unwrap_or(false) {
        o.subtalker.do_sample = false;
    }
    if let Some(v) = f.f32_in("repetition_penalty", 1e-6, 100.0)? {
        o.repetition_penalty = v;
    }
    // The talker samples one token more than it makes frames (as the CLI).
    if let Some(n) = f.uint("max_frames", 1, MAX_FRAMES_LIMIT as u64)? {
        o.set_max_new_tokens(n as usize + 1);
    }
    o.max_new_tokens = o.max_new_tokens.min(MAX_FRAMES_LIMIT + 1);
    let min_frames = f
        .uint("min_frames", 0, MAX_FRAMES_LIMIT as u64)?
        .unwrap_or(1) as usize;
    o.min_new_tokens = (min_frames + 1).max(o.min_new_tokens);
    if o.min_new_tokens > o.max_new_tokens {
        return Err(ApiError::bad(
            "min_frames",
            format!(
                "min_frames {min_frames} is more than the {} frames allowed (max_frames)",
                o.max_new_tokens - 1
            ),
        ));
    }
    let seed = match f.uint("seed", 0, u64::MAX)? {
        Some(s) => s,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    o.seed = seed;
    o.validate().map_err(lib_error)?;
    let request = Request {
        text: input.to_string(),
        language,
        voice,
        instruct: instructions.map(str::to_string),
        non_streaming,
    };
    qwen3_tts::prompt::validate(cfg, &request).map_err(lib_error)?;
    let input_tokens = model.tokenizer.encode(input).map_err(lib_error)?.len();
    Ok(Speech {
        job: SpeechJob {
            id,
            voice_name,
            request,
            options: o,
            stream: StreamOptions::default(),
        },
        format,
        speed,
        stream,
        seed,
        input_tokens,
        input_parts: state.engine.input_parts(input),
    })
}

/// An error of the audio encoding crate, for the field it is about.
fn format_error(e: formats::Error) -> ApiError {
    use formats::Error as E;
    match e {
        E::Speed { .. } | E::TempoSampleRate { .. } | E::Stretch(_) => {
            ApiError::bad("speed", e.to_string())
        }
        E::UnknownFormat { .. } | E::Unavailable { .. } | E::SampleRate { .. } => {
            ApiError::bad("response_format", e.to_string())
        }
        e => ApiError::internal(e.to_string()),
    }
}

// ---------------------------------------------------------------- speech

/// Raises a job's cancel flag when dropped (the client went away) unless
/// disarmed first.
struct CancelOnDrop(Option<CancelFlag>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

async fn speech(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = state.request_id();
    let mut submitted = false;
    match speech_inner(&state, id.clone(), body, &mut submitted).await {
        Ok(r) => r,
        Err(e) => {
            // Jobs the engine took are logged and counted by the engine.
            if !submitted {
                tracing::info!(
                    "request {id} outcome={} status={} error={}",
                    e.outcome(),
                    e.status.as_u16(),
                    e.message
                );
                metrics::request_rejected(e.outcome());
            }
            e.into_response()
        }
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })
}

async fn speech_inner(
    state: &Arc<AppState>,
    id: String,
    body: Result<Bytes, BytesRejection>,
    submitted: &mut bool,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    state.check_not_draining()?;
    let body = body_bytes(body, MAX_JSON_BYTES)?;
    let model = state.model()?.clone();
    let Speech {
        job,
        format,
        speed,
        stream,
        seed,
        input_tokens,
        input_parts,
    } = parse_speech(state, &model, id.clone(), &body)?;
    let rate = state.engine.sample_rate().unwrap_or(24000);
    // Made before the job is queued, so a format or rate the codec refuses is a 400.
    let output = match stream {
        StreamFormat::None => {
            Encoding::Whole(Whole::new(format, rate, speed).map_err(format_error)?)
        }
        _ => Encoding::Stream(Output::new(format, rate, speed).map_err(format_error)?),
    };
    let cancel = CancelFlag::new();
    let mut guard = CancelOnDrop(Some(cancel.clone()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = received + state.request_timeout;
    state
        .engine
        .submit(Job {
            work: Work::Speech {
                job: Box::new(job),
                events: tx,
            },
            cancel: cancel.clone(),
            received,
            deadline,
        })
        .map_err(|e| match e {
            SubmitError::Full => ApiError::busy(),
            SubmitError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
        })?;
    *submitted = true;
    // Until the engine starts the job (or refuses it).
    let first = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
    match first {
        Ok(Some(Event::Started)) => {}
        Ok(Some(Event::Failed(e))) => return Err(job_error(e)),
        Ok(_) => return Err(ApiError::internal("the engine stopped")),
        Err(_) => {
            // Queued past the time limit; the engine drops it (and counts
            // it) when it comes up.
            return Err(
                ApiError::internal("the request waited past the server's time limit")
                    .code("timeout"),
            );
        }
    }
    let headers = |r: &mut Response, ct: &str| {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(ct) {
            h.insert(header::CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("x-request-id", v);
        }
        h.insert("x-seed", HeaderValue::from(seed));
        h.insert("x-input-tokens", HeaderValue::from(input_tokens));
        h.insert("x-input-parts", HeaderValue::from(input_parts));
    };
    match output {
        Encoding::Whole(mut whole) => {
            let mut bytes = Vec::new();
            let summary = loop {
                match rx.recv().await {
                    Some(Event::Audio(s)) => bytes.extend(
                        whole
                            .push(&s)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    ),
                    Some(Event::Done(s)) => break s,
                    Some(Event::Failed(e)) => return Err(job_error(e)),
                    Some(Event::Started) => {}
                    None => return Err(ApiError::internal("the engine stopped")),
                }
            };
            guard.disarm();
            let (tail, samples) = whole
                .finish()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            bytes.extend(tail);
            if format == AudioFormat::Wav {
                bytes = formats::fix_wav_sizes(bytes);
            }
            let mut r = Body::from(bytes).into_response();
            headers(&mut r, format.content_type());
            let h = r.headers_mut();
            h.insert("x-frames", HeaderValue::from(summary.frames));
            // The samples encoded: after the tempo change (frames × 1920 at speed 1).
            h.insert("x-samples", HeaderValue::from(samples));
            Ok(r)
        }
        Encoding::Stream(encoder) => {
            let sse = stream == StreamFormat::Sse;
            let st = StreamState {
                rx,
                encoder: Some(encoder),
                guard,
                sse,
                input_tokens,
                done: false,
            };
            let body = futures_util::stream::unfold(st, |mut st| async move {
                let item = st.next().await?;
                Some((item, st))
            });
            let mut r = Body::from_stream(body).into_response();
            if sse {
                headers(&mut r, "text/event-stream");
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            } else {
                headers(&mut r, format.content_type());
            }
            Ok(r)
        }
    }
}

/// How a response's audio is encoded.
enum Encoding {
    Whole(Whole),
    Stream(Output),
}

/// The state of a streamed response body; dropping it (the client went
/// away) raises the job's cancel flag.
struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    encoder: Option<Output>,
    guard: CancelOnDrop,
    sse: bool,
    input_tokens: usize,
    done: bool,
}

type StreamItem = Result<Bytes, std::io::Error>;

fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl StreamState {
    fn delta(&self, bytes: Vec<u8>) -> Bytes {
        if self.sse {
            sse_event(&json!({
                "type": "speech.audio.delta",
                "audio": base64::engine::general_purpose::STANDARD.encode(bytes),
            }))
        } else {
            Bytes::from(bytes)
        }
    }

    fn done_event(&self, s: &Summary) -> Bytes {
        sse_event(&json!({
            "type": "speech.audio.done",
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": s.frames,
                "total_tokens": self.input_tokens + s.frames,
            }
        }))
    }

    async fn next(&mut self) -> Option<StreamItem> {
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Some(Event::Audio(s)) => {
                    let enc = self.encoder.as_mut()?;
                    return Some(match enc.push(&s) {
                        Ok(b) if b.is_empty() => continue,
                        Ok(b) => Ok(self.delta(b)),
                        Err(e) => {
                            self.done = true;
                            Err(std::io::Error::other(e.to_string()))
                        }
                    });
                }
                Some(Event::Started) => continue,
                Some(Event::Done(s)) => {
                    self.done = true;
                    self.guard.disarm();
                    let tail = match self.encoder.take().map(Output::finish) {
                        Some(Ok((b, _))) => b,
                        Some(Err(e)) => return Some(Err(std::io::Error::other(e.to_string()))),
                        None => Vec::new(),
                    };
                    if !self.sse {
                        return (!tail.is_empty()).then(|| Ok(Bytes::from(tail)));
                    }
                    let mut out = Vec::new();
                    if !tail.is_empty() {
                        out.extend_from_slice(&self.delta(tail));
                    }
                    out.extend_from_slice(&self.done_event(&s));
                    return Some(Ok(Bytes::from(out)));
                }
                Some(Event::Failed(e)) => {
                    self.done = true;
                    let err = job_error(e);
                    if self.sse {
                        let mut v = err.body();
                        v["type"] = json!("error");
                        return Some(Ok(sse_event(&v)));
                    }
                    // Aborts the chunked body: the client sees it incomplete.
                    return Some(Err(std::io::Error::other(err.message)));
                }
                None => {
                    self.done = true;
                    return Some(Err(std::io::Error::other("the engine stopped")));
                }
            }
        }
    }
}

// ---------------------------------------------------------------- voices

fn voice_object(id: &str, v: &qwen3_tts::voice::VoicePrompt, cfg: &TtsConfig) -> Value {
    json!({
        "id": id,
        "object": "voice",
        "type": "stored",
        "model_size": size_label(&v.model_size),
        "model_name": v.model_name,
        "icl": v.icl.is_some(),
        "usable": cfg.model_type == ModelType::Base && v.model_size == cfg.model_size.as_str(),
    })
}

async fn list_voices(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let cfg = &state.model()?.config;
    let mut data: Vec<Value> = Vec::new();
    match cfg.model_type {
        ModelType::CustomVoice => {
            for s in &cfg.speakers {
                data.push(json!({
                    "id": s.name,
                    "object": "voice",
                    "type": "preset",
                    "model_size": cfg.model_size.to_string(),
                    "icl": false,
                    "dialect": s.dialect,
                    "usable": true,
                }));
            }
        }
        ModelType::VoiceDesign => data.push(json!({
            "id": DESIGN_VOICE,
            "object": "voice",
            "type": "preset",
            "model_size": cfg.model_size.to_string(),
            "icl": false,
            "usable": true,
        })),
        ModelType::Base => {}
    }
    for (id, v) in state.voices.list() {
        data.push(voice_object(&id, &v, cfg));
    }
    Ok(Json(json!({
        "object": "list",
        "model": model_id(cfg),
        "model_size": cfg.model_size.to_string(),
        "model_type": format!("{:?}", cfg.model_type),
        "data": data,
    })))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(MAX_UPLOAD_BYTES)
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid multipart body: {}", e.body_text()),
        )
    }
}

/// A safe extension for the temporary upload (a hint for the decoder).
fn upload_suffix(file_name: Option<&str>) -> String {
    file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext)
        .filter(|e| (1..=8).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map_or_else(String::new, |e| format!(".{}", e.to_ascii_lowercase()))
}

async fn upload_voice(
    State(state): State<Arc<AppState>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    state.check_not_draining()?;
    let model = state.model()?.clone();
    let cfg = &model.config;
    if model.speaker_encoder.is_none() {
        return Err(ApiError::bad(
            "audio",
            format!(
                "this {:?} model cannot clone voices: stored voices need a Base model",
                cfg.model_type
            ),
        ));
    }
    let mut name: Option<String> = None;
    let mut transcript: Option<String> = None;
    let mut overwrite = false;
    let mut audio: Option<tempfile::NamedTempFile> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let field_name = field.name().unwrap_or("").to_string();
        match field_name.as_str() {
            "name" => name = Some(field.text().await.map_err(multipart_error)?),
            "transcript" => transcript = Some(field.text().await.map_err(multipart_error)?),
            "overwrite" => {
                let v = field.text().await.map_err(multipart_error)?;
                overwrite = match v.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" | "" => false,
                    other => {
                        return Err(ApiError::bad(
                            "overwrite",
                            format!("overwrite: expected true or false, got '{other}'"),
                        ))
                    }
                }
            }
            "audio" | "file" => {
                let suffix = upload_suffix(field.file_name());
                let mut tmp = tempfile::Builder::new()
                    .prefix("qwen3-tts-upload-")
                    .suffix(&suffix)
                    .tempfile()
                    .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    std::io::Write::write_all(&mut tmp, &chunk)
                        .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
                }
                audio = Some(tmp);
            }
            _ => {} // ignored, as unknown JSON fields are
        }
    }
    let name = name.ok_or_else(|| ApiError::bad("name", "name is required (the voice id)"))?;
    if !voices::valid_id(&name) {
        return Err(ApiError::bad(
            "name",
            "name: a voice id is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    let builtin =
        cfg.speaker(&name).is_some() || OPENAI_VOICES.contains(&name.to_lowercase().as_str());
    if builtin {
        return Err(ApiError::bad(
            "name",
            format!("name: '{name}' is a preset or OpenAI voice name; choose another"),
        ));
    }
    if !overwrite && state.voices.contains(&name) {
        return Err(exists(&name));
    }
    let audio = audio
        .ok_or_else(|| ApiError::bad("audio", "audio is required (the reference recording)"))?;
    let transcript = transcript.filter(|t| !t.trim().is_empty());
    let (tx, rx) = oneshot::channel();
    state
        .engine
        .submit(Job {
            work: Work::CloneVoice {
                audio: PathBuf::from(audio.path()),
                transcript,
                reply: tx,
            },
            cancel: CancelFlag::new(),
            received,
            deadline: received + state.request_timeout,
        })
        .map_err(|e| match e {
            SubmitError::Full => ApiError::busy(),
            SubmitError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
        })?;
    let voice = rx
        .await
        .map_err(|_| ApiError::internal("the engine stopped"))?
        .map_err(job_error)?;
    drop(audio); // removes the temporary file
    let obj = voice_object(&name, &voice, cfg);
    let warm = voices::warm_request(&voice);
    let replaced = state
        .voices
        .save(&name, voice, overwrite)
        .map_err(|e| match e {
            VoiceError::Exists => exists(&name),
            VoiceError::NotFound => ApiError::internal("voice vanished"),
            VoiceError::Io(e) => ApiError::internal(format!("cannot store the voice: {e}")),
        })?;
    if let Some(old) = replaced {
        state.engine.forget(&old);
    }
    state.engine.warm(warm, &name);
    tracing::info!(
        "voice {name} stored (icl={}) in {:.2} s",
        obj["icl"],
        received.elapsed().as_secs_f64()
    );
    Ok((StatusCode::CREATED, Json(obj)).into_response())
}

fn exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("a voice '{name}' exists already; send overwrite=true to replace it"),
    )
    .param("name")
    .code("voice_exists")
}

async fn delete_voice(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !voices::valid_id(&id) {
        return Err(ApiError::bad(
            "id",
            "a voice id is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    match state.voices.delete(&id) {
        Ok(voice) => {
            state.engine.forget(&voice);
            Ok(Json(json!({"id": id, "object": "voice", "deleted": true})))
        }
        Err(VoiceError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no stored voice '{id}'"),
        )
        .param("id")
        .code("voice_not_found")),
        Err(e) => Err(ApiError::internal(format!(
            "cannot delete the voice: {e:?}"
        ))),
    }
}
