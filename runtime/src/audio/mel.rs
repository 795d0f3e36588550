//! The speaker encoder's log-mel front end (the reference's `mel_spectrogram`
//! with librosa's Slaney filterbank), computed on the host in float64.

use realfft::RealFftPlanner;

use crate::error::{Error, Result};

/// Mel front end (hard-coded in the reference).
pub const N_FFT: usize = 1024;
pub const HOP: usize = 256;
const FMAX: f64 = 12000.0;
/// Log floor: `ln(max(mel, 1e-5))`.
const MEL_FLOOR: f64 = 1e-5;

/// Slaney mel scale (librosa `hz_to_mel`, htk=False).
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    if f >= 1000.0 {
        min_log_mel + (f / 1000.0).ln() / (6.4f64.ln() / 27.0)
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    if m >= min_log_mel {
        1000.0 * ((m - min_log_mel) * (6.4f64.ln() / 27.0)).exp()
    } else {
        m * f_sp
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax)` with Slaney area
/// normalisation: `[n_mels, n_fft/2 + 1]`, row-major, computed in float64 and
/// rounded to f32 at the same two points as librosa.
pub fn mel_filterbank(sample_rate: u32, n_fft: usize, n_mels: usize, fmax: f64) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_f: Vec<f64> = (0..bins)
        .map(|k| k as f64 * sample_rate as f64 / 2.0 / (bins - 1) as f64)
        .collect();
    let mut w = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_f.iter().enumerate() {
            let lower = (f - mel_f[m]) / (mel_f[m + 1] - mel_f[m]);
            let upper = (mel_f[m + 2] - f) / (mel_f[m + 2] - mel_f[m + 1]);
            let tri = lower.min(upper).max(0.0) as f32;
            w[m * bins + k] = (tri as f64 * enorm) as f32;
        }
    }
    w
}

/// The bins where each filter (a row of `fb`, `bins` long) is not zero.
/// Summing only those gives the full row's sum exactly: the terms left out
/// are `0 · |X| = +0` and the partial sums are never negative. (The dense
/// sum over every bin was most of the front end's time.)
fn filter_support(fb: &[f32], bins: usize) -> Vec<std::ops::Range<usize>> {
    fb.chunks(bins)
        .map(|row| match row.iter().position(|&w| w != 0.0) {
            Some(first) => first..bins - row.iter().rev().position(|&w| w != 0.0).unwrap_or(0),
            None => 0..0,
        })
        .collect()
}

/// One filter's weighted sum of magnitudes, in bin order.
fn filter(weights: &[f32], magnitude: &[f64]) -> f64 {
    weights
        .iter()
        .zip(magnitude)
        .map(|(w, s)| *w as f64 * s)
        .sum()
}

/// The speaker encoder's input: log-mel frames `[T, n_mels]` (row-major)
/// of mono 24 kHz `samples`, T = ⌊N / 256⌋.
pub fn log_mel_spectrogram(samples: &[f32], sample_rate: u32, n_mels: usize) -> Result<Vec<f32>> {
    let pad = (N_FFT - HOP) / 2;
    if samples.len() <= pad {
        return Err(Error::bad_audio(
            "reference audio",
            format!(
                "{} samples is too short for the mel front end (needs > {pad})",
                samples.len()
            ),
        ));
    }
    // Reflect padding without repeating the edge sample.
    let n = samples.len();
    let padded: Vec<f64> = (0..n + 2 * pad)
        .map(|i| {
            let j = i as isize - pad as isize;
            let j = if j < 0 {
                -j
            } else if j >= n as isize {
                2 * (n as isize - 1) - j
            } else {
                j
            };
            samples[j as usize] as f64
        })
        .collect();
    let frames = 1 + (padded.len() - N_FFT) / HOP;
    // Periodic Hann (torch.hann_window). The whole front end runs in f64: the
    // package's f32 result carries FFT rounding noise of up to 6e-4 (in log
    // units) near the log floor, which no other FFT reproduces.
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let bins = N_FFT / 2 + 1;
    let fb = mel_filterbank(sample_rate, N_FFT, n_mels, FMAX);
    let support = filter_support(&fb, bins);
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut magnitude = vec![0f64; bins];
    let mut out = vec![0f32; frames * n_mels];
    for t in 0..frames {
        let frame = &padded[t * HOP..t * HOP + N_FFT];
        for ((x, s), w) in input.iter_mut().zip(frame).zip(&window) {
            *x = s * w;
        }
        fft.process(&mut input, &mut spectrum)
            .expect("buffers made by the FFT plan have its sizes");
        for (m, c) in magnitude.iter_mut().zip(&spectrum) {
            *m = (c.re * c.re + c.im * c.im + 1e-9).sqrt();
        }
        for (m, (row, bins)) in fb.chunks(bins).zip(&support).enumerate() {
            let mel = filter(&row[bins.clone()], &magnitude[bins.clone()]);
            out[t * n_mels + m] = mel.max(MEL_FLOOR).ln() as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each filter summed over its support equals its sum over every bin,
    /// bit for bit, and the support is where the weights are not zero.
    #[test]
    fn filter_support_sums_exactly() {
        let bins = N_FFT / 2 + 1;
        for (rate, n_mels) in [(24_000, 128), (24_000, 80)] {
            let fb = mel_filterbank(rate, N_FFT, n_mels, FMAX);
            let support = filter_support(&fb, bins);
            let mut seed = 7u64;
            let magnitude: Vec<f64> = (0..bins)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 11) as f64 / (1u64 << 53) as f64 * 40.0
                })
                .collect();
            for (row, range) in fb.chunks(bins).zip(&support) {
                assert!(row[..range.start]
                    .iter()
                    .chain(&row[range.end..])
                    .all(|&w| w == 0.0));
                let full = filter(row, &magnitude);
                let sparse = filter(&row[range.clone()], &magnitude[range.clone()]);
                assert_eq!(full, sparse, "{range:?}");
            }
            assert!(
                support.iter().any(|r| r.len() < bins / 4),
                "filters are narrow"
            );
        }
    }
}
