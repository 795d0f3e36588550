//! The stable mutation fuzzer over the server's targets (request bodies
//! and voice uploads through the real router; see `qwen3_tts_tests::fuzz_driver`
//! and `scripts/fuzz.sh`).
//!
//!     fuzz_server --target speech_request|voice_upload [--runs N] [--seconds S] [--timeout 10]

#[path = "../tests/fuzz_targets/mod.rs"]
mod fuzz_targets;

fn main() {
    qwen3_tts_tests::fuzz_driver::main(&fuzz_targets::SUITE);
}
