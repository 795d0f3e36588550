//! Tempo change without pitch change, for the speech API's `speed`, with Signalsmith Stretch
//! (a phase vocoder; the `signalsmith-stretch` crate compiles its C++ header library with cc).
//!
//! [`change_tempo`] stretches a whole buffer with the library's `exact` mode, which aligns the
//! output with the input and returns exactly `round(n / speed)` samples. [`TempoStream`] does the
//! same work chunk by chunk (the library is a streaming one; `exact` is pre-roll + process +
//! flush, done here across calls), so a streamed response can be sped up as it is produced, at
//! the cost of the stretcher's latency: at 24 kHz the first output comes once about 0.1 s of
//! input has arrived at speed 0.25–0.5, 0.32 s at 2.0 and 0.55 s at 4.0 (the pre-roll, plus
//! enough input for twice the output latency, which `exact`'s start correction needs).
//!
//! From 0.5 to 4.0 the result is deterministic and the stream's output is the same as
//! [`change_tempo`]'s. Slower than 0.5 (more than 2× longer) Signalsmith Stretch randomises
//! phases, seeded from the OS, so two runs differ slightly (same length, pitch and loudness).

use signalsmith_stretch::Stretch;

use crate::{Error, Result};

/// Slowest `speed` the API accepts.
pub const MIN_SPEED: f32 = 0.25;
/// Fastest `speed` the API accepts.
pub const MAX_SPEED: f32 = 4.0;

/// Input fed to the stretcher per call once streaming: small enough for low latency, large
/// enough that even at 4× every call produces output.
const BLOCK: usize = 512;

fn check(sample_rate: u32, speed: f32) -> Result<()> {
    // NaN fails both comparisons, so it is refused too.
    if !(MIN_SPEED..=MAX_SPEED).contains(&speed) {
        return Err(Error::Speed { speed });
    }
    if !(1000..=384_000).contains(&sample_rate) {
        return Err(Error::TempoSampleRate { rate: sample_rate });
    }
    Ok(())
}

/// The output length for `n` input samples: `round(n / speed)`.
fn out_len(n: usize, speed: f64) -> usize {
    (n as f64 / speed).round() as usize
}

/// The stretcher wants finite input; NaN and ±inf would spread through its FFTs.
fn finite(s: f32) -> f32 {
    if s.is_finite() {
        s
    } else {
        0.0
    }
}

/// Changes the tempo of mono `samples` by `speed` (2.0 = twice as fast) keeping the pitch.
///
/// The result has `round(len / speed)` samples; `speed == 1.0` returns the input unchanged.
/// `speed` must be within [`MIN_SPEED`]..=[`MAX_SPEED`].
pub fn change_tempo(samples: &[f32], sample_rate: u32, speed: f32) -> Result<Vec<f32>> {
    check(sample_rate, speed)?;
    if speed == 1.0 {
        return Ok(samples.to_vec());
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let speed = f64::from(speed);
    let want = out_len(samples.len(), speed);
    let mut stretch = Stretch::preset_default(1, sample_rate);
    // `exact` needs at least two output latencies of output; a shorter input is padded with
    // silence (same ratio) and the output cut back to length.
    let min_out = 2 * stretch.output_latency() + 1;
    let mut input: Vec<f32> = samples.iter().map(|&s| finite(s)).collect();
    if want < min_out {
        input.resize((min_out as f64 * speed).ceil() as usize, 0.0);
    }
    let mut output = vec![0.0; out_len(input.len(), speed).max(min_out)];
    if !stretch.exact(&input, &mut output) {
        return Err(Error::Stretch("the output is too short for the stretcher"));
    }
    output.truncate(want);
    output.resize(want, 0.0);
    Ok(output)
}

/// [`change_tempo`] for a stream: push chunks as they come, then [`finish`](Self::finish).
///
/// The concatenated outputs have `round(total / speed)` samples and match [`change_tempo`] of
/// the whole input up to the stretcher's block boundaries. At `speed == 1.0` chunks pass through
/// unchanged.
pub struct TempoStream {
    state: State,
}

enum State {
    /// speed 1: no stretcher, no latency.
    Identity,
    Stretching(Box<Inner>),
}

struct Inner {
    stretch: Stretch,
    sample_rate: u32,
    speed: f64,
    input_latency: usize,
    output_latency: usize,
    /// Input not yet handed to the stretcher.
    pending: Vec<f32>,
    /// Input samples handed to `process` so far, and output samples it made for them.
    processed_in: u64,
    processed_out: u64,
    /// The first `2 · output_latency` outputs, held back until complete (then folded).
    head: Option<Vec<f32>>,
    /// Whether the stretcher has been pre-rolled. Before that, input is only collected: enough
    /// for the pre-roll and for an output at least twice the output latency, so the start can
    /// be folded as `exact` does.
    started: bool,
}

impl TempoStream {
    /// A stream at `speed` (checked as in [`change_tempo`]).
    pub fn new(sample_rate: u32, speed: f32) -> Result<Self> {
        check(sample_rate, speed)?;
        if speed == 1.0 {
            return Ok(TempoStream {
                state: State::Identity,
            });
        }
        let stretch = Stretch::preset_default(1, sample_rate);
        let inner = Inner {
            input_latency: stretch.input_latency(),
            output_latency: stretch.output_latency(),
            stretch,
            sample_rate,
            speed: f64::from(speed),
            pending: Vec::new(),
            processed_in: 0,
            processed_out: 0,
            head: Some(Vec::new()),
            started: false,
        };
        Ok(TempoStream {
            state: State::Stretching(Box::new(inner)),
        })
    }

    /// Stretches `samples`, returning the output that is ready (none while the stretcher is
    /// still filling up).
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        let inner = match &mut self.state {
            State::Identity => return samples.to_vec(),
            State::Stretching(inner) => inner,
        };
        inner.pending.extend(samples.iter().map(|&s| finite(s)));
        if !inner.started {
            if inner.pending.len() < inner.start_threshold() {
                return Vec::new();
            }
            inner.start();
        }
        inner.run(false)
    }

    /// The rest of the output.
    pub fn finish(self) -> Vec<f32> {
        let mut inner = match self.state {
            State::Identity => return Vec::new(),
            State::Stretching(inner) => inner,
        };
        if !inner.started {
            // Too short to have started: stretch it whole (empty when nothing was pushed).
            return change_tempo(&inner.pending, inner.sample_rate, inner.speed as f32)
                .unwrap_or_default();
        }
        // `exact` feeds input_latency samples of silence after the input so the centre of the
        // stretcher reaches the last sample, then flushes.
        let zeros = inner.input_latency;
        inner.pending.resize(inner.pending.len() + zeros, 0.0);
        let mut out = inner.run(true);
        let mut tail = vec![0.0; inner.output_latency];
        inner.stretch.flush(&mut tail);
        out.extend_from_slice(&tail);
        out
    }
}

impl Inner {
    /// Input needed before starting: the pre-roll plus enough for `2 · output_latency` outputs.
    fn start_threshold(&self) -> usize {
        self.input_latency + (2.0 * self.output_latency as f64 * self.speed).ceil() as usize + 1
    }

    /// Pre-rolls the stretcher with the first `input_latency` samples, as `exact` does, so the
    /// output starts aligned with the input. Those samples are then processed as usual.
    fn start(&mut self) {
        let preroll = &self.pending[..self.input_latency];
        self.stretch.seek(preroll, self.speed);
        self.pending.drain(..self.input_latency);
        self.started = true;
    }

    /// Processes `pending` in blocks (all of it when `last`), returning finished output.
    fn run(&mut self, last: bool) -> Vec<f32> {
        let mut out = Vec::new();
        while self.pending.len() >= BLOCK || (last && !self.pending.is_empty()) {
            let take = if self.pending.len() >= BLOCK && !last {
                BLOCK
            } else {
                self.pending.len()
            };
            self.processed_in += take as u64;
            // Output counts follow the running total, so rounding never drifts.
            let target = (self.processed_in as f64 / self.speed).round() as u64;
            let n_out = (target - self.processed_out) as usize;
            self.processed_out = target;
            let mut chunk = vec![0.0; n_out];
            self.stretch.process(&self.pending[..take], &mut chunk);
            self.pending.drain(..take);
            self.emit(chunk, &mut out);
        }
        out
    }

    /// Passes output on, except the first `2 · output_latency` samples, which are held until
    /// complete and then folded like `exact`'s start: the first `output_latency` samples (before
    /// the input's start) are subtracted, time-reversed, from the next ones and dropped.
    fn emit(&mut self, chunk: Vec<f32>, out: &mut Vec<f32>) {
        let Some(head) = &mut self.head else {
            out.extend_from_slice(&chunk);
            return;
        };
        head.extend_from_slice(&chunk);
        let l = self.output_latency;
        if head.len() < 2 * l {
            return;
        }
        for i in 0..l {
            head[i + l] -= head[l - 1 - i];
        }
        out.extend_from_slice(&head[l..]);
        self.head = None;
    }
}
