//! `flac`: FLAC with flacenc, one fixed-size frame per block so the stream goes out as it grows.
//!
//! flacenc's whole-stream entry point needs all samples first; its per-frame function
//! ([`flacenc::encode_fixed_size_frame`]) does not, so the header (`fLaC` + STREAMINFO) is
//! written up front and each complete block is encoded as soon as it is full. STREAMINFO cannot
//! be rewritten afterwards, so it says what a stream of unknown length says: total samples 0,
//! frame sizes 0 and no MD5 (all zeros) — all "unknown" in the FLAC format.

use flacenc::bitsink::MemSink;
use flacenc::component::{BitRepr, Stream};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Fill, FrameBuf};

use crate::{to_i16, AudioFormat, Error, Result, StreamEncoder};

/// Samples per FLAC frame: 85 ms at 24 kHz, so a streamed response lags the model by at most
/// that much; compression is within a percent of the usual 4096.
pub(crate) const BLOCK: usize = 2048;

pub(crate) struct FlacEncoder {
    config: Verified<config::Encoder>,
    stream: Stream,
    framebuf: FrameBuf,
    pending: Vec<i32>,
    frame_number: usize,
    header_due: bool,
}

fn codec(e: impl std::fmt::Display) -> Error {
    Error::Codec {
        format: AudioFormat::Flac,
        message: e.to_string(),
    }
}

impl FlacEncoder {
    pub(crate) fn new(sample_rate: u32) -> Result<Self> {
        // FLAC's STREAMINFO holds 20 bits of sample rate.
        if sample_rate >= 1 << 20 {
            return Err(Error::SampleRate {
                format: AudioFormat::Flac,
                rate: sample_rate,
                supported: "FLAC takes 1..=1048575 Hz",
            });
        }
        let config = config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| codec(e))?;
        let mut stream = Stream::new(sample_rate as usize, 1, 16).map_err(codec)?;
        let info = stream.stream_info_mut();
        info.set_block_sizes(BLOCK, BLOCK).map_err(codec)?;
        info.set_frame_sizes(0, 0).map_err(codec)?;
        Ok(FlacEncoder {
            config,
            stream,
            framebuf: FrameBuf::with_size(1, BLOCK).map_err(codec)?,
            pending: Vec::with_capacity(BLOCK),
            frame_number: 0,
            header_due: true,
        })
    }

    fn header(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.header_due {
            // A stream with no frames serialises as exactly `fLaC` + STREAMINFO (marked last).
            let mut sink = MemSink::<u8>::new();
            self.stream.write(&mut sink).map_err(codec)?;
            out.extend_from_slice(sink.as_slice());
            self.header_due = false;
        }
        Ok(())
    }

    /// Encodes `pending` (one block, or the shorter last one) as the next frame.
    fn encode_pending(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.framebuf
            .fill_interleaved(&self.pending)
            .map_err(codec)?;
        let frame = flacenc::encode_fixed_size_frame(
            &self.config,
            &self.framebuf,
            self.frame_number,
            self.stream.stream_info(),
        )
        .map_err(codec)?;
        let mut sink = MemSink::<u8>::with_capacity(frame.count_bits());
        frame.write(&mut sink).map_err(codec)?;
        out.extend_from_slice(sink.as_slice());
        self.frame_number += 1;
        self.pending.clear();
        Ok(())
    }
}

impl StreamEncoder for FlacEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.header(&mut out)?;
        for &s in samples {
            self.pending.push(i32::from(to_i16(s)));
            if self.pending.len() == BLOCK {
                self.encode_pending(&mut out)?;
            }
        }
        Ok(out)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.header(&mut out)?;
        if !self.pending.is_empty() {
            self.encode_pending(&mut out)?;
        }
        Ok(out)
    }
}
