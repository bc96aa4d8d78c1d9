#!/bin/sh
# The DaemonSet's metrics container: every INTERVAL seconds (default 30), `host-local metrics`
# for every network in the node's store, written where node-exporter's textfile collector
# reads (*.prom files). Written to a temp file in the same directory and renamed, so the
# collector never reads half a file.
#
#   metrics-textfile.sh OUTPUT_FILE [INTERVAL]
set -u
out=${1:?usage: metrics-textfile.sh OUTPUT_FILE [INTERVAL]}
interval=${2:-30}
while :; do
  if /opt/edge-cni/bin/host-local metrics --data-dir /host/var/lib/cni/networks \
      --conf-dir /host/etc/cni/net.d >"$out.tmp"; then
    mv -f "$out.tmp" "$out"
  else
    rm -f "$out.tmp"
  fi
  sleep "$interval"
done
