//! Durability, shown from the system calls (strace): every lease and pod record is fsynced
//! and then moved into place, and the directory is fsynced, before the result is printed;
//! a DEL's unlink is fsynced before the process exits. The syncs run on helper threads,
//! so what is checked is when each sync *completed*.

mod common;

use std::process::{Command, Stdio};

use common::{net_conf, ours, TempDir};

/// Run our plugin under strace; returns the traced calls, one per line, pid stripped.
fn trace(dd: &TempDir, command: &str, container: &str, conf: &str) -> Vec<String> {
    let log = dd.path().join(format!("{command}-{container}.trace"));
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=openat,write,fsync,fdatasync,linkat,rename,renameat,renameat2,unlink,unlinkat,exit_group",
            "-o",
        ])
        .arg(&log)
        .arg(ours())
        .env_clear()
        .envs([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", "/var/run/netns/nonexistent"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("strace is installed (scripts/test.sh installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), conf.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{command} failed: {}", String::from_utf8_lossy(&out.stdout));
    std::fs::read_to_string(&log).unwrap().lines().map(|l| l.trim().to_string()).collect()
}

/// A traced line without its pid (strace adds one only while several tasks are traced).
fn call_of(line: &str) -> &str {
    match line.split_once(' ') {
        Some((pid, rest)) if pid.bytes().all(|b| b.is_ascii_digit()) => rest.trim_start(),
        _ => line,
    }
}

fn position(calls: &[String], what: &str, pred: impl Fn(&str) -> bool) -> usize {
    calls.iter().position(|c| pred(call_of(c))).unwrap_or_else(|| panic!("no {what} in:\n{}", calls.join("\n")))
}

/// Whether every `syscall` started before line `at` had returned by then.
fn none_pending(calls: &[String], syscall: &str, at: usize) -> bool {
    let before = || calls[..at].iter().map(|c| call_of(c));
    let started = before().filter(|c| c.starts_with(&format!("{syscall}(")) && c.ends_with("<unfinished ...>")).count();
    let resumed = before().filter(|c| c.starts_with(&format!("<... {syscall} resumed>"))).count();
    started == resumed
}

/// Whether `path` was fdatasynced, and that sync had returned, before line `at`. A sync on
/// a helper thread shows as `PID fdatasync(...) <unfinished ...>` and, later, as
/// `PID <... fdatasync resumed>`.
fn synced_before(calls: &[String], path: &str, at: usize) -> bool {
    calls[..at].iter().enumerate().any(|(i, c)| {
        if !(call_of(c).starts_with("fdatasync(") && c.contains(&format!("<{path}>"))) {
            return false;
        }
        if !c.ends_with("<unfinished ...>") {
            return true;
        }
        // strace pads the pid column ("1197  fdatasync"): compare the pid token.
        let pid = c.split_whitespace().next();
        calls[i..at]
            .iter()
            .any(|r| r.split_whitespace().next() == pid && call_of(r).starts_with("<... fdatasync resumed>"))
    })
}

/// What a link/rename put in place: the first quoted path, or for `linkat` of an
/// `O_TMPFILE` descriptor, the `<…/#inode>` path strace shows for it.
fn source_of(call: &str) -> String {
    let args = call.split_once('(').unwrap().1;
    let first = args.split(", ").next().unwrap();
    if first.starts_with(|c: char| c.is_ascii_digit()) {
        return first.split_once('<').unwrap().1.split_once('>').unwrap().0.to_string();
    }
    call.split('"').nth(1).unwrap().to_string()
}

#[test]
#[ignore = "needs strace: run scripts/test.sh"]
fn add_is_durable_before_the_result_is_printed() {
    let dd = TempDir::new("durable-add");
    let conf = net_conf("1.0.0", &dd, r#""ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"2001:db8::/64"}]]"#);
    let calls = trace(&dd, "ADD", "c1", &conf);
    let net = format!("{}/net", dd.display());
    let printed = position(&calls, "result write", |c| c.starts_with("write(1"));
    let dir_fsync = position(&calls, "directory fsync", |c| c.starts_with("fsync(") && c.contains(&format!("<{net}>")));
    assert!(dir_fsync < printed && none_pending(&calls, "fsync", printed), "the directory is fsynced before printing");
    for target in ["10.0.0.2", "2001:db8::2", "10.0.0.2.pod", "2001:db8::2.pod"] {
        let placed = position(&calls, target, |c| {
            (c.starts_with("linkat(") || c.starts_with("rename(") || c.starts_with("renameat2("))
                && c.contains(&format!("\"{net}/{target}\""))
        });
        let tmp = source_of(call_of(&calls[placed]));
        assert!(
            synced_before(&calls, &tmp, placed),
            "{target}: its data is synced before it is put in place:\n{}",
            calls.join("\n")
        );
        assert!(placed < dir_fsync, "{target} is placed before the directory fsync");
    }
    let lease = std::fs::read(dd.path().join("net/10.0.0.2")).unwrap();
    assert_eq!(lease, b"c1\r\neth0", "the lease file is exactly upstream's format");
}

#[test]
#[ignore = "needs strace: run scripts/test.sh"]
fn del_is_durable_before_exit() {
    let dd = TempDir::new("durable-del");
    // Stickiness off: DEL removes the lease instead of holding it.
    let conf = net_conf("1.0.0", &dd, r#""subnet":"10.0.0.0/24","stickyIPs":false"#);
    trace(&dd, "ADD", "c1", &conf);
    let calls = trace(&dd, "DEL", "c1", &conf);
    let net = format!("{}/net", dd.display());
    let removed =
        position(&calls, "lease unlink", |c| c.starts_with("unlink(") && c.contains(&format!("\"{net}/10.0.0.2\"")));
    let dir_fsync = position(&calls, "directory fsync", |c| c.starts_with("fsync(") && c.contains(&format!("<{net}>")));
    let exit = position(&calls, "exit", |c| c.starts_with("exit_group("));
    assert!(removed < dir_fsync && dir_fsync < exit && none_pending(&calls, "fsync", exit), "{}", calls.join("\n"));
    assert!(!dd.path().join("net/10.0.0.2").exists());
}

#[test]
#[ignore = "needs strace: run scripts/test.sh"]
fn a_sticky_del_makes_the_hold_durable_before_exit() {
    let dd = TempDir::new("durable-hold");
    let conf = net_conf("1.0.0", &dd, r#""subnet":"10.0.0.0/24""#);
    trace(&dd, "ADD", "c1", &conf);
    let calls = trace(&dd, "DEL", "c1", &conf);
    let net = format!("{}/net", dd.display());
    let placed = position(&calls, "record rename", |c| {
        c.starts_with("rename(") && c.contains(&format!("\"{net}/10.0.0.2.pod\""))
    });
    let tmp = source_of(call_of(&calls[placed]));
    assert!(synced_before(&calls, &tmp, placed), "{}", calls.join("\n"));
    let dir_fsync = position(&calls, "directory fsync", |c| c.starts_with("fsync(") && c.contains(&format!("<{net}>")));
    let exit = position(&calls, "exit", |c| c.starts_with("exit_group("));
    assert!(placed < dir_fsync && dir_fsync < exit && none_pending(&calls, "fsync", exit), "{}", calls.join("\n"));
    let record = std::fs::read_to_string(dd.path().join("net/10.0.0.2.pod")).unwrap();
    assert!(record.contains(r#""state":"held""#), "{record}");
}

/// The trace reading above, on strace's formats: no pid (one task), padded 4-digit pids,
/// and a sync on a helper thread that returns after (or before) the file is placed.
#[test]
fn trace_parsing_handles_strace_formats() {
    let trace = |text: &str| -> Vec<String> { text.lines().map(|l| l.trim().to_string()).collect() };
    let threaded = trace(
        "1197  fdatasync(6</n/#10>(deleted) <unfinished ...>\n\
         1199  fdatasync(8</n/#11>(deleted)) = 0\n\
         1197  <... fdatasync resumed>)          = 0\n\
         1195  linkat(5</n/#10>(deleted), \"\", AT_FDCWD</x>, \"/n/10.0.0.2\", AT_EMPTY_PATH) = 0",
    );
    assert_eq!(source_of(call_of(&threaded[3])), "/n/#10");
    assert!(synced_before(&threaded, "/n/#10", 3));
    let early = trace(
        "1197  fdatasync(6</n/#10>(deleted) <unfinished ...>\n\
         1195  linkat(5</n/#10>(deleted), \"\", AT_FDCWD</x>, \"/n/10.0.0.2\", AT_EMPTY_PATH) = 0\n\
         1197  <... fdatasync resumed>)          = 0",
    );
    assert!(!synced_before(&early, "/n/#10", 1), "a sync still running when the file is placed does not count");
    let single =
        trace("fdatasync(5</n/.hostlocal/.tmp-1>) = 0\nrename(\"/n/.hostlocal/.tmp-1\", \"/n/10.0.0.2.pod\") = 0");
    assert_eq!(source_of(call_of(&single[1])), "/n/.hostlocal/.tmp-1");
    assert!(synced_before(&single, "/n/.hostlocal/.tmp-1", 1));
    assert!(!none_pending(&early, "fdatasync", 2) && none_pending(&early, "fdatasync", 3));
}
