#!/usr/bin/env bash
# Mesa 25.0.7's lavapipe (the software Vulkan device the device tests run on), from bookworm-backports,
# unpacked into a private prefix: nothing is installed over the system's Mesa. Prints the environment to
# use it with, for `eval`:
#
#   eval "$(scripts/lavapipe.sh)"        # prefix: target/lavapipe (PREFIX=… to change)
#   GGML_VK_VISIBLE_DEVICES=0 cargo test -p qwen3-tts-tests --features vulkan --test device
#
# Why not bookworm's Mesa 22.3.6: its lavapipe reads freed memory in its own worker thread (valgrind:
# inside libvulkan_lvp.so and libLLVM-15) and crashes the talker's graphs every time, other graphs now and
# then. 25.0.7 runs them all; it compiles shaders more slowly, so keep Mesa's shader cache
# (~/.cache/mesa_shader_cache*) between runs. Needs bookworm's mesa-vulkan-drivers installed for the
# libraries it links (scripts/vulkan_sdk.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-$PWD/target/lavapipe}
POOL=http://deb.debian.org/debian/pool/main
# package path in the pool, SHA-256
DEBS=(
    "m/mesa/mesa-vulkan-drivers_25.0.7-2~bpo12+1_amd64.deb 3899f1800424c60a05df5d6913076a526ca8fdbabec43672cd397563d1ca3263"
    "libd/libdrm/libdrm2_2.4.123-1~bpo12+1_amd64.deb 9cc2f341964286295124a32d3625edb76730500625e54a1e682761f883064d7b"
    "libd/libdrm/libdrm-amdgpu1_2.4.123-1~bpo12+1_amd64.deb 334e2ae389af0e9cb607c2ccfbbf7ae9feb34131ff998550baeffeeae6cda296"
)
LIB=$PREFIX/usr/lib/x86_64-linux-gnu
if [ ! -f "$LIB/libvulkan_lvp.so" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for entry in "${DEBS[@]}"; do
        read -r path sha <<<"$entry"
        deb=$tmp/$(basename "$path")
        curl -fsSL -o "$deb" "$POOL/$path" >&2
        echo "$sha  $deb" | sha256sum -c --quiet >&2
        dpkg-deb -x "$deb" "$PREFIX"
    done
fi
# The package's manifest names the library without a path: point it at this prefix.
sed "s#\"library_path\": \"[^\"]*\"#\"library_path\": \"$LIB/libvulkan_lvp.so\"#" \
    "$PREFIX/usr/share/vulkan/icd.d/lvp_icd.json" >"$PREFIX/lvp_icd.json"
echo "export VK_ICD_FILENAMES=$PREFIX/lvp_icd.json"
echo "export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
