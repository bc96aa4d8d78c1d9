#!/usr/bin/env bash
# Benchmarks, side by side with upstream host-local (Debian's build): ADD/CHECK/DEL latency
# at 0, 110, 10,000 and 60,000 leases, a reboot storm of 110 concurrent ADDs, STATUS,
# start-up, binary size and peak RSS. Writes docs/benchmarks.md.
#
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    0 and 110 leases, few rounds (what CI runs); prints only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_deps

quick=0
[ "${1:-}" = "--quick" ] && quick=1
cargo build --release --quiet --bins
export BENCH_OURS="$PWD/target/release/host-local" BENCH_UPSTREAM=/usr/lib/cni/host-local
if [ "$quick" -eq 1 ]; then
  BENCH_QUICK=1 BENCH_LEASES=0,110 cargo bench --quiet -p host-local --bench cni_latency
  exit 0
fi
report=$(BENCH_LEASES=0,110,10000,60000 cargo bench --quiet -p host-local --bench cni_latency)
mkdir -p docs
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d): $(nproc) CPUs, kernel $(uname -r),"
  echo "$(df -T /tmp | awk 'NR==2 {print $2}') under /tmp. One process per call, as runtimes make them; medians; upstream"
  echo "is Debian's containernetworking-plugins $(dpkg-query -W -f='${Version}' containernetworking-plugins)."
  echo "Stores are pre-filled with N leases; each round is ADD, CHECK, DEL, and a repeated DEL of the"
  echo "same container, and the two plugins alternate round by round. Peak RSS is the plugin's own"
  echo "VmHWM, read under ptrace at its exit (wait4's ru_maxrss would include the spawning process)."
  echo
  echo "$report"
} > docs/benchmarks.md
cat docs/benchmarks.md
