//! Audio written as it is produced: WAV (16-bit PCM or 32-bit float, the
//! header `qwen3_tts::audio::encode_wav` writes, byte for byte) or raw
//! 16-bit little-endian PCM.
//!
//! A WAV stream starts with an open-ended header (RIFF and data sizes
//! 0xFFFFFFFF, which ffmpeg, sox and aplay read as "until the end"); on a
//! seekable output [`AudioWriter::finish`] patches the real sizes in.

use std::io::{self, Seek, SeekFrom, Write};

use qwen3_tts::audio::SampleFormat;

/// How audio is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A mono WAV file of these samples.
    Wav(SampleFormat),
    /// Raw mono s16le samples, no header.
    RawS16,
}

impl Encoding {
    /// The sample format of the data.
    pub fn sample_format(self) -> SampleFormat {
        match self {
            Encoding::Wav(f) => f,
            Encoding::RawS16 => SampleFormat::S16,
        }
    }
}

/// The size field value of an open-ended WAV stream.
pub const OPEN_ENDED: u32 = u32::MAX;

/// `KSDATAFORMAT_SUBTYPE_IEEE_FLOAT`.
const SUBTYPE_IEEE_FLOAT: [u8; 16] = [
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
];

/// The header of a mono WAV file, as hound writes it: a 16-byte
/// `PCMWAVEFORMAT` for 16-bit samples (44 bytes in all), a
/// `WAVEFORMATEXTENSIBLE` with the IEEE-float subtype for 32-bit float
/// (68 bytes). `data_bytes` None: open-ended ([`OPEN_ENDED`] sizes). The
/// data size field is the header's last four bytes.
pub fn wav_header(sample_rate: u32, format: SampleFormat, data_bytes: Option<u32>) -> Vec<u8> {
    let bytes_per_sample: u16 = match format {
        SampleFormat::S16 => 2,
        SampleFormat::F32 => 4,
    };
    let mut fmt = Vec::with_capacity(40);
    let tag: u16 = match format {
        SampleFormat::S16 => 1,
        SampleFormat::F32 => 0xfffe,
    };
    fmt.extend(tag.to_le_bytes());
    fmt.extend(1u16.to_le_bytes()); // channels
    fmt.extend(sample_rate.to_le_bytes());
    fmt.extend((sample_rate * u32::from(bytes_per_sample)).to_le_bytes());
    fmt.extend(bytes_per_sample.to_le_bytes()); // block align
    fmt.extend((bytes_per_sample * 8).to_le_bytes());
    if format == SampleFormat::F32 {
        fmt.extend(22u16.to_le_bytes()); // cbSize
        fmt.extend((bytes_per_sample * 8).to_le_bytes()); // valid bits
        fmt.extend(1u32.to_le_bytes()); // channel mask: the first channel
        fmt.extend(SUBTYPE_IEEE_FLOAT);
    }
    let header_len = 12 + 8 + fmt.len() as u32 + 8;
    let (riff, data) = match data_bytes {
        Some(d) => ((header_len - 8).saturating_add(d), d),
        None => (OPEN_ENDED, OPEN_ENDED),
    };
    let mut h = Vec::with_capacity(header_len as usize);
    h.extend(b"RIFF");
    h.extend(riff.to_le_bytes());
    h.extend(b"WAVEfmt ");
    h.extend((fmt.len() as u32).to_le_bytes());
    h.extend(fmt);
    h.extend(b"data");
    h.extend(data.to_le_bytes());
    h
}

/// Appends `samples` to `out`: s16 exactly as `encode_wav` converts them
/// (clamped to [−1, 1], × 32767, rounded), f32 as they are; little-endian.
pub fn push_samples(out: &mut Vec<u8>, samples: &[f32], format: SampleFormat) {
    match format {
        SampleFormat::S16 => {
            out.reserve(samples.len() * 2);
            for &s in samples {
                out.extend(((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
            }
        }
        SampleFormat::F32 => {
            out.reserve(samples.len() * 4);
            for &s in samples {
                out.extend(s.to_le_bytes());
            }
        }
    }
}

/// The whole of `samples` encoded (what [`AudioWriter`] writes in pieces).
pub fn encode(samples: &[f32], sample_rate: u32, encoding: Encoding) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = AudioWriter::new(io::Cursor::new(&mut out), sample_rate, encoding)?;
    w.write(samples)?;
    w.finish()?;
    Ok(out)
}

/// Writes audio as it comes to `out`.
pub struct AudioWriter<W: Write> {
    out: W,
    sample_rate: u32,
    encoding: Encoding,
    header_len: u64,
    data_bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write> AudioWriter<W> {
    /// Starts the stream: an open-ended WAV header, or nothing for raw PCM.
    pub fn new(mut out: W, sample_rate: u32, encoding: Encoding) -> io::Result<Self> {
        let header_len = match encoding {
            Encoding::Wav(f) => {
                let h = wav_header(sample_rate, f, None);
                out.write_all(&h)?;
                h.len() as u64
            }
            Encoding::RawS16 => 0,
        };
        Ok(AudioWriter {
            out,
            sample_rate,
            encoding,
            header_len,
            data_bytes: 0,
            buf: Vec::new(),
        })
    }

    /// Appends `samples` (one write).
    pub fn write(&mut self, samples: &[f32]) -> io::Result<()> {
        self.buf.clear();
        push_samples(&mut self.buf, samples, self.encoding.sample_format());
        self.out.write_all(&self.buf)?;
        self.data_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Flushes what was written through to the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Bytes of samples written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The output, as it is (an open-ended WAV stays open-ended).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Seek> AudioWriter<W> {
    /// Patches the WAV sizes in (refused past 4 GiB, which WAV cannot
    /// say) and leaves the output positioned at its end.
    pub fn finish(mut self) -> io::Result<W> {
        if let Encoding::Wav(f) = self.encoding {
            let data = u32::try_from(self.data_bytes)
                .ok()
                .filter(|d| d.checked_add(self.header_len as u32 - 8).is_some())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} bytes of audio: too long for a WAV file (4 GiB at most)",
                            self.data_bytes
                        ),
                    )
                })?;
            let h = wav_header(self.sample_rate, f, Some(data));
            let end = self.header_len + self.data_bytes;
            self.out.seek(SeekFrom::Start(4))?;
            self.out.write_all(&h[4..8])?;
            self.out.seek(SeekFrom::Start(self.header_len - 4))?;
            self.out.write_all(&h[h.len() - 4..])?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37).sin() * 1.3 - 0.1)
            .chain([f32::NAN, -2.0, 2.0, 0.5 / 32767.0, -0.5 / 32767.0])
            .collect()
    }

    #[test]
    fn wav_is_byte_identical_to_encode_wav() {
        for format in [SampleFormat::S16, SampleFormat::F32] {
            for n in [0, 1, 7, 1920, 5000] {
                let s = samples(n);
                let want = qwen3_tts::audio::encode_wav(&s, 24000, format).unwrap();
                let got = encode(&s, 24000, Encoding::Wav(format)).unwrap();
                assert_eq!(got, want, "{format:?}, {n} samples");
                // In pieces, too.
                let mut out = Vec::new();
                let mut w =
                    AudioWriter::new(io::Cursor::new(&mut out), 24000, Encoding::Wav(format))
                        .unwrap();
                for piece in s.chunks(333) {
                    w.write(piece).unwrap();
                }
                w.finish().unwrap();
                assert_eq!(out, want, "{format:?}, {n} samples in pieces");
            }
        }
    }

    #[test]
    fn open_ended_header_and_raw_pcm() {
        let s = samples(100);
        let file = encode(&s, 24000, Encoding::Wav(SampleFormat::S16)).unwrap();
        let mut out = Vec::new();
        let mut w = AudioWriter::new(&mut out, 24000, Encoding::Wav(SampleFormat::S16)).unwrap();
        w.write(&s).unwrap();
        drop(w);
        assert_eq!(out.len(), file.len());
        assert_eq!(&out[4..8], &OPEN_ENDED.to_le_bytes());
        assert_eq!(&out[40..44], &OPEN_ENDED.to_le_bytes());
        assert_eq!(&out[..4], &file[..4]);
        assert_eq!(&out[8..40], &file[8..40]);
        assert_eq!(&out[44..], &file[44..]);
        let raw = encode(&s, 24000, Encoding::RawS16).unwrap();
        assert_eq!(raw, &file[44..]);
        let f32_head = wav_header(24000, SampleFormat::F32, None);
        assert_eq!(f32_head.len(), 68);
        assert_eq!(&f32_head[64..], &OPEN_ENDED.to_le_bytes());
    }
}
