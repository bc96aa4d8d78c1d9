use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use super::*;
use crate::store::LeaseState;

/// `net/` (not yet created) in a scratch directory removed on drop.
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let root = tempfile::Builder::new().prefix(&format!("hl-disk-{tag}-")).tempdir().unwrap();
        TempDir(root.path().join("net"), root)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn leases_are_written_in_upstreams_format() {
    let t = TempDir::new("format");
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.reserve(ip("10.0.0.2"), &Owner::new("c1", "eth0")).unwrap());
    assert!(s.reserve(ip("2001:db8:1::2"), &Owner::new("c1", "eth0")).unwrap());
    s.set_last_reserved(0, ip("10.0.0.2")).unwrap();
    s.commit().unwrap();
    drop(s);
    assert_eq!(fs::read(t.0.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
    assert_eq!(fs::read(t.0.join("2001:db8:1::2")).unwrap(), b"c1\r\neth0");
    assert_eq!(fs::read(t.0.join("last_reserved_ip.0")).unwrap(), b"10.0.0.2");
    assert_eq!(fs::metadata(t.0.join("10.0.0.2")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(t.0.join("lock")).unwrap().permissions().mode() & 0o777, 0o750 & !0o022);
    assert_eq!(
        names(&t.0),
        [".hostlocal", "10.0.0.2", "2001:db8:1::2", "last_reserved_ip.0", "lock"],
        "no temp files left"
    );
    assert_eq!(fs::metadata(t.0.join("10.0.0.2")).unwrap().nlink(), 1, "leases never share an inode");
}

#[test]
fn the_index_is_reused_until_someone_else_changes_the_directory() {
    let t = TempDir::new("index");
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    s.reserve(ip("10.0.0.2"), &Owner::new("c1", "eth0")).unwrap();
    s.commit().unwrap();
    drop(s);
    let s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(!s.fresh, "loaded from the index");
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().content, "c1\r\neth0");
    drop(s);
    // Upstream host-local adds a lease: the directory's mtime moves, the index is dropped.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(t.0.join("10.0.0.3"), "c2\r\neth0").unwrap();
    let s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.fresh);
    assert_eq!(s.lease(ip("10.0.0.3")).unwrap().content, "c2\r\neth0");
}

/// A store with c1's lease at 10.0.0.2; then `change` runs behind its back, within the
/// same clock tick as our last write: the directory's mtime does not move. Our index is
/// made to look written in a later tick, so it passes the mtime check unaided.
fn changed_within_one_tick(tag: &str, change: impl FnOnce(&Path)) -> TempDir {
    let t = TempDir::new(tag);
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    s.reserve(ip("10.0.0.2"), &Owner::new("c1", "eth0")).unwrap();
    s.commit().unwrap();
    drop(s);
    let before = fs::metadata(&t.0).unwrap();
    change(&t.0);
    set_mtime(&t.0, (before.mtime(), before.mtime_nsec()));
    set_mtime(&t.0.join(".hostlocal/index"), (before.mtime() + 1, before.mtime_nsec()));
    t
}

fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) {
    let times =
        [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: sec, tv_nsec: nsec }];
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path and two timespecs, as utimensat expects.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) }, 0);
}

#[test]
fn a_miss_is_confirmed_even_when_the_mtime_did_not_move() {
    // An upstream ADD the index does not know about.
    let t = changed_within_one_tick("miss", |dir| fs::write(dir.join("10.0.0.3"), "c2\r\neth0").unwrap());
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(!s.fresh, "the stale index was trusted for the fast path");
    assert_eq!(s.owned_by(&Owner::new("c2", "eth0")).unwrap(), vec![ip("10.0.0.3")]);
}

#[test]
fn hits_are_verified_against_the_file() {
    // The lease rewritten in place for another container.
    let t = changed_within_one_tick("verify", |dir| fs::write(dir.join("10.0.0.2"), "c9\r\neth0").unwrap());
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.owned_by(&Owner::new("c1", "eth0")).unwrap().is_empty());
    assert_eq!(s.owned_by(&Owner::new("c9", "eth0")).unwrap(), vec![ip("10.0.0.2")]);
}

#[test]
fn crash_debris_is_cleaned_and_never_blocks_an_address() {
    let t = TempDir::new("debris");
    fs::create_dir_all(&t.0).unwrap();
    fs::write(t.0.join("10.0.0.2"), "").unwrap(); // upstream crashed between create and write
    fs::write(t.0.join("10.0.0.3"), "  \n").unwrap();
    let private = t.0.join(".hostlocal");
    fs::create_dir_all(&private).unwrap();
    fs::write(private.join(".tmp-1-1"), "c1\r\neth0").unwrap(); // we crashed before link, long ago
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options().write(true).open(private.join(".tmp-1-1")).unwrap().set_modified(old).unwrap();
    fs::write(private.join(".tmp-2-1"), "c2\r\neth0").unwrap(); // a live call's early write
    fs::write(
        t.0.join("10.0.0.9.pod"),
        r#"{"containerId":"gone","ifname":"eth0","state":"held","since":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    fs::write(t.0.join("last_reserved_ip.0"), "garbage").unwrap();
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.find(crate::store::Query::All).is_empty());
    assert_eq!(s.last_reserved(0), None);
    assert!(s.reserve(ip("10.0.0.2"), &Owner::new("c1", "eth0")).unwrap());
    // Two empty leases and the old temp file; the record of a lease that is gone is no debris.
    assert_eq!(s.counters().get(crate::counters::Counter::DebrisCleaned, None), 3);
    s.commit().unwrap();
    drop(s);
    assert_eq!(names(&t.0), [".hostlocal", "10.0.0.2", "last_reserved_ip.0", "lock"]);
    assert_eq!(names(&private), [".tmp-2-1", "counters", "index"]);
}

#[test]
fn symlinks_in_the_store_are_never_followed() {
    let t = TempDir::new("symlink");
    fs::create_dir_all(&t.0).unwrap();
    let outside = t.0.parent().unwrap().join("outside");
    fs::write(&outside, "c1\r\neth0").unwrap();
    std::os::unix::fs::symlink(&outside, t.0.join("10.0.0.2")).unwrap();
    std::os::unix::fs::symlink(&outside, t.0.join("last_reserved_ip.0")).unwrap();
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.owned_by(&Owner::new("c1", "eth0")).unwrap().is_empty(), "a symlink is not a lease");
    assert_eq!(s.last_reserved(0), None);
    assert!(
        !s.reserve(ip("10.0.0.2"), &Owner::new("c2", "eth0")).unwrap(),
        "the name is taken, nothing is written through it"
    );
    s.commit().unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"c1\r\neth0");
    // A symlinked private directory would take our temp files and index outside the store.
    let elsewhere = t.0.parent().unwrap().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir_all(t.0.join(".hostlocal")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.0.join(".hostlocal")).unwrap();
    let old_temp = elsewhere.join(".tmp-1-1");
    fs::write(&old_temp, "c1\r\neth0").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options().write(true).open(&old_temp).unwrap().set_modified(old).unwrap();
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(s.reserve(ip("10.0.0.5"), &Owner::new("c3", "eth0")).unwrap());
    s.take_over(ip("10.0.0.5"), &Owner::new("c4", "eth0"), None).unwrap();
    s.refresh().unwrap();
    s.commit().unwrap();
    assert_eq!(names(&elsewhere), [".tmp-1-1"], "nothing was written or removed outside the store");
    assert!(fs::symlink_metadata(t.0.join(".hostlocal")).unwrap().is_dir(), "the link was replaced, not followed");
    drop(s);
    let link_dir = t.0.parent().unwrap().join("linked");
    std::os::unix::fs::symlink(&t.0, &link_dir).unwrap();
    assert!(DiskStore::open(&link_dir, Prepare::default()).is_err());
}

#[test]
fn pod_records_round_trip_and_rollback_restores_everything() {
    let t = TempDir::new("pods");
    let owner = Owner::new("old", "eth0");
    let record = PodRecord {
        owner: owner.clone(),
        namespace: "default".into(),
        name: "web 0".into(),
        uid: "u1".into(),
        boot_id: "b1".into(),
        state: LeaseState::Held,
        since: 1_700_000_000,
        added_at: 5,
        changed_at: 6,
    };
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    s.reserve(ip("10.0.0.2"), &owner).unwrap();
    s.set_pod(ip("10.0.0.2"), Some(record.clone())).unwrap();
    s.commit().unwrap();
    drop(s);
    assert!(fs::read_to_string(t.0.join("10.0.0.2.pod")).unwrap().starts_with("{\"containerId\":\"old\""));

    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(!s.fresh);
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().pod, Some(record.clone()), "from the index");
    s.rescan().unwrap();
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().pod, Some(record.clone()), "from the record file");

    let new = Owner::new("new", "eth0");
    s.take_over(ip("10.0.0.2"), &new, None).unwrap();
    s.set_pod(ip("10.0.0.2"), None).unwrap();
    assert!(s.reserve(ip("10.0.0.3"), &new).unwrap());
    s.rollback().unwrap();
    s.commit().unwrap();
    drop(s);
    assert_eq!(fs::read(t.0.join("10.0.0.2")).unwrap(), b"old\r\neth0");
    assert!(t.0.join("10.0.0.2.pod").exists());
    assert!(!t.0.join("10.0.0.3").exists());
}

#[test]
fn a_record_for_a_replaced_lease_is_dropped() {
    let t = TempDir::new("stale-record");
    let owner = Owner::new("old", "eth0");
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    s.reserve(ip("10.0.0.2"), &owner).unwrap();
    let record = PodRecord {
        owner,
        namespace: "n".into(),
        name: "p".into(),
        uid: String::new(),
        boot_id: "b".into(),
        state: LeaseState::Active,
        since: 1,
        added_at: 5,
        changed_at: 6,
    };
    s.set_pod(ip("10.0.0.2"), Some(record)).unwrap();
    s.commit().unwrap();
    drop(s);
    // Upstream DELs "old" and hands the address to "other".
    fs::remove_file(t.0.join("10.0.0.2")).unwrap();
    fs::write(t.0.join("10.0.0.2"), "other\r\neth0").unwrap();
    let s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().pod, None);
    assert!(!t.0.join("10.0.0.2.pod").exists());
}

#[test]
fn answers_that_matter_see_a_foreign_change_within_our_tick() {
    // Upstream adds 10.0.0.3 and replaces our 10.0.0.2 (DEL, then an ADD of another
    // container) within the tick of our last write: the index still validates.
    let t = changed_within_one_tick("same-tick", |dir| {
        fs::write(dir.join("10.0.0.3"), "c2\r\neth0").unwrap();
        fs::remove_file(dir.join("10.0.0.2")).unwrap();
        fs::write(dir.join("10.0.0.2"), "c9\r\neth0").unwrap();
    });
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(!s.fresh, "the index was used");
    assert!(!s.reserve(ip("10.0.0.3"), &Owner::new("c5", "eth0")).unwrap(), "link refuses a taken name");
    let err = s.take_over(ip("10.0.0.2"), &Owner::new("c5", "eth0"), None).unwrap_err();
    assert_eq!(err.code, libcni::Code::TRY_AGAIN_LATER);
    assert!(s.take_stale() && s.fresh, "read again, for the allocation to be made again");
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().content, "c9\r\neth0");
    drop(s);
    let t = changed_within_one_tick("same-tick-own", |dir| {
        fs::remove_file(dir.join("10.0.0.2")).unwrap();
        fs::write(dir.join("10.0.0.2"), "c9\r\neth0").unwrap();
    });
    let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert!(!s.verify(ip("10.0.0.2")).unwrap(), "a repeated ADD's lease is re-read");
    assert!(s.fresh);
}

#[test]
fn odd_entries_named_like_addresses_keep_their_address_and_are_never_touched() {
    let t = TempDir::new("odd");
    fs::create_dir_all(t.0.join("10.0.0.4")).unwrap();
    fs::write(t.0.join("10.0.0.4").join("x"), "keep").unwrap();
    fs::write(t.0.join("10.0.0.5"), [0xff, 0xfe]).unwrap();
    fs::write(t.0.join("10.0.0.6"), vec![b'x'; 1 << 20]).unwrap();
    fs::write(t.0.join("10.0.0.7"), [0, 0, b'\n']).unwrap();
    let fifo = std::ffi::CString::new(t.0.join("10.0.0.8").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    fs::write(t.0.join("10.0.0.5.pod"), [0xff]).unwrap();
    fs::create_dir_all(t.0.join("10.0.0.6.pod")).unwrap();
    fs::write(t.0.join("last_reserved_ip.0"), "::ffff:10.0.0.6").unwrap();
    for round in 0..2 {
        let mut s = DiskStore::open(&t.0, Prepare::default()).unwrap();
        assert_eq!(s.last_reserved(0), Some(ip("10.0.0.6")), "IPv4-mapped reads as IPv4, as in Go");
        let all: Vec<String> = s.find(Query::All).iter().map(|l| l.file_name()).collect();
        let debris_reused = if round == 0 { None } else { Some("10.0.0.7") };
        let expected: Vec<&str> =
            ["10.0.0.4", "10.0.0.5", "10.0.0.6"].into_iter().chain(debris_reused).chain(["10.0.0.8"]).collect();
        assert_eq!(all, expected, "the NUL-only file was debris");
        for name in ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.8"] {
            assert!(!s.reserve(ip(name), &Owner::new("c1", "eth0")).unwrap(), "{name}");
        }
        assert_eq!(s.reserve(ip("10.0.0.7"), &Owner::new("c1", "eth0")).unwrap(), round == 0);
        for name in ["10.0.0.4", "10.0.0.8"] {
            s.release(ip(name)).unwrap();
        }
        s.set_pod(ip("10.0.0.6"), None).unwrap();
        s.commit().unwrap();
    }
    assert_eq!(fs::read(t.0.join("10.0.0.4").join("x")).unwrap(), b"keep");
    assert!(fs::symlink_metadata(t.0.join("10.0.0.8")).unwrap().file_type().is_fifo());
    assert!(t.0.join("10.0.0.6.pod").is_dir());
    assert!(!t.0.join("10.0.0.5.pod").exists(), "a garbage record is removed");
}

#[test]
fn a_take_over_cut_short_between_its_renames_leaves_the_old_lease_the_pods() {
    // The record was renamed into place (naming the lease it replaces), the lease was not.
    let t = TempDir::new("cut-take-over");
    fs::create_dir_all(&t.0).unwrap();
    fs::write(t.0.join("10.0.0.2"), "old\r\neth0").unwrap();
    let record = PodRecord {
        owner: Owner::new("new", "eth0"),
        namespace: "default".into(),
        name: "web-0".into(),
        uid: "u1".into(),
        boot_id: "b1".into(),
        state: LeaseState::Active,
        since: 1_700_000_000,
        added_at: 5,
        changed_at: 6,
    };
    fs::write(t.0.join("10.0.0.2.pod"), record::to_json_replacing(&record, Some("old\r\neth0"))).unwrap();
    let s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    let pod = s.lease(ip("10.0.0.2")).unwrap().pod.expect("the record applies to the old lease");
    assert_eq!((pod.owner, pod.name.as_str()), (Owner::new("old", "eth0"), "web-0"));
    drop(s);
    // Upstream gave the address to someone else meanwhile: the record does not apply.
    fs::write(t.0.join("10.0.0.2"), "other\r\neth0").unwrap();
    fs::write(t.0.join("10.0.0.2.pod"), record::to_json_replacing(&record, Some("old\r\neth0"))).unwrap();
    let _ = fs::remove_dir_all(t.0.join(".hostlocal"));
    let s = DiskStore::open(&t.0, Prepare::default()).unwrap();
    assert_eq!(s.lease(ip("10.0.0.2")).unwrap().pod, None);
}

#[test]
fn kernel_releases_compare_by_major_and_minor() {
    // Where an fdatasync of an overwrite flushes on an ext4 without a journal (6.5 on).
    assert!(sys::release_before("6.1.0-57-cloud-amd64", 6, 5));
    assert!(sys::release_before("5.15.0-91-generic", 6, 5));
    assert!(sys::release_before("6.4.16", 6, 5));
    assert!(!sys::release_before("6.5.0", 6, 5));
    assert!(!sys::release_before("6.18.44-fc-v657", 6, 5));
    assert!(!sys::release_before("7.0", 6, 5));
    // Unknown: assumed old, which costs a `touch` and never a flush.
    assert!(sys::release_before("", 6, 5));
    assert!(sys::release_before("linux", 6, 5));
}
