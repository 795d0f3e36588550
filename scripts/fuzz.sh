#!/usr/bin/env bash
# Fuzzes every target of tests/fuzz.rs (or those named) with the stable mutation driver
# (tests/examples/fuzz.rs; no nightly needed) and prints per target the executions, crashes
# (the process died: an abort inside ggml), panics and timeouts (hangs), then a table.
# Failing inputs are saved under fuzz/artifacts/<target>/: commit each to fuzz/corpus/<target>/
# with its fix (tests/tests/fuzz_corpus.rs replays the corpus in CI).
#
#   scripts/fuzz.sh --seconds 300                 # five minutes a target
#   scripts/fuzz.sh --runs 1000000 text qvoice    # a million executions of two targets
#
# Flags: --runs N, --seconds S (per target; whichever comes first; default 60 s), --timeout S
# (one input over it is a hang; default 10), --seed N. With nightly and cargo-fuzz,
# `cd fuzz && cargo +nightly fuzz run <target>` runs the same targets under libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=""; seconds=""; timeout=10; seed=1; targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "error: unknown flag $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ -z "$runs" ] && [ -z "$seconds" ] && seconds=60
[ ${#targets[@]} -eq 0 ] && targets=(gguf_model gguf_tokenizer convert_config convert_safetensors ref_audio qvoice text)
cargo build --release --locked -q -p qwen3-tts-tests --example fuzz
bin=${CARGO_TARGET_DIR:-target}/release/examples/fuzz
echo "$(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for t in "${targets[@]}"; do
    flags=(--target "$t" --timeout "$timeout" --seed "$seed")
    [ -n "$runs" ] && flags+=(--runs "$runs")
    [ -n "$seconds" ] && flags+=(--seconds "$seconds")
    line=$("$bin" "${flags[@]}")
    echo "$line"
    results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(f"{\"target\":<22}{\"executions\":>12}{\"seconds\":>9}{\"execs/s\":>9}{\"crashes\":>9}{\"panics\":>8}{\"timeouts\":>10}")
for r in rows:
    print(f"{r[\"target\"]:<22}{r[\"execs\"]:>12}{r[\"seconds\"]:>9}{r[\"execs_per_s\"]:>9}{r[\"crashes\"]:>9}{r[\"panics\"]:>8}{r[\"timeouts\"]:>10}")
sys.exit(1 if any(r["crashes"] or r["panics"] or r["timeouts"] for r in rows) else 0)
'
