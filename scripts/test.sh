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
for bin in target/x86_64-unknown-linux-gnu/release/{host-local,delegated-ipam,cnitool}; do
  file "$bin" | grep -q "static" || { echo "$bin is not statically linked" >&2; exit 1; }
done

echo "==> Go test programs on Go libcni, CRI client"
build_go_drivers
export GOCNITOOL="$PWD/target/go/gocnitool" CILIUM_EMULATOR="$PWD/target/go/cilium-emulator"
build_e2e_venv
export E2E_PYTHON="$PWD/target/e2e/venv/bin/python"

echo "==> benchmark smoke run (full run: scripts/bench.sh)"
scripts/bench.sh --quick

echo "==> fuzzing, ${CI_FUZZ_SECONDS:-15}s per target (long run: FUZZ_SECONDS=3600 scripts/fuzz.sh)"
fuzz_status=0
FUZZ_SECONDS="${CI_FUZZ_SECONDS:-15}" FUZZ_SANITIZER=none scripts/fuzz.sh || fuzz_status=$?

echo "==> tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one "test result" per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log" || status=1
[ "$fuzz_status" -eq 0 ] || status=1  # its crashes were reported above
exit "$status"
