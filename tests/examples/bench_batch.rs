//! Continuous-batching figures of `BatchSynthesizer`: N streamed requests
//! arriving together (x-vector voice, greedy, exactly `--frames` frames,
//! each its own text), decoded in one batch.
//!
//!     bench_batch --tts F --tokenizer F --ref-audio WAV --streams N [--frames 60]
//!         [--threads 2] [--first-chunk-frames 1] [--chunk-frames 12]
//!         [--device auto|cpu|vulkan[:N]|cuda[:N]|metal]
//!
//! Prints one JSON object: aggregate frames per second with the vocoder
//! (end to end) and without it (generation only), each stream's time to
//! first audio after the requests arrived, underruns for a player that
//! starts at a stream's first chunk, and the process's peak RSS. A warm-up
//! batch of the same size runs first (graphs built, vocoder sessions
//! pooled), as on a server that has served requests before.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use qwen3_tts::audio;
use qwen3_tts::batch::{BatchEvent, BatchSynthesizer};
use qwen3_tts::codec_decoder::{CodecDecoder, DecoderOptions};
use qwen3_tts::pipeline::{GenerateOptions, StreamOptions, Synthesizer, TtsModel};
use qwen3_tts::prompt::Request;

const TEXTS: [&str; 8] = [
    "Hello there, this is a benchmark of the speech engine.",
    "The quick brown fox jumps over the lazy dog, twice.",
    "Several streams at once, on one small machine.",
    "Every request should sound exactly as it does alone.",
    "A fourth sentence, of about the same length as the others.",
    "Weather today: cloudy in the morning, sunny later on.",
    "Please hold, your call is important to us.",
    "Reading numbers aloud: one, two, three, four, five.",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per stream: (first audio s, underruns, smallest margin s, vocoder s,
/// talker ms per step, code predictor ms per frame, prefill ms).
type StreamFigures = (f64, usize, f64, f64, f64, f64, f64);

fn run(
    batch: &mut BatchSynthesizer,
    reqs: &[Request],
    opts: &GenerateOptions,
    stream: &StreamOptions,
    rate: f64,
) -> (f64, Vec<StreamFigures>) {
    let start = Instant::now();
    let ids: Vec<u64> = reqs
        .iter()
        .map(|r| batch.join(r, opts, stream).expect("join"))
        .collect();
    // per stream: (arrival s, seconds of audio) of each chunk
    let mut chunks: Vec<Vec<(f64, f64)>> = vec![Vec::new(); reqs.len()];
    let mut times = vec![(0.0, 0.0, 0.0, 0.0); reqs.len()];
    while !batch.is_empty() {
        batch.step(|id, event| {
            let i = ids.iter().position(|&x| x == id).expect("our id");
            match event {
                BatchEvent::Audio(c) if !c.samples.is_empty() => {
                    chunks[i].push((start.elapsed().as_secs_f64(), c.samples.len() as f64 / rate))
                }
                BatchEvent::Audio(_) => {}
                BatchEvent::Done(s) => {
                    let d = s.timings.decode;
                    times[i] = (
                        s.timings.vocode,
                        d.talker * 1000.0 / d.talker_steps.max(1) as f64,
                        d.predictor * 1000.0 / d.predictor_frames.max(1) as f64,
                        d.prefill * 1000.0,
                    )
                }
                BatchEvent::Failed(e) => panic!("stream {i}: {e}"),
            }
        });
    }
    let wall = start.elapsed().as_secs_f64();
    let figures = chunks
        .iter()
        .zip(&times)
        .map(|(c, &(vocode, talker, predictor, prefill))| {
            let t0 = c[0].0;
            let (mut played, mut underruns, mut margin) = (0.0, 0, f64::INFINITY);
            for &(arrival, seconds) in c {
                let due = t0 + played;
                margin = margin.min(due - arrival);
                if arrival > due + 1e-9 {
                    underruns += 1;
                }
                played += seconds;
            }
            (t0, underruns, margin, vocode, talker, predictor, prefill)
        })
        .collect();
    (wall, figures)
}

fn main() {
    let args = qwen3_tts_tests::ExampleArgs::from_env();
    let get = |k: &str| args.get(k);
    let num = |k: &str, d: usize| args.num(k, d);
    let tts = PathBuf::from(get("tts").expect("--tts"));
    let tokenizer = PathBuf::from(get("tokenizer").expect("--tokenizer"));
    let ref_audio = PathBuf::from(get("ref-audio").expect("--ref-audio"));
    let (streams, frames, threads) = (num("streams", 4), num("frames", 60), num("threads", 2));
    let stream = StreamOptions {
        first_chunk_frames: num("first-chunk-frames", 1),
        chunk_frames: num("chunk-frames", 12),
    };
    let (device, device_name) = args.device();
    let model = Arc::new(TtsModel::load_on(&tts, device.as_ref()).expect("load tts"));
    let vocoder = Arc::new(
        CodecDecoder::load_on(&tokenizer, DecoderOptions::default(), device.as_ref())
            .expect("load tokenizer"),
    );
    let voice = {
        let mut synth =
            Synthesizer::with_models(model.clone(), vocoder.clone(), &tokenizer, threads);
        let clip = audio::load_resampled(&ref_audio, 24_000).expect("reference audio");
        synth
            .clone_voice(&clip.samples, None)
            .expect("clone")
            .voice(true)
    };
    let reqs: Vec<Request> = (0..streams)
        .map(|i| Request {
            text: TEXTS[i % TEXTS.len()].into(),
            language: "English".into(),
            voice: voice.clone(),
            instruct: None,
            non_streaming: None,
        })
        .collect();
    let mut opts = GenerateOptions::from_config(&model.config).greedy();
    opts.set_max_new_tokens(frames + 1);
    opts.min_new_tokens = frames + 1;
    let rate = vocoder.sample_rate() as f64;
    let mut batch = BatchSynthesizer::new(model, vocoder, threads, streams);

    // Warm-up: the same batch size for a few frames.
    let mut warm = opts.clone();
    warm.set_max_new_tokens(stream.first_chunk_frames + stream.chunk_frames + 2);
    warm.min_new_tokens = warm.max_new_tokens;
    run(&mut batch, &reqs, &warm, &stream, rate);

    let (wall, figures) = run(&mut batch, &reqs, &opts, &stream, rate);
    let total_frames = (streams * frames) as f64;
    let vocode: f64 = figures.iter().map(|f| f.3).sum();
    let first: Vec<f64> = figures.iter().map(|f| f.0 * 1000.0).collect();
    let underruns: Vec<usize> = figures.iter().map(|f| f.1).collect();
    let margin = figures.iter().map(|f| f.2).fold(f64::INFINITY, f64::min);
    println!(
        "{{\"device\": \"{device_name}\", \"streams\": {streams}, \"frames\": {frames}, \"threads\": {threads}, \
         \"wall_s\": {wall:.2}, \"frames_per_s\": {:.2}, \"gen_frames_per_s\": {:.2}, \
         \"audio_s_per_s\": {:.2}, \"first_audio_ms_median\": {:.0}, \"first_audio_ms_max\": {:.0}, \
         \"underruns\": {underruns:?}, \"min_margin_ms\": {:.0}, \
         \"talker_ms_per_step\": {:.1}, \"predictor_ms_per_frame\": {:.1}, \"prefill_ms_median\": {:.0}, \"peak_rss_mb\": {:.0}}}",
        total_frames / wall,
        total_frames / (wall - vocode),
        total_frames * 0.08 / wall,
        median(first.clone()),
        first.iter().cloned().fold(0.0, f64::max),
        margin * 1000.0,
        median(figures.iter().map(|f| f.4).collect()),
        median(figures.iter().map(|f| f.5).collect()),
        median(figures.iter().map(|f| f.6).collect()),
        qwen3_tts_tests::peak_rss_mb(),
    );
}
