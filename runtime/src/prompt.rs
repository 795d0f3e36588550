//! Prompt (prefill) construction for every mode of the family, as the
//! reference's `Qwen3TTSForConditionalGeneration.generate` lays it out (see
//! docs/architecture.md): CustomVoice speakers, VoiceDesign instructions,
//! Base x-vector and ICL cloning; streaming and non-streaming text layouts.

use crate::config::{ModelSize, ModelType, TtsConfig};
use crate::error::{Error, Result};
use crate::ggml::StoredTensor;
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

/// Tokens of the chat template around the target text (3 before, 5 after).
const TEMPLATE_TOKENS: usize = 8;

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
    /// Leading prefill rows that depend only on the voice, its language and
    /// instruction, not on the text (the head; for ICL also the rows that
    /// pair the transcript with reference frames): what a voice's warm state
    /// keeps (see [`crate::warm`]).
    pub voice_prefix: usize,
    /// Names the voice's content ([`crate::warm::voice_tag`]).
    pub voice_tag: u64,
}

impl Prompt {
    pub fn len(&self) -> usize {
        self.prefill.len() / self.hidden
    }
    pub fn is_empty(&self) -> bool {
        self.prefill.is_empty()
    }
    /// Tokens of the target text (the template around it aside).
    pub fn text_tokens(&self) -> usize {
        self.input_ids.len().saturating_sub(TEMPLATE_TOKENS)
    }
    /// The rows of [`Prompt::voice_prefix`].
    pub fn voice_rows(&self) -> &[f32] {
        &self.prefill[..self.voice_prefix * self.hidden]
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

/// Rows `i` of a row-major `n × h` matrix.
fn row(m: &[f32], h: usize, i: usize) -> &[f32] {
    &m[i * h..(i + 1) * h]
}

/// The embedding lookups a prompt is made of (the talker's tables, and the
/// code predictor's for ICL reference frames), run on a session's backend.
pub struct Embedder<'a> {
    pub talker: &'a Talker,
    /// Codebook tables 1.. of the code predictor.
    pub group_tables: &'a [StoredTensor],
}

impl Embedder<'_> {
    fn text(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.talker.text_embed(ids)
    }
    fn codec(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.talker.codec_embed(ids)
    }
    fn frames(&self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.talker.frame_embeds(self.group_tables, frames)
    }
}

/// Whether `text` has anything to say: a character that is neither
/// whitespace, nor a control character, nor an invisible format character
/// (zero-width spaces and joiners, direction marks, BOM, soft hyphen).
pub fn has_speech(text: &str) -> bool {
    let invisible = |c: char| {
        matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    };
    text.chars()
        .any(|c| !c.is_whitespace() && !c.is_control() && !invisible(c))
}

/// Checks `req` against what the model can do (the reference API's rules).
pub fn validate(cfg: &TtsConfig, req: &Request) -> Result<()> {
    if !has_speech(&req.text) {
        return Err(Error::invalid(
            "text",
            "nothing to say: the text is empty (or only control characters)",
        ));
    }
    let voice = |reason: &str| Err(Error::invalid("voice", reason));
    match (&req.voice, cfg.model_type) {
        (Voice::Speaker(_), ModelType::Base) => {
            return voice("Base models clone a voice from reference audio; preset speakers need a CustomVoice model")
        }
        (Voice::Speaker(_), ModelType::VoiceDesign) => {
            return voice("VoiceDesign models take no speaker; describe the voice with an instruction")
        }
        (Voice::XVector(_) | Voice::Icl { .. }, t) if t != ModelType::Base => {
            return voice("voice cloning from reference audio needs a Base model")
        }
        (Voice::None, ModelType::Base) => {
            return voice("Base models need reference audio (an x-vector) to clone a voice")
        }
        _ => {}
    }
    if let Voice::XVector(x) | Voice::Icl { x_vector: x, .. } = &req.voice {
        let h = cfg.talker.hidden;
        if x.len() != h {
            return Err(Error::invalid(
                "voice",
                format!("x-vector has {} values, the model needs {h}", x.len()),
            ));
        }
    }
    if cfg.model_type == ModelType::Base && req.instruct.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(Error::invalid(
            "instruct",
            "Base models take no instruction (the reference's voice-clone API has none)",
        ));
    }
    Ok(())
}

/// The codec-side conditioning of a request: language and speaker ids.
struct Conditioning {
    /// `None` for "auto".
    language: Option<u32>,
    /// A CustomVoice preset's codec row.
    speaker: Option<u32>,
    instruct: Option<String>,
    non_streaming: bool,
}

/// Resolves language, speaker (with its dialect), instruction and layout.
fn resolve(cfg: &TtsConfig, req: &Request) -> Result<Conditioning> {
    let language = req.language.to_lowercase();
    let mut lang_id = cfg.language_id(&language).ok_or_else(|| {
        Error::invalid(
            "language",
            format!(
                "unsupported language '{}' (supported: {})",
                req.language,
                cfg.supported_languages().join(", ")
            ),
        )
    })?;
    let speaker = match &req.voice {
        Voice::Speaker(name) if !name.is_empty() => Some(cfg.speaker(name).ok_or_else(|| {
            let names: Vec<_> = cfg.speakers.iter().map(|s| s.name.as_str()).collect();
            Error::invalid(
                "voice",
                format!("unknown speaker '{name}' (available: {})", names.join(", ")),
            )
        })?),
        _ => None,
    };
    // Dialect speakers speak their dialect when Chinese or auto is asked for.
    if let Some(dialect) = speaker.and_then(|s| s.dialect.as_ref()) {
        if language == "chinese" || language == "auto" {
            lang_id = Some(cfg.language_id(dialect).flatten().ok_or_else(|| {
                Error::invalid(
                    "voice",
                    format!("speaker dialect '{dialect}' is not in the language table"),
                )
            })?);
        }
    }
    let instruct = match (cfg.model_type, cfg.model_size) {
        (ModelType::CustomVoice, ModelSize::B0_6) | (ModelType::Base, _) => None,
        _ => req.instruct.clone().filter(|s| !s.is_empty()),
    };
    Ok(Conditioning {
        language: lang_id,
        speaker: speaker.map(|s| s.codec_id),
        instruct,
        non_streaming: req
            .non_streaming
            .unwrap_or(cfg.model_type != ModelType::Base),
    })
}

/// The pieces every layout combines.
struct Pieces {
    h: usize,
    tts_bos: Vec<f32>,
    tts_eos: Vec<f32>,
    tts_pad: Vec<f32>,
    codec_bos: Vec<f32>,
    codec_pad: Vec<f32>,
    /// Ids of the target text (between the role tokens and the template's end).
    text_ids: Vec<u32>,
}

impl Pieces {
    /// `a + b` (two `[hidden]` rows).
    fn sum(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }
}

/// Builds the prompt for `req` with the model's embeddings.
pub fn build(
    cfg: &TtsConfig,
    tok: &TextTokenizer,
    emb: &Embedder,
    req: &Request,
) -> Result<Prompt> {
    validate(cfg, req)?;
    let cond = resolve(cfg, req)?;
    let h = cfg.talker.hidden;

    // --- text pieces: 3 template tokens before the text, 5 after
    let input_ids = tok.encode(&format!(
        "<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>assistant\n",
        req.text
    ))?;
    let instruct_ids = match &cond.instruct {
        Some(i) => tok.encode(&format!("<|im_start|>user\n{i}<|im_end|>\n"))?,
        None => Vec::new(),
    };
    let specials = emb.text(&[cfg.text.tts_bos, cfg.text.tts_eos, cfg.text.tts_pad])?;

    // --- codec column K = [prefix…, speaker?, pad, bos]
    let c = &cfg.codec;
    let mut codec_ids = match cond.language {
        None => vec![c.nothink, c.think_bos, c.think_eos],
        Some(l) => vec![c.think, c.think_bos, l, c.think_eos],
    };
    let spk_slot = codec_ids.len();
    codec_ids.extend(cond.speaker);
    codec_ids.extend([c.pad, c.bos]);
    let mut k_col = emb.codec(&codec_ids)?;
    if let Voice::XVector(x) | Voice::Icl { x_vector: x, .. } = &req.voice {
        // The x-vector takes the speaker slot.
        k_col.splice(spk_slot * h..spk_slot * h, x.iter().copied());
    }
    let n_k = k_col.len() / h;
    let p = Pieces {
        h,
        tts_bos: row(&specials, h, 0).to_vec(),
        tts_eos: row(&specials, h, 1).to_vec(),
        tts_pad: row(&specials, h, 2).to_vec(),
        codec_bos: row(&k_col, h, n_k - 1).to_vec(),
        codec_pad: row(&k_col, h, n_k - 2).to_vec(),
        text_ids: py_slice(&input_ids, 3, -5).to_vec(),
    };

    // --- head: instruction, role, control
    let mut prefill = Vec::new();
    if !instruct_ids.is_empty() {
        prefill.extend(emb.text(&instruct_ids)?);
    }
    prefill.extend(emb.text(py_slice(&input_ids, 0, 3))?);
    for j in 0..n_k - 1 {
        let text = if j < n_k - 2 { &p.tts_pad } else { &p.tts_bos };
        prefill.extend(Pieces::sum(text, row(&k_col, h, j)));
    }

    let head = prefill.len() / h;
    let mut voice_prefix = head;
    let mut ref_ids = Vec::new();
    let trailing = match &req.voice {
        Voice::Icl {
            ref_codes,
            ref_text,
            ..
        } => {
            ref_ids = tok.encode(&format!("<|im_start|>assistant\n{ref_text}<|im_end|>\n"))?;
            let mut all_text = py_slice(&ref_ids, 3, -2).to_vec();
            all_text.extend(&p.text_ids);
            let mut text = emb.text(&all_text)?;
            text.extend(&p.tts_eos);
            let mut codec = p.codec_bos.clone();
            codec.extend(emb.frames(ref_codes)?);
            // Rows of transcript (and reference frames) before the text's.
            let ref_rows = all_text.len() - p.text_ids.len();
            voice_prefix += match cond.non_streaming {
                true => ref_rows,
                false => ref_rows.min(codec.len() / h),
            };
            match cond.non_streaming {
                true => icl_non_streaming(&p, &text, &codec, &mut prefill),
                false => icl_streaming(&p, &text, &codec, &mut prefill),
            }
        }
        _ if cond.non_streaming => non_streaming(&p, emb, &mut prefill)?,
        _ => streaming(&p, emb, &input_ids, &mut prefill)?,
    };
    Ok(Prompt {
        prefill,
        trailing,
        tts_pad: p.tts_pad,
        hidden: h,
        input_ids,
        ref_ids,
        instruct_ids,
        voice_prefix,
        voice_tag: crate::warm::voice_tag(&req.voice),
    })
}

/// Non-streaming text: the whole text with codec pads, then eos and bos.
fn non_streaming(p: &Pieces, emb: &Embedder, prefill: &mut Vec<f32>) -> Result<Vec<f32>> {
    if !p.text_ids.is_empty() {
        let t = emb.text(&p.text_ids)?;
        for k in 0..p.text_ids.len() {
            prefill.extend(Pieces::sum(row(&t, p.h, k), &p.codec_pad));
        }
    }
    prefill.extend(Pieces::sum(&p.tts_eos, &p.codec_pad));
    prefill.extend(Pieces::sum(&p.tts_pad, &p.codec_bos));
    Ok(p.tts_pad.clone())
}

/// Streaming text: the first text token with codec bos; the rest (and eos)
/// is fed one per generated frame.
fn streaming(
    p: &Pieces,
    emb: &Embedder,
    input_ids: &[u32],
    prefill: &mut Vec<f32>,
) -> Result<Vec<f32>> {
    let first = emb.text(py_slice(input_ids, 3, 4))?;
    prefill.extend(Pieces::sum(&first, &p.codec_bos));
    let rest = py_slice(input_ids, 4, -5);
    let mut trailing = if rest.is_empty() {
        Vec::new()
    } else {
        emb.text(rest)?
    };
    trailing.extend(&p.tts_eos);
    Ok(trailing)
}

/// ICL, non-streaming: all text (reference + target) with codec pads, then
/// the reference frames with text pads.
fn icl_non_streaming(p: &Pieces, text: &[f32], codec: &[f32], prefill: &mut Vec<f32>) -> Vec<f32> {
    let h = p.h;
    for k in 0..text.len() / h {
        prefill.extend(Pieces::sum(row(text, h, k), &p.codec_pad));
    }
    for k in 0..codec.len() / h {
        prefill.extend(Pieces::sum(row(codec, h, k), &p.tts_pad));
    }
    p.tts_pad.clone()
}

/// ICL, streaming: text and reference frames side by side; text beyond the
/// frames is fed one per generated frame.
fn icl_streaming(p: &Pieces, text: &[f32], codec: &[f32], prefill: &mut Vec<f32>) -> Vec<f32> {
    let h = p.h;
    let (a, b) = (text.len() / h, codec.len() / h);
    for k in 0..b {
        let t = if k < a { row(text, h, k) } else { &p.tts_pad };
        prefill.extend(Pieces::sum(t, row(codec, h, k)));
    }
    if a > b {
        text[b * h..].to_vec()
    } else {
        p.tts_pad.clone()
    }
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
