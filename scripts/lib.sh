# Shared helpers of the scripts (sourced, not run; from the repository root).

# wait_for_server LOG PID: waits (up to 2 minutes) for the server started with `--port 0` and
# logging to LOG to answer /health; sets `base` to its URL. Exits with the log if the server
# dies or never gets ready.
wait_for_server() {
    local log=$1 server_pid=$2
    base=""
    for _ in $(seq 1200); do
        base=$(sed -n 's/^listening on //p' "$log" | head -1)
        [ -n "$base" ] && curl -sf "$base/health" >/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "error: the server is not ready" >&2; cat "$log" >&2; exit 1
}

# ref_4s_clip: makes (once) and prints models/bench/ref_4s.wav, the ~4 s reference clip of the
# benchmarks: tests/fixtures/audio/ref_24k.wav (3.2 s) continued from its start.
ref_4s_clip() {
    local clip=models/bench/ref_4s.wav
    mkdir -p models/bench
    [ -f "$clip" ] || python3 - "$clip" <<'EOF'
import sys, wave
with wave.open("tests/fixtures/audio/ref_24k.wav") as w:
    params, frames = w.getparams(), w.readframes(w.getnframes())
need = 4 * params.framerate * params.sampwidth * params.nchannels
with wave.open(sys.argv[1], "wb") as o:
    o.setparams(params)
    o.writeframes((frames * (need // len(frames) + 1))[:need])
EOF
    echo "$clip"
}
