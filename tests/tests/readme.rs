//! What the README promises users about inputs matches the code's limits.

use qwen3_tts::pipeline::{MAX_REFERENCE_SECONDS, MIN_REFERENCE_SECONDS};

#[test]
fn readme_states_the_reference_audio_limits() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let text = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let promise = format!("between {MIN_REFERENCE_SECONDS} s and {MAX_REFERENCE_SECONDS} s long");
    assert!(
        text.contains(&promise),
        "README should say reference audio is accepted {promise}"
    );
    assert!(
        !text.contains("10 minutes"),
        "README still promises 10 minutes"
    );
}
