//! Mutation test of the model files (issue #15): converts the tiny
//! CustomVoice model and its speech tokenizer, then writes one mutant per
//! single-value change (every metadata key, every tensor dim, every tensor
//! in another storage type, truncations)
//! and runs the released `qwen3-tts-run` on it in a child process with a
//! timeout. Each run ends in one class: a clean error (non-zero exit with a
//! message), accepted (exit 0), a panic, an abort (a signal) or a hang. A
//! stranger's file must never give the last three.
//!
//!     cargo build --release -p qwen3-tts-cli --bin qwen3-tts-run
//!     cargo run --release -p qwen3-tts-tests --example mutate_models -- \
//!         [--bin target/release/qwen3-tts-run] [--timeout 20] [--jobs 2] \
//!         [--only tts|tokenizer] [--kind meta|dims|retype|truncate] [--every N] [--keep DIR]
//!
//! (`scripts/mutate_models.sh` does both steps.) `--every N` runs only every
//! Nth mutant of each file, for a quick look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qwen3_tts::ggml::gguf::Value;
use qwen3_tts::ggml::GgmlType;
use qwen3_tts::gguf_schema::keys;
use qwen3_tts::model_file::GgufFile;
use qwen3_tts_tests::{
    convert_tiny, convert_tiny_tokenizer, retype_gguf, rewrite_gguf, ExampleArgs,
};

/// One change to a model file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Metadata `key` set to a value.
    Meta(String, Value),
    /// Tensor `name` given dims `ne` (its bytes cut or zero-padded to fit).
    Dims(String, Vec<i64>),
    /// The file cut to `len` bytes.
    Truncate(usize),
    /// Tensor `name` stored in another type (its values converted): a file
    /// another converter could write.
    Retype(String, GgmlType),
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mutation::Meta(k, v) => {
                let mut s = format!("{v:?}");
                if let Some((cut, _)) = s.char_indices().nth(60) {
                    s.truncate(cut);
                    s.push('…');
                }
                write!(f, "{k} = {s}")
            }
            Mutation::Dims(n, ne) => write!(f, "{n} dims {ne:?}"),
            Mutation::Truncate(len) => write!(f, "truncated to {len} bytes"),
            Mutation::Retype(n, ty) => write!(f, "{n} stored as {}", ty.name()),
        }
    }
}

impl Mutation {
    /// `--kind`'s name for this mutation.
    fn kind(&self) -> &'static str {
        match self {
            Mutation::Meta(..) => "meta",
            Mutation::Dims(..) => "dims",
            Mutation::Truncate(_) => "truncate",
            Mutation::Retype(..) => "retype",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    CleanError,
    Accepted,
    Panic,
    Abort,
    Hang,
    /// The mutant could not be written (e.g. a row length a block type forbids).
    Unwritable,
}

const HUGE: i64 = 1 << 40;

/// Integer replacements of `v` (0, 1, -1, v±1, 2v, v/2, huge).
fn ints(v: i64) -> Vec<i64> {
    let mut out = vec![0, 1, -1, v + 1, v - 1, 2 * v, v / 2, HUGE];
    out.retain(|&x| x != v);
    out.sort();
    out.dedup();
    out
}

/// The integer `x` stored in the type of `like` (wrapping, as a bad writer would).
fn int_like(like: &Value, x: i64) -> Value {
    match like {
        Value::U8(_) => Value::U8(x as u8),
        Value::I8(_) => Value::I8(x as i8),
        Value::U16(_) => Value::U16(x as u16),
        Value::I16(_) => Value::I16(x as i16),
        Value::U32(_) => Value::U32(x as u32),
        Value::I32(_) => Value::I32(x as i32),
        Value::U64(_) => Value::U64(x as u64),
        _ => Value::I64(x),
    }
}

fn floats(v: f64) -> Vec<f64> {
    vec![0.0, -v, f64::NAN, f64::INFINITY, 1e30]
}

/// Replacements for one metadata value.
fn value_mutants(v: &Value) -> Vec<Value> {
    let int = |x: i64| ints(x).into_iter().map(|i| int_like(v, i)).collect();
    match v {
        Value::U8(x) => int(*x as i64),
        Value::I8(x) => int(*x as i64),
        Value::U16(x) => int(*x as i64),
        Value::I16(x) => int(*x as i64),
        Value::U32(x) => int(*x as i64),
        Value::I32(x) => int(*x as i64),
        Value::U64(x) => int(*x as i64),
        Value::I64(x) => int(*x),
        Value::F32(x) => floats(*x as f64)
            .into_iter()
            .map(|f| Value::F32(f as f32))
            .collect(),
        Value::F64(x) => floats(*x).into_iter().map(Value::F64).collect(),
        Value::Bool(b) => vec![Value::Bool(!b), Value::I32(2)],
        Value::Str(s) => vec![
            Value::Str(String::new()),
            Value::Str("\u{1F4A5}garbage".into()),
            Value::Str(s.repeat(2)),
            Value::I32(7),
        ],
        Value::ArrI32(a) => int_array(a, |x| x as i64, |x| x as i32, Value::ArrI32),
        Value::ArrU32(a) => int_array(a, |x| x as i64, |x| x as u32, Value::ArrU32),
        Value::ArrF32(a) => {
            let mut out = vec![Value::ArrF32(Vec::new())];
            if !a.is_empty() {
                out.push(Value::ArrF32(a[..a.len() - 1].to_vec()));
                for f in [f32::NAN, -1.0, 1e30] {
                    let mut b = a.clone();
                    b[0] = f;
                    out.push(Value::ArrF32(b));
                }
            }
            out
        }
        Value::ArrStr(a) => {
            let mut out = vec![Value::ArrStr(Vec::new())];
            if !a.is_empty() {
                out.push(Value::ArrStr(a[..a.len() - 1].to_vec()));
                let mut b = a.clone();
                b[0] = String::new();
                out.push(Value::ArrStr(b));
                let mut b = a.clone();
                b[a.len() - 1] = "\u{1F4A5}garbage".into();
                out.push(Value::ArrStr(b));
            }
            out
        }
        Value::ArrOther { .. } => Vec::new(),
    }
}

/// Empty, truncated, and the first / last element changed to a few values.
fn int_array<T: Copy>(
    a: &[T],
    to: impl Fn(T) -> i64,
    from: impl Fn(i64) -> T,
    wrap: impl Fn(Vec<T>) -> Value,
) -> Vec<Value> {
    let mut out = vec![wrap(Vec::new())];
    if a.is_empty() {
        return out;
    }
    out.push(wrap(a[..a.len() - 1].to_vec()));
    let mut ats = vec![0, a.len() - 1];
    ats.dedup();
    for at in ats {
        let v = to(a[at]);
        for x in [0, -1, v + 1, 2 * v, HUGE] {
            if x != v {
                let mut b = a.to_vec();
                b[at] = from(x);
                out.push(wrap(b));
            }
        }
    }
    out
}

/// Every single-value change of `file`, in a fixed order.
fn mutations(file: &GgufFile, len: usize) -> Vec<Mutation> {
    let mut out = Vec::new();
    for key in file.header().keys() {
        // The tokenizer's vocabulary is long: its elements change like the rest.
        if let Some(v) = file.get(&key) {
            for m in value_mutants(&v) {
                out.push(Mutation::Meta(key.clone(), m));
            }
        }
    }
    for t in file.tensors() {
        let ne = &t.ne;
        for d in 0..ne.len() {
            for x in [ne[d] + 1, ne[d] - 1, ne[d] * 2] {
                if x >= 1 && x != ne[d] {
                    let mut n = ne.clone();
                    n[d] = x;
                    out.push(Mutation::Dims(t.name.clone(), n));
                }
            }
        }
        // Every other float type whose blocks fit the rows.
        let ty = file.tensor_type(&t.name).expect("listed tensor");
        for other in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
            if other != ty
                && ty != GgmlType::I32
                && (ne[0] as usize).is_multiple_of(other.block_size())
            {
                out.push(Mutation::Retype(t.name.clone(), other));
            }
        }
        // A vector becomes a [n, 2] matrix; matrices get their dims swapped.
        let mut n = ne.clone();
        if n.len() == 1 {
            n.push(2);
        } else if n[0] != n[1] {
            n.swap(0, 1);
        } else {
            n.push(2);
        }
        out.push(Mutation::Dims(t.name.clone(), n));
    }
    let data = file.header().data_offset();
    for cut in [
        0,
        3,
        4,
        8,
        16,
        24,
        data / 2,
        data - 1,
        data,
        data + 1,
        len / 2,
        len - 1,
    ] {
        if cut < len {
            out.push(Mutation::Truncate(cut));
        }
    }
    out.sort_by_key(|m| format!("{m}"));
    out.dedup_by_key(|m| format!("{m}"));
    out
}

/// Writes the mutant of `src` to `out`; false when it cannot be written.
fn write_mutant(src: &GgufFile, bytes: &[u8], m: &Mutation, out: &Path) -> bool {
    let _ = std::fs::remove_file(out);
    if let Mutation::Truncate(len) = m {
        return std::fs::write(out, &bytes[..*len]).is_ok();
    }
    if let Mutation::Retype(name, ty) = m {
        return retype_gguf(src, out, &[(name.as_str(), *ty)]).is_ok();
    }
    let (meta, reshape) = match m {
        Mutation::Meta(k, v) => (vec![(k.clone(), v.clone())], None),
        Mutation::Dims(name, ne) => (Vec::new(), Some((name.as_str(), &ne[..]))),
        Mutation::Truncate(_) | Mutation::Retype(..) => unreachable!("written above"),
    };
    rewrite_gguf(src, out, &meta, reshape).is_ok()
}

/// Runs the program on one pair of files and classifies how it ended.
fn run(
    bin: &Path,
    tts: &Path,
    tok: &Path,
    speaker: &str,
    wav: &Path,
    timeout: Duration,
) -> (Outcome, String) {
    let child = Command::new(bin)
        .args(["-m"])
        .arg(tts)
        .arg("-t")
        .arg(tok)
        .args(["--speaker", speaker, "--text", "Hi.", "--max-frames", "3"])
        .args(["--seed", "1", "--threads", "1", "--quiet", "--force", "-o"])
        .arg(wav)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("{}: {e}", bin.display()),
    };
    let start = Instant::now();
    // Read stderr on a thread so a chatty child cannot block on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = reader.join().unwrap_or_default();
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    use std::os::unix::process::ExitStatusExt;
    let outcome = match status {
        None => Outcome::Hang,
        Some(s) if s.signal().is_some() => Outcome::Abort,
        Some(_) if err.contains("panicked") => Outcome::Panic,
        Some(s) if s.success() => Outcome::Accepted,
        Some(_) if last.is_empty() => Outcome::Abort,
        Some(_) => Outcome::CleanError,
    };
    // The line that says why: a panic's message, ggml's assertion, or the error.
    let why = err
        .lines()
        .find(|l| l.contains("panicked") || l.contains("GGML_ASSERT") || l.contains("error"))
        .unwrap_or(&last)
        .to_string();
    (outcome, why)
}

struct Case {
    file: &'static str,
    mutation: Mutation,
    outcome: Outcome,
    why: String,
}

fn main() {
    let args = ExampleArgs::from_env();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = args
        .get("bin")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/qwen3-tts-run"));
    assert!(bin.exists(), "{} not built", bin.display());
    let timeout = Duration::from_secs(args.num("timeout", 20) as u64);
    let jobs = args.num("jobs", 2).max(1);
    let every = args.num("every", 1).max(1);
    let only = args.get("only");
    let kind = args.get("kind");
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .get("keep")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let tts = convert_tiny("0.6B-CustomVoice", GgmlType::F32, &dir);
    let tok = convert_tiny_tokenizer(GgmlType::F16, &dir);
    let speaker = match GgufFile::open(&tts).unwrap().get(keys::SPEAKER_NAMES) {
        Some(Value::ArrStr(names)) => names[0].clone(),
        other => panic!("speaker names: {other:?}"),
    };
    let wav = dir.join("unmutated.wav");
    let (base, why) = run(&bin, &tts, &tok, &speaker, &wav, timeout);
    assert_eq!(base, Outcome::Accepted, "the unmutated files fail: {why}");

    let mut cases: Vec<Case> = Vec::new();
    for (name, path) in [("tts", &tts), ("tokenizer", &tok)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let src = GgufFile::open(path).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let all: Vec<Mutation> = mutations(&src, bytes.len())
            .into_iter()
            .filter(|m| kind.as_deref().is_none_or(|k| m.kind() == k))
            .step_by(every)
            .collect();
        eprintln!("{name}: {} mutants", all.len());
        let next = AtomicUsize::new(0);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..jobs {
                let (src, bytes, all, next, results) = (&src, &bytes, &all, &next, &results);
                let (dir, bin, speaker) = (&dir, &bin, &speaker);
                let (tts, tok) = (&tts, &tok);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = all.get(i) else { break };
                    let mutant = dir.join(format!("mutant-{w}.gguf"));
                    let wav = dir.join(format!("out-{w}.wav"));
                    let (outcome, why) = if !write_mutant(src, bytes, m, &mutant) {
                        (Outcome::Unwritable, String::new())
                    } else if name == "tts" {
                        run(bin, &mutant, tok, speaker, &wav, timeout)
                    } else {
                        run(bin, tts, &mutant, speaker, &wav, timeout)
                    };
                    if i % 100 == 0 {
                        eprintln!("  {name} {i}/{}", all.len());
                    }
                    if matches!(outcome, Outcome::Panic | Outcome::Abort | Outcome::Hang) {
                        eprintln!("  {name} {outcome:?}: {m}\n      {why}");
                    }
                    results.lock().unwrap().push(Case {
                        file: name,
                        mutation: m.clone(),
                        outcome,
                        why,
                    });
                });
            }
        });
        cases.extend(results.into_inner().unwrap());
    }

    let mut table: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    for c in &cases {
        *table.entry((c.file, c.outcome)).or_default() += 1;
    }
    let classes = [
        Outcome::CleanError,
        Outcome::Accepted,
        Outcome::Panic,
        Outcome::Abort,
        Outcome::Hang,
        Outcome::Unwritable,
    ];
    println!(
        "\n{:<10} {:>6} {:>11} {:>9} {:>6} {:>6} {:>5} {:>11}",
        "file", "runs", "clean error", "accepted", "panic", "abort", "hang", "unwritable"
    );
    for file in ["tts", "tokenizer"] {
        let n = |o| table.get(&(file, o)).copied().unwrap_or(0);
        let runs: usize = classes.iter().map(|&o| n(o)).sum();
        if runs > 0 {
            println!(
                "{file:<10} {runs:>6} {:>11} {:>9} {:>6} {:>6} {:>5} {:>11}",
                n(classes[0]),
                n(classes[1]),
                n(classes[2]),
                n(classes[3]),
                n(classes[4]),
                n(classes[5])
            );
        }
    }
    let mut failing: Vec<&Case> = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Panic | Outcome::Abort | Outcome::Hang))
        .collect();
    failing.sort_by_key(|c| (c.file, format!("{}", c.mutation)));
    if !failing.is_empty() {
        println!("\nfailing cases:");
        for c in &failing {
            println!(
                "  {:<9} {:?}: {}\n      {}",
                c.file, c.outcome, c.mutation, c.why
            );
        }
        std::process::exit(1);
    }
}
