#!/usr/bin/env bash
# Same-run A/B of the vocoder's figures, this checkout against an earlier commit (the fast-convolution
# issue's measurements): one stream's pushes (bench_vocoder_tiles), fast against direct convolution in
# one process with their SNR (vocoder_fast_conv, this checkout only), each residual-unit shape alone
# (bench_conv), streaming (bench_stream: first chunk 1 frame then 12, 100 frames) and concurrent
# streams (bench_batch: 1 and 4 streams, 48 frames), old and new interleaved; then scripts/bench_ab.sh.
#
#   scripts/bench_vocoder_ab.sh REV        # e.g. scripts/bench_vocoder_ab.sh f6cd16f
#
# Needs models/convert-0.6B-Base/{tts-q8_0,tts-q4_k,tokenizer-f16,tokenizer-f32}.gguf and
# models/bench/ref_4s.wav (scripts/bench.sh, then qwen3-tts-convert --type q4_k --tts-only and
# --tokenizer-only --tokenizer-type f32). REV is built into target/bench-ab/ (kept for the next call).
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench_vocoder_ab.sh REV}
sha=$(git rev-parse --short "$REV")
dir=models/convert-0.6B-Base
clip=models/bench/ref_4s.wav
for f in "$clip" "$dir/tokenizer-f16.gguf" "$dir/tokenizer-f32.gguf" "$dir/tts-q8_0.gguf" "$dir/tts-q4_k.gguf"; do
    [ -f "$f" ] || { echo "error: $f missing (see this script's header)" >&2; exit 1; }
done
TEXT="Hello there, this is a benchmark of the speech engine, reading a fixed sentence."
examples=(bench_vocoder_tiles bench_stream bench_batch)
old_target=$PWD/target/bench-ab
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$tree" "$sha" >/dev/null
(cd "$tree" && CARGO_TARGET_DIR=$old_target cargo build --release --locked -q -p qwen3-tts-tests \
    "${examples[@]/#/--example=}")
cargo build --release --locked -q -p qwen3-tts-tests "${examples[@]/#/--example=}" \
    --example bench_conv --example vocoder_fast_conv --example bench_bandwidth
OLD=$old_target/release/examples
NEW=target/release/examples
echo "# $(date -u +%FT%TZ), old = $sha, new = this checkout; $(uptime)"
"$NEW/bench_bandwidth" --threads 2
echo "## one stream's pushes (F16 tokenizer, 2 threads, min of 5)"
for b in "$OLD" "$NEW"; do echo "### $b"; "$b/bench_vocoder_tiles" "$dir/tokenizer-f16.gguf" 2 5 1,2,4,12,25; done
echo "## fast against direct convolution in one process (new)"
for t in f32 f16; do "$NEW/vocoder_fast_conv" "$dir/tokenizer-$t.gguf" 2 50 5; done
echo "## each residual-unit shape alone (new)"
"$NEW/bench_conv" 2 3
echo "## streaming: 100 frames, first chunk 1 then 12, 2 threads"
for t in q8_0 q4_k; do
    for b in "$OLD" "$NEW"; do
        echo "### $t $b"
        "$b/bench_stream" --tts "$dir/tts-$t.gguf" --tokenizer "$dir/tokenizer-f16.gguf" --ref-audio "$clip" \
            --frames 100 --threads 2 --runs 3 --first-chunk-frames 1 --chunk-frames 12 --vocoder-threads 0 \
            --text "$TEXT"
    done
done
echo "## concurrent streams: 48 frames each, chunks 1 then 12, 2 threads (two rounds)"
for t in q8_0 q4_k; do
    for _ in 1 2; do
        for n in 1 4; do
            for b in "$OLD" "$NEW"; do
                echo "### $t streams=$n $b"
                "$b/bench_batch" --tts "$dir/tts-$t.gguf" --tokenizer "$dir/tokenizer-f16.gguf" \
                    --ref-audio "$clip" --streams "$n" --frames 48 --threads 2 --chunk-frames 12
            done
        done
    done
done
echo "## end to end (scripts/bench_ab.sh)"
scripts/bench_ab.sh "$sha" 2>/dev/null
echo "# done $(date -u +%FT%TZ); $(uptime)"
