//! What the program tests share: running `qwen3-tts-run`, and starting one
//! to interrupt it.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_qwen3-tts-run");

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("start qwen3-tts-run")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts the program with `args` and reads its stderr (a pipe: one plain
/// line per stage) until a line starts with `prefix`.
pub fn start_until(args: &[&str], prefix: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qwen3-tts-run");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with(prefix) {
            return (child, lines);
        }
    }
    let status = child.wait();
    panic!("no line starting with {prefix:?} ({status:?}): {seen:?}");
}

/// Sends SIGINT to a running `child`; its exit status and last stderr lines.
pub fn interrupt(
    mut child: Child,
    lines: Lines<BufReader<ChildStderr>>,
) -> (ExitStatus, Vec<String>) {
    assert!(child.try_wait().unwrap().is_none(), "finished already");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    (child.wait().unwrap(), rest)
}
