//! `qwen3-tts-server`: see docs/server.md.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = qwen3_tts_server::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    // A small runtime: the engine thread is the only compute.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qwen3-tts-server: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(qwen3_tts_server::serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qwen3-tts-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}
