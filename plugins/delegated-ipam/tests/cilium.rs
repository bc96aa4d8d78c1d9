//! delegated-ipam as cilium-cni calls it: a cilium-cni emulator (testdata/go/cilium-emulator,
//! Go on Debian's libcni) is the main plugin, driven through our cnitool and through upstream
//! Go libcni (testdata/go/gocnitool). Also called directly, as the emulator would.
//!
//! Needs CILIUM_EMULATOR and GOCNITOOL (built by scripts/test.sh) and Debian's upstream
//! host-local for the "any delegate" case.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const UPSTREAM_HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// A CNI_PATH dir, a config dir and a data dir, removed on drop.
struct Scene {
    root: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Scene {
    fn new(tag: &str, host_local: &Path) -> Scene {
        let scratch = tempfile::Builder::new().prefix(&format!("dipam-{tag}-")).tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        for d in ["bin", "net.d", "data", "cache", "outside"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let bin = root.join("bin");
        let emulator =
            std::env::var("CILIUM_EMULATOR").expect("CILIUM_EMULATOR: scripts/test.sh builds the cilium-cni emulator");
        std::os::unix::fs::symlink(emulator, bin.join("cilium-cni")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_delegated-ipam"), bin.join("delegated-ipam")).unwrap();
        std::os::unix::fs::symlink(host_local, bin.join("host-local")).unwrap();
        Scene { root, _scratch: scratch }
    }

    fn ours_host_local() -> PathBuf {
        workspace_bin("host-local")
    }

    /// A shell-script plugin in the plugin dir.
    fn script(&self, name: &str, body: &str) {
        let path = self.root.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// cilium's conflist (0.3.1, as typical in the wild) with delegate `delegate`.
    fn conflist(&self, version: &str, delegate: &str, extra: &str) {
        let text = format!(
            r#"{{"cniVersion":"{version}","name":"cilium","plugins":[{{"type":"cilium-cni","enable-debug":false{extra},"ipam":{{"type":"delegated-ipam","delegate":{delegate}}}}}]}}"#
        );
        std::fs::write(self.root.join("net.d/05-cilium.conflist"), text).unwrap();
    }

    fn host_local_delegate(&self, ranges: &str) -> String {
        format!(r#"{{"type":"host-local","dataDir":"{}","ranges":{ranges}}}"#, self.root.join("data").display())
    }

    /// cnitool (ours or Go's) `verb` on network "cilium" for sandbox `netns`.
    fn tool(&self, tool: &Path, verb: &str, netns: &str) -> Output {
        Command::new(tool)
            .args([verb, "cilium", &format!("/var/run/netns/{netns}")])
            .env("NETCONFPATH", self.root.join("net.d"))
            .env("CNI_PATH", self.root.join("bin"))
            .env("CNI_CACHE_DIR", self.root.join("cache"))
            .output()
            .unwrap()
    }

    fn leases(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("data/cilium")) else { return vec![] };
        let mut v: Vec<String> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// delegated-ipam called directly, as cilium-cni's DelegateAdd/Del/Status would.
    fn direct(&self, command: &str, container: &str, netns: &str, conf: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_delegated-ipam"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.root.join("bin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn cilium_conf(&self, version: &str, delegate: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"cilium","type":"cilium-cni","ipam":{{"type":"delegated-ipam","delegate":{delegate}}}}}"#
        )
    }
}

fn ours_cnitool() -> PathBuf {
    workspace_bin("cnitool")
}

/// Another package's binary: `cargo test --workspace` builds it beside ours.
fn workspace_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_delegated-ipam")).with_file_name(name)
}

fn go_cnitool() -> PathBuf {
    PathBuf::from(std::env::var("GOCNITOOL").expect("GOCNITOOL: scripts/test.sh builds the Go libcni driver"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn error(o: &Output) -> (u64, String) {
    assert!(!o.status.success(), "expected failure: {}", text(o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no error JSON: {}", text(o)));
    (v["code"].as_u64().unwrap(), v["msg"].as_str().unwrap().to_string())
}

const ONE_RANGE: &str = r#"[[{"subnet":"10.244.1.0/24"}]]"#;

fn add_del_through(tool: &Path, host_local: &Path, tag: &str) {
    let s = Scene::new(tag, host_local);
    s.conflist("0.3.1", &s.host_local_delegate(ONE_RANGE), "");
    let add = s.tool(tool, "add", "pod-a");
    assert!(add.status.success(), "{}", text(&add));
    let result: serde_json::Value = serde_json::from_slice(&add.stdout).unwrap();
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/32", "{result}");
    assert_eq!(result["ips"][0]["version"], "4");
    assert_eq!(s.leases(), ["10.244.1.2"]);
    for attempt in 1..=2 {
        let del = s.tool(tool, "del", "pod-a");
        assert!(del.status.success(), "DEL #{attempt}: {}", text(&del));
    }
    assert!(s.leases().is_empty());
}

#[test]
#[ignore = "needs the Go cilium-cni emulator and driver: run scripts/test.sh"]
fn add_and_repeated_del_through_our_cnitool() {
    add_del_through(&ours_cnitool(), &Scene::ours_host_local(), "ours-tool");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator and driver: run scripts/test.sh"]
fn add_and_repeated_del_through_go_libcni() {
    add_del_through(&go_cnitool(), &Scene::ours_host_local(), "go-tool");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator and Debian's host-local: run scripts/test.sh"]
fn upstream_host_local_works_as_the_delegate_too() {
    add_del_through(&ours_cnitool(), Path::new(UPSTREAM_HOST_LOCAL), "upstream-delegate");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn a_failure_after_ipam_releases_the_address() {
    let s = Scene::new("fail-after", &Scene::ours_host_local());
    s.conflist("0.3.1", &s.host_local_delegate(ONE_RANGE), r#","failAfterIPAM":true"#);
    let add = s.tool(&ours_cnitool(), "add", "pod-b");
    assert!(!add.status.success());
    assert!(text(&add).contains("the emulator was told to fail after IPAM"), "{}", text(&add));
    assert!(s.leases().is_empty(), "cilium's DelegateDel released the lease");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn more_than_one_address_per_family_fails_and_releases() {
    let s = Scene::new("two-v4", &Scene::ours_host_local());
    s.conflist("0.3.1", &s.host_local_delegate(r#"[[{"subnet":"10.244.1.0/24"}],[{"subnet":"10.244.2.0/24"}]]"#), "");
    let add = s.tool(&ours_cnitool(), "add", "pod-c");
    assert!(!add.status.success());
    assert!(text(&add).contains("returned 2 IPv4 addresses (10.244.1.2/24, 10.244.2.2/24)"), "{}", text(&add));
    assert!(s.leases().is_empty(), "cilium does not DEL after a failed IPAM ADD: we released it ourselves");
    // The same directly: a config error (7).
    let conf = s
        .cilium_conf("0.3.1", &s.host_local_delegate(r#"[[{"subnet":"10.244.1.0/24"}],[{"subnet":"10.244.2.0/24"}]]"#));
    assert_eq!(error(&s.direct("ADD", "c1", "/var/run/netns/x", &conf)).0, 7);
    assert!(s.leases().is_empty());
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn delegate_errors_keep_their_code_and_say_which_delegate_failed() {
    let s = Scene::new("flaky", &Scene::ours_host_local());
    s.script("flaky", r#"cat >/dev/null; printf '{"code":11,"msg":"store busy","details":"retry"}'; exit 1"#);
    let conf = s.cilium_conf("0.3.1", r#"{"type":"flaky"}"#);
    let out = s.direct("ADD", "c1", "/var/run/netns/x", &conf);
    assert_eq!(error(&out), (11, "delegate flaky failed (ADD): store busy".into()));
    // Through cilium-cni: the message reaches the runtime.
    s.conflist("0.3.1", r#"{"type":"flaky"}"#, "");
    let add = s.tool(&ours_cnitool(), "add", "pod-d");
    assert!(text(&add).contains("delegate flaky failed (ADD): store busy"), "{}", text(&add));
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn bad_configs_are_config_errors_and_nothing_outside_cni_path_runs() {
    let s = Scene::new("badconf", &Scene::ours_host_local());
    let marker = s.root.join("outside/ran");
    let outside = s.root.join("outside/evil");
    std::fs::write(&outside, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cases = [
        (
            r#"{"cniVersion":"0.3.1","name":"cilium","ipam":{"type":"delegated-ipam"}}"#.to_string(),
            "ipam.delegate is missing",
        ),
        (s.cilium_conf("0.3.1", r#"{"type":"../outside/evil"}"#), "must be a plugin name on CNI_PATH"),
        (
            s.cilium_conf("0.3.1", &format!(r#"{{"type":"{}"}}"#, outside.display())),
            "must be a plugin name on CNI_PATH",
        ),
        (s.cilium_conf("0.3.1", r#"{"type":"no-such-ipam"}"#), "failed to find plugin \"no-such-ipam\""),
    ];
    for (conf, msg) in &cases {
        for command in ["ADD", "DEL"] {
            let (code, text) = error(&s.direct(command, "c1", "/var/run/netns/x", conf));
            assert_eq!(code, 7, "{command} {conf}: {text}");
            assert!(text.contains(msg), "{command} {conf}: {text}");
        }
    }
    assert!(!marker.exists(), "nothing outside CNI_PATH was executed");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn del_is_tolerant_and_never_says_not_found() {
    let s = Scene::new("del", &Scene::ours_host_local());
    let conf = s.cilium_conf("0.3.1", &s.host_local_delegate(ONE_RANGE));
    for netns in ["", "/var/run/netns/gone"] {
        let out = s.direct("DEL", "never-added", netns, &conf);
        assert!(out.status.success(), "{}", text(&out));
    }
    s.script("lossy", r#"cat >/dev/null; printf '{"code":5,"msg":"lease directory not found"}'; exit 1"#);
    let (code, msg) = error(&s.direct("DEL", "c1", "", &s.cilium_conf("0.3.1", r#"{"type":"lossy"}"#)));
    assert_eq!(code, 5);
    assert!(!msg.contains("not found"), "containerd would swallow this: {msg}");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn status_is_forwarded_with_the_delegates_code() {
    let s = Scene::new("status", &Scene::ours_host_local());
    s.conflist("1.1.0", &s.host_local_delegate(ONE_RANGE), "");
    let ok = s.tool(&ours_cnitool(), "status", "unused");
    assert!(ok.status.success(), "{}", text(&ok));
    // The delegate's store cannot be created: its dataDir is a file.
    let file = s.root.join("a-file");
    std::fs::write(&file, "").unwrap();
    let broken = format!(r#"{{"type":"host-local","dataDir":"{}","ranges":{ONE_RANGE}}}"#, file.display());
    s.conflist("1.1.0", &broken, "");
    let out = s.tool(&ours_cnitool(), "status", "unused");
    assert!(!out.status.success());
    assert!(text(&out).contains("is not usable"), "{}", text(&out));
    let (code, msg) = error(&s.direct("STATUS", "", "", &s.cilium_conf("1.1.0", &broken)));
    assert_eq!(code, 50, "{msg}");
    assert!(msg.starts_with("delegate host-local failed (STATUS): host-local store"), "{msg}");
}

#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn gc_is_forwarded() {
    let s = Scene::new("gc", &Scene::ours_host_local());
    let add = s.direct("ADD", "c1", "/var/run/netns/x", &s.cilium_conf("1.1.0", &s.host_local_delegate(ONE_RANGE)));
    assert!(add.status.success(), "{}", text(&add));
    assert_eq!(s.leases().len(), 1);
    let gc = s.cilium_conf("1.1.0", &s.host_local_delegate(ONE_RANGE)).replacen(
        '{',
        r#"{"cni.dev/valid-attachments":[],"#,
        1,
    );
    let out = s.direct("GC", "", "", &gc);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s.leases().is_empty());
}
