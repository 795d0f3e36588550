#!/usr/bin/env bash
# A fleet on loopback: nginx (Debian's, with deploy/nginx/qwen3-tts.conf as shipped, its ports rewritten)
# in front of REPLICAS qwen3-tts-server processes on one voices directory, under a mixed load, with a
# rolling restart in the middle. Bounded in requests and time; stops everything by itself.
#
#   scripts/fleet_test.sh               # tiny Base model (tests/fixtures), 3 replicas, ~1 minute
#   scripts/fleet_test.sh --real        # the real-size random 0.6B-Base Q8_0 (models/convert-0.6B-Base)
#
# What it does and prints:
#   1. first audio, direct to a replica vs through nginx: the same streamed request, alternating,
#      ROUNDS times each (p50/p95);
#   2. a voice uploaded through replica 1, then spoken through each other replica: the time until it
#      speaks there;
#   3. CLIENTS clients through nginx, each request one of: whole WAV, streamed PCM, SSE, with the shared
#      voice or a voice the client uploaded through a random replica, plus intended 4xx (an unknown
#      voice); meanwhile every replica in turn gets SIGTERM, drains, exits and starts again;
#   4. requests sent / ok / intended 4xx / failed (a transport error, another status, a cut stream), the
#      restarts with their drain times; exit status 1 if any request failed.
#
# Knobs: REPLICAS (3), CLIENTS (6), THREADS (per replica; 1), FRAMES (max_frames per request; 12 tiny,
# 24 real), ROUNDS (10), LIMIT (seconds for the load phase at most; 240), SERVER_BIN, CONVERT_BIN
# (default: built here, release). Needs nginx (apt-get install nginx-light), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=0
[ "${1:-}" = "--real" ] && REAL=1
REPLICAS=${REPLICAS:-3}
CLIENTS=${CLIENTS:-6}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-10}
LIMIT=${LIMIT:-240}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || { echo "error: no nginx (apt-get install nginx-light)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
if [ -z "${SERVER_BIN:-}" ] || { [ "$REAL" = 0 ] && [ -z "${CONVERT_BIN:-}" ]; }; then
    cargo build --release --locked -q -p qwen3-tts-server -p qwen3-tts-cli
fi
SERVER_BIN=${SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/qwen3-tts-server}
CONVERT_BIN=${CONVERT_BIN:-${CARGO_TARGET_DIR:-target}/release/qwen3-tts-convert}
tmp=$(mktemp -d)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
if [ "$REAL" = 1 ]; then
    TTS=models/convert-0.6B-Base/tts-q8_0.gguf
    TOKENIZER=models/convert-0.6B-Base/tokenizer-f16.gguf
    FRAMES=${FRAMES:-24}
    for f in "$TTS" "$TOKENIZER"; do
        [ -f "$f" ] || { echo "error: no $f (scripts/make_real_checkpoints.sh, then qwen3-tts-convert)" >&2; exit 1; }
    done
else
    "$CONVERT_BIN" -i tests/fixtures/tiny-0.6B-Base -o "$tmp/models" --type q8_0 -q >/dev/null
    TTS=$tmp/models/tts-q8_0.gguf
    TOKENIZER=$tmp/models/tokenizer-f16.gguf
    FRAMES=${FRAMES:-12}
fi

python3 - "$SERVER_BIN" "$NGINX" "$TTS" "$TOKENIZER" "$tmp" "$REPLICAS" "$CLIENTS" "$THREADS" "$FRAMES" \
    "$ROUNDS" "$LIMIT" <<'PY'
import base64, http.client, json, math, os, random, re, signal, socket, subprocess, sys, threading, time

(server_bin, nginx, tts, tokenizer, tmp, replicas, clients, threads, frames, rounds, limit) = sys.argv[1:]
replicas, clients, threads, frames, rounds, limit = map(int, (replicas, clients, threads, frames, rounds, limit))
REF = "tests/fixtures/audio/ref_24k.wav"
voices = os.path.join(tmp, "voices")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, i):
        self.i, self.port, self.proc, self.log = i, free_port(), None, os.path.join(tmp, f"replica{i}.log")

    def start(self):
        self.proc = subprocess.Popen(
            [server_bin, "-m", tts, "-t", tokenizer, "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", str(threads), "--voices-dir", voices],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))

    def wait_ready(self, secs=120):
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            if self.proc.poll() is not None:
                sys.exit(f"replica {self.i} exited: " + open(self.log).read()[-2000:])
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"replica {self.i} not ready")


def request(port, method, path, body=None, headers=None, timeout=120):
    """(status, headers, body bytes); raises on a transport error."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def multipart(fields, file_field, file_name, data):
    b = "----fleet" + str(random.random())[2:]
    out = b""
    for k, v in fields.items():
        out += f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    out += (f"--{b}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{file_name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{b}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={b}"}


def upload(port, name):
    body, h = multipart({"name": name}, "audio", "ref.wav", open(REF, "rb").read())
    return request(port, "POST", "/v1/audio/voices", body, h)[0]


def speech(port, voice, kind, text="Hello from the fleet test."):
    """One speech request of `kind` (whole, stream, sse): (status, first audio s, error or None)."""
    body = {"model": "tts-1", "voice": voice, "input": text, "max_frames": frames, "seed": 1}
    if kind == "whole":
        body["response_format"] = "wav"
    elif kind == "stream":
        body.update(response_format="pcm", stream_format="audio")
    else:
        body.update(response_format="pcm", stream_format="sse")
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return r.status, None, None
        first, data = None, b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - t0
            data += chunk
        if kind == "whole" and not (data[:4] == b"RIFF" and len(data) > 44):
            return 200, first, "not a WAV"
        if kind == "stream" and (not data or len(data) % 2):
            return 200, first, f"{len(data)} bytes of pcm"
        if kind == "sse" and b"speech.audio.done" not in data:
            return 200, first, "the event stream has no done event"
        return 200, first, None
    except Exception as e:
        return None, None, f"{type(e).__name__}: {e}"
    finally:
        c.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))] if xs else float("nan")


# --- the fleet
os.makedirs(voices)
reps = [Replica(i + 1) for i in range(replicas)]
for r in reps:
    r.start()
for r in reps:
    r.wait_ready()
lb_port = free_port()
conf = open("deploy/nginx/qwen3-tts.conf").read()
servers = "\n".join(f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in reps)
conf, n = re.subn(r"(\n    server 127\.0\.0\.1:800\d [^\n]*)+", "\n" + servers, conf)
assert n == 1, "the upstream block of deploy/nginx/qwen3-tts.conf changed"
conf = conf.replace("listen 80;", f"listen 127.0.0.1:{lb_port};")
open(os.path.join(tmp, "qwen3-tts.conf"), "w").write(conf)
open(os.path.join(tmp, "nginx.conf"), "w").write(f"""
daemon off;
user root root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    include {tmp}/qwen3-tts.conf;
}}
""")
nginx_proc = subprocess.Popen([nginx, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "nginx.out"), "w"))
try:
    for _ in range(100):
        try:
            if request(lb_port, "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("nginx did not come up: " + open(os.path.join(tmp, "nginx.out")).read())

    # 2. The voice every client uses, uploaded through replica 1, spoken at once through each other
    # replica (the id looked up on the miss: first audio of a streamed request, from the upload's
    # answer); another one, uploaded likewise, until each other replica lists it (its rescan).
    assert upload(reps[0].port, "fleet") == 201
    t_up = time.monotonic()
    spoke = []
    for r in reps[1:]:
        s, f, e = speech(r.port, "fleet", "stream")
        assert s == 200 and e is None, f"replica {r.i}: {s} {e}"
        spoke.append(time.monotonic() - t_up)
        t_up = time.monotonic()
    assert upload(reps[0].port, "fleet-listed") == 201
    t_up = time.monotonic()
    listed = {}
    while len(listed) < replicas - 1 and time.monotonic() - t_up < 10:
        for r in reps[1:]:
            if r.i not in listed and b'"fleet-listed"' in request(r.port, "GET", "/v1/audio/voices")[2]:
                listed[r.i] = time.monotonic() - t_up
        time.sleep(0.02)
    assert len(listed) == replicas - 1, f"not listed everywhere: {listed}"
    print(f"voice uploaded through replica 1: a streamed request through replicas 2..{replicas} right after "
          "the upload's answer: whole request done after " + ", ".join(f"{x * 1000:.0f} ms" for x in spoke)
          + "; another voice listed there (rescan) after "
          + ", ".join(f"{listed[r.i] * 1000:.0f} ms" for r in reps[1:]))

    # 1. First audio direct vs through nginx, alternating.
    direct, via = [], []
    for k in range(rounds):
        s, f, e = speech(reps[k % replicas].port, "fleet", "stream")
        assert s == 200 and e is None, (s, e)
        direct.append(f)
        s, f, e = speech(lb_port, "fleet", "stream")
        assert s == 200 and e is None, (s, e)
        via.append(f)
    print(f"first audio, streamed pcm, {rounds} each: direct p50 {pct(direct, 50) * 1000:.0f} ms, "
          f"p95 {pct(direct, 95) * 1000:.0f} ms; through nginx p50 {pct(via, 50) * 1000:.0f} ms, "
          f"p95 {pct(via, 95) * 1000:.0f} ms")

    # 3. Load with a rolling restart.
    stop = threading.Event()
    results, lock = [], threading.Lock()

    def client(c):
        rnd = random.Random(c)
        own = f"client{c}"
        status = upload(rnd.choice(reps).port, own)  # through one replica, used through all
        with lock:
            results.append(("upload", status, None, None if status == 201 else f"upload {status}"))
        while not stop.is_set():
            kind = rnd.choice(["whole", "stream", "sse"])
            roll = rnd.random()
            voice = "nobody" if roll < 0.08 else own if roll < 0.5 else "fleet"
            s, f, e = speech(lb_port, voice, kind)
            with lock:
                results.append((kind if voice != "nobody" else "unknown-voice", s, f, e))

    workers = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t_load = time.monotonic()
    for w in workers:
        w.start()
    time.sleep(2)
    restarts = []
    for r in reps:
        if time.monotonic() - t_load > limit:
            break
        t0 = time.monotonic()
        r.proc.send_signal(signal.SIGTERM)
        code = r.proc.wait(timeout=120)
        drained = time.monotonic() - t0
        r.start()
        r.wait_ready()
        restarts.append((r.i, code, drained, time.monotonic() - t0))
        time.sleep(1)
    time.sleep(2)
    stop.set()
    for w in workers:
        w.join(timeout=150)
    wall = time.monotonic() - t_load
    for i, code, drained, total in restarts:
        print(f"rolling restart: replica {i} drained and exited with status {code} in {drained:.2f} s, "
              f"ready again {total:.2f} s after SIGTERM")
    ok = [x for x in results if x[1] in (200, 201) and x[3] is None]
    intended = [x for x in results if x[0] == "unknown-voice" and x[1] == 400]
    failed = [x for x in results if x not in ok and x not in intended]
    by_kind = {}
    for x in ok:
        by_kind[x[0]] = by_kind.get(x[0], 0) + 1
    print(f"load: {len(results)} requests in {wall:.1f} s through nginx ({clients} clients, "
          f"{len(restarts)} restarts): {len(ok)} ok ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))}), "
          f"{len(intended)} intended 4xx (unknown voice), {len(failed)} failed")
    firsts = [x[2] for x in ok if x[2] is not None and x[0] in ("stream", "sse")]
    print(f"first audio through nginx under load (streamed): p50 {pct(firsts, 50) * 1000:.0f} ms, "
          f"p95 {pct(firsts, 95) * 1000:.0f} ms")
    for x in failed[:10]:
        print(f"FAIL: {x}")
    retried = sum(1 for line in open(os.path.join(tmp, "nginx-error.log"))
                  if "upstream" in line) if os.path.exists(os.path.join(tmp, "nginx-error.log")) else 0
    print(f"nginx error log: {retried} upstream lines (refused connections and 503s it retried elsewhere)")
    bad_exit = [x for x in restarts if x[1] != 0]
    sys.exit(1 if failed or bad_exit or len(restarts) < replicas else 0)
finally:
    nginx_proc.terminate()
    nginx_proc.wait(timeout=10)
    for r in reps:
        if r.proc and r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()
PY
