//! Start-up: flags refused before anything is loaded, a model that cannot
//! be loaded ends the server with an error.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qwen3-tts-server");

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn refused_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let voices = tmp.path().join("v");
    let base = [
        "-m",
        "x.gguf",
        "-t",
        "y.gguf",
        "--port",
        "0",
        "--voices-dir",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.push(voices.to_str().unwrap());
        a.extend(extra);
        run(&a)
    };
    let (ok, err) = with(&["--wyoming-port", "port"]);
    assert!(!ok);
    assert!(err.contains("--wyoming-port"), "{err}");
    let (ok, err) = with(&["--kv-cache", "q4_k"]);
    assert!(!ok);
    assert!(err.contains("unknown KV cache type 'q4_k'"), "{err}");
    let (ok, err) = with(&["--device", "gpu"]);
    assert!(!ok);
    assert!(err.contains("unknown device 'gpu'"), "{err}");
    if !cfg!(feature = "cuda") {
        let (ok, err) = with(&["--device", "cuda:0"]);
        assert!(!ok);
        assert!(
            err.contains("no CUDA backend") && err.contains("--features cuda"),
            "{err}"
        );
    }
    for n in ["0", "100000"] {
        let (ok, err) = with(&["--threads", n]);
        assert!(!ok);
        assert!(err.contains("--threads must be 1 to 512"), "{err}");
    }
    for n in ["0", "33"] {
        let (ok, err) = with(&["--max-batch", n]);
        assert!(!ok);
        assert!(err.contains("--max-batch must be 1 to 32"), "{err}");
    }
    for n in ["=-1", "=lots"] {
        let flag = format!("--voice-cache-mb{n}");
        let (ok, err) = with(&[&flag]);
        assert!(!ok);
        assert!(err.contains("--voice-cache-mb"), "{err}");
    }
    let (ok, err) = with(&["--voice-cache-mb", "2000000"]);
    assert!(!ok);
    assert!(err.contains("--voice-cache-mb must be at most"), "{err}");
    let (ok, err) = with(&["--request-timeout", "0"]);
    assert!(!ok);
    assert!(err.contains("--request-timeout"), "{err}");
    let (ok, err) = with(&["--host", "not a host"]);
    assert!(!ok);
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn a_model_that_cannot_be_loaded_ends_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let voices = tmp.path().join("v");
    let missing = tmp.path().join("missing.gguf");
    let (ok, err) = run(&[
        "-m",
        missing.to_str().unwrap(),
        "-t",
        missing.to_str().unwrap(),
        "--port",
        "0",
        "--voices-dir",
        voices.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("listening on http://127.0.0.1:"), "{err}");
    assert!(
        err.contains("cannot load the model") && err.contains("missing.gguf"),
        "{err}"
    );
}

/// `--list-devices` needs no model: the CPU is always there.
#[test]
fn lists_devices() {
    let o = Command::new(BIN).arg("--list-devices").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.lines().any(|l| l.starts_with("cpu ")), "{out}");
}
