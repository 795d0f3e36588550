//! A mutation fuzzer on stable Rust for a [`Suite`] of fuzz targets
//! (`qwen3_tts_tests::fuzz`, the same ones cargo-fuzz runs from `fuzz/`, and
//! the server's), the `main` of the `fuzz` examples.
//!
//! ```text
//! fuzz --target T [--runs N] [--seconds S] [--timeout 10] [--artifacts DIR] [--seed 1]
//! ```
//!
//! Mutates the target's seed file and its committed corpus (bit flips,
//! boundary values written over integers, truncations, repeated and
//! deleted spans; mostly in the first 64 KiB, where headers are), runs each
//! mutant in a worker process, and counts panics (caught, the worker goes
//! on), crashes (the worker died: an abort inside ggml, a stack overflow)
//! and hangs (one input over `--timeout` seconds). Each failing input is
//! saved under `--artifacts` (default `fuzz/artifacts/T`) to be replayed and
//! committed to `fuzz/corpus/T` with its fix. Stops after `--runs`
//! executions or `--seconds`, whichever comes first; prints one JSON line.

use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fuzz::Suite;

/// xorshift64*: the mutation stream, reproducible from its state.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    3,
    7,
    16,
    255,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// A mutant of `input` drawn from `rng`.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let ops = 1 + rng.below(4);
    for _ in 0..ops {
        if v.is_empty() {
            v.push(rng.next() as u8);
            continue;
        }
        let head = v.len().min(64 * 1024);
        let span = if rng.below(5) < 4 { head } else { v.len() };
        let at = rng.below(span);
        match rng.below(8) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 | 3 => {
                // A boundary value over a little-endian integer of 1–8 bytes.
                let width = [1, 2, 4, 8][rng.below(4)];
                let mut value = INTERESTING[rng.below(INTERESTING.len())];
                if rng.below(3) == 0 {
                    value = value.wrapping_neg();
                }
                for (i, b) in value.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(x) = v.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            4 => v.truncate(at),
            5 => {
                let n = 1 + rng.below(64).min(v.len() - at);
                v.drain(at..(at + n).min(v.len()));
            }
            6 => {
                let n = 1 + rng.below(64).min(v.len() - at);
                let chunk: Vec<u8> = v[at..(at + n).min(v.len())].to_vec();
                let to = rng.below(v.len());
                v.splice(to..to, chunk);
            }
            _ => {
                // Text-like: an ASCII digit, punctuation or a multi-byte character.
                let pieces: [&[u8]; 8] = [
                    b".",
                    b" ",
                    b"\n\n",
                    b"9",
                    "。".as_bytes(),
                    "\u{200B}".as_bytes(),
                    b"\0",
                    b"\xff",
                ];
                let p = pieces[rng.below(pieces.len())];
                v.splice(at..at, p.iter().copied());
            }
        }
    }
    v
}

struct Args {
    target: String,
    runs: u64,
    seconds: f64,
    timeout: f64,
    artifacts: PathBuf,
    seed: u64,
}

fn args(suite: &Suite) -> (Args, bool) {
    let a = crate::ExampleArgs::from_env();
    let target = a.get("target").expect("--target (one of the fuzz targets)");
    assert!(
        suite.targets.contains(&target.as_str()),
        "no target {target}; targets: {:?}",
        suite.targets
    );
    let artifacts = a.get("artifacts").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/artifacts")
                .join(&target)
        },
        PathBuf::from,
    );
    let f = |k: &str, d: f64| a.get(k).map_or(d, |v| v.parse().expect(k));
    (
        Args {
            runs: a.num("runs", usize::MAX) as u64,
            seconds: f("seconds", f64::INFINITY),
            timeout: f("timeout", 10.0),
            seed: a.num("seed", 1) as u64,
            target,
            artifacts,
        },
        a.flag("worker"),
    )
}

/// The inputs mutants are drawn from: the seed file and the corpus.
fn pool(suite: &Suite, target: &str) -> Vec<Vec<u8>> {
    let mut p = vec![(suite.seed)(target)];
    p.extend(
        crate::fuzz::corpus(&crate::fuzz::corpus_dir(target))
            .into_iter()
            .map(|(_, b)| b),
    );
    p
}

/// The input an `exec` line names.
fn reproduce(pool: &[Vec<u8>], index: usize, state: u64) -> Vec<u8> {
    mutate(&pool[index], &mut Rng(state))
}

fn worker(suite: &Suite, a: &Args) {
    let pool = pool(suite, &a.target);
    let mut rng = Rng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let current = Arc::new(AtomicU64::new(0));
    let started_ms = Arc::new(AtomicU64::new(0));
    let clock = Instant::now();
    {
        // The watchdog: one input past the time limit is a hang.
        let (current, started_ms, timeout) = (current.clone(), started_ms.clone(), a.timeout);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let id = current.load(Ordering::SeqCst);
            let since = (clock.elapsed().as_millis() as u64)
                .saturating_sub(started_ms.load(Ordering::SeqCst));
            if id > 0 && since as f64 > timeout * 1000.0 && current.load(Ordering::SeqCst) == id {
                println!("timeout");
                std::process::exit(124);
            }
        });
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        println!("panic {msg}");
    }));
    let out = std::io::stdout();
    for exec in 1..=a.runs {
        let index = rng.below(pool.len());
        let state = rng.next() | 1;
        let input = reproduce(&pool, index, state);
        {
            let mut o = out.lock();
            let _ = writeln!(o, "exec {index} {state}");
            let _ = o.flush();
        }
        started_ms.store(clock.elapsed().as_millis() as u64, Ordering::SeqCst);
        current.store(exec, Ordering::SeqCst);
        let _ = catch_unwind(AssertUnwindSafe(|| (suite.run)(&a.target, &input)));
        current.store(0, Ordering::SeqCst);
        if clock.elapsed().as_secs_f64() > a.seconds {
            break;
        }
    }
    println!("done");
}

/// The fuzzer's `main` over the targets of `suite` (see the module doc).
pub fn main(suite: &Suite) {
    let (a, is_worker) = args(suite);
    if is_worker {
        return worker(suite, &a);
    }
    let pool = pool(suite, &a.target);
    std::fs::create_dir_all(&a.artifacts).expect("artifacts dir");
    let started = Instant::now();
    let (mut execs, mut panics, mut crashes, mut timeouts) = (0u64, 0u64, 0u64, 0u64);
    let mut restarts = 0u64;
    let save = |kind: &str, index: usize, state: u64| {
        let path = a.artifacts.join(format!("{kind}-{index}-{state:016x}"));
        std::fs::write(&path, reproduce(&pool, index, state)).expect("artifact");
        eprintln!("{}: {kind}: {}", a.target, path.display());
    };
    while execs < a.runs && started.elapsed().as_secs_f64() < a.seconds {
        let left = a.seconds - started.elapsed().as_secs_f64();
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--worker", "--target", &a.target])
            .args(["--runs", &(a.runs - execs).to_string()])
            .args(["--seconds", &format!("{left:.3}")])
            .args(["--timeout", &a.timeout.to_string()])
            .args(["--seed", &(a.seed + restarts * 7919).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker");
        restarts += 1;
        let mut last: Option<(usize, u64)> = None;
        let (mut done, mut hung) = (false, false);
        for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
            let Ok(line) = line else { break };
            let mut w = line.split(' ');
            match w.next() {
                Some("exec") => {
                    execs += 1;
                    let index = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let state = w.next().and_then(|s| s.parse().ok()).unwrap_or(1);
                    last = Some((index, state));
                }
                Some("panic") => {
                    panics += 1;
                    eprintln!("{}: {line}", a.target);
                    if let Some((i, s)) = last {
                        save("panic", i, s);
                    }
                }
                Some("timeout") => hung = true,
                Some("done") => done = true,
                _ => {}
            }
        }
        let status = child.wait().expect("worker status");
        if done {
            break;
        }
        if let Some((i, s)) = last {
            if hung {
                timeouts += 1;
                save("timeout", i, s);
            } else {
                crashes += 1;
                eprintln!("{}: the worker died ({status})", a.target);
                save("crash", i, s);
            }
        } else {
            panic!("the worker failed before its first input ({status})");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"target\": \"{}\", \"execs\": {execs}, \"seconds\": {seconds:.0}, \"execs_per_s\": {:.1}, \
         \"crashes\": {crashes}, \"panics\": {panics}, \"timeouts\": {timeouts}, \"corpus\": {}}}",
        a.target,
        execs as f64 / seconds.max(1e-9),
        pool.len() - 1
    );
}
