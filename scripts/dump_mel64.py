#!/usr/bin/env python3
"""The speaker encoder's log-mel front end (the package's `mel_spectrogram`, the input of
`Qwen3TTSSpeakerEncoder`) of tests/fixtures/audio/ref_24k.wav evaluated in float64 with the package's own
operations (reflect pad, torch.stft, sqrt(re²+im²+1e-9), librosa Slaney mel basis, log(clamp(·, 1e-5))).
The package computes it in float32; its FFT rounding noise moves bins near the log floor by up to ~6e-4,
which no other FFT reproduces, so the float64 evaluation is what a port is compared with (the float32
output stays in speaker_tiny-*.safetensors). Also checks that the same code in float32 equals the
package's `mel_spectrogram` bit for bit (so the float64 version is the same computation).

    .venv-oracle/bin/python scripts/dump_mel64.py    # writes tests/fixtures/reference/codec/speaker_mel_f64.{safetensors,json}
"""
import json
import os

import librosa
import torch
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests/fixtures/reference/codec/speaker_mel_f64")


def log_mel(x, dtype):
    basis = torch.from_numpy(librosa.filters.mel(sr=24000, n_fft=1024, n_mels=128, fmin=0, fmax=12000)).to(dtype)
    y = torch.nn.functional.pad(x.to(dtype)[None, None], (384, 384), mode="reflect")[0]
    spec = torch.stft(y, 1024, hop_length=256, win_length=1024, window=torch.hann_window(1024, dtype=dtype),
                      center=False, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=1e-5))[0].T.contiguous()


def main():
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram
    torch.set_num_threads(1)
    x = load_file(os.path.join(REPO, "tests/fixtures/reference/codec/encode_ref.safetensors"))["input_samples"]
    package = mel_spectrogram(x[None].float(), n_fft=1024, num_mels=128, sampling_rate=24000, hop_size=256,
                              win_size=1024, fmin=0, fmax=12000)[0].T
    ours32 = log_mel(x, torch.float32)
    assert torch.equal(ours32, package), (ours32 - package).abs().max()
    mel64 = log_mel(x, torch.float64)
    noise = (mel64 - package.double()).abs().max().item()
    save_file({"mel_f64": mel64.float()}, OUT + ".safetensors")
    with open(OUT + ".json", "w") as f:
        json.dump({"input": "tests/fixtures/audio/ref_24k.wav (encode_ref input_samples)", "shape": list(mel64.shape),
                   "what": "log-mel of the speaker encoder's front end evaluated in float64 (stored as f32)",
                   "float32_replica_equals_package": True,
                   "package_f32_vs_f64_max_abs": noise, "torch": torch.__version__,
                   "librosa": librosa.__version__}, f, indent=1, sort_keys=True)
    print(f"package f32 vs f64: max |diff| {noise:.3e}")


if __name__ == "__main__":
    main()
