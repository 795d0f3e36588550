#!/usr/bin/env bash
# Build real-size random-weight checkpoints (official classes, released configs, bf16 main model,
# f32 speech tokenizer) into models/random-<variant>/ — for converter/runtime smoke tests and speed
# measurements on real shapes. Not committed (models/* is git-ignored).
#
#   scripts/make_real_checkpoints.sh                 # 0.6B-Base
#   scripts/make_real_checkpoints.sh 1.7B-CustomVoice 0.6B-Base
#
# Each checkpoint: main model via scripts/build_tts_checkpoint.py --size real, speech_tokenizer/ via
# scripts/build_speech_tokenizer.py --size real (built once, into the first variant, and copied to the
# others, since it is the same for every variant). Wall time and peak RSS are printed (/usr/bin/time -v
# when available). 0.6B-Base: ~2.5 GB on disk, several GB peak RSS.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QWEN3_TTS_ORACLE_VENV:-$REPO/.venv-oracle}"
PY="$VENV/bin/python"
cd "$REPO"
[ -x "$PY" ] || { echo "no oracle venv at $VENV (run scripts/setup_oracle.sh)" >&2; exit 1; }
[ $# -gt 0 ] || set -- 0.6B-Base
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -v)

timed() {  # timed LOG cmd...
  local logf="$1"; shift
  if [ ${#TIME[@]} -gt 0 ]; then
    "${TIME[@]}" -o "$logf" "$@"
    grep -E "Elapsed \(wall|Maximum resident" "$logf" | sed 's/^\s*/    /' >&2 || true
  else
    local t0=$SECONDS; "$@"; echo "    wall $((SECONDS-t0))s" >&2
  fi
}

ST=""   # first variant's speech_tokenizer/, copied to the others (identical for every variant)
for v in "$@"; do
  out="models/random-$v"
  echo "[make_real_checkpoints] $v -> $out" >&2
  mkdir -p "$out"
  timed "/tmp/make_real_$v.time" "$PY" scripts/build_tts_checkpoint.py --variant "$v" --size real --out "$out"
  rm -rf "$out/speech_tokenizer"
  if [ -n "$ST" ]; then
    cp -r "$ST" "$out/speech_tokenizer"
  elif [ -f scripts/build_speech_tokenizer.py ]; then
    echo "[make_real_checkpoints] speech tokenizer (real size) -> $out/speech_tokenizer" >&2
    timed /tmp/make_real_speech_tokenizer.time "$PY" scripts/build_speech_tokenizer.py --size real \
      --out "$out/speech_tokenizer"
    ST="$out/speech_tokenizer"
  else
    echo "[make_real_checkpoints] WARNING: no scripts/build_speech_tokenizer.py; $out/speech_tokenizer missing" >&2
  fi
  du -sh "$out" >&2
done
