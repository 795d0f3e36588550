//! The fuzz corpus replayed (issue #15): every input the fuzzers found a
//! fault with, committed to `fuzz/corpus/<target>/` with its fix, and each
//! target's seed file, go through their target again, which must return
//! without a panic (an abort would end this test's process).

use std::panic::{catch_unwind, AssertUnwindSafe};

use qwen3_tts_tests::{fuzz, serial};

#[test]
fn every_corpus_input_and_seed_runs_cleanly() {
    let _g = serial();
    let mut failures = Vec::new();
    let mut inputs = 0;
    for target in fuzz::TARGETS {
        let mut cases = vec![("seed".to_string(), fuzz::seed(target))];
        for (path, bytes) in fuzz::corpus(&fuzz::corpus_dir(target)) {
            cases.push((path.display().to_string(), bytes));
        }
        for (name, bytes) in cases {
            inputs += 1;
            if catch_unwind(AssertUnwindSafe(|| fuzz::run(target, &bytes))).is_err() {
                failures.push(format!("{target}: {name}"));
            }
        }
    }
    println!("{inputs} inputs replayed");
    assert!(failures.is_empty(), "panicked:\n{}", failures.join("\n"));
}
