//! Helpers shared by the cross-crate tests (fixture paths, error measures).

use std::path::PathBuf;

/// The five checkpoint shapes of the family, as committed tiny fixtures.
pub const VARIANTS: [&str; 5] = [
    "0.6B-Base",
    "0.6B-CustomVoice",
    "1.7B-Base",
    "1.7B-CustomVoice",
    "1.7B-VoiceDesign",
];

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The tiny Hugging Face checkpoint dir of a variant.
pub fn tiny_checkpoint(variant: &str) -> PathBuf {
    fixtures().join(format!("tiny-{variant}"))
}

/// ‖got − want‖ / ‖want‖ (0 when both are zero).
pub fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| ((g - w) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}
