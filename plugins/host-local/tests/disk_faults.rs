//! Disk faults: a full filesystem (small tmpfs, no blocks or no inodes left) gives clear
//! errors and leaves the store consistent, with no half-written lease. (The read-only store
//! is in bad_input.rs.)

mod common;

use std::process::Command;

use common::{leases, ours, run, Call, TempDir};

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn new(tag: &str, options: &str) -> Tmpfs {
        let dir = TempDir::new(tag);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn conf(fs: &Tmpfs, version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"net","ipam":{{"dataDir":"{}","subnet":"10.93.0.0/24"}}}}"#,
        fs.0.display()
    )
}

/// Fill the filesystem with one file until writes fail.
fn fill(fs: &Tmpfs) {
    let mut f = std::fs::File::create(fs.0.path().join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
}

/// Every lease file holds a complete `id\r\nifname`.
fn assert_no_torn_lease(fs: &Tmpfs) {
    for ip in leases(&fs.0.path().join("net")) {
        let content = std::fs::read_to_string(fs.0.path().join("net").join(&ip)).unwrap();
        assert!(content.contains("\r\n") && !content.ends_with('\n'), "torn lease {ip}: {content:?}");
    }
}

fn full_disk(tag: &str, options: &str, make_full: impl Fn(&Tmpfs)) {
    let fs = Tmpfs::new(tag, options);
    let c = conf(&fs, "1.1.0");
    let first = run(&ours(), &Call::new("ADD", "before", &c));
    assert!(first.ok(), "{first:?}");
    make_full(&fs);
    let add = run(&ours(), &Call::new("ADD", "during", &c));
    let (code, msg) = add.error();
    assert_eq!(code, 5, "{msg}");
    assert!(msg.contains("No space left on device"), "a clear reason: {msg}");
    let status = run(&ours(), &Call::new("STATUS", "", &c).ifname(""));
    assert_eq!(status.error().0, 50, "STATUS reports the full store");
    assert_no_torn_lease(&fs);
    assert_eq!(leases(&fs.0.path().join("net")), ["10.93.0.2"], "nothing half-allocated");
    // CHECK and DEL of what exists still work on a full disk (DEL frees space).
    assert!(run(&ours(), &Call::new("CHECK", "before", &c)).ok());
    // Space comes back: everything works, and the state is what it was.
    std::fs::remove_file(fs.0.path().join("filler")).unwrap();
    let _ = std::fs::remove_dir_all(fs.0.path().join("inodes"));
    let again = run(&ours(), &Call::new("ADD", "during", &c));
    assert!(again.ok(), "{again:?}");
    assert_eq!(again.ips(), ["10.93.0.3/24"]);
    assert!(run(&ours(), &Call::new("DEL", "before", &c)).ok());
    assert_eq!(leases(&fs.0.path().join("net")), ["10.93.0.3"]);
}

#[test]
#[ignore = "needs root (tmpfs mounts): run scripts/test.sh"]
fn enospc_no_blocks_left() {
    full_disk("enospc-blocks", "size=256k", fill);
}

#[test]
#[ignore = "needs root (tmpfs mounts): run scripts/test.sh"]
fn enospc_no_inodes_left() {
    full_disk("enospc-inodes", "size=8m,nr_inodes=64", |fs| {
        let dir = fs.0.path().join("inodes");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::File::create(fs.0.path().join("filler")).unwrap();
        for i in 0.. {
            if std::fs::File::create(dir.join(i.to_string())).is_err() {
                break;
            }
        }
    });
}
