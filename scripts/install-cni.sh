#!/bin/sh
# Install our CNI binaries on a node, and a conflist for its pod CIDR.
#
#   install-cni.sh --bin-dir DIR --conf-dir DIR [--pod-cidr CIDR] [--flavor bridge|cilium]
#                  [--source DIR] [--network NAME] [--cni-versions V,V,...]
#                  [--force | --follow-pod-cidr]
#
# Binaries are copied next to their target and renamed into place, so kubelet and the
# runtime never exec a half-written file (and a running plugin keeps its old inode).
# A conflist is written only with --pod-cidr, and never over an existing one, except with
# --force, or with --follow-pod-cidr when the existing one records another pod CIDR.
# The conflist lists --cni-versions (default 0.3.1,1.0.0,1.1.0) for runtimes that pick one.
#
# POSIX sh: the install image (deploy/Containerfile) runs it with busybox.
set -eu

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

bin_dir="" conf_dir="" pod_cidr="" flavor="bridge" source_dir="" network="" force=0 follow=0
cni_versions="0.3.1,1.0.0,1.1.0"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a value}; shift 2 ;;
    --conf-dir) conf_dir=${2:?--conf-dir needs a value}; shift 2 ;;
    --pod-cidr) pod_cidr=${2:?--pod-cidr needs a value}; shift 2 ;;
    --flavor) flavor=${2:?--flavor needs a value}; shift 2 ;;
    --source) source_dir=${2:?--source needs a value}; shift 2 ;;
    --network) network=${2:?--network needs a value}; shift 2 ;;
    --cni-versions) cni_versions=${2:?--cni-versions needs a value}; shift 2 ;;
    --force) force=1; shift ;;
    --follow-pod-cidr) follow=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-cni.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$bin_dir" ] && [ -n "$conf_dir" ] || { echo "install-cni.sh: --bin-dir and --conf-dir are required" >&2; usage; }
case "$flavor" in bridge|cilium) ;; *) echo "install-cni.sh: --flavor is bridge or cilium" >&2; exit 2 ;; esac
if ! printf '%s' "$cni_versions" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+(,[0-9]+\.[0-9]+\.[0-9]+)*$'; then
  echo "install-cni.sh: --cni-versions $cni_versions is not a list like 0.3.1,1.0.0,1.1.0" >&2
  exit 2
fi
if [ -z "$source_dir" ]; then
  source_dir="$(cd "$(dirname "$0")/.." && pwd)/target/x86_64-unknown-linux-gnu/release"
fi

install_binary() { # name
  src="$source_dir/$1" dst="$bin_dir/$1"
  [ -f "$src" ] || { echo "install-cni.sh: $src not found (cargo build --release first)" >&2; exit 1; }
  tmp=$(mktemp "$bin_dir/.$1.XXXXXX")
  cp "$src" "$tmp"
  chmod 0755 "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$dst" # rename(2): atomic replacement
  echo "installed $dst"
}

mkdir -p "$bin_dir" "$conf_dir"
install_binary host-local
install_binary delegated-ipam

[ -n "$pod_cidr" ] || exit 0
if ! printf '%s' "$pod_cidr" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9a-fA-F:]+/[0-9]{1,3}$'; then
  echo "install-cni.sh: --pod-cidr $pod_cidr is not a CIDR" >&2
  exit 2
fi
versions_json="[\"$(printf '%s' "$cni_versions" | sed 's/,/", "/g')\"]"

case "$flavor" in
  bridge)
    network=${network:-edge}
    conflist="$conf_dir/10-$network.conflist"
    body=$(cat <<EOF
{
  "cniVersion": "1.0.0",
  "cniVersions": $versions_json,
  "name": "$network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
)
    ;;
  cilium)
    network=${network:-cilium}
    conflist="$conf_dir/05-$network.conflist"
    body=$(cat <<EOF
{
  "cniVersion": "0.3.1",
  "cniVersions": $versions_json,
  "name": "$network",
  "plugins": [
    {
      "type": "cilium-cni",
      "enable-debug": false,
      "ipam": {
        "type": "delegated-ipam",
        "delegate": {
          "type": "host-local",
          "ranges": [[{"subnet": "$pod_cidr"}]]
        }
      }
    }
  ]
}
EOF
)
    ;;
esac

if [ -e "$conflist" ] && [ "$force" -ne 1 ]; then
  if [ "$follow" -ne 1 ]; then
    echo "install-cni.sh: $conflist exists; left as it is (use --force to replace it)" >&2
    exit 0
  fi
  # The subnets the existing conflist allocates from: the pod CIDR it was written for.
  recorded=$(grep -o '"subnet": *"[^"]*"' "$conflist" | sed 's/.*"\([^"]*\)"$/\1/' | tr '\n' ' ') || true
  recorded=${recorded% }
  case " $recorded " in
    *" $pod_cidr "*)
      echo "install-cni.sh: $conflist is for pod CIDR $pod_cidr; left as it is" >&2
      exit 0 ;;
  esac
  echo "install-cni.sh: $conflist is for pod CIDR ${recorded:-(none)}, the node's is now $pod_cidr: replacing it" >&2
fi
tmp=$(mktemp "$conf_dir/.$network.XXXXXX")
printf '%s\n' "$body" > "$tmp"
chmod 0644 "$tmp"
sync "$tmp" 2>/dev/null || true
mv -f "$tmp" "$conflist"
echo "wrote $conflist for pod CIDR $pod_cidr"
