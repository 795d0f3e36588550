//! Decoding every `response_format` back to samples, with the decoders the
//! encode crate's tests use: symphonia for wav, flac, mp3 and aac (ADTS), and
//! libopus (the `opus` crate) behind an Ogg reader for Opus, trimmed as
//! RFC 7845 says (pre-skip at the start, the last granule position at the end).

use std::io::Cursor;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia_codec_aac::{AacDecoder, AdtsReader};

pub const RATE: u32 = 24_000;

/// Decoded audio: rate, channel count, the first channel's samples.
#[derive(Debug)]
pub struct Decoded {
    pub rate: u32,
    pub channels: usize,
    pub samples: Vec<f32>,
}

/// Decodes `bytes` of `format` (`mp3`, `opus`, `aac`, `flac`, `wav`, `pcm`);
/// `Err` with the reason when the bytes are not a valid stream.
pub fn decode(format: &str, bytes: &[u8]) -> Result<Decoded, String> {
    match format {
        "pcm" => {
            if !bytes.len().is_multiple_of(2) {
                return Err(format!("pcm: odd length {}", bytes.len()));
            }
            Ok(Decoded {
                rate: RATE,
                channels: 1,
                samples: bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                    .collect(),
            })
        }
        "opus" => decode_ogg_opus(bytes),
        "wav" | "flac" | "mp3" | "aac" => decode_symphonia(bytes, format),
        f => Err(format!("no decoder for {f}")),
    }
}

/// The decoded length a codec may give for `n` samples in: (least, most).
/// Lossless formats and Ogg Opus (with its pre-skip and end granule) give
/// exactly `n`; MP3 (no Xing/LAME tag) adds LAME's start delay and up to two
/// frames of padding, AAC (ADTS) FDK's delay and end padding — the bounds of
/// the encode crate's tests.
pub fn length_bounds(format: &str, n: usize) -> (usize, usize) {
    match format {
        "mp3" => (n, n + 2 * 1152 + 2 * 576),
        "aac" => (n, n + 6 * 1024),
        _ => (n, n),
    }
}

/// Decodes and checks 24 kHz mono and the length for `n` samples in.
pub fn check(format: &str, bytes: &[u8], n: usize) -> Decoded {
    let d = decode(format, bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
    assert_eq!(d.rate, RATE, "{format}: sample rate");
    assert_eq!(d.channels, 1, "{format}: channels");
    let (lo, hi) = length_bounds(format, n);
    assert!(
        (lo..=hi).contains(&d.samples.len()),
        "{format}: decoded {} samples for {n} (allowed {lo}..={hi})",
        d.samples.len()
    );
    d
}

fn decode_symphonia(bytes: &[u8], ext: &str) -> Result<Decoded, String> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
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
        .map_err(|e| format!("cannot probe: {e}"))?;
    let track = format
        .first_track(TrackType::Audio)
        .ok_or("no audio track")?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or("no audio parameters")?
        .clone();
    let mut decoder = codecs
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format!("no decoder: {e}"))?;
    let (mut rate, mut channels) = (params.sample_rate.unwrap_or(0), 0);
    let mut samples = Vec::new();
    let mut planes = Vec::<Vec<f32>>::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // An open-ended WAV simply ends.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading packets: {e}")),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder
            .decode(&packet)
            .map_err(|e| format!("decoding: {e}"))?;
        rate = buf.spec().rate();
        channels = buf.spec().channels().count();
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        samples.extend_from_slice(&planes[0][..buf.frames()]);
    }
    Ok(Decoded {
        rate,
        channels,
        samples,
    })
}

fn decode_ogg_opus(bytes: &[u8]) -> Result<Decoded, String> {
    use ogg::reading::PacketReader;
    let mut reader = PacketReader::new(Cursor::new(bytes.to_vec()));
    let head = reader
        .read_packet()
        .map_err(|e| format!("ogg: {e}"))?
        .ok_or("no OpusHead")?;
    let h = &head.data;
    if h.len() != 19 || &h[0..8] != b"OpusHead" {
        return Err("the first packet is not an OpusHead".into());
    }
    let channels = h[9] as usize;
    let pre_skip = u16::from_le_bytes([h[10], h[11]]) as u64;
    let input_rate = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    let tags = reader
        .read_packet()
        .map_err(|e| format!("ogg: {e}"))?
        .ok_or("no OpusTags")?;
    if !tags.data.starts_with(b"OpusTags") {
        return Err("the second packet is not OpusTags".into());
    }
    // Decoded at 24 kHz: granules and the pre-skip count 48 kHz samples.
    let mut dec = opus::Decoder::new(RATE, opus::Channels::Mono).map_err(|e| e.to_string())?;
    let (mut pcm, mut buf) = (Vec::new(), vec![0f32; 5760]);
    let (mut last_granule, mut saw_end) = (0u64, false);
    while let Some(p) = reader.read_packet().map_err(|e| format!("ogg: {e}"))? {
        if saw_end {
            return Err("a packet after the end of the stream".into());
        }
        let n = dec
            .decode_float(&p.data, &mut buf, false)
            .map_err(|e| format!("opus: {e}"))?;
        pcm.extend_from_slice(&buf[..n]);
        last_granule = p.absgp_page();
        saw_end = p.last_in_stream();
    }
    if !saw_end {
        return Err("no end-of-stream page".into());
    }
    let total = (last_granule
        .checked_sub(pre_skip)
        .ok_or("end granule < pre-skip")?
        / 2) as usize;
    let skip = (pre_skip / 2) as usize;
    if pcm.len() < skip + total {
        return Err("the packets do not cover the end granule".into());
    }
    Ok(Decoded {
        rate: input_rate,
        channels,
        samples: pcm[skip..skip + total].to_vec(),
    })
}
