#!/usr/bin/env bash
# Vocoder (speech-tokenizer decoder) speed on the real-size random checkpoint: milliseconds of decoding
# per second of audio, ours (F32 and F16 files) and the PyTorch reference (F32) side by side on the same
# seeded random codes, plus the SNR of our waveform against the reference's.
#   scripts/bench_vocoder.sh [frames] [threads...]      default: 50 frames (4 s of audio), 1 and 2 threads
# Needs scripts/make_real_checkpoints.sh 0.6B-Base and scripts/setup_oracle.sh (for the reference side).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-50}; shift || true
threads=("${@:-1 2}"); threads=(${threads[*]})
runs=${RUNS:-3}
src=models/random-0.6B-Base
[ -d "$src/speech_tokenizer" ] || { echo "error: $src not found; run scripts/make_real_checkpoints.sh 0.6B-Base" >&2; exit 1; }
out=models/convert-0.6B-Base
cargo build --release --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert -p qwen3-tts-tests --example bench_vocoder
for t in f32 f16; do
    [ -f "$out/tokenizer-$t.gguf" ] || target/release/qwen3-tts-convert -q -i "$src" -o "$out" \
        --tokenizer-only --tokenizer-type "$t"
done
dump=models/reference-real/vocoder_${frames}f.safetensors
PY=${QWEN3_TTS_ORACLE_VENV:-.venv-oracle}/bin/python
[ -x "$PY" ] || { echo "error: no oracle venv (scripts/setup_oracle.sh)" >&2; exit 1; }
echo "== reference (PyTorch, F32), $frames frames = $(echo "$frames*0.08" | bc) s of audio, $runs runs"
"$PY" scripts/bench_vocoder_ref.py --tokenizer "$src/speech_tokenizer" --frames "$frames" \
    --threads "${threads[@]}" --runs "$runs" --out "$dump"
echo "== ours"
for n in "${threads[@]}"; do
    for t in f32 f16; do
        target/release/examples/bench_vocoder "$out/tokenizer-$t.gguf" "$dump" "$n" "$runs"
    done
done
