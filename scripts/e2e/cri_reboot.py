#!/usr/bin/env python3
"""End-to-end: pods keep their IPs across a simulated offline node reboot.

Runs a private containerd (CRI) with runc, Debian's upstream bridge plugin and a host-local
IPAM (ours, or upstream's to show the problem), and drives the CRI as kubelet does:

1. run several pod sandboxes;
2. simulate a reboot: kill containerd and the shims, unmount and remove the sandboxes'
   network namespaces and mounts, delete the bridge, clear containerd's runtime state and
   runc root; keep /var/lib/cni, the IPAM store and containerd's persistent root;
3. restart containerd; a new pod is created first (it must not take a held address);
4. per pod, as kubelet's SyncPod: StopPodSandbox(old), then RunPodSandbox(attempt + 1),
   and later RemovePodSandbox(old). One pod gets the other order (new sandbox first, the
   old one's DEL later), as when the first DEL is delayed;
5. remove every pod, and check that the whole address pool can be allocated again.

With --ipam delegated the main plugin is a cilium-cni emulator (testdata/go/cilium-emulator,
installed in the plugin dir as cilium-cni) using delegated-ipam, whose delegate is host-local.
With --versions-from CONFLIST the conflist takes that file's cniVersion and cniVersions.

Usage: cri_reboot.py --plugins DIR --expect keep|change [--ipam host-local|delegated]
                     [--versions-from CONFLIST]
Exit status 0 when the expectation holds. Prints a cargo-style "test result" line.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PAUSE_IMAGE = "registry.local/e2e/pause:1"
SUBNET = "10.77.{}.0/28"  # 13 pod addresses: small enough to fill in the pool check


def log(msg):
    print(f"    {msg}", flush=True)


def load_cri_stubs(gen_dir):
    """Compile cri.proto with grpc_tools and import the generated modules."""
    from grpc_tools import protoc

    os.makedirs(gen_dir, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={gen_dir}", f"--grpc_python_out={gen_dir}", os.path.join(HERE, "cri.proto")])
    if rc != 0:
        raise SystemExit("protoc failed on cri.proto")
    sys.path.insert(0, gen_dir)
    import cri_pb2
    import cri_pb2_grpc

    return cri_pb2, cri_pb2_grpc


def pause_image_tar(path):
    """An OCI image archive whose only process is busybox-static sleeping forever."""

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return digest, data

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for d in ["bin", "dev", "proc", "sys", "etc", "tmp"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        with open("/bin/busybox", "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    layer_digest, layer_data = blob(layer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_data = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config_data)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer_data)}],
    }
    manifest_digest, manifest_data = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_data),
                "annotations": {"io.containerd.image.name": PAUSE_IMAGE, "org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in [(layer_digest, layer_data), (config_digest, config_data), (manifest_digest, manifest_data)]:
            add("blobs/sha256/" + digest.split(":")[1], data)


class Node:
    """A private containerd with its own root, state, socket, runc root and CNI config."""

    def __init__(self, work, plugins_dir, ipam_conf, tag, versions_from=None):
        self.work = work
        self.sock = os.path.join(work, "containerd.sock")
        self.state = os.path.join(work, "state")
        self.root = os.path.join(work, "root")
        self.runc_root = os.path.join(work, "runc")
        self.bridge = f"e2e{tag}"
        self.proc = None
        self.boot = 1
        self.netns_paths = []
        os.makedirs(os.path.join(work, "net.d"), exist_ok=True)
        if ipam_conf["type"] == "delegated-ipam":
            # Cilium's delegated-plugin mode; conflists in the wild use 0.3.1.
            main = {"type": "cilium-cni", "ipam": ipam_conf}
            version = "0.3.1"
        else:
            main = {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipam": ipam_conf}
            version = "1.0.0"
        self.conflist = {"cniVersion": version, "name": f"e2e-{tag}", "plugins": [main]}
        if versions_from:
            with open(versions_from) as f:
                shipped = json.load(f)
            self.conflist["cniVersion"] = shipped["cniVersion"]
            if "cniVersions" in shipped:
                self.conflist["cniVersions"] = shipped["cniVersions"]
            log(f"conflist versions from {versions_from}: cniVersion {self.conflist['cniVersion']}, cniVersions {self.conflist.get('cniVersions')}")
        with open(os.path.join(work, "net.d", "10-e2e.conflist"), "w") as f:
            json.dump(self.conflist, f)
        with open(os.path.join(work, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.overlayfs"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{work}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{self.runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{plugins_dir}"
    conf_dir = "{work}/net.d"
    max_conf_num = 1
""")

    def start(self):
        env = dict(os.environ)
        # host-local tells sandboxes of an earlier boot from live ones by the kernel's boot
        # ID; a simulated reboot keeps the kernel, so it gets a new ID this way.
        env["HOST_LOCAL_BOOT_ID"] = f"e2e-boot-{self.boot}-{uuid.uuid4()}"
        logf = open(os.path.join(self.work, f"containerd-boot{self.boot}.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.work, "config.toml")], stdout=logf, stderr=logf, env=env)
        deadline = time.time() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"containerd did not start; see {logf.name}")
            time.sleep(0.1)
        import grpc

        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.cri = CRI_GRPC.RuntimeServiceStub(self.channel)
        for _ in range(100):
            try:
                self.cri.Version(CRI.VersionRequest(version="v1"), timeout=5)
                return
            except Exception:
                time.sleep(0.2)
        raise SystemExit("the CRI service did not answer")

    def import_pause_image(self):
        tar = os.path.join(self.work, "pause.tar")
        pause_image_tar(tar)
        subprocess.run(["ctr", "--address", self.sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native", tar], check=True, stdout=subprocess.DEVNULL)

    def run_pod(self, name, uid, attempt=0):
        meta = CRI.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=attempt)
        config = CRI.PodSandboxConfig(metadata=meta, hostname=name, log_directory=os.path.join(self.work, "logs", name))
        sandbox = self.cri.RunPodSandbox(CRI.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        self.netns_paths.append(self.netns(sandbox))
        return sandbox, self.ip(sandbox)

    def ip(self, sandbox):
        return self.cri.PodSandboxStatus(CRI.PodSandboxStatusRequest(pod_sandbox_id=sandbox), timeout=30).status.network.ip

    def netns(self, sandbox):
        info = self.cri.PodSandboxStatus(CRI.PodSandboxStatusRequest(pod_sandbox_id=sandbox, verbose=True), timeout=30).info
        spec = json.loads(info["info"])["runtimeSpec"]
        return next(ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network")

    def stop_pod(self, sandbox):
        self.cri.StopPodSandbox(CRI.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=120)

    def remove_pod(self, sandbox):
        self.cri.RemovePodSandbox(CRI.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=120)

    def sandboxes(self):
        return {s.id: s for s in self.cri.ListPodSandbox(CRI.ListPodSandboxRequest(), timeout=30).items}

    def kill_everything(self):
        """What a power cut leaves behind, minus the disk."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.channel.close()
        # The shims of this containerd, then every container runc still knows.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                except OSError:
                    continue
                if any(b"containerd-shim" in c for c in cmd[:1]) and self.sock.encode() in cmd:
                    os.kill(int(pid), signal.SIGKILL)
        for ns_dir in (os.path.join(self.runc_root, d) for d in (os.listdir(self.runc_root) if os.path.isdir(self.runc_root) else [])):
            ids = subprocess.run(["runc", "--root", ns_dir, "list", "-q"], capture_output=True, text=True).stdout.split()
            for cid in ids:
                subprocess.run(["runc", "--root", ns_dir, "delete", "--force", cid], capture_output=True)
        # Mounts under the runtime state (sandbox /dev/shm, rootfs) and the network namespaces.
        mounts = [line.split()[1] for line in open("/proc/self/mounts")]
        for m in sorted((m for m in mounts if m.startswith(self.state + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for path in self.netns_paths:
            subprocess.run(["umount", path], capture_output=True)
            if os.path.exists(path):
                os.remove(path)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.runc_root, ignore_errors=True)

    def reboot(self):
        self.kill_everything()
        self.boot += 1
        self.start()


def host_local_call(binary, command, conf, container_id, args="", env=None):
    full_env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": "/var/run/netns/e2e-pool-check", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": args}
    full_env.update(env or {})
    return subprocess.run([binary], input=json.dumps(conf).encode(), env=full_env, capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugins", required=True, help="CNI plugin dir (bridge, loopback, the IPAM)")
    parser.add_argument("--expect", choices=["keep", "change"], required=True)
    parser.add_argument("--ipam", choices=["host-local", "delegated"], default="host-local")
    parser.add_argument("--work", help="scratch directory (default: a new one under /tmp)")
    parser.add_argument("--versions-from", help="a conflist whose cniVersion and cniVersions to use")
    opts = parser.parse_args()

    tag = f"{os.getpid() % 100000}"
    work = opts.work or tempfile.mkdtemp(prefix=f"cri-e2e-{tag}-")
    global CRI, CRI_GRPC
    CRI, CRI_GRPC = load_cri_stubs(os.path.join(work, "gen"))
    data_dir = os.path.join(work, "ipam")
    subnet = SUBNET.format(int(tag) % 250)
    ranges = {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}
    ipam = ranges if opts.ipam == "host-local" else {"type": "delegated-ipam", "delegate": ranges}
    node = Node(work, opts.plugins, ipam, tag, opts.versions_from)
    failures = []
    checks = 0

    def check(ok, what):
        nonlocal checks
        checks += 1
        log(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    try:
        node.start()
        node.import_pause_image()
        pods = {name: f"uid-{name}-{tag}" for name in ["web-0", "web-1", "dns-0"]}
        before = {}
        for name, uid in pods.items():
            sandbox, ip = node.run_pod(name, uid)
            before[name] = (sandbox, ip)
            log(f"{name}: sandbox {sandbox[:12]} has {ip}")

        log("-- simulated node reboot --")
        node.reboot()
        states = {sid: s.state for sid, s in node.sandboxes().items()}
        check(all(states.get(sb) == CRI.SANDBOX_NOTREADY for sb, _ in before.values()), "old sandboxes are NOTREADY after the restart")

        # A pod scheduled to the node while the old ones are not yet recreated.
        intruder, intruder_ip = node.run_pod("newcomer", f"uid-newcomer-{tag}")
        log(f"newcomer: sandbox {intruder[:12]} has {intruder_ip}")
        held = {ip for _, ip in before.values()}
        if opts.expect == "keep":
            check(intruder_ip not in held, "a new pod does not take an address held for another pod")

        after = {}
        for name, uid in pods.items():
            old, _ = before[name]
            if name == "dns-0":
                # The old sandbox's DEL comes only after the new sandbox exists.
                new, ip = node.run_pod(name, uid, attempt=1)
                node.stop_pod(old)
            else:
                node.stop_pod(old)  # kubelet: CNI DEL with an empty netns
                new, ip = node.run_pod(name, uid, attempt=1)
            after[name] = (new, ip)
            log(f"{name}: new sandbox {new[:12]} has {ip}")
        for name in pods:
            node.remove_pod(before[name][0])  # kubelet's sandbox GC, later: DEL again
        for name in pods:
            still = node.ip(after[name][0])
            check(still == after[name][1], f"{name}: the old sandbox's late DEL left the new sandbox's {still}")

        kept = [name for name in pods if before[name][1] == after[name][1]]
        if opts.expect == "keep":
            for name in pods:
                check(name in kept, f"{name} kept {before[name][1]} across the reboot (now {after[name][1]})")
        else:
            check(len(kept) < len(pods), f"with this IPAM, pods changed address: {len(pods) - len(kept)} of {len(pods)}")

        # Everyone leaves; then the whole pool must be allocatable again.
        for sandbox, _ in list(after.values()) + [(intruder, intruder_ip)]:
            node.stop_pod(sandbox)
            node.remove_pod(sandbox)
        host_local = os.path.join(opts.plugins, "host-local")
        conf = {"cniVersion": "1.0.0", "name": node.conflist["name"], "ipam": ranges}
        got = []
        for i in range(13):
            out = host_local_call(host_local, "ADD", conf, f"fill-{i}", f"IgnoreUnknown=1;K8S_POD_NAMESPACE=fill;K8S_POD_NAME=fill-{i}")
            if out.returncode == 0:
                got.append(json.loads(out.stdout)["ips"][0]["address"])
        check(len(set(got)) == 13, f"after every pod is gone, all 13 pool addresses are allocatable ({len(set(got))} were)")
        for i in range(13):
            host_local_call(host_local, "DEL", dict(conf, ipam=dict(ranges, stickyIPs=False)), f"fill-{i}")
    finally:
        node.kill_everything()
        if not opts.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"test result: {'ok' if not failures else 'FAILED'}. {checks - len(failures)} passed; {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
