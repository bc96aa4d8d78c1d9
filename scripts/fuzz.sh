#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of every parser and of the whole store:
# the targets in fuzz/fuzz_targets/, seeded from fuzz/corpus/<target>/ with fuzz/cni.dict.
#
#   scripts/fuzz.sh                          every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz.sh store_dir index          only these targets
#   FUZZ_SECONDS=3600 scripts/fuzz.sh        the long run: an hour per target
#   FUZZ_JOBS=1 scripts/fuzz.sh              one target at a time (default: one per core)
#   FUZZ_SANITIZER=none scripts/fuzz.sh      no ASan: faster build and runs (CI uses this)
#
# Reproduce a crash:  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <artifact>
# Minimise it:        RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz <target> <artifact>
#
# Runs on stable Rust: RUSTC_BOOTSTRAP=1 unlocks the nightly flags cargo-fuzz passes
# (-Zsanitizer, sancov). New inputs libFuzzer finds go to fuzz/target/corpus/<target>/
# (kept between runs, not committed); crash reproducers to fuzz/artifacts/<target>/.
# Exit status: 0 when no target crashed; otherwise 1, with each reproducer's path.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc)}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  # Outside the repo: a tool is built for this host as it comes, not with our plugins' static flags.
  (cd / && cargo install cargo-fuzz --locked --quiet)
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# cargo-fuzz passes its own --target and RUSTFLAGS, which replace the workspace's
# +crt-static target rustflags (static glibc and ASan do not mix); the fuzz crate has its own
# workspace and target dir (fuzz/target), so the main build is untouched.
logs=fuzz/target/logs
mkdir -p "$logs"
echo "==> fuzz build (sanitizer: $sanitizer)"
if ! cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" >"$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log" >&2
  echo "fuzz build failed (full log: $logs/build.log)" >&2
  exit 1
fi

run_one() {
  local t=$1 grown=fuzz/target/corpus/$1
  mkdir -p "$grown" "fuzz/artifacts/$t"
  # The grown corpus comes first: libFuzzer writes new inputs to the first directory
  # only, so the committed seeds stay as they are.
  cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$grown" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -dict=fuzz/cni.dict -print_final_stats=1 \
    >"$logs/$t.log" 2>&1
}

failed=()
summary() {
  local t=$1 status=$2 log=$logs/$1.log
  local runs cov
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  if [ "$status" -eq 0 ]; then
    echo "fuzz $t: ok, ${runs:-?} runs, coverage ${cov:-?} (${seconds}s)"
  else
    local artifact
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //' || true)
    echo "fuzz $t: CRASH (exit $status), reproducer: ${artifact:-none written, see $log}"
    grep -m1 -A3 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | sed 's/^/    /' || true
    failed+=("$t")
  fi
}

echo "==> fuzzing ${#targets[@]} targets for ${seconds}s each, $jobs at a time (logs: $logs/)"
pending=("${targets[@]}")
declare -A names=()
running=0
while [ "${#pending[@]}" -gt 0 ] || [ "$running" -gt 0 ]; do
  while [ "${#pending[@]}" -gt 0 ] && [ "$running" -lt "$jobs" ]; do
    run_one "${pending[0]}" &
    names[$!]=${pending[0]}
    pending=("${pending[@]:1}")
    running=$((running + 1))
  done
  status=0
  wait -n -p pid || status=$?
  running=$((running - 1))
  summary "${names[$pid]}" "$status"
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} targets crashed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
