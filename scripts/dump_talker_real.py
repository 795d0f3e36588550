#!/usr/bin/env python3
"""Real-size counterpart of scripts/dump_talker.py: ONE case on a real-size (random-weight) checkpoint.

Reuses dump_talker.py by import (its `main()` does the loading, the genuine-Qwen2-regex processor swap,
the record-only wrappers/hooks, the EOS forcing min_new_tokens = max_new_tokens = F+1, the greedy
self-checks and the writing of <case>.safetensors + <case>.json). This script only

  * calls it with --cases <case> --threads <threads> --frames <frames> and
    --out-dir models/reference-real/<variant>/,
  * optionally overrides the case's `text` (--text; default: exactly the tiny case's kwargs),
  * adds a per-frame progress log (forward hook on talker.codec_head, via a wrapper of
    Qwen3TTSModel.from_pretrained) to --log (default /tmp/realdump.log),
  * adds to the json: wall time of the API call, whole-run wall time, load time, peak RSS, model_dir
    (relative to the repo root; dump_talker.py writes it relative to tests/fixtures).

Same tensor names/layout as the tiny fixtures (tests/fixtures/README.md, `reference/talker/<variant>/<case>`);
only sizes differ (H = 1024 / 2048, V = 3072, cp_logits [15, 2048]).

    dump_talker_real.py --model-dir models/random-0.6B-Base --variant 0.6B-Base --case xvec
    dump_talker_real.py --model-dir models/random-1.7B-CustomVoice --variant 1.7B-CustomVoice --case ryan_english
"""
import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import dump_talker  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--out-dir", default=None, help="default models/reference-real/<variant>")
    ap.add_argument("--wav", default=None)
    ap.add_argument("--text", default=None, help="override the case's text (default: the tiny case's)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", default="/tmp/realdump.log")
    args = ap.parse_args()
    out_dir = args.out_dir or os.path.join(REPO, "models/reference-real", args.variant)

    logf = open(args.log, "a", buffering=1)

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {args.variant}/{args.case}: {msg}"
        logf.write(line + "\n")
        print(line, file=sys.stderr, flush=True)

    # ---- case text override (the tiny case's kwargs otherwise) --------------------------------------
    orig_cases_for = dump_talker.cases_for
    names = [n for n, _, _ in orig_cases_for(args.variant, "x.wav")]
    if args.case not in names:
        sys.exit(f"unknown case {args.case!r} for {args.variant}: {names}")
    if args.text is not None:
        def cases_for(variant, wav):
            return [(n, api, (dict(kw, text=args.text) if n == args.case else kw))
                    for n, api, kw in orig_cases_for(variant, wav)]
        dump_talker.cases_for = cases_for

    # ---- progress hook: wrap from_pretrained to reach the model dump_talker.main() loads -------------
    from qwen_tts.inference import qwen3_tts_model as qtm
    orig_fp = qtm.Qwen3TTSModel.from_pretrained.__func__
    prog = {"n": 0, "t0": None}
    t_start = time.time()
    times = {}

    def from_pretrained(cls, *a, **kw):
        t = time.time()
        tts = orig_fp(cls, *a, **kw)
        times["load_s"] = time.time() - t
        log(f"loaded in {times['load_s']:.1f}s, maxrss {rss_gb():.2f} GB")

        def hook(mod, inp, out):
            if prog["t0"] is None:
                prog["t0"] = time.time()
                log(f"prefill done (codec_head input {tuple(inp[0].shape)})")
            else:
                prog["n"] += 1
                n = prog["n"]
                if n % 5 == 0 or n >= args.frames:
                    dt = time.time() - prog["t0"]
                    log(f"talker step {n}/{args.frames}  {dt:.1f}s  ({dt / n:.2f} s/frame)  "
                        f"maxrss {rss_gb():.2f} GB")
        tts.model.talker.codec_head.register_forward_hook(hook)
        return tts
    qtm.Qwen3TTSModel.from_pretrained = classmethod(from_pretrained)

    sys.argv = [os.path.join(HERE, "dump_talker.py"), "--model-dir", args.model_dir, "--variant", args.variant,
                "--out-dir", out_dir, "--cases", args.case, "--frames", str(args.frames),
                "--threads", str(args.threads)] + (["--wav", args.wav] if args.wav else [])
    log(f"start: {' '.join(sys.argv[1:])}" + (f" text={args.text!r}" if args.text else ""))
    summary = dump_talker.main()
    total = time.time() - t_start
    assert len(summary) == 1 and summary[0][0] == args.case, summary
    name, L, trail, F, eos3, dt = summary[0]
    loop_s = (time.time() - prog["t0"]) if prog["t0"] else None

    jpath = os.path.join(out_dir, f"{args.case}.json")
    with open(jpath, encoding="utf-8") as f:
        meta = json.load(f)
    meta["model_dir"] = os.path.relpath(os.path.abspath(args.model_dir), REPO)
    meta["model_dir_relative_to"] = "repo root"
    meta["ref_audio_relative_to"] = "tests/fixtures"
    meta["text_overridden"] = args.text is not None
    meta["timing"] = {
        "api_call_wall_s": round(dt, 2),
        "load_wall_s": round(times.get("load_s", float("nan")), 2),
        "script_wall_s": round(total, 2),
        "talker_steps_after_prefill": prog["n"],
        "note": "api_call_wall_s covers the whole public API call (tokenize, x-vector for Base, prefill, "
                f"{F} frames, speech-tokenizer decode to audio); {args.threads} torch threads",
    }
    meta["peak_rss_gb"] = round(rss_gb(), 3)
    with open(jpath, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    log(f"done: L={L} trail={trail} F={F} eos_would_win={eos3} api {dt:.1f}s total {total:.1f}s "
        f"peak rss {rss_gb():.2f} GB -> {jpath}")


def rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # Linux: KiB


if __name__ == "__main__":
    main()
