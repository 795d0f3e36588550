//! `qwen3-tts-convert`: Hugging Face Qwen3-TTS checkpoint dir → GGUF files.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qwen3_tts::gguf_schema::parse_file_type;
use qwen3_tts::model_file::Overwrite;
use qwen3_tts_convert::{convert, Options, Parts};

#[derive(Parser, Debug)]
#[command(
    name = "qwen3-tts-convert",
    version,
    about = "Convert a Hugging Face Qwen3-TTS checkpoint directory to tts-<type>.gguf and tokenizer-<type>.gguf"
)]
struct Cli {
    /// Checkpoint directory (config.json, model.safetensors, vocab.json, merges.txt, speech_tokenizer/).
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// Output directory.
    #[arg(long, short = 'o', default_value = "models")]
    outdir: PathBuf,
    /// Type of the TTS model file: f32, f16, q8_0 or q4_k.
    #[arg(long = "type", short = 't', default_value = "q8_0", value_parser = parse_file_type)]
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
        progress: !cli.quiet && std::io::stderr().is_terminal(),
    };
    let start = std::time::Instant::now();
    match convert(&opts) {
        Ok(summaries) => {
            for s in &summaries {
                print!("{s}");
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
