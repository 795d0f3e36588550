//! Helpers shared by the encoder and tempo tests.
#![allow(dead_code)]

use std::f32::consts::PI;

pub const RATE: u32 = 24_000;

/// A 440 Hz sine at amplitude 0.5 with a slow (1.5 Hz) amplitude swing between 0.2 and 0.8 of
/// it: still one tone, but the envelope gives cross-correlation a single clear peak, so the
/// codecs' start delays can be measured rather than guessed.
pub fn tone(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let env = 0.5 + 0.3 * (2.0 * PI * 1.5 * t).sin();
            0.5 * env * (2.0 * PI * 440.0 * t).sin()
        })
        .collect()
}

/// A plain 440 Hz sine at amplitude 0.5.
pub fn sine(n: usize, freq: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.5 * (2.0 * PI * freq * i as f32 / RATE as f32).sin())
        .collect()
}

/// Uneven chunk sizes, cycled: single samples, odd sizes, more than a second at once.
pub const CHUNKS: [usize; 8] = [1, 4000, 7, 24000, 0, 333, 2, 1151];

/// Splits `samples` into [`CHUNKS`]-sized pieces (the last one shorter).
pub fn chunked(samples: &[f32]) -> Vec<&[f32]> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &c in CHUNKS.iter().cycle() {
        if pos >= samples.len() {
            break;
        }
        let end = (pos + c).min(samples.len());
        out.push(&samples[pos..end]);
        pos = end;
    }
    out
}

/// The s16 value the encoders must store for `s` (round after clamping and scaling by 32767),
/// written out independently of the crate.
pub fn expected_s16(s: f32) -> i16 {
    if s.is_nan() {
        return 0;
    }
    let v = (s.clamp(-1.0, 1.0) * 32767.0).round();
    v as i16
}

/// The lag (0..=max_lag) at which `decoded[lag..]` best matches `reference`, by normalised
/// cross-correlation.
pub fn best_lag(reference: &[f32], decoded: &[f32], max_lag: usize) -> usize {
    let mut best = (f64::MIN, 0);
    for lag in 0..=max_lag.min(decoded.len()) {
        let n = reference.len().min(decoded.len() - lag);
        if n == 0 {
            break;
        }
        let (mut xy, mut yy) = (0.0f64, 0.0f64);
        for i in 0..n {
            let (x, y) = (reference[i] as f64, decoded[lag + i] as f64);
            xy += x * y;
            yy += y * y;
        }
        let score = xy / yy.sqrt().max(1e-12);
        if score > best.0 {
            best = (score, lag);
        }
    }
    best.1
}

/// SNR in dB of `decoded[lag..]` against `reference`, leaving out the first and last `edge`
/// samples (where codecs fade in and out).
pub fn snr_db(reference: &[f32], decoded: &[f32], lag: usize, edge: usize) -> f64 {
    let n = reference.len().min(decoded.len().saturating_sub(lag));
    assert!(
        n > 2 * edge,
        "decoded audio too short for an SNR ({n} samples)"
    );
    let (mut sig, mut noise) = (0.0f64, 0.0f64);
    for i in edge..n - edge {
        let (x, y) = (reference[i] as f64, decoded[lag + i] as f64);
        sig += x * x;
        noise += (x - y) * (x - y);
    }
    10.0 * (sig / noise.max(1e-20)).log10()
}

/// The strongest frequency in `samples` (Hz), from a Hann-windowed DFT scanned in 1 Hz steps
/// between 50 and 2000 Hz, then refined to 0.1 Hz around the peak.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f32 {
    let n = samples.len();
    let windowed: Vec<f64> = samples
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
            s as f64 * w
        })
        .collect();
    // Goertzel: the DFT's power at one frequency, one multiply-add per sample.
    let power = |f: f64| {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * f / rate as f64).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in &windowed {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    };
    let coarse = (50..=2000)
        .map(|f| (f as f64, power(f as f64)))
        .fold((0.0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
        .0;
    let fine = (-10..=10)
        .map(|d| coarse + d as f64 * 0.1)
        .map(|f| (f, power(f)))
        .fold((0.0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
        .0;
    fine as f32
}
