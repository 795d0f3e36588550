//! `opus`: libopus (the `opus` crate, whose opusic-sys builds the bundled libopus with cmake) in
//! an Ogg container as RFC 7845 lays it out.
//!
//! Page 0 holds OpusHead, page 1 OpusTags; then 20 ms packets, each push's packets on a page of
//! their own so they can go out at once. Granule positions count 48 kHz samples including the
//! encoder's look-ahead (the pre-skip); the last page's granule is `pre_skip + n · 48000/rate`,
//! so a decoder trims the zeros that padded the last frame and plays exactly `n` samples.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use opus::{Application, Bitrate, Channels, Encoder};

use crate::{sanitize, AudioFormat, Error, Result, StreamEncoder};

/// Transparent for speech in mono; what most Ogg Opus speech services send.
const BITRATE: i32 = 48_000;
/// RFC 7845's recommended maximum packet size (libopus never needs more for one 20 ms frame).
const MAX_PACKET: usize = 4000;
/// The logical stream's serial number; a response holds one stream, so any value will do.
const SERIAL: u32 = 0x5157_3354;

pub(crate) struct OggOpusEncoder {
    opus: Encoder,
    ogg: PacketWriter<'static, Vec<u8>>,
    rate: u32,
    /// Samples per 20 ms frame at `rate`.
    frame: usize,
    /// 48 kHz samples per input sample.
    factor: u64,
    pre_skip: u16,
    pending: Vec<f32>,
    /// Input samples pushed so far (not counting the padding).
    samples_in: u64,
    packets: u64,
    headers_due: bool,
    packet_buf: Vec<u8>,
}

fn codec(e: impl std::fmt::Display) -> Error {
    Error::Codec {
        format: AudioFormat::Opus,
        message: e.to_string(),
    }
}

impl OggOpusEncoder {
    pub(crate) fn new(sample_rate: u32) -> Result<Self> {
        if ![8000, 12000, 16000, 24000, 48000].contains(&sample_rate) {
            return Err(Error::SampleRate {
                format: AudioFormat::Opus,
                rate: sample_rate,
                supported: "Opus takes 8000, 12000, 16000, 24000 or 48000 Hz",
            });
        }
        let mut opus =
            Encoder::new(sample_rate, Channels::Mono, Application::Audio).map_err(codec)?;
        opus.set_bitrate(Bitrate::Bits(BITRATE)).map_err(codec)?;
        let factor = u64::from(48_000 / sample_rate);
        let lookahead = opus.get_lookahead().map_err(codec)?.max(0) as u64;
        let pre_skip = u16::try_from(lookahead * factor).map_err(codec)?;
        Ok(OggOpusEncoder {
            opus,
            ogg: PacketWriter::new(Vec::new()),
            rate: sample_rate,
            frame: sample_rate as usize / 50,
            factor,
            pre_skip,
            pending: Vec::new(),
            samples_in: 0,
            packets: 0,
            headers_due: true,
            packet_buf: vec![0; MAX_PACKET],
        })
    }

    /// OpusHead (RFC 7845 §5.1): version 1, mono, pre-skip, the input rate, no gain, family 0.
    fn opus_head(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(19);
        h.extend_from_slice(b"OpusHead");
        h.push(1);
        h.push(1);
        h.extend_from_slice(&self.pre_skip.to_le_bytes());
        h.extend_from_slice(&self.rate.to_le_bytes());
        h.extend_from_slice(&0i16.to_le_bytes());
        h.push(0);
        h
    }

    /// OpusTags (§5.2): the vendor string and no comments.
    fn opus_tags() -> Vec<u8> {
        let vendor = format!("qwen3-tts-encode ({})", opus::version());
        let mut t = Vec::with_capacity(16 + vendor.len());
        t.extend_from_slice(b"OpusTags");
        t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        t.extend_from_slice(vendor.as_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t
    }

    fn headers(&mut self) -> Result<()> {
        if self.headers_due {
            // Each header packet must end its page (§3).
            let head = self.opus_head();
            self.ogg
                .write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)
                .map_err(codec)?;
            self.ogg
                .write_packet(Self::opus_tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)
                .map_err(codec)?;
            self.headers_due = false;
        }
        Ok(())
    }

    /// Encodes the first frame of `pending` as the next packet.
    fn encode_frame(&mut self, end: PacketWriteEndInfo, granule: Option<u64>) -> Result<()> {
        let n = self
            .opus
            .encode_float(&self.pending[..self.frame], &mut self.packet_buf)
            .map_err(codec)?;
        self.pending.drain(..self.frame);
        self.packets += 1;
        let granule = granule.unwrap_or(self.packets * self.frame as u64 * self.factor);
        self.ogg
            .write_packet(self.packet_buf[..n].to_vec(), SERIAL, end, granule)
            .map_err(codec)?;
        Ok(())
    }

    fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(self.ogg.inner_mut())
    }
}

impl StreamEncoder for OggOpusEncoder {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        self.headers()?;
        self.pending.extend(samples.iter().map(|&s| sanitize(s)));
        self.samples_in += samples.len() as u64;
        let frames = self.pending.len() / self.frame;
        for i in 0..frames {
            // The push's last packet closes the page so its bytes can be sent now.
            let end = if i + 1 == frames {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.encode_frame(end, None)?;
        }
        Ok(self.take_bytes())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        self.headers()?;
        // Enough packets that the decoded length covers the pre-skip and every input sample
        // (always at least one more, which carries the end-of-stream flag).
        let frame48 = self.frame as u64 * self.factor;
        let end_granule = u64::from(self.pre_skip) + self.samples_in * self.factor;
        let total = end_granule.div_ceil(frame48).max(self.packets + 1);
        let left = (total - self.packets) as usize;
        self.pending.resize(left * self.frame, 0.0);
        for i in 0..left {
            if i + 1 == left {
                self.encode_frame(PacketWriteEndInfo::EndStream, Some(end_granule))?;
            } else {
                self.encode_frame(PacketWriteEndInfo::NormalPacket, None)?;
            }
        }
        Ok(self.take_bytes())
    }
}
