//! Bad input, for host-local and delegated-ipam: every case gives a CNI error JSON with the
//! right code, or a correct result where the input is legal. Nothing crashes or hangs,
//! nothing is handed out twice, and nothing is written outside the store.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ours, TempDir};

/// What a call produced; `None` for the code when there was no error JSON.
struct Seen {
    exit: i32,
    code: Option<u64>,
    stdout: String,
}

/// Run `plugin` with `env` and raw `stdin`, killing it if it takes more than 10 s.
fn call(plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Seen {
    let mut child = Command::new(plugin)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the plugin hung on {env:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.code().is_some(), "the plugin crashed (signal): {status:?}");
    let code = serde_json::from_str::<serde_json::Value>(&stdout).ok().and_then(|v| v["code"].as_u64());
    Seen { exit: status.code().unwrap(), code, stdout }
}

fn env<'a>(
    command: &'a str,
    container: &'a str,
    ifname: &'a str,
    netns: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut e = vec![("CNI_COMMAND", command), ("CNI_PATH", "/opt/cni/bin")];
    for (k, v) in [("CNI_CONTAINERID", container), ("CNI_IFNAME", ifname), ("CNI_NETNS", netns), ("CNI_ARGS", args)] {
        if !v.is_empty() {
            e.push((k, v));
        }
    }
    e
}

fn add_env() -> Vec<(&'static str, &'static str)> {
    env("ADD", "c1", "eth0", "/var/run/netns/x", "")
}

/// Every file under `dir`, recursively (to prove nothing appeared outside the store).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.insert(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&e.path()));
            }
        }
    }
    out
}

/// (what, environment, stdin, the expected CNI error code)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64);

fn nested(depth: usize) -> String {
    format!(r#"{{"name":"n","x":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn host_local_bad_input_table() {
    let dd = TempDir::new("bad-input");
    let d = dd.display();
    let conf = |ipam: &str| {
        format!(r#"{{"cniVersion":"1.0.0","name":"net","ipam":{{"type":"host-local","dataDir":"{d}",{ipam}}}}}"#)
    };
    let good = conf(r#""subnet":"10.90.0.0/24""#);
    let file = dd.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let huge = format!(r#"{{"name":"n","pad":"{}"}}"#, "x".repeat(5 << 20));
    // Network directories that are not directories (store_faults.rs has what is inside one).
    std::fs::create_dir(dd.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(dd.path().join("elsewhere"), dd.path().join("symlinked")).unwrap();
    std::os::unix::fs::symlink(dd.path().join("nothing"), dd.path().join("dangling")).unwrap();
    std::fs::write(dd.path().join("plainfile"), "").unwrap();
    let fifo = std::ffi::CString::new(dd.path().join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let network = |name: &str| good.replace(r#""name":"net""#, &format!(r#""name":"{name}""#)).into_bytes();
    let del = env("DEL", "c1", "eth0", "/x", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p");
    let a = add_env();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("empty stdin", a.clone(), b"".to_vec(), 6),
        ("malformed JSON", a.clone(), b"{\"name\":".to_vec(), 6),
        ("huge stdin", a.clone(), huge.into_bytes(), 6),
        ("deeply nested JSON", a.clone(), nested(100_000).into_bytes(), 6),
        ("invalid UTF-8", a.clone(), b"{\"name\":\"n\xff\xfe\"}".to_vec(), 6),
        ("wrong type: name", a.clone(), br#"{"name":5}"#.to_vec(), 6),
        ("wrong type: ipam", a.clone(), br#"{"cniVersion":"1.0.0","name":"n","ipam":"x"}"#.to_vec(), 7),
        ("wrong type: ranges", a.clone(), conf(r#""ranges":{"a":1}"#).into_bytes(), 7),
        ("wrong type: subnet", a.clone(), conf(r#""subnet":10"#).into_bytes(), 7),
        ("invalid CIDR", a.clone(), conf(r#""subnet":"10.90.0.0/33""#).into_bytes(), 7),
        ("not a CIDR", a.clone(), conf(r#""subnet":"banana""#).into_bytes(), 7),
        ("host bits set", a.clone(), conf(r#""subnet":"10.90.0.7/24""#).into_bytes(), 7),
        ("range outside its subnet", a.clone(), conf(r#""subnet":"10.90.0.0/24","rangeStart":"10.91.0.5""#).into_bytes(), 7),
        ("range end before start", a.clone(), conf(r#""subnet":"10.90.0.0/24","rangeStart":"10.90.0.9","rangeEnd":"10.90.0.3""#).into_bytes(), 7),
        ("overlapping range sets", a.clone(), conf(r#""ranges":[[{"subnet":"10.90.0.0/24"}],[{"subnet":"10.90.0.0/25"}]]"#).into_bytes(), 7),
        ("unknown cniVersion", a.clone(), good.replace("1.0.0", "9.9.9").into_bytes(), 1),
        ("missing container ID", env("ADD", "", "eth0", "/x", ""), good.clone().into_bytes(), 4),
        ("invalid container ID", env("ADD", "c 1", "eth0", "/x", ""), good.clone().into_bytes(), 4),
        ("missing ifname", env("ADD", "c1", "", "/x", ""), good.clone().into_bytes(), 4),
        ("invalid ifname", env("ADD", "c1", "eth0/../x", "/x", ""), good.clone().into_bytes(), 4),
        ("ifname too long", env("ADD", "c1", "eth0123456789012", "/x", ""), good.clone().into_bytes(), 4),
        ("missing netns", env("ADD", "c1", "eth0", "", ""), good.clone().into_bytes(), 4),
        ("traversal in the network name", a.clone(), good.replace(r#""name":"net""#, r#""name":"../../etc""#).into_bytes(), 7),
        ("slash in the network name", a.clone(), good.replace(r#""name":"net""#, r#""name":"a/b""#).into_bytes(), 7),
        ("dataDir is a file", a.clone(), good.replace(&d, &file.display().to_string()).into_bytes(), 5),
        ("network dir is a symlink to a directory", a.clone(), network("symlinked"), 5),
        ("network dir is a symlink to a directory: DEL", del.clone(), network("symlinked"), 5),
        ("network dir is a dangling symlink", a.clone(), network("dangling"), 5),
        ("network dir is a file", a.clone(), network("plainfile"), 5),
        ("network dir is a FIFO", a.clone(), network("fifo"), 5),
        ("network dir is a FIFO: DEL", del.clone(), network("fifo"), 5),
        ("malformed CNI_ARGS", env("ADD", "c1", "eth0", "/x", "IP"), good.clone().into_bytes(), 4),
        ("CNI_ARGS bad IP", env("ADD", "c1", "eth0", "/x", "IP=1.2.3.999"), good.clone().into_bytes(), 4),
        ("CNI_ARGS unknown key", env("ADD", "c1", "eth0", "/x", "FOO=bar"), good.clone().into_bytes(), 4),
        ("unknown command", env("FROB", "c1", "eth0", "/x", ""), good.clone().into_bytes(), 4),
    ];
    let before = tree(dd.path());
    for (what, e, stdin, code) in &cases {
        let seen = call(&ours(), e, stdin);
        assert_eq!((seen.exit, seen.code), (1, Some(*code)), "{what}: {}", seen.stdout);
    }
    assert_eq!(tree(dd.path()), before, "nothing was written by calls that failed validation");
}

#[test]
fn host_local_legal_but_odd_stores() {
    let dd = TempDir::new("odd-store");
    let net = dd.path().join("net");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("10.91.0.2"), "").unwrap(); // empty: a crashed upstream call
    std::fs::write(net.join("10.91.0.3"), "garbage \u{0} bytes\r\n\r\n").unwrap(); // some other tool's
    std::fs::write(net.join("10.91.0.4"), "\n").unwrap();
    std::fs::write(net.join("last_reserved_ip.0"), "not an address").unwrap();
    std::fs::write(net.join("10.91.0.5.pod"), "{not json").unwrap();
    std::fs::write(net.join("zzz"), "c1\r\neth0").unwrap(); // not a lease name
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"net","ipam":{{"dataDir":"{}","subnet":"10.91.0.0/29"}}}}"#,
        dd.display()
    );
    let mut got = BTreeSet::new();
    for i in 0..5 {
        let c = format!("c{i}");
        let seen = call(&ours(), &env("ADD", &c, "eth0", "/x", ""), conf.as_bytes());
        if seen.exit == 0 {
            let v: serde_json::Value = serde_json::from_str(&seen.stdout).unwrap();
            assert!(got.insert(v["ips"][0]["address"].as_str().unwrap().to_string()), "handed out twice");
        } else {
            assert_eq!(seen.code, Some(11), "{}", seen.stdout);
        }
    }
    // .2 and .4 were debris and were reclaimed; .3 belongs to someone: never handed out.
    assert_eq!(
        got,
        ["10.91.0.2/29", "10.91.0.4/29", "10.91.0.5/29", "10.91.0.6/29"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(std::fs::read(net.join("10.91.0.3")).unwrap(), b"garbage \x00 bytes\r\n\r\n");
    assert!(net.join("zzz").exists(), "files that are not leases are left alone");
}

#[test]
#[ignore = "needs root (a read-only bind mount): run scripts/test.sh"]
fn host_local_read_only_store() {
    let dd = TempDir::new("ro-store");
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"net","ipam":{{"dataDir":"{}","subnet":"10.92.0.0/24"}}}}"#,
        dd.display()
    );
    assert_eq!(call(&ours(), &add_env(), conf.as_bytes()).exit, 0);
    let mount = |args: &[&str]| assert!(Command::new("mount").args(args).status().unwrap().success(), "mount {args:?}");
    let d = dd.display();
    mount(&["--bind", &d, &d]);
    mount(&["-o", "remount,bind,ro", &d]);
    let add = call(&ours(), &env("ADD", "c2", "eth0", "/x", ""), conf.as_bytes());
    let status = call(&ours(), &env("STATUS", "", "", "", ""), conf.as_bytes());
    let del = call(&ours(), &env("DEL", "c1", "eth0", "", ""), conf.as_bytes());
    Command::new("umount").arg(&d).status().unwrap();
    assert_eq!(add.code, Some(5), "ADD on a read-only store: {}", add.stdout);
    assert!(add.stdout.contains("Read-only file system"), "{}", add.stdout);
    assert_eq!(status.code, Some(50), "{}", status.stdout);
    assert_eq!(del.code, Some(5), "DEL cannot release: it must say so: {}", del.stdout);
    // The store is as it was.
    assert_eq!(common::leases(&dd.path().join("net")), ["10.92.0.2"]);
    assert_eq!(call(&ours(), &env("CHECK", "c1", "eth0", "/x", ""), conf.as_bytes()).exit, 0);
}

#[test]
fn delegated_ipam_bad_input_table() {
    let plugin = Path::new(env!("CARGO_BIN_EXE_host-local")).with_file_name("delegated-ipam");
    if !plugin.is_file() {
        panic!("{} is missing: cargo build --workspace first (scripts/test.sh does)", plugin.display());
    }
    let a = add_env();
    let with = |ipam: &str| format!(r#"{{"cniVersion":"0.3.1","name":"cilium","ipam":{ipam}}}"#).into_bytes();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("empty stdin", a.clone(), b"".to_vec(), 6),
        ("deeply nested JSON", a.clone(), nested(100_000).into_bytes(), 6),
        ("invalid UTF-8", a.clone(), b"{\"name\":\"\xc3\x28\"}".to_vec(), 6),
        ("no ipam", a.clone(), br#"{"cniVersion":"0.3.1","name":"cilium"}"#.to_vec(), 7),
        ("ipam not an object", a.clone(), with("7"), 7),
        ("no delegate", a.clone(), with(r#"{"type":"delegated-ipam"}"#), 7),
        ("delegate not an object", a.clone(), with(r#"{"delegate":"host-local"}"#), 7),
        ("delegate path traversal", a.clone(), with(r#"{"delegate":{"type":"../../../bin/sh"}}"#), 7),
        ("delegate absent from CNI_PATH", a.clone(), with(r#"{"delegate":{"type":"nonexistent"}}"#), 7),
        ("unknown cniVersion", a.clone(), br#"{"cniVersion":"0.0.7","name":"n","ipam":{}}"#.to_vec(), 1),
        ("invalid container ID", env("ADD", "-x", "eth0", "/x", ""), with(r#"{"delegate":{"type":"host-local"}}"#), 4),
    ];
    for (what, e, stdin, code) in &cases {
        let seen = call(&plugin, e, stdin);
        assert_eq!((seen.exit, seen.code), (1, Some(*code)), "{what}: {}", seen.stdout);
    }
}
