//! `wav` and `pcm`: 16-bit little-endian PCM, the WAV one behind a streaming RIFF header.

use crate::{to_i16, Result, StreamEncoder};

/// The RIFF and `data` chunk sizes of a streamed WAV. The length is not known when the header
/// goes out, so both sizes are the largest a u32 holds; ffmpeg, browsers and symphonia read such
/// a file to its end (ffmpeg warns "Ignoring maximum wav data size").
pub const WAV_OPEN_ENDED_SIZE: u32 = 0xFFFF_FFFF;

pub(crate) struct PcmEncoder {
    sample_rate: u32,
    /// WAV header still to write (wav only, until the first push).
    header_due: bool,
}

impl PcmEncoder {
    pub(crate) fn new(sample_rate: u32, wav: bool) -> Self {
        PcmEncoder {
            sample_rate,
            header_due: wav,
        }
    }
}

/// The canonical 44-byte header: `fmt ` PCM, mono, 16 bit, then `data` of unknown size.
fn wav_header(sample_rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, b"RIFF");
    put(4, &WAV_OPEN_ENDED_SIZE.to_le_bytes());
    put(8, b"WAVE");
    put(12, b"fmt ");
    put(16, &16u32.to_le_bytes());
    put(20, &1u16.to_le_bytes()); // WAVE_FORMAT_PCM
    put(22, &1u16.to_le_bytes()); // channels
    put(24, &sample_rate.to_le_bytes());
    put(28, &(sample_rate.wrapping_mul(2)).to_le_bytes()); // bytes per second
    put(32, &2u16.to_le_bytes()); // block align
    put(34, &16u16.to_le_bytes()); // bits per sample
    put(36, b"data");
    put(40, &WAV_OPEN_ENDED_SIZE.to_le_bytes());
    h
}

impl StreamEncoder for PcmEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(44 + 2 * samples.len());
        if self.header_due {
            out.extend_from_slice(&wav_header(self.sample_rate));
            self.header_due = false;
        }
        for &s in samples {
            out.extend_from_slice(&to_i16(s).to_le_bytes());
        }
        Ok(out)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        // A stream that never got a push is still a (empty) WAV file.
        self.push(&[])
    }
}
