//! scripts/install-cni.sh into temporary directories.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ours, TempDir};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-cni.sh")
}

/// A source dir with our host-local, and a copy standing in for delegated-ipam.
fn source(dd: &TempDir) -> PathBuf {
    let src = dd.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(ours(), src.join("host-local")).unwrap();
    std::fs::copy(ours(), src.join("delegated-ipam")).unwrap();
    src
}

fn install(dd: &TempDir, extra: &[&str]) -> (i32, String) {
    // POSIX sh (dash here): the install image runs the script with busybox sh.
    let out = Command::new("sh")
        .arg(script())
        .args(["--source", source(dd).to_str().unwrap(), "--bin-dir", dd.path().join("bin").to_str().unwrap()])
        .args(["--conf-dir", dd.path().join("net.d").to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn installs_binaries_and_a_conflist_for_the_pod_cidr() {
    let dd = TempDir::new("install-bridge");
    let (code, out) = install(&dd, &["--pod-cidr", "10.244.7.0/24"]);
    assert_eq!(code, 0, "{out}");
    for bin in ["host-local", "delegated-ipam"] {
        let path = dd.path().join("bin").join(bin);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(ours()).unwrap());
    }
    let bytes = std::fs::read(dd.path().join("net.d/10-edge.conflist")).unwrap();
    let list = libcni::conf::NetworkConfigList::from_bytes(&bytes).unwrap();
    assert_eq!((list.name.as_str(), list.plugins[0].plugin_type.as_str()), ("edge", "bridge"));
    assert_eq!(list.plugins[0].raw["ipam"]["ranges"][0][0]["subnet"], "10.244.7.0/24");
    assert_eq!(list.plugins[0].raw["ipam"]["type"], "host-local");
    let leftovers: Vec<_> = std::fs::read_dir(dd.path().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_existing_conflist_is_kept_without_force() {
    let dd = TempDir::new("install-force");
    assert_eq!(install(&dd, &["--pod-cidr", "10.244.7.0/24"]).0, 0);
    let path = dd.path().join("net.d/10-edge.conflist");
    let before = std::fs::read(&path).unwrap();
    let (code, out) = install(&dd, &["--pod-cidr", "10.244.9.0/24"]);
    assert_eq!(code, 0);
    assert!(out.contains("exists; left as it is (use --force to replace it)"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(install(&dd, &["--pod-cidr", "10.244.9.0/24", "--force"]).0, 0);
    assert!(String::from_utf8(std::fs::read(&path).unwrap()).unwrap().contains("10.244.9.0/24"));
}

#[test]
fn the_cilium_flavor_delegates_to_host_local() {
    let dd = TempDir::new("install-cilium");
    assert_eq!(install(&dd, &["--pod-cidr", "10.244.3.0/24", "--flavor", "cilium"]).0, 0);
    let bytes = std::fs::read(dd.path().join("net.d/05-cilium.conflist")).unwrap();
    let list = libcni::conf::NetworkConfigList::from_bytes(&bytes).unwrap();
    let ipam = &list.plugins[0].raw["ipam"];
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((raw["cniVersion"].as_str(), list.plugins[0].plugin_type.as_str()), (Some("0.3.1"), "cilium-cni"));
    assert_eq!(
        (ipam["type"].as_str(), ipam["delegate"]["type"].as_str()),
        (Some("delegated-ipam"), Some("host-local"))
    );
    assert_eq!(ipam["delegate"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
}

/// `cniVersion` for runtimes on libcni < 1.2 (containerd 1.6/1.7), `cniVersions` for newer
/// ones, which pick the highest they implement: 1.1.0, with STATUS and GC.
#[test]
fn conflists_list_the_cni_versions_a_runtime_picks_from() {
    for (flavor, file, version) in [("bridge", "10-edge.conflist", "1.0.0"), ("cilium", "05-cilium.conflist", "0.3.1")]
    {
        let dd = TempDir::new(&format!("install-versions-{flavor}"));
        assert_eq!(install(&dd, &["--pod-cidr", "10.244.3.0/24", "--flavor", flavor]).0, 0);
        let bytes = std::fs::read(dd.path().join("net.d").join(file)).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(raw["cniVersion"], version, "{flavor}");
        assert_eq!(raw["cniVersions"], serde_json::json!(["0.3.1", "1.0.0", "1.1.0"]), "{flavor}");
        assert_eq!(libcni::conf::NetworkConfigList::from_bytes(&bytes).unwrap().cni_version, "1.1.0", "{flavor}");
    }
    for example in ["05-cilium.conflist", "10-bridge.conflist"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/conflists").join(example);
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(raw["cniVersions"], serde_json::json!(["0.3.1", "1.0.0", "1.1.0"]), "{example}");
    }
    // Narrowed for nodes whose other plugins do not implement 1.1.0.
    let dd = TempDir::new("install-versions-narrow");
    assert_eq!(install(&dd, &["--pod-cidr", "10.244.3.0/24", "--cni-versions", "0.3.1,1.0.0"]).0, 0);
    let bytes = std::fs::read(dd.path().join("net.d/10-edge.conflist")).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(raw["cniVersions"], serde_json::json!(["0.3.1", "1.0.0"]));
    assert_eq!(libcni::conf::NetworkConfigList::from_bytes(&bytes).unwrap().cni_version, "1.0.0");
    let dd = TempDir::new("install-versions-bad");
    for bad in ["1.1", "1.0.0,", "1.0.0\",\"x"] {
        assert_eq!(install(&dd, &["--pod-cidr", "10.244.3.0/24", "--cni-versions", bad]).0, 2, "{bad}");
    }
    assert!(!dd.path().join("net.d/10-edge.conflist").exists());
}

/// --follow-pod-cidr (the DaemonSet's mode) replaces a conflist only when the pod CIDR it
/// records is not the node's; one for the same CIDR is kept byte for byte, edits included.
#[test]
fn follow_pod_cidr_replaces_only_a_conflist_for_another_cidr() {
    let dd = TempDir::new("install-follow");
    let path = dd.path().join("net.d/10-edge.conflist");
    assert_eq!(install(&dd, &["--pod-cidr", "10.244.7.0/24"]).0, 0);
    let edited = String::from_utf8(std::fs::read(&path).unwrap())
        .unwrap()
        .replace("\"isGateway\"", "\"mtu\": 1400, \"isGateway\"");
    std::fs::write(&path, &edited).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let (code, out) = install(&dd, &["--pod-cidr", "10.244.7.0/24", "--follow-pod-cidr"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is for pod CIDR 10.244.7.0/24; left as it is"), "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);

    let (code, out) = install(&dd, &["--pod-cidr", "10.244.9.0/24", "--follow-pod-cidr"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is for pod CIDR 10.244.7.0/24, the node's is now 10.244.9.0/24: replacing it"), "{out}");
    let list = libcni::conf::NetworkConfigList::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(list.plugins[0].raw["ipam"]["ranges"][0][0]["subnet"], "10.244.9.0/24");

    // A conflist that records no subnet at all is for no CIDR: replaced too.
    std::fs::write(&path, r#"{"cniVersion":"1.0.0","name":"edge","plugins":[{"type":"bridge"}]}"#).unwrap();
    let (code, out) = install(&dd, &["--pod-cidr", "10.244.9.0/24", "--follow-pod-cidr"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is for pod CIDR (none), the node's is now 10.244.9.0/24"), "{out}");
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"subnet\": \"10.244.9.0/24\""));
}

#[test]
fn bad_arguments_are_refused() {
    let dd = TempDir::new("install-bad");
    assert_eq!(install(&dd, &["--pod-cidr", "not-a-cidr"]).0, 2);
    assert_eq!(install(&dd, &["--flavor", "calico"]).0, 2);
    assert!(!dd.path().join("net.d/10-edge.conflist").exists());
}

/// Reinstalling while the plugin is being executed never breaks an exec: the new binary is
/// renamed over the old one, never written in place.
#[test]
fn binaries_are_replaced_atomically_while_in_use() {
    let dd = TempDir::new("install-atomic");
    assert_eq!(install(&dd, &[]).0, 0);
    let target = dd.path().join("bin/host-local");
    // Held open, so that its inode cannot be freed and its number reused by a later install.
    let first = std::fs::File::open(&target).unwrap();
    let first_inode = first.metadata().unwrap().ino();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runner = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
    for _ in 0..15 {
        assert_eq!(install(&dd, &[]).0, 0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = runner.join().expect("every exec succeeded");
    assert!(runs > 0);
    assert_ne!(std::fs::metadata(&target).unwrap().ino(), first_inode, "replaced by rename, not rewritten");
    drop(first);
}

/// deploy/conflists are valid lists whose host-local settings load.
#[test]
fn example_conflists_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/conflists");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let list = libcni::conf::NetworkConfigList::from_bytes(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for plugin in &list.plugins {
            let ipam = plugin.raw.get("ipam").map(|i| i.get("delegate").unwrap_or(i));
            if let Some(ipam) = ipam.filter(|i| i["type"] == "host-local") {
                let conf = serde_json::json!({"cniVersion": list.cni_version, "name": list.name, "ipam": ipam});
                host_local::config::load(&conf, "").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
}
