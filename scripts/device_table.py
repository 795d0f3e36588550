#!/usr/bin/env python3
"""Prints the table of scripts/device_check.sh (markdown, standard library only): one column per folder of
bench JSON files (e2e-xvec, e2e-icl, stream-xvec, stream-icl, batch-1, batch-8), e.g. this CPU's and a
GPU's.

    scripts/device_table.py target/device-check/cpu /tmp/device-check/vulkan:0
"""
import json
import os
import sys


def load(folder, name):
    try:
        with open(os.path.join(folder, name + ".json")) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def metric(d, key):
    if d is None:
        return None
    v = d.get("metrics", {}).get(key, d.get(key))
    return v["median"] if isinstance(v, dict) else v


ROWS = [
    # label, file, key, format
    ("first audio, x-vector voice, warm (ms)", "stream-xvec", "first_audio_ms", "{:.0f}"),
    ("first audio, ICL voice, warm (ms)", "stream-icl", "first_audio_ms", "{:.0f}"),
    ("first audio, ICL voice, first request (ms)", "stream-icl", "first_audio_cold_ms", "{:.0f}"),
    ("talker, ms per frame", "e2e-xvec", "talker_ms_per_frame", "{:.1f}"),
    ("code predictor, ms per frame", "e2e-xvec", "cp_ms_per_frame", "{:.1f}"),
    ("vocoder, ms per audio second", "e2e-xvec", "vocoder_ms_per_audio_s", "{:.0f}"),
    ("RTF, x-vector (offline, whole)", "e2e-xvec", "rtf", "{:.3f}"),
    ("RTF, ICL (offline, whole)", "e2e-icl", "rtf", "{:.3f}"),
    ("RTF, streamed (x-vector)", "stream-xvec", "rtf", "{:.3f}"),
    ("1 stream: audio seconds per second", "batch-1", "audio_s_per_s", "{:.2f}"),
    ("8 streams: audio seconds per second", "batch-8", "audio_s_per_s", "{:.2f}"),
    ("8 streams: first audio, median (ms)", "batch-8", "first_audio_ms_median", "{:.0f}"),
    ("8 streams: underruns", "batch-8", "underruns", "{}"),
    ("peak RSS, x-vector run (MB)", "e2e-xvec", "peak_rss_mb", "{:.0f}"),
]


def header(folder):
    d = load(folder, "e2e-xvec") or load(folder, "batch-1") or {}
    dev = d.get("device", os.path.basename(folder.rstrip("/")))
    threads = d.get("threads", "?")
    name = ""
    try:
        with open(os.path.join(folder, "name.txt")) as f:
            name = f.read().strip() + ", "
    except OSError:
        pass
    parity = ""
    try:
        with open(os.path.join(folder, "parity.txt")) as f:
            parity = ", parity tests " + f.read().strip()
    except OSError:
        pass
    return f"{dev} ({name}{threads} threads{parity})"


def main():
    folders = sys.argv[1:]
    if not folders:
        sys.exit(__doc__)
    print("| 0.6B-Base Q8_0, F16 tokenizer, random real-size | " + " | ".join(header(f) for f in folders) + " |")
    print("|---|" + "---:|" * len(folders))
    for label, name, key, fmt in ROWS:
        cells = []
        for f in folders:
            v = metric(load(f, name), key)
            cells.append("—" if v is None else fmt.format(v))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
