"""Debian 6.1 kernels for the power-cut VM: download, unpack (never install), module order.

The packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
target/powercut/ (a cache; a fresh machine downloads them once). Two flavours:

- cloud   (linux-image-<abi>-cloud-amd64-unsigned): ext4 built in; xfs, btrfs, virtio are modules;
- generic (linux-image-<abi>-amd64-unsigned): the only one with f2fs (a module).

The insmod order is computed from the unpacked tree itself (`depmod -b`, then modules.dep,
modules.softdep, modules.alias, modules.builtin), never hard-coded: it changes between builds.
"""

import contextlib
import fcntl
import fnmatch
import gzip
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAVOURS = {"cloud": "cloud-amd64", "generic": "amd64"}
ABI_RE = re.compile(r"^linux-image-(6\.1\.0-(\d+))-(cloud-amd64|amd64)-unsigned$")


class KernelError(Exception):
    pass


@contextlib.contextmanager
def _locked(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(cmd, **kw):
    kw.setdefault("timeout", 900)
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise KernelError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


def _available_abis():
    """ABI strings (6.1.0-N) per flavour that apt knows, newest first."""

    def scan():
        found = {f: set() for f in FLAVOURS}
        out = subprocess.run(["apt-cache", "pkgnames", "linux-image-6.1.0-"], capture_output=True, text=True).stdout
        for name in out.split():
            m = ABI_RE.match(name)
            if m:
                flavour = "cloud" if m.group(3) == "cloud-amd64" else "generic"
                found[flavour].add(m.group(1))
        return found

    found = scan()
    if not found["cloud"] or not found["generic"]:
        _run(["apt-get", "update", "-qq"])
        found = scan()
    key = lambda abi: int(abi.rsplit("-", 1)[1])  # noqa: E731
    return {f: sorted(v, key=key, reverse=True) for f, v in found.items()}


def _ready_dirs(cache: Path, flavour: str):
    suffix = FLAVOURS[flavour]
    out = []
    for d in cache.glob(f"linux-6.1.0-*-{suffix}"):
        m = re.match(rf"^linux-(6\.1\.0-\d+)-{re.escape(suffix)}$", d.name)
        if m and (d / ".ready").exists():
            out.append((int(m.group(1).rsplit("-", 1)[1]), m.group(1), d))
    return [(abi, d) for _, abi, d in sorted(out, reverse=True)]


class Kernel:
    def __init__(self, root: Path, release: str):
        self.root = root
        self.release = release
        self.vmlinuz = root / "boot" / f"vmlinuz-{release}"
        self.moddir = root / "lib" / "modules" / release

    def __repr__(self):
        return f"Kernel({self.release})"

    def module_order(self, wanted):
        """[(kind, path)] to insmod in order; kind is "hard" or "soft" (may fail: soft deps)."""
        dep_file = self.moddir / "modules.dep"
        deps, by_name = {}, {}
        for line in dep_file.read_text().splitlines():
            if ":" not in line:
                continue
            mod, rest = line.split(":", 1)
            deps[mod] = rest.split()
            by_name[_modname(mod)] = mod
        builtin = set()
        bfile = self.moddir / "modules.builtin"
        if bfile.exists():
            builtin = {_modname(x) for x in bfile.read_text().split()}
        softdeps = {}
        sfile = self.moddir / "modules.softdep"
        if sfile.exists():
            for line in sfile.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "softdep":
                    pre, cur = [], None
                    for tok in parts[2:]:
                        if tok.endswith(":"):
                            cur = tok[:-1]
                        elif cur == "pre":
                            pre.append(tok)
                    softdeps.setdefault(_modname(parts[1]), []).extend(pre)
        aliases = []
        afile = self.moddir / "modules.alias"
        if afile.exists():
            for line in afile.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "alias":
                    aliases.append((parts[1], _modname(parts[2])))

        order, kinds = [], {}

        def resolve(name):
            # A soft dependency names a module or an alias (often a crypto algorithm, e.g.
            # "crc32", which is also the name of the built-in lib/crc32): take both.
            n = _modname(name)
            found = [n] if n in by_name else []
            found += sorted({m for pat, m in aliases if fnmatch.fnmatchcase(name, pat)} - set(found))
            return found

        def add(name, hard, stack):
            if name in builtin:
                return
            mod = by_name.get(name)
            if mod is None:
                if hard:
                    raise KernelError(f"{self.release}: module {name} is neither built in nor a module")
                return
            if name in kinds:
                if hard and kinds[name] == "soft":
                    kinds[name] = "hard"
                return
            if name in stack:
                return
            stack = stack | {name}
            for sd in softdeps.get(name, []):
                for cand in resolve(sd):
                    add(cand, False, stack)
            for d in deps[mod]:
                add(_modname(d), hard, stack)
            kinds[name] = "hard" if hard else "soft"
            order.append(name)

        for w in wanted:
            add(_modname(w), True, frozenset())
        return [(kinds[n], self.moddir / by_name[n]) for n in order]

    def has_module_or_builtin(self, name):
        n = _modname(name)
        text = (self.moddir / "modules.dep").read_text()
        if any(_modname(line.split(":", 1)[0]) == n for line in text.splitlines() if ":" in line):
            return True
        bfile = self.moddir / "modules.builtin"
        return bfile.exists() and any(_modname(x) == n for x in bfile.read_text().split())


def _modname(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """The module's ELF bytes (busybox insmod wants them uncompressed)."""
    name = path.name
    if name.endswith(".ko"):
        return path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    raise KernelError(f"{path}: compressed in a format Python's stdlib cannot read")


def get_kernel(cache: Path, flavour: str, log=print) -> Kernel:
    """The unpacked kernel of that flavour, downloading it when it is not cached.

    POWERCUT_KERNEL_ABI (e.g. 6.1.0-57) pins the ABI; otherwise a cached one is used, else
    the newest 6.1 ABI apt knows for both flavours."""
    suffix = FLAVOURS[flavour]
    with _locked(cache):
        pinned = os.environ.get("POWERCUT_KERNEL_ABI")
        ready = _ready_dirs(cache, flavour)
        if pinned:
            ready = [(a, d) for a, d in ready if a == pinned]
        if ready:
            abi, d = ready[0]
            return Kernel(d, f"{abi}-{suffix}")
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise KernelError("apt-get and dpkg-deb are needed to fetch the kernel (Debian only)")
        if shutil.which("depmod") is None:
            raise KernelError("depmod is missing: apt-get install kmod")
        if pinned:
            abi = pinned
        else:
            avail = _available_abis()
            both = [a for a in avail["cloud"] if a in avail["generic"]]
            pool = both or avail[flavour]
            if not pool:
                raise KernelError(f"apt knows no linux-image-6.1.0-*-{suffix}-unsigned (is this Debian 12?)")
            abi = pool[0]
        pkg = f"linux-image-{abi}-{suffix}-unsigned"
        release = f"{abi}-{suffix}"
        final = cache / f"linux-{release}"
        log(f"powercut: fetching {pkg} into {final} (once; cached under target/powercut)")
        work = Path(tempfile.mkdtemp(prefix=f"fetch-{release}-", dir=cache))
        try:
            os.chmod(work, 0o755)
            _run(["apt-get", "download", pkg], cwd=work)
            debs = list(work.glob("*.deb"))
            if len(debs) != 1:
                raise KernelError(f"apt-get download {pkg} left {debs}")
            tree = work / "tree"
            _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
            keep = work / "keep"
            (keep / "boot").mkdir(parents=True)
            (keep / "lib" / "modules").mkdir(parents=True)
            src_boot = tree / "boot"
            for f in src_boot.iterdir():
                if f.name.startswith(("vmlinuz-", "config-")):
                    shutil.move(str(f), keep / "boot" / f.name)
            mods = tree / "lib" / "modules" / release
            if not mods.is_dir():
                mods = tree / "usr" / "lib" / "modules" / release
            shutil.move(str(mods), keep / "lib" / "modules" / release)
            _run(["depmod", "-b", str(keep), release])
            (keep / ".ready").write_text(pkg + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(keep, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        k = Kernel(final, release)
        if not k.vmlinuz.is_file():
            raise KernelError(f"{pkg} has no {k.vmlinuz.name}")
        return k
