#!/usr/bin/env python3
"""Fetches speech from qwen3-tts-server with the official `openai` package, unmodified.

For every response_format: the whole file (`client.audio.speech.create`), the `audio` stream and
the `sse` stream (`client.audio.speech.with_streaming_response.create` + `iter_bytes`; for SSE the
`data:` lines are parsed here and the base64 deltas joined). Writes OUT/FORMAT.whole,
OUT/FORMAT.audio and OUT/FORMAT.sse (the audio bytes) and prints a JSON summary on stdout.
Also checks that a wrong key is an AuthenticationError and an out-of-range speed a
BadRequestError naming `speed`.

Exit status 3 (and a message on stderr) when `openai` is not importable.

usage: openai_client.py --base-url http://127.0.0.1:PORT/v1 --api-key KEY --model M --voice V --out DIR
"""

import argparse
import base64
import json
import os
import sys

try:
    import openai
    from openai import OpenAI
except ImportError as e:  # the Rust test decides whether that is a skip or a failure
    print(f"openai not importable: {e}", file=sys.stderr)
    sys.exit(3)

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


def sse_audio(text):
    """The audio bytes and event types of an SSE body (`data:` lines, one JSON event each)."""
    audio, types = bytearray(), []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        event = json.loads(line[len("data:"):].strip())
        types.append(event["type"])
        if event["type"] == "speech.audio.delta":
            audio += base64.b64decode(event["audio"])
        elif event["type"] == "error":
            raise RuntimeError(f"error event: {event}")
    return bytes(audio), types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model", default="tts-1")
    ap.add_argument("--voice", default="ryan")
    ap.add_argument("--input", default="Hello there, this is a test.")
    ap.add_argument("--frames", type=int, default=10, help="max_frames and min_frames")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    common = dict(model=args.model, voice=args.voice, input=args.input)
    knobs = {"seed": args.seed, "max_frames": args.frames, "min_frames": args.frames}
    summary = {"openai_version": openai.__version__, "formats": {}}

    for fmt in FORMATS:
        got = {}
        whole = client.audio.speech.create(**common, response_format=fmt, extra_body=knobs)
        data = whole.content
        got["whole"] = len(data)
        got["content_type"] = whole.response.headers.get("content-type")
        got["x_samples"] = int(whole.response.headers.get("x-samples", "-1"))
        with open(os.path.join(args.out, f"{fmt}.whole"), "wb") as f:
            f.write(data)

        with client.audio.speech.with_streaming_response.create(
            **common, response_format=fmt, extra_body={**knobs, "stream_format": "audio"}
        ) as r:
            data = b"".join(r.iter_bytes())
            got["audio_content_type"] = r.headers.get("content-type")
        got["audio"] = len(data)
        with open(os.path.join(args.out, f"{fmt}.audio"), "wb") as f:
            f.write(data)

        with client.audio.speech.with_streaming_response.create(
            **common, response_format=fmt, extra_body={**knobs, "stream_format": "sse"}
        ) as r:
            text = b"".join(r.iter_bytes()).decode("utf-8")
            got["sse_content_type"] = r.headers.get("content-type")
        data, types = sse_audio(text)
        got["sse"] = len(data)
        got["sse_deltas"] = types.count("speech.audio.delta")
        got["sse_last"] = types[-1] if types else None
        with open(os.path.join(args.out, f"{fmt}.sse"), "wb") as f:
            f.write(data)
        summary["formats"][fmt] = got

    # The speed knob is a real argument of create().
    fast = client.audio.speech.create(**common, response_format="pcm", speed=2.0, extra_body=knobs)
    summary["speed2_pcm_bytes"] = len(fast.content)
    summary["speed2_x_samples"] = int(fast.response.headers.get("x-samples", "-1"))

    try:
        client.audio.speech.create(**common, response_format="pcm", speed=4.5, extra_body=knobs)
        summary["bad_speed"] = None
    except openai.BadRequestError as e:
        summary["bad_speed"] = {"status": e.status_code, "param": (e.body or {}).get("param")}

    bad = OpenAI(base_url=args.base_url, api_key=args.api_key + "-wrong", max_retries=0)
    try:
        bad.audio.speech.create(**common, response_format="pcm", extra_body=knobs)
        summary["wrong_key"] = None
    except openai.AuthenticationError as e:
        summary["wrong_key"] = e.status_code

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
