# Shared by scripts/*.sh: dependency installation and build helpers. Source it, don't run it.

# Debian packages the tests and the demo run against (the real things, not mocks).
DEB_PACKAGES=(
  containernetworking-plugins   # upstream bridge/loopback/host-local: oracle and chaining partner
  golang-go golang-github-appc-cni-dev   # upstream Go libcni, for the Go-side test driver; Go builds the image's node-pod-cidr
  iproute2 jq strace file
  containerd runc busybox-static  # the CRI end-to-end test: a real node runtime, and a pause image
  qemu-system-x86 kmod e2fsprogs xfsprogs btrfs-progs f2fs-tools  # power-cut test (scripts/powercut): VM, depmod, mkfs.*
  podman openssl python3  # install image test: build and run it, certificates and a local HTTPS API endpoint
)

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: needs root (network namespaces, /var/lib/cni); re-run with sudo" >&2
    exit 1
  fi
}

install_deps() {
  local missing=()
  for pkg in "${DEB_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    echo "$0: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
  fi
}

# Python for the tests: grpcio for the CRI client of the end-to-end test (scripts/e2e),
# prometheus_client's text parser to validate `host-local metrics`.
build_e2e_venv() {
  if [ ! -x target/e2e/venv/bin/python ] || ! target/e2e/venv/bin/python -c "import grpc, grpc_tools, prometheus_client" 2>/dev/null; then
    mkdir -p target/e2e
    python3 -m venv target/e2e/venv
    target/e2e/venv/bin/pip install --quiet --disable-pip-version-check grpcio grpcio-tools prometheus_client
  fi
}

# The Go test programs on Debian's libcni, built in GOPATH mode: upstream cnitool's logic
# (gocnitool) and a cilium-cni stand-in for delegated IPAM (cilium-emulator).
build_go_drivers() {
  mkdir -p target/go
  for prog in gocnitool cilium-emulator; do
    GOPATH="$PWD/target/go/gopath:/usr/share/gocode" GO111MODULE=off GOCACHE="$PWD/target/go/cache" \
      go build -o "target/go/$prog" "./testdata/go/$prog"
  done
}
