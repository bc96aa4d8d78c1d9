//! The install image as the DaemonSet runs it: deploy/build-image.sh builds it with podman
//! (vfs storage, no network), and podman runs its init container with temporary directories
//! bind-mounted where the DaemonSet's hostPaths go, a service-account directory, and a local
//! HTTPS endpoint serving a Node object in place of the API server
//! (scripts/e2e/fake_apiserver.py; its certificates are made here with openssl). Every branch
//! of deploy/install-on-node.sh: API server reachable, unreachable, silent, untrusted; node
//! without a pod CIDR; pod CIDR changed; a fresh node offline; the cilium flavor; and binaries
//! replaced atomically while they run.
//!
//! Needs root, podman, openssl, python3 and go; scripts/test.sh installs them.

mod common;

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::TempDir;

const NODE: &str = "edge-node-7";
const TOKEN: &str = "edge-cni-test-token";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The release binaries the image is built from.
fn release_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_host-local")).parent().unwrap().to_path_buf();
    assert!(
        dir.join("delegated-ipam").is_file(),
        "{}/delegated-ipam is missing: cargo build --release --workspace first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private podman store holding the freshly built image; removed on drop.
struct Podman {
    storage: TempDir,
    image: String,
}

impl Podman {
    fn build(tag: &str) -> Podman {
        let storage = TempDir::new(&format!("podman-{tag}"));
        let image = format!("localhost/edge-cni-test-{tag}:{}", std::process::id());
        let podman = Podman { storage, image };
        let out = run(Command::new(workspace().join("deploy/build-image.sh"))
            .args(["--tag", &podman.image, "--binaries"])
            .arg(release_dir())
            .env("PODMAN", podman.global_args().join(" ")));
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        podman
    }

    /// podman with all its state in this store (images, containers, its runtime files). No
    /// systemd needed: cgroupfs, and no event log.
    fn global_args(&self) -> Vec<String> {
        let store = self.storage.display();
        let dirs = [("--root", "root"), ("--runroot", "run"), ("--tmpdir", "tmp")];
        std::iter::once("podman".to_string())
            .chain(dirs.iter().flat_map(|(flag, dir)| [flag.to_string(), format!("{store}/{dir}")]))
            .chain(
                ["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
                    .map(String::from),
            )
            .collect()
    }

    fn command(&self) -> Command {
        let args = self.global_args();
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self.command().args(["rmi", "--all", "--force"]).output();
    }
}

/// A CA that the service account trusts, a server certificate it signed for 127.0.0.1, and
/// a self-signed one for the same address that it did not sign.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(&format!("pki-{tag}"));
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").current_dir(dir.path()).args(args));
        };
        let key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
        let san = ["-addext", "subjectAltName=IP:127.0.0.1"];
        openssl(
            &[&["req", "-x509"][..], &key, &["-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca"]].concat(),
        );
        openssl(
            &[
                &["req", "-x509", "-CA", "ca.crt", "-CAkey", "ca.key"][..],
                &key,
                &san,
                &["-keyout", "trusted.key", "-out", "trusted.crt", "-subj", "/CN=kube-apiserver"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-x509"][..],
                &key,
                &san,
                &["-keyout", "untrusted.key", "-out", "untrusted.crt", "-subj", "/CN=kube-apiserver"],
            ]
            .concat(),
        );
        let sa = dir.path().join("serviceaccount");
        std::fs::create_dir(&sa).unwrap();
        std::fs::copy(dir.path().join("ca.crt"), sa.join("ca.crt")).unwrap();
        std::fs::write(sa.join("token"), TOKEN).unwrap();
        Pki { dir }
    }

    fn service_account(&self) -> PathBuf {
        self.dir.path().join("serviceaccount")
    }
}

/// scripts/e2e/fake_apiserver.py, killed on drop.
struct ApiServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

enum Serve<'a> {
    /// HTTPS with the named certificate of `Pki` ("trusted" or "untrusted").
    Tls(&'a Pki, &'a str),
    /// Accepts connections and never answers.
    Silence,
}

impl ApiServer {
    fn start(tag: &str, serve: Serve) -> ApiServer {
        let dir = TempDir::new(&format!("api-{tag}"));
        std::fs::create_dir(dir.path().join("nodes")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(workspace().join("scripts/e2e/fake_apiserver.py"));
        match serve {
            Serve::Tls(pki, cert) => {
                cmd.arg("--cert")
                    .arg(pki.dir.path().join(format!("{cert}.crt")))
                    .arg("--key")
                    .arg(pki.dir.path().join(format!("{cert}.key")))
                    .args(["--token", TOKEN, "--nodes"])
                    .arg(dir.path().join("nodes"))
                    .arg("--log")
                    .arg(dir.path().join("requests.log"));
            }
            Serve::Silence => {
                cmd.arg("--hang");
            }
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("python3 scripts/e2e/fake_apiserver.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("fake_apiserver.py did not start: {line:?}"));
        ApiServer { child, port, dir }
    }

    /// The Node object the server returns from now on.
    fn serve_node(&self, pod_cidr: Option<&str>) {
        let mut node = serde_json::json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
            "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.7"}]}
        });
        if let Some(cidr) = pod_cidr {
            node["spec"] = serde_json::json!({"podCIDR": cidr, "podCIDRs": [cidr]});
        }
        std::fs::write(self.dir.path().join(format!("nodes/{NODE}.json")), node.to_string()).unwrap();
    }

    /// The requests served so far: (path, carried the service account's token).
    fn requests(&self) -> Vec<(String, bool)> {
        let log = std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        log.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["path"].as_str().unwrap().to_string(), v["authorized"].as_bool().unwrap())
            })
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's /opt/cni/bin and /etc/cni/net.d.
struct HostDirs {
    dir: TempDir,
}

struct InitRun {
    code: i32,
    stderr: String,
    took: Duration,
}

static CONTAINERS: AtomicUsize = AtomicUsize::new(0);

impl HostDirs {
    fn new(tag: &str) -> HostDirs {
        let dir = TempDir::new(tag);
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("net.d")).unwrap();
        HostDirs { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// The init container, with the DaemonSet's mounts and environment, on the host network.
    fn init(&self, podman: &Podman, pki: &Pki, api_port: u16, env: &[(&str, &str)]) -> InitRun {
        let name = format!("edge-cni-init-{}-{}", std::process::id(), CONTAINERS.fetch_add(1, Ordering::Relaxed));
        let mut cmd = podman.command();
        cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
            // podman raises these by default, which needs CAP_SYS_RESOURCE this machine lacks.
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .arg("-v")
            .arg(format!("{}:/host/opt/cni/bin", self.bin().display()))
            .arg("-v")
            .arg(format!("{}:/host/etc/cni/net.d", self.conf().display()))
            .arg("-v")
            .arg(format!("{}:/var/run/secrets/kubernetes.io/serviceaccount:ro", pki.service_account().display()))
            .args(["-e", &format!("NODE_NAME={NODE}"), "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1"])
            .args(["-e", &format!("KUBERNETES_SERVICE_PORT={api_port}")]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        let start = Instant::now();
        let out = cmd.arg(&podman.image).output().unwrap();
        let run = InitRun {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: start.elapsed(),
        };
        eprintln!(
            "init container: exit {} in {:?}\n{}{}",
            run.code,
            run.took,
            String::from_utf8_lossy(&out.stdout),
            run.stderr
        );
        run
    }

    /// Both binaries are the release builds, executable, and no temp file is left behind.
    fn assert_binaries_installed(&self) {
        for bin in ["host-local", "delegated-ipam"] {
            let path = self.bin().join(bin);
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o755, "{bin}");
            assert!(std::fs::read(&path).unwrap() == std::fs::read(release_dir().join(bin)).unwrap(), "{bin} differs");
        }
        for dir in [self.bin(), self.conf()] {
            let leftovers: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with('.'))
                .collect();
            assert!(leftovers.is_empty(), "{}: {leftovers:?}", dir.display());
        }
    }

    fn inode(&self, bin: &str) -> u64 {
        std::fs::metadata(self.bin().join(bin)).unwrap().ino()
    }

    /// A conflist's bytes, inode and mtime: equal states mean it was not touched.
    fn conflist_state(&self, name: &str) -> Option<(Vec<u8>, u64, SystemTime)> {
        let path = self.conf().join(name);
        let meta = std::fs::metadata(&path).ok()?;
        Some((std::fs::read(&path).unwrap(), meta.ino(), meta.modified().unwrap()))
    }

    fn conflist(&self, name: &str) -> libcni::conf::NetworkConfigList {
        let bytes = std::fs::read(self.conf().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        libcni::conf::NetworkConfigList::from_bytes(&bytes).unwrap()
    }

    fn conflist_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.conf().join(name)).unwrap()).unwrap()
    }
}

fn assert_succeeded(run: &InitRun) {
    assert_eq!(run.code, 0, "the init container must succeed: {}", run.stderr);
}

#[test]
#[ignore = "needs root, podman, openssl, python3 and go: run scripts/test.sh"]
fn the_init_container_follows_the_pod_cidr_and_never_needs_the_api_server() {
    let podman = Podman::build("branches");
    let pki = Pki::new("branches");
    let node = HostDirs::new("image-node");
    let conflist = "10-edge.conflist";

    // Reachable: the binaries are installed and the conflist is written for the node's CIDR.
    let api = ApiServer::start("branches", Serve::Tls(&pki, "trusted"));
    api.serve_node(Some("10.244.7.0/24"));
    let first = node.init(&podman, &pki, api.port, &[]);
    assert_succeeded(&first);
    node.assert_binaries_installed();
    let list = node.conflist(conflist);
    assert_eq!(list.plugins[0].raw["ipam"]["ranges"][0][0]["subnet"], "10.244.7.0/24");
    assert_eq!(node.conflist_json(conflist)["cniVersions"], serde_json::json!(["0.3.1", "1.0.0", "1.1.0"]));
    assert_eq!(api.requests(), vec![(format!("/api/v1/nodes/{NODE}"), true)], "asked once, with the token");

    // Reachable, same CIDR: the conflist is not touched.
    let written = node.conflist_state(conflist);
    let again = node.init(&podman, &pki, api.port, &[]);
    assert_succeeded(&again);
    assert!(again.stderr.contains("is for pod CIDR 10.244.7.0/24; left as it is"), "{}", again.stderr);
    assert!(node.conflist_state(conflist) == written, "the conflist changed");

    // Unreachable (nothing listens): binaries refreshed, conflist kept, said on stderr.
    let port = api.port;
    drop(api);
    let inode = node.inode("host-local");
    let offline = node.init(&podman, &pki, port, &[]);
    assert_succeeded(&offline);
    assert!(offline.stderr.contains("connection refused"), "{}", offline.stderr);
    assert!(offline.stderr.contains("a conflist, if any, is kept as it is"), "{}", offline.stderr);
    assert_ne!(node.inode("host-local"), inode, "the binaries are installed offline too");
    node.assert_binaries_installed();
    assert!(node.conflist_state(conflist) == written, "an offline run changed the conflist");

    // Silent (packets dropped): the request times out and the run goes on.
    let silent = ApiServer::start("silent", Serve::Silence);
    let timed_out = node.init(&podman, &pki, silent.port, &[]);
    assert_succeeded(&timed_out);
    assert!(timed_out.stderr.contains("Client.Timeout exceeded"), "{}", timed_out.stderr);
    assert!(timed_out.took < Duration::from_secs(30), "took {:?}", timed_out.took);
    assert!(node.conflist_state(conflist) == written, "a timed-out run changed the conflist");
    drop(silent);

    // A server the service account's CA did not sign never sees the token, and changes nothing.
    let impostor = ApiServer::start("impostor", Serve::Tls(&pki, "untrusted"));
    impostor.serve_node(Some("10.244.66.0/24"));
    let refused = node.init(&podman, &pki, impostor.port, &[]);
    assert_succeeded(&refused);
    assert!(refused.stderr.contains("certificate signed by unknown authority"), "{}", refused.stderr);
    assert!(impostor.requests().is_empty(), "the token went to an unverified server: {:?}", impostor.requests());
    assert!(node.conflist_state(conflist) == written, "an unverified answer changed the conflist");
    drop(impostor);

    // No spec.podCIDR: the conflist is kept.
    let api = ApiServer::start("branches-2", Serve::Tls(&pki, "trusted"));
    api.serve_node(None);
    let no_cidr = node.init(&podman, &pki, api.port, &[]);
    assert_succeeded(&no_cidr);
    assert!(no_cidr.stderr.contains(&format!("node {NODE} has no spec.podCIDR")), "{}", no_cidr.stderr);
    assert!(node.conflist_state(conflist) == written, "a node without podCIDR changed the conflist");

    // The CIDR changed (the node was re-registered): the conflist follows it.
    api.serve_node(Some("10.244.9.0/24"));
    let changed = node.init(&podman, &pki, api.port, &[]);
    assert_succeeded(&changed);
    assert!(
        changed.stderr.contains("is for pod CIDR 10.244.7.0/24, the node's is now 10.244.9.0/24"),
        "{}",
        changed.stderr
    );
    assert_eq!(node.conflist(conflist).plugins[0].raw["ipam"]["ranges"][0][0]["subnet"], "10.244.9.0/24");
    node.assert_binaries_installed();

    // A later offline run keeps the new CIDR.
    let port = api.port;
    drop(api);
    let rewritten = node.conflist_state(conflist);
    assert_succeeded(&node.init(&podman, &pki, port, &[]));
    assert!(node.conflist_state(conflist) == rewritten, "an offline run changed the conflist");

    // A fresh node whose API server is unreachable: binaries, no conflist, success.
    let fresh = HostDirs::new("image-fresh-node");
    let run = fresh.init(&podman, &pki, port, &[]);
    assert_succeeded(&run);
    fresh.assert_binaries_installed();
    assert_eq!(std::fs::read_dir(fresh.conf()).unwrap().count(), 0, "no conflist without a pod CIDR");

    // The cilium flavor, online, with the DaemonSet's CNI_VERSIONS narrowed.
    let api = ApiServer::start("cilium", Serve::Tls(&pki, "trusted"));
    api.serve_node(Some("10.244.3.0/24"));
    assert_succeeded(&fresh.init(
        &podman,
        &pki,
        api.port,
        &[("CNI_FLAVOR", "cilium"), ("CNI_VERSIONS", "0.3.1,1.0.0")],
    ));
    let list = fresh.conflist("05-cilium.conflist");
    let ipam = &list.plugins[0].raw["ipam"];
    assert_eq!(
        (ipam["type"].as_str(), ipam["delegate"]["type"].as_str()),
        (Some("delegated-ipam"), Some("host-local"))
    );
    assert_eq!(ipam["delegate"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    assert_eq!(fresh.conflist_json("05-cilium.conflist")["cniVersions"], serde_json::json!(["0.3.1", "1.0.0"]));
}

/// Reinstalling from the image while the runtime executes the plugin never breaks an exec.
#[test]
#[ignore = "needs root, podman, openssl, python3 and go: run scripts/test.sh"]
fn the_init_container_replaces_binaries_atomically_while_they_run() {
    let podman = Podman::build("atomic");
    let pki = Pki::new("atomic");
    let api = ApiServer::start("atomic", Serve::Tls(&pki, "trusted"));
    api.serve_node(Some("10.244.8.0/24"));
    let node = HostDirs::new("image-atomic");
    assert_succeeded(&node.init(&podman, &pki, api.port, &[]));
    let first_inode = node.inode("host-local");
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let (target, stop) = (node.bin().join("host-local"), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let out =
                    Command::new(&target).env("CNI_COMMAND", "VERSION").output().expect("exec of the installed plugin");
                assert!(
                    out.status.success() && out.stdout.starts_with(b"{\"cniVersion\""),
                    "a half-written binary ran: {out:?}"
                );
                runs += 1;
            }
            runs
        })
    };
    for _ in 0..5 {
        assert_succeeded(&node.init(&podman, &pki, api.port, &[]));
    }
    stop.store(true, Ordering::Relaxed);
    let runs = runner.join().expect("every exec succeeded");
    assert!(runs > 0);
    assert_ne!(node.inode("host-local"), first_inode, "replaced by rename, not rewritten");
    node.assert_binaries_installed();
    assert_eq!(node.conflist("10-edge.conflist").plugins[0].raw["ipam"]["ranges"][0][0]["subnet"], "10.244.8.0/24");
}

/// The metrics container as the DaemonSet runs it: the textfile appears, is always a whole
/// file that Prometheus's parser reads, and follows the store.
#[test]
#[ignore = "needs root, podman and the e2e venv: run scripts/test.sh"]
fn the_metrics_container_keeps_a_whole_textfile_for_node_exporter() {
    let podman = Podman::build("metrics");
    let host = TempDir::new("metrics-host");
    let (state, conf, textfile) = (host.path().join("cni"), host.path().join("net.d"), host.path().join("textfile"));
    for dir in [&state, &conf, &textfile] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let ipam = format!(
        r#"{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.80.0.0/28"}}]]}}"#,
        state.join("networks").display()
    );
    let list = format!(r#"{{"cniVersion":"1.0.0","name":"edge","plugins":[{{"type":"bridge","ipam":{ipam}}}]}}"#);
    std::fs::write(conf.join("10-edge.conflist"), list).unwrap();
    let add = |sandbox: &str| {
        let net = format!(r#"{{"cniVersion":"1.0.0","name":"edge","ipam":{ipam}}}"#);
        let call = common::Call::new("ADD", sandbox, &net).args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p");
        assert!(common::run(Path::new(env!("CARGO_BIN_EXE_host-local")), &call).ok());
    };
    add("s1");

    let name = format!("edge-cni-metrics-{}", std::process::id());
    // The command the DaemonSet gives the metrics container (a JSON array in the YAML).
    let yaml = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml")).unwrap();
    let line =
        yaml.lines().find(|l| l.contains("metrics-textfile.sh")).expect("the DaemonSet runs metrics-textfile.sh");
    let command: Vec<String> = serde_json::from_str(line.trim().strip_prefix("command:").unwrap().trim()).unwrap();
    // Every second rather than every 30, for the test.
    let (entrypoint, args) = (&command[0], [command[1].clone(), "1".to_string()]);
    let mut cmd = podman.command();
    cmd.args(["run", "-d", "--name", &name, "--network", "none"])
        .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
        .arg("-v")
        .arg(format!("{}:/host/var/lib/cni", state.display()))
        .arg("-v")
        .arg(format!("{}:/host/etc/cni/net.d:ro", conf.display()))
        .arg("-v")
        .arg(format!("{}:/host/textfile", textfile.display()))
        .args(["--entrypoint", entrypoint, &podman.image])
        .args(args);
    run(&mut cmd);
    let file = textfile.join("edge-cni.prom");
    let active = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("host_local_addresses{") && l.contains("state=\"active\""))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !seen.iter().any(|t: &String| active(t).as_deref() == Some("2")) {
        if let Ok(text) = std::fs::read_to_string(&file) {
            // Whole every time it is read: the last family is there, and the file ends a line.
            assert!(text.ends_with('\n') && text.contains("host_local_debris_cleaned_total{"), "{text:?}");
            if active(&text).as_deref() == Some("1") && seen.is_empty() {
                add("s2"); // the next round must show it
            }
            seen.push(text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = podman.command().args(["rm", "--force", &name]).output();
    let last = seen.last().expect("the metrics container wrote no textfile");
    assert_eq!(active(last).as_deref(), Some("2"), "the textfile follows the store: {last}");
    let python =
        std::env::var("E2E_PYTHON").expect("E2E_PYTHON: scripts/test.sh builds the venv with prometheus_client");
    let parsed = Command::new(python)
        .args(["-c", "import sys; from prometheus_client.parser import text_string_to_metric_families as p; print(len(list(p(open(sys.argv[1]).read()))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "6", "six metric families");
}

/// The DaemonSet mounts and runs what the image and the test above expect.
#[test]
fn the_daemonset_matches_the_image() {
    let yaml = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml")).unwrap();
    for line in [
        "command: [\"/opt/edge-cni/install-on-node.sh\"]",
        "mountPath: /host/opt/cni/bin",
        "mountPath: /host/etc/cni/net.d",
        "path: /opt/cni/bin",
        "path: /etc/cni/net.d",
        "fieldPath: spec.nodeName",
        "name: CNI_FLAVOR",
        "name: CNI_VERSIONS",
    ] {
        assert!(yaml.contains(line), "deploy/daemonset.yaml lacks {line}");
    }
    let containerfile = std::fs::read_to_string(workspace().join("deploy/Containerfile")).unwrap();
    assert!(containerfile.contains("FROM scratch\n"), "the image is built from scratch");
    assert!(!containerfile.contains("apt-get"), "nothing is fetched at build time");
}
