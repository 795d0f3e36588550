#!/usr/bin/env bash
# Quality per quantisation type (issue #16): converts a checkpoint to F32 (TTS model and speech
# tokenizer), re-quantises both to each type with qwen3-tts-quantize, and compares every file with
# the F32 ones on one sentence (tests/examples/quality_report.rs: teacher-forced talker logits
# cosine, code-0 top-1 and code-predictor agreement, vocoder SNR, speaker-encoder x-vector cosine).
# Prints a Markdown table (kept in docs/quality.md).
#
#   scripts/quality_report.sh [checkpoint-dir] [types...]
#       default: models/random-0.6B-Base (scripts/make_real_checkpoints.sh) f16 q8_0 q6_k q5_k q4_k
#   FRAMES=150 THREADS=2 KV_CACHE=f32|f16 (the non-F32 files' cache; default f32) KEEP=1 (keep the converted files under models/quality-<name>/)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-models/random-0.6B-Base}; shift || true
types=("${@:-f16 q8_0 q6_k q5_k q4_k}"); types=(${types[*]})
[[ " ${types[*]} " == *" f16 "* ]] || types=(f16 "${types[@]}")   # the speech SNR's vocoder
[ -f "$src/config.json" ] || {
    echo "error: $src/config.json not found (a Hugging Face checkpoint directory;" \
         "scripts/make_real_checkpoints.sh makes random real-size ones)" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert --bin qwen3-tts-quantize
cargo build --release --locked -q -p qwen3-tts-tests --example quality_report
out=models/quality-$(basename "$src")
mkdir -p "$out"
bin=target/release
[ -f "$out/tts-f32.gguf" ] && [ -f "$out/tokenizer-f32.gguf" ] ||
    "$bin/qwen3-tts-convert" -q -i "$src" -o "$out" --type f32 --tokenizer-type f32 --force >/dev/null
pairs=()
for t in "${types[@]}"; do
    for part in tts tokenizer; do
        [ -f "$out/$part-$t.gguf" ] ||
            "$bin/qwen3-tts-quantize" -q "$out/$part-f32.gguf" "$out/$part-$t.gguf" --type "$t" >/dev/null
    done
    pairs+=("$t=$out/tts-$t.gguf,$out/tokenizer-$t.gguf")
done
echo "checkpoint: $src ($(uptime | sed 's/.*load/load/'))"
"$bin/examples/quality_report" --f32 "$out/tts-f32.gguf" --f32-tokenizer "$out/tokenizer-f32.gguf" \
    --tokenizer "$out/tokenizer-f16.gguf" \
    --ref-audio tests/fixtures/audio/ref_24k.wav --frames "${FRAMES:-150}" --threads "${THREADS:-2}" ${KV_CACHE:+--kv-cache "$KV_CACHE"} \
    "f32=$out/tts-f32.gguf,$out/tokenizer-f32.gguf" "${pairs[@]}"
[ -n "${KEEP:-}" ] || rm -rf "$out"
