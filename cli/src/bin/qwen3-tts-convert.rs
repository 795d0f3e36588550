//! `qwen3-tts-convert`: Hugging Face Qwen3-TTS checkpoint dir → GGUF files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qwen3_tts::gguf_schema::parse_file_type;
use qwen3_tts::model_file::Overwrite;
use qwen3_tts_cli::{summary_text, WriteBar};
use qwen3_tts_convert::{convert_with_progress, Options, Parts};

const EXAMPLES: &str = "\
Examples:
  # tts-q8_0.gguf + tokenizer-f16.gguf into models/
  qwen3-tts-convert --input Qwen3-TTS-12Hz-0.6B-CustomVoice --outdir models --type q8_0
  # another type of the same model next to it (an identical tokenizer file is kept)
  qwen3-tts-convert --input Qwen3-TTS-12Hz-0.6B-CustomVoice --outdir models --type q4_k --tts-only";

#[derive(Parser, Debug)]
#[command(
    name = "qwen3-tts-convert",
    version,
    about = "Convert a Hugging Face Qwen3-TTS checkpoint directory to tts-<type>.gguf and tokenizer-<type>.gguf",
    after_help = EXAMPLES
)]
struct Cli {
    /// Checkpoint directory (config.json, model.safetensors, vocab.json, merges.txt, speech_tokenizer/).
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// Output directory.
    #[arg(long, short = 'o', default_value = "models")]
    outdir: PathBuf,
    /// Type of the TTS model file: f32, f16, q8_0, q6_k, q5_k or q4_k.
    #[arg(long = "type", default_value = "q8_0", value_parser = parse_file_type)]
    ty: qwen3_tts::ggml::GgmlType,
    /// Type of the speech-tokenizer file (convolutions and codebooks stay F16 unless f32).
    #[arg(long, default_value = "f16", value_parser = parse_file_type)]
    tokenizer_type: qwen3_tts::ggml::GgmlType,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
    /// Write only the TTS model file.
    #[arg(long, conflicts_with = "tokenizer_only")]
    tts_only: bool,
    /// Write only the speech-tokenizer file.
    #[arg(long)]
    tokenizer_only: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options {
        input: cli.input,
        outdir: cli.outdir,
        ty: cli.ty,
        tokenizer_ty: cli.tokenizer_type,
        overwrite: if cli.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        },
        parts: match (cli.tts_only, cli.tokenizer_only) {
            (true, _) => Parts::TtsOnly,
            (_, true) => Parts::TokenizerOnly,
            _ => Parts::Both,
        },
    };
    let start = std::time::Instant::now();
    let mut bar = WriteBar::new(cli.quiet);
    let result = convert_with_progress(&opts, &mut |e| bar.update(e));
    bar.finish();
    match result {
        Ok(summaries) => {
            for s in &summaries {
                print!("{}", summary_text(s));
            }
            println!("done in {:.1} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qwen3-tts-convert: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
