#![no_main]
// cargo fuzz run text: the same target as the stable driver's (scripts/fuzz.sh).
libfuzzer_sys::fuzz_target!(|data: &[u8]| qwen3_tts_tests::fuzz::run("text", data));
