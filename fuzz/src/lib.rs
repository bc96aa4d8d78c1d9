//! Shared code of the fuzz targets: the few store-API calls that the targets make (so
//! that a signature change in host-local is a one-line change here), the input split of
//! tests/fuzz.rs, a byte reader to decode structured inputs, and the whole-store harness
//! that runs ADD/DEL/CHECK/GC in process against a store directory built per input.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use host_local::index::View;
use host_local::plugin::HostLocal;
use host_local::store::PodRecord;
use libcni::skel::{CmdArgs, Command, Plugin};
use libcni::types::AnyResult;

/// The store's parsers, as the targets call them.
pub mod api {
    use super::*;

    /// A pod record file's content (`<ip>.pod`).
    pub fn parse_record(bytes: &[u8]) -> Option<PodRecord> {
        host_local::disk::record::parse(bytes)
    }

    pub fn record_to_json(record: &PodRecord) -> String {
        host_local::disk::record::to_json(record)
    }

    /// A pod record file's newest whole record, and where its next update goes.
    pub fn read_record(bytes: &[u8]) -> Option<host_local::disk::record::Stored> {
        host_local::disk::record::read(bytes)
    }

    /// An index file's content: the view and the directory mtime it was written for.
    pub fn parse_index(bytes: &[u8]) -> Option<(View, (i64, i64))> {
        View::parse(bytes.to_vec())
    }

    /// A `.hostlocal/clock` file's content: the boots it lists.
    pub fn parse_clock(bytes: &[u8]) -> Option<host_local::clock::Saved> {
        host_local::clock::NodeClock::parse(bytes)
    }

    /// A `last_reserved_ip.<n>` file's content.
    pub fn parse_last_reserved(bytes: &[u8]) -> Option<IpAddr> {
        host_local::disk::parse_last_reserved(bytes)
    }
}

/// `body` made a whole index (index.rs's own trailer), so that fuzzed index lines get past
/// the checksum to the line parser.
pub fn with_trailer(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(host_local::index::trailer(body).as_bytes());
    out
}

/// tests/fuzz.rs's convention: stdin, then a NUL, then CNI_ARGS.
pub fn split_args(data: &[u8]) -> (&[u8], String) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        None => (data, String::new()),
    }
}

/// Decodes structured inputs; reads past the end as zeros, so every input decodes.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.byte() as usize % items.len()]
    }

    /// A length byte (up to `max`), then that many bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = self.byte() as usize % (max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

// ---------------------------------------------------------------------------------------
// Whole-store harness.

/// A range of a configured range set, as the invariants see it (independent of range.rs).
#[derive(Clone, Copy, Debug)]
pub struct Allowed {
    pub subnet: &'static str,
    pub prefix: u8,
    pub start: &'static str,
    pub end: &'static str,
    pub gateway: &'static str,
}

/// A network config: the `ipam` fields, and per range set the ranges addresses may come from.
#[derive(Clone, Copy, Debug)]
pub struct NetConf {
    pub ipam: &'static str,
    pub sets: &'static [&'static [Allowed]],
    /// Addresses ADD can hand out in total per range set (for exhaustion checks).
    pub usable: usize,
    pub sticky: bool,
}

const V4: Allowed = Allowed { subnet: "10.1.0.0", prefix: 29, start: "10.1.0.1", end: "10.1.0.6", gateway: "10.1.0.1" };
const V6: Allowed = Allowed { subnet: "fd00::", prefix: 125, start: "fd00::1", end: "fd00::7", gateway: "fd00::1" };
const V4_NARROW: Allowed =
    Allowed { subnet: "10.1.0.0", prefix: 29, start: "10.1.0.3", end: "10.1.0.5", gateway: "10.1.0.4" };
const V4_SMALL: Allowed =
    Allowed { subnet: "10.1.1.0", prefix: 30, start: "10.1.1.1", end: "10.1.1.2", gateway: "10.1.1.1" };

pub const CONFIGS: &[NetConf] = &[
    NetConf {
        ipam: r#""ranges":[[{"subnet":"10.1.0.0/29"}]],"stickyIPs":false"#,
        sets: &[&[V4]],
        usable: 5,
        sticky: false,
    },
    NetConf {
        ipam: r#""ranges":[[{"subnet":"10.1.0.0/29"}]],"stickyIPs":true"#,
        sets: &[&[V4]],
        usable: 5,
        sticky: true,
    },
    NetConf {
        ipam: r#""ranges":[[{"subnet":"10.1.0.0/29"}],[{"subnet":"fd00::/125"}]],"stickyIPs":{"key":"namespace/name","holdDuration":"1h"}"#,
        sets: &[&[V4], &[V6]],
        usable: 5,
        sticky: true,
    },
    NetConf {
        ipam: r#""ranges":[[{"subnet":"10.1.0.0/29","rangeStart":"10.1.0.3","rangeEnd":"10.1.0.5","gateway":"10.1.0.4"},{"subnet":"10.1.1.0/30"}]],"stickyIPs":true"#,
        sets: &[&[V4_NARROW, V4_SMALL]],
        usable: 3,
        sticky: true,
    },
];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

impl Allowed {
    /// Why ADD may not hand out `addr` from this range, if it may not.
    pub fn violation(&self, addr: IpAddr) -> Option<&'static str> {
        let (net, start, end, gw) = (ip(self.subnet), ip(self.start), ip(self.end), ip(self.gateway));
        if addr.is_ipv4() != net.is_ipv4() {
            return Some("outside the subnet");
        }
        let n = libcni::ip::ip_to_u128(addr);
        let host_bits = if net.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        let host_mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let network = libcni::ip::ip_to_u128(net);
        if n & !host_mask != network {
            Some("outside the subnet")
        } else if n == network {
            Some("the network address")
        } else if net.is_ipv4() && n == network | host_mask {
            Some("the broadcast address")
        } else if addr == gw {
            Some("the gateway")
        } else if !(libcni::ip::ip_to_u128(start)..=libcni::ip::ip_to_u128(end)).contains(&n) {
            Some("outside rangeStart..rangeEnd")
        } else {
            None
        }
    }
}

/// Checks named in `CNI_FUZZ_SKIP` (comma-separated) are not made, to look past a known
/// finding while it is being fixed: `gateway` (an ADD handing out the gateway),
/// `old-format` (two interfaces of one container sharing an address).
pub fn skipped(check: &str) -> bool {
    std::env::var("CNI_FUZZ_SKIP").is_ok_and(|v| v.split(',').any(|c| c.trim() == check))
}

impl NetConf {
    /// Panics unless `ips` is one valid address per range set, in order.
    pub fn assert_valid(&self, what: &str, ips: &[IpAddr]) {
        assert_eq!(ips.len(), self.sets.len(), "{what}: one address per range set, got {ips:?}");
        for (set, addr) in self.sets.iter().zip(ips) {
            let why: Vec<&str> = set.iter().filter_map(|r| r.violation(*addr)).collect();
            if why.len() < set.len() {
                continue; // some range admits it
            }
            // The reason of the range whose subnet holds it, if any.
            let why = why.iter().find(|w| **w != "outside the subnet").unwrap_or(&why[0]);
            if *why == "the gateway" && skipped("gateway") {
                continue;
            }
            panic!("{what}: handed out {addr}, which is {why} of range set {set:?}");
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
const SENTINEL: &[u8] = b"sentinel: must never change\n";

/// Where a planted symlink points: all outside `<dataDir>/<network>`.
pub const LINK_TARGETS: &[&str] =
    &["../sentinel-file", "../sentinel-dir", "../../outside", "../nowhere", "/nonexistent-cni-fuzz"];

/// A fresh `<root>/data/net` store with sentinels beside it, removed on drop:
/// `<root>/outside`, `<root>/data/sentinel-file`, `<root>/data/sentinel-dir/inner`.
pub struct Sandbox {
    pub root: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            sweep_dead(&base);
        }
        let root = base.join(format!("cni-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sandbox = Sandbox { root };
        std::fs::create_dir_all(sandbox.store_dir()).unwrap();
        std::fs::create_dir(sandbox.root.join("data/sentinel-dir")).unwrap();
        for f in ["outside", "data/sentinel-file", "data/sentinel-dir/inner"] {
            std::fs::write(sandbox.root.join(f), SENTINEL).unwrap();
            std::fs::set_permissions(sandbox.root.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        sandbox
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `<dataDir>/<network>`: the network is named `net`.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("data/net")
    }

    /// Plant `name` (relative to the store; `a/b` creates `a` as a directory if it can).
    pub fn plant(&self, name: &str, kind: Planted) {
        let path = self.store_dir().join(name);
        if let Some(parent) = Path::new(name).parent().filter(|p| !p.as_os_str().is_empty()) {
            if !self.real_dir(parent) {
                return;
            }
        }
        if std::fs::symlink_metadata(&path).is_ok() {
            return; // first one wins
        }
        let _ = match kind {
            Planted::File(bytes) => std::fs::write(&path, bytes),
            Planted::Dir => std::fs::create_dir(&path),
            Planted::Symlink(target) => std::os::unix::fs::symlink(target, &path),
        };
    }

    /// `name` (relative to the store) is a directory, not a symlink to one: created if
    /// missing. The harness never writes through a planted symlink.
    pub fn real_dir(&self, name: &Path) -> bool {
        let path = self.store_dir().join(name);
        let _ = std::fs::create_dir(&path);
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
    }

    /// The sentinels and everything outside the store are exactly as created.
    pub fn check_outside(&self) {
        let list = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{} vanished: {e}", dir.display()))
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(list(&self.root), ["data", "outside"], "entries beside <dataDir> changed");
        assert_eq!(
            list(&self.data_dir()),
            ["net", "sentinel-dir", "sentinel-file"],
            "entries beside the store changed"
        );
        assert_eq!(list(&self.root.join("data/sentinel-dir")), ["inner"], "the sentinel directory changed");
        for f in ["outside", "data/sentinel-file", "data/sentinel-dir/inner"] {
            let path = self.root.join(f);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.is_file(), "{f} is no longer a regular file");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{f}: mode changed");
            assert_eq!(std::fs::read(&path).unwrap(), SENTINEL, "{f}: content changed");
        }
        let meta = std::fs::symlink_metadata(self.root.join("data/sentinel-dir")).unwrap();
        assert!(meta.is_dir() && meta.permissions().mode() & 0o7777 == 0o755, "the sentinel directory changed");
    }

    /// The network config on stdin.
    pub fn stdin(&self, conf: &NetConf, valid: &[(String, String)]) -> Vec<u8> {
        let valid: Vec<String> =
            valid.iter().map(|(id, ifname)| format!(r#"{{"containerID":"{id}","ifname":"{ifname}"}}"#)).collect();
        format!(
            r#"{{"cniVersion":"1.1.0","name":"net","cni.dev/valid-attachments":[{}],"ipam":{{"type":"host-local","dataDir":"{}",{}}}}}"#,
            valid.join(","),
            self.data_dir().display(),
            conf.ipam
        )
        .into_bytes()
    }

    /// One plugin call, in process. ADD returns its addresses.
    pub fn call(
        &self,
        command: Command,
        container_id: &str,
        ifname: &str,
        args: &str,
        boot_id: &str,
        stdin: Vec<u8>,
    ) -> libcni::Result<Vec<IpAddr>> {
        std::env::set_var("HOST_LOCAL_BOOT_ID", boot_id);
        let conf = libcni::json::parse(&stdin).expect("the harness writes valid JSON");
        let cni_version = conf["cniVersion"].as_str().unwrap_or_default().to_string();
        let cmd = CmdArgs {
            command,
            container_id: container_id.to_string(),
            netns: "/var/run/netns/fuzz".into(),
            ifname: ifname.to_string(),
            args: args.to_string(),
            path: "/opt/cni/bin".into(),
            stdin,
            conf,
            cni_version,
        };
        let plugin = HostLocal;
        match command {
            Command::Add => {
                plugin.add(&cmd).map(|r: AnyResult| r.to_v100().ips.iter().map(|c| c.address.addr).collect())
            }
            Command::Del => plugin.del(&cmd).map(|_| Vec::new()),
            Command::Check => plugin.check(&cmd).map(|_| Vec::new()),
            Command::Gc => plugin.gc(&cmd).map(|_| Vec::new()),
            Command::Status => plugin.status(&cmd).map(|_| Vec::new()),
            Command::Version => unreachable!("not a plugin call"),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Something the plugin left read-only must not keep the directory around.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Sandboxes of fuzzer processes that crashed (their Drop never ran).
fn sweep_dead(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("cni-fuzz-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What `plant` creates.
#[derive(Debug)]
pub enum Planted<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
}

/// Attachments ADD has handed addresses to in the current boot (a boot change kills
/// every sandbox), with the addresses; no two may share one.
#[derive(Default)]
pub struct Live {
    pub boot: String,
    pub attachments: BTreeMap<(String, String), Vec<IpAddr>>,
}

impl Live {
    /// Call before each call with its boot ID.
    pub fn boot(&mut self, boot_id: &str) {
        if self.boot != boot_id {
            self.boot = boot_id.to_string();
            self.attachments.clear();
        }
    }

    /// Record a successful ADD, checking that no other live attachment has its addresses.
    pub fn added(&mut self, id: &str, ifname: &str, ips: &[IpAddr]) {
        let key = (id.to_string(), ifname.to_string());
        for (other, theirs) in &self.attachments {
            if *other != key && !(other.0 == key.0 && skipped("old-format")) {
                for addr in ips {
                    assert!(
                        !theirs.contains(addr),
                        "ADD {id}/{ifname} got {addr}, which live attachment {}/{} holds ({theirs:?})",
                        other.0,
                        other.1
                    );
                }
            }
        }
        let entry = self.attachments.entry(key).or_default();
        for addr in ips {
            if !entry.contains(addr) {
                entry.push(*addr);
            }
        }
    }
}
