#!/usr/bin/env bash
# The reboot story in one minute: two pods on a bridge network, a simulated node reboot,
# and the calls kubelet makes afterwards (DEL of the old sandbox, ADD of a new one),
# first with upstream host-local, then with ours. Needs root (network namespaces).
#
# The end-to-end version of this, with containerd and runc through the CRI, is
# tests/e2e in plugins/host-local and runs in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_deps
echo "==> building"
cargo build --release --quiet --bins

run_id="demo$$"
work=$(mktemp -d "/tmp/cni-${run_id}.XXXX")
bridge="br-${run_id}"
netnses=()

cleanup() {
  for ns in "${netnses[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One plugin directory per host-local implementation; both use Debian's upstream bridge.
mkdir -p "$work/bin-upstream" "$work/bin-ours" "$work/net.d"
for dir in bin-upstream bin-ours; do ln -s /usr/lib/cni/bridge /usr/lib/cni/loopback "$work/$dir/"; done
ln -s /usr/lib/cni/host-local "$work/bin-upstream/host-local"
ln -s "$PWD/target/x86_64-unknown-linux-gnu/release/host-local" "$work/bin-ours/host-local"
cat > "$work/net.d/10-demo.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "demo", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$work/ipam", "ranges": [[{"subnet": "10.88.66.0/24"}]]}}]}
EOF

# What containerd puts in CNI_ARGS (in Go map order, i.e. any order).
pod_args() { # namespace name uid sandbox-id
  echo "K8S_POD_UID=$3;IgnoreUnknown=1;K8S_POD_NAME=$2;K8S_POD_INFRA_CONTAINER_ID=$4;K8S_POD_NAMESPACE=$1"
}

cni() { # impl verb netns pod uid
  local impl=$1 verb=$2 ns=$3 pod=$4 uid=$5
  NETCONFPATH="$work/net.d" CNI_PATH="$work/bin-$impl" CNI_CACHE_DIR="$work/cache-$impl" \
    CNI_ARGS="$(pod_args default "$pod" "$uid" "$ns")" \
    target/x86_64-unknown-linux-gnu/release/cnitool "$verb" demo "/var/run/netns/$ns"
}

new_sandbox() { ip netns add "$1"; netnses+=("$1"); }

ip_of() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}'; }

declare -A before after
for impl in upstream ours; do
  rm -rf "$work/ipam" "$work/cache-$impl"
  echo
  echo "==> host-local: $impl"
  for pod in web-0 api-0; do
    ns="${run_id}-${impl}-${pod}-boot1"
    new_sandbox "$ns"
    cni "$impl" add "$ns" "$pod" "uid-$pod" >/dev/null
    before[$impl/$pod]=$(ip_of "$ns")
    echo "    $pod runs in sandbox $ns with ${before[$impl/$pod]}"
  done

  echo "    -- node reboots, offline: sandboxes and the bridge are gone, /var/lib/cni stays --"
  for pod in web-0 api-0; do ip netns del "${run_id}-${impl}-${pod}-boot1"; done
  ip link del "$bridge"

  for pod in web-0 api-0; do
    old="${run_id}-${impl}-${pod}-boot1" new="${run_id}-${impl}-${pod}-boot2"
    # kubelet: StopPodSandbox(old) -> CNI DEL (netns gone), then RunPodSandbox -> CNI ADD.
    cni "$impl" del "$old" "$pod" "uid-$pod"
    new_sandbox "$new"
    cni "$impl" add "$new" "$pod" "uid-$pod" >/dev/null
    after[$impl/$pod]=$(ip_of "$new")
    echo "    $pod's new sandbox $new has ${after[$impl/$pod]}"
  done
  for pod in web-0 api-0; do
    cni "$impl" del "${run_id}-${impl}-${pod}-boot2" "$pod" "uid-$pod"
  done
  ip link del "$bridge" 2>/dev/null || true
done

echo
echo "==> result (the API server, offline, still has the 'before' address)"
printf '    %-6s %-16s %-26s %-26s\n' pod before "after, upstream host-local" "after, our host-local"
status=0
for pod in web-0 api-0; do
  printf '    %-6s %-16s %-26s %-26s\n' "$pod" "${before[ours/$pod]}" "${after[upstream/$pod]}" "${after[ours/$pod]}"
  [ "${before[ours/$pod]}" = "${after[ours/$pod]}" ] || status=1
done
if [ "$status" -eq 0 ]; then
  echo "==> every pod kept its IP across the reboot with our host-local"
else
  echo "==> FAILED: a pod changed its IP with our host-local" >&2
fi
exit "$status"
