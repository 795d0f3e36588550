//! Audio encodings of a response, with the API of the `qwen3-tts-encode`
//! crate (`AudioFormat`, `encoder`, `StreamEncoder`, `change_tempo`) so that
//! the real crate replaces this module in a few lines. This build encodes
//! only `wav` (16-bit PCM) and `pcm` (raw s16le); the other formats and tempo
//! changes are refused with a clear error.

use std::fmt;
use std::str::FromStr;

/// An error of this module (the message is meant for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// `response_format` of the OpenAI speech API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioFormat {
    Mp3,
    Opus,
    Aac,
    Flac,
    Wav,
    Pcm,
}

/// The formats this build can encode.
pub const AVAILABLE: &[AudioFormat] = &[AudioFormat::Wav, AudioFormat::Pcm];

impl AudioFormat {
    pub const ALL: [AudioFormat; 6] = [
        AudioFormat::Mp3,
        AudioFormat::Opus,
        AudioFormat::Aac,
        AudioFormat::Flac,
        AudioFormat::Wav,
        AudioFormat::Pcm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Opus => "opus",
            AudioFormat::Aac => "aac",
            AudioFormat::Flac => "flac",
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Opus => "audio/ogg",
            AudioFormat::Aac => "audio/aac",
            AudioFormat::Flac => "audio/flac",
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
        }
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AudioFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AudioFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                Error(format!(
                    "unknown response_format '{s}' (one of: mp3, opus, aac, flac, wav, pcm)"
                ))
            })
    }
}

/// Encodes a stream of mono samples in [−1, 1] chunk by chunk.
pub trait StreamEncoder: Send {
    /// Encodes `samples` (continuing the previous ones); returns the bytes
    /// ready so far (the first call includes any header).
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>>;
    /// Ends the stream; returns the remaining bytes.
    fn finish(self: Box<Self>) -> Result<Vec<u8>>;
}

fn available_list() -> String {
    AVAILABLE
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A streaming encoder for `format` at `sample_rate` (mono).
pub fn encoder(format: AudioFormat, sample_rate: u32) -> Result<Box<dyn StreamEncoder>> {
    match format {
        AudioFormat::Wav => Ok(Box::new(WavEncoder {
            sample_rate,
            header_written: false,
        })),
        AudioFormat::Pcm => Ok(Box::new(PcmEncoder)),
        f => Err(Error(format!(
            "response_format '{f}' is not available in this build; available: {}",
            available_list()
        ))),
    }
}

/// Changes the tempo by `speed` (1 = unchanged) keeping the pitch.
pub fn change_tempo(samples: &[f32], _sample_rate: u32, speed: f32) -> Result<Vec<f32>> {
    if speed == 1.0 {
        return Ok(samples.to_vec());
    }
    Err(Error(format!(
        "speed {speed} is not available in this build (only 1.0): tempo changes come with the audio encoding crate"
    )))
}

fn s16le(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Raw 16-bit little-endian PCM, no header.
struct PcmEncoder;

impl StreamEncoder for PcmEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        s16le(samples, &mut out);
        Ok(out)
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// 16-bit PCM WAV whose header gives 0xFFFFFFFF as the RIFF and data sizes
/// (the open-ended convention of streamed WAV); see [`fix_wav_sizes`].
struct WavEncoder {
    sample_rate: u32,
    header_written: bool,
}

/// Size of the canonical header [`encoder`] writes.
pub const WAV_HEADER_LEN: usize = 44;

fn wav_header(sample_rate: u32, data_len: u32) -> Vec<u8> {
    let riff_len = if data_len == u32::MAX {
        u32::MAX
    } else {
        data_len.saturating_add(36)
    };
    let mut h = Vec::with_capacity(WAV_HEADER_LEN);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff_len.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes()); // block align
    h.extend_from_slice(&16u16.to_le_bytes()); // bits
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

impl StreamEncoder for WavEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if !self.header_written {
            out = wav_header(self.sample_rate, u32::MAX);
            self.header_written = true;
        }
        s16le(samples, &mut out);
        Ok(out)
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        Ok(if self.header_written {
            Vec::new()
        } else {
            wav_header(self.sample_rate, u32::MAX)
        })
    }
}

/// A whole WAV file written by a [`StreamEncoder`] with the sizes of its
/// RIFF and data chunks patched in (for a response that is sent complete).
/// Other bytes are returned unchanged.
pub fn fix_wav_sizes(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= WAV_HEADER_LEN && &bytes[0..4] == b"RIFF" && &bytes[36..40] == b"data" {
        let data = (bytes.len() - WAV_HEADER_LEN) as u32;
        bytes[4..8].copy_from_slice(&(data + 36).to_le_bytes());
        bytes[40..44].copy_from_slice(&data.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_refuse() {
        assert_eq!("wav".parse::<AudioFormat>(), Ok(AudioFormat::Wav));
        assert!("ogg".parse::<AudioFormat>().is_err());
        let e = encoder(AudioFormat::Mp3, 24000).err().unwrap();
        assert_eq!(
            e.0,
            "response_format 'mp3' is not available in this build; available: wav, pcm"
        );
        assert!(change_tempo(&[0.0], 24000, 1.5).is_err());
        assert_eq!(change_tempo(&[0.5], 24000, 1.0), Ok(vec![0.5]));
    }

    #[test]
    fn wav_stream_then_fixed() {
        let mut e = encoder(AudioFormat::Wav, 24000).unwrap();
        let mut bytes = e.push(&[0.0, 1.0]).unwrap();
        assert_eq!(&bytes[4..8], &u32::MAX.to_le_bytes());
        bytes.extend(e.push(&[-1.0]).unwrap());
        bytes.extend(e.finish().unwrap());
        let fixed = fix_wav_sizes(bytes);
        assert_eq!(fixed.len(), 44 + 6);
        assert_eq!(&fixed[40..44], &6u32.to_le_bytes());
        assert_eq!(&fixed[4..8], &42u32.to_le_bytes());
        assert_eq!(&fixed[46..48], &32767i16.to_le_bytes());
    }
}
