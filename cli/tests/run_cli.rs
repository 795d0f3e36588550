//! `qwen3-tts-run` as a user runs it (issue #4): tiny fixture models to a
//! WAV equal to the reference pipeline's waveform for the same greedy codes
//! (SNR ≥ 50 dB at F32), and clear errors for bad input.

use std::path::{Path, PathBuf};

use qwen3_tts::ggml::GgmlType;
use qwen3_tts_tests::{
    convert_tiny, convert_tiny_tokenizer, fixtures, frames_of, serial, snr_db, Dump,
};

mod common;
use common::{interrupt, run, start_until, stderr};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).expect("a valid WAV");
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32767.0)
            .collect(),
    };
    (spec, samples)
}

/// Tiny models of `variant` converted at F32 into `dir`: (tts, tokenizer).
fn models(variant: &str, dir: &Path) -> (PathBuf, PathBuf) {
    (
        convert_tiny(variant, GgmlType::F32, dir),
        convert_tiny_tokenizer(GgmlType::F32, dir),
    )
}

/// Runs an end-to-end reference case and compares the waveform.
fn end_to_end(variant: &str, case: &str) {
    let _g = serial();
    let dir = fixtures().join("reference/e2e");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{variant}_{case}.json"))).unwrap(),
    )
    .unwrap();
    let dump = Dump::open(&dir.join(format!("{variant}_{case}.safetensors")));
    let frames = frames_of(&dump.i64("codes")).len();
    let want = dump.f32("wav");
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models(variant, tmp.path());
    let out = tmp.path().join("out.wav");
    let kw = &json["api_kwargs"];
    let n = frames.to_string();
    let mut args = vec![
        "-m",
        tts.to_str().unwrap(),
        "-t",
        tok.to_str().unwrap(),
        "--text",
        kw["text"].as_str().unwrap(),
        "--language",
        kw["language"].as_str().unwrap(),
        "--greedy",
        "--max-frames",
        &n,
        "--min-frames",
        &n,
        "--format",
        "f32",
        "--threads",
        "2",
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(s) = kw["speaker"].as_str() {
        args.extend(["--speaker", s]);
    }
    if let Some(s) = kw["instruct"].as_str() {
        args.extend(["--instruct", s]);
    }
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("RTF"), "summary line: {}", stderr(&o));
    let (spec, got) = read_wav(&out);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 24000, 32)
    );
    assert_eq!(got.len(), frames * 1920);
    let snr = snr_db(&got, &want);
    eprintln!("{variant} {case}: end-to-end SNR {snr:.1} dB");
    assert!(snr >= 50.0, "SNR {snr:.1} dB < 50");

    // Default 16-bit, and standard output gives the same file.
    let out16 = tmp.path().join("out16.wav");
    let fmt = args.iter().position(|a| *a == "--format").unwrap();
    args.drain(fmt..fmt + 2);
    let o_at = args.iter().position(|a| *a == "-o").unwrap();
    args[o_at + 1] = out16.to_str().unwrap();
    assert!(run(&args).status.success());
    let (spec, got16) = read_wav(&out16);
    assert_eq!(spec.bits_per_sample, 16);
    assert!(snr_db(&got16, &want) >= 40.0);
    args[o_at + 1] = "-";
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, std::fs::read(&out16).unwrap());
}

#[test]
fn custom_voice_matches_reference_pipeline() {
    end_to_end("0.6B-CustomVoice", "ryan_english");
}

#[test]
fn bad_input_gives_clear_errors() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", tmp.path());
    let (tts, tok) = (tts.to_str().unwrap(), tok.to_str().unwrap());
    let out = tmp.path().join("out.wav");
    let out_s = out.to_str().unwrap();
    let base = ["--text", "Hello.", "--speaker", "ryan", "--max-frames", "3"];
    let fails = |args: &[&str], needle: &str| {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: '{needle}' not in: {e}");
    };
    let with = |m: &str, t: &str, o: &str| -> Vec<String> {
        let mut v: Vec<String> = ["-m", m, "-t", t, "-o", o].map(String::from).to_vec();
        v.extend(base.map(String::from));
        v
    };

    fails(&["-m", tts, "--device", "gpu"], "unknown device 'gpu'");
    if !cfg!(feature = "vulkan") {
        fails(&["-m", tts, "--device", "vulkan:1"], "--features vulkan");
    }
    let listed = run(&["--list-devices"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.lines().any(|l| l.starts_with("cpu ")), "{listed}");

    let missing = tmp.path().join("missing.gguf");
    fails(
        &strs(&with(missing.to_str().unwrap(), tok, out_s)),
        "missing.gguf",
    );
    fails(
        &strs(&with(tts, missing.to_str().unwrap(), out_s)),
        "missing.gguf",
    );
    fails(&strs(&with(tts, tts, out_s)), "speech-tokenizer file");
    fails(&strs(&with(tok, tok, out_s)), "a TTS model file");
    let nodir = tmp.path().join("no/such/dir/out.wav");
    fails(
        &strs(&with(tts, tok, nodir.to_str().unwrap())),
        "no/such/dir",
    );
    let mut v = with(tts, tok, out_s);
    v.extend(["--ref-audio", "ref.wav"].map(String::from));
    fails(&strs(&v), "exclude each other");
    fails(
        &[
            "-m",
            tts,
            "-t",
            tok,
            "-o",
            out_s,
            "--text-file",
            "nope.txt",
            "--speaker",
            "ryan",
        ],
        "nope.txt",
    );
    fails(
        &["-m", tts, "-t", tok, "-o", out_s, "--text", "Hi"],
        "--speaker",
    );

    // Text with nothing to say, absurd thread counts, NaN sampling values.
    let tts_o = || ["-m", tts, "-t", tok, "-o", out_s, "--speaker", "ryan"];
    for text in ["", "  \n\t ", "\u{1}\u{2}\u{7f}", "\u{200b}\u{feff}"] {
        let mut v = tts_o().to_vec();
        v.extend(["--text", text]);
        fails(&v, "there is no text to speak");
    }
    let control = tmp.path().join("control.txt");
    std::fs::write(&control, "\u{1}\u{2}\n").unwrap();
    let mut v = tts_o().to_vec();
    v.extend(["--text-file", control.to_str().unwrap()]);
    fails(&v, "there is no text to speak");
    let invalid = tmp.path().join("invalid.txt");
    std::fs::write(&invalid, b"\xff\xfe hello").unwrap();
    let mut v = tts_o().to_vec();
    v.extend(["--text-file", invalid.to_str().unwrap()]);
    fails(&v, "valid UTF-8");
    for (flags, needle) in [
        (&["--threads", "0"][..], "--threads must be 1 to 512, got 0"),
        (
            &["--threads", "100000"],
            "--threads must be 1 to 512, got 100000",
        ),
        (
            &["--temperature", "NaN"],
            "temperature must be a finite number",
        ),
        (&["--subtalker-top-p", "nan"], "top_p must be in (0, 1]"),
        (
            &["--kv-cache", "q8_0"],
            "unknown KV cache type 'q8_0' (expected f32 or f16)",
        ),
    ] {
        let mut v = with(tts, tok, out_s);
        v.extend(flags.iter().map(|s| s.to_string()));
        fails(&strs(&v), needle);
    }

    // No output replaces an input, not even with --force.
    let model_bytes = std::fs::read(tts).unwrap();
    let text_file = tmp.path().join("text.txt");
    std::fs::write(&text_file, "Hello.").unwrap();
    for (input, flag) in [
        (tts, "-m"),
        (tok, "-t"),
        (text_file.to_str().unwrap(), "--text-file"),
    ] {
        let mut v: Vec<&str> = [
            "-m",
            tts,
            "-t",
            tok,
            "-o",
            input,
            "--force",
            "--speaker",
            "ryan",
        ]
        .to_vec();
        v.extend([
            "--text-file",
            text_file.to_str().unwrap(),
            "--max-frames",
            "3",
        ]);
        fails(
            &v,
            &format!("is the file given with {flag}: refusing to overwrite an input"),
        );
    }
    assert_eq!(
        std::fs::read(tts).unwrap(),
        model_bytes,
        "the model is intact"
    );

    // An existing output is never replaced without --force, and a run that
    // fails after loading leaves no file behind.
    std::fs::write(&out, b"keep me").unwrap();
    fails(&strs(&with(tts, tok, out_s)), "--force");
    let mut v = with(tts, tok, out_s);
    v.extend(["--force", "--top-p", "2"].map(String::from));
    fails(&strs(&v), "top_p");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let fresh = tmp.path().join("fresh.wav");
    let mut v = with(tts, tok, fresh.to_str().unwrap());
    v.extend(["--top-p", "2"].map(String::from));
    fails(&strs(&v), "top_p");
    assert!(!fresh.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // --force replaces it with a real WAV of frames × 1920 samples.
    let mut v = with(tts, tok, out_s);
    v.extend(["--force", "--seed", "7", "--min-frames", "3"].map(String::from));
    let o = run(&strs(&v));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, samples) = read_wav(&out);
    assert_eq!(samples.len(), 3 * 1920);
}

#[test]
fn voice_design_matches_reference_pipeline() {
    end_to_end("1.7B-VoiceDesign", "instruct_english");
}

/// Tiny Base model files in their own directory (conversion caches by dir).
fn base_models(variant: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (tts, tok) = models(variant, dir.path());
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    (dir, s(tts), s(tok))
}

#[test]
fn icl_clone_from_wav_matches_reference_pipeline() {
    let _g = serial();
    let (dir, tts, tok) = base_models("0.6B-Base");
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/codec/icl_cut_0.6B-Base.json"))
            .unwrap(),
    )
    .unwrap();
    let kw = &case["api_kwargs"];
    let d = Dump::open(&fixtures().join("reference/codec/icl_cut_0.6B-Base.safetensors"));
    let frames = frames_of(&d.i64("codes")).len().to_string();
    let want = d.f32("wav_full")[d.i64("cut")[0] as usize..].to_vec();
    let wav = fixtures().join("audio/ref_24k.wav");
    let out = dir.path().join("icl.wav");
    let voice = dir.path().join("me.qvoice");
    let mut args: Vec<String> = [
        "-m",
        &tts,
        "-t",
        &tok,
        "--ref-audio",
        wav.to_str().unwrap(),
        "--ref-text",
        kw["ref_text"].as_str().unwrap(),
        "--text",
        kw["text"].as_str().unwrap(),
        "--language",
        kw["language"].as_str().unwrap(),
        "--greedy",
        "--max-frames",
        &frames,
        "--min-frames",
        &frames,
        "--format",
        "f32",
        "--threads",
        "2",
        "-o",
        out.to_str().unwrap(),
        "--save-voice",
        voice.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let o = run(&strs(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, got) = read_wav(&out);
    let snr = snr_db(&got, &want);
    eprintln!("ICL clone from WAV: SNR {snr:.1} dB vs the reference pipeline");
    assert!(snr >= 50.0, "SNR {snr:.1}");

    // The saved voice gives the same file without the reference audio.
    let out2 = dir.path().join("icl2.wav");
    let at = args.iter().position(|a| a == "--ref-audio").unwrap();
    args.drain(at..at + 4); // --ref-audio F --ref-text T
    let at = args.iter().position(|a| a == "--save-voice").unwrap();
    args.drain(at..at + 2);
    args.extend(["--voice".into(), voice.to_str().unwrap().into()]);
    let o_at = args.iter().position(|a| a == "-o").unwrap();
    args[o_at + 1] = out2.to_str().unwrap().into();
    let o = run(&strs(&args));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

#[test]
fn cloning_errors_are_clear() {
    let _g = serial();
    let (dir, tts, tok) = base_models("0.6B-Base");
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let fails = |extra: &[&str], needle: &str| {
        let mut args = vec!["-m", &tts, "-t", &tok, "--text", "Hi.", "--max-frames", "2"];
        let out = p("out.wav");
        args.extend(["-o", &out]);
        args.extend(extra);
        let o = run(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        let e = stderr(&o);
        assert!(e.contains(needle), "{extra:?}: '{needle}' not in: {e}");
        assert!(!std::path::Path::new(&out).exists());
    };
    // A Base model needs a voice.
    fails(&[], "--ref-audio");
    // Not audio, empty, too short, missing.
    std::fs::write(p("text.wav"), "this is not audio\n").unwrap();
    fails(&["--ref-audio", &p("text.wav")], "text.wav");
    std::fs::write(p("empty.wav"), b"").unwrap();
    fails(&["--ref-audio", &p("empty.wav")], "empty.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 24000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p("short.wav"), spec).unwrap();
    for i in 0..2400 {
        w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    fails(&["--ref-audio", &p("short.wav")], "0.10 s");
    fails(&["--ref-audio", &p("missing.wav")], "missing.wav");
    // Ten minutes of audio: refused at the cloning limit while decoding.
    let mut w = hound::WavWriter::create(p("long.wav"), spec).unwrap();
    for i in 0..24000 * 600 {
        w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    fails(&["--ref-audio", &p("long.wav")], "limit");

    // A voice made with the 1.7B model does not fit the 0.6B one.
    let (dir17, tts17, tok17) = base_models("1.7B-Base");
    let voice17 = dir17.path().join("v17.qvoice");
    let wav = fixtures().join("audio/ref_24k.wav");
    let o = run(&[
        "-m",
        &tts17,
        "-t",
        &tok17,
        "--ref-audio",
        wav.to_str().unwrap(),
        "--save-voice",
        voice17.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(voice17.exists());
    fails(&["--voice", voice17.to_str().unwrap()], "1b7");

    // Presets are not available on Base, cloning is not available elsewhere.
    let cv = tempfile::tempdir().unwrap();
    let (cv_tts, cv_tok) = models("0.6B-CustomVoice", cv.path());
    let o = run(&[
        "-m",
        cv_tts.to_str().unwrap(),
        "-t",
        cv_tok.to_str().unwrap(),
        "--ref-audio",
        wav.to_str().unwrap(),
        "--text",
        "Hi.",
        "-o",
        cv.path().join("x.wav").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Base model"), "{}", stderr(&o));
}

#[test]
fn empty_text_is_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    // The model does not exist: an error about the text shows it was checked first.
    let missing = tmp.path().join("missing.gguf");
    let m = missing.to_str().unwrap();
    let out = tmp.path().join("out.wav");
    let o = out.to_str().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    for (args, needle) in [
        (vec!["--text", ""], "--text:"),
        (vec!["--text", " \t\n "], "--text:"),
        (vec!["--text-file", empty.to_str().unwrap()], "empty.txt"),
    ] {
        let mut a = vec!["-m", m, "-t", m, "-o", o, "--speaker", "ryan"];
        a.extend(&args);
        let r = run(&a);
        assert!(!r.status.success(), "{args:?} succeeded");
        let e = stderr(&r);
        assert!(
            e.contains(needle) && e.contains("no text to speak"),
            "{args:?}: '{needle}' not in: {e}"
        );
        assert!(!e.contains("missing.gguf"), "{args:?}: loaded first: {e}");
        assert!(!out.exists());
    }
}

/// Files of `dir` whose name contains `.part`.
fn part_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect()
}

#[test]
fn interrupt_removes_the_temporary_output() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", tmp.path());
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("long.wav");
    // Interrupted while it generates.
    let (child, lines) = start_until(
        &[
            "-m",
            tts.to_str().unwrap(),
            "-t",
            tok.to_str().unwrap(),
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
            "-o",
            out.to_str().unwrap(),
        ],
        "generating",
    );
    assert_eq!(part_files(&outdir).len(), 1, "{:?}", part_files(&outdir));
    let (status, rest) = interrupt(child, lines);
    assert_eq!(status.code(), Some(130), "{status:?}; stderr: {rest:?}");
    assert!(part_files(&outdir).is_empty(), "{:?}", part_files(&outdir));
    assert!(!out.exists());
}

#[test]
fn stages_are_plain_lines_without_a_terminal() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", tmp.path());
    let out = tmp.path().join("out.wav");
    let r = run(&[
        "-m",
        tts.to_str().unwrap(),
        "-t",
        tok.to_str().unwrap(),
        "--speaker",
        "ryan",
        "--text",
        "Hello.",
        "--max-frames",
        "3",
        "--min-frames",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let e = stderr(&r);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 5, "{e}");
    assert_eq!(lines[0], "loading…");
    assert_eq!(lines[1], "generating…");
    assert!(lines[2].starts_with("generated 3 frames in "), "{e}");
    assert_eq!(lines[3], "vocoding…");
    assert!(
        lines[4].contains("RTF") && lines[4].contains("3 frames"),
        "{e}"
    );

    // --quiet prints nothing.
    let r = run(&[
        "-m",
        tts.to_str().unwrap(),
        "-t",
        tok.to_str().unwrap(),
        "--speaker",
        "ryan",
        "--text",
        "Hello.",
        "--max-frames",
        "2",
        "--force",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(stderr(&r), "");
}

#[test]
fn list_voices_reads_only_the_metadata() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", tmp.path());
    let r = run(&["-m", tts.to_str().unwrap(), "--list-voices"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let listed = String::from_utf8_lossy(&r.stdout).into_owned();
    for want in [
        "model type: CustomVoice",
        "speaker: ryan\n",
        "speaker: dylan (dialect: beijing_dialect)",
        "english",
        "chinese",
    ] {
        assert!(listed.contains(want), "'{want}' not in: {listed}");
    }

    // The same metadata without a single tensor lists the same voices...
    let src = qwen3_tts::model_file::GgufFile::open(&tts).unwrap();
    let header_only = tmp.path().join("header-only.gguf");
    qwen3_tts::model_file::write_gguf_with_base(
        &header_only,
        Some(src.header()),
        &[],
        &[],
        qwen3_tts::model_file::Overwrite::Refuse,
        |_, _, _| Ok(()),
    )
    .unwrap()
    .commit()
    .unwrap();
    assert!(qwen3_tts::model_file::GgufFile::open(&header_only)
        .unwrap()
        .tensors()
        .is_empty());
    let r = run(&["-m", header_only.to_str().unwrap(), "--list-voices"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(String::from_utf8_lossy(&r.stdout), listed);
    // ...while synthesising with it fails on the missing weights.
    let r = run(&[
        "-m",
        header_only.to_str().unwrap(),
        "-t",
        tok.to_str().unwrap(),
        "--speaker",
        "ryan",
        "--text",
        "Hi.",
        "-o",
        tmp.path().join("x.wav").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("header-only.gguf") && stderr(&r).contains("tensor"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn help_says_which_flags_go_with_which_model() {
    let r = run(&["--help"]);
    assert!(r.status.success());
    let h = String::from_utf8_lossy(&r.stdout);
    for want in [
        "CustomVoice  a preset speaker: --speaker NAME",
        "Base         a cloned voice: --ref-audio FILE [--ref-text TRANSCRIPT]",
        "--voice FILE.qvoice",
        "VoiceDesign  a described voice: --instruct DESCRIPTION",
        "Examples:",
    ] {
        assert!(h.contains(want), "'{want}' not in: {h}");
    }
}

/// A model that never ends its speech stops at the runaway guard's bound for
/// the text, with a warning even under --quiet; --max-frames replaces the
/// bound (and then nothing is said).
#[test]
fn a_generation_without_end_stops_at_the_guard_with_a_warning() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", dir.path());
    let no_end = qwen3_tts_tests::model_without_end(&tts, dir.path().join("no-end.gguf"));
    let out = dir.path().join("out.wav");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "-m",
            no_end.to_str().unwrap(),
            "-t",
            tok.to_str().unwrap(),
            "--text",
            "Hi.",
            "--speaker",
            "ryan",
            "--greedy",
            "--threads",
            "2",
            "-o",
            out.to_str().unwrap(),
            "--force",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // "Hi." is 2 text tokens: 5 s + 2 × 1 s at 12.5 frames/s.
    for extra in [&[][..], &["--quiet"], &["--stream"]] {
        let o = run(&strs(&args(extra)));
        let e = stderr(&o);
        assert!(o.status.success(), "{e}");
        assert!(
            e.contains("warning: the model did not end its speech; stopped at 88 frames (7.0 s)"),
            "{extra:?}: {e}"
        );
        let (_, samples) = read_wav(&out);
        assert_eq!(samples.len(), 88 * 1920, "{extra:?}");
    }
    let o = run(&strs(&args(&["--max-frames", "10"])));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("warning"), "{e}");
    assert_eq!(read_wav(&out).1.len(), 10 * 1920);
}

#[test]
fn a_long_text_file_is_spoken_in_parts_offline_and_streamed_alike() {
    use qwen3_tts::long_text::{pause_samples, split_text};
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (tts, tok) = models("0.6B-CustomVoice", dir.path());
    let text = "It was a bright cold day in April. The clocks were striking thirteen.\n\n\
                Winston Smith slipped through the doors.";
    let file = dir.path().join("story.txt");
    std::fs::write(&file, format!("{text}\n")).unwrap();
    let parts = split_text(text, 50);
    assert_eq!(parts.len(), 3, "{parts:?}");
    let run_to = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "-m",
            tts.to_str().unwrap(),
            "-t",
            tok.to_str().unwrap(),
            "--text-file",
            file.to_str().unwrap(),
            "--speaker",
            "ryan",
            "--seed",
            "5",
            "--max-frames",
            "4",
            "--min-frames",
            "4",
            "--max-part-chars",
            "50",
            "--threads",
            "2",
            "--format",
            "f32",
            "-o",
            out.to_str().unwrap(),
        ];
        a.extend(extra);
        let o = run(&a);
        let e = stderr(&o);
        assert!(o.status.success(), "{e}");
        assert!(
            e.contains("part 1/3: It was a bright cold day in April.")
                && e.contains("part 3/3: Winston")
                && e.contains("in 3 parts"),
            "{e}"
        );
        read_wav(out).1
    };
    let offline = run_to(&dir.path().join("offline.wav"), &[]);
    let pauses: usize = parts.iter().map(|p| pause_samples(p.boundary, 24000)).sum();
    assert_eq!(offline.len(), 3 * 4 * 1920 + pauses);
    let streamed = run_to(&dir.path().join("streamed.wav"), &["--stream"]);
    assert_eq!(streamed.len(), offline.len());
    let diff = qwen3_tts_tests::max_abs_diff(&streamed, &offline);
    assert!(diff <= 1e-6, "streamed vs offline: max |diff| {diff:e}");
}
