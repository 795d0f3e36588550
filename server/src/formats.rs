//! Audio output of a response: the `qwen3-tts-encode` crate's encoders and
//! tempo change, plus what the server adds on top: [`Output`] (tempo, then
//! encoder, counting the samples) and [`fix_wav_sizes`] for whole WAV
//! responses (the crate's WAV header is the open-ended one of a stream).

pub use qwen3_tts_encode::{
    available_formats, change_tempo, encoder, AudioFormat, Error, StreamEncoder, TempoStream,
    MAX_SPEED, MIN_SPEED, WAV_OPEN_ENDED_SIZE,
};

/// Size of the canonical header the WAV encoder writes.
pub const WAV_HEADER_LEN: usize = 44;

/// A response's audio path for a stream: the tempo change (a pass-through at
/// speed 1, so the samples stay bit-identical), then the encoder. Counts the
/// samples handed to the encoder (after the tempo change).
pub struct Output {
    tempo: TempoStream,
    encoder: Box<dyn StreamEncoder>,
    samples: usize,
}

impl Output {
    /// `format` at `sample_rate`, at `speed` (checked by the crate).
    pub fn new(format: AudioFormat, sample_rate: u32, speed: f32) -> Result<Self, Error> {
        Ok(Output {
            tempo: TempoStream::new(sample_rate, speed)?,
            encoder: encoder(format, sample_rate)?,
            samples: 0,
        })
    }

    /// Encodes the next generated samples; returns the bytes that are ready.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>, Error> {
        let stretched = self.tempo.push(samples);
        self.samples += stretched.len();
        self.encoder.push(&stretched)
    }

    /// Ends the stream: the last bytes and the samples encoded in all.
    pub fn finish(self) -> Result<(Vec<u8>, usize), Error> {
        let Output {
            tempo,
            mut encoder,
            samples,
        } = self;
        let rest = tempo.finish();
        let mut bytes = encoder.push(&rest)?;
        bytes.extend(encoder.finish()?);
        Ok((bytes, samples + rest.len()))
    }
}

/// A whole response's audio: at speed 1 encoded as it comes (the same bytes
/// as the stream gives, but the WAV sizes); at another speed collected and
/// changed in tempo as one buffer ([`change_tempo`]), then encoded.
pub struct Whole {
    format: AudioFormat,
    sample_rate: u32,
    speed: f32,
    kind: WholeKind,
}

enum WholeKind {
    Direct(Output),
    Buffered(Vec<f32>),
}

impl Whole {
    /// `format` at `sample_rate`, at `speed` (checked by the crate).
    pub fn new(format: AudioFormat, sample_rate: u32, speed: f32) -> Result<Self, Error> {
        let kind = if speed == 1.0 {
            WholeKind::Direct(Output::new(format, sample_rate, speed)?)
        } else {
            // Checks the format, rate and speed now rather than at the end.
            Output::new(format, sample_rate, speed)?;
            WholeKind::Buffered(Vec::new())
        };
        Ok(Whole {
            format,
            sample_rate,
            speed,
            kind,
        })
    }

    /// Takes the next generated samples; returns the bytes encoded so far.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>, Error> {
        match &mut self.kind {
            WholeKind::Direct(out) => out.push(samples),
            WholeKind::Buffered(all) => {
                all.extend_from_slice(samples);
                Ok(Vec::new())
            }
        }
    }

    /// The rest of the file, and the samples encoded in all. The caller
    /// appends the rest to what [`push`](Self::push) returned and passes the
    /// whole to [`fix_wav_sizes`] (a no-op but for WAV).
    pub fn finish(self) -> Result<(Vec<u8>, usize), Error> {
        match self.kind {
            WholeKind::Direct(out) => out.finish(),
            WholeKind::Buffered(all) => {
                let stretched = change_tempo(&all, self.sample_rate, self.speed)?;
                let mut enc = encoder(self.format, self.sample_rate)?;
                let mut bytes = enc.push(&stretched)?;
                bytes.extend(enc.finish()?);
                Ok((bytes, stretched.len()))
            }
        }
    }
}

/// A whole WAV file written by the WAV [`StreamEncoder`] with the sizes of its
/// RIFF and data chunks patched in (for a response that is sent complete).
/// Other bytes, and data over 4 GiB (which keeps the open-ended sizes), are
/// returned unchanged.
pub fn fix_wav_sizes(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= WAV_HEADER_LEN && &bytes[0..4] == b"RIFF" && &bytes[36..40] == b"data" {
        let Ok(data) = u32::try_from(bytes.len() - WAV_HEADER_LEN) else {
            return bytes;
        };
        let Some(riff) = data.checked_add(36) else {
            return bytes;
        };
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        bytes[40..44].copy_from_slice(&data.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_stream_then_fixed() {
        let mut e = encoder(AudioFormat::Wav, 24000).unwrap();
        let mut bytes = e.push(&[0.0, 1.0]).unwrap();
        assert_eq!(&bytes[4..8], &WAV_OPEN_ENDED_SIZE.to_le_bytes());
        bytes.extend(e.push(&[-1.0]).unwrap());
        bytes.extend(e.finish().unwrap());
        let fixed = fix_wav_sizes(bytes);
        assert_eq!(fixed.len(), 44 + 6);
        assert_eq!(&fixed[40..44], &6u32.to_le_bytes());
        assert_eq!(&fixed[4..8], &42u32.to_le_bytes());
        assert_eq!(&fixed[46..48], &32767i16.to_le_bytes());
    }

    #[test]
    fn output_at_speed_one_is_the_plain_encoder() {
        let samples: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        for &format in AudioFormat::ALL {
            let mut out = Output::new(format, 24000, 1.0).unwrap();
            let mut bytes = Vec::new();
            for c in samples.chunks(1234) {
                bytes.extend(out.push(c).unwrap());
            }
            let (tail, n) = out.finish().unwrap();
            bytes.extend(tail);
            assert_eq!(n, samples.len(), "{format}");
            let mut enc = encoder(format, 24000).unwrap();
            let mut want = Vec::new();
            for c in samples.chunks(1234) {
                want.extend(enc.push(c).unwrap());
            }
            want.extend(enc.finish().unwrap());
            assert!(bytes == want, "{format}");
        }
    }

    #[test]
    fn speed_changes_the_count() {
        let samples = vec![0.1f32; 24000];
        let mut w = Whole::new(AudioFormat::Pcm, 24000, 2.0).unwrap();
        assert!(w.push(&samples).unwrap().is_empty());
        let (bytes, n) = w.finish().unwrap();
        assert_eq!((n, bytes.len()), (12000, 24000));
        let mut out = Output::new(AudioFormat::Pcm, 24000, 2.0).unwrap();
        let mut bytes = out.push(&samples).unwrap();
        let (tail, m) = out.finish().unwrap();
        bytes.extend(tail);
        assert_eq!(m, 12000);
        assert_eq!(bytes.len(), 2 * m);
        assert!(Output::new(AudioFormat::Pcm, 24000, 4.5).is_err());
    }
}
