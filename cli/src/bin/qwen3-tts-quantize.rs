//! `qwen3-tts-quantize in.gguf out.gguf --type q8_0|q6_k|q5_k|q4_k|f16|f32`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qwen3_tts::gguf_schema::parse_file_type;
use qwen3_tts::model_file::Overwrite;
use qwen3_tts_cli::{summary_text, WriteBar};

const EXAMPLES: &str = "\
Examples:
  # a Q4_K model from an F16 one (metadata copied; norms, convolutions and codebooks keep their rules)
  qwen3-tts-quantize models/tts-f16.gguf models/tts-q4_k.gguf --type q4_k";

#[derive(Parser, Debug)]
#[command(
    name = "qwen3-tts-quantize",
    version,
    about = "Re-quantize a qwen3-tts GGUF file",
    after_help = EXAMPLES
)]
struct Cli {
    /// Input GGUF (tts-*.gguf or tokenizer-*.gguf).
    input: PathBuf,
    /// Output GGUF.
    output: PathBuf,
    /// Target type: f32, f16, q8_0, q6_k, q5_k or q4_k (norms stay F32; convs and codebooks F16; embeddings/heads ≥ Q8_0).
    #[arg(long = "type", value_parser = parse_file_type)]
    ty: qwen3_tts::ggml::GgmlType,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overwrite = if cli.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let mut bar = WriteBar::new(cli.quiet);
    let result = qwen3_tts_quantize::requantize_with_progress(
        &cli.input,
        &cli.output,
        cli.ty,
        overwrite,
        &mut |e| bar.update(e),
    );
    bar.finish();
    match result {
        Ok(s) => {
            print!("{}", summary_text(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qwen3-tts-quantize: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
