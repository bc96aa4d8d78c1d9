//! Our cnitool against upstream Go libcni (testdata/go/gocnitool on Debian's libcni), with
//! Debian's upstream bridge, tuning and host-local plugins in real network namespaces.
//!
//! Needs root, iproute2, /usr/lib/cni and GOCNITOOL=<path to the built Go driver>;
//! scripts/test.sh provides all of them and runs these with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UPSTREAM_PLUGINS: &str = "/usr/lib/cni";

/// A uniquely named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("iop-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A scratch directory holding the conflist, the cache and the host-local store.
struct Scene {
    root: PathBuf,
    _scratch: tempfile::TempDir,
    bridge: String,
}

impl Scene {
    fn new(tag: &str, third_octet: u8) -> Scene {
        let scratch = tempfile::Builder::new().prefix(&format!("cni-interop-{tag}-")).tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        std::fs::create_dir_all(root.join("net.d")).unwrap();
        let bridge = format!("iop{}{tag}", std::process::id() % 100000);
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"iop-{tag}","plugins":[
                {{"type":"bridge","bridge":"{bridge}","isGateway":true,
                  "ipam":{{"type":"host-local","dataDir":"{data}","ranges":[[{{"subnet":"10.253.{third_octet}.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}},
                {{"type":"tuning","sysctl":{{"net.ipv4.conf.all.log_martians":"0"}}}}]}}"#,
            data = root.join("ipam").display()
        );
        std::fs::write(root.join("net.d/10-iop.conflist"), conflist).unwrap();
        Scene { root, bridge, _scratch: scratch }
    }

    fn run(&self, tool: &Path, verb: &str, net: &str, netns: &Netns) -> Output {
        Command::new(tool)
            .args([verb, net, &netns.path()])
            .env("NETCONFPATH", self.root.join("net.d"))
            .env("CNI_PATH", UPSTREAM_PLUGINS)
            .env("CNI_CACHE_DIR", self.root.join("cache"))
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p")
            .output()
            .expect("spawn cni tool")
    }

    fn ok(&self, tool: &Path, verb: &str, net: &str, netns: &Netns) -> String {
        let out = self.run(tool, verb, net, netns);
        assert!(
            out.status.success(),
            "{} {verb} failed: {}{}",
            tool.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn cache_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.root.join("cache/results")) else { return vec![] };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    }

    fn leases(&self, net: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("ipam").join(net)) else { return vec![] };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cnitool"))
}

fn go() -> PathBuf {
    let path =
        std::env::var("GOCNITOOL").expect("GOCNITOOL must point to the Go libcni driver (scripts/test.sh builds it)");
    assert!(Path::new(&path).is_file(), "GOCNITOOL={path} does not exist");
    PathBuf::from(path)
}

/// Blank out what differs between two ADDs of the same attachment: random MACs and veth names.
fn normalise(cache: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(cache).unwrap();
    let mut text = cache.to_string();
    for iface in v["result"]["interfaces"].as_array().into_iter().flatten() {
        for key in ["mac", "name"] {
            if let Some(s) = iface[key].as_str() {
                if key == "mac" || s.starts_with("veth") {
                    text = text.replace(s, "<varies>");
                }
            }
        }
    }
    text
}

#[test]
#[ignore = "needs root, Debian's CNI plugins and the Go libcni driver: run scripts/test.sh"]
fn cache_files_are_byte_compatible_with_go_libcni() {
    let scene = Scene::new("c", 71);
    let ns = Netns::new("c");

    let go_add = scene.ok(&go(), "add", "iop-c", &ns);
    let files = scene.cache_files();
    assert_eq!(files.len(), 1, "Go ADD writes one cache entry");
    let go_cache = std::fs::read_to_string(&files[0]).unwrap();
    scene.ok(&go(), "del", "iop-c", &ns);
    assert!(scene.cache_files().is_empty());

    // Same attachment again through our runtime, from the same starting state.
    std::fs::remove_dir_all(scene.root.join("ipam")).unwrap();
    let our_add = scene.ok(&ours(), "add", "iop-c", &ns);
    let files = scene.cache_files();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("iop-c-cnitool-") && name.ends_with("-eth0"), "{name}");
    let our_cache = std::fs::read_to_string(&files[0]).unwrap();
    // Debian's libcni is v1.1.2. Current libcni (v1.2+) also records "netns" and drops an
    // empty "dns" from 1.x results; we write the current layout, so align those two fields.
    let our_cache_as_v112 = our_cache.replacen(&format!(r#","netns":"{}""#, ns.path()), "", 1);
    let go_cache_as_current = go_cache.replacen(r#""dns":{},"#, "", 1);
    assert_ne!(our_cache_as_v112, our_cache, "we record the netns like current libcni");
    assert_eq!(normalise(&our_cache_as_v112), normalise(&go_cache_as_current));

    // Both printed the same result (up to MACs and veth names). v1.1.2 prints 1.x results in
    // struct order with "dns": {}; current libcni sorts keys and drops empty dns, as we do.
    let parsed =
        |s: &str| -> serde_json::Value { serde_json::from_str(&normalise(&format!(r#"{{"result":{s}}}"#))).unwrap() };
    let mut go_printed = parsed(&go_add);
    assert_eq!(go_printed["result"].as_object_mut().unwrap().remove("dns"), Some(serde_json::json!({})));
    assert_eq!(parsed(&our_add), go_printed);
    scene.ok(&ours(), "del", "iop-c", &ns);
}

#[test]
#[ignore = "needs root, Debian's CNI plugins and the Go libcni driver: run scripts/test.sh"]
fn each_side_checks_and_deletes_what_the_other_added() {
    let scene = Scene::new("x", 72);
    let (a, b) = (Netns::new("xa"), Netns::new("xb"));

    // Go adds A; we CHECK and DEL it.
    scene.ok(&go(), "add", "iop-x", &a);
    assert_eq!(scene.leases("iop-x").len(), 1);
    scene.ok(&ours(), "check", "iop-x", &a);
    scene.ok(&ours(), "del", "iop-x", &a);
    assert!(scene.leases("iop-x").is_empty(), "our DEL released Go's lease");
    assert!(scene.cache_files().is_empty(), "our DEL removed Go's cache entry");

    // We add B; Go CHECKs and DELs it.
    scene.ok(&ours(), "add", "iop-x", &b);
    assert_eq!(scene.leases("iop-x").len(), 1);
    scene.ok(&go(), "check", "iop-x", &b);
    scene.ok(&go(), "del", "iop-x", &b);
    assert!(scene.leases("iop-x").is_empty(), "Go's DEL released our lease");
    assert!(scene.cache_files().is_empty(), "Go's DEL removed our cache entry");

    // CHECK really checks: after the interface is gone, both sides report failure.
    scene.ok(&ours(), "add", "iop-x", &a);
    let del = Command::new("ip").args(["-n", &a.0, "link", "del", "eth0"]).output().unwrap();
    assert!(del.status.success());
    assert!(!scene.run(&ours(), "check", "iop-x", &a).status.success());
    assert!(!scene.run(&go(), "check", "iop-x", &a).status.success());
    scene.ok(&go(), "del", "iop-x", &a);
}
