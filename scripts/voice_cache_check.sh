#!/usr/bin/env bash
# The server's warm-voice cache on the real-size random models: memory per warm voice (from /metrics,
# after the stored voices are warmed at start), and its behaviour at a small budget (evictions, and a
# voice whose state was evicted recomputed to the same audio as with a large budget).
#
#   scripts/voice_cache_check.sh                  # MODELS="0.6B-Base 1.7B-Base" TYPE=q8_0 THREADS=2
#
# Voices: icl4 (models/bench/ref_4s.wav, 4.0 s, with its transcript), icl3 (tests/fixtures/audio/
# ref_24k.wav, 3.2 s, with its transcript), xvec (the 4 s clip, x-vector only). Needs
# models/convert-<MODEL>/tts-<TYPE>.gguf and tokenizer-f16.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"0.6B-Base 1.7B-Base"}
TYPE=${TYPE:-q8_0}
THREADS=${THREADS:-2}
REF_TEXT="Okay. Yeah. I resent you. I love you."
cargo build --release --locked -q -p qwen3-tts-server -p qwen3-tts-cli --bin qwen3-tts-server --bin qwen3-tts-run
# shellcheck source=lib.sh
. scripts/lib.sh
ref_4s_clip > /dev/null
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

start() {  # MODEL FLAGS...
    local dir=models/convert-$1; shift
    target/release/qwen3-tts-server -m "$dir/tts-$TYPE.gguf" -t "$dir/tokenizer-f16.gguf" --threads "$THREADS" \
        --port 0 --voices-dir "$tmp/voices" "$@" 2> "$tmp/server.log" &
    pid=$!
    wait_for_server "$tmp/server.log" "$pid"
    url=$base
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
metric() { curl -s "$url/metrics" | sed -n "s/^$1 //p"; }
# Waits until the server's log says every stored voice is warm (or 300 s).
settled() {
    local n
    n=$(ls "$tmp/voices" | grep -c qvoice)
    for _ in $(seq 3000); do
        [ "$(grep -c 'warm in' "$tmp/server.log")" -ge "$n" ] && return
        sleep 0.1
    done
    echo "warning: not all voices warm" >&2
}
speak() {  # VOICE OUT
    curl -sf "$url/v1/audio/speech" -H 'Content-Type: application/json' -o "$2" \
        -d "{\"model\":\"tts-1\",\"input\":\"Hello there, this is the cache check.\",\"voice\":\"$1\",\"response_format\":\"pcm\",\"greedy\":true,\"max_frames\":20,\"min_frames\":20}"
}

for m in $MODELS; do
    dir=models/convert-$m
    rm -rf "$tmp/voices"; mkdir -p "$tmp/voices"
    run=(target/release/qwen3-tts-run -m "$dir/tts-$TYPE.gguf" -t "$dir/tokenizer-f16.gguf" -q --force)
    "${run[@]}" --ref-audio models/bench/ref_4s.wav --ref-text "$REF_TEXT" --save-voice "$tmp/voices/icl4.qvoice"
    "${run[@]}" --ref-audio tests/fixtures/audio/ref_24k.wav --ref-text "$REF_TEXT" --save-voice "$tmp/voices/icl3.qvoice"
    "${run[@]}" --ref-audio models/bench/ref_4s.wav --x-vector-only --save-voice "$tmp/voices/xvec.qvoice"

    echo "## $m $TYPE: three stored voices (two ICL, one x-vector), default budget"
    start "$m"
    settled
    grep "warm in" "$tmp/server.log" | sed 's/.*INFO[^ ]* //; s/^[^ ]*: //'
    echo "entries: prefix $(metric 'qwen3_tts_voice_cache_entries{kind="prefix"}'), vocoder $(metric 'qwen3_tts_voice_cache_entries{kind="vocoder"}'); bytes $(metric qwen3_tts_voice_cache_bytes)"
    speak icl4 "$tmp/big.pcm"
    echo "after one icl4 request: hits $(metric qwen3_tts_voice_cache_hits_total), misses $(metric qwen3_tts_voice_cache_misses_total)"
    stop

    # Each ICL voice alone, for its size.
    for v in icl4 icl3 xvec; do
        mkdir -p "$tmp/one"; mv "$tmp/voices"/*.qvoice "$tmp/one/"; mv "$tmp/one/$v.qvoice" "$tmp/voices/"
        start "$m"; settled
        echo "$v alone: $(metric qwen3_tts_voice_cache_bytes) bytes"
        stop
        mv "$tmp/one"/*.qvoice "$tmp/voices/"
    done

    budget=12
    echo "## $m: --voice-cache-mb $budget (one ICL voice fits, not two)"
    start "$m" --voice-cache-mb "$budget"
    settled
    echo "after the warm-up: entries prefix $(metric 'qwen3_tts_voice_cache_entries{kind="prefix"}'), vocoder $(metric 'qwen3_tts_voice_cache_entries{kind="vocoder"}'), bytes $(metric qwen3_tts_voice_cache_bytes) of $(metric qwen3_tts_voice_cache_budget_bytes), evictions $(metric qwen3_tts_voice_cache_evictions_total)"
    speak icl3 "$tmp/a.pcm"; speak icl4 "$tmp/small.pcm"; speak icl3 "$tmp/b.pcm"
    echo "icl3, icl4, icl3: hits $(metric qwen3_tts_voice_cache_hits_total), misses $(metric qwen3_tts_voice_cache_misses_total), evictions $(metric qwen3_tts_voice_cache_evictions_total), bytes $(metric qwen3_tts_voice_cache_bytes)"
    if cmp -s "$tmp/big.pcm" "$tmp/small.pcm" && cmp -s "$tmp/a.pcm" "$tmp/b.pcm"; then
        echo "icl4 recomputed after eviction: the same audio as with the default budget ($(stat -c %s "$tmp/small.pcm") bytes); icl3 twice: the same"
    else
        echo "MISMATCH: recomputed audio differs"; exit 1
    fi
    stop
done

# A request that comes while an ICL voice is still being warmed (the moment /health says ready), and
# the same request with nothing to warm: first audio and total (the warm-up slows it by its pieces).
during() {
    python3 - "$url" <<'PY'
import http.client, json, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
body = {"model": "tts-1", "input": "Hello there, this is a benchmark of the speech engine, reading a fixed sentence.",
        "voice": "xvec", "response_format": "pcm", "stream_format": "audio", "greedy": True,
        "max_frames": 40, "min_frames": 40}
c = http.client.HTTPConnection(u.hostname, u.port)
t0 = time.monotonic()
c.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
r = c.getresponse()
r.read(1)
first = time.monotonic() - t0
n = 1 + len(r.read())
print(f"first audio {first * 1000:.0f} ms, {time.monotonic() - t0:.2f} s in all for {n / 48000:.2f} s of audio")
PY
}
for m in $MODELS; do
    dir=models/convert-$m
    rm -rf "$tmp/voices"; mkdir -p "$tmp/voices"
    run=(target/release/qwen3-tts-run -m "$dir/tts-$TYPE.gguf" -t "$dir/tokenizer-f16.gguf" -q --force)
    "${run[@]}" --ref-audio models/bench/ref_4s.wav --x-vector-only --save-voice "$tmp/voices/xvec.qvoice"
    start "$m"; settled
    echo "## $m: an x-vector request, nothing to warm: $(during)"
    stop
    "${run[@]}" --ref-audio models/bench/ref_4s.wav --ref-text "$REF_TEXT" --save-voice "$tmp/voices/icl4.qvoice"
    start "$m"
    echo "## $m: the same while icl4 warms: $(during)"
    settled
    grep "warm in" "$tmp/server.log" | sed 's/.*INFO[^ ]* //; s/^[^ ]*: //'
    stop
done
