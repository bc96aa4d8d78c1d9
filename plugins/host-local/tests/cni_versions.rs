//! The conflists install-cni.sh writes carry `cniVersions` beside `cniVersion`. A runtime on
//! libcni >= 1.2 picks the highest version it implements from the list: our cnitool (libcni at
//! 1.1.0) stands in for one here, and STATUS and GC reach the IPAM. The same lists without
//! `cniVersions` show that it is the list that makes the difference. Older runtimes read only
//! `cniVersion`: containerd_reboot.rs runs Debian's containerd 1.6 on these conflists.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;

/// A binary built next to this test's host-local (cargo build --release --workspace).
fn sibling(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_host-local")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: cargo build --release --workspace first (scripts/test.sh does)",
        path.display()
    );
    path
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A node: CNI_PATH, config and cache dirs, the IPAM's dataDir, and a file where a broken
/// config points its dataDir (a store that cannot be created).
struct Scene {
    dir: TempDir,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let dir = TempDir::new(tag);
        for d in ["bin", "net.d", "cache", "data", "shipped"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
        for bin in ["host-local", "delegated-ipam"] {
            std::os::unix::fs::symlink(sibling(bin), dir.path().join("bin").join(bin)).unwrap();
        }
        Scene { dir }
    }

    /// The conflist install-cni.sh writes for `flavor`.
    fn shipped(&self, flavor: &str) -> serde_json::Value {
        let shipped = self.dir.path().join("shipped");
        let out = Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-cni.sh"))
            .arg("--source")
            .arg(sibling("host-local").parent().unwrap())
            .arg("--bin-dir")
            .arg(shipped.join("bin"))
            .arg("--conf-dir")
            .arg(shipped.join("net.d"))
            .args(["--pod-cidr", "10.99.0.0/24", "--flavor", flavor, "--force"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let file = if flavor == "cilium" { "05-cilium.conflist" } else { "10-edge.conflist" };
        serde_json::from_slice(&std::fs::read(shipped.join("net.d").join(file)).unwrap()).unwrap()
    }

    /// `shipped`'s name and versions, with `plugins` (`cniVersions` dropped unless `keep_list`).
    fn write_conflist(&self, shipped: &serde_json::Value, plugins: serde_json::Value, keep_list: bool) {
        let mut list =
            serde_json::json!({"cniVersion": shipped["cniVersion"], "name": shipped["name"], "plugins": plugins});
        if keep_list {
            list["cniVersions"] = shipped["cniVersions"].clone();
        }
        std::fs::write(self.dir.path().join("net.d/net.conflist"), list.to_string()).unwrap();
    }

    fn cnitool(&self, args: &[&str]) -> Output {
        Command::new(sibling("cnitool"))
            .args(args)
            .env("NETCONFPATH", self.dir.path().join("net.d"))
            .env("CNI_PATH", self.dir.path().join("bin"))
            .env("CNI_CACHE_DIR", self.dir.path().join("cache"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cnitool(args);
        assert!(out.status.success(), "cnitool {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn leases(&self, network: &str) -> Vec<String> {
        common::leases(&self.dir.path().join("data").join(network))
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn unusable_data_dir(&self) -> String {
        self.dir.path().join("not-a-dir").display().to_string()
    }
}

/// The bridge flavor's IPAM (host-local, its ranges as shipped) as the list's only plugin:
/// Debian's bridge implements no 1.1.0, so a stand-in carries the IPAM config.
fn host_local_plugins(shipped: &serde_json::Value, data_dir: &str) -> serde_json::Value {
    let mut ipam = shipped["plugins"][0]["ipam"].clone();
    assert_eq!(ipam["type"], "host-local");
    ipam["dataDir"] = data_dir.into();
    serde_json::json!([{"type": "host-local", "ipam": ipam}])
}

#[test]
fn status_and_gc_reach_host_local_through_the_shipped_versions() {
    let s = Scene::new("versions-bridge");
    let shipped = s.shipped("bridge");
    let net = shipped["name"].as_str().unwrap().to_string();
    s.write_conflist(&shipped, host_local_plugins(&shipped, &s.data_dir()), true);

    let added = s.ok(&["add", &net, "/var/run/netns/versions-keep"]);
    assert!(added.contains(r#""cniVersion": "1.1.0""#), "the runtime picked 1.1.0 from cniVersions: {added}");
    s.ok(&["add", &net, "/var/run/netns/versions-stale"]);
    // A lease no cache entry knows about: only the plugin's own GC can collect it.
    std::fs::write(s.dir.path().join("data").join(&net).join("10.99.0.99"), "orphan\r\neth0").unwrap();
    assert_eq!(s.leases(&net).len(), 3);
    s.ok(&["gc", &net, "/var/run/netns/versions-keep"]);
    assert_eq!(s.leases(&net).len(), 1, "GC reached host-local: {:?}", s.leases(&net));
    s.ok(&["check", &net, "/var/run/netns/versions-keep"]);

    s.ok(&["status", &net]);
    s.write_conflist(&shipped, host_local_plugins(&shipped, &s.unusable_data_dir()), true);
    let out = s.cnitool(&["status", &net]);
    assert!(!out.status.success() && text(&out).contains("is not usable"), "STATUS reached host-local: {}", text(&out));

    // Without cniVersions the list is 1.0.0: neither verb reaches the plugin.
    s.write_conflist(&shipped, host_local_plugins(&shipped, &s.unusable_data_dir()), false);
    s.ok(&["status", &net]);
    s.write_conflist(&shipped, host_local_plugins(&shipped, &s.data_dir()), false);
    std::fs::write(s.dir.path().join("data").join(&net).join("10.99.0.99"), "orphan\r\neth0").unwrap();
    s.ok(&["gc", &net, "/var/run/netns/versions-keep"]);
    assert_eq!(s.leases(&net).len(), 2, "a 1.0.0 GC only deletes cached attachments: {:?}", s.leases(&net));
}

/// cilium-cni forwards STATUS to its IPAM only when the list's version is >= 1.1.0, which the
/// shipped cilium conflist (cniVersion 0.3.1) reaches only through cniVersions.
#[test]
#[ignore = "needs the Go cilium-cni emulator: run scripts/test.sh"]
fn status_reaches_delegated_ipam_through_cilium_with_the_shipped_versions() {
    let s = Scene::new("versions-cilium");
    let emulator =
        std::env::var("CILIUM_EMULATOR").expect("CILIUM_EMULATOR: scripts/test.sh builds the cilium-cni emulator");
    std::os::unix::fs::symlink(emulator, s.dir.path().join("bin/cilium-cni")).unwrap();
    let shipped = s.shipped("cilium");
    let net = shipped["name"].as_str().unwrap().to_string();
    let cilium_plugins = |data_dir: &str| {
        let mut plugin = shipped["plugins"][0].clone();
        assert_eq!(plugin["ipam"]["delegate"]["type"], "host-local");
        plugin["ipam"]["delegate"]["dataDir"] = data_dir.into();
        serde_json::json!([plugin])
    };
    s.write_conflist(&shipped, cilium_plugins(&s.data_dir()), true);
    s.ok(&["status", &net]);
    s.write_conflist(&shipped, cilium_plugins(&s.unusable_data_dir()), true);
    let out = s.cnitool(&["status", &net]);
    assert!(
        !out.status.success() && text(&out).contains("delegate host-local failed (STATUS)"),
        "STATUS went cilium-cni -> delegated-ipam -> host-local: {}",
        text(&out)
    );
    s.write_conflist(&shipped, cilium_plugins(&s.unusable_data_dir()), false);
    s.ok(&["status", &net]);
}
