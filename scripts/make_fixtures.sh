#!/usr/bin/env bash
# Regenerate every committed test fixture under tests/fixtures deterministically, then write
# tests/fixtures/SHA256SUMS. Needs the oracle venv (scripts/setup_oracle.sh). CPU only, ~15 min here.
#
#   scripts/make_fixtures.sh            # everything
#   SKIP_CODEC=1 scripts/make_fixtures.sh   # talker side only (keeps existing codec and e2e dumps)
#   SUMS_ONLY=1 scripts/make_fixtures.sh    # only rewrite SHA256SUMS (e.g. after editing README.md)
#
# Inputs that are NOT regenerated (committed as-is): tests/fixtures/audio/*.wav (espeak-ng speech).
# Also needed: the released configuration files of the family (JSON only, no weights), in the Hugging Face
# layout, in $QWEN3_TTS_CONFIGS (default: models/configs, git-ignored):
#   Qwen3-TTS-12Hz-<variant>/{config,generation_config,tokenizer_config,preprocessor_config,configuration}.json
#                                 for the five variants below
#   Qwen3-TTS-Tokenizer-12Hz/{config,preprocessor_config,configuration}.json
#                                 (the speech_tokenizer/ folder of any checkpoint: identical in all)
#   vocab.json, merges.txt        (the text-tokenizer files, identical in every checkpoint)
# To make it: hf download Qwen/Qwen3-TTS-12Hz-$V --include '*.json' merges.txt --local-dir
#   models/configs/Qwen3-TTS-12Hz-$V for each variant V, then copy vocab.json and merges.txt of one of them
#   to models/configs/ and its speech_tokenizer/ folder to models/configs/Qwen3-TTS-Tokenizer-12Hz/.
# Order: tokenizer files -> tiny speech tokenizer (scripts/build_speech_tokenizer.py) -> five tiny
# main checkpoints -> tokenizer cases -> talker dumps -> codec dumps (scripts/dump_codec.py, scripts/dump_icl_cut.py)
# -> e2e dumps (scripts/dump_e2e.py) -> SHA256SUMS.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QWEN3_TTS_ORACLE_VENV:-$REPO/.venv-oracle}"
PY="$VENV/bin/python"
CONFIGS="${QWEN3_TTS_CONFIGS:-$REPO/models/configs}"
export QWEN3_TTS_CONFIGS="$CONFIGS"   # read by build_tts_checkpoint.py / build_speech_tokenizer.py too
FX="$REPO/tests/fixtures"
VARIANTS=(0.6B-Base 0.6B-CustomVoice 1.7B-Base 1.7B-CustomVoice 1.7B-VoiceDesign)
export PYTHONHASHSEED=0 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" TOKENIZERS_PARALLELISM=false
cd "$REPO"

[ -x "$PY" ] || { echo "no oracle venv at $VENV (run scripts/setup_oracle.sh)" >&2; exit 1; }
log() { echo "[make_fixtures $(date +%T)] $*" >&2; }

write_sums() {  # every regular file and file symlink (hashed through the link), sorted, relative paths
  (
    cd "$FX"
    find . \( -type f -o -type l \) ! -name SHA256SUMS -print | sed 's|^\./||' | LC_ALL=C sort | while read -r p; do
      [ -d "$p" ] && continue   # directory symlinks (speech_tokenizer) are covered by their target
      sha256sum "$p"
    done > SHA256SUMS
  )
}
if [ -n "${SUMS_ONLY:-}" ]; then write_sums; log "SHA256SUMS only ($(wc -l < "$FX/SHA256SUMS") files)"; exit 0; fi

[ -f "$CONFIGS/vocab.json" ] && [ -f "$CONFIGS/merges.txt" ] || {
  echo "no released config files at $CONFIGS (set QWEN3_TTS_CONFIGS; layout in this script's header)" >&2; exit 1; }

# 1) tokenizer files (one copy; checkpoints link to them)
mkdir -p "$FX/tokenizer"
cp "$CONFIGS/vocab.json" "$CONFIGS/merges.txt" "$FX/tokenizer/"
chmod 644 "$FX/tokenizer/"*

# 2) tiny speech tokenizer (helper B's builder)
if [ -f scripts/build_speech_tokenizer.py ] && [ -z "${SKIP_CODEC:-}" ]; then
  log "tiny speech tokenizer"
  rm -rf "$FX/tiny-speech-tokenizer"
  "$PY" scripts/build_speech_tokenizer.py --size tiny --out "$FX/tiny-speech-tokenizer"
fi

# 3) tiny main checkpoints (HF layout; vocab/merges and speech_tokenizer as relative symlinks)
for v in "${VARIANTS[@]}"; do
  d="$FX/tiny-$v"
  log "tiny checkpoint $v"
  rm -rf "$d"
  "$PY" scripts/build_tts_checkpoint.py --variant "$v" --size tiny --out "$d" --tokenizer-links ../tokenizer
  ln -s ../tiny-speech-tokenizer "$d/speech_tokenizer"
  chmod 644 "$d"/*.json "$d/model.safetensors"
done

# 4) tokenizer cases (genuine Qwen2 regex vs the package's processor)
log "tokenizer cases"
"$PY" scripts/dump_tokenizer_cases.py --tokenizer-dir "$FX/tokenizer" --package-dir "$FX/tiny-0.6B-Base" \
  --out "$FX/reference/tokenizer_cases.json"

# 5) talker / code predictor / speaker encoder dumps (two variants at a time)
if [ ! -f "$FX/tiny-speech-tokenizer/model.safetensors" ]; then
  echo "tests/fixtures/tiny-speech-tokenizer missing: the package cannot load a checkpoint without it" >&2
  exit 1
fi
rm -rf "$FX/reference/talker"
pids=()
run_dump() {
  local v="$1"
  "$PY" scripts/dump_talker.py --model-dir "$FX/tiny-$v" --variant "$v" --out-dir "$FX/reference/talker/$v" \
    --threads 1 > "/tmp/make_fixtures_talker_$v.log" 2>&1 || { cat "/tmp/make_fixtures_talker_$v.log" >&2; return 1; }
  grep '^\[dump_talker\]' "/tmp/make_fixtures_talker_$v.log" >&2 || true
}
log "talker dumps"
for pair in "0.6B-Base 1.7B-Base" "0.6B-CustomVoice 1.7B-CustomVoice" "1.7B-VoiceDesign"; do
  pids=()
  for v in $pair; do run_dump "$v" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
done
find "$FX/reference/talker" -type f -exec chmod 644 {} +

# 6) codec dumps (helper B)
if [ -f scripts/dump_codec.py ] && [ -z "${SKIP_CODEC:-}" ]; then
  log "codec dumps"
  "$PY" scripts/dump_codec.py
  "$PY" scripts/dump_icl_cut.py --threads 1   # ICL decode of concat(ref, frames) + cut (needs talker icl dump)
  "$PY" scripts/dump_mel64.py                 # speaker-encoder log-mel in float64 (needs encode_ref)
fi

# 7) end-to-end dumps: public API codes + returned waveform (needs the talker dumps and the tiny speech
#    tokenizer; skipped with SKIP_CODEC, which keeps the existing ones)
if [ -z "${SKIP_CODEC:-}" ]; then
  log "e2e dumps"
  rm -rf "$FX/reference/e2e"
  "$PY" scripts/dump_e2e.py --threads 1
fi

# 8) checksums
log "SHA256SUMS"
write_sums
log "done: $(du -sh "$FX" | cut -f1) in tests/fixtures ($(wc -l < "$FX/SHA256SUMS") files)"
