#!/usr/bin/env python3
"""Reference side of scripts/bench_clone.sh: encodes tests/fixtures/audio/ref_24k.wav with the official
speech-tokenizer encoder (F32, CPU) of a real-size checkpoint, timing it, and writes the codes so our encoder
can be compared with them.

    .venv-oracle/bin/python scripts/bench_clone_ref.py --tokenizer models/random-0.6B-Base/speech_tokenizer \
        --threads 2 --runs 3 --out models/reference-real/encode_ref.safetensors
"""
import argparse
import json
import os
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--audio", default="tests/fixtures/audio/ref_24k.wav")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from qwen_tts import Qwen3TTSTokenizer
    from safetensors.torch import save_file
    import librosa

    torch.set_num_threads(a.threads)
    tok = Qwen3TTSTokenizer.from_pretrained(a.tokenizer, dtype=torch.float32)
    tok.model.eval()
    samples, sr = librosa.load(a.audio, sr=None, mono=True)
    assert sr == 24000, sr
    times = []
    with torch.no_grad():
        for _ in range(a.runs):
            t0 = time.perf_counter()
            enc = tok.encode(a.audio)
            times.append(time.perf_counter() - t0)
    codes = enc.audio_codes[0].to(torch.int64).contiguous()
    seconds = len(samples) / sr
    med = 1000 * statistics.median(times) / seconds
    print(f"reference encoder F32, {a.threads} thread(s): {med:.0f} ms per second of audio "
          f"(median of {a.runs}; {seconds:.2f} s clip, {codes.shape[0]} frames)", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file({"codes": codes, "input_samples": torch.from_numpy(samples)}, a.out)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"audio": a.audio, "threads": a.threads, "runs": a.runs, "ms_per_audio_s_median": med,
                   "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
