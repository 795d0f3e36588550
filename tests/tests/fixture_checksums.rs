//! The committed fixtures are exactly what `scripts/make_fixtures.sh` recorded
//! in `tests/fixtures/SHA256SUMS`, and nothing is left out of that list.

use std::collections::BTreeSet;
use std::path::Path;

use qwen3_tts_tests::fixtures;
use sha2::{Digest, Sha256};

fn listed_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            listed_files(&e.path(), &format!("{name}/"), out);
        } else if meta.file_type().is_symlink() && e.path().is_dir() {
            // Directory symlinks (speech_tokenizer) are covered by their target.
        } else if name != "SHA256SUMS" {
            out.insert(name);
        }
    }
}

#[test]
fn fixtures_match_recorded_checksums() {
    let root = fixtures();
    let sums = std::fs::read_to_string(root.join("SHA256SUMS")).expect("tests/fixtures/SHA256SUMS");
    let mut recorded = BTreeSet::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, path) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("bad SHA256SUMS line: {line}"));
        let bytes = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got, hash,
            "{path}: checksum differs from SHA256SUMS (regenerate with scripts/make_fixtures.sh)"
        );
        recorded.insert(path.to_string());
    }
    let mut present = BTreeSet::new();
    listed_files(&root, "", &mut present);
    let unlisted: Vec<_> = present.difference(&recorded).collect();
    assert!(
        unlisted.is_empty(),
        "fixtures missing from SHA256SUMS: {unlisted:?}"
    );
    assert!(
        recorded.len() > 50,
        "suspiciously few fixtures: {}",
        recorded.len()
    );
}
