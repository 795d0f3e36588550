#!/usr/bin/env bash
# Streaming figures on the real-size random 0.6B-Base (x-vector voice from a .qvoice-equivalent clone,
# greedy, exactly FRAMES frames), alone and next to one busy process (`yes > /dev/null`):
#   - library (`bench_stream`, model loaded): time to first audio after the request, cold (the session's
#     first request) and warm (median of RUNS later requests with the same voice), prefill, per-frame
#     production time, and for a player that starts at the first chunk the underruns and the smallest
#     real-time margin;
#   - CLI (`qwen3-tts-run --stream -o - --format pcm --voice V.qvoice`): time from process start to the
#     first audio byte on its standard output, and to the last.
#
#   scripts/bench_stream.sh        # TYPES="q8_0 q4_k" THREADS="2 0" FRAMES=100 RUNS=3 FIRST=1 CHUNK=12 VOCODER=0
#   STREAM=1 scripts/bench.sh      # the same
#
# THREADS 0 = the default (adaptive). VOCODER=n > 0 runs the vocoder concurrently on its own n threads
# (0: interleaved with generation on the same threads). Needs models/convert-0.6B-Base/ and models/bench/ref_4s.wav
# (scripts/bench.sh makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
TYPES=${TYPES:-"q8_0 q4_k"}
THREADS=${THREADS:-"2 0"}
FRAMES=${FRAMES:-100}
RUNS=${RUNS:-3}
FIRST=${FIRST:-1}
CHUNK=${CHUNK:-12}
VOCODER=${VOCODER:-0}
TEXT="Hello there, this is a benchmark of the speech engine, reading a fixed sentence."
dir=models/convert-0.6B-Base
clip=models/bench/ref_4s.wav
[ -f "$dir/tokenizer-f16.gguf" ] && [ -f "$clip" ] ||
    { echo "error: run scripts/bench.sh first ($dir, $clip)" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-tests --example bench_stream -p qwen3-tts-cli --bin qwen3-tts-run
tmp=$(mktemp -d)
pid=""
trap 'rm -rf "$tmp"; [ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

# Seconds from the CLI's start to its first and last byte of audio on stdout.
cli_first_byte() {  # TYPE THREADS
    python3 - "$@" <<'EOF'
import subprocess, sys, time
ty, threads, frames, first, chunk, text, voice, vocoder = sys.argv[1:]
cmd = ["target/release/qwen3-tts-run", "-m", f"models/convert-0.6B-Base/tts-{ty}.gguf",
       "-t", "models/convert-0.6B-Base/tokenizer-f16.gguf", "--voice", voice, "--text", text, "--language", "English",
       "--greedy", "--max-frames", frames, "--min-frames", frames, "--stream", "--format", "pcm",
       "--first-chunk-frames", first, "--chunk-frames", chunk, "--vocoder-threads", vocoder,
       "-o", "-", "-q"]
if threads != "0":
    cmd += ["--threads", threads]
start = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
p.stdout.read(1)
first_byte = time.monotonic() - start
rest = len(p.stdout.read()) + 1
assert p.wait() == 0, "qwen3-tts-run failed"
print(f"{first_byte * 1000:.0f} | {(time.monotonic() - start) * 1000:.0f} | {rest // 2} samples")
EOF
}

for t in $TYPES; do
    [ -f "$dir/tts-$t.gguf" ] || { echo "error: no $dir/tts-$t.gguf (scripts/bench.sh)" >&2; exit 1; }
done
voice=$tmp/bench.qvoice
target/release/qwen3-tts-run -m "$dir/tts-q8_0.gguf" -t "$dir/tokenizer-f16.gguf" --ref-audio "$clip" \
    --x-vector-only --save-voice "$voice" -q

echo "Load: $(uptime | sed 's/.*load average: //'); $FRAMES frames, first chunk $FIRST frame(s), then $CHUNK;" \
    "vocoder threads $VOCODER (0: interleaved)"
echo
echo "| competition | type | threads | 1st audio cold ms | 1st audio warm ms | prefill warm ms | gen ms/frame | underruns | min margin ms | RTF | CLI 1st byte ms | CLI total ms | CLI audio |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for busy in none "one busy process"; do
    if [ "$busy" != none ]; then
        yes > /dev/null &
        pid=$!
        sleep 1
    fi
    for t in $TYPES; do
        for n in $THREADS; do
            lib=$(target/release/examples/bench_stream --tts "$dir/tts-$t.gguf" --tokenizer "$dir/tokenizer-f16.gguf" \
                --ref-audio "$clip" --frames "$FRAMES" --threads "$n" --runs "$RUNS" \
                --first-chunk-frames "$FIRST" --chunk-frames "$CHUNK" --vocoder-threads "$VOCODER" --text "$TEXT" |
                python3 -c "import sys, json; m = json.load(sys.stdin); print(' | '.join(f'{m[k]:.{p}f}' for k, p in \
[('first_audio_cold_ms', 0), ('first_audio_ms', 0), ('prefill_ms', 0), ('generate_ms_per_frame', 1), \
('underruns', 0), ('min_margin_ms', 0), ('rtf', 2)]))")
            cli=$(cli_first_byte "$t" "$n" "$FRAMES" "$FIRST" "$CHUNK" "$TEXT" "$voice" "$VOCODER")
            label=$n
            [ "$n" = 0 ] && label="default"
            echo "| $busy | $t | $label | $lib | $cli |"
        done
    done
    if [ -n "$pid" ]; then kill "$pid"; pid=""; fi
done
