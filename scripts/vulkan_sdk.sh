#!/usr/bin/env bash
# Prepares what `--features vulkan` needs on Debian 12 (bookworm) and prints the VULKAN_SDK to build with:
#   - from bookworm: the shader compiler (glslc), SPIR-V headers, the Vulkan loader and Mesa's Vulkan
#     drivers (lavapipe, the software device the tests run on);
#   - Debian 13's Vulkan headers (libvulkan-dev 1.4.309), unpacked into a private prefix: bookworm's
#     1.3.239 headers are too old for the ggml we build (vk::LayerSettingEXT is missing). Nothing is
#     installed over the system's files; the package is checked against its SHA-256.
#
#   export VULKAN_SDK=$(scripts/vulkan_sdk.sh)          # prefix: target/vulkan-sdk (PREFIX=… to change)
#   cargo build --release --features vulkan
#   GGML_VK_VISIBLE_DEVICES=0 target/release/qwen3-tts-run --list-devices   # lavapipe is listed only so
#
# Other systems: install the Vulkan SDK (https://vulkan.lunarg.com) or your distribution's Vulkan headers
# (≥ 1.3.275) and glslc, and set VULKAN_SDK if CMake does not find them.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-$PWD/target/vulkan-sdk}
DEB=libvulkan-dev_1.4.309.0-1_amd64.deb
SHA256=8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
URL=http://deb.debian.org/debian/pool/main/v/vulkan-loader/$DEB

need=()
command -v glslc >/dev/null || need+=(glslc)
[ -d /usr/include/spirv ] || need+=(spirv-headers)
ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 >/dev/null 2>&1 || need+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
command -v curl >/dev/null || need+=(curl ca-certificates)
if ((${#need[@]})); then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi

if [ ! -f "$PREFIX/usr/include/vulkan/vulkan.hpp" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL -o "$tmp/$DEB" "$URL" >&2
    echo "$SHA256  $tmp/$DEB" | sha256sum -c --quiet >&2
    mkdir -p "$PREFIX"
    dpkg-deb -x "$tmp/$DEB" "$PREFIX"
fi
# FindVulkan looks under $VULKAN_SDK for include/, lib/libvulkan.so and bin/glslc.
mkdir -p "$PREFIX/usr/lib" "$PREFIX/usr/bin"
ln -sf /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$PREFIX/usr/lib/libvulkan.so"
ln -sf "$(command -v glslc)" "$PREFIX/usr/bin/glslc"
echo "$PREFIX/usr"
