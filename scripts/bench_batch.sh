#!/usr/bin/env bash
# Continuous-batching figures on the real-size random 0.6B-Base (x-vector voice, greedy, exactly FRAMES
# frames each, each stream its own text), N streamed requests arriving together, 2 threads:
#   - decode steps alone (`bench_batch_steps`): talker + code predictor ms per step by batch size;
#   - end to end (`bench_batch`, one process per N, after a warm-up batch): aggregate frames/s with the
#     vocoder and without it, each stream's time to first audio and prefill, underruns for a player
#     that starts at a stream's first chunk, peak RSS (and per additional stream).
# This machine's speed drifts by 2x over minutes (neighbours): every figure is the best of RUNS runs,
# the batch sizes interleaved, so that the ratios compare like with like.
#
#   scripts/bench_batch.sh        # TYPES="q8_0 q4_k" STREAMS="1 2 4 8" FRAMES=48 RUNS=2 THREADS=2 CHUNK=12
#   BATCH=1 scripts/bench.sh      # the same
#
# Needs models/convert-0.6B-Base/ and models/bench/ref_4s.wav (scripts/bench.sh makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
TYPES=${TYPES:-"q8_0 q4_k"}
STREAMS=${STREAMS:-"1 2 4 8"}
FRAMES=${FRAMES:-48}
RUNS=${RUNS:-2}
THREADS=${THREADS:-2}
CHUNK=${CHUNK:-12}
ITERS=${ITERS:-6}
dir=models/convert-0.6B-Base
clip=models/bench/ref_4s.wav
[ -f "$dir/tokenizer-f16.gguf" ] && [ -f "$clip" ] ||
    { echo "error: run scripts/bench.sh first ($dir, $clip)" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-tests --example bench_batch --example bench_batch_steps
echo "# $(date -u +%FT%TZ) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
sizes=$(echo "$STREAMS" | tr ' ' ',')
steps_table=$(cat <<'PY'
import json, sys
best = {}
for line in sys.stdin:
    d = json.loads(line)
    if d["batch"] not in best or d["step_ms"] < best[d["batch"]]["step_ms"]:
        best[d["batch"]] = d
one = best[min(best)]["ms_per_sequence"]
for b, d in sorted(best.items()):
    print("| %d | %.1f | %.1f | %.1f | %.1f | %.2fx |" % (b, d["talker_ms"], d["predictor_ms"],
          d["step_ms"], d["ms_per_sequence"], one / d["ms_per_sequence"]))
PY
)
streams_table=$(cat <<'PY'
import json, sys
best = {}
for line in sys.stdin:
    d = json.loads(line)
    if d["streams"] not in best or d["frames_per_s"] > best[d["streams"]]["frames_per_s"]:
        best[d["streams"]] = d
rows = [best[n] for n in sorted(best)]
one = rows[0]
for d in rows:
    extra = (d["peak_rss_mb"] - one["peak_rss_mb"]) / max(d["streams"] - one["streams"], 1)
    per = " (%+.0f)" % extra if d["streams"] > one["streams"] else ""
    print("| %d | %.2f (%.2fx) | %.2f (%.2fx) | %.2f | %.0f / %.0f | %.0f | %s | %.0f%s |" % (
        d["streams"], d["frames_per_s"], d["frames_per_s"] / one["frames_per_s"],
        d["gen_frames_per_s"], d["gen_frames_per_s"] / one["gen_frames_per_s"], d["audio_s_per_s"],
        d["first_audio_ms_median"], d["first_audio_ms_max"], d["prefill_ms_median"], d["underruns"],
        d["peak_rss_mb"], per))
PY
)
for t in $TYPES; do
    echo
    echo "## $t: decode steps (best of $RUNS interleaved runs of $ITERS steps)"
    echo "| batch | talker ms | code predictor ms | step ms | ms per sequence | vs one |"
    echo "|---|---|---|---|---|---|"
    target/release/examples/bench_batch_steps --tts "$dir/tts-$t.gguf" --threads "$THREADS" \
        --iters "$ITERS" --sizes "$(for _ in $(seq "$RUNS"); do printf '%s,' "$sizes"; done | sed 's/,$//')" |
        python3 -c "$steps_table"
    echo
    echo "## $t: $FRAMES frames per stream, end to end (vocoder interleaved, chunks 1 then $CHUNK; best of $RUNS)"
    echo "| streams | frames/s (vs one) | gen-only frames/s (vs one) | audio s per s | first audio ms median / max | prefill ms | underruns per stream | peak RSS MB (per extra stream) |"
    echo "|---|---|---|---|---|---|---|---|"
    for n in $(for _ in $(seq "$RUNS"); do echo $STREAMS; done); do
        target/release/examples/bench_batch --tts "$dir/tts-$t.gguf" --tokenizer "$dir/tokenizer-f16.gguf" \
            --ref-audio "$clip" --streams "$n" --frames "$FRAMES" --threads "$THREADS" --chunk-frames "$CHUNK"
    done | python3 -c "$streams_table"
done
