//! Prometheus metrics (`GET /metrics`), through the `metrics` facade.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "qwen3_tts_requests_total";
pub const QUEUE_DEPTH: &str = "qwen3_tts_queue_depth";
pub const ACTIVE: &str = "qwen3_tts_active_sessions";
pub const PEAK_ACTIVE: &str = "qwen3_tts_peak_active_sessions";
pub const FIRST_AUDIO: &str = "qwen3_tts_time_to_first_audio_seconds";
pub const DURATION: &str = "qwen3_tts_request_duration_seconds";
pub const FRAMES: &str = "qwen3_tts_frames_total";
pub const FRAMES_PER_SECOND: &str = "qwen3_tts_frames_per_second";
pub const REAL_TIME_FACTOR: &str = "qwen3_tts_real_time_factor";
pub const DRAINING: &str = "qwen3_tts_draining";
pub const RUNAWAY_STOPS: &str = "qwen3_tts_runaway_stops_total";
pub const VOICE_CACHE_ENTRIES: &str = "qwen3_tts_voice_cache_entries";
pub const VOICE_CACHE_BYTES: &str = "qwen3_tts_voice_cache_bytes";
pub const VOICE_CACHE_BUDGET: &str = "qwen3_tts_voice_cache_budget_bytes";
pub const VOICE_CACHE_HITS: &str = "qwen3_tts_voice_cache_hits_total";
pub const VOICE_CACHE_MISSES: &str = "qwen3_tts_voice_cache_misses_total";
pub const VOICE_CACHE_EVICTIONS: &str = "qwen3_tts_voice_cache_evictions_total";

/// Outcomes of speech requests (`outcome` label of [`REQUESTS`]): `ok`,
/// `cancelled` (the client went away), `timeout`, `invalid` (4xx), `busy`
/// (429: queue full), `error` (5xx).
pub const OUTCOMES: [&str; 6] = ["ok", "cancelled", "timeout", "invalid", "busy", "error"];

const BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 120.0,
];

/// Installs the global recorder (once per process; `None` if one is
/// installed already).
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .ok()?
        .install_recorder()
        .ok()?;
    describe_counter!(
        REQUESTS,
        "Speech requests by outcome (ok, cancelled, timeout, invalid, busy, error)"
    );
    describe_gauge!(QUEUE_DEPTH, "Requests waiting for the engine");
    describe_gauge!(ACTIVE, "Requests the engine is running");
    describe_gauge!(
        PEAK_ACTIVE,
        "Most requests the engine has decoded together (one batch) since it started"
    );
    describe_histogram!(
        FIRST_AUDIO,
        Unit::Seconds,
        "From the request to its first audio"
    );
    describe_histogram!(DURATION, Unit::Seconds, "From the request to its end");
    describe_counter!(FRAMES, "Frames (80 ms each) generated");
    describe_counter!(
        RUNAWAY_STOPS,
        "Generations stopped at the runaway guard's bound for their text (no end code)"
    );
    describe_gauge!(
        FRAMES_PER_SECOND,
        "Frames per second of the last finished request (queueing included)"
    );
    describe_gauge!(
        VOICE_CACHE_ENTRIES,
        "Warm voice state held: talker prompt prefixes (kind=prefix) and ICL vocoder contexts (kind=vocoder)"
    );
    describe_gauge!(
        VOICE_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of warm voice state held"
    );
    describe_gauge!(
        VOICE_CACHE_BUDGET,
        Unit::Bytes,
        "The warm voice state's memory budget (--voice-cache-mb)"
    );
    describe_counter!(
        VOICE_CACHE_HITS,
        "Requests' lookups of warm voice state that found it"
    );
    describe_counter!(
        VOICE_CACHE_MISSES,
        "Requests' lookups of warm voice state that had to compute it"
    );
    describe_counter!(
        VOICE_CACHE_EVICTIONS,
        "Warm voice state dropped to stay within the budget"
    );
    describe_gauge!(
        REAL_TIME_FACTOR,
        "Recent real-time factor: request time over audio time, averaged over the last ~10 \
         requests (above 1: slower than real time; for autoscaling)"
    );
    describe_gauge!(
        DRAINING,
        "1 after SIGTERM while the requests in flight finish (new ones get 503)"
    );
    for outcome in OUTCOMES {
        counter!(REQUESTS, "outcome" => outcome).increment(0);
    }
    gauge!(REAL_TIME_FACTOR).set(0.0);
    gauge!(DRAINING).set(0.0);
    counter!(FRAMES).increment(0);
    counter!(RUNAWAY_STOPS).increment(0);
    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(ACTIVE).set(0.0);
    gauge!(PEAK_ACTIVE).set(0.0);
    gauge!(FRAMES_PER_SECOND).set(0.0);
    Some(handle)
}

/// A speech request that ended before the engine (rejected, busy).
pub fn request_rejected(outcome: &'static str) {
    counter!(REQUESTS, "outcome" => outcome).increment(1);
}

/// A speech job that the engine ran.
pub fn request_done(outcome: &'static str, first_audio: Option<f64>, total: f64, frames: usize) {
    counter!(REQUESTS, "outcome" => outcome).increment(1);
    if let Some(t) = first_audio {
        histogram!(FIRST_AUDIO).record(t);
    }
    histogram!(DURATION).record(total);
    counter!(FRAMES).increment(frames as u64);
    if frames > 0 && total > 0.0 {
        gauge!(FRAMES_PER_SECOND).set(frames as f64 / total);
        // An exponential average (weight 0.1 for the newest request).
        static RTF: std::sync::Mutex<Option<f64>> = std::sync::Mutex::new(None);
        let rtf = total / (frames as f64 * 0.08);
        let mut avg = RTF.lock().unwrap_or_else(|e| e.into_inner());
        let next = avg.map_or(rtf, |a| 0.9 * a + 0.1 * rtf);
        *avg = Some(next);
        gauge!(REAL_TIME_FACTOR).set(next);
    }
}

/// The server is draining (after SIGTERM).
pub fn set_draining() {
    gauge!(DRAINING).set(1.0);
}

/// A generation stopped at the runaway guard's bound.
pub fn runaway_stop() {
    counter!(RUNAWAY_STOPS).increment(1);
}

/// The engine's current load, set before each scrape.
pub fn set_load(queue_depth: usize, active: usize) {
    gauge!(QUEUE_DEPTH).set(queue_depth as f64);
    gauge!(ACTIVE).set(active as f64);
}

/// The warm voice cache's figures, set before each scrape.
pub fn set_voice_cache(s: &qwen3_tts::warm::WarmStats) {
    gauge!(VOICE_CACHE_ENTRIES, "kind" => "prefix").set(s.prefixes as f64);
    gauge!(VOICE_CACHE_ENTRIES, "kind" => "vocoder").set(s.contexts as f64);
    gauge!(VOICE_CACHE_BYTES).set(s.bytes as f64);
    gauge!(VOICE_CACHE_BUDGET).set(s.budget as f64);
    counter!(VOICE_CACHE_HITS).absolute(s.hits);
    counter!(VOICE_CACHE_MISSES).absolute(s.misses);
    counter!(VOICE_CACHE_EVICTIONS).absolute(s.evictions);
}

/// The engine decoded `size` requests together; keeps the peak.
pub fn batch_step(size: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    if PEAK.fetch_max(size, Ordering::Relaxed) < size {
        gauge!(PEAK_ACTIVE).set(size as f64);
    }
}
