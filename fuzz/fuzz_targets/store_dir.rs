//! A whole store directory built from the input, then a short sequence of ADD/DEL/CHECK/GC
//! calls made in process through `HostLocal` and the skel's `Plugin` trait.
//!
//! Input: a config byte; an entry count; per entry a name byte (from a small alphabet:
//! addresses inside and outside the ranges, `<ip>.pod`, `last_reserved_ip.<n>`,
//! `.hostlocal/index`, temp files, `lock`, OpenYurt markers, junk), a kind byte (file
//! with fuzzed bytes or with a template: lease, old-format lease, pod record, address;
//! empty file; directory; symlink pointing outside the store; a checksummed
//! `.hostlocal/index` for the store's mtime, see `plant_index`) and its data; then calls,
//! two bytes each (verb, container, ifname, pod, boot ID, requested IP, GC's valid list).
//!
//! Invariants: no panic; every successful ADD hands out one address per range set, inside
//! the configured range and never its network, broadcast or gateway address; two live
//! attachments (ADDed in the current boot, not DELeted nor collected) never share an
//! address; CHECK of a live attachment succeeds; the sentinels beside the store
//! (`<dataDir>/sentinel-file`, `<dataDir>/sentinel-dir/`, `<root>/outside`) never change.
#![no_main]
use cni_fuzz::{Live, Planted, Reader, Sandbox, CONFIGS, LINK_TARGETS};
use libcni::skel::Command;
use libfuzzer_sys::fuzz_target;

/// Addresses the names are built from: in, at the edge of, and outside the ranges.
const IPS: &[&str] = &[
    "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.0", "10.1.0.1", "10.1.0.7", "10.1.1.1",
    "10.1.1.2", "10.1.1.3", "10.2.0.1", "fd00::2", "fd00::1", "fd00::", "fd00::7",
];

const JUNK: &[&str] = &[
    ".hostlocal",
    ".hostlocal/index",
    ".hostlocal/.tmp-1",
    ".hostlocal/.tmp-1-1",
    ".tmp-1",
    "lock",
    "last_reserved_ip.0",
    "last_reserved_ip.1",
    "last_reserved_ip.",
    "::ffff:10.1.0.2",
    "010.1.0.2",
    "10.1.0.2.pod.pod",
    "10.1.0.2_ns",
    "10.1.0.2_ns_p1_x",
    "fd00::0002",
    "junk",
];

/// `IP=` in CNI_ARGS: a free-able address, then network, gateway and broadcast ones.
const REQUESTED: &[&str] =
    &["10.1.0.3", "10.1.0.0", "10.1.0.1", "10.1.0.7", "10.1.1.2", "10.1.1.3", "fd00::1", "fd00::7"];

const CONTAINERS: &[&str] = &["c0", "c1", "c2", "c3"];
const IFNAMES: &[&str] = &["eth0", "eth1"];
const PODS: &[(&str, &str)] = &[("", ""), ("ns", "p1"), ("ns", "p2"), ("other", "p1")];
const BOOTS: &[&str] = &["b1", "b2"];

fn name(r: &mut Reader) -> String {
    let b = r.byte();
    let ip = IPS[(b & 15) as usize];
    match b >> 4 {
        0..=5 => ip.to_string(),
        6..=8 => format!("{ip}.pod"),
        9 => format!("{ip}_ns_p1"),
        10 => format!("{ip}_ns_p2"),
        11 => format!("{ip}_other_p1"),
        _ => JUNK[(b & 15) as usize].to_string(),
    }
}

/// A file's content: fuzzed bytes, or a template that reaches the deeper states.
fn content(r: &mut Reader) -> Vec<u8> {
    let t = r.byte();
    let id = CONTAINERS[(t >> 3 & 3) as usize];
    let ifname = IFNAMES[(t >> 5 & 1) as usize];
    match t & 7 {
        0..=2 => r.bytes(96).to_vec(),
        3 => format!("{id}\r\n{ifname}").into_bytes(),
        4 => id.as_bytes().to_vec(),
        5 => {
            let p = r.byte();
            let (ns, pod) = PODS[(p & 3) as usize];
            let boot = ["b1", "b2", "old"][(p >> 2 & 3) as usize % 3];
            let state = if p & 16 != 0 { "held" } else { "active" };
            let since = if p & 32 != 0 { "2020-01-01T00:00:00Z" } else { "2100-01-01T00:00:00Z" };
            format!(
                r#"{{"containerId":"{id}","ifname":"{ifname}","namespace":"{ns}","name":"{pod}","uid":"","bootId":"{boot}","state":"{state}","since":"{since}"}}"#
            )
            .into_bytes()
        }
        6 => IPS[(r.byte() & 15) as usize].as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// Index fields as index.rs escapes them.
fn escape(s: &str) -> String {
    if s.is_empty() {
        return "~".into();
    }
    s.bytes()
        .map(
            |b| {
                if b.is_ascii_graphic() && b != b'%' && b != b'~' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            },
        )
        .collect()
}

/// A checksummed `.hostlocal/index` for the store's current mtime, so the store uses it:
/// mode bit 0 clear, the body is fuzzed bytes; set, it is the true lease lines (names,
/// inodes, contents) with line `mode >> 2` left out and the fuzzed bytes after them. Mode
/// bit 1: written a second after the directory's mtime (trusted on mtime alone), or in
/// the same tick (checked against the listing).
fn plant_index(sb: &Sandbox, mode: u8, fuzzed: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let dir = sb.store_dir();
    let path = dir.join(".hostlocal/index");
    if !sb.real_dir(std::path::Path::new(".hostlocal")) || std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file())
    {
        return;
    }
    let mut body = Vec::new();
    if mode & 1 != 0 {
        let mut lines: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ip: std::net::IpAddr = name.parse().ok()?;
                if libcni::ip::go_ip_string(ip) != name {
                    return None;
                }
                let meta = std::fs::symlink_metadata(e.path()).ok()?;
                let content = if meta.is_file() {
                    escape(String::from_utf8_lossy(&std::fs::read(e.path()).ok()?).trim())
                } else {
                    "%".into()
                };
                Some(format!("L {name} {} {content}\n", meta.ino()))
            })
            .collect();
        lines.sort();
        let skip = (mode >> 2) as usize;
        for (i, line) in lines.iter().enumerate() {
            if i != skip {
                body.extend_from_slice(line.as_bytes());
            }
        }
    }
    body.extend_from_slice(fuzzed);
    let Ok(meta) = std::fs::metadata(&dir) else { return };
    let mut text = format!("{} {} {}\n", host_local::index::HEADER, meta.mtime(), meta.mtime_nsec()).into_bytes();
    text.extend_from_slice(&body);
    if std::fs::write(&path, cni_fuzz::with_trailer(&text)).is_err() {
        return;
    }
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.mtime() as u64 + u64::from(mode & 2 != 0), meta.mtime_nsec() as u32);
    if let Ok(f) = std::fs::File::options().write(true).open(&path) {
        let _ = f.set_modified(mtime);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let conf = &CONFIGS[r.byte() as usize % CONFIGS.len()];
    let sb = Sandbox::new();
    // CNI_FUZZ_DEBUG=1: say what an input does (run the target binary on one file).
    let debug = std::env::var_os("CNI_FUZZ_DEBUG").is_some();
    let mut index = None;
    for _ in 0..r.byte() % 12 {
        let name = name(&mut r);
        let bytes;
        let planted = match r.byte() % 8 {
            0..=3 => {
                bytes = content(&mut r);
                Planted::File(&bytes)
            }
            4 => {
                index = Some((r.byte(), r.bytes(160)));
                continue;
            }
            5 => Planted::Dir,
            _ => Planted::Symlink(r.pick(LINK_TARGETS)),
        };
        if debug {
            eprintln!("plant {name:?}: {planted:?}");
        }
        sb.plant(&name, planted);
    }
    if let Some((mode, body)) = index {
        plant_index(&sb, mode, body);
        if debug {
            let text = std::fs::read(sb.store_dir().join(".hostlocal/index")).unwrap_or_default();
            eprintln!("plant index (mode {mode:#b}): {:?}", String::from_utf8_lossy(&text));
        }
    }
    let mut live = Live::default();
    for _ in 0..10 {
        if r.is_empty() {
            break;
        }
        let (a, b) = (r.byte(), r.byte());
        let verb = [Command::Add, Command::Del, Command::Check, Command::Gc][(a & 3) as usize];
        let id = CONTAINERS[(a >> 2 & 3) as usize];
        let ifname = IFNAMES[(a >> 4 & 1) as usize];
        let (ns, pod) = PODS[(a >> 5 & 3) as usize];
        let boot = BOOTS[(b & 1) as usize];
        let requested = match b >> 1 & 15 {
            0..=7 => None,
            n => Some(REQUESTED[n as usize - 8]),
        };
        let mut args = String::new();
        if !ns.is_empty() {
            args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}");
        }
        if let Some(ip) = requested {
            args = if args.is_empty() { format!("IP={ip}") } else { format!("{args};IP={ip}") };
        }
        // GC's valid attachments: the live ones of the containers whose bit is set.
        let keep = b >> 5;
        let valid: Vec<(String, String)> = live
            .attachments
            .keys()
            .filter(|(c, _)| CONTAINERS.iter().position(|x| x == c).is_some_and(|i| i < 3 && keep & (1 << i) != 0))
            .cloned()
            .collect();

        live.boot(boot);
        let outcome = sb.call(verb, id, ifname, &args, boot, sb.stdin(conf, &valid));
        if debug {
            eprintln!("{verb:?} {id}/{ifname} args {args:?} boot {boot} valid {valid:?} -> {outcome:?}");
            let mut names: Vec<_> = std::fs::read_dir(sb.store_dir()).unwrap().flatten().map(|e| e.path()).collect();
            names.sort();
            for path in names {
                let content = std::fs::symlink_metadata(&path).map(|m| {
                    if m.is_file() {
                        format!("{:?}", String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()))
                    } else {
                        format!("{:?}", m.file_type())
                    }
                });
                eprintln!("    {}: {}", path.file_name().unwrap().to_string_lossy(), content.unwrap_or_default());
            }
        }
        let key = (id.to_string(), ifname.to_string());
        match (verb, outcome) {
            (Command::Add, Ok(ips)) => {
                conf.assert_valid(&format!("ADD {id}/{ifname} args {args:?}"), &ips);
                live.added(id, ifname, &ips);
            }
            (Command::Del, _) => {
                live.attachments.remove(&key);
            }
            (Command::Check, Err(e)) if requested.is_none() && live.attachments.contains_key(&key) => {
                panic!("CHECK of live attachment {id}/{ifname} ({:?}) failed: {e}", live.attachments[&key]);
            }
            (Command::Gc, _) => live.attachments.retain(|k, _| valid.contains(k)),
            _ => {}
        }
        sb.check_outside();
    }
});
