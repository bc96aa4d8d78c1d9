#!/usr/bin/env bash
# Installs every dependency, builds, and runs all tests: unit, golden, differential and
# end-to-end (network namespaces, upstream plugins, Go libcni). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_deps

echo "==> release build (static binaries)"
cargo build --release --workspace --bins
for bin in host-local delegated-ipam cnitool; do
  file "target/release/$bin" | grep -q "static" || { echo "target/release/$bin is not statically linked" >&2; exit 1; }
done

echo "==> Go libcni driver"
build_go_driver
export GOCNITOOL="$PWD/target/go/gocnitool"

echo "==> tests"
cargo test --workspace --release -- --include-ignored
