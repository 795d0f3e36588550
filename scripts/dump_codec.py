#!/usr/bin/env python3
"""Dump speech-tokenizer / speaker-encoder reference tensors from the official qwen-tts==0.1.1 package.

  scripts/dump_codec.py [--tokenizer tests/fixtures/tiny-speech-tokenizer]
                        [--out tests/fixtures/reference/codec] [--only NAME[,NAME..]]
                        [--wait-speaker SECONDS]

Writes <out>/<name>.safetensors (float32 / int64, CPU, batch dimension squeezed) and <out>/<name>.json
(inputs, settings, tensor list with shapes). Names:
  decode_short, decode_long, encode_ref, resample_44k, speaker_tiny-0.6B-Base, speaker_tiny-1.7B-Base.
Everything runs on CPU in float32 with fixed seeds; repeated runs give byte-identical files.
Layouts are the reference's own: conv activations channel-major [C, T]; transformer activations
time-major [T, C]; waveforms [N]; codes [frames, 16] int64.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIO = os.path.join(REPO, "tests", "fixtures", "audio")
REF_24K = os.path.join(AUDIO, "ref_24k.wav")
REF_44K = os.path.join(AUDIO, "ref_44k_stereo.wav")

SEED_SHORT = 20260101
SEED_LONG = 20260102
F_SHORT = 12
F_LONG = 330
LONG_FULLPASS_FROM = 300  # frames; single-pass (unchunked) decode tail stored for comparison


def log(msg):
    print(f"[dump_codec] {msg}", flush=True)


def versions():
    import transformers, librosa
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "librosa": librosa.__version__,
           "numpy": np.__version__}
    try:
        import soxr
        out["soxr"] = soxr.__version__
    except Exception:
        pass
    try:
        import importlib.metadata as md
        out["qwen-tts"] = md.version("qwen-tts")
    except Exception:
        pass
    return out


def save(out_dir, name, tensors, meta):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    clean = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if torch.is_floating_point(v):
            v = v.to(torch.float32)
        clean[k] = v.contiguous()
    save_file(clean, os.path.join(out_dir, name + ".safetensors"))
    os.chmod(os.path.join(out_dir, name + ".safetensors"), 0o644)
    meta = dict(meta)
    meta["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                       for k, v in clean.items()}
    meta["versions"] = versions()
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    size = os.path.getsize(os.path.join(out_dir, name + ".safetensors"))
    log(f"wrote {name}.safetensors ({size / 1e6:.3f} MB): " +
        ", ".join(f"{k}{list(v.shape)}" for k, v in clean.items()))


def load_tokenizer(path):
    from qwen_tts import Qwen3TTSTokenizer
    tok = Qwen3TTSTokenizer.from_pretrained(path, dtype=torch.float32)
    tok.model.eval()
    return tok


def rel(p):
    return os.path.relpath(os.path.realpath(p), REPO)


def sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ckpt_sha(d):
    return sha256(os.path.join(d, "model.safetensors"))


# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def dump_decode_short(tok, out_dir, tok_dir):
    model = tok.model
    dec = model.decoder
    cfg = dec.config
    g = torch.Generator().manual_seed(SEED_SHORT)
    codes = torch.randint(0, cfg.codebook_size, (F_SHORT, cfg.num_quantizers), generator=g, dtype=torch.int64)
    cap = {}
    hooks = []

    def fwd(name, transpose=False):
        def h(mod, inp, out):
            o = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
            cap[name] = o[0].clone()
        return h

    hooks.append(dec.pre_conv.register_forward_pre_hook(lambda m, inp: cap.__setitem__("rvq_out", inp[0][0].clone())))
    hooks.append(dec.pre_conv.register_forward_hook(fwd("pre_conv_out")))
    hooks.append(dec.pre_transformer.register_forward_pre_hook(
        lambda m, args, kwargs: cap.__setitem__("pre_transformer_in", kwargs["inputs_embeds"][0].clone()),
        with_kwargs=True))
    hooks.append(dec.pre_transformer.register_forward_hook(fwd("pre_transformer_out")))
    for i, blocks in enumerate(dec.upsample):
        hooks.append(blocks[0].register_forward_hook(fwd(f"upsample{i}_transconv_out")))
        hooks.append(blocks[1].register_forward_hook(fwd(f"upsample{i}_out")))
    n = len(dec.decoder)
    for i, b in enumerate(dec.decoder):
        nm = f"decoder{i}_out"
        if i == n - 1:
            nm = "wav_preclamp"
        elif i == n - 2:
            nm = "decoder5_snake_out"
        hooks.append(b.register_forward_hook(fwd(nm)))
    wav_direct = dec(codes.transpose(0, 1)[None])[0, 0]
    for h in hooks:
        h.remove()
    # separate branches of the split RVQ (after their own output projections)
    c = codes.transpose(0, 1)[None]  # [1, 16, T]
    sem = dec.quantizer.rvq_first.decode(c[:, :1])[0]
    aco = dec.quantizer.rvq_rest.decode(c[:, 1:])[0]
    # the public path (wrapper decode; single chunk since F <= 300)
    wavs, sr = tok.decode({"audio_codes": codes})
    wav = torch.from_numpy(wavs[0])
    assert sr == 24000
    assert torch.equal(wav, wav_direct), "wrapper decode != direct decoder forward"
    assert torch.allclose(sem + aco, cap["rvq_out"], atol=1e-6)
    tensors = {"codes": codes, "rvq_semantic": sem, "rvq_acoustic": aco}
    for k in ["rvq_out", "pre_conv_out", "pre_transformer_in", "pre_transformer_out"] + \
             [f"upsample{i}_{s}" for i in range(len(dec.upsample)) for s in ("transconv_out", "out")] + \
             [f"decoder{i}_out" for i in range(n - 2)] + ["decoder5_snake_out", "wav_preclamp"]:
        tensors[k] = cap[k]
    tensors["wav"] = wav
    clipped = float((wav.abs() >= 1).float().mean())
    save(out_dir, "decode_short", tensors, {
        "what": "decode of seeded random codes through Qwen3TTSTokenizer.decode (single chunk) + decoder intermediates",
        "tokenizer": rel(tok_dir), "tokenizer_sha256": ckpt_sha(tok_dir), "frames": F_SHORT, "codes_seed": SEED_SHORT,
        "codes_rng": "torch.randint(0, codebook_size, (frames, 16), generator=torch.Generator().manual_seed(seed))",
        "layout": "batch squeezed; conv activations [C, T]; pre_transformer_in/out [T, C] (time-major, as the "
                  "reference); rvq_* and pre_conv_out [C, T]; wav [frames*1920]",
        "notes": "rvq_out = rvq_semantic + rvq_acoustic (each after its own output_proj) = pre_conv input; "
                 "pre_transformer_in = pre_conv_out transposed; pre_transformer_out = after final norm + "
                 "output_proj; upsample{i}_transconv_out = causal ConvTranspose1d out, upsample{i}_out = after "
                 "ConvNeXt block; decoder0_out = first causal conv; decoder{1..4}_out = decoder blocks; "
                 "decoder5_snake_out = final SnakeBeta; wav_preclamp = final conv; wav = clamp(-1,1) (public "
                 "decode output)",
        "clipped_fraction": clipped,
        "preclamp_distinct_from_wav": bool(not torch.equal(cap["wav_preclamp"][0], wav)),
    })


@torch.no_grad()
def dump_decode_long(tok, out_dir, tok_dir):
    dec = tok.model.decoder
    cfg = dec.config
    g = torch.Generator().manual_seed(SEED_LONG)
    codes = torch.randint(0, cfg.codebook_size, (F_LONG, cfg.num_quantizers), generator=g, dtype=torch.int64)
    t0 = time.time()
    chunks = []
    h = dec.pre_transformer.register_forward_hook(lambda m, i, o: chunks.append(o.last_hidden_state[0].clone()))
    wavs, sr = tok.decode({"audio_codes": codes})
    h.remove()
    assert len(chunks) == 2
    wav = torch.from_numpy(wavs[0])
    log(f"decode_long chunked decode {time.time() - t0:.1f}s")
    full = dec(codes.transpose(0, 1)[None])[0, 0]
    tail = full[LONG_FULLPASS_FROM * 1920:]
    diff = (wav[LONG_FULLPASS_FROM * 1920:] - tail).abs()
    save(out_dir, "decode_long", {"codes": codes, "wav": wav, "wav_fullpass_tail": tail,
                                  "chunk0_pre_transformer_out": chunks[0], "chunk1_pre_transformer_out": chunks[1]}, {
        "what": "Qwen3TTSTokenizer.decode of seeded random codes, F > 300: reference chunked decode "
                "(chunk 300 frames, 25 frames left context, stateless chunks)",
        "tokenizer": rel(tok_dir), "tokenizer_sha256": ckpt_sha(tok_dir), "frames": F_LONG, "codes_seed": SEED_LONG,
        "codes_rng": "torch.randint(0, codebook_size, (frames, 16), generator=torch.Generator().manual_seed(seed))",
        "chunk_size": 300, "left_context": 25,
        "chunk_pre_transformer_out": "pre_transformer output [frames_in_chunk, latent] of each stateless chunk call: "
                                     "chunk0 = codes[0:300], chunk1 = codes[275:330] (25 context + 30 new; RoPE "
                                     "positions restart at 0; sliding window 72 active)",
        "wav_fullpass_tail": f"single-pass (unchunked) decoder forward, samples [{LONG_FULLPASS_FROM}*1920, end): "
                             "NOT the reference output; shows how much chunking changes the tail",
        "fullpass_vs_chunked_maxabs_diff_tail": float(diff.max()),
        "fullpass_vs_chunked_first_diff_sample": int(LONG_FULLPASS_FROM * 1920 + int(torch.nonzero(diff > 0)[0])) if bool((diff > 0).any()) else None,
        "clipped_fraction": float((wav.abs() >= 1).float().mean()),
    })


@torch.no_grad()
def dump_encode_ref(tok, out_dir, tok_dir):
    model = tok.model
    enc = model.encoder
    wav = tok.load_audio(REF_24K, target_sr=24000)  # exactly what encode(path) uses
    cap = {}
    hooks = [
        enc.encoder.register_forward_hook(lambda m, i, o: cap.__setitem__("seanet_out", o[0].clone())),
        enc.encoder_transformer.register_forward_hook(
            lambda m, i, o: cap.__setitem__("transformer_out", o[0][0].clone())),
        enc.downsample.register_forward_hook(lambda m, i, o: cap.__setitem__("downsample_out", o[0].clone())),
    ]
    # full quantizer codes (all num_quantizers) captured from quantizer.encode
    orig_encode = enc.quantizer.encode

    def q_encode(emb, nq=None):
        codes = orig_encode(emb, nq)
        cap["all_codes"] = codes[:, 0].transpose(0, 1).clone()  # [K,B,T] -> [T,K]
        return codes
    enc.quantizer.encode = q_encode
    out = tok.encode(REF_24K)
    enc.quantizer.encode = orig_encode
    for h in hooks:
        h.remove()
    codes = out.audio_codes[0]
    lat = cap["downsample_out"][None]
    sem_in = enc.quantizer.semantic_residual_vector_quantizer.input_proj(lat)[0]
    ac_in = enc.quantizer.acoustic_residual_vector_quantizer.input_proj(lat)[0]
    distinct = [len(torch.unique(codes[:, i])) for i in range(codes.shape[1])]
    # near-tie report: smallest (2nd-nearest - nearest) L2 distance per codebook, float64 direct distances
    gaps = []
    q = enc.quantizer
    for rvq, col0, proj in ((q.semantic_residual_vector_quantizer, 0, sem_in),
                            (q.acoustic_residual_vector_quantizer, 1, ac_in)):
        r = proj.double().T
        for li, layer in enumerate(rvq.layers):
            col = col0 + li
            if col >= codes.shape[1]:
                break
            E = layer.codebook.embed.double()
            d = torch.cdist(r, E).sort(-1).values
            gaps.append(float((d[:, 1] - d[:, 0]).min()))
            r = r - E[cap["all_codes"][:, col]]
    save(out_dir, "encode_ref", {
        "input_samples": torch.from_numpy(wav), "seanet_out": cap["seanet_out"],
        "transformer_out": cap["transformer_out"], "downsample_out": cap["downsample_out"],
        "semantic_proj": sem_in, "acoustic_proj": ac_in, "all_codes": cap["all_codes"], "codes": codes,
    }, {
        "what": "Qwen3TTSTokenizer.encode('tests/fixtures/audio/ref_24k.wav') + encoder intermediates",
        "tokenizer": rel(tok_dir), "tokenizer_sha256": ckpt_sha(tok_dir), "input": "tests/fixtures/audio/ref_24k.wav", "input_sha256": sha256(REF_24K),
        "loading": "librosa.load(path, sr=None, mono=True) (24 kHz already, no resampling); float32",
        "layout": "input_samples [N]; seanet_out [H, ceil(N/960)]; transformer_out [ceil(N/960), H] "
                  "(time-major); downsample_out [H, ceil(N/1920)]; semantic_proj/acoustic_proj = 1x1 input "
                  "projections [Dvq, T]; all_codes [T, num_quantizers] (every encoder codebook); codes [T, 16] "
                  "= public output (first 16 = encoder_valid_num_quantizers)",
        "distinct_codes_per_codebook": distinct,
        "min_top2_distance_gap_per_codebook": gaps,
        "near_tie_note": "smallest distance gap between nearest and 2nd-nearest codebook entry over all frames "
                         "(float64); gaps ~1e-5 mean an f32 implementation may legitimately flip a code",
    })


@torch.no_grad()
def dump_resample(tok, out_dir):
    import librosa
    y24 = tok.load_audio(REF_44K, target_sr=24000)
    raw, sr = librosa.load(REF_44K, sr=None, mono=True)
    assert sr == 44100
    y24b = librosa.resample(y=raw.astype(np.float32), orig_sr=44100, target_sr=24000).astype(np.float32)
    assert np.array_equal(y24, y24b)
    save(out_dir, "resample_44k", {"samples_24k": torch.from_numpy(y24)}, {
        "what": "tests/fixtures/audio/ref_44k_stereo.wav loaded as the reference loads reference audio",
        "input": "tests/fixtures/audio/ref_44k_stereo.wav (44100 Hz, 2 ch, 16-bit; right = 0.6 x left)",
        "input_sha256": sha256(REF_44K),
        "pipeline": "librosa.load(path, sr=None, mono=True) -> float32 mono = mean of channels (ints scaled "
                    "by 1/32768); librosa.resample(y, orig_sr=44100, target_sr=24000) with default res_type "
                    "(soxr_hq); .astype(float32)",
        "mono_44k_len": int(raw.shape[0]), "out_len": int(y24.shape[0]),
        "note_16k": "nothing in the 12 Hz pipeline resamples to 16 kHz (confirmed in the package source); no 16 kHz output",
    })


@torch.no_grad()
def dump_speaker(variant_dir, name, out_dir):
    from qwen_tts import Qwen3TTSModel
    from qwen_tts.core.models import modeling_qwen3_tts as mq
    m = Qwen3TTSModel.from_pretrained(variant_dir, dtype=torch.float32)
    model = m.model
    wav, sr = m._normalize_audio_inputs([REF_24K])[0]
    assert sr == 24000
    cap = {}
    h = model.speaker_encoder.register_forward_pre_hook(lambda mod, inp: cap.__setitem__("mel", inp[0][0].clone()))
    xvec = model.extract_speaker_embedding(audio=wav, sr=24000)
    h.remove()
    mel = mq.mel_spectrogram(torch.from_numpy(wav).unsqueeze(0), n_fft=1024, num_mels=128, sampling_rate=24000,
                             hop_size=256, win_size=1024, fmin=0, fmax=12000).transpose(1, 2)[0]
    assert torch.equal(mel, cap["mel"])
    # the whole public prompt path must agree
    items = m.create_voice_clone_prompt(ref_audio=REF_24K, ref_text="x", x_vector_only_mode=False)
    assert torch.equal(items[0].ref_spk_embedding, xvec)
    save(out_dir, name, {"mel": mel, "xvector": xvec,
                         "ref_code": items[0].ref_code}, {
        "what": "speaker-encoder front end on tests/fixtures/audio/ref_24k.wav (create_voice_clone_prompt path)",
        "input": "tests/fixtures/audio/ref_24k.wav", "input_sha256": sha256(REF_24K),
        "model": rel(variant_dir), "model_sha256": ckpt_sha(variant_dir),
        "tokenizer_sha256": ckpt_sha(os.path.join(variant_dir, "speech_tokenizer")), "dtype": "float32 (loaded with dtype=torch.float32)",
        "mel": "mel_spectrogram(n_fft=1024, num_mels=128, sr=24000, hop=256, win=1024, fmin=0, fmax=12000) "
               "transposed to [T, 128] = exactly the speaker_encoder input",
        "xvector": "model.extract_speaker_embedding(wav, 24000) [enc_dim]",
        "ref_code": "create_voice_clone_prompt(...).ref_code [T, 16] (same as encode_ref codes)",
    })
    return items[0].ref_code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "tests/fixtures/tiny-speech-tokenizer"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests/fixtures/reference/codec"))
    ap.add_argument("--only", default="")
    ap.add_argument("--wait-speaker", type=float, default=0.0,
                    help="seconds to wait for tiny-*-Base/model.safetensors (helper-built)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = set(x for x in args.only.split(",") if x)

    def want(n):
        return not only or n in only

    tok = load_tokenizer(args.tokenizer)
    if want("decode_short"):
        dump_decode_short(tok, args.out, args.tokenizer)
    if want("encode_ref"):
        dump_encode_ref(tok, args.out, args.tokenizer)
    if want("resample_44k"):
        dump_resample(tok, args.out)
    if want("decode_long"):
        dump_decode_long(tok, args.out, args.tokenizer)
    for v in ("tiny-0.6B-Base", "tiny-1.7B-Base"):
        name = f"speaker_{v}"
        if not want(name):
            continue
        vdir = os.path.join(REPO, "tests", "fixtures", v)
        deadline = time.time() + args.wait_speaker
        while not os.path.exists(os.path.join(vdir, "model.safetensors")) and time.time() < deadline:
            time.sleep(10)
        if not os.path.exists(os.path.join(vdir, "model.safetensors")):
            log(f"SKIP {name}: {vdir}/model.safetensors missing")
            continue
        dump_speaker(vdir, name, args.out)


if __name__ == "__main__":
    main()
