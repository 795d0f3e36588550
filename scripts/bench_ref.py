#!/usr/bin/env python3
"""PyTorch-reference side of the benchmark table: times the official `qwen_tts` pipeline end to end.

The official wrapper `Qwen3TTSModel` is loaded from a real-size (random-weight) checkpoint in the Hugging Face
layout with `load_genuine_tts` of scripts/dump_talker.py (float32, CPU, eval, processor with the genuine Qwen2
regex), and `torch.set_num_threads(--threads)` (inter-op threads set to 1 where torch allows it). For every
(mode, F) the public API is called --runs times, fully greedy exactly like dump_talker.py:
`greedy_kwargs(F)` (do_sample=False, subtalker_dosample=False, max_new_tokens=F+1) and `force_eos_off(model)`
(the package's own min_new_tokens threshold raised so EOS never wins), and the number of generated frames is
asserted == F. One untimed warm-up call (the first mode, F=2) precedes the timed runs: the process's first call
pays a one-time cost of seconds in the package's first `librosa.load` of the reference wav (lazy imports;
measured 2-5 s on a 2-core machine, ~3.5x the steady ref_encode_ms), while later calls are not slower.
Its metrics are kept in the JSON under "warmup".

Modes:
  xvec     Base: generate_voice_clone(text, language, ref_audio, x_vector_only_mode=True)
  icl      Base: generate_voice_clone(text, language, ref_audio, ref_text, x_vector_only_mode=False)
  speaker  CustomVoice: generate_custom_voice(text, speaker, language); speaker defaults to the first entry of
           talker_config.spk_id in config.json

What is timed (time.perf_counter; record-only wrappers that call the original method and return its result
unchanged, plus forward pre-/post-hooks on the talker module; nothing alters the computation):
  total_ms              the public API call (generate_voice_clone / generate_custom_voice), start to return
  ref_encode_ms         Qwen3TTSModel.create_voice_clone_prompt (reads the wav, speech-tokenizer encode, speaker
                        x-vector); 0 in `speaker` mode. Broken down into ref_codec_encode_ms
                        (model.speech_tokenizer.encode) and ref_spk_embed_ms (model.extract_speaker_embedding:
                        mel + speaker encoder). NB: the package runs the speech-tokenizer encode in xvec mode too
                        and then discards the codes, so xvec pays for it.
  prefill_ms            the talker forward whose inputs_embeds has seq len > 1 (the package's own prefill test)
  talker_ms_per_frame   the talker's decode forwards (seq len 1), minus the code-predictor time nested in them,
                        divided by their number. The package's talker forward for step k >= 1 first calls
                        `talker.code_predictor.generate` to complete frame k-1 (codes 1..15), then runs the
                        talker on the summed frame embedding: F decode forwards for F frames (the last one
                        computes code 0 of a frame that is dropped), one code-predictor call inside each.
  cp_ms_per_frame       total time in `talker.code_predictor.generate` / number of its calls (= F)
  first_frame_ms        API call start -> end of the first code-predictor generate (first complete 16-code frame),
                        everything included (reference encode, tokenization, prompt building, prefill)
  first_frame_after_prompt_ms  prefill start -> end of the first code-predictor generate
  vocoder_ms            time in model.speech_tokenizer.decode (one call; the package decodes in chunks of 300
                        frames with 25 frames of left context inside it)
  decoded_audio_s       seconds of audio that decode returned (ICL: the reference codes are decoded in front of
                        the generated ones, then cut off by the package; the reference part is counted here)
  vocoder_ms_per_audio_s  vocoder_ms / decoded_audio_s
  audio_s               seconds of the returned waveform; rtf = total_ms/1000/audio_s;
                        rtf_with_load = (load_ms + total_ms)/1000/audio_s, load_ms = load_genuine_tts(model_dir)
                        timed once at the start
  other_ms              total_ms minus every timed part above (text tokenization, prompt embedding, HF generate
                        bookkeeping and logits processing, the ICL cut): a check that the parts add up

Each metric is reported as median and min over the runs. peak_rss_mb is ru_maxrss of the process after each
(mode, F) block: a process-wide high-water mark, monotonic across blocks (it includes the loaded model).

    .venv-oracle/bin/python scripts/bench_ref.py --model-dir models/random-0.6B-Base --threads 2 --runs 3 \\
        --frames 5 50 --modes xvec icl --ref-audio tests/fixtures/audio/ref_24k.wav \\
        --ref-text "Okay. Yeah. I resent you. I love you." --text "Hello there, this is a benchmark." \\
        --json-out /tmp/bench_ref.json

JSON: {"model_dir", "threads", "interop_threads", "runs", "torch", "transformers", "dtype", "device", "load_ms",
       "warmup": {"mode", "frames", "metrics", "reason"}, "peak_rss_note", "metric_notes",
       "generation", "results": [{"mode", "frames", "api", "api_kwargs", "prompt_len", "ref_frames",
                    "metrics": {name: {"median", "min"}}, "peak_rss_mb", "per_run": [{name: value}, ...]}, ...]}
  prompt_len: talker prefill length; ref_frames: reference codes decoded in front of the generated ones (ICL)
"""
import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dump_talker import force_eos_off, greedy_kwargs, load_genuine_tts  # noqa: E402

MODES = ("xvec", "icl", "speaker")
WARMUP_FRAMES = 2
METRICS = (
    "total_ms", "ref_encode_ms", "ref_codec_encode_ms", "ref_spk_embed_ms", "prefill_ms", "talker_ms_per_frame",
    "cp_ms_per_frame", "first_frame_ms", "first_frame_after_prompt_ms", "vocoder_ms", "decoded_audio_s",
    "vocoder_ms_per_audio_s", "audio_s", "rtf", "rtf_with_load", "other_ms",
)


def ms(t0, t1):
    return 1000.0 * (t1 - t0)


def timed(obj, name, sink):
    """Record-only wrapper: obj.<name>(...) is called unchanged; sink(t0, t1, args, kwargs, result) sees each call."""
    orig = getattr(obj, name)

    @functools.wraps(orig)
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        out = orig(*a, **kw)
        sink(t0, time.perf_counter(), a, kw, out)
        return out
    setattr(obj, name, wrapper)


class Probe:
    """Installs the timing wrappers/hooks once; `reset()` before each API call, `metrics()` after it."""

    def __init__(self, tts):
        model = tts.model
        self.reset()

        def on_prompt(t0, t1, a, kw, out):
            self.prompt.append((t0, t1))
        timed(tts, "create_voice_clone_prompt", on_prompt)

        if model.speaker_encoder is not None:
            timed(model, "extract_speaker_embedding", lambda t0, t1, *_: self.spk.append((t0, t1)))
        timed(model.speech_tokenizer, "encode", lambda t0, t1, *_: self.enc.append((t0, t1)))

        def on_decode(t0, t1, a, kw, out):
            wavs, sr = out
            items = a[0] if a else kw["encoded"]  # list of {"audio_codes": [T, 16]}
            n_frames = sum(int(c["audio_codes"].shape[0]) for c in items)
            self.dec.append((t0, t1, sum(len(w) for w in wavs) / sr, n_frames))
        timed(model.speech_tokenizer, "decode", on_decode)

        def on_model_generate(t0, t1, a, kw, out):
            self.codes = out[0]
        timed(model, "generate", on_model_generate)

        def on_cp(t0, t1, a, kw, out):
            self.cp.append((t0, t1))
            if self.fwd_open is not None:
                self.fwd_open["cp_ms"] += ms(t0, t1)
        timed(model.talker.code_predictor, "generate", on_cp)

        # talker forwards: hooks (not a wrapper), so HF generate's introspection of forward() is untouched
        def pre(mod, args, kwargs):
            emb = kwargs.get("inputs_embeds")
            self.fwd_open = {"prefill": emb is not None and emb.shape[1] > 1,
                             "seq": None if emb is None else int(emb.shape[1]), "cp_ms": 0.0,
                             "t0": time.perf_counter()}

        def post(mod, args, kwargs, out):
            f = self.fwd_open
            f["t1"] = time.perf_counter()
            self.fwd.append(f)
            self.fwd_open = None
        model.talker.register_forward_pre_hook(pre, with_kwargs=True)
        model.talker.register_forward_hook(post, with_kwargs=True)

    def reset(self):
        self.prompt, self.spk, self.enc, self.dec, self.cp, self.fwd = [], [], [], [], [], []
        self.fwd_open = None
        self.codes = None

    def metrics(self, t_start, t_end, wav_samples, sr, frames, load_ms):
        prefill = [f for f in self.fwd if f["prefill"]]
        decode = [f for f in self.fwd if not f["prefill"]]
        assert len(prefill) == 1, f"{len(prefill)} prefill forwards"
        assert self.fwd[0]["prefill"], "first talker forward is not the prefill"
        assert len(decode) == frames == len(self.cp), (len(decode), frames, len(self.cp))
        assert all(f["cp_ms"] > 0 for f in decode), "a decode forward without a nested code-predictor call"
        assert len(self.dec) == 1, f"{len(self.dec)} decode calls"
        pf = prefill[0]
        m = {}
        m["total_ms"] = ms(t_start, t_end)
        m["ref_encode_ms"] = sum(ms(*p) for p in self.prompt)
        m["ref_codec_encode_ms"] = sum(ms(*p) for p in self.enc)
        m["ref_spk_embed_ms"] = sum(ms(*p) for p in self.spk)
        m["prefill_ms"] = ms(pf["t0"], pf["t1"]) - pf["cp_ms"]
        talker_total = sum(ms(f["t0"], f["t1"]) - f["cp_ms"] for f in decode)
        cp_total = sum(ms(*c) for c in self.cp)
        m["talker_ms_per_frame"] = talker_total / len(decode)
        m["cp_ms_per_frame"] = cp_total / len(self.cp)
        m["first_frame_ms"] = ms(t_start, self.cp[0][1])
        m["first_frame_after_prompt_ms"] = ms(pf["t0"], self.cp[0][1])
        m["vocoder_ms"] = sum(ms(t0, t1) for t0, t1, _, _ in self.dec)
        m["decoded_audio_s"] = sum(s for _, _, s, _ in self.dec)
        m["vocoder_ms_per_audio_s"] = m["vocoder_ms"] / m["decoded_audio_s"]
        m["audio_s"] = wav_samples / sr
        m["rtf"] = m["total_ms"] / 1000.0 / m["audio_s"]
        m["rtf_with_load"] = (load_ms + m["total_ms"]) / 1000.0 / m["audio_s"]
        m["other_ms"] = m["total_ms"] - (m["ref_encode_ms"] + m["prefill_ms"] + talker_total + cp_total
                                         + m["vocoder_ms"])
        assert set(m) == set(METRICS)
        return m, pf["seq"], self.dec[0][3] - frames


def default_speaker(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        spk = json.load(f)["talker_config"].get("spk_id") or {}
    if not spk:
        raise SystemExit(f"{model_dir}: config has no talker_config.spk_id; pass --speaker")
    return next(iter(spk))


def api_call(mode, args):
    """(public API method name, kwargs) for a mode."""
    if mode == "xvec":
        return "generate_voice_clone", dict(text=args.text, language=args.language, ref_audio=args.ref_audio,
                                            x_vector_only_mode=True)
    if mode == "icl":
        return "generate_voice_clone", dict(text=args.text, language=args.language, ref_audio=args.ref_audio,
                                            ref_text=args.ref_text, x_vector_only_mode=False)
    return "generate_custom_voice", dict(text=args.text, speaker=args.speaker, language=args.language)


def summarize(runs):
    return {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs)} for k in METRICS}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--frames", type=int, nargs="+", required=True)
    ap.add_argument("--modes", nargs="+", choices=MODES, required=True)
    ap.add_argument("--ref-audio", required=True)
    ap.add_argument("--ref-text", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--speaker", default=None, help="CustomVoice speaker (default: first in config spk_id)")
    ap.add_argument("--language", default="English")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()
    if args.speaker is None and "speaker" in args.modes:
        args.speaker = default_speaker(args.model_dir)

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError as e:  # only allowed before any inter-op work has started
        print(f"[bench_ref] set_num_interop_threads(1) refused: {e}", file=sys.stderr)

    t0 = time.perf_counter()
    tts = load_genuine_tts(args.model_dir)
    load_ms = ms(t0, time.perf_counter())
    model = tts.model
    assert next(model.parameters()).dtype == torch.float32
    assert next(model.speech_tokenizer.model.parameters()).dtype == torch.float32
    mtype = model.tts_model_type
    for mode in args.modes:
        want = "custom_voice" if mode == "speaker" else "base"
        if mtype != want:
            raise SystemExit(f"mode {mode} needs a {want} checkpoint; {args.model_dir} is {mtype}")
    force_eos_off(model)
    probe = Probe(tts)
    print(f"[bench_ref] {args.model_dir}: loaded in {load_ms:.0f} ms; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {torch.get_num_interop_threads()} inter-op", flush=True)

    def timed_call(mode, frames):
        api, kwargs = api_call(mode, args)
        probe.reset()
        torch.manual_seed(0)
        t_start = time.perf_counter()
        wavs, sr = getattr(tts, api)(**kwargs, **greedy_kwargs(frames))
        t_end = time.perf_counter()
        assert probe.codes is not None and len(probe.codes) == 1
        got = int(probe.codes[0].shape[0])
        assert got == frames, f"{mode}: {got} frames generated, expected {frames}"
        return probe.metrics(t_start, t_end, len(wavs[0]), sr, frames, load_ms)

    warm_mode = args.modes[0]
    warm, _, _ = timed_call(warm_mode, WARMUP_FRAMES)
    warmup = {"mode": warm_mode, "frames": WARMUP_FRAMES, "metrics": warm,
              "reason": "the process's first call pays one-time costs (Base: seconds in the package's first "
                        "librosa.load of the reference wav, lazy imports); untimed, kept for reference"}
    print(f"[bench_ref] warm-up ({warm_mode}, F={WARMUP_FRAMES}, untimed): {warm['total_ms']:.0f} ms, "
          f"ref_encode {warm['ref_encode_ms']:.0f} ms", flush=True)

    results = []
    for mode in args.modes:
        api, kwargs = api_call(mode, args)
        for frames in args.frames:
            runs = []
            for _ in range(args.runs):
                m, prompt_len, ref_frames = timed_call(mode, frames)
                runs.append(m)
            s = summarize(runs)
            rss = peak_rss_mb()
            results.append({"mode": mode, "frames": frames, "api": f"Qwen3TTSModel.{api}", "api_kwargs": kwargs,
                            "prompt_len": prompt_len, "ref_frames": ref_frames, "metrics": s,
                            "peak_rss_mb": rss, "per_run": runs})
            med = {k: v["median"] for k, v in s.items()}
            print(f"{mode:7s} F={frames:<4d} total {med['total_ms']:8.0f} ms  rtf {med['rtf']:6.2f} "
                  f"(w/ load {med['rtf_with_load']:6.2f})  ref_enc {med['ref_encode_ms']:6.0f}  "
                  f"prefill {med['prefill_ms']:6.0f} (L={prompt_len})  talker {med['talker_ms_per_frame']:6.0f}/fr  "
                  f"cp {med['cp_ms_per_frame']:6.0f}/fr  1st frame {med['first_frame_ms']:6.0f} "
                  f"({med['first_frame_after_prompt_ms']:6.0f} after prompt)  vocoder "
                  f"{med['vocoder_ms_per_audio_s']:6.0f} ms/audio-s ({med['vocoder_ms']:.0f} ms for "
                  f"{med['decoded_audio_s']:.2f} s)  other {med['other_ms']:5.0f}  audio {med['audio_s']:.2f} s  "
                  f"peak RSS {rss:.0f} MB  [median of {args.runs}]", flush=True)

    out = {
        "model_dir": args.model_dir,
        "threads": args.threads,
        "interop_threads": torch.get_num_interop_threads(),
        "runs": args.runs,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "device": "cpu",
        "load_ms": load_ms,
        "warmup": warmup,
        "generation": "greedy_kwargs(F) + force_eos_off (scripts/dump_talker.py): exactly F frames",
        "peak_rss_note": "ru_maxrss after each (mode, frames) block: process-wide high-water mark, monotonic",
        "metric_notes": "see the module docstring of scripts/bench_ref.py",
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
