//! `qwen3-tts-quantize in.gguf out.gguf --type q8_0|q4_k|f16|f32`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use qwen3_tts::gguf_schema::parse_file_type;
use qwen3_tts::model_file::Overwrite;

#[derive(Parser, Debug)]
#[command(
    name = "qwen3-tts-quantize",
    version,
    about = "Re-quantize a qwen3-tts GGUF file"
)]
struct Cli {
    /// Input GGUF (tts-*.gguf or tokenizer-*.gguf).
    input: PathBuf,
    /// Output GGUF.
    output: PathBuf,
    /// Target type: f32, f16, q8_0 or q4_k (norms stay F32; convs and codebooks F16; embeddings/heads ≥ Q8_0).
    #[arg(long = "type", short = 't', value_parser = parse_file_type)]
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
    let progress = !cli.quiet && std::io::stderr().is_terminal();
    match qwen3_tts_quantize::requantize(&cli.input, &cli.output, cli.ty, overwrite, progress) {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qwen3-tts-quantize: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
