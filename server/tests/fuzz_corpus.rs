//! The server's fuzz corpus replayed (issue #15): each target's seed and
//! every input committed to `fuzz/corpus/<target>/` go through the router
//! again without a panic.

mod fuzz_targets;

use std::panic::{catch_unwind, AssertUnwindSafe};

#[test]
fn every_corpus_input_and_seed_gets_an_answer() {
    let mut failures = Vec::new();
    for target in fuzz_targets::TARGETS {
        let mut cases = vec![("seed".to_string(), fuzz_targets::seed(target))];
        for (path, bytes) in
            qwen3_tts_tests::fuzz::corpus(&qwen3_tts_tests::fuzz::corpus_dir(target))
        {
            cases.push((path.display().to_string(), bytes));
        }
        for (name, bytes) in cases {
            if catch_unwind(AssertUnwindSafe(|| fuzz_targets::run(target, &bytes))).is_err() {
                failures.push(format!("{target}: {name}"));
            }
        }
    }
    assert!(failures.is_empty(), "panicked:\n{}", failures.join("\n"));
}
