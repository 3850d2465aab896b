#!/usr/bin/env bash
# Builds every example plugin from source into payload-plugins/build/. Idempotent and incremental; the tests run
# it. Needs: rustup (adds the wasm32-wasip2 target) and, for the C example, clang-14 and lld-14 (Debian), which
# tests/run.sh installs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
mkdir -p "$out"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# Rust plugins: wasm32-wasip2 with wit-bindgen gives components directly. The target folder is named, so a
# CARGO_TARGET_DIR set for plateau's own build does not move the plugins away from where they are copied from.
cargo build --quiet --release --locked --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" --target-dir "$here/target"
for name in tabular kserve_v2 llm_chat image_classification minimal_rust sandbox_probe; do
    cp "$here/target/wasm32-wasip2/release/$name.wasm" "$out/${name//_/-}.wasm"
done

# C: a freestanding core module exporting the canonical ABI; plateau wraps it into a component when it loads it.
clang="$(command -v clang-14 || command -v clang || true)"
if [ -z "$clang" ]; then
    echo "build.sh: clang-14 is missing (apt-get install clang-14 lld-14)" >&2
    exit 1
fi
"$clang" --target=wasm32 -O2 -mbulk-memory -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--strip-all \
    -o "$out/minimal-c.wasm" "$here/minimal-c/plugin.c"
echo "plugins built in $out"
