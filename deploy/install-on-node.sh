#!/bin/sh
# The DaemonSet's init container (image: deploy/Containerfile). Installs host-local and
# delegated-ipam into the host's /opt/cni/bin, and keeps the conflist in /etc/cni/net.d on
# this node's pod CIDR (Node.spec.podCIDR, read with node-pod-cidr).
#
# The conflist records the pod CIDR it was written for, so only a conflist that would change
# needs the API server. When the API server cannot be asked (an offline reboot) or the node
# has no pod CIDR, the binaries are still installed, the conflist is kept as it is, and the
# container succeeds: it must never hold the node's pods back.
#
# Environment: NODE_NAME and KUBERNETES_SERVICE_HOST/PORT (for node-pod-cidr), CNI_FLAVOR
# (bridge or cilium), CNI_VERSIONS (the conflist's cniVersions, e.g. 0.3.1,1.0.0).
set -eu
home=$(dirname "$0")
set -- --source "$home/bin" --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d \
  --flavor "${CNI_FLAVOR:-bridge}" ${CNI_VERSIONS:+--cni-versions "$CNI_VERSIONS"}
if pod_cidr=$("$home/bin/node-pod-cidr"); then
  if [ -n "$pod_cidr" ]; then
    set -- "$@" --pod-cidr "$pod_cidr" --follow-pod-cidr
  else
    echo "install-on-node.sh: node ${NODE_NAME:-} has no spec.podCIDR: installing the binaries; a conflist, if any, is kept as it is" >&2
  fi
else
  echo "install-on-node.sh: the API server could not be asked for the pod CIDR: installing the binaries; a conflist, if any, is kept as it is" >&2
fi
exec "$home/install-cni.sh" "$@"
