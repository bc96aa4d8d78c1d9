#!/usr/bin/env python3
"""Power-cut test: does what host-local ADD acknowledged survive a pulled plug?

For each cut, on a fresh raw disk image (ext4 with or without its journal, xfs, btrfs or
f2fs, made on the host):

1. boot 1 (workload): a qemu VM (TCG) mounts the disk and runs several workers doing host-local
   ADD / DEL storms with K8S_POD_* CNI_ARGS on a store on that disk. The guest prints
   "ACK ADD pod-i <container> <ip>" on the serial console after every call that returned
   success. The host reads the console as it streams and SIGKILLs qemu at a random moment
   (seeded) after START: the plug is pulled. The disk has a volatile write cache
   (volatile_disk.py, served over NBD): at the cut, whatever the guest had not flushed
   reaches the image or not, block by block, at random;
2. boot 2 (check): the same image is mounted again (journal/log replay), the store is dumped
   byte for byte before any plugin runs, then every pod is re-ADDed with a new container id
   as a new boot (HOST_LOCAL_BOOT_ID=boot2), and right after the last one the power is cut
   once more, this disk losing everything it had not flushed; boot 3 (verify) dumps the
   store again;
3. verdict, on the host:
   (a) every acknowledged ADD that is its pod's last one: the lease file <ip> exists and holds
       exactly "<container>\\r\\neth0" of that pod's acknowledged sandbox, or of a later one
       whose call was in flight at the cut (a DEL keeps the lease in ours: it marks it held);
   (b) no empty or partial file: every file named like an IP holds a complete
       "<container>\\r\\neth0" of a container the workload used, every <ip>.pod holds a whole
       record (plain JSON, or at least one of its two slots whole: see _read_record);
       other odd entries are reported;
   (c) every pod with an acknowledged ADD gets its last acknowledged address back in boot 2;
   (d) no two pods got the same address in boot 2;
   (e) ours: node time moved forward across the cut: every pod record boot 2 wrote was added
       after every stamp of the records the cut left (the uptime restarted, and the store's
       .hostlocal/clock may be lost);
   (f) ours: every re-ADD of boot 2 that reported an address is on the disk in boot 3, its
       lease and its pod record;
   (g) ours: every such re-ADD made the disk complete at least one flush (the guest's
       /proc/diskstats; one call at a time): (f) alone can only catch the last call's.

--plugin upstream runs Debian's upstream host-local (dynamic; its ld-linux and libc are
copied into the VM). It ignores the pod keys and frees on DEL, so (a)/(b) are judged only for
pods whose last acknowledged call was an ADD (with no DEL of it started), and (c) is expected
to fail: upstream only reports its figures, the exit status is 0 unless the harness broke.

Exit status: 0 all verdicts hold (or --plugin upstream), 1 a verdict failed, 2 harness error
(VM did not boot, qemu hung, missing tools).

  scripts/powercut/powercut.py --fs ext4 --cuts 3 --plugin ours [--seed N]
  scripts/powercut/powercut.py --fs all --cuts 50          # a longer run

Needs root only for nothing in particular; needs qemu-system-x86, busybox-static, kmod,
e2fsprogs, xfsprogs, btrfs-progs, f2fs-tools and (for upstream) containernetworking-plugins.
The Debian kernels are downloaded into target/powercut/ on first use (apt-get download).
"""

import argparse
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import kernel as kernels  # noqa: E402
from volatile_disk import VolatileDisk  # noqa: E402

CACHE = REPO / "target" / "powercut"
UPSTREAM = Path("/usr/lib/cni/host-local")
FILESYSTEMS = ("ext4", "ext4-nojournal", "xfs", "btrfs", "f2fs")
FLAVOUR = {"ext4": "cloud", "ext4-nojournal": "cloud", "xfs": "cloud", "btrfs": "cloud", "f2fs": "generic"}
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-b", "4096"],
    # As some SD-card images are made, to spare the flash: metadata written back in any order.
    "ext4-nojournal": ["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^has_journal"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "f2fs": ["mkfs.f2fs", "-q", "-f"],
}
IMAGE_MB = 320  # mkfs.xfs wants at least 300 MB
SUBNET = "10.9.0.0/24"
NET_CONF = {
    "cniVersion": "1.0.0",
    "name": "pc",
    "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": "/mnt/cni"},
}

OP_RE = re.compile(r"(BEGIN|ACK|FAIL) (ADD|DEL) pod-(\d+) (p(\d+)s(\d+))(?: (.*))?")
ENTRY_RE = re.compile(r"ENTRY (before|after) (\S+) ([nh]):(\S+) (\S+) (\d+) x([0-9a-f]*)")
READD_RE = re.compile(r"READD pod-(\d+) (\S+) (\S*) FLUSHES (-?\d+)")
READDFAIL_RE = re.compile(r"READDFAIL pod-(\d+) (\S+) ?(.*)")
IP_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
LEASE_RE = re.compile(rb"p(\d+)s(\d+)\r\neth0")


class HarnessError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# The VM: initramfs, disk, qemu


def need_tools(fss, plugin):
    missing = []
    for tool, pkg in [("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static"), ("depmod", "kmod")]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {pkg})")
    pkgs = {"ext4": "e2fsprogs", "ext4-nojournal": "e2fsprogs", "xfs": "xfsprogs", "btrfs": "btrfs-progs", "f2fs": "f2fs-tools"}
    for fs in fss:
        if shutil.which(MKFS[fs][0]) is None:
            missing.append(f"{MKFS[fs][0]} (apt-get install {pkgs[fs]})")
    if plugin == "upstream" and not UPSTREAM.is_file():
        missing.append(f"{UPSTREAM} (apt-get install containernetworking-plugins)")
    if missing:
        raise HarnessError("missing: " + ", ".join(missing) + " (scripts/lib.sh DEB_PACKAGES lists them)")
    bb = shutil.which("busybox")
    if _is_dynamic(bb):
        raise HarnessError(f"{bb} is dynamically linked: apt-get install busybox-static")


def _is_dynamic(path):
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"\x7fELF":
        return False
    # PT_INTERP in the program headers (ELF64 little endian)
    phoff = int.from_bytes(head[32:40], "little")
    phentsize = int.from_bytes(head[54:56], "little")
    phnum = int.from_bytes(head[56:58], "little")
    with open(path, "rb") as f:
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    return any(int.from_bytes(ph[i * phentsize : i * phentsize + 4], "little") == 3 for i in range(phnum))


def _copy_with_libs(binary: Path, root: Path, dest: str):
    """Copy binary to root/dest; if it is dynamic, also its ld-linux and libraries (ldd)."""
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(binary, target)
    os.chmod(target, 0o755)
    if not _is_dynamic(binary):
        return []
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    for lib in libs:
        t = root / lib.lstrip("/")
        t.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, t)  # follows symlinks: the real file under the name the loader asks for
    return libs


def build_initrd(work: Path, kernel, fs, binary: Path, tag: str) -> Path:
    stage = work / f"initrd-{tag}"
    for d in ("bin", "dev", "proc", "sys", "tmp", "mnt", "modules", "plugin"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox"), stage / "bin" / "busybox")
    shutil.copy(HERE / "guest-init.sh", stage / "init")
    os.chmod(stage / "init", 0o755)
    libs = _copy_with_libs(binary, stage, "/plugin/host-local")
    (stage / "net.conf").write_text(json.dumps(NET_CONF))
    wanted = ["virtio_pci", "virtio_blk"]
    fs_type = fs.split("-")[0]  # ext4-nojournal is an ext4
    if not kernel.has_module_or_builtin(fs_type):
        raise HarnessError(f"kernel {kernel.release} has no {fs_type} (neither built in nor a module)")
    wanted.append(fs_type)
    order = kernel.module_order(wanted)
    lines = []
    for kind, path in order:
        name = kernels._modname(str(path)) + ".ko"
        (stage / "modules" / name).write_bytes(kernels.module_bytes(path))
        lines.append(f"{kind} {name}")
    (stage / "modules.order").write_text("\n".join(lines) + "\n")
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    out = work / f"initrd-{tag}.cpio"
    with open(out, "wb") as f:
        subprocess.run(
            ["busybox", "cpio", "-o", "-H", "newc"],
            input=("\n".join(["."] + files) + "\n").encode(),
            stdout=f,
            stderr=subprocess.DEVNULL,
            cwd=stage,
            check=True,
        )
    shutil.rmtree(stage)
    mods = " ".join(f"{k[0]}:{kernels._modname(str(p))}" for k, p in order)
    log(f"powercut: initramfs {tag}: kernel {kernel.release}, modules [{mods}]" + (f", libs {libs}" if libs else ""))
    return out


def make_image(path: Path, fs):
    with open(path, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    res = subprocess.run(MKFS[fs] + [str(path)], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise HarnessError(f"{' '.join(MKFS[fs])} failed: {res.stdout}{res.stderr}")


class Vm:
    """One qemu run whose serial console is read line by line as it streams."""

    def __init__(self, args, kernel, initrd, drive, append):
        self.cmd = [
            "qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512",
            "-accel", "tcg", "-smp", str(args.smp), "-nic", "none",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
            "-append", f"console=ttyS0 panic=-1 quiet {append}",
            "-drive", drive,
        ]  # fmt: skip
        self.lines = []  # (seconds since start, text): complete lines only

    def run(self, timeout, cut_after=None, end_marker=None, cut_marker=None, on_cut=None):
        """Run until qemu exits, or SIGKILL it cut_after seconds after START (or as soon as the
        line cut_marker appears), or after timeout. on_cut() runs just before a cut's SIGKILL.

        Returns (cut_at, timed_out): cut_at is the START-relative moment of the SIGKILL."""
        p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        fd = p.stdout.fileno()
        t0 = time.monotonic()
        buf = b""
        kill_at = start = cut_at = end_seen = None
        timed_out = killed = False
        killed_at = 0.0
        try:
            while True:
                now = time.monotonic()
                if not killed:
                    if kill_at is not None and now >= kill_at:
                        if on_cut is not None:
                            on_cut()  # the disk first: nothing qemu sends after this lands
                        p.kill()  # SIGKILL: the plug
                        killed = True
                        cut_at = now - start
                    elif now - t0 > timeout:
                        p.kill()
                        killed = timed_out = True
                    elif end_seen is not None and now - end_seen > 30:
                        p.kill()  # the guest did not power off: no matter, it is done
                        killed = True
                    if killed:
                        killed_at = now
                elif now - killed_at > 20:
                    break  # qemu died but its output never ended: do not hang
                wait = 0.5
                if kill_at is not None and cut_at is None:
                    wait = max(0.0, min(wait, kill_at - now))
                r, _, _ = select.select([fd], [], [], wait)
                if not r:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # qemu is gone; everything it wrote has been read
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    text = raw.decode("utf-8", "replace").rstrip("\r")
                    self.lines.append((time.monotonic() - t0, text))
                    if text == "START" and cut_after is not None and start is None:
                        start = time.monotonic()
                        kill_at = start + cut_after
                    if text == cut_marker and start is None:
                        start = kill_at = time.monotonic()
                    if end_marker is not None and text == end_marker and end_seen is None:
                        end_seen = time.monotonic()
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        return cut_at, timed_out

    def log_text(self):
        return "".join(f"{t:8.3f} {text}\n" for t, text in self.lines)

    def texts(self):
        return [t for _, t in self.lines]

    def guest_errors(self):
        return [t for t in self.texts() if t.startswith("GUEST-ERROR")]

    def tail(self, n=25):
        return "\n".join("    | " + t for t in self.texts()[-n:])


# ---------------------------------------------------------------------------------------------
# Verdict


class Pod:
    def __init__(self):
        self.last_ack_add = None  # (container, k, ip)
        self.last_ack_op = None
        self.del_begun_after_ack = False
        self.max_k = 0
        self.acked_adds = 0


def parse_workload(texts):
    pods = {}
    used = set()
    fails = []
    for t in texts:
        m = OP_RE.fullmatch(t)
        if not m:
            continue
        kind, verb, pod, cid, cpod, k, rest = m.groups()
        pod, k = int(pod), int(k)
        if int(cpod) != pod:
            continue
        st = pods.setdefault(pod, Pod())
        used.add(cid)
        st.max_k = max(st.max_k, k)
        if kind == "BEGIN" and verb == "DEL" and st.last_ack_op == "ADD":
            st.del_begun_after_ack = True
        if kind == "ACK":
            st.last_ack_op = verb
            if verb == "ADD":
                ip = (rest or "").strip()
                st.last_ack_add = (cid, k, ip)
                st.del_begun_after_ack = False
                st.acked_adds += 1
        if kind == "FAIL":
            fails.append(t)
    return pods, used, fails


def parse_dump(texts, which):
    """{(rel dir, name): (type, size, bytes)} of one dump, or None if it never completed."""
    entries, begun, ended, nodir = {}, False, False, set()
    for t in texts:
        if t == f"DUMP-BEGIN {which}":
            begun = True
        elif t == f"DUMP-END {which}":
            ended = True
        elif t.startswith(f"DUMP-NODIR {which} "):
            nodir.add(t.split()[2])
        else:
            m = ENTRY_RE.fullmatch(t)
            if m and m.group(1) == which:
                _, rel, enc, name, ftype, size, hexdata = m.groups()
                if enc == "h":
                    name = bytes.fromhex(name).decode("utf-8", "replace")
                if ftype == "regular_empty_file":  # busybox stat's %F for an empty file
                    ftype = "regular_file"
                entries[(rel, name)] = (ftype, int(size), bytes.fromhex(hexdata))
    if not (begun and ended):
        return None, nodir
    return entries, nodir


class Verdict:
    def __init__(self):
        self.acked_adds = 0
        self.pods_checked = 0  # pods judged for (a)
        self.lost = []  # (a)
        self.bad_files = []  # (b) empty / partial / unknown-container lease files
        self.bad_records = []  # (b) .pod files that are not JSON
        self.odd = []  # reported only
        self.back = 0  # (c)
        self.readd_pods = 0
        self.not_back = []
        self.dupes = []  # (d)
        self.clock_back = []  # (e)
        self.clock_checked = 0
        self.lost_again = []  # (f)
        self.readds_verified = 0
        self.unflushed = []  # (g)
        self.skipped = 0  # upstream: pods whose last acked op was a DEL (or with a DEL begun)
        self.errors = []  # check boot broke (e.g. mount failed): counts as failure
        self.failed_calls = 0  # workload calls that returned an error (reported only)

    def failed(self):
        return bool(
            self.lost
            or self.bad_files
            or self.bad_records
            or self.not_back
            or self.dupes
            or self.clock_back
            or self.lost_again
            or self.unflushed
            or self.errors
        )


def _lease_owner(data):
    m = LEASE_RE.fullmatch(data)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _read_lease(ftype, size, data):
    """(owner, None) for a complete lease file, else (None, what is wrong with it)."""
    if ftype != "regular_file":
        return None, f"is a {ftype}"
    if size == 0:
        return None, "empty"
    owner = _lease_owner(data)
    if owner is None:
        return None, f"partial or garbage {data!r}"
    return owner, None


def judge(plugin, workload_texts, check_texts, verify_texts):
    v = Verdict()
    pods, used, fails = parse_workload(workload_texts)
    v.acked_adds = sum(p.acked_adds for p in pods.values())
    v.failed_calls = len(fails)
    before, nodir = parse_dump(check_texts, "before")
    if before is None:
        errs = [t for t in check_texts if t.startswith("GUEST-ERROR")]
        v.errors.append("check boot gave no store dump" + (f": {errs[0]}" if errs else ""))
        return v, pods
    files = {name: e for (rel, name), e in before.items() if rel == "/"}

    def plausible(pod, k):  # a container of this pod the workload used (or was starting)
        st = pods.get(pod)
        return st is not None and 1 <= k <= st.max_k + 1

    # (a)
    for pod, st in sorted(pods.items()):
        if st.last_ack_add is None:
            continue
        cid, k, ip = st.last_ack_add
        if plugin == "upstream" and (st.last_ack_op != "ADD" or st.del_begun_after_ack):
            v.skipped += 1
            continue
        v.pods_checked += 1
        e = files.get(ip)
        if e is None:
            v.lost.append(f"pod-{pod}: acked {cid} -> {ip}, lease file missing")
            continue
        owner, problem = _read_lease(*e)
        if problem:
            v.lost.append(f"pod-{pod}: acked {cid} -> {ip}, {problem}")
        elif owner[0] != pod or not (k <= owner[1] <= st.max_k + 1):
            v.lost.append(f"pod-{pod}: acked {cid} -> {ip}, lease holds p{owner[0]}s{owner[1]}")

    # (b)
    for name, (ftype, size, data) in sorted(files.items()):
        if IP_RE.fullmatch(name):
            owner, problem = _read_lease(ftype, size, data)
            if problem:
                v.bad_files.append(f"{name}: {problem}")
            elif not plausible(*owner):
                v.bad_files.append(f"{name}: container p{owner[0]}s{owner[1]} the workload never used")
        elif name.endswith(".pod") and IP_RE.fullmatch(name[:-4]):
            if _read_record(data) is None:
                v.bad_records.append(f"{name}: no whole record: {data[:80]!r}")
        elif name == "lock" or name == ".hostlocal":
            pass
        elif name.startswith("last_reserved_ip."):
            if not IP_RE.fullmatch(data.decode("latin-1")):
                v.odd.append(f"{name}: {data[:40]!r}")
        else:
            v.odd.append(f"{name}: {ftype}, {size} bytes")
    for (rel, name), (ftype, size, data) in sorted(before.items()):
        if rel != "/.hostlocal":
            continue
        if name in ("index", "clock", "counters") and ftype == "regular_file":
            # A call changing files in place first overwrites the index's first byte with '#'.
            invalidated = name == "index" and data.startswith(b"#ost-local-index")
            if not data.startswith(b"host-local-" + name.encode()) and not invalidated:
                what = "empty" if not data else "all zero bytes" if not data.strip(b"\0") else f"{data[:24]!r}"
                v.odd.append(f".hostlocal/{name}: {size} bytes, {what} (checksummed: the plugin must reject it)")
        else:
            v.odd.append(f".hostlocal/{name}: {ftype}, {size} bytes")
    if "/" in nodir and any(p.last_ack_add for p in pods.values()):
        v.odd.append("the store directory itself is missing")

    # (c), (d)
    readd, readd_cids = {}, {}
    for t in check_texts:
        m = READD_RE.fullmatch(t)
        if m:
            readd[int(m.group(1))] = m.group(3)
            readd_cids[int(m.group(1))] = m.group(2)
            # (g) Each call's own flush: (f) can only catch the last call's missing one.
            if plugin == "ours" and IP_RE.fullmatch(m.group(3)) and int(m.group(4)) < 1:
                v.unflushed.append(f"pod-{int(m.group(1))}: {m.group(2)} -> {m.group(3)} made no flush of the disk's cache")
        m = READDFAIL_RE.fullmatch(t)
        if m:
            readd[int(m.group(1))] = "FAILED: " + m.group(3)
    if "CHECK-END" not in check_texts:
        v.errors.append("check boot did not finish (no CHECK-END)")
    for pod, st in sorted(pods.items()):
        if st.last_ack_add is None:
            continue
        v.readd_pods += 1
        got = readd.get(pod, "no answer")
        if got == st.last_ack_add[2]:
            v.back += 1
        else:
            v.not_back.append(f"pod-{pod}: acked {st.last_ack_add[0]} -> {st.last_ack_add[2]}, boot 2 got {got}")
    owners = {}
    for pod, ip in readd.items():
        if IP_RE.fullmatch(ip):
            owners.setdefault(ip, []).append(pod)
    for ip, ps in sorted(owners.items()):
        if len(ps) > 1:
            v.dupes.append(f"{ip}: pods {', '.join(f'pod-{p}' for p in sorted(ps))}")

    # (f) ours: the power was cut again right after the last re-ADD, and the disk lost all
    # it had not flushed: every re-ADD that reported an address is on it, lease and record.
    after, _ = parse_dump(verify_texts, "after")
    if plugin == "ours":
        if after is None:
            v.errors.append("verify boot gave no store dump")
        after_files = {name: e for (rel, name), e in (after or {}).items() if rel == "/"}
        for pod, ip in sorted(readd.items()):
            if not IP_RE.fullmatch(ip):
                continue
            v.readds_verified += 1
            cid = readd_cids[pod]
            ftype, _, data = after_files.get(ip, ("missing", 0, b""))
            if ftype != "regular_file" or data != cid.encode() + b"\r\neth0":
                v.lost_again.append(f"pod-{pod}: re-ADD {cid} -> {ip}; after a cut right after it, "
                                    f"the lease is {ftype} {data[:40]!r}")  # fmt: skip
            record = _read_record(after_files.get(ip + ".pod", ("missing", 0, b""))[2])
            if record is None or record.get("containerId") != cid:
                got = "none" if record is None else record.get("containerId")
                v.lost_again.append(f"pod-{pod}: re-ADD {cid} -> {ip}; after a cut right after it, the record names {got}")

    # (e)
    if plugin == "ours":
        stamps = [(name, r) for name, r in _records(files)]
        latest = max((max(r.get("addedAt", 0), r.get("changedAt", 0)) for _, r in stamps), default=0)
        for name, r in _records({n: e for (rel, n), e in (after or {}).items() if rel == "/"}):
            if r.get("bootId") != "boot2":
                continue
            v.clock_checked += 1
            if r.get("addedAt", 0) <= latest:
                v.clock_back.append(f"{name}: addedAt {r.get('addedAt')} <= {latest}, the newest stamp before the cut")
    return v, pods


def _records(files):
    """(name, record) for every pod record among `files` that holds a whole one."""
    for name, (ftype, size, data) in sorted(files.items()):
        if name.endswith(".pod") and IP_RE.fullmatch(name[:-4]):
            record = _read_record(data)
            if record is not None:
                yield name, record


RECORD_SLOT = 4096


def _read_record(data):
    """A pod record file's newest whole record (a dict), or None. Written independently of
    the plugin from its format (plugins/host-local/src/disk/record.rs): plain JSON, or two
    slots, at 0 and RECORD_SLOT, each a line '<json>\\t<FNV-1a 64 of the json, hex>\\n'
    whose JSON has a "seq"; the whole slot with the highest seq is the record."""
    if b"\t" not in data:
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
    def slot(at):  # (the slot's record if whole, where its line ends)
        end = data.find(b"\n", at)
        if end < 0:
            return None, None
        body, tab, digest = data[at:end].rpartition(b"\t")
        if not tab or digest != b"%016x" % _fnv1a(body):
            return None, end
        try:
            record = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None, end
        whole = isinstance(record, dict) and isinstance(record.get("seq"), int)
        return (record if whole else None), end

    first, end = slot(0)
    # A whole first line of RECORD_SLOT bytes or more is a long record, alone in its file.
    slots = [first] + ([slot(RECORD_SLOT)[0]] if not (first and end + 1 >= RECORD_SLOT) else [])
    return max((r for r in slots if r), key=lambda r: r["seq"], default=None)


def _fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------------------------------------
# Runs


class Totals:
    def __init__(self):
        self.cuts = self.acked = self.checked = self.lost = self.bad = self.records = 0
        self.back = self.readd = self.dupes = self.odd = self.failed_cuts = self.errors = self.skipped = 0
        self.unflushed = self.lost_again = 0

    def add(self, v: Verdict, failed: bool):
        self.cuts += 1
        self.acked += v.acked_adds
        self.checked += v.pods_checked
        self.lost += len(v.lost)
        self.bad += len(v.bad_files)
        self.records += len(v.bad_records)
        self.back += v.back
        self.readd += v.readd_pods
        self.dupes += len(v.dupes)
        self.unflushed += len(v.unflushed)
        self.lost_again += len(v.lost_again)
        self.odd += len(v.odd)
        self.skipped += v.skipped
        self.errors += len(v.errors)
        self.failed_cuts += failed


def summary(v: Verdict, plugin):
    s = (
        f"acked ADDs {v.acked_adds}, leases lost {len(v.lost)}/{v.pods_checked}, "
        f"empty/partial files {len(v.bad_files)}, bad pod records {len(v.bad_records)}, odd {len(v.odd)}, "
        f"address back {v.back}/{v.readd_pods}, duplicates {len(v.dupes)}"
    )
    if v.failed_calls:
        s += f", workload calls that failed {v.failed_calls}"
    if plugin == "upstream":
        s += f", not judged (last acked op DEL) {v.skipped}"
    else:
        s += f", node time forward {v.clock_checked - len(v.clock_back)}/{v.clock_checked} records"
        s += f", re-ADDs lost to a second cut {len(v.lost_again)}/{v.readds_verified}, re-ADDs with no flush {len(v.unflushed)}"
    return s


def repair_after_cut(image, fs, what):
    """What a node's boot does to an ext4 without a journal after an unclean shutdown."""
    if fs == "ext4-nojournal":
        fsck = subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, text=True, timeout=120)
        log(f"powercut: {what} exit {fsck.returncode}")


def run_cut(args, work, kernel, initrd, fs, cut_seed, index, logdir):
    rng = random.Random(cut_seed)
    cut_after = rng.uniform(args.min_cut, args.max_cut)
    image = work / f"disk-{fs}-{cut_seed}.img"
    # The guest mounts by type: ext4-nojournal is an ext4.
    common = f"pcfs={fs.split('-')[0]} pcseed={cut_seed} pcpods={args.pods} pcworkers={args.workers}"
    attempts = 3  # TCG on a loaded host occasionally stalls a boot: retry what is safe to retry
    try:
        for attempt in range(1, attempts + 1):
            make_image(image, fs)  # fresh: nothing has run on it
            disk = VolatileDisk(image)
            vm1 = Vm(args, kernel, initrd, disk.qemu_drive(), f"pcmode=workload {common}")
            cut_at, timed_out = vm1.run(args.boot_timeout + args.max_cut, cut_after=cut_after, on_cut=disk.cut_power)
            kept, lost = disk.lose_power(random.Random(f"{cut_seed} cache"))
            if logdir:
                (logdir / f"{fs}-{args.plugin}-seed{cut_seed}.workload.log").write_text(vm1.log_text())
            if cut_at is not None:
                break
            why = "timed out before START" if timed_out else "qemu exited before the cut"
            errs = vm1.guest_errors()
            msg = f"workload boot {why}{': ' + errs[0] if errs else ''}"
            if attempt == attempts or (errs and not timed_out):
                raise HarnessError(f"{msg}\n{vm1.tail()}")
            log(f"powercut: {fs} seed={cut_seed}: {msg} (attempt {attempt}), retrying on a fresh image")
        log(f"powercut: {fs} seed={cut_seed}: the disk's cache at the cut: {kept} blocks written, {lost} lost "
            f"({disk.flushes} flushes before)")
        repair_after_cut(image, fs, f"{fs} seed={cut_seed}: e2fsck -fy")
        for attempt in range(1, attempts + 1):
            # Cut again right after the re-ADDs, losing everything not flushed: (f).
            disk = VolatileDisk(image)
            vm2 = Vm(args, kernel, initrd, disk.qemu_drive(), f"pcmode=check {common}")
            _, timed_out = vm2.run(args.check_timeout, cut_marker="CHECK-END", on_cut=disk.cut_power)
            disk.lose_power(random.Random(), keep=0.0)
            if logdir:
                (logdir / f"{fs}-{args.plugin}-seed{cut_seed}.check.log").write_text(vm2.log_text())
            if not timed_out or "CHECK-END" in vm2.texts():
                break
            # Retry only a boot that hung before it mounted: the disk is still as the cut left it.
            if attempt == attempts or any(t.startswith("GUEST-MOUNTED") for t in vm2.texts()):
                raise HarnessError(f"check boot timed out after {args.check_timeout}s\n{vm2.tail()}")
            log(f"powercut: {fs} seed={cut_seed}: check boot hung before mounting (attempt {attempt}), retrying")
        repair_after_cut(image, fs, f"{fs} seed={cut_seed}: e2fsck -fy before the verify boot:")
        vm3 = Vm(args, kernel, initrd, f"file={image},format=raw,if=virtio,cache=none", f"pcmode=verify {common}")
        _, timed_out = vm3.run(args.check_timeout, end_marker="VERIFY-END")
        if logdir:
            (logdir / f"{fs}-{args.plugin}-seed{cut_seed}.verify.log").write_text(vm3.log_text())
        if timed_out and "VERIFY-END" not in vm3.texts():
            raise HarnessError(f"verify boot timed out after {args.check_timeout}s\n{vm3.tail()}")
    finally:
        image.unlink(missing_ok=True)
    v, pods = judge(args.plugin, vm1.texts(), vm2.texts(), vm3.texts())
    failed = v.failed()
    tag = "report" if args.plugin == "upstream" else ("FAIL" if failed else "PASS")
    log(f"cut {index + 1}/{args.cuts} {fs} {args.plugin} seed={cut_seed} cut={cut_at:.2f}s after START: {summary(v, args.plugin)} -> {tag}")
    details = [("lost", v.lost), ("bad file", v.bad_files), ("bad record", v.bad_records), ("odd", v.odd),
               ("not back", v.not_back), ("duplicate", v.dupes), ("clock went back", v.clock_back),
               ("re-ADD lost", v.lost_again), ("no flush", v.unflushed), ("error", v.errors)]  # fmt: skip
    for label, items in details:
        limit = args.details
        for item in items[:limit]:
            log(f"    {label}: {item}")
        if len(items) > limit:
            log(f"    {label}: ... {len(items) - limit} more")
    if v.errors or args.verbose:
        for t in vm2.texts():
            if t.startswith(("KMSG", "GUEST-")):
                log(f"    console: {t}")
    return v, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fs", action="append", help="ext4, ext4-nojournal, xfs, btrfs, f2fs, or all (repeatable, or comma-separated)")
    ap.add_argument("--cuts", type=int, default=3, help="power cuts per filesystem (default 3)")
    ap.add_argument("--plugin", choices=["ours", "upstream"], default="ours")
    ap.add_argument(
        "--binary", type=Path, help="our host-local (default target/x86_64-unknown-linux-gnu/release/host-local)"
    )
    ap.add_argument("--seed", type=int, help="first cut's seed (cut i uses seed+i); random if absent")
    ap.add_argument("--pods", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--min-cut", type=float, default=0.5, help="earliest cut, seconds after START")
    ap.add_argument("--max-cut", type=float, default=8.0, help="latest cut, seconds after START")
    ap.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    ap.add_argument("--boot-timeout", type=float, default=90, help="seconds for the workload boot to START")
    ap.add_argument("--check-timeout", type=float, default=300, help="seconds for the whole check boot")
    ap.add_argument("--log-dir", type=Path, help="keep every console log there")
    ap.add_argument("--details", type=int, default=8, help="failure lines printed per kind and cut")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    fss = []
    for item in args.fs or ["ext4"]:
        for fs in item.split(","):
            fs = fs.strip()
            if fs == "all":
                fss.extend(FILESYSTEMS)
            elif fs in FILESYSTEMS:
                fss.append(fs)
            else:
                ap.error(f"unknown filesystem {fs!r}")
    fss = list(dict.fromkeys(fss))
    if args.cuts < 1 or args.pods < 1 or args.workers < 1 or not (0 <= args.min_cut <= args.max_cut):
        ap.error("need --cuts >= 1, --pods >= 1, --workers >= 1, 0 <= --min-cut <= --max-cut")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 30)

    try:
        need_tools(fss, args.plugin)
        if args.plugin == "ours":
            binary = (args.binary or REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "host-local").resolve()
            if not binary.is_file():
                raise HarnessError(f"{binary} is missing: cargo build --release -p host-local")
        else:
            binary = UPSTREAM
        digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
        log(f"powercut: plugin {args.plugin} ({binary}, sha256 {digest}...), filesystems {' '.join(fss)}, {args.cuts} cut(s) each, "
            f"seed {seed} (replay one cut: --seed <its seed> --cuts 1)")  # fmt: skip
        CACHE.mkdir(parents=True, exist_ok=True)
        if args.log_dir:
            args.log_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=CACHE))
        # One snapshot for the whole run: the binary may be rebuilt meanwhile.
        snapshot = work / "host-local"
        shutil.copy(binary, snapshot)
    except (HarnessError, kernels.KernelError) as e:
        log(f"powercut: error: {e}")
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    totals = {}
    status = 0
    t_start = time.monotonic()
    try:
        for fs in fss:
            t_fs = time.monotonic()
            kernel = kernels.get_kernel(CACHE, FLAVOUR[fs], log=log)
            initrd = build_initrd(work, kernel, fs, snapshot, f"{fs}-{args.plugin}")
            tot = totals[fs] = Totals()
            for i in range(args.cuts):
                v, failed = run_cut(args, work, kernel, initrd, fs, seed + i, i, args.log_dir)
                tot.add(v, failed)
            initrd.unlink(missing_ok=True)
            log(f"total {fs} {args.plugin}: {tot.cuts} cuts, acked ADDs {tot.acked}, leases lost {tot.lost}/{tot.checked}, "
                f"empty/partial files {tot.bad}, bad pod records {tot.records}, odd {tot.odd}, "
                f"address back {tot.back}/{tot.readd}, duplicates {tot.dupes}, re-ADDs lost to a second cut {tot.lost_again}, "
                f"re-ADDs with no flush {tot.unflushed}, "
                f"failed cuts {tot.failed_cuts} "
                f"({time.monotonic() - t_fs:.0f}s)")  # fmt: skip
    except (HarnessError, kernels.KernelError) as e:
        log(f"powercut: error: {e}")
        status = 2
    except KeyboardInterrupt:
        log("powercut: interrupted")
        status = 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(t.failed_cuts for t in totals.values())
    log(f"powercut: {args.plugin}: {sum(t.cuts for t in totals.values())} cuts, {failed} with a failed verdict, "
        f"{time.monotonic() - t_start:.0f}s")  # fmt: skip
    if status:
        return status
    if args.plugin == "ours" and failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
