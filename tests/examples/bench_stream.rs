//! Streaming figures of `Synthesizer::synthesize_stream`: time to first audio
//! from the request (model loaded, voice prepared as a `.qvoice` would be),
//! the per-frame production time, and for a player that starts playing at
//! the first chunk the number of underruns and the smallest real-time margin.
//!
//!     bench_stream --tts F --tokenizer F --ref-audio WAV [--ref-text TEXT] [--frames 50]
//!         [--threads 2] [--runs 3] [--first-chunk-frames 1] [--chunk-frames 12]
//!         [--vocoder-threads 0] [--text TEXT] [--device auto|cpu|vulkan[:N]|cuda[:N]|metal]
//!
//! With `--ref-text` the voice is cloned in context (ICL), else x-vector only.
//!
//! `--vocoder-threads` 0 keeps the vocoder interleaved with generation on
//! the same threads; n > 0 runs it concurrently on its own n threads.
//!
//! Prints one JSON object: medians over the runs, after a first request
//! whose time to first audio is reported as `first_audio_cold_ms` (the
//! later ones start from the voice's warm state: its prompt prefix and, for
//! ICL, the vocoder's state after the reference), and the prefill's own
//! rows and milliseconds per row.

use std::path::PathBuf;
use std::time::Instant;

use qwen3_tts::audio;
use qwen3_tts::pipeline::{GenerateOptions, StreamOptions, Synthesizer};
use qwen3_tts::prompt::Request;

/// Said before the text, one per run, so that no two runs share their text's start.
const OPENINGS: [&str; 4] = ["Good morning.", "Listen.", "Right, so:", "One more time:"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = qwen3_tts_tests::ExampleArgs::from_env();
    let get = |k: &str| args.get(k);
    let num = |k: &str, d: usize| args.num(k, d);
    let tts = PathBuf::from(get("tts").expect("--tts"));
    let tokenizer = PathBuf::from(get("tokenizer").expect("--tokenizer"));
    let ref_audio = PathBuf::from(get("ref-audio").expect("--ref-audio"));
    let (frames, threads, runs) = (num("frames", 50), num("threads", 2), num("runs", 3));
    let stream = StreamOptions {
        first_chunk_frames: num("first-chunk-frames", 1),
        chunk_frames: num("chunk-frames", 12),
    };
    let text =
        get("text").unwrap_or("Hello there, this is a benchmark of the speech engine.".into());

    let (device, device_name) = args.device();
    let mut synth = Synthesizer::load_on(&tts, &tokenizer, threads, device.as_ref()).expect("load");
    let vocoder_threads = num("vocoder-threads", 0);
    synth.set_vocoder_threads(vocoder_threads);
    let clip = audio::load_resampled(&ref_audio, 24_000).expect("reference audio");
    let ref_text = get("ref-text");
    let voice = synth
        .clone_voice(&clip.samples, ref_text.as_deref())
        .expect("clone")
        .voice(ref_text.is_none());
    let req = Request {
        text,
        language: "English".into(),
        voice,
        instruct: None,
        non_streaming: None,
    };
    let mut opts = GenerateOptions::from_config(&synth.model.config).greedy();
    opts.set_max_new_tokens(frames + 1);
    opts.min_new_tokens = frames + 1;
    let rate = synth.vocoder.sample_rate() as f64;

    let (mut first, mut per_frame, mut underruns, mut margin, mut rtf) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut prompt_ms, mut prefill_ms, mut first_frame_ms) = (vec![], vec![], vec![]);
    let (mut prefill_rows, mut all_rows) = (vec![], vec![]);
    let mut cold_first_audio = 0.0;
    for run in 0..=runs {
        let start = Instant::now();
        // (arrival s after the request, seconds of audio in the chunk)
        let mut chunks: Vec<(f64, f64)> = Vec::new();
        // Each run says something else (a request of its own, not a repeat
        // whose whole prompt the session still holds): the voice's part is
        // reused, the text's computed.
        let req = Request {
            text: format!("{} {}", OPENINGS[run % OPENINGS.len()], req.text),
            ..req.clone()
        };
        let prompt_rows = synth.session().prompt(&req).expect("prompt").len();
        let summary = synth
            .synthesize_stream(&req, &opts, &stream, |c| {
                chunks.push((start.elapsed().as_secs_f64(), c.samples.len() as f64 / rate));
                Ok(())
            })
            .expect("stream");
        let total = start.elapsed().as_secs_f64();
        if run == 0 {
            // The session's first request: graphs built, no prompt rows to reuse.
            cold_first_audio = summary.first_audio * 1000.0;
            continue;
        }
        // A player starting at the first chunk with audio: chunk k must
        // arrive before the audio of the chunks before it has played out.
        let t0 = summary.first_audio;
        let (mut queued, mut under, mut worst) = (0.0, 0, f64::INFINITY);
        for &(at, secs) in chunks.iter().filter(|c| c.1 > 0.0) {
            if queued > 0.0 {
                let slack = t0 + queued - at;
                worst = worst.min(slack);
                if slack < 0.0 {
                    under += 1;
                }
            }
            queued += secs;
        }
        first.push(summary.first_audio * 1000.0);
        prompt_ms.push(summary.timings.prompt * 1000.0);
        prefill_ms.push(summary.timings.decode.prefill * 1000.0);
        prefill_rows.push((prompt_rows - summary.timings.decode.prefill_reused) as f64);
        all_rows.push(prompt_rows as f64);
        first_frame_ms.push(summary.timings.decode.first_frame * 1000.0);
        per_frame.push(summary.timings.generate / frames as f64 * 1000.0);
        underruns.push(under as f64);
        margin.push(worst * 1000.0);
        rtf.push(total / (summary.samples as f64 / rate));
    }
    println!(
        "{}",
        serde_json::json!({
            "tts": tts, "device": device_name, "threads": threads, "vocoder_threads": vocoder_threads, "frames": frames, "runs": runs,
            "first_chunk_frames": stream.first_chunk_frames, "chunk_frames": stream.chunk_frames,
            "first_audio_cold_ms": cold_first_audio,
            "first_audio_ms": median(first),
            "prompt_ms": median(prompt_ms),
            "prefill_ms": median(prefill_ms.clone()),
            "prompt_rows": median(all_rows),
            "prefill_rows": median(prefill_rows.clone()),
            "prefill_ms_per_row": median(prefill_ms) / median(prefill_rows),
            "first_frame_ms": median(first_frame_ms),
            "generate_ms_per_frame": median(per_frame),
            "underruns": median(underruns),
            "min_margin_ms": median(margin),
            "rtf": median(rtf),
        })
    );
}
