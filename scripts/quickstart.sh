#!/usr/bin/env bash
# Sets up qwen3-tts-ggml and runs the main job: download a checkpoint from
# Hugging Face, convert it to GGUF (Q8_0), synthesize a sentence to a WAV.
#
#   MODEL=Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice   checkpoint to download (default)
#   MODEL_DIR=path                                use a local checkpoint dir instead
#   TYPE=q8_0  SPEAKER=ryan  LANGUAGE=english  TEXT="..."  OUT=out.wav
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice}
MODEL_DIR=${MODEL_DIR:-models/$(basename "$MODEL")}
TYPE=${TYPE:-q8_0}
SPEAKER=${SPEAKER:-ryan}
LANGUAGE=${LANGUAGE:-english}
TEXT=${TEXT:-Hello! This is Qwen3 text to speech, running locally on ggml.}
OUT=${OUT:-out.wav}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "Building (release)"
# libclang itself (libclang.so*, libclang-<version>.so*), not libclang-cpp.so.
if ! command -v cmake >/dev/null || ! ls /usr/lib/llvm-*/lib/libclang{.so,-[0-9]*.so}* 2>/dev/null | grep -q .; then
    say "Installing build tools (cmake, libclang-dev)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake libclang-dev g++
fi
cargo build --release --locked
BIN=${CARGO_TARGET_DIR:-target}/release

if [ ! -f "$MODEL_DIR/config.json" ]; then
    say "Downloading $MODEL to $MODEL_DIR"
    if command -v hf >/dev/null; then
        dl=(hf download)
    elif command -v huggingface-cli >/dev/null; then
        dl=(huggingface-cli download)
    else
        python3 -m pip install --quiet --user "huggingface_hub[cli]" >/dev/null 2>&1 || true
        export PATH="$HOME/.local/bin:$PATH"
        if command -v hf >/dev/null; then dl=(hf download); else dl=(huggingface-cli download); fi
    fi
    if ! "${dl[@]}" "$MODEL" --local-dir "$MODEL_DIR"; then
        echo >&2
        echo "error: could not download $MODEL from Hugging Face (no network access?)." >&2
        echo "       Download it elsewhere and pass MODEL_DIR=/path/to/checkpoint, or build a" >&2
        echo "       random-weight checkpoint with scripts/make_real_checkpoints.sh." >&2
        exit 1
    fi
fi

say "Converting $MODEL_DIR to GGUF ($TYPE)"
if [ -f "models/tts-$TYPE.gguf" ] && [ -f models/tokenizer-f16.gguf ]; then
    echo "models/tts-$TYPE.gguf and models/tokenizer-f16.gguf exist; skipping conversion" >&2
else
    "$BIN/qwen3-tts-convert" --input "$MODEL_DIR" --outdir models --type "$TYPE" --force
fi

# Never replace a file the user already has: pick the next free name.
if [ -e "$OUT" ]; then
    stem=${OUT%.wav}; i=1
    while [ -e "$stem-$i.wav" ]; do i=$((i + 1)); done
    OUT="$stem-$i.wav"
fi
say "Synthesizing to $OUT"
"$BIN/qwen3-tts-run" -m "models/tts-$TYPE.gguf" -t models/tokenizer-f16.gguf \
    --speaker "$SPEAKER" --language "$LANGUAGE" --text "$TEXT" -o "$OUT"
