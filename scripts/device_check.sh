#!/usr/bin/env bash
# GPU figures on a machine that has a GPU but no Rust toolchain and no Python model stack: everything is
# built here, carried there (one archive, ~25 MB), and the real-size random model files are made there.
#
#   scripts/device_check.sh pack     # here: build with --features vulkan, the real-size files' skeletons,
#                                    # this CPU's figures (same benches) -> target/device-check/ and
#                                    # its archive target/device-check.tar.xz (what is carried)
#   scripts/device_check.sh run      # there, in a checkout with target/device-check.tar.xz:
#                                    # random real-size files, the parity tests on the device, the
#                                    # benches on the device, one table (GPU vs the CPU of `pack`)
#
# `pack` needs models/convert-0.6B-Base/{tts-q8_0,tokenizer-f16}.gguf (scripts/make_real_checkpoints.sh,
# then qwen3-tts-convert; see docs/benchmarks.md) — only their headers and per-tensor statistics travel
# (`random_gguf skeleton`); `run` draws tensors of the same shapes, types and statistics (`random_gguf
# fill`, ~30 s). The parity tests are tests/tests/device.rs (tiny fixtures from the checkout, tolerances
# against the CPU's F32 path) with GGML_VK_DISABLE_F16=1, as in CI; the benches run with ggml's defaults,
# as users get them.
#
# Environment: DEVICE (run; default vulkan:0), THREADS (CPU threads; default 2 for pack, 4 for run),
# FRAMES, STREAM_FRAMES, BATCH_FRAMES (frames per bench_e2e / bench_stream / bench_batch run; default
# 100, 50, 60), WORK (run: where model files go; default /tmp/device-check), STEP_TIMEOUT (s, per
# step; default 240). The Vulkan loader is carried in case the machine lacks one; where the NVIDIA driver
# is present without a Vulkan ICD file, one is written for its libGLX_nvidia.so.0.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PACK=$REPO/target/device-check
ARCHIVE=$REPO/target/device-check.tar.xz
FRAMES=${FRAMES:-100}               # bench_e2e
STREAM_FRAMES=${STREAM_FRAMES:-50}  # bench_stream
BATCH_FRAMES=${BATCH_FRAMES:-60}    # bench_batch
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
REF=tests/fixtures/audio/ref_24k.wav
REF_TEXT="Okay. Yeah. I resent you. I love you."

log() { echo "[device_check $(date +%T)] $*" >&2; }

# benches BIN_DIR TTS TOKENIZER DEVICE THREADS OUT_DIR: the figures of the table, one JSON file each.
benches() {
    local bin=$1 tts=$2 tok=$3 dev=$4 thr=$5 out=$6
    mkdir -p "$out"
    local common=(--tts "$tts" --tokenizer "$tok" --threads "$thr" --device "$dev")
    step "$out/e2e-xvec.json" "$bin/bench_e2e" "${common[@]}" --mode xvec --frames "$FRAMES" --runs 2 \
        --ref-audio "$REF"
    step "$out/e2e-icl.json" "$bin/bench_e2e" "${common[@]}" --mode icl --frames "$FRAMES" --runs 2 \
        --ref-audio "$REF" --ref-text "$REF_TEXT"
    step "$out/stream-xvec.json" "$bin/bench_stream" "${common[@]}" --frames "$STREAM_FRAMES" --runs 3 --ref-audio "$REF"
    step "$out/stream-icl.json" "$bin/bench_stream" "${common[@]}" --frames "$STREAM_FRAMES" --runs 3 --ref-audio "$REF" \
        --ref-text "$REF_TEXT"
    for n in 1 8; do
        step "$out/batch-$n.json" "$bin/bench_batch" "${common[@]}" --streams "$n" --frames "$BATCH_FRAMES" \
            --ref-audio "$REF"
    done
}

# step OUT_JSON CMD...: runs CMD under STEP_TIMEOUT, keeps its last stdout line (the JSON) and its log.
step() {
    local out=$1; shift
    log "$(basename "$out" .json): $(basename "$1")"
    if timeout "$STEP_TIMEOUT" "$@" >"$out.out" 2>"$out.log"; then
        tail -n 1 "$out.out" >"$out"
    else
        log "  failed or timed out (rc $?): tail of $out.log:"
        tail -n 5 "$out.log" >&2 || true
        rm -f "$out"
    fi
}

pack() {
    local models=${MODELS:-models/convert-0.6B-Base}
    for f in tts-q8_0.gguf tokenizer-f16.gguf; do
        [ -f "$models/$f" ] || { echo "no $models/$f: make the real-size random files first" \
            "(scripts/make_real_checkpoints.sh, then qwen3-tts-convert -q q8_0; docs/benchmarks.md)" >&2; exit 1; }
    done
    export VULKAN_SDK=${VULKAN_SDK:-$(scripts/vulkan_sdk.sh)}
    export CARGO_TARGET_DIR=$REPO/target/vulkan
    log "building (--features vulkan, release)"
    local examples=(--example bench_e2e --example bench_stream --example bench_batch --example random_gguf)
    cargo build --release --locked -q -p qwen3-tts-tests --features vulkan "${examples[@]}"
    local test_bin
    test_bin=$(cargo test --release --locked -q -p qwen3-tts-tests --features vulkan --test device \
        --no-run --message-format=json | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
    [ -x "$test_bin" ] || { echo "no device test binary" >&2; exit 1; }
    rm -rf "$PACK"
    mkdir -p "$PACK/bin" "$PACK/lib" "$PACK/lib-compat" "$PACK/skel"
    for e in bench_e2e bench_stream bench_batch random_gguf; do
        cp "$CARGO_TARGET_DIR/release/examples/$e" "$PACK/bin/"
    done
    cp "$test_bin" "$PACK/bin/device_tests"
    strip "$PACK"/bin/*
    cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$PACK/lib/"
    # GLIBCXX_3.4.30 (GCC 12's): for an older system's libstdc++ only.
    cp -L /usr/lib/x86_64-linux-gnu/libstdc++.so.6 "$PACK/lib-compat/"
    log "skeletons of $models"
    "$PACK/bin/random_gguf" skeleton "$models/tts-q8_0.gguf" "$PACK/skel/tts-q8_0.skel"
    "$PACK/bin/random_gguf" skeleton "$models/tokenizer-f16.gguf" "$PACK/skel/tokenizer-f16.skel"
    # This CPU's column, from the same random files the GPU will get (same seed).
    local work=${WORK:-/tmp/device-check-cpu}
    mkdir -p "$work"
    "$PACK/bin/random_gguf" fill "$PACK/skel/tts-q8_0.skel" "$work/tts-q8_0.gguf"
    "$PACK/bin/random_gguf" fill "$PACK/skel/tokenizer-f16.skel" "$work/tokenizer-f16.gguf"
    log "this CPU's figures ($(nproc) cores, THREADS=${THREADS:-2}, load: $(cut -d' ' -f1-3 /proc/loadavg))"
    benches "$PACK/bin" "$work/tts-q8_0.gguf" "$work/tokenizer-f16.gguf" cpu "${THREADS:-2}" "$PACK/cpu"
    lscpu | sed -n 's/^Model name: *//p' | head -n 1 >"$PACK/cpu/name.txt"
    rm -rf "$work"
    tar -C "$REPO/target" -cf - device-check | xz -T0 -6 >"$ARCHIVE"
    du -sh "$ARCHIVE" >&2
    log "packed: carry target/device-check.tar.xz, then run scripts/device_check.sh run"
}

# Makes the Vulkan loader find a driver: the carried loader where the system has none, an ICD file for
# the NVIDIA driver where it ships the library without one.
vulkan_env() {
    # (grep without -q: with pipefail, an early exit of grep fails the pipe.)
    if ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1 ' >/dev/null; then
        export LD_LIBRARY_PATH=$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        log "no system Vulkan loader: using the carried one"
    fi
    if [ -z "${VK_ICD_FILENAMES:-}" ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json \
        >/dev/null 2>&1; then
        local glx
        glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0 / {print $NF; exit}')
        if [ -n "$glx" ]; then
            mkdir -p "$WORK/icd"
            printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' \
                "$glx" >"$WORK/icd/nvidia_icd.json"
            export VK_ICD_FILENAMES=$WORK/icd/nvidia_icd.json
            log "no Vulkan ICD file: wrote one for $glx"
        else
            log "no Vulkan ICD file and no libGLX_nvidia.so.0: the Vulkan device may not be found"
        fi
    fi
}

run() {
    if [ ! -x "$PACK/bin/bench_e2e" ]; then
        [ -f "$ARCHIVE" ] || { echo "no $ARCHIVE: run 'scripts/device_check.sh pack' first and carry it" >&2; exit 1; }
        xz -dc "$ARCHIVE" | tar -C "$REPO/target" -xf -
    fi
    if ldd "$PACK/bin/bench_e2e" 2>&1 | grep 'GLIBCXX.*not found' >/dev/null; then
        export LD_LIBRARY_PATH=$PACK/lib-compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        log "old system libstdc++: using the carried one"
    fi
    WORK=${WORK:-/tmp/device-check}
    local dev=${DEVICE:-vulkan:0} thr=${THREADS:-4}
    mkdir -p "$WORK"
    vulkan_env
    command -v nvidia-smi >/dev/null && nvidia-smi -L >&2 || true
    log "random real-size files -> $WORK"
    "$PACK/bin/random_gguf" fill "$PACK/skel/tts-q8_0.skel" "$WORK/tts-q8_0.gguf" &
    "$PACK/bin/random_gguf" fill "$PACK/skel/tokenizer-f16.skel" "$WORK/tokenizer-f16.gguf"
    wait
    local res=$WORK/$dev
    mkdir -p "$res"
    log "parity tests on $dev (tiny fixtures; GGML_VK_DISABLE_F16=1 as in CI)"
    local parity=failed
    if QWEN3_TTS_FIXTURES=$REPO/tests/fixtures QWEN3_TTS_TEST_DEVICE=$dev GGML_VK_DISABLE_F16=1 \
        timeout "$STEP_TIMEOUT" "$PACK/bin/device_tests" --test-threads=1 --nocapture >"$res/parity.log" 2>&1; then
        parity=passed
    fi
    grep -E '^test |SNR|cosine|picks|result' "$res/parity.log" | tail -n 30 >&2 || true
    echo "$parity" >"$res/parity.txt"
    log "benches on $dev (THREADS=$thr)"
    benches "$PACK/bin" "$WORK/tts-q8_0.gguf" "$WORK/tokenizer-f16.gguf" "$dev" "$thr" "$res"
    if command -v python3 >/dev/null; then
        python3 scripts/device_table.py "$PACK/cpu" "$res"
    else
        log "no python3: the raw figures"
        for f in "$PACK"/cpu/*.json "$res"/*.json; do echo "$f: $(cat "$f")"; done
    fi
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    *) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
