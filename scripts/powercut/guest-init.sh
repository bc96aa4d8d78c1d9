#!/bin/busybox sh
# /init of the power-cut VM (scripts/powercut/powercut.py builds the initramfs around it).
#
# Kernel command line parameters (all set by powercut.py):
#   pcmode=workload|check|verify  pcfs=ext4|xfs|btrfs|f2fs  pcseed=N  pcpods=N  pcworkers=N
#
# workload: mount the disk, print START, run a storm of host-local ADD/DEL calls from
#           several workers and print "ACK ..." after every call that succeeded. The host
#           pulls the plug (SIGKILL of qemu) at a random moment.
# check:    mount the same disk (journal/log replay), dump the store byte for byte before any
#           plugin runs, re-ADD every pod with a new container id as a new boot, counting
#           the disk's flushes in each, and print CHECK-END: the host cuts the power again,
#           losing all the disk did not flush.
# verify:   mount the disk once more and dump the store: every re-ADD must be there.
#
# Every line the host parses starts with an upper-case tag; anything else is ignored.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /mnt
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

param() { echo " $(cat /proc/cmdline) " | sed -n "s/.* $1=\\([^ ]*\\) .*/\\1/p"; }
MODE=$(param pcmode)
FS=$(param pcfs)
SEED=$(param pcseed)
PODS=$(param pcpods)
WORKERS=$(param pcworkers)
PLUGIN=/plugin/host-local
CONF=/net.conf
STORE=/mnt/cni/pc

die() {
  echo "GUEST-ERROR $*"
  dmesg | tail -n 30 | sed 's/^/KMSG /'
  poweroff -f
  sleep 3600
}

echo "GUEST-BOOT mode=$MODE fs=$FS seed=$SEED pods=$PODS workers=$WORKERS"

# Modules in the order the host computed from modules.dep/modules.softdep: "hard NAME.ko" must
# load; "soft NAME.ko" (soft dependencies, e.g. one of several crc32c implementations) may fail.
while read -r kind ko; do
  [ -n "$ko" ] || continue
  if ! out=$(insmod "/modules/$ko" 2>&1); then
    case "$out" in *"File exists"*) continue ;; esac
    if [ "$kind" = hard ]; then die "insmod $ko: $out"; fi
    echo "GUEST-NOTE soft module $ko not loaded: $out"
  fi
done </modules.order

i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ $i -gt 200 ] && die "no /dev/vda"
  sleep 0.05
done
mount -t "$FS" /dev/vda /mnt || die "mount -t $FS /dev/vda failed"
echo "GUEST-MOUNTED $FS"

# One plugin call. $1 verb, $2 pod number, $3 container id, $4 boot id. Prints the result on
# stdout and returns the plugin's exit status.
call() {
  if [ "$1" = ADD ]; then netns=/var/run/netns/$3; else netns=; fi
  CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=$netns CNI_IFNAME=eth0 CNI_PATH=/plugin \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-$2;K8S_POD_UID=uid-$2" \
    HOST_LOCAL_BOOT_ID=$4 "$PLUGIN" <"$CONF" 2>&1
}

# Flush requests the disk has completed (the 16th statistic of /proc/diskstats).
flushes() {
  while read -r _ _ dev _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ flushed _; do
    [ "$dev" = vda ] && echo "${flushed:-0}" && return
  done </proc/diskstats
}

# A container ID: $1 p (workload) or r (re-ADD), $2 pod, $3 sandbox number. Mostly of one
# length, as CRI runtimes' (64 hex digits), so that a pod's next sandbox takes its lease
# back in place, the way it does on a node; one in four a digit longer, so that where a
# pod's two IDs differ in length its take-back replaces the files.
container() {
  if [ $((RANDOM % 4)) -eq 0 ]; then printf '%s%03ds%07d' "$1" "$2" "$3"; else printf '%s%03ds%06d' "$1" "$2" "$3"; fi
}

# An ADD killed part way (kubelet's timeout, the OOM killer): $1 pod number, $2 container
# id. The plugin itself runs in the background (not a subshell), killed 0-90 ms in.
killed_add() {
  CNI_COMMAND=ADD CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$2 CNI_IFNAME=eth0 CNI_PATH=/plugin \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-$1;K8S_POD_UID=uid-$1" \
    HOST_LOCAL_BOOT_ID=boot1 "$PLUGIN" <"$CONF" >/dev/null 2>&1 &
  pid=$!
  sleep "0.0$((RANDOM % 10))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

first_ip() { sed -n 's/.*"address": *"\([0-9.]*\)\/.*/\1/p' | head -n 1; }
oneline() { tr '\n\r' '  ' | cut -c 1-300; }

# Every entry of the store and of its .hostlocal/ subdirectory, one line each:
#   ENTRY <which> <dir> <name> <type> <size> x<hex content>
# <name> is "n:" + the name when it is plain, else "h:" + its hex; an empty file is "x".
# Two processes per entry (stat, hexdump): the check boot runs under TCG.
dump() {
  which=$1
  echo "DUMP-BEGIN $which"
  for d in "$STORE" "$STORE/.hostlocal"; do
    rel=${d#"$STORE"}
    [ -n "$rel" ] || rel=/
    if [ ! -d "$d" ]; then echo "DUMP-NODIR $which $rel"; continue; fi
    cd "$d" || continue
    for n in * .*; do
      case "$n" in . | ..) continue ;; esac
      [ -e "$n" ] || [ -L "$n" ] || continue
      case "$n" in
      *[!A-Za-z0-9._:-]*) nn=h:$(printf %s "$n" | xxd -p | tr -d '\n') ;;
      *) nn=n:$n ;;
      esac
      set -- $(stat -c '%s %F' -- "$n")
      size=$1
      type=$2
      shift 2
      for word; do type=${type}_$word; done
      printf 'ENTRY %s %s %s %s %s x' "$which" "$rel" "$nn" "$type" "$size"
      if [ -f "$n" ] && [ ! -L "$n" ]; then hexdump -v -e '/1 "%02x"' "$n"; fi
      echo
    done
    cd /
  done
  echo "DUMP-END $which"
}

worker() {
  w=$1
  RANDOM=$((SEED * 8 + w + 1))
  mine=""
  p=$w
  while [ "$p" -lt "$PODS" ]; do
    mine="$mine $p"
    eval "k_$p=0 cur_$p="
    p=$((p + WORKERS))
  done
  set -- $mine
  n=$#
  while :; do
    idx=$((RANDOM % n + 1))
    eval "p=\${$idx}"
    eval "cur=\$cur_$p k=\$k_$p"
    if [ -n "$cur" ]; then
      echo "BEGIN DEL pod-$p $cur"
      if out=$(call DEL "$p" "$cur" boot1); then
        echo "ACK DEL pod-$p $cur"
        eval "cur_$p="
        cur=
      else
        echo "FAIL DEL pod-$p $cur $(echo "$out" | oneline)"
        continue
      fi
      # Half of the time the pod's sandbox is gone for a while (a DEL alone).
      [ $((RANDOM % 2)) -eq 0 ] && continue
    fi
    k=$((k + 1))
    eval "k_$p=$k"
    cid=$(container p "$p" "$k")
    echo "BEGIN ADD pod-$p $cid"
    if [ $((RANDOM % 8)) -eq 0 ]; then
      killed_add "$p" "$cid"
      echo "KILLED ADD pod-$p $cid"
      eval "cur_$p=$cid" # kubelet tears a failed sandbox down (DEL) and makes another
    elif out=$(call ADD "$p" "$cid" boot1); then
      echo "ACK ADD pod-$p $cid $(echo "$out" | first_ip)"
      eval "cur_$p=$cid"
    else
      echo "FAIL ADD pod-$p $cid $(echo "$out" | oneline)"
    fi
  done
}

case "$MODE" in
workload)
  mkdir -p /var/run/netns
  echo "START"
  w=0
  while [ $w -lt "$WORKERS" ]; do
    worker $w &
    w=$((w + 1))
  done
  wait
  die "workers ended"
  ;;
check)
  dmesg | grep -iE 'ext4|xfs|btrfs|f2fs|journal|recover|replay|corrupt|error' | sed 's/^/KMSG /'
  dump before
  p=0
  while [ $p -lt "$PODS" ]; do
    rid=$(container r "$p" 0)
    before=$(flushes)
    if out=$(call ADD "$p" "$rid" boot2); then
      echo "READD pod-$p $rid $(echo "$out" | first_ip) FLUSHES $(($(flushes) - before))"
    else
      echo "READDFAIL pod-$p $rid $(echo "$out" | oneline)"
    fi
    p=$((p + 1))
  done
  # The host cuts the power here, right after the last re-ADD.
  echo "CHECK-END"
  sleep 3600
  ;;
verify)
  dump after
  sync
  umount /mnt || echo "GUEST-NOTE umount failed"
  echo "VERIFY-END"
  poweroff -f
  sleep 3600
  ;;
*)
  die "unknown pcmode=$MODE"
  ;;
esac
