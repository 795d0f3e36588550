//! The stable mutation fuzzer over the library's targets (see
//! `qwen3_tts_tests::fuzz_driver`; `scripts/fuzz.sh` runs it).
//!
//!     fuzz --target T [--runs N] [--seconds S] [--timeout 10] [--artifacts DIR] [--seed 1]

fn main() {
    qwen3_tts_tests::fuzz_driver::main(&qwen3_tts_tests::fuzz::SUITE);
}
