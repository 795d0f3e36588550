#!/usr/bin/env bash
# Voice-cloning front end on the real-size random 0.6B-Base checkpoint: speaker-encoder time and x-vector
# cosine vs the reference for every converted TTS type, codec-encoder time per second of audio and codes
# identical to the reference encoder's (F32 and F16 tokenizer files), plus the reference encoder's time.
#   scripts/bench_clone.sh [threads]      default 2
# Needs scripts/make_real_checkpoints.sh 0.6B-Base, scripts/convert_real.sh 0.6B-Base,
# the reference x-vector dump (scripts/dump_talker_real.py) and the oracle venv.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
runs=${RUNS:-3}
out=models/convert-0.6B-Base
ref=models/reference-real
[ -f "$ref/0.6B-Base/xvec.safetensors" ] || { echo "error: no $ref/0.6B-Base/xvec dump (scripts/talker_real.sh / dump_talker_real.py)" >&2; exit 1; }
PY=${QWEN3_TTS_ORACLE_VENV:-.venv-oracle}/bin/python
cargo build --release --locked -q -p qwen3-tts-tests --example bench_clone
"$PY" scripts/bench_clone_ref.py --tokenizer models/random-0.6B-Base/speech_tokenizer --threads "$threads" \
    --runs "$runs" --out "$ref/encode_ref.safetensors" 2>&1 | grep "^reference"
for t in f32 f16 q8_0 q4_k; do
    tok=$out/tokenizer-$([ "$t" = f32 ] && echo f32 || echo f16).gguf
    target/release/examples/bench_clone "$out/tts-$t.gguf" "$tok" "$ref/0.6B-Base/xvec.safetensors" \
        "$ref/encode_ref.safetensors" "$threads" "$runs"
done
