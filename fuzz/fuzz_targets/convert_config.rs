#![no_main]
// cargo fuzz run convert_config: the same target as the stable driver's (scripts/fuzz.sh).
libfuzzer_sys::fuzz_target!(|data: &[u8]| qwen3_tts_tests::fuzz::run("convert_config", data));
