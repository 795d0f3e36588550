//! Long text: `Synthesizer::synthesize_long` speaks `long_text::split_text`'s
//! parts one after another, each exactly the synthesis of its text alone
//! (with the part's seed), joined with the pause of its boundary; streamed
//! it gives the offline samples; a text of one part is the plain synthesis.

use qwen3_tts::ggml::GgmlType;
use qwen3_tts::long_text::{
    part_request, part_seed, pause_samples, split_text, Boundary, LongEvent, TextPart,
    DEFAULT_MAX_PART,
};
use qwen3_tts::pipeline::{GenerateOptions, StreamOptions, Synthesizer};
use qwen3_tts::prompt::{Request, Voice};
use qwen3_tts::Error;
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, max_abs_diff, serial};

fn synthesizer(dir: &std::path::Path) -> Synthesizer {
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::F32, dir);
    let tok = convert_tiny_tokenizer(GgmlType::F32, dir);
    Synthesizer::load(tts, tok, 2).unwrap()
}

/// Sampled, exactly `frames` frames a part.
fn options(synth: &Synthesizer, frames: usize) -> GenerateOptions {
    let mut o = GenerateOptions::from_config(&synth.model.config);
    o.seed = 1234;
    o.set_max_new_tokens(frames + 1);
    o.min_new_tokens = frames + 1;
    o
}

fn request(text: &str) -> Request {
    Request {
        text: text.into(),
        language: "english".into(),
        voice: Voice::Speaker("ryan".into()),
        instruct: None,
        non_streaming: None,
    }
}

/// What a long synthesis delivered: the joined samples, and each part's
/// text and `(first sample, samples)` span.
struct Delivered {
    samples: Vec<f32>,
    parts: Vec<(String, usize)>,
    last_seen: bool,
}

fn run_long(
    synth: &mut Synthesizer,
    req: &Request,
    opts: &GenerateOptions,
    parts: &[TextPart],
    stream: Option<&StreamOptions>,
) -> (Delivered, qwen3_tts::long_text::LongSummary) {
    let mut d = Delivered {
        samples: Vec::new(),
        parts: Vec::new(),
        last_seen: false,
    };
    let summary = synth
        .synthesize_long(req, opts, parts, stream, |event| {
            match event {
                LongEvent::Part { index, count, text } => {
                    assert_eq!((index, count), (d.parts.len(), parts.len()));
                    d.parts.push((text.to_string(), d.samples.len()));
                }
                LongEvent::Audio(chunk) => {
                    assert!(!d.last_seen, "nothing after the last chunk");
                    assert_eq!(chunk.first_sample, d.samples.len(), "chunks are contiguous");
                    d.samples.extend_from_slice(chunk.samples);
                    d.last_seen = chunk.last;
                }
                LongEvent::Frames(_) => assert!(stream.is_none(), "frames only offline"),
            }
            Ok(())
        })
        .unwrap();
    assert!(d.last_seen, "a last chunk");
    assert_eq!(summary.samples, d.samples.len());
    (d, summary)
}

#[test]
fn each_part_is_its_own_synthesis_joined_with_pauses_offline_and_streamed() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut synth = synthesizer(tmp.path());
    let text = "The first sentence is here. And a second one follows it!\n\n\
                A new paragraph, with a clause; and another clause, to cut.";
    let parts = split_text(text, 40);
    let boundaries: Vec<Boundary> = parts.iter().map(|p| p.boundary).collect();
    assert_eq!(
        boundaries,
        [
            Boundary::Sentence,
            Boundary::Paragraph,
            Boundary::Clause,
            Boundary::End
        ],
        "{parts:?}"
    );
    let req = request(text);
    let opts = options(&synth, 6);
    let rate = synth.vocoder.sample_rate();

    let (offline, summary) = run_long(&mut synth, &req, &opts, &parts, None);
    assert_eq!(summary.parts.len(), parts.len());
    assert_eq!(summary.frames(), 6 * parts.len());
    assert_eq!(summary.parts[0].seed, opts.seed, "part 0 keeps the seed");
    // Each part: exactly its text alone with its seed, then its pause.
    for (i, part) in parts.iter().enumerate() {
        let (part_req, part_opts) = part_request(&req, &opts, part, i);
        assert_eq!(part_opts.seed, part_seed(opts.seed, i));
        assert_eq!(part_req.voice, req.voice, "the same voice");
        let alone = synth.synthesize(&part_req, &part_opts, |_| {}).unwrap();
        let (text, start) = &offline.parts[i];
        assert_eq!(text, &part.text);
        let got = &offline.samples[*start..*start + alone.samples.len()];
        assert_eq!(got, &alone.samples[..], "part {i} is its synthesis alone");
        assert_eq!(summary.parts[i].samples, alone.samples.len());
        let pause_end = offline
            .parts
            .get(i + 1)
            .map_or(offline.samples.len(), |p| p.1);
        let pause = &offline.samples[*start + alone.samples.len()..pause_end];
        assert_eq!(
            pause.len(),
            pause_samples(part.boundary, rate),
            "part {i} pause"
        );
        assert!(pause.iter().all(|&s| s == 0.0));
    }
    // The parts are not one another's copies (each has its own seed).
    let (a, b) = (offline.parts[0].1, offline.parts[1].1);
    let n = summary.parts[0].samples.min(summary.parts[1].samples);
    assert!(max_abs_diff(&offline.samples[a..a + n], &offline.samples[b..b + n]) > 1e-3);

    // Streamed: the same samples, chunk by chunk.
    let stream = StreamOptions {
        first_chunk_frames: 1,
        chunk_frames: 4,
    };
    let (streamed, s) = run_long(&mut synth, &req, &opts, &parts, Some(&stream));
    assert_eq!(s.frames(), summary.frames());
    assert_eq!(streamed.samples.len(), offline.samples.len());
    let diff = max_abs_diff(&streamed.samples, &offline.samples);
    assert!(diff <= 1e-6, "streamed vs offline: max |diff| {diff:e}");
    assert!(
        s.first_audio < summary.first_audio,
        "streaming starts sooner"
    );
}

#[test]
fn a_text_of_one_part_is_the_plain_synthesis() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut synth = synthesizer(tmp.path());
    let text = "A short sentence.";
    let parts = split_text(text, DEFAULT_MAX_PART);
    assert_eq!(parts.len(), 1);
    let req = request(text);
    let opts = options(&synth, 5);
    let (long, summary) = run_long(&mut synth, &req, &opts, &parts, None);
    let plain = synth.synthesize(&req, &opts, |_| {}).unwrap();
    assert_eq!(long.samples, plain.samples);
    assert_eq!(summary.frames(), plain.frames.len());
    assert_eq!(summary.stop(), plain.stop);
}

#[test]
fn an_error_from_the_caller_stops_the_rest() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut synth = synthesizer(tmp.path());
    let parts = split_text("One sentence here. Two sentences here. Three of them.", 20);
    assert_eq!(parts.len(), 3);
    let opts = options(&synth, 3);
    let mut started = 0;
    let result = synth.synthesize_long(&request("unused"), &opts, &parts, None, |e| {
        match e {
            LongEvent::Part { .. } => started += 1,
            LongEvent::Audio(_) if started == 2 => return Err(Error::Cancelled),
            _ => {}
        }
        Ok(())
    });
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(started, 2, "no part after the failure");
    assert!(synth
        .synthesize_long(&request("x"), &opts, &[], None, |_| Ok(()))
        .is_err());
}
