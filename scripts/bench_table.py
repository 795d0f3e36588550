#!/usr/bin/env python3
"""Prints the table of scripts/bench.sh from the JSON it wrote in DIR (markdown, standard library only).

    scripts/bench_table.py DIR

DIR holds bandwidth.json (bench_bandwidth), ours.jsonl (bench_e2e, one object per line) and
ref-<model>-t<threads>.json (bench_ref.py). Figures are medians over the runs; "min" columns are the best
run. Speed-ups are the reference's median over ours, from the same bench run. The bandwidth bound is the
bytes of weights one frame streams (talker once, code predictor once per pass) over the measured read
bandwidth at the same thread count; "% of bound" = bound / median talker + code-predictor time (for the
reference, the same weights in F32, which is what it streams).
"""
import glob
import json
import os
import re
import sys


def model_of(path):
    m = re.search(r"(?:convert|random)-([^/]+)", path)
    return m.group(1) if m else path


def type_of(path):
    m = re.search(r"tts-([a-z0-9_]+)\.gguf", path)
    return m.group(1) if m else "?"


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def main():
    d = sys.argv[1]
    bw = json.load(open(os.path.join(d, "bandwidth.json")))
    gbps = {int(k): v for k, v in bw["read_gb_per_s"].items()}
    bytes_per_frame = {f["file"]: f for f in bw["files"]}
    ours = [json.loads(line) for line in open(os.path.join(d, "ours.jsonl")) if line.strip()]
    refs = {}
    for p in glob.glob(os.path.join(d, "ref-*.json")):
        r = json.load(open(p))
        for res in r["results"]:
            refs[(model_of(r["model_dir"]), r["threads"], res["mode"], res["frames"])] = res

    print(f"# Benchmark ({d})\n")
    print("Read bandwidth (STREAM-style, best of %d passes over %d MiB): %s\n" % (
        bw["reps"], bw["buffer_mib"], ", ".join(f"{t} thread(s) {g:.1f} GB/s" for t, g in sorted(gbps.items()))))
    print("| file | talker MB/frame | code predictor MB/frame | total MB/frame (as F32) | "
          + " | ".join(f"bound ms/frame @{t}t" for t in sorted(gbps)) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(gbps))
    for f in bw["files"]:
        print(f"| {f['file']} | {f['talker_bytes'] / 1e6:.0f} | {f['cp_bytes'] / 1e6:.0f} | "
              f"{f['bytes_per_frame'] / 1e6:.0f} ({f['f32_bytes_per_frame'] / 1e6:.0f}) | "
              + " | ".join(f"{f['bytes_per_frame'] / gbps[t] / 1e6:.1f}" for t in sorted(gbps)) + " |")
    gflop = next((o["vocoder_gflop_per_audio_s"] for o in ours), None)
    if gflop:
        print(f"\nVocoder: {gflop:.1f} GFLOP per second of audio (2 × multiply-adds of every conv and matrix).")

    groups = sorted({(model_of(o["tts"]), o["mode"], o["frames"]) for o in ours})
    cols = ["threads", "engine", "talker ms/fr", "CP ms/fr", "T+CP ms/fr (min)", "speed-up", "% of bound",
            "prefill ms", "ref-enc ms", "1st frame ms", "vocoder ms/audio-s (min)", "voc speed-up",
            "voc GFLOP/s", "RTF", "RTF +load", "peak RSS MB"]
    for model, mode, frames in groups:
        print(f"\n## {model}, {mode}, {frames} frames\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * 2 + "---:|" * (len(cols) - 2))
        for threads in sorted({o["threads"] for o in ours}):
            ref = refs.get((model, threads, mode, frames))
            rm = ref["metrics"] if ref else None

            def row(engine, m, rss, tcp, bound=None):
                voc = m["vocoder_ms_per_audio_s"]["median"]
                cells = [
                    str(threads), engine, fmt(m["talker_ms_per_frame"]["median"], 1),
                    fmt(m["cp_ms_per_frame"]["median"], 1), f"{fmt(tcp[0], 1)} ({fmt(tcp[1], 1)})",
                    fmt(rm_tcp / tcp[0], 1) + "×" if rm and engine != "PyTorch F32" else "",
                    fmt(100 * bound / tcp[0]) + " %" if bound else "",
                    fmt(m["prefill_ms"]["median"]), fmt(m["ref_encode_ms"]["median"]),
                    fmt(m["first_frame_ms"]["median"]),
                    f"{fmt(voc)} ({fmt(m['vocoder_ms_per_audio_s']['min'])})",
                    fmt(rm["vocoder_ms_per_audio_s"]["median"] / voc, 2) + "×"
                    if rm and engine != "PyTorch F32" else "",
                    fmt(gflop / (voc / 1e3), 1) if gflop else "",
                    fmt(m["rtf"]["median"], 2), fmt(m["rtf_with_load"]["median"], 2), fmt(rss),
                ]
                print("| " + " | ".join(cells) + " |")

            rm_tcp = None
            if rm:
                rm_tcp = rm["talker_ms_per_frame"]["median"] + rm["cp_ms_per_frame"]["median"]
                # the reference streams the same weights in F32
                f32 = next((f["f32_bytes_per_frame"] for f in bw["files"] if model_of(f["file"]) == model), None)
                row("PyTorch F32", rm, ref["peak_rss_mb"],
                    (rm_tcp, rm["talker_ms_per_frame"]["min"] + rm["cp_ms_per_frame"]["min"]),
                    f32 / gbps[threads] / 1e6 if f32 and threads in gbps else None)
            for o in sorted((o for o in ours if (model_of(o["tts"]), o["mode"], o["frames"], o["threads"])
                             == (model, mode, frames, threads)), key=lambda o: type_of(o["tts"])):
                m = o["metrics"]
                tcp = m["talker_cp_ms_per_frame"]
                b = bytes_per_frame.get(o["tts"])
                bound = b["bytes_per_frame"] / gbps[threads] / 1e6 if b and threads in gbps else None
                row(f"ours {type_of(o['tts'])}", m, o["peak_rss_mb"], (tcp["median"], tcp["min"]), bound)
    print("\nReference peak RSS is the process's high-water mark (it loads once and only grows); ours is per "
          "run (a fresh load each run). RTF = wall time / audio seconds (lower is better).")


if __name__ == "__main__":
    main()
