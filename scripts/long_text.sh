#!/usr/bin/env bash
# Long text end to end, as a user runs it:
#   1. a PAGES-page document (scripts/make_long_text.py) through qwen3-tts-run --text-file,
#      offline and --stream: parts, audio length, wall time, peak RSS;
#   2. qwen3-tts-server with a CHARS-character `input` (whole and streamed pcm): status, audio
#      length, time, the server's peak RSS;
#   3. one voice throughout: the long_text_voice example speaks the document with a voice cloned
#      from REF and prints each part's x-vector cosine to the first part's (speaker encoder).
#
#   scripts/long_text.sh                       # tiny random-weight Base model from the fixtures
#   TTS=models/convert-0.6B-Base/tts-q8_0.gguf TOKENIZER=…/tokenizer-f16.gguf \
#       PAGES=2 CHARS=2000 scripts/long_text.sh
#
# Knobs: TTS, TOKENIZER (default: the tiny Base fixture converted at F32), REF
# (tests/fixtures/audio/ref_24k.wav), PAGES (20), CHARS (10000), MAX_FRAMES (25: frames per part;
# random weights never end by themselves, so without a cap every part runs to the runaway
# guard's bound), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
PAGES=${PAGES:-20}
CHARS=${CHARS:-10000}
MAX_FRAMES=${MAX_FRAMES:-25}
THREADS=${THREADS:-2}
REF=${REF:-tests/fixtures/audio/ref_24k.wav}
command -v python3 >/dev/null && command -v curl >/dev/null || { echo "error: python3 and curl are required" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }
cargo build --release --locked -q -p qwen3-tts-cli -p qwen3-tts-server -p qwen3-tts-tests \
    --bins --example long_text_voice
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
if [ -z "${TTS:-}" ]; then
    "$bin/qwen3-tts-convert" -i tests/fixtures/tiny-0.6B-Base -o "$tmp/models" --type f32 -q >/dev/null
    TTS=$tmp/models/tts-f32.gguf
    TOKENIZER=$tmp/models/tokenizer-f16.gguf
fi
echo "model: $TTS; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 scripts/make_long_text.py --pages "$PAGES" > "$tmp/doc.txt"
echo "document: $PAGES pages, $(wc -m < "$tmp/doc.txt") characters, $(wc -w < "$tmp/doc.txt") words"

# --- 1. qwen3-tts-run --text-file, offline and streamed --------------------------------------
for mode in offline stream; do
    extra=()
    [ "$mode" = stream ] && extra=(--stream)
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin/qwen3-tts-run" -m "$TTS" -t "$TOKENIZER" \
        --ref-audio "$REF" --text-file "$tmp/doc.txt" --max-frames "$MAX_FRAMES" --seed 1 \
        --threads "$THREADS" -o "$tmp/$mode.wav" "${extra[@]}" 2>"$tmp/$mode.log"
    read -r wall rss_kb < "$tmp/time"
    summary=$(tail -1 "$tmp/$mode.log")
    echo "qwen3-tts-run $mode: $(grep -c '^part ' "$tmp/$mode.log") parts; wall ${wall} s; peak RSS $((rss_kb / 1024)) MB"
    echo "    $summary"
done
cmp -s "$tmp/offline.wav" "$tmp/stream.wav" && same="identical" || same="differ"
echo "offline and streamed files: $same ($(stat -c %s "$tmp/offline.wav") bytes)"

# --- 2. the server with a long input ---------------------------------------------------------
"$bin/qwen3-tts-server" -m "$TTS" -t "$TOKENIZER" --port 0 --threads "$THREADS" \
    --max-input-chars $((CHARS * 2)) --request-timeout 86400 --voices-dir "$tmp/voices" 2>"$tmp/server.log" &
pid=$!
wait_for_server "$tmp/server.log" "$pid"
curl -sf "$base/v1/audio/voices" -F name=long -F "audio=@$REF" >/dev/null \
    || { echo "error: the voice upload failed" >&2; tail "$tmp/server.log" >&2; exit 1; }
python3 scripts/make_long_text.py --chars "$CHARS" --seed 2 > "$tmp/input.txt"
for stream in whole audio; do
    python3 - "$tmp/input.txt" "$MAX_FRAMES" "$stream" > "$tmp/body.json" <<'PY'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read().rstrip("\n")
body = {"model": "tts-1", "voice": "long", "input": text, "response_format": "pcm",
        "seed": 1, "max_frames": int(sys.argv[2])}
if sys.argv[3] != "whole":
    body["stream_format"] = sys.argv[3]
print(json.dumps(body))
PY
    out=$(curl -s -o "$tmp/speech-$stream.pcm" -w '%{http_code} %{time_starttransfer} %{time_total}' \
        "$base/v1/audio/speech" -H 'Content-Type: application/json' --data-binary "@$tmp/body.json")
    read -r code first total <<< "$out"
    bytes=$(stat -c %s "$tmp/speech-$stream.pcm")
    echo "server, $(python3 -c "import json;print(len(json.load(open('$tmp/body.json'))['input']))")-character input, $stream: HTTP $code, $(python3 -c "print(f'{$bytes/48000:.1f}')") s of audio, first byte ${first} s, total ${total} s"
done
cmp -s "$tmp/speech-whole.pcm" "$tmp/speech-audio.pcm" && echo "whole and streamed responses: identical" \
    || echo "whole and streamed responses: DIFFER"
grep -o 'request [^ ]* voice=long .*' "$tmp/server.log" | tail -1 | sed 's/^/    /'
echo "server peak RSS: $(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$pid/status) MB"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

# --- 3. one voice throughout -----------------------------------------------------------------
for mode in offline stream; do
    extra=()
    [ "$mode" = stream ] && extra=(--stream)
    "$bin/examples/long_text_voice" --tts "$TTS" --tokenizer "$TOKENIZER" --ref-audio "$REF" \
        --text-file "$tmp/doc.txt" --max-frames "$MAX_FRAMES" --threads "$THREADS" "${extra[@]}" \
        > "$tmp/voice-$mode.txt"
    echo "one voice ($mode): $(tail -1 "$tmp/voice-$mode.txt")"
done
