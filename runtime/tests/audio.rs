//! Audio loading and resampling against librosa (the official package loads reference audio with
//! `librosa.load(sr=None, mono=True)` and resamples with `librosa.resample`, soxr HQ; see
//! docs/architecture.md).

use std::path::{Path, PathBuf};

use qwen3_tts::audio;
use qwen3_tts_tests::{fixtures, max_abs_diff, snr_db, Dump};

/// Lowest SNR accepted against librosa's `soxr_hq` output (measured value minus a margin).
const SNR_44K_MIN_DB: f64 = 105.0;

// ---------------------------------------------------------------------------------------------
// Loading

#[test]
fn ref_24k_loads_bit_exact() {
    let path = fixtures().join("audio/ref_24k.wav");
    let a = audio::load(&path).unwrap();
    let want =
        Dump::open(&fixtures().join("reference/codec/encode_ref.safetensors")).f32("input_samples");
    assert_eq!(a.sample_rate, 24000);
    assert_eq!(a.samples.len(), 76916);
    assert_eq!(a.samples.len(), want.len());
    let mismatches = a
        .samples
        .iter()
        .zip(&want)
        .filter(|(g, w)| g.to_bits() != w.to_bits())
        .count();
    assert_eq!(mismatches, 0, "samples differ from librosa's");
    // Already at 24 kHz: loading resampled is the same array.
    let b = audio::load_resampled(&path, 24000).unwrap();
    assert_eq!(b, a);
}

#[test]
fn ref_44k_stereo_resampled_matches_librosa() {
    let path = fixtures().join("audio/ref_44k_stereo.wav");
    let a = audio::load(&path).unwrap();
    assert_eq!(a.sample_rate, 44100);
    assert_eq!(a.samples.len(), 141_334);
    let want =
        Dump::open(&fixtures().join("reference/codec/resample_44k.safetensors")).f32("samples_24k");
    assert_eq!(want.len(), 76917);
    let got = audio::load_resampled(&path, 24000).unwrap();
    assert_eq!(got.sample_rate, 24000);
    assert_eq!(got.samples.len(), want.len());
    let snr = snr_db(&got.samples, &want);
    let max = max_abs_diff(&got.samples, &want);
    eprintln!(
        "44.1 kHz stereo -> 24 kHz vs librosa soxr_hq: SNR {snr:.2} dB, max |diff| {max:.2e}"
    );
    assert!(snr >= SNR_44K_MIN_DB, "SNR {snr:.2} dB");
    // librosa pads soxr's 76 916 samples with one zero.
    assert_eq!(got.samples[76916], 0.0);
}

fn write_wav<S: hound::Sample + Copy>(path: &Path, spec: hound::WavSpec, frames: &[Vec<S>]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for f in frames {
        assert_eq!(f.len(), spec.channels as usize);
        for &s in f {
            w.write_sample(s).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn int_spec(channels: u16, rate: u32, bits: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    }
}

/// A deterministic full-scale test signal: extremes, zero, and a pseudo-random walk.
fn test_ints(n: usize, bits: u32, seed: u64) -> Vec<i32> {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    let mut state = seed;
    let mut v = vec![min as i32, max as i32, 0, -1, 1];
    while v.len() < n {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (state >> 11) as i64;
        v.push((min + r.rem_euclid(max - min + 1)) as i32);
    }
    v.truncate(n);
    v
}

#[test]
fn wav_int_variants_load_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, rate) in [(16u16, 24000u32), (24, 44100), (32, 48000), (16, 8000)] {
        let path = dir.path().join(format!("int{bits}_{rate}.wav"));
        let x = test_ints(1000, bits as u32, bits as u64);
        let frames: Vec<Vec<i32>> = x.iter().map(|&s| vec![s]).collect();
        write_wav(&path, int_spec(1, rate, bits), &frames);
        let a = audio::load(&path).unwrap();
        assert_eq!(a.sample_rate, rate, "{bits}-bit");
        assert_eq!(a.samples.len(), x.len());
        let scale = 1.0 / (1u64 << (bits - 1)) as f64;
        for (i, (&g, &s)) in a.samples.iter().zip(&x).enumerate() {
            let want = (s as f64 * scale) as f32;
            assert_eq!(g.to_bits(), want.to_bits(), "{bits}-bit sample {i}: {s}");
        }
        assert_eq!(a.samples[0], -1.0);
    }
    // 8-bit WAV is unsigned: (u − 128) / 128.
    let path = dir.path().join("int8.wav");
    let x = test_ints(300, 8, 8);
    let frames: Vec<Vec<i8>> = x.iter().map(|&s| vec![s as i8]).collect();
    write_wav(&path, int_spec(1, 16000, 8), &frames);
    let a = audio::load(&path).unwrap();
    let want: Vec<f32> = x.iter().map(|&s| s as f32 / 128.0).collect();
    assert_eq!(a.samples, want);
}

#[test]
fn wav_float_variants_load_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // 32-bit float (hound writes it as WAVE_FORMAT_EXTENSIBLE), values beyond ±1 kept.
    let x: Vec<f32> = (0..777)
        .map(|i| (i as f32 * 0.37).sin() * 1.25 + 1e-7 * i as f32)
        .collect();
    let path = dir.path().join("f32.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22050,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let frames: Vec<Vec<f32>> = x.iter().map(|&s| vec![s]).collect();
    write_wav(&path, spec, &frames);
    let a = audio::load(&path).unwrap();
    assert_eq!(a.sample_rate, 22050);
    assert_eq!(a.samples, x);

    // 64-bit float (plain WAVE_FORMAT_IEEE_FLOAT, written by hand): cast to f32.
    let y: Vec<f64> = (0..333).map(|i| (i as f64 * 0.011).cos() * 0.9).collect();
    let path = dir.path().join("f64.wav");
    let data: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, raw_wav(3, 64, 16000, &data)).unwrap(); // WAVE_FORMAT_IEEE_FLOAT
    let a = audio::load(&path).unwrap();
    assert_eq!(a.sample_rate, 16000);
    let want: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    assert_eq!(a.samples, want);
}

/// A minimal mono RIFF/WAVE file with any format tag (`fmt ` with cbSize 0, `fact`, `data`).
fn raw_wav(tag: u16, bits: u16, rate: u32, data: &[u8]) -> Vec<u8> {
    let block = bits / 8;
    let frames = data.len() as u32 / block as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(4 + 8 + 18 + 8 + 4 + 8 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&18u32.to_le_bytes());
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // channels
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * block as u32).to_le_bytes()); // byte rate
    b.extend_from_slice(&block.to_le_bytes()); // block align
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // cbSize
    b.extend_from_slice(b"fact");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&frames.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn multichannel_wav_is_averaged() {
    let dir = tempfile::tempdir().unwrap();
    // Stereo 16-bit: (L + R) / 2 in f32 is exact.
    let l = test_ints(500, 16, 1);
    let r = test_ints(500, 16, 2);
    let path = dir.path().join("stereo.wav");
    let frames: Vec<Vec<i16>> = l
        .iter()
        .zip(&r)
        .map(|(&a, &b)| vec![a as i16, b as i16])
        .collect();
    write_wav(&path, int_spec(2, 44100, 16), &frames);
    let a = audio::load(&path).unwrap();
    assert_eq!(a.sample_rate, 44100);
    let want: Vec<f32> = l
        .iter()
        .zip(&r)
        .map(|(&a, &b)| (a as f32 / 32768.0 + b as f32 / 32768.0) / 2.0)
        .collect();
    assert_eq!(a.samples, want);

    // Four channels, 24-bit (WAVE_FORMAT_EXTENSIBLE with a channel mask).
    let ch: Vec<Vec<i32>> = (0..4).map(|c| test_ints(200, 24, 10 + c)).collect();
    let path = dir.path().join("quad.wav");
    let frames: Vec<Vec<i32>> = (0..200)
        .map(|i| ch.iter().map(|c| c[i]).collect())
        .collect();
    write_wav(&path, int_spec(4, 48000, 24), &frames);
    let a = audio::load(&path).unwrap();
    let want: Vec<f32> = (0..200)
        .map(|i| {
            let mut s = 0f32;
            for c in &ch {
                s += c[i] as f32 / 8_388_608.0;
            }
            s / 4.0
        })
        .collect();
    assert_eq!(a.samples, want);
}

fn sox() -> Option<PathBuf> {
    let ok = std::process::Command::new("sox")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then(|| PathBuf::from("sox"))
}

#[test]
fn flac_and_ogg_from_sox() {
    let Some(sox) = sox() else {
        eprintln!("sox not on PATH: FLAC/OGG decoding not tested");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wav = fixtures().join("audio/ref_44k_stereo.wav");
    let reference = audio::load(&wav).unwrap();

    // FLAC is lossless: identical to the WAV.
    let flac = dir.path().join("ref.flac");
    let st = std::process::Command::new(&sox)
        .arg(&wav)
        .arg(&flac)
        .status()
        .unwrap();
    assert!(st.success());
    let a = audio::load(&flac).unwrap();
    assert_eq!(a.sample_rate, 44100);
    assert_eq!(a.samples, reference.samples);

    // Probing is by content: the same FLAC under a .wav name still loads.
    let renamed = dir.path().join("actually_flac.wav");
    std::fs::copy(&flac, &renamed).unwrap();
    assert_eq!(audio::load(&renamed).unwrap().samples, reference.samples);

    // OGG/Vorbis is lossy: same rate and length, close waveform.
    let ogg = dir.path().join("ref.ogg");
    let st = std::process::Command::new(&sox)
        .arg(&wav)
        .args(["-C", "8"])
        .arg(&ogg)
        .status()
        .unwrap();
    assert!(st.success());
    let a = audio::load(&ogg).unwrap();
    assert_eq!(a.sample_rate, 44100);
    assert_eq!(a.samples.len(), reference.samples.len());
    let snr = snr_db(&a.samples, &reference.samples);
    eprintln!("OGG/Vorbis (q8) vs WAV: SNR {snr:.1} dB");
    assert!(snr > 15.0, "OGG SNR {snr:.1} dB");
}

fn expect_err(path: &Path, r: qwen3_tts::Result<audio::Audio>, needle: &str) -> String {
    let msg = match r {
        Ok(a) => panic!(
            "{}: loaded {} samples, expected an error",
            path.display(),
            a.samples.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert!(msg.contains(needle), "message lacks '{needle}': {msg}");
    msg
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.wav");
    expect_err(&missing, audio::load(&missing), "No such file");

    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    expect_err(&empty, audio::load(&empty), "empty");

    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "this is not audio, just some text\n".repeat(50)).unwrap();
    expect_err(&text, audio::load(&text), "not a recognised audio file");

    let short_text = dir.path().join("tiny.mp3");
    std::fs::write(&short_text, "hi").unwrap();
    expect_err(
        &short_text,
        audio::load(&short_text),
        "not a recognised audio file",
    );

    expect_err(dir.path(), audio::load(dir.path()), "directory");

    // A real WAV container holding MPEG audio (format tag 0x55): recognised but unsupported.
    let mp3_in_wav = dir.path().join("mp3_in.wav");
    std::fs::write(&mp3_in_wav, raw_wav(0x55, 16, 24000, &[0u8; 64])).unwrap();
    expect_err(&mp3_in_wav, audio::load(&mp3_in_wav), "unsupported");

    // A valid header with no samples.
    let no_samples = dir.path().join("no_samples.wav");
    write_wav::<i16>(&no_samples, int_spec(1, 24000, 16), &[]);
    expect_err(&no_samples, audio::load(&no_samples), "no audio");

    // A truncated WAV (header claims more data than there is) keeps what is there.
    let full = dir.path().join("full.wav");
    let x = test_ints(1000, 16, 5);
    let frames: Vec<Vec<i16>> = x.iter().map(|&s| vec![s as i16]).collect();
    write_wav(&full, int_spec(1, 24000, 16), &frames);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &bytes[..bytes.len() - 600]).unwrap();
    let a = audio::load(&cut).unwrap();
    assert_eq!(a.samples.len(), 700);
    assert_eq!(a.samples[..], audio::load(&full).unwrap().samples[..700]);
}

#[test]
fn length_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 0.1 s is short but loads: the length policy belongs to the caller.
    let short = dir.path().join("short.wav");
    let frames: Vec<Vec<i16>> = (0..2400).map(|i| vec![(i % 100) as i16]).collect();
    write_wav(&short, int_spec(1, 24000, 16), &frames);
    let a = audio::load(&short).unwrap();
    assert_eq!(a.samples.len(), 2400);
    assert!((a.duration_seconds() - 0.1).abs() < 1e-12);

    // 2 s of stereo at 16 kHz against a 1 s limit.
    let long = dir.path().join("long.wav");
    let frames: Vec<Vec<i16>> = (0..32000).map(|i| vec![(i % 7) as i16, 3]).collect();
    write_wav(&long, int_spec(2, 16000, 16), &frames);
    let msg = expect_err(&long, audio::load_with_limit(&long, 1.0), "limit");
    eprintln!("{msg}");
    // The same file as a streamed WAV (sizes 0xFFFFFFFF): the length is unknown up front, so
    // decoding itself must stop at the limit.
    let mut bytes = std::fs::read(&long).unwrap();
    let data = bytes.windows(4).position(|w| w == b"data").unwrap();
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[data + 4..data + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let streamed = dir.path().join("streamed.wav");
    std::fs::write(&streamed, &bytes).unwrap();
    let msg = expect_err(&streamed, audio::load_with_limit(&streamed, 1.0), "limit");
    eprintln!("{msg}");
    assert_eq!(audio::load(&streamed).unwrap(), audio::load(&long).unwrap());
    // Exactly at the limit is accepted.
    assert_eq!(
        audio::load_with_limit(&long, 2.0).unwrap().samples.len(),
        32000
    );
    assert_eq!(audio::load(&long).unwrap().samples.len(), 32000);
    assert_eq!(audio::MAX_SECONDS, 600.0);
}

// ---------------------------------------------------------------------------------------------
// Resampling

#[test]
fn resampled_lengths_are_librosas() {
    // (n, from, to, librosa's length, computed with the oracle venv)
    let cases = [
        (141_334usize, 44100u32, 24000u32, 76917usize),
        (88_200, 44100, 24000, 48001), // f64 rounding in librosa: 48000.000000000004
        (44_101, 44100, 24000, 24001),
        (10, 44100, 24000, 6),
        (32_000, 16000, 24000, 48000),
        (1001, 16000, 24000, 1502),
        (96_001, 48000, 24000, 48001),
        (44_100, 22050, 24000, 48001),
        (12_345, 22050, 24000, 13437),
        (1, 8000, 24000, 3),
    ];
    for (n, from, to, want) in cases {
        assert_eq!(
            audio::resampled_len(n, from, to),
            want,
            "{n} @ {from} -> {to}"
        );
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let y = audio::resample(&x, from, to).unwrap();
        assert_eq!(y.len(), want, "{n} @ {from} -> {to}");
    }
    // Equal rates: a copy. Empty input: empty output.
    let x = vec![0.25f32, -0.5, 1.5];
    assert_eq!(audio::resample(&x, 24000, 24000).unwrap(), x);
    assert!(audio::resample(&[], 44100, 24000).unwrap().is_empty());
    assert!(audio::resample(&x, 0, 24000).is_err());
}

/// SNR of `got` against a sine of `freq` Hz sampled at `rate`, ignoring `edge` samples each end.
fn sine_snr(got: &[f32], freq: f64, rate: u32, amp: f64, edge: usize) -> f64 {
    let want: Vec<f32> = (0..got.len())
        .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as f32)
        .collect();
    let r = edge..got.len() - edge;
    snr_db(&got[r.clone()], &want[r])
}

#[test]
fn resampled_sine_has_no_delay() {
    for (from, to, freq) in [
        (44100u32, 24000u32, 1000.0),
        (16000, 24000, 1000.0),
        (48000, 24000, 3000.0),
        (22050, 24000, 440.0),
        (8000, 24000, 1000.0),
    ] {
        let n = from as usize; // 1 s
        let x: Vec<f32> = (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / from as f64).sin()) as f32
            })
            .collect();
        let y = audio::resample(&x, from, to).unwrap();
        assert_eq!(y.len(), audio::resampled_len(n, from, to));
        let snr = sine_snr(&y, freq, to, 0.5, to as usize / 20);
        eprintln!("{freq} Hz sine {from} -> {to}: SNR {snr:.1} dB");
        assert!(snr >= 100.0, "{from} -> {to}: SNR {snr:.1} dB");
    }
}

#[test]
fn resampler_passes_the_band_and_stops_aliases() {
    let rms =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let sine = |freq: f64, rate: u32| -> Vec<f32> {
        (0..rate as usize)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as f32
            })
            .collect()
    };
    // 10 kHz is inside soxr HQ's passband (0.913 × 12 kHz): kept at full level, in phase.
    let y = audio::resample(&sine(10_000.0, 44100), 44100, 24000).unwrap();
    let snr = sine_snr(&y, 10_000.0, 24000, 0.5, 1200);
    eprintln!("10 kHz sine 44100 -> 24000: SNR {snr:.1} dB");
    assert!(snr >= 100.0, "10 kHz: SNR {snr:.1} dB");
    // 13 kHz cannot exist at 24 kHz; it would alias to 11 kHz. It must be gone.
    let y = audio::resample(&sine(13_000.0, 44100), 44100, 24000).unwrap();
    let atten = 20.0 * (rms(&y[1200..y.len() - 1200]) / (0.5 / 2f64.sqrt())).log10();
    eprintln!("13 kHz sine 44100 -> 24000: {atten:.1} dB");
    assert!(atten <= -120.0, "13 kHz leaks at {atten:.1} dB");
}

#[test]
fn resample_is_deterministic() {
    let x: Vec<f32> = (0..10_000)
        .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
        .collect();
    let a = audio::resample(&x, 44100, 24000).unwrap();
    let b = audio::resample(&x, 44100, 24000).unwrap();
    assert_eq!(a, b);
}
