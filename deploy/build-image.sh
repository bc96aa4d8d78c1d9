#!/usr/bin/env bash
# Builds the install image (deploy/Containerfile) with podman, from local files only.
#
#   deploy/build-image.sh [--tag TAG] [--binaries DIR]
#
# --binaries: where the static host-local and delegated-ipam are (default target/x86_64-unknown-linux-gnu/release:
# `cargo build --release` first). node-pod-cidr is built here (Debian's golang-go), busybox
# is Debian's busybox-static. PODMAN overrides the podman command (e.g. "podman
# --storage-driver vfs"). The build runs with --network none: nothing can be fetched.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=registry.example.com/edge-cni:0.1.0
binaries=$repo/target/x86_64-unknown-linux-gnu/release
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --binaries) binaries=${2:?--binaries needs a value}; shift 2 ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
read -r -a podman <<< "${PODMAN:-podman}"

context=$(mktemp -d "${TMPDIR:-/tmp}/edge-cni-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
for bin in "$binaries/host-local" "$binaries/delegated-ipam" /bin/busybox; do
  file "$bin" | grep -q static || { echo "build-image.sh: $bin is missing or not static" >&2; exit 1; }
  install -m 0755 "$bin" "$context/"
done
(cd "$repo" && GO111MODULE=off GOPATH="$context/gopath" GOCACHE="${GOCACHE:-$repo/target/go/cache}" CGO_ENABLED=0 \
  go build -trimpath -ldflags '-s -w' -o "$context/node-pod-cidr" ./deploy/node-pod-cidr)
rm -rf "$context/gopath"
install -m 0755 "$repo/scripts/install-cni.sh" "$repo/deploy/install-on-node.sh" "$repo/deploy/metrics-textfile.sh" "$context/"

"${podman[@]}" build --quiet --network none -f "$repo/deploy/Containerfile" -t "$tag" "$context" >/dev/null
echo "built $tag: $("${podman[@]}" image inspect --format '{{.Size}}' "$tag") bytes"
