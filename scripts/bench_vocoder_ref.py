#!/usr/bin/env python3
"""Reference side of scripts/bench_vocoder.sh: decodes seeded random codes with the official
speech-tokenizer decoder (F32, CPU) and writes codes, waveform and timings, so that our decoder can be
timed on the same codes and compared sample by sample.

    .venv-oracle/bin/python scripts/bench_vocoder_ref.py --tokenizer models/random-0.6B-Base/speech_tokenizer \
        --frames 50 --threads 2 --runs 3 --out models/reference-real/vocoder_50f.safetensors
"""
import argparse
import json
import os
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="speech_tokenizer directory (HF layout)")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from qwen_tts import Qwen3TTSTokenizer
    from safetensors.torch import save_file

    tok = Qwen3TTSTokenizer.from_pretrained(a.tokenizer, dtype=torch.float32)
    tok.model.eval()
    cfg = tok.model.decoder.config
    g = torch.Generator().manual_seed(a.seed)
    codes = torch.randint(0, cfg.codebook_size, (a.frames, cfg.num_quantizers), generator=g, dtype=torch.int64)
    audio_s = a.frames * 1920 / 24000
    timings = {}
    wav = None
    for threads in a.threads:
        torch.set_num_threads(threads)
        times = []
        with torch.no_grad():
            for _ in range(a.runs):
                t0 = time.perf_counter()
                wavs, sr = tok.decode({"audio_codes": codes})
                times.append(time.perf_counter() - t0)
        wav = torch.from_numpy(wavs[0]).float()
        timings[str(threads)] = {
            "median_ms_per_audio_s": 1000 * statistics.median(times) / audio_s,
            "min_ms_per_audio_s": 1000 * min(times) / audio_s,
        }
        print(f"reference F32, {threads} thread(s): {timings[str(threads)]['median_ms_per_audio_s']:.0f} ms per "
              f"second of audio (median of {a.runs}; min {timings[str(threads)]['min_ms_per_audio_s']:.0f})",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file({"codes": codes.contiguous(), "wav": wav.contiguous()}, a.out)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"frames": a.frames, "seed": a.seed, "audio_seconds": audio_s, "runs": a.runs,
                   "timings": timings, "torch": torch.__version__,
                   "clipped_fraction": float((wav.abs() >= 1.0).float().mean())}, f, indent=1)


if __name__ == "__main__":
    main()
