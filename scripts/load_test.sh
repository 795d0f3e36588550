#!/usr/bin/env bash
# A bounded load test of qwen3-tts-server on loopback, on the real-size model:
#   1. starts the server (--threads THREADS, --max-batch MAX_BATCH, --max-queue MAX_QUEUE) and
#      uploads an x-vector voice from REF;
#   2. one warm streamed pcm request after a warm-up request with the same stored voice: its time
#      to the first audio byte (the target is <= 250 ms at 2 threads on a quiet machine);
#   3. CLIENTS concurrent clients, each sending COUNT streamed pcm requests (a fixed short text,
#      max_frames FRAMES) one after the other; per request its status, time to first audio byte
#      and total time;
#   4. prints the requests by status (200 and 429 are expected; anything else, a transport error
#      or a 200 whose stream is cut short is a failure and the exit status is 1), p50/p95 of first
#      byte and total for the 200s, and the server's peak RSS (VmHWM).
#
#   scripts/load_test.sh                          # 32 clients x 2 requests, 40 frames
#   CLIENTS=4 COUNT=1 scripts/load_test.sh        # a quick check that it works
#
# Knobs: TTS (models/convert-0.6B-Base/tts-q8_0.gguf), TOKENIZER (…/tokenizer-f16.gguf),
# REF (models/bench/ref_4s.wav), CLIENTS (32), COUNT (2), FRAMES (40), THREADS (2),
# MAX_BATCH (4: requests decoded together; 1: one at a time), MAX_QUEUE (8), LIMIT (600:
# seconds for the whole client phase; requests still running then count as failures), SERVER_BIN
# (default: built here with the release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
TTS=${TTS:-models/convert-0.6B-Base/tts-q8_0.gguf}
TOKENIZER=${TOKENIZER:-models/convert-0.6B-Base/tokenizer-f16.gguf}
REF=${REF:-models/bench/ref_4s.wav}
CLIENTS=${CLIENTS:-32}
COUNT=${COUNT:-2}
FRAMES=${FRAMES:-40}
THREADS=${THREADS:-2}
MAX_QUEUE=${MAX_QUEUE:-8}
MAX_BATCH=${MAX_BATCH:-4}
LIMIT=${LIMIT:-600}
for f in "$TTS" "$TOKENIZER" "$REF"; do
    [ -f "$f" ] || { echo "error: no $f (scripts/bench.sh makes the models and the reference clip)" >&2; exit 1; }
done
command -v curl >/dev/null && command -v python3 >/dev/null || { echo "error: curl and python3 are required" >&2; exit 1; }
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --locked -q -p qwen3-tts-server
    SERVER_BIN=${CARGO_TARGET_DIR:-target}/release/qwen3-tts-server
fi
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

"$SERVER_BIN" -m "$TTS" -t "$TOKENIZER" --host 127.0.0.1 --port 0 --threads "$THREADS" \
    --max-batch "$MAX_BATCH" --max-queue "$MAX_QUEUE" --voices-dir "$tmp/voices" 2>"$tmp/server.log" &
pid=$!
wait_for_server "$tmp/server.log" "$pid"
curl -sf "$base/v1/audio/voices" -F name=load -F "audio=@$REF" >/dev/null \
    || { echo "error: the voice upload failed" >&2; tail "$tmp/server.log" >&2; exit 1; }

status=0
python3 - "$base" "$CLIENTS" "$COUNT" "$FRAMES" "$LIMIT" <<'PY' || status=1
import asyncio, http.client, json, math, sys, time, urllib.parse

base, clients, count, frames, limit = sys.argv[1], *map(int, sys.argv[2:6])
url = urllib.parse.urlsplit(base)
body = json.dumps({"model": "tts-1", "voice": "load", "response_format": "pcm",
                   "stream_format": "audio", "seed": 1,
                   "input": "Hello there, this is a short load test sentence.",
                   "max_frames": frames}).encode()

def one():
    """(status, seconds to first audio byte or None, total seconds, error or None)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=limit)
    try:
        conn.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        first, n = None, 0
        while True:
            b = r.read1(65536) if r.status == 200 else r.read()
            if not b:
                break
            if first is None:
                first = time.monotonic() - start
            n += len(b)
            if r.status != 200:
                break
        err = None
        if r.status == 200 and (n == 0 or n % 2):
            err = f"200 with {n} bytes of pcm"
        return r.status, first, time.monotonic() - start, err
    except Exception as e:  # a cut stream (IncompleteRead), a reset, a timeout
        return None, None, time.monotonic() - start, f"{type(e).__name__}: {e}"
    finally:
        conn.close()

def pct(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]

async def client():
    return [await asyncio.to_thread(one) for _ in range(count)]

async def main():
    # A warm-up request, then the measured warm one, with the same stored voice.
    s, _, _, e = await asyncio.to_thread(one)
    assert s == 200 and e is None, f"warm-up request: status {s} {e}"
    s, first, total, e = await asyncio.to_thread(one)
    assert s == 200 and e is None and first is not None, f"warm request: status {s} {e}"
    print(f"warm streamed pcm request: first audio byte {first * 1000:.0f} ms, total {total * 1000:.0f} ms")
    # Every client in its own thread: the default executor has too few for 32.
    loop = asyncio.get_running_loop()
    from concurrent.futures import ThreadPoolExecutor
    loop.set_default_executor(ThreadPoolExecutor(max_workers=clients))
    start = time.monotonic()
    try:
        results = await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), limit + 30)
    except asyncio.TimeoutError:
        print(f"FAIL: the clients did not finish within {limit} s")
        return 1
    wall = time.monotonic() - start
    rs = [r for c in results for r in c]
    by = {}
    for s, _, _, e in rs:
        key = str(s) if e is None else f"error ({s})"
        by[key] = by.get(key, 0) + 1
    print(f"{len(rs)} requests from {clients} clients x {count} in {wall:.1f} s: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(by.items())))
    ok = [r for r in rs if r[0] == 200 and r[3] is None]
    if ok:
        firsts = [r[1] for r in ok]
        totals = [r[2] for r in ok]
        print(f"200s: first audio byte p50 {pct(firsts, 50) * 1000:.0f} ms, p95 {pct(firsts, 95) * 1000:.0f} ms; "
              f"total p50 {pct(totals, 50) * 1000:.0f} ms, p95 {pct(totals, 95) * 1000:.0f} ms")
    bad = [r for r in rs if r[3] is not None or r[0] not in (200, 429)]
    for r in bad[:10]:
        print(f"FAIL: status {r[0]}: {r[3]}")
    return 1 if bad or not ok else 0

sys.exit(asyncio.run(main()))
PY
hwm=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$pid/status")
echo "server peak RSS (VmHWM): $hwm"
echo "server log: $(grep -c 'outcome=ok' "$tmp/server.log") ok, $(grep -c 'outcome=busy' "$tmp/server.log") busy, $(grep -Ec 'outcome=(error|timeout|cancelled)' "$tmp/server.log") error/timeout/cancelled"
exit $status
