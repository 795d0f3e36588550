#!/usr/bin/env bash
# Every response_format of qwen3-tts-server, whole and streamed (stream_format audio and sse),
# fetched with curl and decoded with ffmpeg/ffprobe; prints a table:
#   format | how | bytes | decoded rate | channels | decoded samples | at 24 kHz | x-samples | difference
# x-samples is the server's count of samples it encoded (the whole response's header; a stream has
# no such header, so its row shows the whole response's figure for the same request and seed).
# The difference is the decoder's samples (at 24 kHz) minus x-samples: 0 for wav, pcm, flac and
# opus (Ogg pre-skip and end granule); MP3 and AAC carry no length, so their decoders add the
# codec's start delay and end padding (a few thousand samples at most).
#
#   scripts/check_formats.sh                      # the tiny CustomVoice fixture model, voice ryan
#   MODEL=models/tts-q8_0.gguf TOKENIZER=models/tokenizer-f16.gguf VOICE=ryan scripts/check_formats.sh
#   MODEL=... REF=models/bench/ref_4s.wav scripts/check_formats.sh   # a Base model: REF is uploaded as the voice
#
# Other knobs: FRAMES (25, 80 ms each), SPEED (1.0), SERVER_BIN (default: built here, debug profile).
# Needs ffmpeg and ffprobe (apt-get install -y ffmpeg), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
FRAMES=${FRAMES:-25}
SPEED=${SPEED:-1.0}
VOICE=${VOICE:-ryan}
REF=${REF:-}
for tool in ffmpeg ffprobe curl python3; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is required (ffmpeg/ffprobe: apt-get install -y ffmpeg)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --locked -q -p qwen3-tts-server
    SERVER_BIN=$target/debug/qwen3-tts-server
fi
if [ -z "${MODEL:-}" ]; then
    # The tiny fixture models (random weights: the audio is noise, the lengths are what count).
    [ -n "${CONVERT_BIN:-}" ] || {
        cargo build --locked -q -p qwen3-tts-cli --bin qwen3-tts-convert
        CONVERT_BIN=$target/debug/qwen3-tts-convert
    }
    "$CONVERT_BIN" -q --input tests/fixtures/tiny-0.6B-CustomVoice --outdir "$tmp/m" --type f32 --tts-only
    "$CONVERT_BIN" -q --input tests/fixtures/tiny-0.6B-Base --outdir "$tmp/m" --tokenizer-type f32 --tokenizer-only
    MODEL=$tmp/m/tts-f32.gguf
    TOKENIZER=$tmp/m/tokenizer-f32.gguf
fi
TOKENIZER=${TOKENIZER:-$(dirname "$MODEL")/tokenizer-f16.gguf}

"$SERVER_BIN" -m "$MODEL" -t "$TOKENIZER" --port 0 --voices-dir "$tmp/voices" 2>"$tmp/server.log" &
pid=$!
wait_for_server "$tmp/server.log" "$pid"
if [ -n "$REF" ]; then
    VOICE=check-formats
    curl -sf "$base/v1/audio/voices" -F name=$VOICE -F overwrite=true -F "audio=@$REF" >/dev/null
fi

body() {  # FORMAT [STREAM_FORMAT]
    python3 -c 'import json, sys
b = {"model": "tts-1", "input": "Hello there, this is a check of every audio format.",
     "voice": sys.argv[2], "response_format": sys.argv[1], "seed": 1234, "speed": float(sys.argv[4]),
     "max_frames": int(sys.argv[3]), "min_frames": int(sys.argv[3])}
if len(sys.argv) > 5 and sys.argv[5]: b["stream_format"] = sys.argv[5]
print(json.dumps(b))' "$1" "$VOICE" "$FRAMES" "$SPEED" "${2:-}"
}

# Samples (at the decoder's rate), rate and channels of FILE as ffmpeg decodes it.
decode() {  # FORMAT FILE
    local in=(-i "$2")
    [ "$1" = pcm ] && in=(-f s16le -ar 24000 -ac 1 -i "$2")
    local info rate ch bytes
    info=$(ffprobe -v error "${in[@]}" -select_streams a:0 -show_entries stream=sample_rate,channels -of csv=p=0)
    rate=${info%%,*}; ch=${info##*,}
    bytes=$(ffmpeg -v error "${in[@]}" -f s16le -acodec pcm_s16le pipe:1 | wc -c)
    echo "$rate $ch $((bytes / 2 / ch))"
}

printf '| %-6s | %-5s | %7s | %6s | %2s | %8s | %9s | %9s | %6s |\n' format how bytes rate ch decoded "at 24 kHz" x-samples diff
printf '|%s|\n' "--------|-------|---------|--------|----|----------|-----------|-----------|--------"
status=0
for fmt in mp3 opus aac flac wav pcm; do
    curl -sf -D "$tmp/h" -o "$tmp/$fmt.whole" "$base/v1/audio/speech" -H 'Content-Type: application/json' -d "$(body $fmt)" \
        || { echo "error: $fmt whole request failed" >&2; status=1; continue; }
    xs=$(tr -d '\r' <"$tmp/h" | sed -n 's/^x-samples: //Ip')
    curl -sfN -o "$tmp/$fmt.audio" "$base/v1/audio/speech" -H 'Content-Type: application/json' -d "$(body $fmt audio)" \
        || { echo "error: $fmt audio stream failed" >&2; status=1; }
    curl -sfN -o "$tmp/$fmt.sse.txt" "$base/v1/audio/speech" -H 'Content-Type: application/json' -d "$(body $fmt sse)" \
        || { echo "error: $fmt sse stream failed" >&2; status=1; }
    python3 - "$tmp/$fmt.sse.txt" "$tmp/$fmt.sse" <<'PY'
import base64, json, sys
out = bytearray()
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("data:"):
        e = json.loads(line[5:])
        if e["type"] == "speech.audio.delta":
            out += base64.b64decode(e["audio"])
        elif e["type"] == "error":
            sys.exit(f"error event: {e}")
open(sys.argv[2], "wb").write(out)
PY
    for how in whole audio sse; do
        f=$tmp/$fmt.$how
        read -r rate ch n < <(decode "$fmt" "$f") || { echo "error: ffmpeg cannot decode $fmt $how" >&2; status=1; continue; }
        at24=$((n * 24000 / rate))
        printf '| %-6s | %-5s | %7d | %6d | %2d | %8d | %9d | %9d | %+6d |\n' \
            "$fmt" "$how" "$(stat -c %s "$f")" "$rate" "$ch" "$n" "$at24" "$xs" "$((at24 - xs))"
    done
done
exit $status
