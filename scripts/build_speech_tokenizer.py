#!/usr/bin/env python3
"""Build a random-weight Qwen3-TTS-Tokenizer-12Hz (Mimi encoder + 12 Hz decoder) checkpoint.

Uses the official classes from the PyPI package `qwen-tts==0.1.1` (Qwen3TTSTokenizerV2Model) so that
tensor names, shapes and the on-disk layout are exactly those of the released speech tokenizer.

  scripts/build_speech_tokenizer.py --size {real,tiny} --out DIR [--seed N] [--calib-wav WAV]

Steps (why random weights are re-drawn and calibrated: docs/architecture.md, "How correctness is proven"):
 1. config: the released $QWEN3_TTS_CONFIGS/Qwen3-TTS-Tokenizer-12Hz/config.json (folder layout in
    scripts/make_fixtures.sh; tiny: shrunk widths, codebook 256, 16 valid quantizers, 1920 samples/frame kept).
 2. every float tensor is re-drawn from a seeded torch.Generator, in sorted-name order:
      linear/conv weights N(0, fan_in^-1/2) (transposed conv: fan_in = in_ch * k / stride),
      norm weights 1+N(0,0.1), biases N(0,0.05), layer scales / ConvNeXt gamma U(0.05,0.3),
      SnakeBeta alpha/beta N(0,0.2), codebook cluster_usage U(0.5,2), embed_sum = N(0,1)*usage.
 3. calibration on speech (tests/fixtures/audio/ref_24k.wav by default):
      encoder: each RVQ codebook (semantic, then acoustic in order) is rescaled/shifted to the
        per-dimension mean/std of the residual it actually quantises, so many distinct codes appear;
      decoder: walking the decoder stage by stage on seeded random codes, each SnakeBeta residual
        branch (conv2) is damped to <= 0.3x the std of its input, and the final conv is scaled
        (and its bias shifted to cancel DC) so that the pre-clamp waveform has std 0.12.
 4. model.save_pretrained(DIR) (safetensors, F32), then config.json is rewritten in the released key
    layout, and preprocessor_config.json / configuration.json are copied from the released files.
Deterministic: same arguments -> byte-identical files.
"""
import argparse
import copy
import json
import os
import resource
import shutil
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The released configuration files (JSON only, no weights); layout: scripts/make_fixtures.sh.
CONFIGS = os.environ.get("QWEN3_TTS_CONFIGS", os.path.join(REPO, "models", "configs"))
REL_DIR = os.path.join(CONFIGS, "Qwen3-TTS-Tokenizer-12Hz")

TINY_ENCODER = dict(
    num_filters=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, intermediate_size=64, codebook_size=256, codebook_dim=16,
    vector_quantization_hidden_dimension=16, num_quantizers=20, upsample_groups=32,
)
TINY_DECODER = dict(
    codebook_size=256, codebook_dim=32, latent_dim=48, hidden_size=32, num_attention_heads=4,
    num_key_value_heads=4, head_dim=16, intermediate_size=64, num_hidden_layers=2, decoder_dim=64,
    vector_quantization_hidden_dimension=16, semantic_codebook_size=256,
)

DEC_BRANCH_RATIO = 0.3   # residual-unit branch std <= ratio * input std
TARGET_WAV_STD = 0.12    # pre-clamp waveform std after calibration


def log(msg):
    print(f"[build_speech_tokenizer] {msg}", flush=True)


def make_config_dict(size):
    if not os.path.isfile(os.path.join(REL_DIR, "config.json")):
        raise SystemExit(f"{REL_DIR}/config.json not found: set QWEN3_TTS_CONFIGS to the folder holding the "
                         "released config files (layout: scripts/make_fixtures.sh)")
    with open(os.path.join(REL_DIR, "config.json")) as f:
        cfg = json.load(f)
    if size == "tiny":
        cfg["encoder_config"].update(TINY_ENCODER)
        cfg["decoder_config"].update(TINY_DECODER)
    return cfg


def import_qwen():
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model
    return Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model


# ---------------------------------------------------------------------------------------------
# re-draw
# ---------------------------------------------------------------------------------------------

def redraw(model, seed):
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    sd = model.state_dict(keep_vars=True)
    names = sorted(sd.keys())
    # cluster usage must be drawn before embed_sum of the same codebook: handle per codebook
    usage_cache = {}
    nn = torch.nn
    for name in names:
        t = sd[name]
        if not torch.is_floating_point(t):
            continue
        mod_name, _, leaf = name.rpartition(".")
        mod = modules.get(mod_name)
        shape = tuple(t.shape)
        with torch.no_grad():
            if leaf == "initialized":
                new = torch.ones(shape)
            elif leaf == "cluster_usage":
                new = 0.5 + 1.5 * torch.rand(shape, generator=g)
                usage_cache[mod_name] = new
            elif leaf in ("embed_sum", "embedding_sum"):
                usage = usage_cache.get(mod_name)
                if usage is None:  # sorted order puts cluster_usage first; guard anyway
                    raise RuntimeError(f"usage not drawn before {name}")
                new = torch.randn(shape, generator=g) * usage[:, None]
            elif leaf in ("alpha", "beta"):
                new = 0.2 * torch.randn(shape, generator=g)
            elif leaf in ("scale", "gamma"):
                new = 0.05 + 0.25 * torch.rand(shape, generator=g)
            elif leaf == "bias" and ("norm" in mod_name.rsplit(".", 1)[-1]):
                new = 0.05 * torch.randn(shape, generator=g)
            elif leaf == "weight" and ("norm" in mod_name.rsplit(".", 1)[-1]):
                new = 1.0 + 0.1 * torch.randn(shape, generator=g)
            elif leaf == "bias":
                new = 0.05 * torch.randn(shape, generator=g)
            elif leaf == "weight":
                if isinstance(mod, nn.ConvTranspose1d):
                    fan_in = shape[0] * shape[2] / mod.stride[0]
                elif isinstance(mod, nn.Conv1d):
                    fan_in = shape[1] * shape[2]
                elif isinstance(mod, nn.Linear):
                    fan_in = shape[1]
                else:
                    raise RuntimeError(f"unknown weight {name} {type(mod)}")
                new = torch.randn(shape, generator=g) * fan_in ** -0.5
            else:
                raise RuntimeError(f"unhandled tensor {name} {shape}")
            t.data.copy_(new.to(t.dtype))
    reset_codebook_cache(model)


def reset_codebook_cache(model):
    for m in model.modules():
        if hasattr(m, "_embed"):
            m._embed = None


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def calibrate_encoder(model, wav):
    enc = model.encoder
    x = torch.from_numpy(wav)[None, None, :].float()
    emb = enc.encoder(x)
    h = enc.encoder_transformer(emb.transpose(1, 2), return_dict=True)[0].transpose(1, 2)
    lat = enc.downsample(h)  # [1, H, T]
    log(f"encoder: seanet std {emb.std():.3f}, transformer std {h.std():.3f}, latent std {lat.std():.3f}")
    stats = []
    for rvq_name in ("semantic_residual_vector_quantizer", "acoustic_residual_vector_quantizer"):
        rvq = getattr(enc.quantizer, rvq_name)
        r = rvq.input_proj(lat) if rvq.input_proj is not None else lat  # [1, D, T]
        for li, layer in enumerate(rvq.layers):
            cb = layer.codebook
            flat = r[0].transpose(0, 1)  # [T, D]
            mu = flat.mean(0)
            sd = flat.std(0).clamp(min=1e-6)
            usage = cb.cluster_usage.clamp(min=cb.epsilon)[:, None]
            unit = cb.embed_sum / usage  # N(0,1) draws
            cb.embed_sum.copy_((mu[None, :] + sd[None, :] * unit) * usage)
            cb._embed = None
            idx = layer.encode(r)
            r = r - layer.decode(idx)
            stats.append(len(torch.unique(idx)))
    log(f"encoder calibrated; distinct codes per codebook (all layers): {stats}")


@torch.no_grad()
def calibrate_decoder(model, codes):
    """codes: [1, Q, T]. Walk the decoder stage by stage, damping residual branches."""
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2DecoderDecoderResidualUnit as RU)
    dec = model.decoder
    h = dec.quantizer.decode(codes)
    h = dec.pre_conv(h).transpose(1, 2)
    h = dec.pre_transformer(inputs_embeds=h).last_hidden_state.permute(0, 2, 1)
    log(f"decoder: pre_transformer out std {h.std():.3f}")
    for blocks in dec.upsample:
        for b in blocks:
            h = b(h)
    log(f"decoder: upsample out std {h.std():.3f}")
    damped = []
    for bi, block in enumerate(dec.decoder):
        if bi == len(dec.decoder) - 1:
            break
        if hasattr(block, "block"):
            for sub in block.block:
                if isinstance(sub, RU):
                    y = sub(h) - h
                    ratio = float(y.std() / h.std().clamp(min=1e-8))
                    if ratio > DEC_BRANCH_RATIO:
                        f = DEC_BRANCH_RATIO / ratio
                        sub.conv2.conv.weight.mul_(f)
                        sub.conv2.conv.bias.mul_(f)
                        damped.append(round(f, 3))
                    h = sub(h)
                else:
                    h = sub(h)
        else:
            h = block(h)
        log(f"decoder: decoder.{bi} out std {h.std():.3f} mean {h.mean():.3f}")
    last = dec.decoder[-1]
    y = last(h)
    sd = float(y.std())
    f = TARGET_WAV_STD / sd
    last.conv.weight.mul_(f)
    last.conv.bias.mul_(f)
    y = last(h)
    last.conv.bias.sub_(y.mean())
    log(f"decoder: residual branch damping factors {damped}; final conv scaled by {f:.4g}")


@torch.no_grad()
def report(model, wav, codes):
    x = torch.from_numpy(wav)[None, :].float()
    mask = torch.ones_like(x, dtype=torch.long)
    enc_codes = model.encode(x, mask, return_dict=True).audio_codes[0]  # [T, 16]
    distinct = [len(torch.unique(enc_codes[:, i])) for i in range(enc_codes.shape[1])]
    out = {"encode_frames": int(enc_codes.shape[0]), "encode_distinct_codes": distinct}
    for tag, c in (("random_codes", codes[0].transpose(0, 1)), ("speech_codes", enc_codes)):
        w = model.decode(c[None], return_dict=True).audio_values[0]
        out[f"decode_{tag}_clipped_frac"] = float((w.abs() >= 1.0).float().mean())
        out[f"decode_{tag}_std"] = float(w.std())
        out[f"decode_{tag}_maxabs"] = float(w.abs().max())
    return out


def load_wav(path):
    import librosa
    wav, sr = librosa.load(path, sr=None, mono=True)
    if sr != 24000:
        wav = librosa.resample(y=wav, orig_sr=sr, target_sr=24000)
    return wav.astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["real", "tiny"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--calib-wav", default=os.path.join(REPO, "tests/fixtures/audio/ref_24k.wav"))
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    torch.manual_seed(args.seed)
    Cfg, Model = import_qwen()
    cfg_dict = make_config_dict(args.size)
    config = Cfg(**copy.deepcopy(cfg_dict))
    model = Model(config).eval().float()
    log(f"built {args.size} model in {time.time() - t0:.1f}s")
    redraw(model, args.seed)
    log(f"redrawn in {time.time() - t0:.1f}s")

    wav = load_wav(args.calib_wav)
    calibrate_encoder(model, wav)
    g = torch.Generator().manual_seed(args.seed + 1)
    dcfg = config.decoder_config
    calib_codes = torch.randint(0, dcfg.codebook_size, (1, dcfg.num_quantizers, 40), generator=g)
    calibrate_decoder(model, calib_codes)
    reset_codebook_cache(model)
    stats = report(model, wav, calib_codes)
    log("calibration report: " + json.dumps(stats))

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    # config.json in the released key layout (save_pretrained writes a diff-style dump)
    # (--size real: the released file, byte for byte; tiny: same key layout and formatting)
    if args.size == "real":
        shutil.copyfile(os.path.join(REL_DIR, "config.json"), os.path.join(args.out, "config.json"))
    else:
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(cfg_dict, f, indent=2)
            f.write("\n")
    for fn in ("preprocessor_config.json", "configuration.json"):
        shutil.copyfile(os.path.join(REL_DIR, fn), os.path.join(args.out, fn))
    os.chmod(os.path.join(args.out, "model.safetensors"), 0o644)
    for fn in os.listdir(args.out):
        if fn not in ("config.json", "preprocessor_config.json", "configuration.json", "model.safetensors"):
            log(f"note: extra file written by save_pretrained: {fn}")
    with open(os.path.join(args.out, "calibration.json"), "w") as f:
        json.dump({"size": args.size, "seed": args.seed, "calib_wav": os.path.basename(args.calib_wav),
                   "dec_branch_ratio": DEC_BRANCH_RATIO, "target_wav_std": TARGET_WAV_STD, **stats},
                  f, indent=1)
        f.write("\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"saved to {args.out} in {time.time() - t0:.1f}s, peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
