#!/usr/bin/env bash
# Speed and memory of the whole engine against the PyTorch reference and the machine's limit, on the
# real-size random checkpoints: one table (scripts/bench_table.py) of talker and code-predictor ms per frame,
# prefill, reference encoding, vocoder ms per second of audio (and GFLOP/s), end-to-end RTF with and without
# loading, first-frame latency and peak RSS, median (and min) of RUNS runs, with the reference's figures from
# the same run, the read bandwidth of this machine, the bytes of weights one frame streams and the resulting
# lower bound on ms per frame.
#
#   scripts/bench.sh
#   STREAM=1 scripts/bench.sh     # streaming: scripts/bench_stream.sh
#   BATCH=1 scripts/bench.sh      # continuous batching: scripts/bench_batch.sh
#
# Workload: greedy, exactly F frames (EOS suppressed), the text below; 0.6B-Base clones from a 4.0 s clip
# (models/bench/ref_4s.wav, made from tests/fixtures/audio/ref_24k.wav) in x-vector and ICL mode;
# 1.7B-CustomVoice uses its first preset speaker. Ours runs each type with tokenizer-f16.gguf.
# Knobs (environment): MODELS ("0.6B-Base 1.7B-CustomVoice"), TYPES ("f16 q8_0 q4_k"), THREADS ("1 2", plus 4
# on machines with 4+ cores), FRAMES ("50 100"), RUNS (3), REFERENCE (1: also run the PyTorch reference;
# 0: ours only), OUT (models/bench/<date>: where the JSON results and table.md go).
# Needs: scripts/make_real_checkpoints.sh <model> (and scripts/setup_oracle.sh for the reference).
set -euo pipefail
cd "$(dirname "$0")/.."
# STREAM=1: the streaming figures instead (time to first audio, underruns; scripts/bench_stream.sh).
[ "${STREAM:-0}" = 1 ] && exec scripts/bench_stream.sh
# BATCH=1: several streams decoded together (frames/s by batch size; scripts/bench_batch.sh).
[ "${BATCH:-0}" = 1 ] && exec scripts/bench_batch.sh
MODELS=${MODELS:-"0.6B-Base 1.7B-CustomVoice"}
TYPES=${TYPES:-"f16 q8_0 q4_k"}
if [ -z "${THREADS:-}" ]; then
    THREADS="1 2"
    [ "$(nproc)" -ge 4 ] && THREADS="1 2 4"
fi
FRAMES=${FRAMES:-"50 100"}
RUNS=${RUNS:-3}
REFERENCE=${REFERENCE:-1}
OUT=${OUT:-models/bench/$(date +%Y%m%d-%H%M%S)}
TEXT="Hello there, this is a benchmark of the speech engine, reading a fixed sentence."
REF_TEXT="Okay. Yeah. I resent you. I love you."
PY=${QWEN3_TTS_ORACLE_VENV:-.venv-oracle}/bin/python

mkdir -p "$OUT"
for m in $MODELS; do
    [ -f "models/random-$m/config.json" ] ||
        { echo "error: models/random-$m not found; run scripts/make_real_checkpoints.sh $m" >&2; exit 1; }
done
if [ "$REFERENCE" = 1 ] && [ ! -x "$PY" ]; then
    echo "error: no oracle venv at $PY (scripts/setup_oracle.sh), or run with REFERENCE=0" >&2
    exit 1
fi
cargo build --release --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert -p qwen3-tts-tests --example bench_e2e \
    --example bench_bandwidth

# The ~4 s reference clip (scripts/lib.sh).
# shellcheck source=lib.sh
. scripts/lib.sh
clip=$(ref_4s_clip)

files=()
for m in $MODELS; do
    dir=models/convert-$m
    for t in $TYPES; do
        [ -f "$dir/tts-$t.gguf" ] ||
            target/release/qwen3-tts-convert -q -i "models/random-$m" -o "$dir" --tts-only --type "$t"
    done
    [ -f "$dir/tokenizer-f16.gguf" ] ||
        target/release/qwen3-tts-convert -q -i "models/random-$m" -o "$dir" --tokenizer-only --tokenizer-type f16
    for t in $TYPES; do files+=(--tts "$dir/tts-$t.gguf"); done
done

echo "== read bandwidth (threads: $THREADS) and weight bytes per frame"
target/release/examples/bench_bandwidth --threads "$(echo $THREADS | tr ' ' ,)" "${files[@]}" \
    > "$OUT/bandwidth.json"

modes_of() { case $1 in *Base) echo "xvec icl" ;; *) echo "speaker" ;; esac; }
for m in $MODELS; do
    dir=models/convert-$m
    for n in $THREADS; do
        for t in $TYPES; do
            for mode in $(modes_of "$m"); do
                for f in $FRAMES; do
                    echo "== ours: $m $t, $n thread(s), $mode, $f frames"
                    target/release/examples/bench_e2e --tts "$dir/tts-$t.gguf" \
                        --tokenizer "$dir/tokenizer-f16.gguf" --mode "$mode" --frames "$f" --threads "$n" \
                        --runs "$RUNS" --ref-audio "$clip" --ref-text "$REF_TEXT" --text "$TEXT" \
                        >> "$OUT/ours.jsonl"
                done
            done
        done
        if [ "$REFERENCE" = 1 ]; then
            echo "== reference (PyTorch F32): $m, $n thread(s)"
            # shellcheck disable=SC2046
            "$PY" scripts/bench_ref.py --model-dir "models/random-$m" --threads "$n" --runs "$RUNS" \
                --frames $FRAMES --modes $(modes_of "$m") --ref-audio "$clip" --ref-text "$REF_TEXT" \
                --text "$TEXT" --language English --json-out "$OUT/ref-$m-t$n.json"
        fi
    done
done
python3 scripts/bench_table.py "$OUT" | tee "$OUT/table.md"
