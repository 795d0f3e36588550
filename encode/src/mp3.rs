//! `mp3`: LAME (built from source by mp3lame-sys), constant bit rate, no tags.
//!
//! A Xing/LAME tag (exact length, gapless trimming) would have to be written into the first
//! frame after the last one is known, which a stream sent as it is produced cannot do; so there
//! is none, and players decode LAME's start delay and the last frame's padding as a little extra
//! silence (under 100 ms at 24 kHz).

use std::num::NonZeroU32;

use mp3lame_encoder::{Bitrate, Builder, Encoder, FlushGap, Mode, MonoPcm, Quality, VbrMode};

use crate::{to_i16, AudioFormat, Error, Result, StreamEncoder};

/// Plenty for speech at 24 kHz mono (MPEG-2 allows up to 160 kbit/s).
const BITRATE: Bitrate = Bitrate::Kbps64;
/// Samples handed to LAME per call, so its `int` counts and the output buffer stay small.
const CHUNK: usize = 1 << 16;

/// The rates MPEG-1, 2 and 2.5 layer III have; LAME would resample anything else.
const RATES: [u32; 9] = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];

pub(crate) struct Mp3Encoder {
    lame: Encoder,
    pcm: Vec<i16>,
}

fn codec(e: impl std::fmt::Display) -> Error {
    Error::Codec {
        format: AudioFormat::Mp3,
        message: e.to_string(),
    }
}

impl Mp3Encoder {
    pub(crate) fn new(sample_rate: u32) -> Result<Self> {
        if !RATES.contains(&sample_rate) {
            return Err(Error::SampleRate {
                format: AudioFormat::Mp3,
                rate: sample_rate,
                supported:
                    "MP3 takes 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100 or 48000 Hz",
            });
        }
        let mut b = Builder::new().ok_or_else(|| codec("cannot allocate the LAME encoder"))?;
        b.set_num_channels(1).map_err(codec)?;
        b.set_sample_rate(sample_rate).map_err(codec)?;
        // Without this LAME picks an output rate from the bit rate and resamples.
        b.set_output_sample_rate(NonZeroU32::new(sample_rate))
            .map_err(codec)?;
        b.set_mode(Mode::Mono).map_err(codec)?;
        b.set_vbr_mode(VbrMode::Off).map_err(codec)?;
        b.set_brate(BITRATE).map_err(codec)?;
        b.set_quality(Quality::NearBest).map_err(codec)?;
        b.set_to_write_vbr_tag(false).map_err(codec)?;
        Ok(Mp3Encoder {
            lame: b.build().map_err(codec)?,
            pcm: Vec::new(),
        })
    }
}

impl StreamEncoder for Mp3Encoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in samples.chunks(CHUNK) {
            self.pcm.clear();
            self.pcm.extend(chunk.iter().map(|&s| to_i16(s)));
            out.reserve(mp3lame_encoder::max_required_buffer_size(chunk.len()));
            self.lame
                .encode_to_vec(MonoPcm(&self.pcm), &mut out)
                .map_err(codec)?;
        }
        Ok(out)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        // LAME's flush writes at most a few frames; 7200 bytes is its documented worst case.
        let mut out = Vec::with_capacity(16 * 1024);
        self.lame
            .flush_to_vec::<FlushGap>(&mut out)
            .map_err(codec)?;
        Ok(out)
    }
}
