#!/usr/bin/env bash
# Converts a real-size random checkpoint (scripts/make_real_checkpoints.sh) at
# every type and prints file sizes, wall time and peak RSS.
#   scripts/convert_real.sh [variant] [types...]     default: 0.6B-Base f32 f16 q8_0 q4_k
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-0.6B-Base}; shift || true
types=("${@:-f32 f16 q8_0 q4_k}"); types=(${types[*]})
src=models/random-$variant
[ -f "$src/config.json" ] || { echo "error: $src not found; run scripts/make_real_checkpoints.sh $variant" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert
out=models/convert-$variant
mkdir -p "$out"
src_bytes=$(stat -c %s "$src/model.safetensors")
printf 'source: %s/model.safetensors %.1f MB\n' "$src" "$(echo "$src_bytes/1000000" | bc -l)"
printf '%-6s %12s %12s %10s %12s\n' type tts_MB tokenizer_MB wall_s peak_RSS_MB
for t in "${types[@]}"; do
    log=$(mktemp)
    start=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$log" target/release/qwen3-tts-convert -q -i "$src" -o "$out" \
        --type "$t" --tokenizer-type "$([ "$t" = f32 ] && echo f32 || echo f16)" --force >/dev/null
    end=$(date +%s.%N)
    tok=$out/tokenizer-$([ "$t" = f32 ] && echo f32 || echo f16).gguf
    printf '%-6s %12.1f %12.1f %10.1f %12.1f\n' "$t" \
        "$(echo "$(stat -c %s "$out/tts-$t.gguf")/1000000" | bc -l)" \
        "$(echo "$(stat -c %s "$tok")/1000000" | bc -l)" \
        "$(echo "$end - $start" | bc -l)" "$(echo "$(tail -1 "$log")/1024" | bc -l)"
    rm -f "$log"
done
