//! `qwen3-tts-convert` as a user runs it: bad input gives a clear error, a
//! non-zero exit code and no output files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(format!("tiny-{variant}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qwen3-tts-convert"))
        .args(args)
        .output()
        .unwrap()
}

fn quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qwen3-tts-quantize"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies a checkpoint dir, following the fixtures' symlinks.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn converts_a_checkpoint_and_refuses_to_overwrite() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let input = fixture("0.6B-CustomVoice");
    let r = run(&[
        "--input",
        input.to_str().unwrap(),
        "--outdir",
        o,
        "--type",
        "q8_0",
        "-q",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let mut files = entries(out.path());
    files.sort();
    assert_eq!(files, ["tokenizer-f16.gguf", "tts-q8_0.gguf"]);
    let summary = String::from_utf8_lossy(&r.stdout);
    assert!(
        summary.contains("tts-q8_0.gguf") && summary.contains("q8_0:"),
        "{summary}"
    );

    let before = std::fs::read(out.path().join("tts-q8_0.gguf")).unwrap();
    let r = run(&[
        "--input",
        input.to_str().unwrap(),
        "--outdir",
        o,
        "--type",
        "q8_0",
    ]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("already exists") && stderr(&r).contains("--force"),
        "{}",
        stderr(&r)
    );
    assert_eq!(
        std::fs::read(out.path().join("tts-q8_0.gguf")).unwrap(),
        before
    );
    let r = run(&[
        "--input",
        input.to_str().unwrap(),
        "--outdir",
        o,
        "--type",
        "q8_0",
        "--force",
        "-q",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
}

#[test]
fn missing_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("ckpt");
    copy_dir(&fixture("0.6B-Base"), &input);
    std::fs::remove_file(input.join("config.json")).unwrap();
    let out = tmp.path().join("out");
    let r = run(&["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(e.contains("config.json") && e.contains("not found"), "{e}");
    assert!(entries(&out).is_empty());
}

#[test]
fn speech_tokenizer_dir_given_as_the_model() {
    let out = tempfile::tempdir().unwrap();
    let input = fixture("0.6B-Base").join("speech_tokenizer");
    let r = run(&[
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(e.contains("speech-tokenizer directory"), "{e}");
    assert!(entries(out.path()).is_empty());
}

#[test]
fn truncated_safetensors_leaves_nothing_behind() {
    for (which, file) in [
        ("model", "model.safetensors"),
        ("tokenizer", "speech_tokenizer/model.safetensors"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("ckpt");
        copy_dir(&fixture("1.7B-Base"), &input);
        let path = input.join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let out = tmp.path().join("out");
        let r = run(&[
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            "f16",
        ]);
        assert!(!r.status.success(), "{which}");
        let e = stderr(&r);
        assert!(
            e.contains("model.safetensors")
                && (e.contains("truncated") || e.contains("not a valid")),
            "{which}: {e}"
        );
        assert!(
            entries(&out).is_empty(),
            "{which}: left {:?}",
            entries(&out)
        );
    }
}

#[test]
fn unknown_type() {
    let out = tempfile::tempdir().unwrap();
    let input = fixture("0.6B-Base");
    let r = run(&[
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
        "--type",
        "q3_k",
    ]);
    assert_eq!(r.status.code(), Some(2));
    let e = stderr(&r);
    assert!(
        e.contains("unknown type 'q3_k'") && e.contains("q8_0, q6_k, q5_k, q4_k"),
        "{e}"
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn not_a_directory() {
    let r = run(&["-i", "/nonexistent/qwen3", "-o", "/tmp"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("/nonexistent/qwen3"), "{}", stderr(&r));
}

#[test]
fn short_t_is_not_the_type() {
    // `-t` is the tokenizer file in qwen3-tts-run; here only --type sets the type.
    let out = tempfile::tempdir().unwrap();
    let input = fixture("0.6B-Base");
    let o = out.path().to_str().unwrap();
    let r = run(&["-i", input.to_str().unwrap(), "-o", o, "-t", "q8_0"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("unexpected argument '-t'"),
        "{}",
        stderr(&r)
    );
    assert!(entries(out.path()).is_empty());
    let f16 = out.path().join("tts-f16.gguf");
    let q = out.path().join("tts-q8_0.gguf");
    let r = run(&[
        "-i",
        input.to_str().unwrap(),
        "-o",
        o,
        "--type",
        "f16",
        "--tts-only",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(f16.exists());
    let (f, q_s) = (f16.to_str().unwrap(), q.to_str().unwrap());
    let r = quantize(&[f, q_s, "-t", "q8_0"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(!q.exists());
    let r = quantize(&[f, q_s, "--type", "q8_0"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(q.exists());
}

#[test]
fn a_second_type_keeps_the_identical_tokenizer_file() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let input = fixture("0.6B-CustomVoice");
    let input = input.to_str().unwrap();
    let r = run(&["-i", input, "-o", o, "--type", "q8_0", "-q"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let tok = out.path().join("tokenizer-f16.gguf");
    let bytes = std::fs::read(&tok).unwrap();
    let mtime = std::fs::metadata(&tok).unwrap().modified().unwrap();

    let r = run(&["-i", input, "-o", o, "--type", "f16", "-q"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let want = format!("{} exists and is identical: kept", tok.display());
    assert!(
        stdout(&r).contains(&want),
        "'{want}' not in: {}",
        stdout(&r)
    );
    assert!(out.path().join("tts-f16.gguf").exists());
    assert_eq!(std::fs::read(&tok).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&tok).unwrap().modified().unwrap(), mtime);
    let mut files = entries(out.path());
    files.sort();
    assert_eq!(
        files,
        ["tokenizer-f16.gguf", "tts-f16.gguf", "tts-q8_0.gguf"]
    );

    // A tokenizer file with other contents is still refused, and nothing is written.
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&tok, &changed).unwrap();
    let r = run(&["-i", input, "-o", o, "--type", "q4_k", "-q"]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("tokenizer-f16.gguf") && stderr(&r).contains("--force"),
        "{}",
        stderr(&r)
    );
    assert_eq!(std::fs::read(&tok).unwrap(), changed);
    assert!(!out.path().join("tts-q4_k.gguf").exists());
    assert_eq!(entries(out.path()).len(), 3, "{:?}", entries(out.path()));
}

#[test]
fn q4_k_fallbacks_are_reported() {
    // The tiny model's rows (32, 64, 96) do not fit Q4_K's 256-element blocks.
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let input = fixture("0.6B-CustomVoice");
    let r = run(&[
        "-i",
        input.to_str().unwrap(),
        "-o",
        o,
        "--type",
        "q4_k",
        "--tts-only",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let s = stdout(&r);
    for want in [
        "tensors stored as q8_0 instead of q4_k: row length 32 is not a multiple of 256",
        "tensors stored as q8_0 instead of q4_k: row length 64 is not a multiple of 256",
    ] {
        assert!(s.contains(want), "'{want}' not in: {s}");
    }
    // At Q8_0 all of those rows fit.
    let r = run(&[
        "-i",
        input.to_str().unwrap(),
        "-o",
        o,
        "--type",
        "q8_0",
        "--tts-only",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!stdout(&r).contains("instead of q4_k"), "{}", stdout(&r));

    // The quantizer says the same of the same tensors.
    let q8 = out.path().join("tts-q8_0.gguf");
    let q4 = out.path().join("requantized-q4_k.gguf");
    let r = quantize(&[q8.to_str().unwrap(), q4.to_str().unwrap(), "--type", "q4_k"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let q = stdout(&r);
    for line in s.lines().filter(|l| l.contains("instead of")) {
        assert!(q.contains(line), "'{line}' not in: {q}");
    }
}

#[test]
fn help_shows_examples() {
    let h = stdout(&run(&["--help"]));
    assert!(
        h.contains("Examples:") && h.contains("qwen3-tts-convert --input"),
        "{h}"
    );
    let h = stdout(&quantize(&["--help"]));
    assert!(
        h.contains("Examples:") && h.contains("qwen3-tts-quantize models/tts-f16.gguf"),
        "{h}"
    );
}
