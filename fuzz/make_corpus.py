#!/usr/bin/env python3
"""Regenerates the seed corpus in fuzz/corpus/<target>/ from testdata/upstream, the
example conflists and hand-made seeds. Run from anywhere: python3 fuzz/make_corpus.py.
Seeds are small (a few KB per target); libFuzzer grows its own corpus elsewhere
(scripts/fuzz.sh keeps that under target/fuzz/)."""

import hashlib
import os
import shutil

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def word_checksum(data: bytes) -> int:
    """index.rs's `word_checksum`: FNV-1a's step over 8-byte little-endian words, each
    product's high half folded into its low half, then the last bytes one at a time."""
    mask = 0xFFFFFFFFFFFFFFFF

    def step(h, w):
        h = ((h ^ w) * 0x100000001B3) & mask
        return h ^ (h >> 32)

    h = 0xCBF29CE484222325
    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        h = step(h, int.from_bytes(data[i:i + 8], "little"))
    for b in data[whole:]:
        h = step(h, b)
    return h


def index(body_lines, mtime=(1700000000, 123)) -> bytes:
    """An index as index.rs renders it (header, lines, `end <len> <checksum hex>`)."""
    text = "host-local-index v4 %d %d\n" % mtime + "".join(l + "\n" for l in body_lines)
    data = text.encode()
    return data + b"end %d %016x\n" % (len(data), word_checksum(data))


def record(cid="c1", ifname="eth0", ns="ns", name="p1", uid="", boot="b1", state="active",
           since="2026-01-01T00:00:00Z") -> bytes:
    return ('{"containerId":"%s","ifname":"%s","namespace":"%s","name":"%s","uid":"%s",'
            '"bootId":"%s","state":"%s","since":"%s"}\n' % (cid, ifname, ns, name, uid, boot, state, since)).encode()


RECORD_SLOT = 4096


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def slot(seq, volatile=False, **fields) -> bytes:
    """A record slot as record.rs writes it: `<json>\\t<FNV-1a 64 hex>\\n`, with `seq`."""
    body = record(**fields).rstrip(b"\n")[:-1] + b',"seq":%d%s}' % (seq, b',"volatile":true' if volatile else b"")
    return body + b"\t%016x\n" % fnv1a(body)


def slotted(first, second=None) -> bytes:
    """A record file: `first` at 0, `second` (if any) at RECORD_SLOT."""
    if second is None:
        return first
    return first + b"\0" * (RECORD_SLOT - len(first)) + second


def upstream():
    stdins, stdouts = [], []
    with open(os.path.join(ROOT, "testdata/upstream/host-local-outputs.txt")) as f:
        text = f.read()
    for block in text.split("##### ")[1:]:
        if "stdin: " in block:
            stdins.append(block.split("stdin: ", 1)[1].split("\n", 1)[0].encode())
        if "stdout:\n" in block:
            out = block.split("stdout:\n", 1)[1].split("\nexit:", 1)[0].encode()
            if out.strip():
                stdouts.append(out)
    return stdins, stdouts


def conflists():
    d = os.path.join(ROOT, "deploy/conflists")
    return [open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))]


def dedup_small(seeds, budget):
    """Distinct seeds, shortest first, within `budget` bytes in total."""
    out, total = [], 0
    for s in sorted(set(seeds), key=lambda s: (len(s), s)):
        if total + len(s) > budget:
            continue
        out.append(s)
        total += len(s)
    return out


# store_dir's encoding (fuzz_targets/store_dir.rs): config, entry count, entries
# (name byte, kind byte, content), then calls (two bytes each).
IPS = ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.0", "10.1.0.1", "10.1.0.7",
       "10.1.1.1", "10.1.1.2", "10.1.1.3", "10.2.0.1", "fd00::2", "fd00::1", "fd00::", "fd00::7"]


def lease_name(ip):
    return IPS.index(ip)


def pod_name(ip):
    return 0x60 | IPS.index(ip)


def marker_name(ip, which=0):  # 0: ns_p1, 1: ns_p2, 2: other_p1
    return ((9 + which) << 4) | IPS.index(ip)


def junk_name(i):
    return 0xC0 | i


def tpl_lease(container=0, ifname=0):
    return bytes([3 | container << 3 | ifname << 5])


def tpl_old(container=0):
    return bytes([4 | container << 3])


def tpl_record(container=0, ifname=0, pod=1, boot=0, held=False, old=False):
    return bytes([5 | container << 3 | ifname << 5, pod | boot << 2 | (16 if held else 0) | (32 if old else 0)])


def tpl_ip(ip):
    return bytes([6, IPS.index(ip)])


def raw(data: bytes):
    return bytes([0, len(data)]) + data


FILE, INDEX, DIR, LINK = 0, 4, 5, 6


def call(verb, container=0, ifname=0, pod=0, boot=0, req=None, keep=0b111):
    a = verb | container << 2 | ifname << 4 | pod << 5
    b = boot | ((8 + req) << 1 if req is not None else 0) | keep << 5
    return bytes([a, b])


ADD, DEL, CHECK, GC = 0, 1, 2, 3


def store(config, entries, calls):
    out = bytes([config, len(entries)])
    for name, kind, content in entries:
        out += bytes([name, kind]) + content
    return out + b"".join(calls)


def store_seeds():
    basic = [call(ADD, 0), call(ADD, 1), call(CHECK, 0), call(DEL, 0), call(GC, keep=0b010), call(ADD, 2)]
    sticky = [call(ADD, 0, pod=1), call(DEL, 0, pod=1), call(ADD, 1, pod=1), call(CHECK, 1, pod=1),
              call(ADD, 2, pod=2, boot=1), call(GC, boot=1, keep=0)]
    return {
        "empty": store(0, [], basic),
        "sticky-empty": store(1, [], sticky),
        "dual-stack": store(2, [], sticky + [call(ADD, 3, ifname=1)]),
        "narrow": store(3, [], [call(ADD, i) for i in range(4)] + [call(ADD, 0, req=0)]),
        "leases": store(0, [(lease_name("10.1.0.2"), FILE, tpl_lease(1)),
                            (lease_name("10.1.0.3"), FILE, tpl_old(2)),
                            (lease_name("10.1.0.4"), FILE, raw(b"\xff\xfe\r\neth0")),
                            (junk_name(6), FILE, tpl_ip("10.1.0.3"))], basic),
        "held": store(1, [(lease_name("10.1.0.5"), FILE, tpl_lease(3)),
                          (pod_name("10.1.0.5"), FILE, tpl_record(3, pod=1, held=True)),
                          (lease_name("10.1.0.6"), FILE, tpl_lease(2)),
                          (pod_name("10.1.0.6"), FILE, tpl_record(2, pod=2, boot=2, old=True))], sticky),
        "markers": store(1, [(marker_name("10.1.0.4", 0), FILE, raw(b"")),
                             (marker_name("10.1.0.7", 1), FILE, raw(b"")),
                             (marker_name("10.1.0.6", 2), FILE, raw(b""))],
                         [call(ADD, 0, pod=1), call(ADD, 1, pod=2), call(ADD, 2, pod=3), call(ADD, 3)]),
        "odd-entries": store(0, [(lease_name("10.1.0.2"), DIR, b""),
                                 (lease_name("10.1.0.3"), LINK, bytes([0])),
                                 (pod_name("10.1.0.3"), LINK, bytes([1])),
                                 (junk_name(0), LINK, bytes([1])),
                                 (junk_name(5), LINK, bytes([2])),
                                 (junk_name(6), LINK, bytes([0]))], basic),
        "gateway-lease": store(1, [(lease_name("10.1.0.1"), FILE, tpl_lease(0)),
                                   (lease_name("10.1.0.0"), FILE, tpl_lease(1)),
                                   (lease_name("10.1.0.7"), FILE, tpl_lease(2)),
                                   (pod_name("10.1.0.7"), FILE, tpl_record(2, pod=1, held=True))],
                               [call(ADD, 0), call(ADD, 1), call(ADD, 3, pod=1), call(CHECK, 0)]),
        "index": store(0, [(junk_name(1), FILE, raw(index(["L 10.1.0.2 1 c1%0D%0Aeth0"])[:96]))], basic),
        # A checksummed index made by the harness: true lease lines, one left out (lying).
        "index-lying": store(0, [(lease_name("10.1.0.2"), FILE, tpl_lease(1)),
                                 (lease_name("10.1.0.3"), FILE, tpl_lease(2)),
                                 (0, INDEX, bytes([0b011, 0]))], basic),
        "index-true": store(1, [(lease_name("10.1.0.2"), FILE, tpl_lease(0)),
                                (0, INDEX, bytes([0b1111111, 0]))], sticky),
        "index-fuzzed": store(0, [(0, INDEX, bytes([0b10]) + bytes([len(b"L 10.1.0.2 5 c1%0D%0Aeth0\nM 10.1.0.6 ns p1 3\n")])
                                  + b"L 10.1.0.2 5 c1%0D%0Aeth0\nM 10.1.0.6 ns p1 3\n")],
                              [call(ADD, 0, pod=1), call(ADD, 1), call(DEL, 1)]),
        "requested": store(0, [], [call(ADD, 0, req=i) for i in range(8)]),
    }


def main():
    stdins, stdouts = upstream()
    confs = conflists()
    good_index = index(["L 10.1.0.2 7 c1%0D%0Aeth0",
                        "P 10.1.0.2 c1 eth0 default web-0 ~ b active 5 6 7",
                        "L 10.1.0.3 8 %",
                        "L 10.1.0.4 9 c2",
                        "M 10.0.0.9 ns p 3"])
    records = [record(), record(state="held", boot="b0"), record(uid="u1", ns="", name=""),
               record(since="2026-01-01T00:00:00.5+02:00"), b'{"containerId":" c1 ","ifname":"","state":"held","since":"1970-01-01T00:00:00Z"}']
    seeds = {
        "config": [s + b"\0" + a for s in stdins[:12] for a in [b"", b"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p1;IP=10.1.2.9"]][:20]
                  + confs,
        "cni_args": [b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.0.0.5/24",
                     b"IP=10.1.2.3", b"IP=2001:db8::1;IgnoreUnknown=true", b"K8S_POD_UID=abc;X=;=y", b"a=b=c;;"],
        "result": stdouts,
        "leases": [good_index, index([]), records[0], b"10.0.0.9_kube-system_coredns-x", b"10.1.0.6", b"::ffff:10.1.0.6"],
        "skel": stdins + confs,
        "lease_file": [b"c1\r\neth0", b"c9\r\neth0", b"c9", b"c8\r\neth0\n", b"", b" \n\t", b"\0\0\0",
                       b"\xff\xfe\r\neth0", b"c9\r\n\xffeth0", b"%", b"x" * 200],
        "pod_record": records + [
            slotted(slot(1)),
            slotted(slot(1), slot(2, volatile=True, state="held")),
            slotted(slot(3, cid="c2"), slot(2, volatile=True, state="held")),
            slotted(slot(1)[:40], slot(2, state="held")),
        ],
        "index": [good_index[:good_index.rindex(b"end ")], b"host-local-index v4 1 2\nL 10.1.0.2 7 %\n",
                  good_index, index([]), index(["M 10.1.0.9 kube-system coredns 1"]),
                  index(["L 10.1.0.2 1 ~", "L fd00::2 2 a%20b", "P fd00::2 a%20b eth0 ~ ~ u ~ held 0 1 2"], (0, 0))],
        "last_reserved": [bytes([c]) + ip for c in range(4) for ip in
                          [b"10.1.0.6", b"10.1.0.5", b"10.1.1.2", b"::ffff:10.1.0.6", b"10.1.0.7", b"fd00::7"]]
                         + [b"\0", b"\0 10.1.0.6\n", b"\x02fd00::6"],
        "store_dir": list(store_seeds().values()),
    }
    for target, items in seeds.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        # Two-slot pod records are 4 KiB and more each.
        for s in dedup_small(items, 32768 if target == "pod_record" else 8192):
            with open(os.path.join(d, hashlib.sha1(s).hexdigest()[:16]), "wb") as f:
                f.write(s)


if __name__ == "__main__":
    main()
