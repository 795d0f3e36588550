//! The vocoder's cost per push size: a stream fed `n` frames at a time
//! (what a streaming chunk of `n` frames costs), ms per push and per frame,
//! min over the runs, with random codes (the cost does not depend on them).
//!
//!     bench_vocoder_tiles TOKENIZER.gguf [threads 1] [runs 5] [sizes 1,2,4,12,25]

use std::time::Instant;

use qwen3_tts::codec_decoder::CodecDecoder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: bench_vocoder_tiles TOKENIZER.gguf [threads] [runs] [sizes]");
        std::process::exit(2);
    };
    let threads: usize = args.get(2).map_or(1, |t| t.parse().expect("threads"));
    let runs: usize = args.get(3).map_or(5, |t| t.parse().expect("runs"));
    let sizes: Vec<usize> = args
        .get(4)
        .map_or("1,2,4,12,25", String::as_str)
        .split(',')
        .map(|s| s.parse().expect("sizes"))
        .collect();
    let model = std::sync::Arc::new(CodecDecoder::load(path).unwrap_or_else(|e| panic!("{e}")));
    let (nq, cb) = (model.config.num_quantizers, model.config.codebook_size);
    let mut dec = model.session(threads);
    let frames = qwen3_tts_tests::random_frames(50, nq, cb);
    for &n in &sizes {
        let mut best = f64::INFINITY;
        for _ in 0..=runs {
            let mut stream = dec.stream();
            stream.push(&frames[..25]).unwrap(); // some left context
            let t = Instant::now();
            stream.push(&frames[25..25 + n]).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "push of {n:>3} frame(s): {:7.1} ms, {:6.1} ms per frame ({threads} thread(s), min of {runs})",
            best * 1000.0,
            best * 1000.0 / n as f64
        );
    }
}
