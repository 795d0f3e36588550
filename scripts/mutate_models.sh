#!/usr/bin/env bash
# Mutation test of the model files (issue #15): every single-value change of
# the tiny CustomVoice model and speech-tokenizer GGUF files (metadata keys,
# tensor dims, truncations) run through the released qwen3-tts-run; prints
# the outcomes per file and the failing cases (panics, aborts, hangs), and
# exits non-zero if there are any.
#
#   scripts/mutate_models.sh [--jobs 2] [--timeout 20] [--every N] [--only tts|tokenizer]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p qwen3-tts-cli --bin qwen3-tts-run
cargo build --release -p qwen3-tts-tests --example mutate_models
exec "$target/release/examples/mutate_models" --bin "$target/release/qwen3-tts-run" "$@"
