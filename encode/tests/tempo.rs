//! Tempo change: length follows the speed, pitch does not.

mod common;

use common::*;
use qwen3_tts_encode::{change_tempo, Error, TempoStream};

/// 1 s of 440 Hz.
const N: usize = 24_000;

/// The dominant frequency of the middle of `samples` (edges, where the stretcher fades in and
/// out, left out): half a second, or what there is past 50 ms at each end.
fn pitch(samples: &[f32]) -> f32 {
    let edge = 1200.min(samples.len() / 4);
    let mid = &samples[edge..samples.len() - edge];
    let take = mid.len().min(12_000);
    let start = (mid.len() - take) / 2;
    dominant_frequency(&mid[start..start + take], RATE)
}

fn assert_pitch_440(samples: &[f32], what: &str) {
    let f = pitch(samples);
    assert!(
        (f - 440.0).abs() <= 440.0 * 0.02,
        "{what}: dominant frequency {f} Hz"
    );
}

#[test]
fn length_follows_speed_and_pitch_stays() {
    let input = sine(N, 440.0);
    assert_pitch_440(&input, "input");
    for speed in [0.5f32, 2.0, 4.0, 0.25, 1.3] {
        let out = change_tempo(&input, RATE, speed).unwrap();
        let want = (N as f64 / speed as f64).round() as usize;
        assert_eq!(out.len(), want, "speed {speed}: length");
        assert_pitch_440(&out, &format!("speed {speed}"));
        // Loudness is kept (a vocoder that lost the tone would be near silence).
        let rms = (out.iter().map(|&s| (s * s) as f64).sum::<f64>() / out.len() as f64).sqrt();
        assert!(rms > 0.2, "speed {speed}: rms {rms}");
    }
}

#[test]
fn speed_one_is_identity() {
    let mut input = sine(5000, 440.0);
    input[7] = f32::NAN;
    input[8] = 5.0;
    let out = change_tempo(&input, RATE, 1.0).unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out
        .iter()
        .zip(&input)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    let mut stream = TempoStream::new(RATE, 1.0).unwrap();
    let mut got = Vec::new();
    for chunk in chunked(&input) {
        got.extend(stream.push(chunk));
    }
    got.extend(stream.finish());
    assert!(got
        .iter()
        .zip(&input)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(got.len(), input.len());
}

#[test]
fn out_of_range_speed_is_an_error() {
    for speed in [0.0f32, 0.24, 4.01, -1.0, f32::NAN, f32::INFINITY] {
        let err = change_tempo(&[0.0; 100], RATE, speed).unwrap_err();
        assert!(matches!(err, Error::Speed { .. }), "speed {speed}");
        let msg = err.to_string();
        assert!(
            msg.contains("speed") && msg.contains("0.25") && msg.contains('4'),
            "{msg}"
        );
        assert!(TempoStream::new(RATE, speed).is_err());
    }
    assert!(change_tempo(&[0.0; 100], 0, 2.0).is_err());
}

#[test]
fn short_empty_and_bad_input() {
    assert!(change_tempo(&[], RATE, 2.0).unwrap().is_empty());
    for n in [1usize, 10, 100, 1000] {
        for speed in [0.25f32, 4.0] {
            let out = change_tempo(&sine(n, 440.0), RATE, speed).unwrap();
            assert_eq!(
                out.len(),
                (n as f64 / speed as f64).round() as usize,
                "{n} at {speed}"
            );
        }
    }
    let mut input = sine(4800, 440.0);
    input[100] = f32::NAN;
    input[200] = f32::INFINITY;
    let out = change_tempo(&input, RATE, 2.0).unwrap();
    assert!(out.iter().all(|s| s.is_finite()));
}

/// RMS of consecutive 10 ms windows.
fn envelope(samples: &[f32]) -> Vec<f32> {
    samples
        .chunks(240)
        .map(|w| (w.iter().map(|&s| s * s).sum::<f32>() / w.len() as f32).sqrt())
        .collect()
}

#[test]
fn stream_matches_length_pitch_and_timing() {
    let input = sine(N, 440.0);
    // 0.3 s of silence, then the tone: where it starts in the output shows the stream is
    // aligned like the whole-buffer stretch (the stretcher's latency compensated).
    let mut gated = vec![0.0; 7200];
    gated.extend_from_slice(&input[7200..]);
    for speed in [0.5f32, 2.0, 4.0, 0.25] {
        let want = (N as f64 / speed as f64).round() as usize;
        for (signal, what) in [(&input, "sine"), (&gated, "gated sine")] {
            let mut stream = TempoStream::new(RATE, speed).unwrap();
            let mut out = Vec::new();
            let mut before_finish = 0;
            for chunk in chunked(signal) {
                out.extend(stream.push(chunk));
                before_finish = out.len();
            }
            out.extend(stream.finish());
            assert_eq!(out.len(), want, "{what} at {speed}: stream length");
            assert!(
                before_finish > want / 2,
                "{what} at {speed}: streams ({before_finish} of {want} before finish)"
            );
            assert!(out.iter().all(|s| s.is_finite()));
            let whole = change_tempo(signal, RATE, speed).unwrap();
            let (env_s, env_w) = (envelope(&out), envelope(&whole));
            if signal == &input {
                assert_pitch_440(&out, &format!("stream at {speed}"));
                // Up to 2x slower the stretcher is deterministic and the stream's block
                // boundaries change nothing; slower than that it randomises phases (seeded from
                // the OS), so only loudness is compared: no 10 ms window of the steady part
                // may drop out.
                let steady = 5..env_s.len() - 5;
                if speed < 0.5 {
                    let quiet = env_s[steady].iter().filter(|&&r| r < 0.01).count();
                    assert_eq!(quiet, 0, "{what} at {speed}: {quiet} silent windows");
                    continue;
                }
                for i in steady {
                    let db = 20.0 * (env_s[i] / env_w[i].max(1e-6)).log10();
                    assert!(
                        db.abs() < 3.0,
                        "{what} at {speed}: window {i} differs by {db:.1} dB"
                    );
                }
            } else {
                let onset = |env: &[f32]| env.iter().position(|&r| r > 0.175).unwrap();
                let (a, b) = (onset(&env_s), onset(&env_w));
                // The onset spreads with the stretch (and below 0.5 the phases are random):
                // allow 20 ms of input, in output windows.
                let tol = (2.0 / speed).ceil().max(2.0) as usize;
                assert!(
                    a.abs_diff(b) <= tol,
                    "{what} at {speed}: tone starts at window {a} streamed, {b} whole"
                );
                let expected = (30.0 / speed).round() as usize;
                assert!(
                    b.abs_diff(expected) <= tol + 1,
                    "{what} at {speed}: tone starts at window {b}, expected about {expected}"
                );
            }
        }
    }
}

#[test]
fn short_streams() {
    for n in [0usize, 1, 500, 3000] {
        let input = sine(n, 440.0);
        let mut stream = TempoStream::new(RATE, 2.0).unwrap();
        let mut out = stream.push(&input);
        out.extend(stream.finish());
        assert_eq!(out.len(), (n as f64 / 2.0).round() as usize, "{n} samples");
    }
}

/// The server moves streams into its worker threads.
#[test]
fn streams_are_send() {
    fn send<T: Send>(_: &T) {}
    send(&TempoStream::new(RATE, 2.0).unwrap());
    send(&qwen3_tts_encode::encoder(qwen3_tts_encode::AudioFormat::Wav, RATE).unwrap());
}
