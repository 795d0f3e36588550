#!/usr/bin/env bash
# Create the Python oracle venv (official qwen-tts package on CPU; pins and install order in
# scripts/requirements-oracle.txt and below, why an oracle: docs/architecture.md).
# Usage: scripts/setup_oracle.sh      (venv at ${QWEN3_TTS_ORACLE_VENV:-<repo>/.venv-oracle})
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QWEN3_TTS_ORACLE_VENV:-$REPO/.venv-oracle}"
REQ="$REPO/scripts/requirements-oracle.txt"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install "pip==26.3"
# 1) torch pinned first (unpinned, qwen-tts would resolve a torch newer than torchaudio 2.11).
$PIP install "$(grep -E '^torch==' "$REQ")" "$(grep -E '^torchaudio==' "$REQ")"
# 2) the official package without its declared deps (skips the gradio demo stack).
$PIP install --no-deps "$(grep -E '^qwen-tts==' "$REQ")"
# 3) everything else, exact pins (qwen-tts line excluded: it must stay --no-deps).
grep -vE '^(qwen-tts==|#|$)' "$REQ" > "$VENV/.req-rest.txt"
$PIP install -r "$VENV/.req-rest.txt"
"$VENV/bin/python" -c "import qwen_tts, torch, transformers; print('oracle venv ok: torch', torch.__version__, 'transformers', transformers.__version__)"
touch "$VENV/.ready"
