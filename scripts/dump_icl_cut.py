#!/usr/bin/env python3
"""Dump the ICL post-processing reference of `Qwen3TTSModel.generate_voice_clone`: decode
concat(ref_code, frames) as one sequence + cut the reference part off the front (docs/architecture.md).

Runs the official high-level API `Qwen3TTSModel.generate_voice_clone` on tests/fixtures/tiny-0.6B-Base with
exactly the settings of the `icl` case of scripts/dump_talker.py (text / ref_text / language / ref_audio from
`dump_talker.cases_for`, do_sample=False, subtalker_dosample=False, max_new_tokens=101, EOS forced off so
that F = 100 frames, genuine Qwen2 tokenizer regex) and records, with record-only wrappers:

  * `model.generate`                   -> the returned codes [100, 16] (asserted equal to the committed
                                          reference/talker/0.6B-Base/icl.safetensors `codes`)
  * `model.speech_tokenizer.decode`    -> its input (asserted = concat(ref_codes, codes)) and its output
                                          waveform `wav_full` (the whole decoded sequence)
  * the API's returned waveform `wav`  -> `cut` = len(wav_full) - len(wav); asserted to be a view
                                          wav_full[cut:] (same buffer, offset cut) and equal to the package's formula
                                          int(T_ref / max(T_ref + T, 1) * n_samples) in float64.

Only `wav_full` and `cut` are stored (wav = wav_full[cut:] is asserted here, so storing it would just
duplicate ~1 MB). The two deviations from the package's defaults are those of dump_talker.py (see its
module doc): the processor is reloaded with fix_mistral_regex=False, and the talker.generate wrapper raises
the package's min_new_tokens=2 to max_new_tokens.

    dump_icl_cut.py [--model-dir tests/fixtures/tiny-0.6B-Base] [--out tests/fixtures/reference/codec]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dump_talker import (cases_for, force_eos_off, greedy_kwargs, load_genuine_tts,  # noqa: E402
                         record_calls)  # same case definition and deviations as the talker fixture
from dump_codec import REPO, REF_24K, ckpt_sha, log, rel, save, sha256  # noqa: E402

VARIANT = "0.6B-Base"
CASE = "icl"
NAME = "icl_cut_0.6B-Base"
SAMPLES_PER_FRAME = 1920


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=os.path.join(REPO, "tests/fixtures/tiny-" + VARIANT))
    ap.add_argument("--talker-ref", default=os.path.join(REPO, f"tests/fixtures/reference/talker/{VARIANT}/{CASE}.safetensors"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests/fixtures/reference/codec"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import transformers
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    [(name, api, kwargs)] = [c for c in cases_for(VARIANT, REF_24K) if c[0] == CASE]
    assert api == "generate_voice_clone" and kwargs.get("ref_text") and not kwargs.get("x_vector_only_mode")

    tts = load_genuine_tts(args.model_dir)  # genuine Qwen2 tokenizer, as dump_talker.py
    model = tts.model

    rec = {"model_calls": [], "decode_calls": []}
    orig_model_generate = record_calls(model, "generate", rec["model_calls"])
    orig_talker_generate = force_eos_off(model, lambda kw: rec.update(min_new_tokens_package=kw.get("min_new_tokens")))
    st = model.speech_tokenizer
    orig_decode = record_calls(st, "decode", rec["decode_calls"])

    gen = greedy_kwargs(args.frames)
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_clone(**kwargs, **gen)
    st.decode = orig_decode
    model.generate = orig_model_generate
    model.talker.generate = orig_talker_generate
    _, model_kwargs, model_out = rec["model_calls"][-1]

    # ---- codes -------------------------------------------------------------------------------------
    codes = model_out[0][0].to(torch.int64).cpu()
    ref_codes = model_kwargs["voice_clone_prompt"]["ref_code"][0].to(torch.int64).cpu()
    T, T_ref = int(codes.shape[0]), int(ref_codes.shape[0])
    assert T == args.frames, T
    talker_ref = load_file(args.talker_ref)
    assert torch.equal(codes, talker_ref["codes"]), "codes differ from the committed talker icl fixture"
    assert torch.equal(ref_codes, talker_ref["ref_codes"]), "ref_codes differ from the committed talker icl fixture"

    # ---- the decode call and the cut -------------------------------------------------------------
    assert len(rec["decode_calls"]) == 1, len(rec["decode_calls"])
    (dec_args, dec_kwargs, (wavs_all, sr_dec)) = rec["decode_calls"][0]
    dec_in = dec_args[0] if dec_args else dec_kwargs["encoded"]
    assert isinstance(dec_in, list) and len(dec_in) == 1
    dec_codes = dec_in[0]["audio_codes"].to(torch.int64).cpu()
    assert torch.equal(dec_codes, torch.cat([ref_codes, codes], 0)), "decode input != concat(ref_codes, codes)"
    wav_full_np = wavs_all[0]
    wav_np = wavs[0]
    assert wav_full_np.dtype == np.float32 and wav_np.dtype == np.float32 and sr == sr_dec == 24000
    n = int(wav_full_np.shape[0])
    assert n == SAMPLES_PER_FRAME * (T_ref + T), n
    cut = n - int(wav_np.shape[0])
    # the returned array is the package's slice wav_full[cut:] (a view into the same buffer)
    assert np.shares_memory(wav_np, wav_full_np)
    assert wav_np.__array_interface__["data"][0] - wav_full_np.__array_interface__["data"][0] == 4 * cut
    assert np.array_equal(wav_np, wav_full_np[cut:])
    cut_formula = int(T_ref / max(T_ref + T, 1) * n)  # the package's ICL cut, in float64
    assert cut == cut_formula, (cut, cut_formula)

    wav_full = torch.from_numpy(wav_full_np.copy())
    md = args.model_dir
    save(args.out, NAME, {"ref_codes": ref_codes, "codes": codes, "wav_full": wav_full,
                          "cut": torch.tensor([cut], dtype=torch.int64)}, {
        "what": "ICL post-processing of Qwen3TTSModel.generate_voice_clone (see docs/architecture.md): the speech-tokenizer "
                "decode of concat(ref_codes, codes) as one sequence (wav_full) and the front cut; the API's "
                "returned waveform is wav_full[cut:] (asserted, not stored)",
        "model": rel(md), "model_sha256": ckpt_sha(md),
        "tokenizer_sha256": ckpt_sha(os.path.join(md, "speech_tokenizer")),
        "input": rel(REF_24K), "input_sha256": sha256(REF_24K),
        "talker_fixture": rel(args.talker_ref), "talker_fixture_sha256": sha256(args.talker_ref),
        "talker_fixture_codes_equal": True,
        "api": "Qwen3TTSModel.generate_voice_clone",
        "api_kwargs": {k: (rel(v) if k == "ref_audio" else v) for k, v in kwargs.items()},
        "generation_kwargs": gen,
        "case": f"same as scripts/dump_talker.py {VARIANT}/{CASE}",
        "eos_forcing": f"talker.generate wrapper sets min_new_tokens = max_new_tokens ({args.frames + 1}) "
                       f"instead of the package's {rec['min_new_tokens_package']}",
        "tokenizer": "Qwen2TokenizerFast with the genuine Qwen2 regex (processor reloaded with fix_mistral_regex=False)",
        "dtype": "float32", "device": "cpu", "threads": args.threads,
        "T_ref": T_ref, "T": T, "n_samples": n, "cut": cut,
        "cut_formula": "int(T_ref / max(T_ref + T, 1) * n_samples) in float64 (Python)",
        "cut_equals_1920_T_ref": cut == SAMPLES_PER_FRAME * T_ref,
        "returned_wav_samples": int(wav_np.shape[0]),
        "returned_wav": "wav = wav_full[cut:] (asserted bit-equal and a view of the same buffer; not stored)",
        "decode_chunked": (T_ref + T) > 300,
        "sample_rate": sr,
        "clipped_fraction": float((wav_full.abs() >= 1).float().mean()),
        "transformers": transformers.__version__,
    })
    log(f"{NAME}: T_ref={T_ref} T={T} n={n} cut={cut} (1920*T_ref={SAMPLES_PER_FRAME * T_ref})")


if __name__ == "__main__":
    main()
