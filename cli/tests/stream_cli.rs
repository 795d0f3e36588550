//! `qwen3-tts-run --stream` on the tiny fixture models: a streamed file is
//! byte for byte the non-streamed one, standard output gets an open-ended
//! WAV or raw PCM with the same samples, bad chunk sizes and a terminal
//! standard output are refused before loading.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qwen3_tts::ggml::GgmlType;
use qwen3_tts_tests::{convert_tiny, convert_tiny_tokenizer, serial};

mod common;
use common::{interrupt, run, start_until, stderr, BIN};

/// Tiny CustomVoice models at F32 in `dir`, as path strings.
fn models(dir: &Path) -> (String, String) {
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    (
        s(convert_tiny("0.6B-CustomVoice", GgmlType::F32, dir)),
        s(convert_tiny_tokenizer(GgmlType::F32, dir)),
    )
}

/// A sampled (not greedy) run of `frames` frames with a fixed seed, plus `extra`.
fn synth(tts: &str, tok: &str, frames: usize, extra: &[&str]) -> Output {
    let n = frames.to_string();
    let mut args = vec![
        "-m",
        tts,
        "-t",
        tok,
        "--speaker",
        "ryan",
        "--text",
        "Hello there, streaming.",
        "--seed",
        "1234",
        "--max-frames",
        &n,
        "--min-frames",
        &n,
        "--threads",
        "2",
    ];
    args.extend(extra);
    let o = run(&args);
    assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    o
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn streamed_file_is_byte_identical_to_the_offline_one() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models(tmp.path());
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    for (format, bits, header) in [("s16", 16, 44), ("f32", 32, 68)] {
        let offline = p(&format!("offline-{format}.wav"));
        synth(&tts, &tok, 8, &["--format", format, "-o", &offline]);
        let want = std::fs::read(&offline).unwrap();
        assert_eq!(want.len(), header + 8 * 1920 * bits / 8, "{format}");
        for chunks in [
            &[][..],
            &["--first-chunk-frames", "1", "--chunk-frames", "3"][..],
            &["--first-chunk-frames", "20", "--chunk-frames", "20"][..],
            &["--chunk-frames", "3", "--vocoder-threads", "1"][..],
        ] {
            let streamed = p(&format!("streamed-{format}.wav"));
            let mut extra = vec!["--stream", "--format", format, "--force", "-o", &streamed];
            extra.extend(chunks);
            let o = synth(&tts, &tok, 8, &extra);
            let got = std::fs::read(&streamed).unwrap();
            assert!(got == want, "{format} {chunks:?}: streamed file differs");
            assert!(stderr(&o).contains("first audio after"), "{}", stderr(&o));
            // And a WAV reader takes it.
            let r = hound::WavReader::open(&streamed).unwrap();
            assert_eq!(
                (r.spec().bits_per_sample, r.spec().sample_rate, r.len()),
                (bits as u16, 24000, 8 * 1920)
            );
        }
    }
    // Raw PCM to a file: the 16-bit WAV's data, streamed or not.
    let want = std::fs::read(p("offline-s16.wav")).unwrap();
    for stream in [false, true] {
        let raw = p(&format!("out-{stream}.pcm"));
        let mut extra = vec!["--format", "pcm", "-o", &raw];
        if stream {
            extra.extend(["--stream", "--chunk-frames", "3"]);
        }
        synth(&tts, &tok, 8, &extra);
        assert!(
            std::fs::read(&raw).unwrap() == want[44..],
            "pcm, stream {stream}"
        );
    }
    let parts: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(parts.is_empty(), "temporary files left: {parts:?}");
}

#[test]
fn streamed_stdout_is_open_ended_wav_or_raw_pcm() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models(tmp.path());
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    for (format, data_at) in [("s16", 44), ("f32", 68)] {
        let file = p(&format!("{format}.wav"));
        synth(&tts, &tok, 7, &["--format", format, "-o", &file]);
        let file = std::fs::read(&file).unwrap();
        assert_eq!(u32_at(&file, data_at - 4) as usize, file.len() - data_at);
        let o = synth(
            &tts,
            &tok,
            7,
            &[
                "--stream",
                "--chunk-frames",
                "2",
                "--format",
                format,
                "-o",
                "-",
            ],
        );
        let out = &o.stdout;
        assert_eq!(out.len(), file.len(), "{format}");
        assert_eq!(&out[..4], b"RIFF");
        assert_eq!(u32_at(out, 4), 0xFFFF_FFFF, "{format}: RIFF size");
        assert_eq!(&out[data_at - 8..data_at - 4], b"data");
        assert_eq!(u32_at(out, data_at - 4), 0xFFFF_FFFF, "{format}: data size");
        assert_eq!(&out[8..data_at - 4], &file[8..data_at - 4], "{format}: fmt");
        assert!(
            out[data_at..] == file[data_at..],
            "{format}: samples differ"
        );
        assert!(stderr(&o).contains("stdout: "), "{}", stderr(&o));
    }
    // Raw PCM: exactly the 16-bit file's data chunk, streamed or not.
    let file = std::fs::read(p("s16.wav")).unwrap();
    for extra in [
        &["--stream", "--format", "pcm", "-o", "-"][..],
        &[
            "--stream",
            "--first-chunk-frames",
            "1",
            "--chunk-frames",
            "1",
            "--format",
            "pcm",
            "-o",
            "-",
        ][..],
        &["--format", "pcm", "-o", "-"][..],
    ] {
        let o = synth(&tts, &tok, 7, extra);
        assert!(o.stdout == file[44..], "{extra:?}: not the data chunk");
    }
}

#[test]
fn stream_progress_is_plain_lines_without_a_terminal() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models(tmp.path());
    let out = tmp.path().join("out.wav");
    let o = synth(
        &tts,
        &tok,
        5,
        &[
            "--stream",
            "--chunk-frames",
            "2",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert_eq!(lines[0], "loading…");
    assert_eq!(lines[1], "generating (streaming)…");
    assert!(lines[2].starts_with("first audio after "), "{e}");
    assert!(lines[2].contains(" s from start)"), "{e}");
    for want in [
        "5 frames",
        "first audio after",
        "from start",
        "RTF",
        "seed 1234",
    ] {
        assert!(lines[3].contains(want), "'{want}' not in: {e}");
    }
    let o = synth(
        &tts,
        &tok,
        3,
        &["--stream", "--force", "-q", "-o", out.to_str().unwrap()],
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn bad_chunk_sizes_are_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.gguf");
    let m = missing.to_str().unwrap();
    let out = tmp.path().join("out.wav");
    let o = out.to_str().unwrap();
    let base = [
        "-m",
        m,
        "-t",
        m,
        "-o",
        o,
        "--speaker",
        "ryan",
        "--text",
        "Hi.",
    ];
    for (extra, needle) in [
        (
            &["--stream", "--first-chunk-frames", "0"][..],
            "--first-chunk-frames must be at least 1",
        ),
        (
            &["--stream", "--chunk-frames", "0"][..],
            "--chunk-frames must be at least 1",
        ),
        // Chunk sizes without --stream are a mistake.
        (&["--chunk-frames", "4"][..], "--stream"),
        (&["--first-chunk-frames", "1"][..], "--stream"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        let r = run(&args);
        assert!(!r.status.success(), "{extra:?} succeeded");
        let e = stderr(&r);
        assert!(e.contains(needle), "{extra:?}: '{needle}' not in: {e}");
        assert!(!e.contains("missing.gguf"), "{extra:?}: loaded first: {e}");
        assert!(!out.exists());
    }
}

/// Single-quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn binary_audio_is_not_written_to_a_terminal() {
    // `script` (util-linux) runs the command with a pseudo-terminal as its
    // standard output.
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: no `script` (util-linux) to give the program a terminal");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The model does not exist: refusing without mentioning it shows the
    // check comes before loading.
    let missing = tmp.path().join("missing.gguf");
    let m = missing.to_str().unwrap();
    for extra in [
        &["-o", "-"][..],
        &["--stream", "-o", "-"][..],
        &["--stream", "--format", "pcm", "-o", "-"][..],
    ] {
        let mut cmd: Vec<String> = [BIN, "-m", m, "-t", m, "--speaker", "ryan", "--text", "Hi."]
            .iter()
            .chain(extra)
            .map(|a| sh_quote(a))
            .collect();
        cmd.push("; echo \"[exit $?]\"".into());
        let o = Command::new("script")
            .args(["-qec", &cmd.join(" "), "/dev/null"])
            .output()
            .expect("run script");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(all.contains("[exit 1]"), "{extra:?}: not refused: {all}");
        assert!(
            all.contains("standard output is a terminal") && all.contains("-o FILE"),
            "{extra:?}: {all}"
        );
        assert!(
            !all.contains("missing.gguf"),
            "{extra:?}: loaded first: {all}"
        );
    }
    // The check is about standard output: a terminal on stderr alone is fine
    // (here it gets as far as the missing model).
    let cmd = format!(
        "{} -m {} -t {} --speaker ryan --text Hi. -o - > /dev/null; echo \"[exit $?]\"",
        sh_quote(BIN),
        sh_quote(m),
        sh_quote(m)
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script");
    let all = String::from_utf8_lossy(&o.stdout);
    assert!(all.contains("missing.gguf"), "{all}");
    assert!(!all.contains("is a terminal"), "{all}");
}

#[test]
fn interrupting_a_stream_removes_the_temporary_output() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models(tmp.path());
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("long.wav");
    let (child, lines) = start_until(
        &[
            "-m",
            &tts,
            "-t",
            &tok,
            "--speaker",
            "ryan",
            "--text",
            "A long one.",
            "--max-frames",
            "20000",
            "--min-frames",
            "20000",
            "--threads",
            "1",
            "--stream",
            "-o",
            out.to_str().unwrap(),
        ],
        "first audio",
    );
    let parts: Vec<PathBuf> = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].to_string_lossy().ends_with(".wav.part"));
    // The header and the first chunk are in it already.
    assert!(std::fs::metadata(&parts[0]).unwrap().len() > 44);
    let (status, rest) = interrupt(child, lines);
    assert_eq!(status.code(), Some(130), "{status:?}; stderr: {rest:?}");
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 0);
    assert!(!out.exists());
}
