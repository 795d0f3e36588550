//! `aac`: AAC-LC with the Fraunhofer FDK AAC library (built from its bundled source by
//! fdk-aac-sys), in ADTS frames, each of which a player can start decoding at.
//!
//! ADTS carries no length or encoder delay, so players also play the encoder's start delay and
//! the end padding as silence (together under 150 ms at 24 kHz). The `fdk-aac` wrapper does not
//! expose FDK's end-of-input flush, so [`finish`](StreamEncoder::finish) feeds silence until the
//! frames out cover every input sample plus the encoder delay.

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

use crate::{to_i16, AudioFormat, Error, Result, StreamEncoder};

/// Comfortably transparent for mono speech with AAC-LC at 24 kHz.
const BITRATE: u32 = 64_000;
/// Output buffer for one call: FDK writes at most one access unit (6144 bits per channel) plus
/// the ADTS header.
const OUT_BUF: usize = 8192;
/// AAC-LC's samples per frame.
const FRAME: u64 = 1024;

/// The sampling rates of the MPEG-4 audio sampling-frequency index that FDK encodes.
const RATES: [u32; 12] = [
    8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000,
];

pub(crate) struct AacEncoder {
    fdk: Encoder,
    /// The encoder's delay in samples, from FDK.
    delay: u64,
    samples_in: u64,
    frames_out: u64,
    pcm: Vec<i16>,
    buf: Vec<u8>,
}

fn codec(e: impl std::fmt::Display) -> Error {
    Error::Codec {
        format: AudioFormat::Aac,
        message: e.to_string(),
    }
}

impl AacEncoder {
    pub(crate) fn new(sample_rate: u32) -> Result<Self> {
        if !RATES.contains(&sample_rate) {
            return Err(Error::SampleRate {
                format: AudioFormat::Aac,
                rate: sample_rate,
                supported:
                    "AAC takes 8000 to 96000 Hz at the MPEG-4 rates (e.g. 24000, 44100, 48000)",
            });
        }
        let fdk = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(BITRATE),
            sample_rate,
            transport: Transport::Adts,
            channels: ChannelMode::Mono,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(codec)?;
        let delay = u64::from(fdk.info().map_err(codec)?.nDelay);
        Ok(AacEncoder {
            fdk,
            delay,
            samples_in: 0,
            frames_out: 0,
            pcm: Vec::new(),
            buf: vec![0; OUT_BUF],
        })
    }

    /// Hands `self.pcm` to FDK, collecting every frame it completes.
    fn encode_pcm(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let mut pos = 0;
        // FDK takes what fits its input buffer and emits at most one frame per call, so call it
        // until the input is used up and no frame comes out. Every call consumes or produces,
        // which bounds the loop; the bound only guards against a library that does neither.
        let bound = self.pcm.len() + self.pcm.len() / FRAME as usize + 16;
        for _ in 0..bound {
            let info = self
                .fdk
                .encode(&self.pcm[pos..], &mut self.buf)
                .map_err(codec)?;
            pos = (pos + info.input_consumed).min(self.pcm.len());
            if info.output_size > 0 {
                out.extend_from_slice(&self.buf[..info.output_size.min(self.buf.len())]);
                self.frames_out += 1;
            } else if pos == self.pcm.len() {
                return Ok(());
            } else if info.input_consumed == 0 {
                break;
            }
        }
        Err(codec("the encoder stopped taking input"))
    }
}

impl StreamEncoder for AacEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.pcm.clear();
        self.pcm.extend(samples.iter().map(|&s| to_i16(s)));
        self.samples_in += samples.len() as u64;
        self.encode_pcm(&mut out)?;
        Ok(out)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let needed = self.samples_in + self.delay;
        // Each round of silence yields a frame once FDK's buffer is primed; the bound is the
        // delay plus two frames' worth of rounds.
        let rounds = (self.delay / FRAME + 4) as usize;
        for _ in 0..rounds {
            if self.frames_out * FRAME >= needed {
                break;
            }
            self.pcm.clear();
            self.pcm.resize(FRAME as usize, 0);
            self.encode_pcm(&mut out)?;
        }
        Ok(out)
    }
}
