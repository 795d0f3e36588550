#!/usr/bin/env python3
"""Build a random-weight Qwen3-TTS 12 Hz main-model checkpoint in the exact Hugging Face layout.

The model is the official `Qwen3TTSForConditionalGeneration` from the PyPI package `qwen-tts==0.1.1`,
built from the released config of the chosen variant ($QWEN3_TTS_CONFIGS/Qwen3-TTS-12Hz-<variant>/, see
CONFIGS below and scripts/make_fixtures.sh), with every float tensor re-drawn from a seeded generator (the
classes' default init leaves norms at one and hides bugs), saved in bf16 (the released dtype) through the
official `save_pretrained` path.

    build_tts_checkpoint.py --variant 0.6B-Base --size tiny --out tests/fixtures/tiny-0.6B-Base

--size real : released dimensions, config.json copied byte for byte.
--size tiny : same architecture with shrunk dims (codec codebook 256 -> talker vocab 1280, special
              codec ids shifted by -1792, see TINY_* below); config.json is the released JSON with
              those values substituted (same keys, same order).

Writes config.json, generation_config.json, tokenizer_config.json, preprocessor_config.json,
configuration.json, vocab.json, merges.txt and model.safetensors. Never writes speech_tokenizer/
(that is scripts/build_speech_tokenizer.py). --tokenizer-links REL makes vocab.json/merges.txt
relative symlinks to REL/{vocab.json,merges.txt} instead of copies (used for the committed fixtures).

Weight re-draw (per tensor, generator seeded from sha256(f"{seed}:{tensor name}"), so the result
does not depend on module iteration order):
  Linear / Conv1d weight  N(0, fan_in^-1/2)     (fan_in = in_features, or in_channels/groups * k)
  Linear / Conv1d bias    N(0, 0.05)
  Embedding               N(0, 1)
  RMSNorm weight          1 + N(0, 0.1)
Any float parameter or persistent buffer not covered by these rules is an error.
"""
import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The released configuration files (JSON only, no weights) in the Hugging Face layout:
# <CONFIGS>/Qwen3-TTS-12Hz-<variant>/*.json and <CONFIGS>/{vocab.json,merges.txt} (layout: scripts/make_fixtures.sh).
CONFIGS = os.environ.get("QWEN3_TTS_CONFIGS", os.path.join(REPO, "models", "configs"))
VARIANTS = ["0.6B-Base", "0.6B-CustomVoice", "1.7B-Base", "1.7B-CustomVoice", "1.7B-VoiceDesign"]

# ---- tiny design (shared contract with the speech-tokenizer side: codebook 256, 16 groups) ----
TINY_CODEBOOK = 256
REAL_CODEBOOK = 2048
ID_SHIFT = REAL_CODEBOOK - TINY_CODEBOOK  # 1792: special codec ids stay in the top 1024 rows
TINY_TEXT_HIDDEN = 4
TINY_HEAD_DIM = 16
TINY_MROPE_SECTION = [4, 2, 2]  # sums to head_dim/2 = 8 (released [24,20,20] for 64)
TINY_TALKER = {  # by model size: (talker hidden, talker intermediate, talker layers)
    "0b6": dict(hidden=32, inter=96, layers=3),
    "1b7": dict(hidden=48, inter=128, layers=3),
}
TINY_CP = dict(hidden=32, inter=64, layers=2)
TINY_HEADS, TINY_KV_HEADS = 4, 2
TINY_SPK = dict(enc_channels=[32, 32, 32, 32, 96], enc_kernel_sizes=[5, 3, 3, 3, 1],
                enc_dilations=[1, 2, 3, 4, 1], enc_attention_channels=16, enc_res2net_scale=8,
                enc_se_channels=16, mel_dim=128, sample_rate=24000)


def shrink_config(cfg):
    """Released config dict -> tiny config dict (same keys, shrunk values)."""
    cfg = copy.deepcopy(cfg)
    size = cfg["tts_model_size"]
    t = cfg["talker_config"]
    cp = t["code_predictor_config"]
    tt = TINY_TALKER[size]
    t.update(hidden_size=tt["hidden"], intermediate_size=tt["inter"], num_hidden_layers=tt["layers"],
             num_attention_heads=TINY_HEADS, num_key_value_heads=TINY_KV_HEADS, head_dim=TINY_HEAD_DIM,
             text_hidden_size=TINY_TEXT_HIDDEN, vocab_size=TINY_CODEBOOK + 1024)
    t["rope_scaling"] = dict(t["rope_scaling"])
    t["rope_scaling"]["mrope_section"] = list(TINY_MROPE_SECTION)
    for k in ["codec_bos_id", "codec_eos_token_id", "codec_think_id", "codec_nothink_id", "codec_pad_id",
              "codec_think_bos_id", "codec_think_eos_id"]:
        t[k] = t[k] - ID_SHIFT
    t["codec_language_id"] = {k: v - ID_SHIFT for k, v in t["codec_language_id"].items()}
    t["spk_id"] = {k: (v - ID_SHIFT if isinstance(v, int) else [x - ID_SHIFT for x in v])
                   for k, v in t["spk_id"].items()}
    cp.update(hidden_size=TINY_CP["hidden"], intermediate_size=TINY_CP["inter"],
              num_hidden_layers=TINY_CP["layers"], num_attention_heads=TINY_HEADS,
              num_key_value_heads=TINY_KV_HEADS, head_dim=TINY_HEAD_DIM, vocab_size=TINY_CODEBOOK,
              layer_types=["full_attention"] * TINY_CP["layers"])
    if cfg["tts_model_type"] == "base":
        spk = dict(cfg.get("speaker_encoder_config") or {})
        spk.update(TINY_SPK)
        spk["enc_dim"] = tt["hidden"]
        cfg["speaker_encoder_config"] = spk
    # sanity: all special ids in the top 1024 rows
    V = t["vocab_size"]
    ids = [t[k] for k in ["codec_bos_id", "codec_eos_token_id", "codec_think_id", "codec_nothink_id",
                          "codec_pad_id", "codec_think_bos_id", "codec_think_eos_id"]]
    ids += list(t["codec_language_id"].values())
    ids += [v if isinstance(v, int) else v[0] for v in t["spk_id"].values()]
    assert all(V - 1024 <= i < V for i in ids), ids
    return cfg


def tensor_seed(seed, name):
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def redraw(model, seed):
    import torch
    from torch import nn
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSRMSNorm

    done = set()

    def gen(name):
        g = torch.Generator()
        g.manual_seed(tensor_seed(seed, name))
        return g

    def normal_(t, name, mean, std):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen(name), dtype=torch.float32) * std + mean)
        done.add(name)

    for mname, mod in model.named_modules():
        pre = mname + "." if mname else ""
        if isinstance(mod, (nn.Linear, nn.Conv1d)):
            w = mod.weight
            fan_in = w.shape[1] * (w.shape[2] if w.dim() == 3 else 1)
            normal_(w.data, pre + "weight", 0.0, fan_in ** -0.5)
            if mod.bias is not None:
                normal_(mod.bias.data, pre + "bias", 0.0, 0.05)
        elif isinstance(mod, nn.Embedding):
            normal_(mod.weight.data, pre + "weight", 0.0, 1.0)
        elif isinstance(mod, Qwen3TTSRMSNorm):
            normal_(mod.weight.data, pre + "weight", 1.0, 0.1)
    sd_names = set(model.state_dict().keys())
    missing = sorted(n for n in sd_names if n not in done and model.state_dict()[n].is_floating_point())
    if missing:
        raise SystemExit(f"tensors not covered by the re-draw rules: {missing[:20]}")
    return len(done)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--size", required=True, choices=["real", "tiny"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=None, help="default: 1234 + variant index")
    ap.add_argument("--tokenizer-links", default=None,
                    help="make vocab.json/merges.txt relative symlinks to this dir (relative to --out)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else 1234 + VARIANTS.index(args.variant)

    import torch
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    torch.manual_seed(seed)
    t0 = time.time()
    src = os.path.join(CONFIGS, f"Qwen3-TTS-12Hz-{args.variant}")
    if not os.path.isfile(os.path.join(src, "config.json")):
        sys.exit(f"{src}/config.json not found: set QWEN3_TTS_CONFIGS to the folder holding the released "
                 "config files (layout: scripts/make_fixtures.sh)")
    with open(os.path.join(src, "config.json"), "rb") as f:
        raw_cfg = f.read()
    cfg = json.loads(raw_cfg)
    if args.size == "tiny":
        cfg = shrink_config(cfg)
    config = Qwen3TTSConfig(**cfg)
    model = Qwen3TTSForConditionalGeneration(config).to(torch.float32).eval()
    n = redraw(model, seed)
    model = model.to(torch.bfloat16)
    os.makedirs(args.out, exist_ok=True)
    # official save path (safetensors); it also writes its own config.json / generation_config.json,
    # which are then replaced by the released texts (tiny: released JSON with substituted values).
    model.save_pretrained(args.out, safe_serialization=True)
    if args.size == "real":
        with open(os.path.join(args.out, "config.json"), "wb") as f:
            f.write(raw_cfg)
    else:
        with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False)
            f.write("\n")
    for fn in ["generation_config.json", "tokenizer_config.json", "preprocessor_config.json",
               "configuration.json"]:
        shutil.copyfile(os.path.join(src, fn), os.path.join(args.out, fn))
    for fn in ["vocab.json", "merges.txt"]:
        dst = os.path.join(args.out, fn)
        if os.path.lexists(dst):
            os.remove(dst)
        if args.tokenizer_links:
            os.symlink(os.path.join(args.tokenizer_links, fn), dst)
        else:
            shutil.copyfile(os.path.join(CONFIGS, fn), dst)
    sz = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"[build_tts_checkpoint] {args.variant} {args.size} seed={seed}: {n} tensors re-drawn, "
          f"model.safetensors {sz/1e6:.2f} MB, {time.time()-t0:.1f}s -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
