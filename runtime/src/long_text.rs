//! Long text: cut into parts the model says comfortably, one utterance each.
//!
//! The model speaks one prompt as one utterance; over a long one the voice
//! drifts and a missed end code costs more. A text longer than
//! [`DEFAULT_MAX_PART`] is cut at sentence ends (Latin `. ! ? …` followed by
//! a space, CJK `。！？` anywhere), never inside a number (`3.14`, `1,000`)
//! or after an abbreviation or an initial (`Dr.`, `e.g.`, `J. K.`);
//! neighbouring sentences are packed into one part up to the limit; a
//! sentence over the limit is cut at clauses (`, ; :` and `，、；：`), then
//! between words, and a run without spaces (CJK) as a last resort by
//! length. A blank line ends a paragraph, and a part. Each part's
//! [`Boundary`] sets the pause after it when the parts' audio is joined
//! ([`Synthesizer::synthesize_long`]).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::pipeline::{
    AudioChunk, GenerateOptions, Progress, Stop, StreamOptions, Synthesizer, Timings,
};
use crate::prompt::Request;

/// Longest part, in [`text_weight`] units: about 300 Latin characters
/// (50 words, ~18 s of speech) or 100 CJK characters (~22 s).
pub const DEFAULT_MAX_PART: usize = 300;

/// How a part ends, which sets the pause after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// Inside an over-long sentence (at a clause, or between words).
    Clause,
    Sentence,
    Paragraph,
    /// The end of the text.
    End,
}

impl Boundary {
    /// Silence after a part that ends here: a breath inside a sentence,
    /// a sentence's pause, a longer one between paragraphs.
    pub fn pause_seconds(self) -> f64 {
        match self {
            Boundary::Clause => 0.15,
            Boundary::Sentence => 0.35,
            Boundary::Paragraph => 0.7,
            Boundary::End => 0.0,
        }
    }
}

/// One utterance of a long text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextPart {
    pub text: String,
    pub boundary: Boundary,
}

/// Whether `c` is written without spaces between words and spoken at
/// about a syllable a character: Han, kana, Hangul, CJK punctuation.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{303F}' // CJK punctuation
        | '\u{3040}'..='\u{30FF}' // kana
        | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{AC00}'..='\u{D7AF}' // Hangul syllables
        | '\u{FF00}'..='\u{FFEF}' // full-width forms
        | '\u{20000}'..='\u{2FFFF}')
}

/// A text's length as speaking time, roughly: a CJK character takes about
/// three Latin characters' time.
pub fn text_weight(text: &str) -> usize {
    text.chars().map(|c| if is_cjk(c) { 3 } else { 1 }).sum()
}

/// Cuts `text` into parts of at most `max_weight` ([`text_weight`]) each
/// (0: never cut). A text within the limit, without blank lines, is one
/// part, unchanged.
pub fn split_text(text: &str, max_weight: usize) -> Vec<TextPart> {
    let paragraphs = paragraphs(text);
    if max_weight == 0 || (paragraphs.len() <= 1 && text_weight(text) <= max_weight) {
        return vec![TextPart {
            text: text.to_string(),
            boundary: Boundary::End,
        }];
    }
    let mut parts = Vec::new();
    for paragraph in paragraphs {
        let mut packer = Packer::new(max_weight);
        for sentence in sentences(&paragraph) {
            if text_weight(&sentence) <= max_weight {
                packer.add(&sentence, Boundary::Sentence, &mut parts);
            } else {
                for piece in cut_long(&sentence, max_weight) {
                    packer.add(&piece, Boundary::Clause, &mut parts);
                }
            }
        }
        packer.finish(&mut parts);
        if let Some(last) = parts.last_mut() {
            last.boundary = Boundary::Paragraph;
        }
    }
    // A piece of control or invisible characters only has nothing to say
    // (and would be refused as a request of its own).
    parts.retain(|p| crate::prompt::has_speech(&p.text));
    match parts.last_mut() {
        Some(last) => last.boundary = Boundary::End,
        None => {
            return vec![TextPart {
                text: text.to_string(),
                boundary: Boundary::End,
            }]
        }
    }
    parts
}

/// Packs consecutive pieces into parts up to the limit.
struct Packer {
    max: usize,
    text: String,
    /// How the last piece in `text` ends.
    ends: Boundary,
}

impl Packer {
    fn new(max: usize) -> Self {
        Self {
            max,
            text: String::new(),
            ends: Boundary::Sentence,
        }
    }

    fn add(&mut self, piece: &str, ends: Boundary, parts: &mut Vec<TextPart>) {
        let joined = join(&self.text, piece);
        if !self.text.is_empty() && text_weight(&joined) > self.max {
            self.finish(parts);
            self.text = piece.to_string();
        } else {
            self.text = joined;
        }
        self.ends = ends;
    }

    fn finish(&mut self, parts: &mut Vec<TextPart>) {
        if !self.text.is_empty() {
            parts.push(TextPart {
                text: std::mem::take(&mut self.text),
                boundary: self.ends,
            });
        }
    }
}

/// `a` then `b`, with a space between unless CJK meets CJK.
fn join(a: &str, b: &str) -> String {
    match (a.chars().last(), b.chars().next()) {
        (None, _) => b.to_string(),
        (Some(x), Some(y)) if is_cjk(x) && is_cjk(y) => format!("{a}{b}"),
        _ => format!("{a} {b}"),
    }
}

/// The text's paragraphs (split at blank lines), each on one line: line
/// breaks inside a paragraph become spaces (none between CJK characters),
/// runs of whitespace one space.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        current = join(&current, &line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Closing quotes and brackets that stay with the sentence before them.
fn is_closing(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '」' | '』' | '）' | '】' | '》' | '〉'
    )
}

/// Words after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "cf", "no", "fig",
    "vol", "pp", "approx", "dept", "gen", "gov", "sgt", "capt", "lt", "col", "rev", "mt", "ft",
    "inc", "ltd", "co", "corp",
];

/// Whether the full stop at `chars[i]` follows an abbreviation or an
/// initial (one letter).
fn after_abbreviation(chars: &[char], i: usize) -> bool {
    let start = chars[..i]
        .iter()
        .rposition(|c| c.is_whitespace() || *c == '(' || *c == '"')
        .map_or(0, |p| p + 1);
    let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    (letters == 1 && word.chars().all(|c| c.is_alphabetic()))
        || ABBREVIATIONS.contains(&word.as_str())
        // U.S., a.m.: a dotted abbreviation
        || (word.contains('.') && word.split('.').all(|w| w.chars().count() == 1))
}

/// A paragraph's sentences.
fn sentences(paragraph: &str) -> Vec<String> {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let cjk_end = matches!(c, '。' | '！' | '？' | '．' | '…');
        let latin_end = matches!(c, '.' | '!' | '?');
        if !(cjk_end || latin_end) {
            i += 1;
            continue;
        }
        // The terminator run ("?!", "...") and closing quotes after it.
        let mut end = i + 1;
        while end < chars.len()
            && (matches!(chars[end], '.' | '!' | '?' | '。' | '！' | '？' | '…')
                || is_closing(chars[end]))
        {
            end += 1;
        }
        let at_space = end == chars.len() || chars[end].is_whitespace();
        let next = chars[end..].iter().find(|c| !c.is_whitespace());
        let ends = if cjk_end && c != '…' {
            true
        } else {
            at_space
                && match c {
                    '.' if end == i + 1 => {
                        !after_abbreviation(&chars, i) && !next.is_some_and(|n| n.is_lowercase())
                    }
                    // An ellipsis (…, ...) mid-sentence goes on in lower case.
                    '.' | '…' => !next.is_some_and(|n| n.is_lowercase()),
                    _ => true,
                }
        };
        if ends {
            push_trimmed(&mut out, &chars[start..end]);
            start = end;
        }
        i = end;
    }
    push_trimmed(&mut out, &chars[start..]);
    out
}

fn push_trimmed(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
}

/// Cuts a sentence over the limit at clauses, then words, then by length.
fn cut_long(sentence: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for clause in clauses(sentence) {
        if text_weight(&clause) <= max {
            out.push(clause);
            continue;
        }
        let mut packer = Packer::new(max);
        let mut parts = Vec::new();
        for word in clause.split(' ') {
            if text_weight(word) <= max {
                packer.add(word, Boundary::Clause, &mut parts);
            } else {
                for piece in cut_by_length(word, max) {
                    packer.add(&piece, Boundary::Clause, &mut parts);
                }
            }
        }
        packer.finish(&mut parts);
        out.extend(parts.into_iter().map(|p| p.text));
    }
    out
}

/// A sentence's clauses: cut after `, ; :` followed by a space (so not
/// inside `1,000` or `10:30`), after `，、；：`, and before a spaced dash.
fn clauses(sentence: &str) -> Vec<String> {
    let chars: Vec<char> = sentence.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let spaced = chars.get(i + 1).is_some_and(|c| c.is_whitespace());
        let cut_after = matches!(chars[i], '，' | '、' | '；' | '：')
            || (matches!(chars[i], ',' | ';' | ':') && spaced)
            || (matches!(chars[i], '—' | '–') && spaced && i > 0 && chars[i - 1] == ' ');
        if cut_after {
            push_trimmed(&mut out, &chars[start..=i]);
            start = i + 1;
        }
    }
    push_trimmed(&mut out, &chars[start..]);
    out
}

/// A run without spaces cut into pieces of at most `max`, not inside a
/// number where that can be helped.
fn cut_by_length(word: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut weight = 0;
    for c in word.chars() {
        let w = if is_cjk(c) { 3 } else { 1 };
        // (punctuation stays with the piece before it, over the limit)
        if weight + w > max && !piece.is_empty() && c.is_alphanumeric() {
            // Back off to before a number the cut would split.
            let digits = piece
                .chars()
                .rev()
                .take_while(|d| d.is_ascii_digit())
                .count();
            let keep = if c.is_ascii_digit() && digits > 0 && digits < piece.chars().count() {
                let split = piece
                    .char_indices()
                    .rev()
                    .nth(digits - 1)
                    .map_or(0, |(b, _)| b);
                piece.split_off(split)
            } else {
                String::new()
            };
            out.push(std::mem::replace(&mut piece, keep));
            weight = text_weight(&piece);
        }
        piece.push(c);
        weight += w;
    }
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

/// The seed of part `index` of a long text: the request's own for the
/// first part (so that a text of one part is the plain synthesis), then a
/// fresh stream per part drawn from it (splitmix64), so that one seed
/// gives the whole text and each part can be reproduced alone.
pub fn part_seed(seed: u64, index: usize) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The request and options of part `index` of a long text.
pub fn part_request(
    req: &Request,
    opts: &GenerateOptions,
    part: &TextPart,
    index: usize,
) -> (Request, GenerateOptions) {
    let mut opts = opts.clone();
    opts.seed = part_seed(opts.seed, index);
    let req = Request {
        text: part.text.clone(),
        ..req.clone()
    };
    (req, opts)
}

/// Samples of silence after a part that ends at `boundary`.
pub fn pause_samples(boundary: Boundary, sample_rate: u32) -> usize {
    (boundary.pause_seconds() * sample_rate as f64).round() as usize
}

/// What [`Synthesizer::synthesize_long`] tells as it goes.
#[derive(Debug)]
pub enum LongEvent<'a> {
    /// Part `index` (of `count`) begins.
    Part {
        index: usize,
        count: usize,
        text: &'a str,
    },
    /// Offline: frames of the current part generated so far.
    Frames(usize),
    /// Audio continuing the previous chunk: a part's (in chunks when
    /// streaming, whole otherwise), or the pause after it. `frames` counts
    /// the current part's; `last` marks the text's last chunk.
    Audio(AudioChunk<'a>),
}

/// One part of a long synthesis.
#[derive(Clone, Copy, Debug)]
pub struct PartSummary {
    pub frames: usize,
    /// Its samples (the pause after it aside).
    pub samples: usize,
    pub stop: Stop,
    pub seed: u64,
}

/// What [`Synthesizer::synthesize_long`] produced besides its audio.
#[derive(Clone, Debug)]
pub struct LongSummary {
    pub sample_rate: u32,
    /// Samples delivered, pauses included.
    pub samples: usize,
    pub parts: Vec<PartSummary>,
    /// The parts' timings, summed.
    pub timings: Timings,
    /// Seconds from the call to the first audio.
    pub first_audio: f64,
}

impl LongSummary {
    pub fn frames(&self) -> usize {
        self.parts.iter().map(|p| p.frames).sum()
    }

    /// The runaway guard when it stopped any part, else the first part's
    /// reason that is not the end code, else the end code.
    pub fn stop(&self) -> Stop {
        let stops = || self.parts.iter().map(|p| p.stop);
        stops()
            .find(|s| *s == Stop::RunawayGuard)
            .or_else(|| stops().find(|s| *s != Stop::EndCode))
            .unwrap_or(Stop::EndCode)
    }
}

fn add_timings(sum: &mut Timings, t: &Timings) {
    sum.prompt += t.prompt;
    sum.generate += t.generate;
    sum.vocode += t.vocode;
    let (s, d) = (&mut sum.decode, &t.decode);
    s.prefill += d.prefill;
    s.prefill_reused += d.prefill_reused;
    s.talker += d.talker;
    s.talker_steps += d.talker_steps;
    s.predictor += d.predictor;
    s.predictor_frames += d.predictor_frames;
    if s.first_frame == 0.0 {
        s.first_frame = d.first_frame;
    }
}

impl Synthesizer {
    /// Speaks `parts` ([`split_text`] of `req.text`) one after another in
    /// `req`'s voice (the same speaker, x-vector or ICL prompt for every
    /// part; part i seeded with [`part_seed`]), each part exactly the
    /// synthesis of its text alone ([`Synthesizer::synthesize`], or with
    /// `stream` [`Synthesizer::synthesize_stream`]), with the pause of its
    /// [`Boundary`] after it. Audio goes to `on_event` as each part (or
    /// chunk) is ready and is not kept: memory stays that of one part. An
    /// error from `on_event` stops the synthesis and is returned.
    pub fn synthesize_long(
        &mut self,
        req: &Request,
        opts: &GenerateOptions,
        parts: &[TextPart],
        stream: Option<&StreamOptions>,
        mut on_event: impl FnMut(LongEvent) -> Result<()>,
    ) -> Result<LongSummary> {
        if parts.is_empty() {
            return Err(Error::invalid("text", "there is no text to speak"));
        }
        let t0 = Instant::now();
        let sample_rate = self.vocoder.sample_rate();
        let mut summary = LongSummary {
            sample_rate,
            samples: 0,
            parts: Vec::with_capacity(parts.len()),
            timings: Timings::default(),
            first_audio: 0.0,
        };
        let mut first_audio = None;
        for (index, part) in parts.iter().enumerate() {
            on_event(LongEvent::Part {
                index,
                count: parts.len(),
                text: &part.text,
            })?;
            let (part_req, part_opts) = part_request(req, opts, part, index);
            let last_part = index + 1 == parts.len();
            let offset = summary.samples;
            let done = match stream {
                Some(stream) => {
                    let s = self.synthesize_stream(&part_req, &part_opts, stream, |chunk| {
                        if first_audio.is_none() && !chunk.samples.is_empty() {
                            first_audio = Some(t0.elapsed().as_secs_f64());
                        }
                        on_event(LongEvent::Audio(AudioChunk {
                            first_sample: offset + chunk.first_sample,
                            last: chunk.last && last_part,
                            ..chunk
                        }))
                    })?;
                    add_timings(&mut summary.timings, &s.timings);
                    (s.frames.len(), s.samples, s.stop)
                }
                None => {
                    let mut failed = Ok(());
                    let s = self.synthesize(&part_req, &part_opts, |p| {
                        if let (Progress::Frames(n), Ok(())) = (p, &failed) {
                            failed = on_event(LongEvent::Frames(n));
                        }
                    })?;
                    failed?;
                    add_timings(&mut summary.timings, &s.timings);
                    if first_audio.is_none() && !s.samples.is_empty() {
                        first_audio = Some(t0.elapsed().as_secs_f64());
                    }
                    on_event(LongEvent::Audio(AudioChunk {
                        samples: &s.samples,
                        first_sample: offset,
                        frames: s.frames.len(),
                        last: last_part,
                    }))?;
                    (s.frames.len(), s.samples.len(), s.stop)
                }
            };
            let (frames, samples, stop) = done;
            summary.samples += samples;
            summary.parts.push(PartSummary {
                frames,
                samples,
                stop,
                seed: part_opts.seed,
            });
            if !last_part {
                let pause = vec![0.0; pause_samples(part.boundary, sample_rate)];
                on_event(LongEvent::Audio(AudioChunk {
                    samples: &pause,
                    first_sample: summary.samples,
                    frames,
                    last: false,
                }))?;
                summary.samples += pause.len();
            }
        }
        summary.first_audio = first_audio.unwrap_or_else(|| t0.elapsed().as_secs_f64());
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(parts: &[TextPart]) -> Vec<&str> {
        parts.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn a_short_text_is_one_part_unchanged() {
        let text = "  Hello there.\nHow are you?  ";
        let parts = split_text(text, DEFAULT_MAX_PART);
        assert_eq!(
            parts,
            vec![TextPart {
                text: text.to_string(),
                boundary: Boundary::End
            }]
        );
        assert_eq!(split_text(&"word ".repeat(500), 0).len(), 1);
    }

    #[test]
    fn sentences_are_packed_up_to_the_limit() {
        let text = "One two three. Four five six! Seven eight nine? Ten eleven.";
        let parts = split_text(text, 30);
        assert_eq!(
            texts(&parts),
            [
                "One two three. Four five six!",
                "Seven eight nine? Ten eleven."
            ]
        );
        assert_eq!(parts[0].boundary, Boundary::Sentence);
        assert_eq!(parts[1].boundary, Boundary::End);
        for p in &parts {
            assert!(text_weight(&p.text) <= 30, "{p:?}");
        }
    }

    #[test]
    fn no_cut_inside_numbers_abbreviations_or_initials() {
        let text = "Dr. Smith paid $3.14 for No. 5 at 10:30 a.m. today. J. K. Rowling wrote it, \
                    e.g. this one. The U.S. team won 1,000,000 points. Next one.";
        let parts = split_text(text, 60);
        assert_eq!(
            texts(&parts),
            [
                "Dr. Smith paid $3.14 for No. 5 at 10:30 a.m. today.",
                "J. K. Rowling wrote it, e.g. this one.",
                "The U.S. team won 1,000,000 points. Next one."
            ]
        );
    }

    #[test]
    fn cjk_sentences_split_without_spaces_and_weigh_more() {
        assert_eq!(text_weight("你好"), 6);
        let text = "今天天气很好。我们去公园散步吧！你觉得怎么样？";
        let parts = split_text(text, 30);
        assert_eq!(
            texts(&parts),
            ["今天天气很好。", "我们去公园散步吧！", "你觉得怎么样？"]
        );
        // Closing quotes stay with their sentence.
        let parts = split_text("他说：“走吧。”然后走了。", 21);
        assert_eq!(texts(&parts), ["他说：“走吧。”", "然后走了。"]);
    }

    #[test]
    fn paragraphs_end_parts_and_lines_are_joined() {
        let text = "First line\nof the paragraph.\n\n  \nSecond paragraph.\n第一行\n第二行。";
        let parts = split_text(text, 300);
        assert_eq!(
            texts(&parts),
            [
                "First line of the paragraph.",
                "Second paragraph. 第一行第二行。"
            ]
        );
        assert_eq!(parts[0].boundary, Boundary::Paragraph);
        assert_eq!(parts[1].boundary, Boundary::End);
        assert!(Boundary::Paragraph.pause_seconds() > Boundary::Sentence.pause_seconds());
        assert_eq!(Boundary::End.pause_seconds(), 0.0);
    }

    #[test]
    fn a_long_sentence_is_cut_at_clauses_then_words_then_length() {
        let text = "alpha beta gamma, delta epsilon zeta; eta theta iota kappa lambda mu nu xi";
        let parts = split_text(text, 20);
        assert_eq!(
            texts(&parts),
            [
                "alpha beta gamma,",
                "delta epsilon zeta;",
                "eta theta iota kappa",
                "lambda mu nu xi"
            ]
        );
        assert!(parts[..3].iter().all(|p| p.boundary == Boundary::Clause));
        let parts = split_text("一二三四五六七八九十，一二三四五六七八九十一二三", 15);
        assert_eq!(
            texts(&parts),
            [
                "一二三四五",
                "六七八九十，",
                "一二三四五",
                "六七八九十",
                "一二三"
            ]
        );
        // A digit run is not cut where a cut before it will do.
        let parts = split_text("abcdefgh12345", 10);
        assert_eq!(texts(&parts), ["abcdefgh", "12345"]);
    }

    #[test]
    fn no_part_is_left_without_speech() {
        // Found by the `text` fuzz target: runs of NULs and control
        // characters after the sentences.
        let text = "Hello there. 今天天气很好。\0\0\0\0\0\0\0\0 \u{7}\0\0\0\0\0\0";
        for max in [5, 10, 20, 30, 40] {
            let parts = split_text(text, max);
            assert!(
                parts.iter().all(|p| crate::prompt::has_speech(&p.text)),
                "max {max}: {parts:?}"
            );
            assert_eq!(parts.last().map(|p| p.boundary), Some(Boundary::End));
        }
        let nothing = "\u{7}\0 \0\n\n\u{200B}".repeat(30);
        assert_eq!(texts(&split_text(&nothing, 40)), [nothing.as_str()]);
    }

    #[test]
    fn every_character_of_speech_is_kept() {
        let text = "Mr. Brown's 2nd test... it works?! Yes: \"quoted.\" 中文，句子。End";
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        for max in [5, 12, 40, 300] {
            let parts = split_text(text, max);
            let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
            assert_eq!(squash(&joined), squash(text), "max {max}");
        }
    }
}
