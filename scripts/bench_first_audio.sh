#!/usr/bin/env bash
# Time to the first audio byte through qwen3-tts-server, per stored voice kind, on the real-size random
# models: a streamed `pcm` request (greedy, FRAMES frames) is sent to a freshly started server (the first
# request after a restart; the server has had time to warm its stored voices: we wait for /metrics to
# show its stored voices warm, or WAIT seconds for a server without a voice cache), then RUNS more. With BASE=REV a
# build of that commit runs the same requests in the same run (interleaved by model), for a before/after
# (BASE_BIN=path: that commit's server binary, built already).
#
#   scripts/bench_first_audio.sh                      # MODELS="0.6B-Base" VOICES="icl xvec"
#   BASE=a35a2c9 MODELS="0.6B-Base 1.7B-Base" scripts/bench_first_audio.sh
#   MODELS=0.6B-CustomVoice VOICES=speaker scripts/bench_first_audio.sh
#
# Voices: icl (a 4.0 s clip with its transcript), xvec (the same clip, x-vector only), speaker (a
# CustomVoice preset, SPEAKER: ryan). Knobs: TYPE (q8_0), THREADS (2), FRAMES (40), RUNS (5), WAIT (5: seconds to
# let a server without voice-cache metrics settle), EXTRA (more server flags). Needs
# models/convert-<MODEL>/tts-<TYPE>.gguf and tokenizer-f16.gguf (scripts/bench.sh makes them from
# scripts/make_real_checkpoints.sh's checkpoints). Prints one table; peak RSS of each server too.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-0.6B-Base}
VOICES=${VOICES:-"icl xvec"}
TYPE=${TYPE:-q8_0}
THREADS=${THREADS:-2}
FRAMES=${FRAMES:-40}
RUNS=${RUNS:-5}
WAIT=${WAIT:-5}
EXTRA=${EXTRA:-}
REF_TEXT="Okay. Yeah. I resent you. I love you."
TEXT="Hello there, this is a benchmark of the speech engine, reading a fixed sentence."

cargo build --release --locked -q -p qwen3-tts-server -p qwen3-tts-cli --bin qwen3-tts-server --bin qwen3-tts-run
NEW=target/release/qwen3-tts-server
OLD=${BASE_BIN:-}   # a server binary built already (BASE names its commit in the table)
sha=${BASE:-before}
if [ -n "${BASE:-}" ] && [ -z "$OLD" ]; then
    sha=$(git rev-parse --short "$BASE")
    old_target=$PWD/target/bench-ab
    tree=$(mktemp -d)
    git worktree add --detach "$tree" "$sha" >/dev/null
    (cd "$tree" && CARGO_TARGET_DIR=$old_target cargo build --release --locked -q -p qwen3-tts-server \
        --bin qwen3-tts-server)
    git worktree remove --force "$tree" >/dev/null
    OLD=$old_target/release/qwen3-tts-server
fi

# shellcheck source=lib.sh
. scripts/lib.sh
clip=$(ref_4s_clip)

tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

# Starts SERVER on MODEL with the voices in $tmp/voices-MODEL; sets pid and url.
start() {  # SERVER MODEL
    local dir=models/convert-$2
    "$1" -m "$dir/tts-$TYPE.gguf" -t "$dir/tokenizer-f16.gguf" --threads "$THREADS" --port 0 \
        --voices-dir "$tmp/voices-$2" $EXTRA 2> "$tmp/server.log" &
    pid=$!
    wait_for_server "$tmp/server.log" "$pid"
    url=$base
}

# Stops the server; sets rss (its peak RSS in MB).
stop() {
    rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo "?")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

# Waits until the server has warmed NAME and every stored voice, and warms nothing more (its log says
# so; a server with a voice cache), or WAIT seconds.
settle() {  # MODEL NAME
    local t0=$SECONDS names
    names=$(ls "$tmp/voices-$1" | sed -n 's/\.qvoice$//p')
    if curl -s "$url/metrics" | grep -q qwen3_tts_voice_cache_entries; then
        for n in $2 $names; do
            until grep -q "voice $n warm in" "$tmp/server.log"; do
                [ $((SECONDS - t0)) -gt 300 ] && { echo "warning: $n not warm after 300 s" >&2; break; }
                sleep 0.05
            done
        done
        # Then no other warm-up (a CustomVoice model's other presets) for a second.
        local seen=-1 now
        while now=$(grep -c "warm in" "$tmp/server.log"); [ "$now" != "$seen" ]; do
            seen=$now
            sleep 1
        done
        echo "$((SECONDS - t0))"
    else
        sleep "$WAIT"
        echo "-"
    fi
}

# Milliseconds to the first audio byte of RUNS+1 requests: the first, then the median of the rest.
ttfa() {  # VOICE MODEL
    python3 - "$url" "$1" "$2" "$FRAMES" "$RUNS" "$TEXT" <<'EOF'
import http.client, json, statistics, sys, time, urllib.parse
url, voice, model, frames, runs, text = sys.argv[1:]
u = urllib.parse.urlparse(url)
body = {"model": "tts-1", "input": text, "voice": voice, "response_format": "pcm",
        "stream_format": "audio", "greedy": True, "max_frames": int(frames), "min_frames": int(frames)}
times = []
for _ in range(int(runs) + 1):
    c = http.client.HTTPConnection(u.hostname, u.port)
    t0 = time.monotonic()
    c.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    r.read(1)
    times.append((time.monotonic() - t0) * 1000)
    rest = len(r.read()) + 1
    assert rest == int(frames) * 1920 * 2, rest
    c.close()
print(f"{times[0]:.0f} | {statistics.median(times[1:]):.0f} | {min(times[1:]):.0f}–{max(times[1:]):.0f}")
EOF
}

echo "Load: $(uptime | sed 's/.*load average: //'); $TYPE, $THREADS threads, $FRAMES frames, greedy, streamed pcm"
echo
echo "| model | voice | server | warm-up at start s | 1st request ms | median of $RUNS ms | range ms | peak RSS MB |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
for m in $MODELS; do
    dir=models/convert-$m
    mkdir -p "$tmp/voices-$m"
    run=(target/release/qwen3-tts-run -m "$dir/tts-$TYPE.gguf" -t "$dir/tokenizer-f16.gguf" -q --force)
    for v in $VOICES; do
        case $v in
            icl) "${run[@]}" --ref-audio "$clip" --ref-text "$REF_TEXT" --save-voice "$tmp/voices-$m/icl.qvoice" ;;
            xvec) "${run[@]}" --ref-audio "$clip" --x-vector-only --save-voice "$tmp/voices-$m/xvec.qvoice" ;;
        esac
    done
    for v in $VOICES; do
        name=$v
        [ "$v" = speaker ] && name=${SPEAKER:-ryan}
        for which in old new; do
            bin=$NEW; [ "$which" = old ] && bin=$OLD
            [ -n "$bin" ] || continue
            start "$bin" "$m"
            warm=$(settle "$m" "$name")
            times=$(ttfa "$name" "$m")
            stop
            label=$which; [ "$which" = old ] && label="before ($sha)"
            echo "| $m | $v | $label | $warm | $times | $rss |"
        done
    done
done
