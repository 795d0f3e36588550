#!/usr/bin/env bash
# Fuzzes every target (tests/fuzz.rs: files, audio, text; server/tests/fuzz_targets: request
# bodies and voice uploads through the router), or those named, with the stable mutation driver
# (tests/fuzz_driver.rs; no nightly needed) and prints per target the executions, crashes
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
[ ${#targets[@]} -eq 0 ] && targets=(gguf_model gguf_tokenizer convert_config convert_safetensors ref_audio qvoice text
    speech_request voice_upload)
cargo build --release --locked -q -p qwen3-tts-tests -p qwen3-tts-server --example fuzz --example fuzz_server
examples=${CARGO_TARGET_DIR:-target}/release/examples
echo "$(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for t in "${targets[@]}"; do
    flags=(--target "$t" --timeout "$timeout" --seed "$seed")
    [ -n "$runs" ] && flags+=(--runs "$runs")
    [ -n "$seconds" ] && flags+=(--seconds "$seconds")
    case "$t" in
        speech_request|voice_upload) bin=$examples/fuzz_server ;;  # the server's router
        *) bin=$examples/fuzz ;;
    esac
    line=$("$bin" "${flags[@]}")
    echo "$line"
    results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c "$(cat <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
cols = ["target", "execs", "seconds", "execs_per_s", "crashes", "panics", "timeouts"]
head = ["target", "executions", "seconds", "execs/s", "crashes", "panics", "timeouts"]
fmt = "{:<22}{:>12}{:>9}{:>10}{:>9}{:>8}{:>10}"
print(fmt.format(*head))
for r in rows:
    print(fmt.format(*[r[c] for c in cols]))
sys.exit(1 if any(r["crashes"] or r["panics"] or r["timeouts"] for r in rows) else 0)
PY
)"
