#!/usr/bin/env bash
# Real-size talker + code predictor figures (issue #3): converts a real-size
# random checkpoint at every type and compares each with the reference dump
# made by scripts/dump_talker_real.py.
#   scripts/talker_real.sh 0.6B-Base xvec
#   scripts/talker_real.sh 1.7B-CustomVoice ryan_english
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-0.6B-Base}; case=${2:-xvec}; threads=${THREADS:-2}
src=models/random-$variant; out=models/convert-$variant; ref=models/reference-real/$variant/$case
[ -f "$ref.safetensors" ] || { echo "error: $ref.safetensors missing; run scripts/dump_talker_real.py" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert -p qwen3-tts-tests --example compare_reference
for t in ${TYPES:-f32 f16 q8_0 q4_k}; do
    [ -f "$out/tts-$t.gguf" ] || target/release/qwen3-tts-convert -q -i "$src" -o "$out" --type "$t" --tts-only
    target/release/examples/compare_reference "$out/tts-$t.gguf" "$ref" "$threads"
done
