//! Audio output for the speech server: streaming encoders for the OpenAI speech API's
//! `response_format` values and a pitch-preserving tempo change for its `speed`.
//!
//! Every encoder takes mono f32 samples in [-1, 1] and returns bytes as soon as it has them, so
//! a response can be sent chunk by chunk while the model is still generating: the bytes of all
//! [`StreamEncoder::push`] calls followed by those of [`StreamEncoder::finish`] are one valid
//! file. The container header comes out of the first `push` (an empty push is enough).
//!
//! | format | codec | container | incremental |
//! | --- | --- | --- | --- |
//! | `wav` | 16-bit PCM | RIFF with open-ended sizes (0xFFFFFFFF) | every push |
//! | `pcm` | 16-bit little-endian PCM | none | every push |
//! | `flac` | FLAC (flacenc) | native FLAC, unknown length | per 2048-sample block |
//! | `mp3` | MPEG-2 layer III (LAME), CBR | none (no Xing/LAME tag) | per LAME frame |
//! | `opus` | Opus (libopus) | Ogg, RFC 7845 | per 20 ms packet, one page per push |
//! | `aac` | AAC-LC (FDK AAC) | ADTS | per 1024-sample frame |

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "aac")]
mod aac;
#[cfg(feature = "flac")]
mod flac;
#[cfg(feature = "mp3")]
mod mp3;
#[cfg(feature = "opus")]
mod opus;
mod pcm;
mod tempo;

pub use pcm::WAV_OPEN_ENDED_SIZE;
pub use tempo::{change_tempo, TempoStream, MAX_SPEED, MIN_SPEED};

/// What can go wrong when encoding or changing tempo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `response_format` string that is none of the known names.
    #[error("unknown audio format '{given}' (valid: {})", names(AudioFormat::ALL))]
    UnknownFormat { given: String },
    /// A known format whose codec was not compiled into this build.
    #[error(
        "audio format {format} is not available in this build (available: {})",
        names(available)
    )]
    Unavailable {
        format: AudioFormat,
        available: Vec<AudioFormat>,
    },
    /// A sample rate the codec cannot take.
    #[error("{format} cannot encode at {rate} Hz ({supported})")]
    SampleRate {
        format: AudioFormat,
        rate: u32,
        supported: &'static str,
    },
    /// The codec library reported an error.
    #[error("{format} encoder: {message}")]
    Codec {
        format: AudioFormat,
        message: String,
    },
    /// `speed` outside [`MIN_SPEED`, `MAX_SPEED`] (or not a number).
    #[error("speed {speed} is out of range: speed must be between {MIN_SPEED} and {MAX_SPEED}")]
    Speed { speed: f32 },
    /// A tempo change at a sample rate the stretcher cannot be set up for.
    #[error("tempo change at {rate} Hz is not supported (sample rate must be 1000..=384000 Hz)")]
    TempoSampleRate { rate: u32 },
    /// The stretcher refused the buffer (not expected: inputs too short for it are padded).
    #[error("tempo change failed: {0}")]
    Stretch(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn names(formats: &[AudioFormat]) -> String {
    formats
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The OpenAI speech API's `response_format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    Mp3,
    Opus,
    Aac,
    Flac,
    Wav,
    Pcm,
}

impl AudioFormat {
    /// Every format, in the API's order (whether compiled in or not).
    pub const ALL: &'static [AudioFormat] = &[
        AudioFormat::Mp3,
        AudioFormat::Opus,
        AudioFormat::Aac,
        AudioFormat::Flac,
        AudioFormat::Wav,
        AudioFormat::Pcm,
    ];

    /// The API's lowercase name.
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

    /// The HTTP `Content-Type` of a response in this format. Opus is in an Ogg container, so
    /// `audio/ogg` (what browsers and players dispatch on); `pcm` has no registered type, and
    /// `audio/pcm` is what the OpenAI API sends.
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

    /// A file extension (without the dot) for a download of this format: its name.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// Whether this build has an encoder for the format.
    pub fn is_available(self) -> bool {
        match self {
            AudioFormat::Mp3 => cfg!(feature = "mp3"),
            AudioFormat::Opus => cfg!(feature = "opus"),
            AudioFormat::Aac => cfg!(feature = "aac"),
            AudioFormat::Flac => cfg!(feature = "flac"),
            AudioFormat::Wav | AudioFormat::Pcm => true,
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

    /// Parses the API's lowercase names only (the API is case-sensitive).
    fn from_str(s: &str) -> Result<Self> {
        AudioFormat::ALL
            .iter()
            .copied()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| Error::UnknownFormat {
                given: s.to_string(),
            })
    }
}

/// The formats this build can encode, in the API's order.
pub fn available_formats() -> Vec<AudioFormat> {
    AudioFormat::ALL
        .iter()
        .copied()
        .filter(|f| f.is_available())
        .collect()
}

/// An encoder that turns pushed samples into bytes of one stream.
///
/// Samples are mono f32 in [-1, 1]; values outside are clamped and NaN counts as silence, so no
/// input makes an encoder fail or panic.
pub trait StreamEncoder: Send {
    /// Encodes `samples` and returns the bytes that are ready (possibly none: codecs work in
    /// frames and keep a partial one until more samples or [`finish`](Self::finish) come).
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>>;
    /// Encodes what is left (padding the last frame) and returns the stream's last bytes.
    fn finish(self: Box<Self>) -> Result<Vec<u8>>;
}

/// An encoder for `format` at `sample_rate` Hz (the model produces 24000).
///
/// Returns [`Error::Unavailable`] when the format's codec is not compiled in and
/// [`Error::SampleRate`] when the codec cannot take the rate (Opus: 8/12/16/24/48 kHz; MP3 and
/// AAC: the MPEG rates).
pub fn encoder(format: AudioFormat, sample_rate: u32) -> Result<Box<dyn StreamEncoder>> {
    if sample_rate == 0 {
        return Err(Error::SampleRate {
            format,
            rate: 0,
            supported: "the rate must be positive",
        });
    }
    match format {
        AudioFormat::Wav => Ok(Box::new(pcm::PcmEncoder::new(sample_rate, true))),
        AudioFormat::Pcm => Ok(Box::new(pcm::PcmEncoder::new(sample_rate, false))),
        #[cfg(feature = "flac")]
        AudioFormat::Flac => Ok(Box::new(flac::FlacEncoder::new(sample_rate)?)),
        #[cfg(feature = "mp3")]
        AudioFormat::Mp3 => Ok(Box::new(mp3::Mp3Encoder::new(sample_rate)?)),
        #[cfg(feature = "opus")]
        AudioFormat::Opus => Ok(Box::new(opus::OggOpusEncoder::new(sample_rate)?)),
        #[cfg(feature = "aac")]
        AudioFormat::Aac => Ok(Box::new(aac::AacEncoder::new(sample_rate)?)),
        #[allow(unreachable_patterns)]
        _ => Err(Error::Unavailable {
            format,
            available: available_formats(),
        }),
    }
}

/// f32 → s16 as `qwen3_tts::audio::encode_wav` does: clamp to [-1, 1], scale by 32767, round.
/// NaN becomes 0 (silence) rather than whatever a cast would make of it.
pub(crate) fn to_i16(s: f32) -> i16 {
    if s.is_nan() {
        0
    } else {
        (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
    }
}

/// Samples as codecs that take floats want them: NaN → 0, clamped to [-1, 1].
#[cfg(feature = "opus")]
pub(crate) fn sanitize(s: f32) -> f32 {
    if s.is_nan() {
        0.0
    } else {
        s.clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_convention() {
        assert_eq!(to_i16(0.0), 0);
        assert_eq!(to_i16(1.0), 32767);
        assert_eq!(to_i16(-1.0), -32767);
        assert_eq!(to_i16(2.0), 32767);
        assert_eq!(to_i16(-7.0), -32767);
        assert_eq!(to_i16(f32::NAN), 0);
        assert_eq!(to_i16(f32::INFINITY), 32767);
        assert_eq!(to_i16(0.5), 16384); // 16383.5 rounds away from zero
    }
}
