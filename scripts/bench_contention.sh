#!/usr/bin/env bash
# Generation under contention: 50 frames of the real-size 0.6B-Base (x-vector clone, greedy, talker +
# code predictor only) with 2 threads, 1 thread and the default (0 = adaptive: physical cores, fewer
# while other processes keep cores busy), alone and next to one busy process (`yes > /dev/null`).
# Prints the talker+code-predictor seconds per 50 frames (median of RUNS runs, each a fresh load).
#
#   scripts/bench_contention.sh            # TYPE=q8_0 FRAMES=50 RUNS=3
#
# Needs models/convert-0.6B-Base/ and models/bench/ref_4s.wav as scripts/bench.sh leaves them.
set -euo pipefail
cd "$(dirname "$0")/.."
TYPE=${TYPE:-q8_0}
FRAMES=${FRAMES:-50}
RUNS=${RUNS:-3}
dir=models/convert-0.6B-Base
clip=models/bench/ref_4s.wav
[ -f "$dir/tts-$TYPE.gguf" ] && [ -f "$clip" ] ||
    { echo "error: run scripts/bench.sh first (models/convert-0.6B-Base, $clip)" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-tests --example bench_e2e

run() {  # run THREADS → seconds of talker + code predictor for FRAMES frames
    target/release/examples/bench_e2e --tts "$dir/tts-$TYPE.gguf" --tokenizer "$dir/tokenizer-f16.gguf" \
        --mode xvec --frames "$FRAMES" --threads "$1" --runs "$RUNS" --ref-audio "$clip" \
        --ref-text "Okay. Yeah. I resent you. I love you." --decode-only 1 |
        python3 -c "import sys, json; m = json.load(sys.stdin)['metrics']; \
print(f\"{m['talker_cp_ms_per_frame']['median'] * $FRAMES / 1000:.2f}\")"
}

echo "| competition | --threads 2 | --threads 1 | default (adaptive) |"
echo "|---|---:|---:|---:|"
for busy in none "one busy process"; do
    pid=""
    trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT
    if [ "$busy" != none ]; then
        yes > /dev/null &
        pid=$!
        sleep 1
    fi
    row="| $busy |"
    for t in 2 1 0; do row="$row $(run $t) s |"; done
    [ -n "$pid" ] && kill "$pid"
    echo "$row"
done
echo "(talker + code predictor seconds for $FRAMES frames, $TYPE, median of $RUNS; load $(uptime | sed 's/.*load average: //'))"
