//! Prompt (prefill) construction for every mode of the family (spec/07 §1–3):
//! CustomVoice speakers, VoiceDesign instructions, Base x-vector and ICL
//! cloning; streaming and non-streaming text layouts.

use crate::config::{ModelType, TtsConfig};
use crate::error::{Error, Result};
use crate::talker::Talker;
use crate::text_tokenizer::TextTokenizer;

/// Whose voice to use.
#[derive(Clone, Debug, PartialEq)]
pub enum Voice {
    /// No speaker (VoiceDesign; CustomVoice with an empty speaker).
    None,
    /// A preset speaker of a CustomVoice model (case-insensitive name).
    Speaker(String),
    /// Base: clone from a speaker-encoder x-vector only.
    XVector(Vec<f32>),
    /// Base: in-context cloning from the reference's codes and transcript.
    Icl {
        x_vector: Vec<f32>,
        /// Reference frames, 16 codes each.
        ref_codes: Vec<Vec<u32>>,
        ref_text: String,
    },
}

/// What to say and how.
#[derive(Clone, Debug)]
pub struct Request {
    pub text: String,
    /// Language name or "auto" (case-insensitive).
    pub language: String,
    pub voice: Voice,
    /// Instruction (1.7B CustomVoice, VoiceDesign). 0.6B CustomVoice ignores
    /// it, exactly as the reference does.
    pub instruct: Option<String>,
    /// Text layout; `None` takes the reference API's default (voice clone:
    /// streaming; CustomVoice/VoiceDesign: non-streaming).
    pub non_streaming: Option<bool>,
}

/// The talker's input: prefill vectors and the text vectors fed one per
/// generated frame afterwards.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// `len × hidden`, row-major.
    pub prefill: Vec<f32>,
    /// `n × hidden`: `trailing[g]` is added to the input of generated frame g.
    pub trailing: Vec<f32>,
    /// `T(tts_pad)`, added once `trailing` runs out.
    pub tts_pad: Vec<f32>,
    pub hidden: usize,
    /// Token ids of the target text template, the reference text and the
    /// instruction (for inspection and tests).
    pub input_ids: Vec<u32>,
    pub ref_ids: Vec<u32>,
    pub instruct_ids: Vec<u32>,
}

impl Prompt {
    pub fn len(&self) -> usize {
        self.prefill.len() / self.hidden
    }
    pub fn is_empty(&self) -> bool {
        self.prefill.is_empty()
    }
    /// The text vector for generated frame `g`.
    pub fn trailing_vector(&self, g: usize) -> &[f32] {
        let n = self.trailing.len() / self.hidden;
        if g < n {
            &self.trailing[g * self.hidden..(g + 1) * self.hidden]
        } else {
            &self.tts_pad
        }
    }
}

/// Python-style slice `v[a:b]` with negative indices, clamped.
fn py_slice(v: &[u32], a: isize, b: isize) -> &[u32] {
    let n = v.len() as isize;
    let fix = |i: isize| if i < 0 { (n + i).max(0) } else { i.min(n) } as usize;
    let (a, b) = (fix(a), fix(b));
    if a >= b {
        &[]
    } else {
        &v[a..b]
    }
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// Rows `i` of a row-major `n × h` matrix.
fn row(m: &[f32], h: usize, i: usize) -> &[f32] {
    &m[i * h..(i + 1) * h]
}

/// Builds the prompt for `req` with `talker`'s embeddings.
pub fn build(
    cfg: &TtsConfig,
    tok: &TextTokenizer,
    talker: &mut Talker,
    req: &Request,
) -> Result<Prompt> {
    let h = cfg.talker.hidden;
    let err = |m: String| Error::Other(m);

    // --- validate the request against the model's abilities (reference API rules)
    match (&req.voice, cfg.model_type) {
        (Voice::Speaker(_), ModelType::Base) => {
            return Err(err("Base models clone a voice from reference audio; preset speakers need a CustomVoice model".into()))
        }
        (Voice::Speaker(_), ModelType::VoiceDesign) => {
            return Err(err("VoiceDesign models take no speaker; describe the voice with an instruction".into()))
        }
        (Voice::XVector(_) | Voice::Icl { .. }, t) if t != ModelType::Base => {
            return Err(err("voice cloning from reference audio needs a Base model".into()))
        }
        (Voice::None, ModelType::Base) => {
            return Err(err("Base models need reference audio (an x-vector) to clone a voice".into()))
        }
        _ => {}
    }
    if cfg.model_type == ModelType::Base && req.instruct.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(err(
            "Base models take no instruction (the reference's voice-clone API has none)".into(),
        ));
    }
    let language = req.language.to_lowercase();
    let mut lang_id = cfg.language_id(&language).ok_or_else(|| {
        err(format!(
            "unsupported language '{}' (supported: {})",
            req.language,
            cfg.supported_languages().join(", ")
        ))
    })?;
    let speaker = match &req.voice {
        Voice::Speaker(name) if !name.is_empty() => Some(cfg.speaker(name).ok_or_else(|| {
            let names: Vec<_> = cfg.speakers.iter().map(|s| s.name.as_str()).collect();
            err(format!(
                "unknown speaker '{name}' (available: {})",
                names.join(", ")
            ))
        })?),
        _ => None,
    };
    // Dialect speakers speak their dialect when Chinese or auto is asked for.
    if let Some(dialect) = speaker.and_then(|s| s.dialect.as_ref()) {
        if language == "chinese" || language == "auto" {
            lang_id = Some(cfg.language_id(dialect).flatten().ok_or_else(|| {
                err(format!(
                    "speaker dialect '{dialect}' is not in the language table"
                ))
            })?);
        }
    }
    let instruct = match cfg.model_type {
        ModelType::CustomVoice if cfg.model_size.contains("0b6") => None,
        ModelType::Base => None,
        _ => req.instruct.clone().filter(|s| !s.is_empty()),
    };
    let non_streaming = req
        .non_streaming
        .unwrap_or(cfg.model_type != ModelType::Base);

    // --- text pieces
    let input_ids = tok.encode(&format!(
        "<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>assistant\n",
        req.text
    ))?;
    let instruct_ids = match &instruct {
        Some(i) => tok.encode(&format!("<|im_start|>user\n{i}<|im_end|>\n"))?,
        None => Vec::new(),
    };
    let specials = talker.text_embed(&[cfg.text.tts_bos, cfg.text.tts_eos, cfg.text.tts_pad])?;
    let (tts_bos, tts_eos, tts_pad) = (
        row(&specials, h, 0).to_vec(),
        row(&specials, h, 1).to_vec(),
        row(&specials, h, 2).to_vec(),
    );

    // --- codec column K = [prefix…, speaker?, pad, bos]
    let c = &cfg.codec;
    let mut codec_ids = match lang_id {
        None => vec![c.nothink, c.think_bos, c.think_eos],
        Some(l) => vec![c.think, c.think_bos, l, c.think_eos],
    };
    let spk_slot = codec_ids.len();
    if let Some(s) = speaker {
        codec_ids.push(s.codec_id);
    }
    codec_ids.extend([c.pad, c.bos]);
    let mut k_col = talker.codec_embed(&codec_ids)?;
    let x_vector = match &req.voice {
        Voice::XVector(x) | Voice::Icl { x_vector: x, .. } => Some(x),
        _ => None,
    };
    if let Some(x) = x_vector {
        if x.len() != h {
            return Err(err(format!(
                "x-vector has {} values, the model needs {h}",
                x.len()
            )));
        }
        // The x-vector takes the speaker slot.
        let mut with = k_col[..spk_slot * h].to_vec();
        with.extend_from_slice(x);
        with.extend_from_slice(&k_col[spk_slot * h..]);
        k_col = with;
    }
    let n_k = k_col.len() / h;

    // --- head: instruction, role, control
    let mut prefill = Vec::new();
    if !instruct_ids.is_empty() {
        prefill.extend(talker.text_embed(&instruct_ids)?);
    }
    prefill.extend(talker.text_embed(py_slice(&input_ids, 0, 3))?);
    for j in 0..n_k - 1 {
        let mut v = if j < n_k - 2 {
            tts_pad.clone()
        } else {
            tts_bos.clone()
        };
        add_into(&mut v, row(&k_col, h, j));
        prefill.extend(v);
    }
    let codec_bos = row(&k_col, h, n_k - 1).to_vec();
    let codec_pad = row(&k_col, h, n_k - 2).to_vec();
    let text_ids = py_slice(&input_ids, 3, -5).to_vec();

    let mut trailing = Vec::new();
    let mut ref_ids = Vec::new();
    match &req.voice {
        Voice::Icl {
            ref_codes,
            ref_text,
            ..
        } => {
            ref_ids = tok.encode(&format!("<|im_start|>assistant\n{ref_text}<|im_end|>\n"))?;
            let mut all_text = py_slice(&ref_ids, 3, -2).to_vec();
            all_text.extend(&text_ids);
            let mut text_icl = talker.text_embed(&all_text)?;
            text_icl.extend(&tts_eos);
            let mut codec_icl = codec_bos.clone();
            codec_icl.extend(talker.frame_embeds(ref_codes)?);
            let (a, b) = (text_icl.len() / h, codec_icl.len() / h);
            if non_streaming {
                for k in 0..a {
                    let mut v = row(&text_icl, h, k).to_vec();
                    add_into(&mut v, &codec_pad);
                    prefill.extend(v);
                }
                for k in 0..b {
                    let mut v = row(&codec_icl, h, k).to_vec();
                    add_into(&mut v, &tts_pad);
                    prefill.extend(v);
                }
                trailing = tts_pad.clone();
            } else {
                for k in 0..b {
                    let mut v = if k < a {
                        row(&text_icl, h, k).to_vec()
                    } else {
                        tts_pad.clone()
                    };
                    add_into(&mut v, row(&codec_icl, h, k));
                    prefill.extend(v);
                }
                trailing = if a > b {
                    text_icl[b * h..].to_vec()
                } else {
                    tts_pad.clone()
                };
            }
        }
        _ if non_streaming => {
            if !text_ids.is_empty() {
                let t = talker.text_embed(&text_ids)?;
                for k in 0..text_ids.len() {
                    let mut v = row(&t, h, k).to_vec();
                    add_into(&mut v, &codec_pad);
                    prefill.extend(v);
                }
            }
            let mut v = tts_eos.clone();
            add_into(&mut v, &codec_pad);
            prefill.extend(v);
            let mut v = tts_pad.clone();
            add_into(&mut v, &codec_bos);
            prefill.extend(v);
            trailing = tts_pad.clone();
        }
        _ => {
            let mut first = talker.text_embed(py_slice(&input_ids, 3, 4))?;
            add_into(&mut first, &codec_bos);
            prefill.extend(first);
            let rest = py_slice(&input_ids, 4, -5);
            if !rest.is_empty() {
                trailing = talker.text_embed(rest)?;
            }
            trailing.extend(&tts_eos);
        }
    }
    Ok(Prompt {
        prefill,
        trailing,
        tts_pad,
        hidden: h,
        input_ids,
        ref_ids,
        instruct_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::py_slice;

    #[test]
    fn python_slices() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(py_slice(&v, 0, 3), &[1, 2, 3]);
        assert_eq!(py_slice(&v, 3, -5), &[] as &[u32]);
        assert_eq!(py_slice(&v, 3, 4), &[4]);
        assert_eq!(py_slice(&v, 4, -5), &[] as &[u32]);
        assert_eq!(py_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3, -5), &[4, 5]);
    }
}
