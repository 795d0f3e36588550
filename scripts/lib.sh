# Shared helpers of the scripts that start qwen3-tts-server (sourced, not run).

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
