#!/usr/bin/env bash
# Benchmarks, side by side with upstream host-local (Debian's build) and with the physical
# floor measured in the same run: ADD/CHECK/DEL latency at 0, 110, 10,000 and 60,000 leases
# and on stores of 110 pods started through each plugin,
# a reboot storm of 110 concurrent ADDs, STATUS, start-up, binary size and peak RSS, and the
# goals (ratios to the floor and to upstream), each marked met or missed. Writes
# docs/benchmarks.md. The floor programs are built from plugins/host-local/benches/floor_*.c
# (gcc -O2 -static, into target/tmp/bench-floor) by the bench itself.
#
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    0 and 110 leases and 110 pods, fewer rounds, the same goals but the
#                               10,000-lease one (what CI runs); prints only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_deps

quick=0
[ "${1:-}" = "--quick" ] && quick=1
cargo build --release --quiet --bins
# A run deletes its stores (some 180,000 files) when it ends. ext4 without a journal reuses
# no inode within 60 s of its deletion (360 s while its inode table block is not yet
# written back: RECENTCY_MIN and RECENTCY_DIRTY in fs/ext4/ialloc.c), and every file
# creation scans past each such inode from the start of its block group: a run started
# within that time would pay for those deletions in every creation it times (the floor's
# one file, ours one or two). So a run ends by writing its deletions back (sync), and the
# next one waits until they are 61 s old.
ended=target/tmp/bench-ended
if [ -f "$ended" ]; then
  wait=$(( $(stat -c %Y "$ended") + 61 - $(date +%s) ))
  if [ "$wait" -gt 0 ]; then
    echo "bench: waiting ${wait}s for the previous run's deleted files to age out" >&2
    sleep "$wait"
  fi
fi
mkdir -p target/tmp
trap 'sync -f /tmp; touch "$ended"' EXIT
export BENCH_OURS="$PWD/target/x86_64-unknown-linux-gnu/release/host-local" BENCH_UPSTREAM=/usr/lib/cni/host-local
if [ "$quick" -eq 1 ]; then
  BENCH_QUICK=1 BENCH_LEASES=0,110,110p cargo bench --quiet -p host-local --bench cni_latency
  exit 0
fi
report=$(BENCH_LEASES=0,110,110p,10000,60000 cargo bench --quiet -p host-local --bench cni_latency)
fs=$(df -T /tmp | awk 'NR==2 {print $2}')
if [ "$fs" = ext4 ]; then
  # The store syncs more on an ext4 without a journal (README "Durability and the store").
  dev=$(findmnt -n -o MAJ:MIN -T /tmp | tr -d ' ')
  if [ -e "/proc/fs/jbd2/$(basename "$(readlink "/sys/dev/block/$dev")")-8" ]; then
    fs="ext4 (with its journal)"
  else
    fs="ext4 without a journal (replacements synced before their rename, the directory after naming)"
  fi
fi
mkdir -p docs
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d): $(nproc) CPUs, kernel $(uname -r),"
  echo "$fs under /tmp. One process per call, as runtimes make them; medians; upstream"
  echo "is Debian's containernetworking-plugins $(dpkg-query -W -f='${Version}' containernetworking-plugins)."
  echo "Each round is ADD, CHECK, DEL and a repeated DEL of one"
  echo "container, then ADD and DEL of a pod's sandbox with"
  echo "\`CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p\` (the same pod every round: ours"
  echo "holds its address at DEL and hands it back at the next ADD), and last the first ADD of a new pod"
  echo "(\`K8S_POD_NAME=new-<round>\`: ours writes a new lease and a new pod record), removed again by an"
  echo "untimed DEL without pod arguments. The stores \"@ N leases\" hold N lease files written in"
  echo "upstream's format, the same for both; the stores \"@ 110 pods\" are each plugin's own after 110"
  echo "pods were started through it with the arguments containerd passes (ours then keeps a pod record"
  echo "and an index line per pod, as on a node), and their ratios are given in a table of their own."
  echo "Peak RSS is the plugin's own"
  echo "VmHWM, read under ptrace at its exit (wait4's ru_maxrss would include the spawning process)."
  echo
  echo "**The physical floor** is measured in the same rounds: two static C programs (\`gcc -O2 -static\`,"
  echo "\`plugins/host-local/benches/floor_*.c\`), spawned exactly as the plugins are (same environment,"
  echo "configuration on a stdin pipe, output to /dev/null). *floor-start* exits at once: no call can"
  echo "beat a process start, and CHECK, which only reads, is compared with it. *floor-durable-create*"
  echo "creates one new 40-byte file (\`open(O_CREAT|O_EXCL)\`, \`write\`, \`fdatasync\`, \`fsync\` of the"
  echo "directory) in a directory beside the stores holding as many files, on the same filesystem:"
  echo "the least a call that must record a change durably (ADD, DEL) can cost. Upstream, ours and"
  echo "the two floor programs take turns at every call of a round, their order rotating turn by"
  echo "turn and none running twice in a row: drift in the machine's speed reaches all of them"
  echo "alike, and none finds the CPU's caches warm from its own last call. The goals compare medians."
  echo
  echo "$report"
} > docs/benchmarks.md
cat docs/benchmarks.md
