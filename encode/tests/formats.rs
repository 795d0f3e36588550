//! Every available format: 1.3 s of a 440 Hz tone pushed in uneven chunks, decoded back with an
//! independent decoder (symphonia; libopus's decoder for Opus, symphonia has none), checked for
//! rate, channels, length and content. With `ffmpeg` on PATH each file is also decoded by it.

mod common;

use std::io::Cursor;

use common::*;
use qwen3_tts_encode::{available_formats, encoder, AudioFormat, Error};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia_codec_aac::{AacDecoder, AdtsReader};

/// 1.3 s at 24 kHz.
const N: usize = 31_200;

/// Encodes `samples` pushed in [`CHUNKS`]; also returns how many bytes came out before
/// `finish` (to check the format streams).
fn encode(format: AudioFormat, samples: &[f32]) -> (Vec<u8>, usize) {
    let mut enc = encoder(format, RATE).unwrap();
    let mut out = Vec::new();
    for chunk in chunked(samples) {
        out.extend(enc.push(chunk).unwrap());
    }
    let before_finish = out.len();
    out.extend(enc.finish().unwrap());
    (out, before_finish)
}

struct Decoded {
    rate: u32,
    channels: usize,
    samples: Vec<f32>,
    /// The same samples as s16 (exact for PCM-based formats).
    s16: Vec<i16>,
}

/// Decodes with symphonia, probing by content (the extension is only a hint).
fn symphonia_decode(bytes: Vec<u8>, ext: &str) -> Decoded {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ext);
    let mut probe = Probe::new();
    symphonia::default::register_enabled_formats(&mut probe);
    probe.register_format::<AdtsReader<'_>>();
    let mut codecs = CodecRegistry::new();
    symphonia::default::register_enabled_codecs(&mut codecs);
    codecs.register_audio_decoder::<AacDecoder>();
    let mut format = probe
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{ext}: symphonia cannot probe the stream: {e}"));
    let track = format.first_track(TrackType::Audio).expect("audio track");
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let mut decoder = codecs
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .unwrap();
    let (mut rate, mut channels) = (params.sample_rate.unwrap_or(0), 0);
    let (mut samples, mut s16) = (Vec::new(), Vec::new());
    let (mut planes_f, mut planes_i) = (Vec::<Vec<f32>>::new(), Vec::<Vec<i16>>::new());
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // An open-ended WAV simply ends.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{ext}: reading packets: {e}"),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder
            .decode(&packet)
            .unwrap_or_else(|e| panic!("{ext}: decoding: {e}"));
        rate = buf.spec().rate();
        channels = buf.spec().channels().count();
        buf.copy_to_vecs_planar::<f32>(&mut planes_f);
        buf.copy_to_vecs_planar::<i16>(&mut planes_i);
        samples.extend_from_slice(&planes_f[0][..buf.frames()]);
        s16.extend_from_slice(&planes_i[0][..buf.frames()]);
    }
    Decoded {
        rate,
        channels,
        samples,
        s16,
    }
}

/// Lossless formats: exactly the input's s16 values, nothing more.
fn check_lossless(format: AudioFormat, decoded: &Decoded, input: &[f32]) {
    assert_eq!(decoded.rate, RATE, "{format}: sample rate");
    assert_eq!(decoded.channels, 1, "{format}: channels");
    assert_eq!(decoded.s16.len(), input.len(), "{format}: decoded length");
    let want: Vec<i16> = input.iter().map(|&s| expected_s16(s)).collect();
    assert!(decoded.s16 == want, "{format}: decoded samples differ");
}

/// Lossy formats: the decoded audio, shifted by the codec's start delay (found by
/// cross-correlation, at most `max_delay`), has an SNR over 10 dB against the input (20 ms at
/// each end left out). Returns the delay.
fn check_lossy(format: AudioFormat, decoded: &Decoded, input: &[f32], max_delay: usize) -> usize {
    assert_eq!(decoded.rate, RATE, "{format}: sample rate");
    assert_eq!(decoded.channels, 1, "{format}: channels");
    let lag = best_lag(input, &decoded.samples, max_delay);
    let snr = snr_db(input, &decoded.samples, lag, 480);
    assert!(snr > 10.0, "{format}: SNR {snr:.1} dB");
    eprintln!(
        "{format}: delay {lag}, decoded {} for {} in, SNR {snr:.1} dB",
        decoded.samples.len(),
        input.len()
    );
    lag
}

/// A codec without length signalling decodes the start delay, every input sample, then at
/// most `max_padding` samples of end padding (its frame granularity).
fn check_padded_length(
    format: AudioFormat,
    decoded: &Decoded,
    n: usize,
    lag: usize,
    max_padding: usize,
) {
    let len = decoded.samples.len();
    assert!(
        len >= n + lag && len <= n + lag + max_padding,
        "{format}: decoded {len} samples for {n} in (delay {lag}, padding allowed {max_padding})"
    );
}

fn available(format: AudioFormat) -> bool {
    if available_formats().contains(&format) {
        true
    } else {
        eprintln!("{format}: not compiled in, skipped");
        false
    }
}

#[test]
fn wav_streams_open_ended_and_decodes_exactly() {
    let input = tone(N);
    let (bytes, before_finish) = encode(AudioFormat::Wav, &input);
    assert_eq!(before_finish, bytes.len(), "wav is complete before finish");
    assert_eq!(bytes.len(), 44 + 2 * N);
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[4..8], &[0xFF; 4], "open-ended RIFF size");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), RATE);
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(&bytes[40..44], &[0xFF; 4], "open-ended data size");
    let decoded = symphonia_decode(bytes.clone(), "wav");
    check_lossless(AudioFormat::Wav, &decoded, &input);
    ffmpeg_check(AudioFormat::Wav, &bytes, N, 0);
}

#[test]
fn pcm_is_raw_s16le() {
    let input = tone(N);
    let (bytes, before_finish) = encode(AudioFormat::Pcm, &input);
    assert_eq!(before_finish, bytes.len());
    let s16: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let want: Vec<i16> = input.iter().map(|&s| expected_s16(s)).collect();
    assert_eq!(s16, want);
}

#[test]
fn flac_streams_and_decodes_exactly() {
    if !available(AudioFormat::Flac) {
        return;
    }
    let input = tone(N);
    let (bytes, before_finish) = encode(AudioFormat::Flac, &input);
    // All complete 2048-sample blocks are out before finish; only the last partial one is left.
    assert!(
        before_finish > bytes.len() / 2,
        "flac streams: {before_finish} of {}",
        bytes.len()
    );
    assert_eq!(&bytes[0..4], b"fLaC");
    let decoded = symphonia_decode(bytes.clone(), "flac");
    check_lossless(AudioFormat::Flac, &decoded, &input);
    ffmpeg_check(AudioFormat::Flac, &bytes, N, 0);
}

#[test]
fn mp3_streams_and_decodes() {
    if !available(AudioFormat::Mp3) {
        return;
    }
    let input = tone(N);
    let (bytes, before_finish) = encode(AudioFormat::Mp3, &input);
    assert!(
        before_finish > bytes.len() / 2,
        "mp3 streams: {before_finish} of {}",
        bytes.len()
    );
    // MPEG-2 layer III frame sync, 24 kHz, mono, no ID3/Xing in front.
    assert_eq!(bytes[0], 0xFF);
    assert_eq!(bytes[1] & 0xFE, 0xF2, "MPEG-2 layer III sync");
    let decoded = symphonia_decode(bytes.clone(), "mp3");
    // LAME's start delay (576 + decoder delay 529) and up to two 576-sample frames of padding.
    let lag = check_lossy(AudioFormat::Mp3, &decoded, &input, 2 * 1152);
    check_padded_length(AudioFormat::Mp3, &decoded, N, lag, 2 * 576);
    ffmpeg_check(AudioFormat::Mp3, &bytes, N, 2 * 1152 + 2 * 576);
}

#[test]
fn aac_streams_as_adts_and_decodes() {
    if !available(AudioFormat::Aac) {
        return;
    }
    let input = tone(N);
    let (bytes, before_finish) = encode(AudioFormat::Aac, &input);
    assert!(
        before_finish > bytes.len() / 2,
        "aac streams: {before_finish} of {}",
        bytes.len()
    );
    // ADTS sync word, MPEG-4, no CRC; profile LC; sampling index 6 = 24 kHz; one channel.
    assert_eq!(bytes[0], 0xFF);
    assert_eq!(bytes[1] & 0xF6, 0xF0, "ADTS sync");
    assert_eq!(bytes[2] >> 6, 1, "AAC LC");
    assert_eq!((bytes[2] >> 2) & 0x0F, 6, "24 kHz");
    assert_eq!(((bytes[2] & 1) << 2) | (bytes[3] >> 6), 1, "mono");
    let decoded = symphonia_decode(bytes.clone(), "aac");
    // FDK's delay (about 2 frames) and up to two 1024-sample frames of end padding.
    let lag = check_lossy(AudioFormat::Aac, &decoded, &input, 4 * 1024);
    check_padded_length(AudioFormat::Aac, &decoded, N, lag, 2 * 1024);
    ffmpeg_check(AudioFormat::Aac, &bytes, N, 6 * 1024);
}

#[cfg(feature = "opus")]
mod ogg_opus {
    use super::*;
    use ogg::reading::PacketReader;

    /// Decodes an Ogg Opus stream as RFC 7845 says: pre-skip dropped at the start, the
    /// last granule position trimming the end. Returns (decoded, pre-skip, page granules).
    fn decode(bytes: &[u8]) -> (Decoded, usize, Vec<u64>) {
        let mut reader = PacketReader::new(Cursor::new(bytes.to_vec()));
        let head = reader.read_packet_expected().unwrap();
        assert!(
            head.first_in_stream() && head.last_in_page(),
            "OpusHead alone on page 0"
        );
        let h = &head.data;
        assert_eq!(&h[0..8], b"OpusHead");
        assert_eq!(h.len(), 19);
        assert_eq!(h[8], 1, "version");
        assert_eq!(h[9], 1, "channels");
        let pre_skip = u16::from_le_bytes([h[10], h[11]]) as usize;
        let input_rate = u32::from_le_bytes(h[12..16].try_into().unwrap());
        assert_eq!(input_rate, RATE);
        assert_eq!(h[18], 0, "mapping family 0");
        let tags = reader.read_packet_expected().unwrap();
        assert!(tags.last_in_page(), "OpusTags ends its page");
        assert_eq!(&tags.data[0..8], b"OpusTags");

        // Decoded at 24 kHz: granules and pre-skip count 48 kHz samples, so halve them.
        let mut dec24 = opus::Decoder::new(RATE, opus::Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut granules = Vec::new();
        let mut last_granule = 0;
        let mut buf = vec![0f32; 5760];
        let mut saw_end = false;
        while let Some(p) = reader.read_packet().unwrap() {
            assert!(!saw_end, "packet after end of stream");
            let n = dec24.decode_float(&p.data, &mut buf, false).unwrap();
            assert_eq!(n, 480, "20 ms packets");
            pcm.extend_from_slice(&buf[..n]);
            if p.last_in_page() {
                granules.push(p.absgp_page());
            }
            last_granule = p.absgp_page();
            saw_end = p.last_in_stream();
        }
        assert!(saw_end, "end-of-stream flag on the last page");
        assert!(
            last_granule as usize >= pre_skip,
            "end granule {last_granule} < pre-skip {pre_skip}"
        );
        let total = (last_granule as usize - pre_skip) / 2;
        let skip = pre_skip / 2;
        assert!(pcm.len() >= skip + total, "packets cover the end granule");
        let samples = pcm[skip..skip + total].to_vec();
        let s16 = samples.iter().map(|&s| expected_s16(s)).collect();
        (
            Decoded {
                rate: RATE,
                channels: 1,
                samples,
                s16,
            },
            pre_skip,
            granules,
        )
    }

    #[test]
    fn opus_streams_in_ogg_and_decodes_to_the_exact_length() {
        if !available(AudioFormat::Opus) {
            return;
        }
        let input = tone(N);
        let (bytes, before_finish) = encode(AudioFormat::Opus, &input);
        assert!(
            before_finish > bytes.len() / 2,
            "opus streams: {before_finish} of {}",
            bytes.len()
        );
        let (decoded, pre_skip, granules) = decode(&bytes);
        assert!(pre_skip > 0 && pre_skip < 960, "pre-skip {pre_skip}");
        assert!(
            granules.windows(2).all(|w| w[0] <= w[1]),
            "granules rise: {granules:?}"
        );
        // Pre-skip and end trimming give back exactly the input length (libopus's decoder
        // delay is what the pre-skip removes; the lag search allows a few samples either way).
        assert_eq!(decoded.samples.len(), N, "decoded length");
        let lag = check_lossy(AudioFormat::Opus, &decoded, &input, 64);
        assert!(lag <= 8, "opus decoded audio is aligned (lag {lag})");
        ffmpeg_check(AudioFormat::Opus, &bytes, N, 0);
    }

    #[test]
    fn opus_empty_and_tiny_streams_are_valid() {
        for n in [0usize, 1, 479, 480, 481] {
            let input = tone(n);
            let (bytes, _) = encode(AudioFormat::Opus, &input);
            let (decoded, _, _) = decode(&bytes);
            assert_eq!(decoded.samples.len(), n, "{n} samples in");
        }
    }
}

/// Short and empty inputs still make valid files of the right length.
#[test]
fn empty_and_tiny_lossless_streams() {
    for format in [AudioFormat::Wav, AudioFormat::Flac] {
        if !available(format) {
            continue;
        }
        for n in [0usize, 1, 5, 31, 2047, 2048, 2049] {
            let input = tone(n);
            let (bytes, _) = encode(format, &input);
            if n == 0 && format == AudioFormat::Flac {
                // No frames at all: just the header, which symphonia needs frames to probe.
                assert_eq!(&bytes[0..4], b"fLaC");
                assert_eq!(bytes.len(), 4 + 4 + 34);
                continue;
            }
            let decoded = symphonia_decode(bytes, format.extension());
            if n == 0 {
                assert!(decoded.s16.is_empty());
                continue;
            }
            check_lossless(format, &decoded, &input);
        }
    }
}

/// An encoder finished without any push still produces a (header-only or silent) stream, and
/// the header comes out of the first push even when it is empty.
#[test]
fn header_on_first_push_and_finish_without_push() {
    for format in available_formats() {
        let mut enc = encoder(format, RATE).unwrap();
        let first = enc.push(&[]).unwrap();
        let expect_header = !matches!(
            format,
            AudioFormat::Pcm | AudioFormat::Mp3 | AudioFormat::Aac
        );
        assert_eq!(
            !first.is_empty(),
            expect_header,
            "{format}: header on the first push"
        );
        enc.finish().unwrap();
        encoder(format, RATE).unwrap().finish().unwrap();
    }
}

/// NaN, ±inf and out-of-range samples neither fail nor panic; NaN is silence, the rest clamp.
#[test]
fn bad_samples_are_clamped() {
    let bad = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0,
        -3.0,
        1.0,
        -1.0,
        0.0,
    ];
    for format in available_formats() {
        let mut enc = encoder(format, RATE).unwrap();
        let mut input = bad.repeat(600);
        input.extend(tone(2000));
        for chunk in chunked(&input) {
            enc.push(chunk).unwrap();
        }
        enc.finish().unwrap();
    }
    let mut enc = encoder(AudioFormat::Pcm, RATE).unwrap();
    let bytes = enc.push(&bad).unwrap();
    let s16: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(s16, [0, 32767, -32767, 32767, -32767, 32767, -32767, 0]);
}

#[test]
fn format_names_and_types() {
    for &f in AudioFormat::ALL {
        assert_eq!(f.as_str().parse::<AudioFormat>().unwrap(), f);
        assert_eq!(f.to_string(), f.as_str());
        assert!(f.content_type().starts_with("audio/"));
        assert!(!f.extension().is_empty());
    }
    assert_eq!(AudioFormat::Mp3.content_type(), "audio/mpeg");
    assert_eq!(AudioFormat::Wav.content_type(), "audio/wav");
    let err = "MP3".parse::<AudioFormat>().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownFormat { .. }));
    for name in ["mp3", "opus", "aac", "flac", "wav", "pcm"] {
        assert!(msg.contains(name), "{msg}");
    }
    assert!(available_formats().contains(&AudioFormat::Wav));
    assert!(available_formats().contains(&AudioFormat::Pcm));
}

/// A format left out of the build (`--no-default-features`) is a clear error naming what is
/// there.
#[test]
fn unavailable_formats_say_what_is_available() {
    for &format in AudioFormat::ALL {
        if available_formats().contains(&format) {
            assert!(encoder(format, RATE).is_ok(), "{format}");
            continue;
        }
        let err = encoder(format, RATE).err().unwrap();
        let msg = err.to_string();
        match err {
            Error::Unavailable {
                format: f,
                available,
            } => {
                assert_eq!(f, format);
                assert_eq!(available, available_formats());
            }
            e => panic!("{format}: {e}"),
        }
        assert!(
            msg.contains(format.as_str()) && msg.contains("wav, pcm"),
            "{msg}"
        );
    }
}

#[test]
fn unsupported_sample_rates_are_errors() {
    for format in available_formats() {
        assert!(matches!(encoder(format, 0), Err(Error::SampleRate { .. })));
    }
    if available(AudioFormat::Opus) {
        let err = encoder(AudioFormat::Opus, 44_100).err().unwrap();
        assert!(err.to_string().contains("44100"), "{err}");
    }
    if available(AudioFormat::Mp3) {
        assert!(matches!(
            encoder(AudioFormat::Mp3, 23_000),
            Err(Error::SampleRate { .. })
        ));
    }
}

/// Decodes with ffmpeg when it is installed and checks the decoded length: exact when
/// `slack` is 0, otherwise within `[n, n + slack]`.
fn ffmpeg_check(format: AudioFormat, bytes: &[u8], n: usize, slack: usize) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("{format}: ffmpeg not on PATH, ffmpeg check skipped");
        return;
    }
    let mut child = Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "24000", "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{format}: ffmpeg failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "{format}: ffmpeg reported: {stderr}"
    );
    let len = out.stdout.len() / 2;
    if slack == 0 {
        assert_eq!(len, n, "{format}: ffmpeg decoded length");
    } else {
        assert!(
            len >= n && len <= n + slack,
            "{format}: ffmpeg decoded {len} for {n}"
        );
    }
    eprintln!("{format}: ffmpeg decoded {len} samples for {n}");
}
