#!/usr/bin/env python3
"""Dump reference tensors of the talker / code predictor / speaker encoder from the official package.

Runs the official wrapper `qwen_tts.inference.qwen3_tts_model.Qwen3TTSModel` (loaded from a tiny
checkpoint dir) in float32 on CPU, fully greedy (do_sample=False AND subtalker_dosample=False), and
observes its intermediate tensors with forward hooks and record-only method wrappers:

  * `Qwen3TTSForConditionalGeneration.generate`  -> input_ids / ref_ids / instruct_ids, x-vector, ref codes,
                                                    returned codes
  * `Qwen3TTSTalkerForConditionalGeneration.generate` -> prefill inputs_embeds, trailing_text_hidden,
                                                    tts_pad_embed, the talker kwargs
  * forward hook on `talker.codec_head`          -> its input (post-final-norm hidden) and raw logits
  * forward hooks on `talker.code_predictor.lm_head[i]` -> raw code-predictor logits
  * forward hook on `speaker_encoder`            -> its input mel [T,128] (Base)

ONE deviation from the package's own settings, to force a long run (F >= 100 frames): the talker's
`min_new_tokens` (the package hard-codes 2) is raised to `max_new_tokens` inside the talker.generate
wrapper. This only changes the threshold of the MinNewTokensLengthLogitsProcessor that the package
already uses, i.e. the EOS logit is -inf at every step instead of only the first two; nothing else
changes (the json records at which step EOS would have won, computed from the raw logits).
`max_new_tokens=F+1` is passed through the public API (HF: N new tokens -> N-1 frames).

The package loads its processor with fix_mistral_regex=True, which for a local dir swaps the Qwen2
pre-tokenizer regex for Mistral's (transformers 4.57.3; docs/architecture.md, text tokenizer). The model
was trained with the Qwen2 regex and our engine implements it, so we replace `tts.processor` with one
loaded with fix_mistral_regex=False (checked to carry the Qwen2 regex). The ids used are dumped anyway.

    dump_talker.py --model-dir tests/fixtures/tiny-0.6B-Base --variant 0.6B-Base \
        --out-dir tests/fixtures/reference/talker/0.6B-Base [--cases xvec,icl] [--frames 100]
"""
import argparse
import json
import os
import sys
import time

S_STEPS = 8  # talker logits / hidden dumped for the first S steps

TEXT_EN = "Hello! I bought an iPhone today, and it's great."
TEXT_EN2 = "The quick brown fox jumps over the lazy dog."
TEXT_ZH = "我叫通义千问，是阿里云的开源大模型。"
REF_TEXT = "This is a short reference recording for voice cloning."
LONG_TEXT = ("Qwen3-TTS can clone a voice from a few seconds of reference audio. This sentence is long "
             "enough that its tokens outnumber the reference frames, so the streaming prompt spills the "
             "remaining text into the trailing text stream, one token per generated frame.")
INSTRUCT = "Speak in a warm, cheerful voice with a slight British accent."


def cases_for(variant, wav):
    """(name, api, kwargs) per case. wav: path of the 24 kHz reference wav (Base)."""
    kind = variant.split("-", 1)[1]
    c = []
    if kind == "Base":
        c += [
            ("xvec", "generate_voice_clone",
             dict(text=TEXT_EN, language="English", ref_audio=wav, x_vector_only_mode=True)),
            ("xvec_nonstreaming_zh", "generate_voice_clone",
             dict(text=TEXT_ZH, language="Chinese", ref_audio=wav, x_vector_only_mode=True,
                  non_streaming_mode=True)),
            ("icl", "generate_voice_clone",
             dict(text=TEXT_EN2, language="Auto", ref_audio=wav, ref_text=REF_TEXT, x_vector_only_mode=False)),
            ("icl_nonstreaming", "generate_voice_clone",
             dict(text=TEXT_EN2, language="English", ref_audio=wav, ref_text=REF_TEXT,
                  x_vector_only_mode=False, non_streaming_mode=True)),
            ("icl_longtext", "generate_voice_clone",
             dict(text=LONG_TEXT, language="English", ref_audio=wav, ref_text=REF_TEXT,
                  x_vector_only_mode=False)),
        ]
    elif kind == "CustomVoice":
        c += [
            ("ryan_english", "generate_custom_voice", dict(text=TEXT_EN, speaker="Ryan", language="English")),
            ("eric_chinese_dialect", "generate_custom_voice",
             dict(text=TEXT_ZH, speaker="Eric", language="Chinese")),
            ("dylan_auto_dialect", "generate_custom_voice", dict(text=TEXT_ZH, speaker="Dylan", language="Auto")),
            ("vivian_instruct", "generate_custom_voice",
             dict(text=TEXT_EN2, speaker="Vivian", language="English", instruct=INSTRUCT)),
            ("serena_auto_streaming", "generate_custom_voice",
             dict(text=TEXT_EN2, speaker="serena", language="Auto", non_streaming_mode=False)),
        ]
    elif kind == "VoiceDesign":
        c += [
            ("instruct_english", "generate_voice_design", dict(text=TEXT_EN, instruct=INSTRUCT, language="English")),
            ("empty_instruct_auto", "generate_voice_design", dict(text=TEXT_EN2, instruct="", language="Auto")),
            ("instruct_zh_streaming", "generate_voice_design",
             dict(text=TEXT_ZH, instruct="用特别温柔的语气说", language="Chinese", non_streaming_mode=False)),
        ]
    return c


def greedy_kwargs(frames):
    """Generation kwargs passed through the public API: fully greedy, F = frames (HF: N new tokens -> N-1 frames)."""
    return dict(do_sample=False, subtalker_dosample=False, max_new_tokens=frames + 1)


def load_genuine_tts(model_dir):
    """Qwen3TTSModel (float32, CPU, eval) with its processor reloaded with the genuine Qwen2 regex (module doc)."""
    import torch
    from transformers import AutoProcessor
    from qwen_tts.inference.qwen3_tts_model import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(model_dir, dtype=torch.float32)
    tts.model.eval()
    pkg_regex_processor = tts.processor
    tts.processor = AutoProcessor.from_pretrained(model_dir, fix_mistral_regex=False)
    state = json.loads(tts.processor.tokenizer.backend_tokenizer.to_str())
    regex = [p["pattern"]["Regex"] for p in state["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]
    assert regex and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in regex[0], regex
    del pkg_regex_processor
    return tts


def record_calls(obj, name, calls):
    """Wrap obj.<name> (record-only): every call appends (args, kwargs, result) to `calls`. Returns the original."""
    orig = getattr(obj, name)

    def recorded(*a, **kw):
        out = orig(*a, **kw)
        calls.append((a, kw, out))
        return out
    setattr(obj, name, recorded)
    return orig


def force_eos_off(model, observe=None):
    """Wrap model.talker.generate: the one deviation (module doc), min_new_tokens = max_new_tokens, so the
    package's own MinNewTokensLengthLogitsProcessor masks EOS at every step. `observe(kw)` (record-only)
    sees the package's kwargs before the change. Returns the original method."""
    orig_talker_generate = model.talker.generate

    def talker_generate(*a, **kw):
        kw = dict(kw)
        if observe is not None:
            observe(kw)
        # the one deviation: EOS masked at every step (same processor, threshold raised)
        kw["min_new_tokens"] = kw["max_new_tokens"]
        return orig_talker_generate(*a, **kw)
    model.talker.generate = talker_generate
    return orig_talker_generate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--wav", default=None, help="reference wav for Base (default tests/fixtures/audio/ref_24k.wav)")
    ap.add_argument("--cases", default=None, help="comma-separated subset of case names")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wav = args.wav or os.path.join(repo, "tests/fixtures/audio/ref_24k.wav")
    wav_rel = os.path.relpath(os.path.abspath(wav), os.path.join(repo, "tests/fixtures"))

    tts = load_genuine_tts(args.model_dir)  # float32, eval, genuine Qwen2 tokenizer (see module doc)
    model = tts.model
    attn_impl = getattr(model.config, "_attn_implementation", None)

    tcfg = model.config.talker_config
    V = tcfg.vocab_size
    EOS = tcfg.codec_eos_token_id

    rec = {}

    # ---- record-only wrappers -------------------------------------------------------------------
    orig_model_generate = model.generate

    def model_generate(*a, **kw):
        rec["model_kwargs"] = kw
        out = orig_model_generate(*a, **kw)
        rec["model_out"] = out
        return out
    model.generate = model_generate

    def talker_observe(kw):
        rec["talker_kwargs_package"] = {k: v for k, v in kw.items()
                                        if k not in ("inputs_embeds", "attention_mask", "trailing_text_hidden",
                                                     "tts_pad_embed", "suppress_tokens")}
        rec["suppress_tokens"] = list(kw["suppress_tokens"])
        rec["inputs_embeds"] = kw["inputs_embeds"].detach().clone()
        rec["attention_mask"] = kw["attention_mask"].detach().clone()
        rec["trailing_text_hidden"] = kw["trailing_text_hidden"].detach().clone()
        rec["tts_pad_embed"] = kw["tts_pad_embed"].detach().clone()
    force_eos_off(model, talker_observe)

    def codec_head_hook(mod, inp, out):
        rec.setdefault("talker_hidden", []).append(inp[0][0, -1].detach().clone())
        rec.setdefault("talker_logits", []).append(out[0, -1].detach().clone())
    model.talker.codec_head.register_forward_hook(codec_head_hook)

    for i, head in enumerate(model.talker.code_predictor.lm_head):
        def cp_hook(mod, inp, out, i=i):
            rec.setdefault("cp_logits", []).append((i, out[0, -1].detach().clone()))
        head.register_forward_hook(cp_hook)

    if model.speaker_encoder is not None:
        def spk_hook(mod, inp, out):
            rec.setdefault("spk_mel", []).append(inp[0][0].detach().clone())
            rec.setdefault("spk_out", []).append(out[0].detach().clone())
        model.speaker_encoder.register_forward_hook(spk_hook)

    # ---- run the cases --------------------------------------------------------------------------
    os.makedirs(args.out_dir, exist_ok=True)
    wanted = set(args.cases.split(",")) if args.cases else None
    summary = []
    for name, api, kwargs in cases_for(args.variant, wav):
        if wanted is not None and name not in wanted:
            continue
        rec.clear()
        gen = greedy_kwargs(args.frames)
        t0 = time.time()
        torch.manual_seed(0)
        wavs, sr = getattr(tts, api)(**kwargs, **gen)
        dt = time.time() - t0

        mk = rec["model_kwargs"]
        codes_list, _ = rec["model_out"]
        codes = codes_list[0].to(torch.int64)
        F = codes.shape[0]
        H = rec["inputs_embeds"].shape[-1]
        tensors = {}
        tensors["input_ids"] = mk["input_ids"][0].reshape(-1).to(torch.int64)
        if mk.get("ref_ids") is not None and mk["ref_ids"][0] is not None:
            tensors["ref_ids"] = mk["ref_ids"][0].reshape(-1).to(torch.int64)
        if mk.get("instruct_ids") is not None and mk["instruct_ids"][0] is not None:
            tensors["instruct_ids"] = mk["instruct_ids"][0].reshape(-1).to(torch.int64)
        vcp = mk.get("voice_clone_prompt")
        if vcp is not None:
            tensors["x_vector"] = vcp["ref_spk_embedding"][0].float().reshape(-1)
            if vcp["ref_code"] is not None and vcp["ref_code"][0] is not None:
                tensors["ref_codes"] = vcp["ref_code"][0].to(torch.int64)
            tensors["spk_mel"] = rec["spk_mel"][0].float()
            assert torch.equal(rec["spk_out"][0].float().reshape(-1), tensors["x_vector"])
        assert rec["inputs_embeds"].shape[0] == 1 and bool(rec["attention_mask"].all())
        tensors["prefill_embeds"] = rec["inputs_embeds"][0].float()
        tensors["trailing_text"] = rec["trailing_text_hidden"][0].float()
        tensors["tts_pad_embed"] = rec["tts_pad_embed"].reshape(-1).float()
        tl = torch.stack(rec["talker_logits"]).float()      # [F+1, V] (last one: the step that ends)
        th = torch.stack(rec["talker_hidden"]).float()
        tensors["talker_logits"] = tl[:S_STEPS].contiguous()
        tensors["talker_hidden"] = th[:S_STEPS].contiguous()
        cps = rec["cp_logits"]
        assert [i for i, _ in cps[:15]] == list(range(15)), [i for i, _ in cps[:15]]
        tensors["cp_logits"] = torch.stack([t for _, t in cps[:15]]).float()
        tensors["codes"] = codes
        assert F == args.frames, (F, args.frames)
        assert tl.shape[0] == F + 1, tl.shape  # prefill + one talker step per frame

        # ---- self-checks: greedy reproduction from raw logits ----
        eos_would_win = []
        hist = []
        for s in range(F):
            sc = tl[s].clone()
            for t in set(hist):
                sc[t] = sc[t] * 1.05 if sc[t] < 0 else sc[t] / 1.05
            sup = torch.tensor(rec["suppress_tokens"])
            sc[sup] = float("-inf")
            if s >= 2 and int(sc.argmax()) == EOS:
                eos_would_win.append(s)
            sc[EOS] = float("-inf")
            c0 = int(sc.argmax())
            assert c0 == int(codes[s, 0]), (name, s, c0, int(codes[s, 0]))
            hist.append(c0)
        assert torch.equal(tensors["cp_logits"].argmax(-1), codes[0, 1:]), "cp greedy mismatch"

        for k in list(tensors):
            t = tensors[k]
            tensors[k] = t.contiguous().to(torch.int64 if not t.is_floating_point() else torch.float32)
        save_file(tensors, os.path.join(args.out_dir, f"{name}.safetensors"),
                  metadata={"fixture": f"{args.variant}/{name}"})  # one key: the header order stays fixed

        ins_given = kwargs.get("instruct")
        meta = {
            "variant": args.variant,
            "case": name,
            "model_dir": os.path.relpath(os.path.abspath(args.model_dir), os.path.join(repo, "tests/fixtures")),
            "api": f"Qwen3TTSModel.{api}",
            "api_kwargs": {k: (wav_rel if k == "ref_audio" else v) for k, v in kwargs.items()},
            "generation_kwargs": gen,
            "effective_non_streaming_mode": mk["non_streaming_mode"],
            "languages": mk["languages"],
            "speakers": mk.get("speakers"),
            "instruct_used": "instruct_ids" in tensors,
            "instruct_note": (None if not ins_given else
                              ("ignored: the wrapper drops instruct for tts_model_size '0b6'"
                               if "instruct_ids" not in tensors else "used")),
            "talker_generate_kwargs_from_package": {k: (v if isinstance(v, (int, float, bool, str, type(None)))
                                                        else str(v))
                                                    for k, v in rec["talker_kwargs_package"].items()},
            "eos_forcing": ("talker.generate wrapper sets min_new_tokens = max_new_tokens "
                            f"({args.frames + 1}) instead of the package's 2: EOS (id {EOS}) logit is -inf at "
                            "every step; no other change. max_new_tokens passed via the public API."),
            "eos_would_have_won_at_steps": eos_would_win,
            "suppressed_ids": f"[{V - 1024}, {V}) except EOS {EOS}",
            "repetition_penalty": 1.05,
            "dtype": "float32", "device": "cpu", "attn_implementation": attn_impl,
            "tokenizer": "Qwen2TokenizerFast with the genuine Qwen2 regex (processor reloaded with "
                         "fix_mistral_regex=False)",
            "frames": F,
            "prefill_len": int(tensors["prefill_embeds"].shape[0]),
            "trailing_len": int(tensors["trailing_text"].shape[0]),
            "hidden": H,
            "S_steps_dumped": S_STEPS,
            "tensors": {k: {"shape": list(v.shape), "dtype": "F32" if v.is_floating_point() else "I64"}
                        for k, v in tensors.items()},
            "output_wav_samples": int(len(wavs[0])),
            "sample_rate": sr,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": args.threads,
        }
        with open(os.path.join(args.out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
            f.write("\n")
        summary.append((name, meta["prefill_len"], meta["trailing_len"], F, eos_would_win[:3], round(dt, 1)))
        print(f"[dump_talker] {args.variant}/{name}: L={meta['prefill_len']} trail={meta['trailing_len']} "
              f"F={F} eos_would_win={eos_would_win[:5]} {dt:.1f}s", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
