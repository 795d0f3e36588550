#!/usr/bin/env python3
"""Dump end-to-end references: text -> codes -> waveform, through the official public API.

For each case below, the official wrapper `Qwen3TTSModel` is loaded from tests/fixtures/tiny-<variant>
(float32, CPU, 1 thread) and its public API (`generate_custom_voice` / `generate_voice_design`) is called with
exactly the arguments of the identically named case of scripts/dump_talker.py (`cases_for`), fully greedy
(do_sample=False, subtalker_dosample=False, max_new_tokens=F+1, F = 100) and with dump_talker.py's two
documented deviations, imported from it (`load_genuine_tts`, `force_eos_off`): the processor is reloaded with
fix_mistral_regex=False (genuine Qwen2 regex), and the talker.generate wrapper raises the package's
min_new_tokens=2 to max_new_tokens so that exactly F frames come out.

Stored per case in tests/fixtures/reference/e2e/<variant>_<case>.safetensors:
  * `codes` [F,16] I64 -- the codes the talker produced (record-only wrapper on `model.generate`); asserted
                          bit-identical to `codes` of reference/talker/<variant>/<case>.safetensors
  * `wav`  [F*1920] F32 -- `wavs[0]` as returned by the public API (for these non-ICL cases the package returns
                          the speech-tokenizer decode output as is; asserted: one decode call, on `codes`)
and a sibling .json (API, kwargs, generation kwargs, frames, sample rate, samples, max |wav|, versions).

    dump_e2e.py [--out-dir tests/fixtures/reference/e2e] [--frames 100] [--threads 1]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dump_talker import cases_for, force_eos_off, greedy_kwargs, load_genuine_tts, record_calls  # noqa: E402
from dump_codec import sha256  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FX = os.path.join(REPO, "tests/fixtures")
SAMPLES_PER_FRAME = 1920


def e2e_cases():
    """(variant, case name): 0.6B-CustomVoice ryan_english, and the first 1.7B-VoiceDesign case with an instruct."""
    vd = [name for name, _, kw in cases_for("1.7B-VoiceDesign", None) if kw.get("instruct")][0]
    return [("0.6B-CustomVoice", "ryan_english"), ("1.7B-VoiceDesign", vd)]


def run_case(variant, case, frames, out_dir):
    import numpy as np
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    [(name, api, kwargs)] = [c for c in cases_for(variant, None) if c[0] == case]
    assert "ref_audio" not in kwargs, "e2e cases are non-ICL (the returned wav is the whole decode)"
    model_dir = os.path.join(FX, f"tiny-{variant}")
    talker_ref = os.path.join(FX, f"reference/talker/{variant}/{case}.safetensors")

    tts = load_genuine_tts(model_dir)
    model = tts.model
    rec = {"model_calls": [], "decode_calls": []}
    record_calls(model, "generate", rec["model_calls"])

    def talker_observe(kw):
        rec["min_new_tokens_package"] = kw.get("min_new_tokens")
    force_eos_off(model, talker_observe)

    record_calls(model.speech_tokenizer, "decode", rec["decode_calls"])

    gen = greedy_kwargs(frames)
    t0 = time.time()
    torch.manual_seed(0)
    wavs, sr = getattr(tts, api)(**kwargs, **gen)
    dt = time.time() - t0

    # ---- codes -----------------------------------------------------------------------------------
    codes = rec["model_calls"][-1][2][0][0].to(torch.int64).cpu().contiguous()
    assert tuple(codes.shape) == (frames, 16), tuple(codes.shape)
    ref_codes = load_file(talker_ref)["codes"]
    assert ref_codes.dtype == torch.int64 and torch.equal(codes, ref_codes), \
        f"{variant}/{case}: codes differ from {os.path.relpath(talker_ref, REPO)}"

    # ---- waveform --------------------------------------------------------------------------------
    assert len(rec["decode_calls"]) == 1, len(rec["decode_calls"])
    dec_args, dec_kwargs, (dec_wavs, dec_sr) = rec["decode_calls"][0]
    dec_in = dec_args[0] if dec_args else dec_kwargs["encoded"]
    assert isinstance(dec_in, list) and len(dec_in) == 1
    assert torch.equal(dec_in[0]["audio_codes"].to(torch.int64).cpu(), codes), "decode input != codes"
    assert len(wavs) == 1 and wavs[0] is dec_wavs[0], "returned wav is not the decode output"
    wav_np = wavs[0]
    assert isinstance(wav_np, np.ndarray) and wav_np.dtype == np.float32 and wav_np.ndim == 1, \
        (type(wav_np), getattr(wav_np, "dtype", None))
    assert sr == dec_sr == 24000, (sr, dec_sr)
    n = int(wav_np.shape[0])
    assert n == frames * SAMPLES_PER_FRAME, (n, frames * SAMPLES_PER_FRAME)
    wav = torch.from_numpy(wav_np.copy()).contiguous()
    max_abs = float(wav.abs().max())

    # ---- save ------------------------------------------------------------------------------------
    os.makedirs(out_dir, exist_ok=True)
    stem = f"{variant}_{case}"
    st_path = os.path.join(out_dir, stem + ".safetensors")
    save_file({"codes": codes, "wav": wav}, st_path,
              metadata={"fixture": f"e2e/{stem}"})  # one key: the header order stays fixed
    os.chmod(st_path, 0o644)
    meta = {
        "variant": variant,
        "case": case,
        "what": "end-to-end reference: the codes the talker produced and the waveform returned by the public API",
        "model_dir": os.path.relpath(model_dir, FX),
        "model_sha256": sha256(os.path.join(model_dir, "model.safetensors")),
        "speech_tokenizer_sha256": sha256(os.path.join(model_dir, "speech_tokenizer", "model.safetensors")),
        "api": f"Qwen3TTSModel.{api}",
        "api_kwargs": kwargs,
        "generation_kwargs": gen,
        "frames": frames,
        "sample_rate": sr,
        "n_samples": n,
        "samples_per_frame": SAMPLES_PER_FRAME,
        "max_abs_wav": max_abs,
        "clipped_fraction": float((wav.abs() >= 1).float().mean()),
        "decode_chunked": frames > 300,
        "talker_fixture": os.path.relpath(talker_ref, FX),
        "talker_fixture_sha256": sha256(talker_ref),
        "talker_fixture_codes_equal": True,
        "tensors": {"codes": {"shape": list(codes.shape), "dtype": "I64"},
                    "wav": {"shape": list(wav.shape), "dtype": "F32"}},
        "note": ("Same case (text/speaker/language/instruct) as scripts/dump_talker.py "
                 f"{variant}/{case}. wav = wavs[0] returned by {api} (the speech-tokenizer decode of `codes`, "
                 "one chunk since F <= 300, clamped to [-1, 1] by the package). Deviations from the package "
                 "defaults are those of dump_talker.py: processor reloaded with fix_mistral_regex=False "
                 "(genuine Qwen2 regex), and the talker.generate wrapper sets min_new_tokens = max_new_tokens "
                 f"({frames + 1}) instead of the package's {rec['min_new_tokens_package']} so that EOS never "
                 "wins and exactly `frames` frames come out."),
        "tokenizer": "Qwen2TokenizerFast with the genuine Qwen2 regex (processor reloaded with fix_mistral_regex=False)",
        "dtype": "float32", "device": "cpu", "seed": 0,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }
    with open(os.path.join(out_dir, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.chmod(os.path.join(out_dir, stem + ".json"), 0o644)
    print(f"[dump_e2e] {stem}: {api} F={frames} samples={n} max|wav|={max_abs:.6f} "
          f"({os.path.getsize(st_path)} bytes, {dt:.1f}s)", file=sys.stderr)
    return stem, max_abs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(FX, "reference/e2e"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for variant, case in e2e_cases():
        run_case(variant, case, args.frames, args.out_dir)


if __name__ == "__main__":
    main()
