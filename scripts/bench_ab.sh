#!/usr/bin/env bash
# Same-run A/B of this checkout against an earlier commit: both builds' bench_e2e on the same files,
# interleaved so that machine noise hits both alike (old then new in odd rounds, new then old in even
# ones: which goes first is not always the same), then one table of medians. For "no regression"
# checks of a change that should not move the numbers.
#
#   scripts/bench_ab.sh REV            # e.g. scripts/bench_ab.sh 90e8fed
#
# Needs models/convert-<MODEL>/tts-<type>.gguf + tokenizer-f16.gguf and models/bench/ref_4s.wav, as
# scripts/bench.sh leaves them. Knobs: MODEL (0.6B-Base), TYPES ("q8_0 q4_k"), MODES ("xvec icl"),
# THREADS (2), FRAMES (50), RUNS (3 per invocation), ROUNDS (2), OUT (models/bench/ab-<rev>.jsonl).
# REV is built in a temporary git worktree into target/bench-ab/ (kept for the next call).
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench_ab.sh REV}
MODEL=${MODEL:-0.6B-Base}
TYPES=${TYPES:-"q8_0 q4_k"}
MODES=${MODES:-"xvec icl"}
THREADS=${THREADS:-2}
FRAMES=${FRAMES:-50}
RUNS=${RUNS:-3}
ROUNDS=${ROUNDS:-2}
sha=$(git rev-parse --short "$REV")
OUT=${OUT:-models/bench/ab-$sha.jsonl}
dir=models/convert-$MODEL
clip=models/bench/ref_4s.wav
for f in "$clip" "$dir/tokenizer-f16.gguf"; do
    [ -f "$f" ] || { echo "error: $f missing (run scripts/bench.sh first)" >&2; exit 1; }
done

old_target=$PWD/target/bench-ab
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$tree" "$sha" >/dev/null
(cd "$tree" && CARGO_TARGET_DIR=$old_target cargo build --release --locked -q -p qwen3-tts-tests --example bench_e2e)
cargo build --release --locked -q -p qwen3-tts-tests --example bench_e2e
OLD=$old_target/release/examples/bench_e2e
NEW=target/release/examples/bench_e2e

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for round in $(seq "$ROUNDS"); do
    for t in $TYPES; do
        for mode in $MODES; do
            order="old new"; [ $((round % 2)) = 0 ] && order="new old"
            for which in $order; do
                bin=$OLD; [ "$which" = new ] && bin=$NEW
                echo "== round $round: $which $t $mode" >&2
                "$bin" --tts "$dir/tts-$t.gguf" --tokenizer "$dir/tokenizer-f16.gguf" --mode "$mode" \
                    --frames "$FRAMES" --threads "$THREADS" --runs "$RUNS" --ref-audio "$clip" \
                    --ref-text "Okay. Yeah. I resent you. I love you." \
                    --text "Hello there, this is a benchmark of the speech engine, reading a fixed sentence." |
                    python3 -c "import sys, json; d = json.load(sys.stdin); d['which'] = '$which'; print(json.dumps(d))" \
                        >> "$OUT"
            done
        done
    done
done

python3 - "$OUT" "$sha" <<'EOF'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["talker_ms_per_frame", "cp_ms_per_frame", "talker_cp_ms_per_frame", "vocoder_ms_per_audio_s",
        "prefill_ms", "first_frame_ms", "rtf", "rtf_with_load"]
groups = collections.defaultdict(list)
for r in rows:
    ty = r["tts"].rsplit("tts-", 1)[-1].removesuffix(".gguf")
    groups[(ty, r["mode"], r["which"])].append(r)
print(f"old = {sys.argv[2]}, new = this checkout; the best of the rounds' medians\n")
print("| type | mode | code | " + " | ".join(keys) + " | peak RSS MB |")
print("|" + "---|" * 3 + "---:|" * (len(keys) + 1))
for k in sorted(groups):
    rs = groups[k]
    vals = [min(x["metrics"][m]["median"] for x in rs) for m in keys]
    cells = " | ".join(f"{v:.1f}" if v > 10 else f"{v:.2f}" for v in vals)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {cells} | {max(x['peak_rss_mb'] for x in rs):.0f} |")
EOF
