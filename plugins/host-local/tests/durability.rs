//! The write order, shown from the system calls (strace). Every new file's data is written
//! out before the file gets its name (so no journal commit can carry the name without the
//! data), and after it has its name the file is fsynced, before ADD's result is printed
//! (btrfs ignores an fsync of a nameless file). A file that replaces another is synced
//! before its rename too, except on xfs and journalled ext4. The directory is fsynced only on
//! an ext4 without a journal, after naming and right after renames (on btrfs that would log
//! other calls' unsynced names without their data). What is checked is when each
//! sync *completed*, so that a sync moved to another thread would still be judged right. That the order is enough is shown by
//! the power-cut test (tests/power_cut.rs); this test keeps it from regressing.

mod common;

use std::process::{Command, Stdio};

use common::{ours, LoopFs, TempDir};

/// Run our plugin under strace; returns the traced calls, one per line, pid stripped.
fn trace(dd: &TempDir, command: &str, container: &str, conf: &str) -> Vec<String> {
    trace_as(Caps::All, dd, command, container, conf)
}

/// The capabilities the plugin runs with.
#[derive(Clone, Copy)]
enum Caps {
    All,
    /// Without CAP_SYS_ADMIN, ext4 does not say whether it has a journal (`ioctl`): the
    /// plugin finds it in /proc.
    NoSysAdmin,
}

fn trace_as(caps: Caps, dd: &TempDir, command: &str, container: &str, conf: &str) -> Vec<String> {
    let log = dd.path().join(format!("{command}-{container}.trace"));
    let mut child = match caps {
        Caps::All => Command::new("strace"),
        Caps::NoSysAdmin => {
            // Out of the bounding and inheritable sets, root's exec of strace (and its of the
            // plugin) drops it.
            let mut setpriv = Command::new("setpriv");
            setpriv.args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "strace"]);
            setpriv
        }
    };
    let mut child = child
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=openat,write,pwrite64,ftruncate,fsync,fdatasync,sync_file_range,linkat,rename,renameat,renameat2,unlink,unlinkat,ioctl,access,exit_group",
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

/// Whether `syscall` on the descriptor of `path` had returned before line `at`. A call on
/// a helper thread shows as `PID fsync(...) <unfinished ...>` and, later, as
/// `PID <... fsync resumed>`.
fn done_before(calls: &[String], syscall: &str, path: &str, at: usize) -> bool {
    calls[..at].iter().enumerate().any(|(i, c)| {
        if !(call_of(c).starts_with(&format!("{syscall}(")) && c.contains(&format!("<{path}>"))) {
            return false;
        }
        if !c.ends_with("<unfinished ...>") {
            return true;
        }
        // strace pads the pid column ("1197  fsync"): compare the pid token.
        let pid = c.split_whitespace().next();
        calls[i..at]
            .iter()
            .any(|r| r.split_whitespace().next() == pid && call_of(r).starts_with(&format!("<... {syscall} resumed>")))
    })
}

/// Whether `path`'s data was written out (`sync_file_range` waiting for the writes, or a
/// completed fsync) before line `at`, after the last write to it (a prepared file can be
/// rewritten in place once the call knows more).
fn written_out_before(calls: &[String], path: &str, at: usize) -> bool {
    let last_write = calls[..at].iter().rposition(|c| {
        let c = call_of(c);
        ["write(", "pwrite64(", "ftruncate("].iter().any(|w| c.starts_with(w)) && c.contains(&format!("<{path}>"))
    });
    let from = last_write.map_or(0, |w| w + 1);
    let since = &calls[from..at];
    let waited = since.iter().any(|c| {
        let c = call_of(c);
        c.starts_with("sync_file_range(")
            && c.contains(&format!("<{path}>"))
            && c.contains("SYNC_FILE_RANGE_WAIT_AFTER")
    });
    waited || done_before(since, "fsync", path, since.len())
}

/// What a `linkat`/`renameat`/`renameat2` put in place: (source, target) as paths. The
/// source of a `linkat` of an `O_TMPFILE` descriptor is the `<…/#inode>` path strace
/// shows for it.
fn placement(call: &str) -> Option<(String, String)> {
    let (syscall, args) = call.split_once('(')?;
    let args: Vec<&str> = args.split(", ").collect();
    let fd_path = |arg: &str| Some(arg.split_once('<')?.1.split_once('>')?.0.to_string());
    let name = |arg: &str| Some(arg.strip_prefix('"')?.split('"').next()?.to_string());
    match syscall {
        "linkat" if args.get(1) == Some(&"\"\"") => {
            Some((fd_path(args[0])?, format!("{}/{}", fd_path(args[2])?, name(args[3])?)))
        }
        "renameat" | "renameat2" => Some((
            format!("{}/{}", fd_path(args[0])?, name(args[1])?),
            format!("{}/{}", fd_path(args[2])?, name(args.get(3)?)?),
        )),
        _ => None,
    }
}

/// An ADD on a journalled ext4: the files' syncs carry their names, the directory is never
/// synced (on btrfs that would log other calls' unsynced names).
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn add_is_durable_before_the_result_is_printed() {
    let ext4 = LoopFs::mount("durable-add-ext4", &["mkfs.ext4", "-q"]);
    add_is_durable(&ext4.data_dir(), false);
}

/// Without a journal an ext4 syncs a new entry's directory with the file only while the
/// file's inode is dirty (before Linux 6.5): the directory is synced too, before the result
/// is printed, also for a repeated ADD's files (named by an earlier call).
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_ext4_without_a_journal_add_also_syncs_the_directory() {
    let ext4 = LoopFs::mount("durable-add-ext4-nj", &["mkfs.ext4", "-q", "-O", "^has_journal"]);
    add_is_durable(&ext4.data_dir(), true);
}

fn dir_syncs(calls: &[String], dir: &str, before: usize) -> usize {
    let dir_sync = |c: &&String| {
        let c = call_of(c);
        (c.starts_with("fsync(") || c.starts_with("fdatasync(")) && c.contains(&format!("<{dir}>"))
    };
    calls[..before].iter().filter(dir_sync).count()
}

/// Files synced after `from` and before `to`, by path.
fn synced_between(calls: &[String], path: &str, from: usize, to: usize) -> bool {
    calls[from..to].iter().any(|c| call_of(c).starts_with("fsync(") && c.contains(&format!("<{path}>")))
}

fn add_is_durable(data_dir: &str, dir_synced: bool) {
    let dd = TempDir::new("durable-add");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"net","ipam":{{"type":"host-local","dataDir":"{data_dir}","ranges":[[{{"subnet":"10.0.0.0/24"}}],[{{"subnet":"2001:db8::/64"}}]]}}}}"#
    );
    let calls = trace(&dd, "ADD", "c1", &conf);
    let net = format!("{data_dir}/net");
    let printed = position(&calls, "result write", |c| c.starts_with("write(1<"));
    assert!(none_pending(&calls, "fsync", printed), "every sync has returned before printing");
    let synced = dir_syncs(&calls, &net, printed);
    assert_eq!(synced, usize::from(dir_synced), "directory synced?\n{}", calls.join("\n"));
    // A repeated ADD (an earlier call's were interrupted, say) syncs what it reports again.
    let again = trace(&dd, "ADD", "c1", &conf);
    let printed_again = position(&again, "result write", |c| c.starts_with("write(1<"));
    assert!(none_pending(&again, "fsync", printed_again), "a repeated ADD's syncs return before it prints");
    for target in ["10.0.0.2", "2001:db8::2", "10.0.0.2.pod", "2001:db8::2.pod"] {
        let path = format!("{net}/{target}");
        assert!(
            synced_between(&again, &path, 0, printed_again),
            "repeated ADD: {target} synced:\n{}",
            again.join("\n")
        );
    }
    let synced_again = dir_syncs(&again, &net, printed_again);
    assert_eq!(synced_again, usize::from(dir_synced), "repeated ADD: directory synced?\n{}", again.join("\n"));
    for target in ["10.0.0.2", "2001:db8::2", "10.0.0.2.pod", "2001:db8::2.pod"] {
        let target_path = format!("{net}/{target}");
        let placed = position(&calls, target, |c| placement(c).is_some_and(|(_, to)| to == target_path));
        // An O_TMPFILE keeps its nameless path in the trace; a renamed file takes the new one.
        let source = placement(call_of(&calls[placed])).unwrap().0;
        let trace = || calls.join("\n");
        assert!(written_out_before(&calls, &source, placed), "{target}: data written out before naming:\n{}", trace());
        let synced = [source.as_str(), &target_path].iter().any(|path| {
            calls[placed..].iter().any(|c| c.contains(&format!("<{path}>")) && call_of(c).starts_with("fsync("))
                && done_before(&calls, "fsync", path, printed)
        });
        assert!(synced, "{target}: fsynced after naming, before printing:\n{}", trace());
        let nameless = source.rsplit('/').next().is_some_and(|n| n.starts_with('#'));
        assert!(
            !nameless
                || !calls[..placed].iter().any(|c| {
                    let c = call_of(c);
                    (c.starts_with("fsync(") || c.starts_with("fdatasync(")) && c.contains(&format!("<{source}>"))
                }),
            "{target}: no sync of the nameless file, which btrfs would ignore:\n{}",
            trace()
        );
    }
    let lease = std::fs::read(format!("{net}/10.0.0.2")).unwrap();
    assert_eq!(lease, b"c1\r\neth0", "the lease file is exactly upstream's format");
}

/// Every path the file at `path` was known by in the trace: that path, and the names it
/// was linked or renamed from (an `O_TMPFILE` keeps its nameless `#inode` path in strace's
/// output after it has been linked to a name).
fn names_of(calls: &[String], path: &str) -> Vec<String> {
    let mut names = vec![path.to_string()];
    let mut i = 0;
    while i < names.len() {
        for (from, to) in calls.iter().filter_map(|c| placement(call_of(c))) {
            if to == names[i] && !names.contains(&from) {
                names.push(from);
            }
        }
        i += 1;
    }
    names
}

fn conf(data_dir: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"net","ipam":{{"type":"host-local","dataDir":"{data_dir}","subnet":"10.0.0.0/24"}}}}"#
    )
}

/// A pod's sandbox is deleted, its hold record is found in the single-line form of earlier
/// versions (which is never rewritten in place), and its next sandbox takes the address
/// back: record and lease are replaced. Each replacement is complete on the device before
/// its rename, synced first where `sync_first`, and the take-back is durable before its
/// result is printed: its files synced after their renames, or (`sync_first` and
/// `dir_synced`) the directory right after them.
fn replacements_are_complete_before_their_rename(dd: &TempDir, data_dir: &str, sync_first: bool, dir_synced: bool) {
    replacements_are_complete_before_their_rename_as(Caps::All, dd, data_dir, sync_first, dir_synced);
}

/// As `replacements_are_complete_before_their_rename`, the plugin run with `caps`; returns
/// the take-back's calls.
fn replacements_are_complete_before_their_rename_as(
    caps: Caps,
    dd: &TempDir,
    data_dir: &str,
    sync_first: bool,
    dir_synced: bool,
) -> Vec<String> {
    let trace = |dd: &TempDir, command: &str, container: &str, conf: &str| trace_as(caps, dd, command, container, conf);
    let conf = conf(data_dir);
    let net = format!("{data_dir}/net");
    trace(dd, "ADD", "c1", &conf);
    trace(dd, "DEL", "c1", &conf);
    let record = format!("{net}/10.0.0.2.pod");
    let held = host_local::disk::record::parse(&std::fs::read(&record).unwrap()).expect("a whole record");
    std::fs::write(format!("{record}.new"), host_local::disk::record::to_json(&held)).unwrap();
    std::fs::rename(format!("{record}.new"), &record).unwrap();
    let take_back = trace(dd, "ADD", "c2", &conf);
    assert_eq!(std::fs::read(format!("{net}/10.0.0.2")).unwrap(), b"c2\r\neth0", "the pod's address is back");
    for (calls, targets) in [(&take_back, &["10.0.0.2.pod", "10.0.0.2"][..])] {
        let trace = || calls.join("\n");
        for target in targets {
            let target_path = format!("{net}/{target}");
            let placed = position(calls, target, |c| placement(c).is_some_and(|(_, to)| to == target_path));
            let file = names_of(calls, &placement(call_of(&calls[placed])).unwrap().0);
            let written_out = file.iter().any(|path| written_out_before(calls, path, placed));
            assert!(written_out, "{target}: written out before the rename:\n{}", trace());
            // btrfs logs the removal of the old name at once: the new file must be logged.
            // With an ordered journal, that sync would be a journal commit for nothing.
            let synced = file.iter().any(|path| done_before(calls, "fsync", path, placed));
            assert_eq!(synced, sync_first, "{target}: synced before the rename?\n{}", trace());
            if sync_first {
                // And synced once it has its temp name: a nameless file's sync is lost on
                // btrfs, and on ext4 writes the inode with no link (the power-cut test lost
                // half the leases that way on an ext4 without a journal).
                let temp = &file[0];
                // Linked to it, or created with it (a new temp file).
                let named = calls
                    .iter()
                    .position(|c| {
                        placement(call_of(c)).is_some_and(|(_, to)| &to == temp) || c.contains(&format!("<{temp}>"))
                    })
                    .unwrap_or_else(|| panic!("{temp} never named:\n{}", trace()));
                let synced_named = calls[named..placed].iter().any(|c| {
                    call_of(c).starts_with("fsync(") && file.iter().any(|name| c.contains(&format!("<{name}>")))
                });
                assert!(synced_named, "{target}: synced after it was named {temp}:\n{}", trace());
            }
        }
    }
    let printed = position(&take_back, "result write", |c| c.starts_with("write(1<"));
    let renamed = ["10.0.0.2.pod", "10.0.0.2"].map(|target| {
        let path = format!("{net}/{target}");
        (target, position(&take_back, target, |c| placement(c).is_some_and(|(_, to)| to == path)), path)
    });
    let last_rename = renamed.iter().map(|(_, at, _)| *at).max().unwrap();
    let dir_synced_after = dir_syncs(&take_back, &net, printed) > dir_syncs(&take_back, &net, last_rename);
    assert_eq!(dir_synced_after, dir_synced, "directory synced after the renames?\n{}", take_back.join("\n"));
    for (target, at, path) in renamed {
        let file = names_of(&take_back, &path);
        let synced = take_back[at..printed]
            .iter()
            .any(|c| call_of(c).starts_with("fsync(") && file.iter().any(|name| c.contains(&format!("<{name}>"))));
        // Synced before the rename and the directory after it: durable, nothing more to do.
        assert_eq!(synced, !dir_synced, "{target}: synced after its rename?\n{}", take_back.join("\n"));
    }
    take_back
}

/// ext4 with its journal (and xfs) commit a rename with or after the data written out
/// before it.
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_journalled_ext4_replacements_are_written_out_not_synced_before_their_rename() {
    let dd = TempDir::new("durable-hold-ext4");
    let ext4 = LoopFs::mount("ext4", &["mkfs.ext4", "-q"]);
    replacements_are_complete_before_their_rename(&dd, &ext4.data_dir(), false, false);
}

/// The same where ext4 does not answer the plugin's question (without CAP_SYS_ADMIN, or
/// before Linux 5.14): the journal is looked up in /proc, and the store writes the same way,
/// with a journal and without.
#[test]
#[ignore = "needs strace, setpriv, root and mkfs.ext4: run scripts/test.sh"]
fn on_ext4_the_journal_is_found_without_cap_sys_admin_too() {
    for (journal, mkfs) in [(true, &["mkfs.ext4", "-q"][..]), (false, &["mkfs.ext4", "-q", "-O", "^has_journal"][..])] {
        let dd = TempDir::new(&format!("durable-hold-ext4-nocap-{journal}"));
        let ext4 = LoopFs::mount(&format!("ext4-nocap-{journal}"), mkfs);
        let take_back = replacements_are_complete_before_their_rename_as(
            Caps::NoSysAdmin,
            &dd,
            &ext4.data_dir(),
            !journal,
            !journal,
        );
        let all = || take_back.join("\n");
        let asked = position(&take_back, "the ioctl", |c| call_of(c).starts_with("ioctl("));
        assert!(take_back[asked].contains("EPERM"), "ext4 did not answer:\n{}", all());
        let looked_up = position(&take_back, "the /proc lookup", |c| call_of(c).starts_with("access(\"/proc/fs/jbd2/"));
        assert!(asked < looked_up, "{}", all());
    }
}

/// Without a journal ext4 writes metadata blocks back in any order: sync first, and the
/// directory right after the renames.
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_ext4_without_a_journal_replacements_are_synced_before_their_rename() {
    let dd = TempDir::new("durable-hold-ext4-nj");
    let ext4 = LoopFs::mount("ext4-nj", &["mkfs.ext4", "-q", "-O", "^has_journal"]);
    replacements_are_complete_before_their_rename(&dd, &ext4.data_dir(), true, true);
}

/// btrfs could make a replaced name's removal durable alone: the new file is synced first.
#[test]
#[ignore = "needs strace, root and mkfs.btrfs: run scripts/test.sh"]
fn on_btrfs_replacements_are_synced_before_their_rename() {
    let dd = TempDir::new("durable-hold-btrfs");
    let btrfs = LoopFs::mount("btrfs", &["mkfs.btrfs", "-q"]);
    replacements_are_complete_before_their_rename(&dd, &btrfs.data_dir(), true, false);
}

/// A pod's sandbox is deleted and its next sandbox (a container ID of the same length, as
/// containerd's always are) takes the address back, all in place: DEL writes the record's
/// free slot and syncs nothing; the take-back creates, renames and removes nothing, and
/// makes the index fail its check on the device, then syncs the record, and only then
/// rewrites the lease and syncs it, before its result is printed. With a longer container
/// ID the record is still rewritten in place and synced before the lease is replaced. On a
/// filesystem that writes an overwrite elsewhere (`copy_on_write`), the index is synced.
fn take_back_rewrites_in_place(dd: &TempDir, data_dir: &str, copy_on_write: bool) {
    use std::os::unix::fs::MetadataExt;
    let conf = conf(data_dir);
    let net = format!("{data_dir}/net");
    let (lease, record, index) =
        (format!("{net}/10.0.0.2"), format!("{net}/10.0.0.2.pod"), format!("{net}/.hostlocal/index"));
    trace(dd, "ADD", "c1", &conf);
    let inodes = || [&lease, &record].map(|path| std::fs::metadata(path).unwrap().ino());
    let before = inodes();
    let del = trace(dd, "DEL", "c1", &conf);
    let take_back = trace(dd, "ADD", "c2", &conf);
    assert_eq!(std::fs::read(&lease).unwrap(), b"c2\r\neth0", "the pod's address is back");
    assert_eq!(inodes(), before, "the same lease and record files");
    let on = |c: &str, syscall: &str, path: &str| {
        call_of(c).starts_with(&format!("{syscall}(")) && c.contains(&format!("<{path}>"))
    };
    let changes_names = |c: &str| ["linkat(", "renameat", "unlink"].iter().any(|s| call_of(c).starts_with(s));
    for (verb, calls) in [("DEL", &del), ("take-back", &take_back)] {
        let all = || calls.join("\n");
        assert!(!calls.iter().any(|c| changes_names(c)), "{verb} names or removes nothing:\n{}", all());
        let poisoned =
            position(calls, "index invalidation", |c| on(c, "pwrite64", &index) && c.contains(", \"#\", 1, 0)"));
        let rewritten = position(calls, "record write", |c| on(c, "pwrite64", &record));
        assert!(poisoned < rewritten, "{verb}: the index is invalidated before the record changes:\n{}", all());
    }
    assert!(
        !del.iter().any(|c| on(c, "fdatasync", &record) || on(c, "fsync", &record)),
        "DEL syncs nothing:\n{}",
        del.join("\n")
    );
    let all = || take_back.join("\n");
    let record_written = position(&take_back, "record write", |c| on(c, "pwrite64", &record));
    let lease_written = position(&take_back, "lease write", |c| on(c, "pwrite64", &lease));
    let printed = position(&take_back, "result write", |c| c.starts_with("write(1<"));
    // Written out where an overwrite stays in place; synced where it goes elsewhere (btrfs).
    let index_out = match copy_on_write {
        false => {
            position(&take_back, "index write-out", |c| on(c, "sync_file_range", &index) && c.contains("WAIT_AFTER"))
        }
        true => position(&take_back, "index sync", |c| on(c, "fdatasync", &index)),
    };
    assert!(
        done_before(&take_back, "fdatasync", &record, lease_written),
        "record synced before the lease changes:\n{}",
        all()
    );
    let record_synced = position(&take_back, "record sync", |c| on(c, "fdatasync", &record));
    assert!(
        record_written < record_synced && index_out < record_synced,
        "the invalid index is on the device before the record's sync:\n{}",
        all()
    );
    assert!(
        done_before(&take_back, "fdatasync", &lease, printed),
        "the lease synced before the result is printed:\n{}",
        all()
    );
    assert!(lease_written < position(&take_back, "lease sync", |c| on(c, "fdatasync", &lease)), "{}", all());
    trace(dd, "DEL", "c2", &conf);
    let longer = trace(dd, "ADD", "c22", &conf);
    let all = || longer.join("\n");
    let renamed = position(&longer, "lease rename", |c| placement(c).is_some_and(|(_, to)| to == lease));
    assert!(
        done_before(&longer, "fdatasync", &record, renamed),
        "record synced before the lease is replaced:\n{}",
        all()
    );
    assert_eq!(inodes()[1], before[1], "the same record file");
}

/// On a journalled ext4.
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_journalled_ext4_a_take_back_rewrites_in_place() {
    let dd = TempDir::new("in-place-ext4");
    let ext4 = LoopFs::mount("ext4", &["mkfs.ext4", "-q"]);
    take_back_rewrites_in_place(&dd, &ext4.data_dir(), false);
}

/// On an ext4 without a journal: a rewrite in place allocates nothing, so the same order holds.
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_ext4_without_a_journal_a_take_back_rewrites_in_place() {
    let dd = TempDir::new("in-place-ext4-nj");
    let ext4 = LoopFs::mount("ext4-nj", &["mkfs.ext4", "-q", "-O", "^has_journal"]);
    take_back_rewrites_in_place(&dd, &ext4.data_dir(), false);
}

/// On btrfs, where a rewrite in place is copied on write and only a sync logs where it went:
/// the index's invalidation is synced too.
#[test]
#[ignore = "needs strace, root and mkfs.btrfs: run scripts/test.sh"]
fn on_btrfs_a_take_back_rewrites_in_place() {
    let dd = TempDir::new("in-place-btrfs");
    let btrfs = LoopFs::mount("btrfs", &["mkfs.btrfs", "-q"]);
    take_back_rewrites_in_place(&dd, &btrfs.data_dir(), true);
}

/// The trace reading above, on strace's formats: no pid (one task), padded 4-digit pids,
/// and a sync on a helper thread that returns after (or before) the file is placed.
#[test]
fn trace_parsing_handles_strace_formats() {
    let trace = |text: &str| -> Vec<String> { text.lines().map(|l| l.trim().to_string()).collect() };
    let threaded = trace(
        "1195  linkat(5</n/#10>(deleted), \"\", 3</n>, \"10.0.0.2\", AT_EMPTY_PATH) = 0\n\
         1197  fsync(6</n/#10>(deleted) <unfinished ...>\n\
         1199  fsync(8</n/#11>(deleted)) = 0\n\
         1197  <... fsync resumed>)          = 0\n\
         1195  write(1, \"{}\", 2) = 2",
    );
    assert_eq!(placement(call_of(&threaded[0])), Some(("/n/#10".into(), "/n/10.0.0.2".into())));
    assert!(done_before(&threaded, "fsync", "/n/#10", 4));
    assert!(!done_before(&threaded, "fsync", "/n/#10", 3), "still running");
    assert!(!none_pending(&threaded, "fsync", 3) && none_pending(&threaded, "fsync", 4));
    let single = trace(
        "sync_file_range(5</n/.hostlocal/.tmp-1>, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER) = 0\n\
         renameat(4</n/.hostlocal>, \".tmp-1\", 3</n>, \"10.0.0.2.pod\") = 0",
    );
    assert_eq!(placement(call_of(&single[1])), Some(("/n/.hostlocal/.tmp-1".into(), "/n/10.0.0.2.pod".into())));
    assert!(written_out_before(&single, "/n/.hostlocal/.tmp-1", 1));
    assert!(!written_out_before(&single, "/n/.hostlocal/.tmp-1", 0));
    let rewritten = trace(
        "sync_file_range(5</n/#12>(deleted), 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER) = 0\n\
         pwrite64(5</n/#12>(deleted), \"{}\", 2, 0) = 2\n\
         renameat(4</n/.hostlocal>, \".tmp-1\", 3</n>, \"10.0.0.2.pod\") = 0",
    );
    assert!(!written_out_before(&rewritten, "/n/#12", 2), "rewritten after its write-out");
}

/// A pod's next sandbox takes its address back in place on an ext4 without a journal: the
/// record's slot and the lease are each synced, and then the directory, before the result is
/// printed. The ADD that named those files may have been killed before its own syncs, and
/// there only a directory sync makes their names durable; on a journalled ext4 the files'
/// syncs commit them, and the directory is left alone.
#[test]
#[ignore = "needs strace, root and mkfs.ext4: run scripts/test.sh"]
fn on_ext4_without_a_journal_a_take_back_in_place_syncs_the_directory_too() {
    for (journal, mkfs) in [(false, &["mkfs.ext4", "-q", "-O", "^has_journal"][..]), (true, &["mkfs.ext4", "-q"][..])] {
        let ext4 = LoopFs::mount(&format!("take-back-ext4-{journal}"), mkfs);
        let dd = TempDir::new(&format!("take-back-in-place-{journal}"));
        let data_dir = ext4.data_dir();
        let conf = conf(&data_dir);
        trace(&dd, "ADD", "c1", &conf);
        trace(&dd, "DEL", "c1", &conf);
        let take_back = trace(&dd, "ADD", "c2", &conf);
        let all = || take_back.join("\n");
        let net = format!("{data_dir}/net");
        let printed = position(&take_back, "result write", |c| c.starts_with("write(1<"));
        let renamed = take_back.iter().any(|c| placement(call_of(c)).is_some());
        assert!(!renamed, "a take-back in place names no file:\n{}", all());
        let lease_synced = position(&take_back, "the lease's sync", |c| {
            c.starts_with("fdatasync(") && c.contains(&format!("<{net}/10.0.0.2>"))
        });
        assert!(lease_synced < printed, "the lease is synced before printing:\n{}", all());
        let dir_synced_after = dir_syncs(&take_back, &net, printed) > dir_syncs(&take_back, &net, lease_synced);
        assert_eq!(dir_synced_after, !journal, "directory synced after the lease?\n{}", all());
        assert!(none_pending(&take_back, "fsync", printed), "every sync has returned before printing:\n{}", all());
        assert_eq!(std::fs::read(format!("{net}/10.0.0.2")).unwrap(), b"c2\r\neth0");
    }
}
