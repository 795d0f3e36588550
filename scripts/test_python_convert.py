"""Checks the Python converter module (convert/, built with maturin) against
the qwen3-tts-convert CLI: an in-memory state dict must give the same file.

    cd convert && maturin develop --release && cd ..
    cargo build --release -p qwen3-tts-cli --bin qwen3-tts-convert
    python scripts/test_python_convert.py [checkpoint_dir]
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import qwen3_tts_convert
from safetensors.torch import load_file

repo = Path(__file__).resolve().parent.parent
ckpt = Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "tests/fixtures/tiny-0.6B-Base"
cli = next(p for p in [repo / "target/release/qwen3-tts-convert", repo / "target/debug/qwen3-tts-convert"] if p.exists())

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    subprocess.run([cli, "-i", ckpt, "-o", tmp / "cli", "--type", "q8_0", "--tokenizer-type", "f16", "-q"], check=True)
    for kind, cfg, name in [("tts", ckpt, "tts-q8_0.gguf"), ("tokenizer", ckpt / "speech_tokenizer", "tokenizer-f16.gguf")]:
        sd = {k: v.float().numpy() for k, v in load_file(cfg / "model.safetensors").items()}
        ty = "q8_0" if kind == "tts" else "f16"
        out = qwen3_tts_convert.convert_state_dict(sd, str(cfg), str(tmp / "py"), kind=kind, type=ty)
        same = Path(out).read_bytes() == (tmp / "cli" / name).read_bytes()
        print(f"{kind}: {out} {'identical to the CLI output' if same else 'DIFFERS from the CLI output'}")
        if not same:
            sys.exit(1)
    try:
        qwen3_tts_convert.convert_state_dict({"x": [1, 2]}, str(ckpt), str(tmp / "bad"))
        sys.exit("expected a TypeError for a non-numpy tensor")
    except TypeError as e:
        print(f"bad input rejected: {e}")
