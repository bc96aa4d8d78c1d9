//! Our conflist runtime end to end through cnitool, with our host-local as the plugin:
//! ADD/CHECK/DEL with the result cache, GC of stale cached attachments, STATUS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Scene(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Scene {
    fn new(tag: &str, version: &str) -> Scene {
        let scratch = tempfile::Builder::new().prefix(&format!("cnitool-rt-{tag}-")).tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        for d in ["bin", "net.d", "cache", "data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let host_local = Path::new(env!("CARGO_BIN_EXE_cnitool")).with_file_name("host-local");
        assert!(host_local.is_file(), "{} is missing: cargo build --workspace first", host_local.display());
        std::os::unix::fs::symlink(host_local, root.join("bin/host-local")).unwrap();
        let conflist = format!(
            r#"{{"cniVersion":"{version}","name":"rt","plugins":[{{"type":"host-local","ipam":{{"type":"host-local","dataDir":"{}","subnet":"10.64.0.0/24","stickyIPs":false}}}}]}}"#,
            root.join("data").display()
        );
        std::fs::write(root.join("net.d/10-rt.conflist"), conflist).unwrap();
        Scene(root, scratch)
    }

    fn cnitool(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cnitool"))
            .args(args)
            .env("NETCONFPATH", self.0.join("net.d"))
            .env("CNI_PATH", self.0.join("bin"))
            .env("CNI_CACHE_DIR", self.0.join("cache"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cnitool(args);
        assert!(out.status.success(), "cnitool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn leases(&self) -> usize {
        std::fs::read_dir(self.0.join("data/rt")).map_or(0, |d| {
            d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok()).count()
        })
    }

    fn cached(&self) -> usize {
        std::fs::read_dir(self.0.join("cache/results")).map_or(0, |d| d.count())
    }
}

#[test]
fn add_check_del_use_the_result_cache() {
    let s = Scene::new("cache", "1.0.0");
    let added = s.ok(&["add", "rt", "/var/run/netns/rt-a"]);
    assert!(added.contains("10.64.0.2/24"), "{added}");
    assert_eq!((s.leases(), s.cached()), (1, 1));
    s.ok(&["check", "rt", "/var/run/netns/rt-a"]);
    assert!(!s.cnitool(&["check", "rt", "/var/run/netns/rt-never"]).status.success());
    s.ok(&["del", "rt", "/var/run/netns/rt-a"]);
    assert_eq!((s.leases(), s.cached()), (0, 0));
    s.ok(&["del", "rt", "/var/run/netns/rt-a"]);
}

#[test]
fn gc_keeps_the_named_attachment_and_collects_the_rest() {
    let s = Scene::new("gc", "1.1.0");
    for ns in ["rt-keep", "rt-stale1", "rt-stale2"] {
        s.ok(&["add", "rt", &format!("/var/run/netns/{ns}")]);
    }
    // A lease no cache entry knows about: only the plugin's own GC can find it.
    std::fs::write(s.0.join("data/rt/10.64.0.99"), "orphan\r\neth0").unwrap();
    assert_eq!((s.leases(), s.cached()), (4, 3));
    s.ok(&["gc", "rt", "/var/run/netns/rt-keep"]);
    assert_eq!((s.leases(), s.cached()), (1, 1), "DEL for stale cached attachments, then GC to the plugin");
    s.ok(&["check", "rt", "/var/run/netns/rt-keep"]);
}

#[test]
fn status_reaches_the_plugin_for_1_1_0_lists_only() {
    let s = Scene::new("status", "1.1.0");
    s.ok(&["status", "rt"]);
    std::fs::write(s.0.join("blocker"), "").unwrap();
    let broken = std::fs::read_to_string(s.0.join("net.d/10-rt.conflist"))
        .unwrap()
        .replace(&s.0.join("data").display().to_string(), &s.0.join("blocker").display().to_string());
    std::fs::write(s.0.join("net.d/10-rt.conflist"), &broken).unwrap();
    let out = s.cnitool(&["status", "rt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not usable"));
    // A 1.0.0 list has no STATUS: libcni reports success without calling the plugin.
    std::fs::write(s.0.join("net.d/10-rt.conflist"), broken.replace("1.1.0", "1.0.0")).unwrap();
    s.ok(&["status", "rt"]);
}
