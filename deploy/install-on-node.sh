#!/usr/bin/env bash
# The DaemonSet's init container: read this node's pod CIDR from the API server
# (Node.spec.podCIDR), then install the binaries and a conflist for that CIDR.
set -euo pipefail
api=https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}
sa=/var/run/secrets/kubernetes.io/serviceaccount
pod_cidr=$(curl -sf --cacert "$sa/ca.crt" -H "Authorization: Bearer $(cat "$sa/token")" \
  "$api/api/v1/nodes/${NODE_NAME:?}" | jq -r '.spec.podCIDR // empty')
args=(--source /opt/edge-cni/target/release --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d
      --flavor "${CNI_FLAVOR:-bridge}")
if [ -n "$pod_cidr" ]; then
  args+=(--pod-cidr "$pod_cidr")
else
  echo "node $NODE_NAME has no spec.podCIDR: installing binaries only" >&2
fi
exec /opt/edge-cni/install-cni.sh "${args[@]}"
