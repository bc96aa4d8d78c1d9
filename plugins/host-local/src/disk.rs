//! The on-disk store: upstream's directory layout and lock, made durable and indexed.
//!
//! `<dataDir>/<network>/` holds, exactly as upstream host-local writes them:
//! `<ip>` leases (`<containerID>\r\n<ifname>`, 0600), `last_reserved_ip.<set>` and `lock`.
//! Beside them we keep `<ip>.pod` pod records for sticky IPs ([`record`]). `.hostlocal/`
//! holds a cache of the whole directory (`index`) and named temp files where the
//! filesystem has no `O_TMPFILE`.
//!
//! Rules that keep this correct next to a concurrent upstream host-local:
//! - One exclusive `flock` on `<dir>/lock` for the whole call (upstream takes the same lock).
//! - Every path is resolved relative to the store's directory handle, without following
//!   symlinks: nothing planted in the store can lead a read, write or delete out of it.
//! - A new file is written complete, its data pushed to the device, and only then given
//!   its name: by `link` (fails if the name exists: upstream's `O_EXCL` uniqueness) or
//!   `rename` (replacements). A name therefore never appears without its data, whatever
//!   journal commit carries it.
//! - What ADD reports is durable before it returns: after the lock is released, each file
//!   it named is fsynced, in parallel, which makes the name durable with it. Files are
//!   synced *after* they have their names: btrfs ignores an fsync of a nameless
//!   (`O_TMPFILE`) inode. The directory is never fsynced: on btrfs that would log every new
//!   name in it, also other calls' not yet synced ones, with no data (see `sync_placed`).
//!   If a sync fails, the call takes the lock again, undoes its changes and fails. DEL and
//!   GC are not synced (README: "What a power cut can undo").
//! - Entries that are not what we write (non-UTF-8 or oversized leases, directories,
//!   FIFOs, sockets, symlinks, garbage records or cursors) never fail a call: an odd entry
//!   named like an address keeps that address out of the pool, as with upstream; a
//!   garbage record or cursor is ignored; empty leases and old temp files are crash
//!   debris and are removed.
//! - The index is only a cache (see [`crate::index`]), used while its checksum holds and
//!   the directory's mtime is the one recorded after our last change. A foreign change
//!   within the clock tick of that change does not move the mtime, so the index only
//!   helps to find leases: every answer that matters is checked against the files. What
//!   does this container hold (hits re-read, a miss compared with the listing)? Is this
//!   repeated ADD's lease still its own (re-read)? May this lease be taken over (inode
//!   and content re-checked; if not, the directory is read again and the allocation made
//!   again)? Is this address free (`link` fails on a taken name)?

pub mod record;
mod sys;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcni::ip::{canonical, go_ip_string};
use libcni::{Code, Error, Result};

use crate::clock::{running_boot_id, NodeClock};
use crate::counters::{Counter, Counters};
use crate::index::{Entry, View};
use crate::store::{matching, unix_now, Lease, Marker, Owner, PodRecord, Query, Store};
use sys::{Dir, Kind};

pub use sys::writable_with_space;

const PRIVATE_DIR: &str = ".hostlocal";
const INDEX_FILE: &str = "index";
const CLOCK_FILE: &str = "clock";
const COUNTERS_FILE: &str = "counters";
/// Three counters per range set.
const MAX_COUNTERS_SIZE: usize = 64 << 10;
/// A clock file lists at most 64 boots.
const MAX_CLOCK_SIZE: usize = 8192;
const TEMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Lease files and pod records are a few dozen bytes; anything longer is not ours.
const MAX_ENTRY_READ: usize = 4096;
/// An index for 60,000 leases is about 10 MB.
const MAX_INDEX_SIZE: u64 = 256 << 20;
/// A temp file this old belongs to a crashed call (live calls hold theirs for milliseconds).
const TEMP_DEBRIS_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A lease file name: exactly Go's text form of an address.
fn lease_ip(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (go_ip_string(ip) == name).then_some(ip)
}

/// Go's `net.ParseIP` on a `last_reserved_ip` file: no trimming, IPv4-mapped is IPv4.
pub fn parse_last_reserved(bytes: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok().map(canonical)
}

/// What reading one entry found.
enum Content {
    Regular(Vec<u8>),
    /// A directory, FIFO, socket, symlink, or unreadable: never read.
    Opaque,
    Gone,
}

/// Read at most `limit + 1` bytes of the regular file `name`, never through a symlink
/// and never blocking on a FIFO.
fn read_entry(dir: &Dir, name: &str, limit: usize) -> Content {
    let file = match dir.open_read(name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Content::Gone,
        Err(_) => return Content::Opaque,
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Content::Opaque;
    }
    let mut bytes = Vec::with_capacity(64);
    match file.take(limit as u64 + 1).read_to_end(&mut bytes) {
        Ok(_) => Content::Regular(bytes),
        Err(_) => Content::Opaque,
    }
}

/// What an entry named like an address holds.
enum LeaseFile {
    Gone,
    /// Nothing but whitespace or NULs: only a crash leaves that.
    Debris,
    /// Its content as upstream compares it, or `None` for an opaque entry.
    Lease(Option<String>),
}

impl LeaseFile {
    fn lease(content: Option<String>, ip: IpAddr) -> Lease {
        Lease { ip, opaque: content.is_none(), content: content.unwrap_or_default(), pod: None }
    }
}

/// Read the entry `name` (of kind `kind`, if the listing said) as the lease of `ip`.
/// Anything but a regular file of UTF-8 text of lease size is opaque: it keeps its
/// address out of the pool and matches no container.
fn read_lease(dir: &Dir, name: &str, kind: Option<Kind>) -> LeaseFile {
    let opaque = LeaseFile::Lease(None);
    if kind.is_some_and(|k| k != Kind::File) {
        return opaque;
    }
    let bytes = match read_entry(dir, name, MAX_ENTRY_READ) {
        Content::Gone => return LeaseFile::Gone,
        Content::Opaque => return opaque,
        Content::Regular(bytes) => bytes,
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
        return LeaseFile::Debris;
    }
    match String::from_utf8(bytes) {
        // Trimmed as upstream compares it (`strings.TrimSpace`).
        Ok(text) if text.len() <= MAX_ENTRY_READ => LeaseFile::Lease(Some(text.trim().to_string())),
        _ => opaque,
    }
}

/// Whether the lease file of `ip` still holds what `expected` says.
fn lease_unchanged(dir: &Dir, ip: IpAddr, expected: &Lease) -> bool {
    matches!(read_lease(dir, &go_ip_string(ip), None),
        LeaseFile::Lease(Some(content)) if !expected.opaque && content == expected.content)
}

/// What `rollback` must undo.
enum Undo {
    Created { ip: IpAddr, ino: u64 },
    Replaced { ip: IpAddr, content: String, pod: Option<PodRecord> },
    Relabelled { ip: IpAddr, pod: Option<PodRecord> },
    Released { ip: IpAddr, content: String, pod: Option<PodRecord> },
    MarkerRemoved(Marker),
}

/// A complete file waiting for its name: written before the lock is taken, its data
/// already on its way to the device.
struct Prepared {
    content: String,
    file: File,
    ino: u64,
    /// Where the filesystem has no `O_TMPFILE`: our named temp file in `.hostlocal/`.
    temp_name: Option<String>,
    /// Its data is on the device: it may be named.
    written_out: bool,
}

/// What a call can write before it takes the lock, and whether it must be durable.
#[derive(Default)]
pub struct Prepare<'a> {
    /// ADD: what the call reports is on stable storage before `commit` returns.
    pub durable: bool,
    /// The lease this call will most likely create.
    pub lease: Option<&'a Owner>,
    /// The boot this call runs in, and the pod record it will most likely write given the
    /// call's node time: written early when the store's clock knows this boot already.
    pub record: Option<(&'a str, &'a dyn Fn(u64) -> PodRecord)>,
}

pub struct DiskStore {
    path: PathBuf,
    dir: Dir,
    /// `.hostlocal/`, when it is (or could be made) a real directory.
    private: Option<Dir>,
    /// flock'ed from `open` until `commit` (or drop); `None` only on a read-only store
    /// that has no lock file (nothing can change there).
    lock: Option<File>,
    view: View,
    /// The view was read from the directory in this call (not from the index).
    fresh: bool,
    /// Directory entries changed: rewrite the index (and sync, if durable).
    changed: bool,
    index_stale: bool,
    durable: bool,
    /// The view turned out stale (a foreign change within our clock tick) and was read
    /// again: the allocation should be made again.
    stale: bool,
    undo: Vec<Undo>,
    prepared_lease: Option<Prepared>,
    prepared_record: Option<Prepared>,
    /// Files this call named, to be synced before `commit` returns.
    placed: Vec<File>,
    temp_counter: u32,
    /// The boot this call runs in, once known.
    boot_id: Option<String>,
    /// Node time, once this call has asked for it: one instant per call.
    clock: Option<NodeClock>,
    /// Events of this call, added to the store's counters when it commits.
    counted: Counters,
}

impl Prepared {
    /// Give a not yet named file other content, in place.
    fn rewrite(&mut self, content: String) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(content.as_bytes(), 0)?;
        self.file.set_len(content.len() as u64)?;
        sys::start_write_out(&self.file)?;
        (self.content, self.written_out) = (content, false);
        Ok(())
    }
}

impl DiskStore {
    /// Create the directory if needed, write what can be written early, take the lock,
    /// and load the view of the store.
    pub fn open(path: &Path, prepare: Prepare) -> Result<DiskStore> {
        let fail = |what: &str, e: io::Error| Error::io(format!("{what} {}: {e}", path.display()));
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path) {
            return Err(fail("mkdir", e));
        }
        let dir = Dir::open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                Error::io(format!("refusing to use {}: it is a symlink or not a directory", path.display()))
            }
            _ => fail("open", e),
        })?;
        let lock = match dir.open_lock(LOCK_FILE) {
            Ok(lock) => Some(lock),
            // A read-only store without a lock file: nobody can change it.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => None,
            Err(e) => return Err(fail("open lock in", e)),
        };
        let mut store = DiskStore {
            path: path.to_path_buf(),
            dir,
            private: None,
            lock,
            view: View::default(),
            fresh: false,
            changed: false,
            index_stale: false,
            durable: prepare.durable,
            stale: false,
            undo: Vec::new(),
            prepared_lease: None,
            prepared_record: None,
            placed: Vec::new(),
            temp_counter: 0,
            boot_id: None,
            clock: None,
            counted: Counters::default(),
        };
        if let Some(owner) = prepare.lease {
            store.prepared_lease = Some(store.prepare(owner.content().to_string())?);
        }
        if let Some((boot_id, record)) = prepare.record {
            store.boot_id = Some(boot_id.to_string());
            // Read without the lock: a clock that knows this boot only changes if its file
            // is lost, and then the stamps still order this boot's calls.
            store.private = store.dir.open_dir(PRIVATE_DIR).ok();
            let boots = store.read_clock_file();
            if let Some(clock) = NodeClock::running(boots, boot_id, sys::boottime_us()) {
                store.prepared_record = Some(store.prepare(record::to_json(&record(clock.now())))?);
                store.clock = Some(clock);
            }
        }
        // Wait for the data outside the lock, so that a reboot storm does not queue on it.
        for p in [&mut store.prepared_lease, &mut store.prepared_record].into_iter().flatten() {
            sys::write_out(&p.file).map_err(|e| Error::io(format!("write a new file in {}: {e}", path.display())))?;
            p.written_out = true;
        }
        store.lock()?;
        if store.private.is_none() {
            store.private = store.open_private();
        }
        if !store.load_index() {
            store.rescan()?;
        }
        Ok(store)
    }

    fn lock(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.lock().map_err(|e| self.error("lock", LOCK_FILE, e)),
            None => Ok(()),
        }
    }

    fn unlock(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.unlock().map_err(|e| self.error("unlock", LOCK_FILE, e)),
            None => Ok(()),
        }
    }

    fn error(&self, what: &str, name: &str, e: io::Error) -> Error {
        Error::io(format!("{what} {}: {e}", self.path.join(name).display()))
    }

    /// `.hostlocal/`, replacing a symlink or file of that name (never followed) with our
    /// own directory; `None` if that is not possible (a read-only store).
    fn open_private(&self) -> Option<Dir> {
        match self.dir.open_dir(PRIVATE_DIR) {
            Ok(private) => return Some(private),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None, // made on first write
            Err(_) => {}
        }
        let replaced = self.dir.remove(PRIVATE_DIR).and_then(|_| self.dir.make_dir(PRIVATE_DIR, 0o700));
        match replaced.and_then(|_| self.dir.open_dir(PRIVATE_DIR)) {
            Ok(private) => {
                eprintln!(
                    "host-local: replaced {} (not a directory) with our own",
                    self.path.join(PRIVATE_DIR).display()
                );
                Some(private)
            }
            Err(_) => None,
        }
    }

    /// `.hostlocal/`, created if missing.
    fn private_dir(&mut self) -> io::Result<&Dir> {
        if self.private.is_none() {
            match self.dir.make_dir(PRIVATE_DIR, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            self.private = self.open_private();
        }
        self.private.as_ref().ok_or_else(|| io::Error::other(format!("{PRIVATE_DIR} is not a directory")))
    }

    /// Where named temp files go: `.hostlocal/`, or the store itself if that is broken.
    /// `private_dir` has been tried first.
    fn temps(&self) -> &Dir {
        self.private.as_ref().unwrap_or(&self.dir)
    }

    fn temp_name(&mut self) -> String {
        self.temp_counter += 1;
        format!("{TEMP_PREFIX}{}-{}", std::process::id(), self.temp_counter)
    }

    /// Write `content` to a new nameless file and start pushing it to the device; it may
    /// be named once `write_out` has waited for that.
    fn prepare(&mut self, content: String) -> Result<Prepared> {
        let (mut file, temp_name) = match self.dir.create_unnamed(0o600) {
            Ok(file) => (file, None),
            // Not every filesystem has O_TMPFILE: fall back to a named temp file.
            Err(_) => {
                let name = self.temp_name();
                let _ = self.private_dir();
                let file = self.temps().create_new(&name, 0o600).map_err(|e| self.error("create", &name, e))?;
                (file, Some(name))
            }
        };
        let written = file.write_all(content.as_bytes()).and_then(|_| sys::start_write_out(&file));
        let ino = written.and_then(|_| file.metadata()).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        match ino {
            Ok(ino) => Ok(Prepared { content, file, ino, temp_name, written_out: false }),
            Err(e) => {
                let prepared = Prepared { content, file, ino: 0, temp_name, written_out: false };
                let _ = self.discard(prepared);
                Err(Error::io(format!("write a new file in {}: {e}", self.path.display())))
            }
        }
    }

    /// Name a prepared file `target` unless that exists (`AlreadyExists`, and the file is
    /// handed back for another try).
    fn place_new(
        &mut self,
        p: Prepared,
        target: &str,
    ) -> Result<std::result::Result<(File, u64), (Prepared, io::Error)>> {
        if !p.written_out {
            sys::write_out(&p.file).map_err(|e| self.error("write out", target, e))?;
        }
        let placed = match &p.temp_name {
            None => self.dir.link_unnamed(&p.file, target),
            Some(temp) => self.dir.rename_new_from(self.temps(), temp, target),
        };
        Ok(match placed {
            Ok(()) => Ok((p.file, p.ino)),
            Err(e) => Err((p, e)),
        })
    }

    fn discard(&mut self, p: Prepared) -> Result<()> {
        if let Some(name) = &p.temp_name {
            self.temps().remove(name).map_err(|e| self.error("remove", name, e))?;
        }
        Ok(())
    }

    fn discard_prepared(&mut self) -> Result<()> {
        for p in [self.prepared_lease.take(), self.prepared_record.take()].into_iter().flatten() {
            self.discard(p)?;
        }
        Ok(())
    }

    /// A new file placed by this call: synced before `commit` returns, if durable.
    fn placed(&mut self, file: File) {
        self.changed = true;
        if self.durable {
            self.placed.push(file);
        }
    }

    /// ADD reports an address this call did not write (a repeated ADD): make sure what
    /// an earlier, interrupted call wrote for it is durable too.
    pub fn sync_existing(&mut self, ip: IpAddr) -> Result<()> {
        if !self.durable {
            return Ok(());
        }
        let name = go_ip_string(ip);
        for file_name in [name.clone(), format!("{name}{}", record::SUFFIX)] {
            if let Ok(file) = self.dir.open_read(&file_name) {
                if file.metadata().is_ok_and(|m| m.is_file()) {
                    self.placed(file);
                }
            }
        }
        Ok(())
    }

    /// Re-read the whole directory now (for answers that must be authoritative).
    pub fn refresh(&mut self) -> Result<()> {
        if !self.fresh {
            self.rescan()?;
        }
        Ok(())
    }

    /// When a lease file was last written (Unix seconds): its age, where no record says.
    pub fn written_at(&self, ip: IpAddr) -> Option<u64> {
        self.dir.stat(&go_ip_string(ip)).ok().map(|m| m.mtime.0.max(0) as u64)
    }

    fn dir_mtime(&self) -> Result<(i64, i64)> {
        self.dir.meta().map(|m| m.mtime).map_err(|e| self.error("stat", ".", e))
    }

    /// Use the cached index if it is whole and the directory has not changed since it
    /// was written.
    fn load_index(&mut self) -> bool {
        let Some(private) = &self.private else { return false };
        let Ok(file) = private.open_read(INDEX_FILE) else { return false };
        let Ok(meta) = file.metadata() else { return false };
        if !meta.is_file() || meta.len() > MAX_INDEX_SIZE {
            return false;
        }
        // Through `take`: a plain `read_to_end` would stat the file again for a size hint.
        let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
        if (&file).take(MAX_INDEX_SIZE).read_to_end(&mut bytes).is_err() {
            return false;
        }
        let Some((view, recorded)) = View::parse(bytes) else { return false };
        if self.dir_mtime().ok() != Some(recorded) {
            return false;
        }
        // An index written within the clock tick of our last change does not show a
        // foreign change later in that tick (the mtime did not move). It is still only
        // used to find leases: every answer that matters is checked against the files
        // (`owned_by`, `verify`, `confirm`, and `link` failing on a taken name).
        self.view = view;
        true
    }

    /// Whether the directory lists exactly the leases (names and inodes), pod records and
    /// markers of `view`.
    fn listing_matches(&self, view: &View) -> Result<bool> {
        let mut listed: Vec<(String, Option<u64>)> = Vec::with_capacity(view.len() * 2);
        for entry in self.dir.list().map_err(|e| self.error("read", ".", e))? {
            let Ok(name) = String::from_utf8(entry.name) else { continue };
            if lease_ip(&name).is_some() {
                listed.push((name, Some(entry.ino)));
            } else if name.strip_suffix(record::SUFFIX).and_then(lease_ip).is_some() {
                if entry.kind.is_none_or(|k| k == Kind::File) {
                    listed.push((name, None));
                }
            } else if Marker::parse_name(&name).is_some() {
                listed.push((name, None));
            }
        }
        listed.sort_unstable();
        Ok(listed == view.expected_entries())
    }

    /// Read every entry of the directory, dropping debris that only a crash leaves.
    fn rescan(&mut self) -> Result<()> {
        if let Some(private) = &self.private {
            for entry in private.list().unwrap_or_default() {
                if let Some(name) = std::str::from_utf8(&entry.name).ok().filter(|n| n.starts_with(TEMP_PREFIX)) {
                    if Self::sweep_temp_file(private, name) {
                        self.counted.add(Counter::DebrisCleaned, None, 1);
                    }
                }
            }
        }
        let mut leases = BTreeMap::new();
        let mut markers = Vec::new();
        let mut records = Vec::new();
        for entry in self.dir.list().map_err(|e| self.error("read", ".", e))? {
            let Ok(name) = String::from_utf8(entry.name) else { continue };
            if let Some(ip) = lease_ip(&name) {
                let lease = match read_lease(&self.dir, &name, entry.kind) {
                    LeaseFile::Gone => continue,
                    LeaseFile::Lease(content) => LeaseFile::lease(content, ip),
                    // Upstream creates the file, then writes it, under the lock we hold: an
                    // empty lease is a crashed call, and would block the address forever.
                    LeaseFile::Debris if self.dir.remove(&name).is_ok() => {
                        self.changed = true;
                        self.counted.add(Counter::DebrisCleaned, None, 1);
                        continue;
                    }
                    LeaseFile::Debris => LeaseFile::lease(None, ip),
                };
                leases.insert(name, Entry { lease, ino: entry.ino });
            } else if let Some(ip) = name.strip_suffix(record::SUFFIX).and_then(lease_ip) {
                records.push((ip, name));
            } else if let Some((ip, namespace, pod)) = Marker::parse_name(&name) {
                let since = self.dir.stat(&name).map(|m| m.mtime.0.max(0) as u64).unwrap_or(0);
                markers.push(Marker { ip, namespace, name: pod, since });
            } else if name.starts_with(TEMP_PREFIX) {
                // Where `.hostlocal` was unusable, temp files went into the store itself.
                if Self::sweep_temp_file(&self.dir, &name) {
                    self.counted.add(Counter::DebrisCleaned, None, 1);
                }
            }
        }
        for (ip, name) in records {
            let record = match read_entry(&self.dir, &name, MAX_ENTRY_READ) {
                Content::Regular(bytes) => record::parse_replacing(&bytes),
                // Not a file we wrote: leave it alone, and never read it.
                Content::Opaque | Content::Gone => continue,
            };
            if record.is_none() {
                self.counted.add(Counter::DebrisCleaned, None, 1); // a torn or garbage record
            }
            match (leases.get_mut(&go_ip_string(ip)), record) {
                (Some(e), Some((record, _))) if !e.lease.opaque && record.owner.content() == e.lease.content => {
                    e.lease.pod = Some(record)
                }
                // A take-over cut short between its two renames: the lease is still the
                // old sandbox's, of the same pod.
                (Some(e), Some((record, Some(replaced)))) if !e.lease.opaque && replaced == e.lease.content => {
                    let owner = Owner::new(e.lease.container_id(), &record.owner.ifname);
                    e.lease.pod = Some(PodRecord { owner, ..record })
                }
                // The lease is gone or was replaced by another tool, or the record is
                // garbage: it no longer applies.
                _ => self.changed |= self.dir.remove(&name).unwrap_or(false),
            }
        }
        markers.sort_by_key(|m| (m.since, m.file_name()));
        self.view = View::from_entries(leases, markers);
        self.fresh = true;
        self.index_stale = true;
        Ok(())
    }

    /// Calls write temp files before taking the lock, so only an old one is debris.
    /// Best effort: debris costs space, never correctness. Whether it was removed.
    fn sweep_temp_file(dir: &Dir, name: &str) -> bool {
        let Ok(meta) = dir.stat(name) else { return false };
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.mtime.0.max(0) as u64);
        meta.kind == Kind::File
            && modified.elapsed().is_ok_and(|age| age >= TEMP_DEBRIS_AGE)
            && dir.remove(name).unwrap_or(false)
    }

    /// Put `data` at `target` in place of what is there, by renaming a complete, synced
    /// file over it: the file prepared with that content, if any (nothing written early is
    /// thrown away: on ext4, freeing a written but uncommitted file costs milliseconds),
    /// else a new temp file. Returns the new inode.
    fn replace_file(&mut self, target: &str, data: &str) -> Result<u64> {
        let prepared = [&mut self.prepared_lease, &mut self.prepared_record]
            .into_iter()
            .find_map(|slot| slot.take_if(|p| p.content == data));
        let _ = self.private_dir();
        let temp = self.temp_name();
        let staged = match prepared {
            Some(p) => self.stage_prepared(p, &temp),
            None => self.stage_new(&temp, data),
        };
        let renamed = staged.and_then(|(in_private, name, file, ino)| {
            let from = if in_private { self.temps() } else { &self.dir };
            // Synced before it replaces anything. btrfs logs the removal of a recently
            // synced file's name at once, and the new name only for a file it has logged:
            // without this, another call's sync could make the removal durable alone.
            match file.sync_all().and_then(|_| self.dir.rename_from(from, &name, target)) {
                Ok(()) => Ok((file, ino)),
                Err(e) => {
                    let _ = from.remove(&name);
                    Err(e)
                }
            }
        });
        match renamed {
            Ok((file, ino)) => {
                self.placed(file);
                Ok(ino)
            }
            Err(e) => Err(self.error("replace", target, e)),
        }
    }

    /// Give a prepared file the temp name `temp` (if it has none yet), ready to be renamed.
    fn stage_prepared(&self, p: Prepared, temp: &str) -> io::Result<(bool, String, File, u64)> {
        if !p.written_out {
            sys::write_out(&p.file)?;
        }
        match p.temp_name {
            Some(name) => Ok((self.private.is_some(), name, p.file, p.ino)),
            None => {
                let in_private = self.private.is_some() && self.temps().link_unnamed(&p.file, temp).is_ok();
                if !in_private {
                    self.dir.link_unnamed(&p.file, temp)?;
                }
                Ok((in_private, temp.to_string(), p.file, p.ino))
            }
        }
    }

    /// A new temp file holding `data`, its data on the device: in `.hostlocal/`, or in the
    /// store itself where that cannot take it (read-only, full, broken).
    fn stage_new(&self, temp: &str, data: &str) -> io::Result<(bool, String, File, u64)> {
        let create = |dir: &Dir| {
            let mut file = dir.create_new(temp, 0o600)?;
            let written =
                file.write_all(data.as_bytes()).and_then(|_| sys::write_out(&file)).and_then(|_| file.metadata());
            match written {
                Ok(meta) => Ok((file, std::os::unix::fs::MetadataExt::ino(&meta))),
                Err(e) => {
                    let _ = dir.remove(temp);
                    Err(e)
                }
            }
        };
        let in_private = self.private.as_ref().map(create);
        match in_private {
            Some(Ok((file, ino))) => Ok((true, temp.to_string(), file, ino)),
            _ => create(&self.dir).map(|(file, ino)| (false, temp.to_string(), file, ino)),
        }
    }

    /// Write (or remove) the pod record of `ip`; `Ok(false)` if something that is not a
    /// file occupies its name, so there can be no record. `replaces`: the lease content a
    /// take-over is about to replace.
    fn write_record(&mut self, ip: IpAddr, pod: Option<&PodRecord>, replaces: Option<&str>) -> Result<bool> {
        let name = format!("{}{}", go_ip_string(ip), record::SUFFIX);
        let Some(record) = pod else {
            if self.dir.stat(&name).is_ok_and(|m| m.kind == Kind::File) {
                self.changed |= self.dir.remove(&name).map_err(|e| self.error("remove", &name, e))?;
            }
            return Ok(true);
        };
        let json = record::to_json_replacing(record, replaces);
        if let Some(p) = self.prepared_record.as_mut().filter(|p| p.content != json) {
            // Rewritten rather than thrown away (see `replace_file`).
            p.rewrite(json.clone()).map_err(|e| Error::io(format!("rewrite a new file: {e}")))?;
        }
        // A new record takes the prepared file; an existing one is replaced below.
        let exists = self.view.get_ip(ip).is_some_and(|e| e.lease.pod.is_some());
        if !exists {
            let p = match self.prepared_record.take_if(|p| p.content == json) {
                Some(p) => p,
                None => self.prepare(json.clone())?,
            };
            match self.place_new(p, &name)? {
                Ok((file, _)) => {
                    self.placed(file);
                    return Ok(true);
                }
                Err((p, _)) => self.prepared_record = Some(p),
            }
        }
        match self.replace_file(&name, &json) {
            Ok(_) => Ok(true),
            Err(_) if self.dir.stat(&name).is_ok_and(|m| m.kind == Kind::Dir) => {
                eprintln!(
                    "host-local: {} is a directory: no pod record for {}",
                    self.path.join(&name).display(),
                    go_ip_string(ip)
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn write_lease(&mut self, ip: IpAddr, content: &str) -> Result<()> {
        let ino = self.replace_file(&go_ip_string(ip), content)?;
        if let Some(mut entry) = self.view.get_ip(ip) {
            (entry.lease.content, entry.ino) = (content.to_string(), ino);
            self.view.set(entry);
        }
        Ok(())
    }

    /// The boots `.hostlocal/clock` lists (none if it is missing or not whole).
    fn read_clock_file(&self) -> Vec<(String, u64)> {
        match self.private.as_ref().map(|p| read_entry(p, CLOCK_FILE, MAX_CLOCK_SIZE)) {
            Some(Content::Regular(bytes)) => NodeClock::parse(&bytes),
            _ => Vec::new(),
        }
    }

    fn write_clock_file(&mut self, clock: &NodeClock) {
        // Like the index, rewritten in place and never synced: a torn or lost file only
        // starts the running boot again after the store's newest stamp.
        let text = clock.render();
        let written = self.private_dir().and_then(|private| private.open_write(CLOCK_FILE, 0o600)).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.set_len(text.len() as u64)
        });
        if let Err(e) = written {
            eprintln!("host-local: could not write the clock in {}: {e}", self.path.join(PRIVATE_DIR).display());
        }
    }

    /// Remove a lease file and its record (no undo: `release` and `rollback` use it).
    fn remove_lease(&mut self, ip: IpAddr) -> Result<()> {
        let name = go_ip_string(ip);
        self.changed |= self.dir.remove(&name).map_err(|e| self.error("remove", &name, e))?;
        self.write_record(ip, None, None)?;
        self.view.remove(ip);
        Ok(())
    }

    /// Put back a lease this call released.
    fn restore_lease(&mut self, ip: IpAddr, content: String, pod: Option<PodRecord>) -> Result<()> {
        let name = go_ip_string(ip);
        let prepared = self.prepare(content.clone())?;
        let ino = match self.place_new(prepared, &name)? {
            Ok((file, ino)) => {
                self.placed(file);
                ino
            }
            // Taken again meanwhile (only after a failed sync let go of the lock): theirs now.
            Err((p, e)) if e.kind() == io::ErrorKind::AlreadyExists => return self.discard(p),
            Err((_, e)) => return Err(self.error("restore", &name, e)),
        };
        let written = self.write_record(ip, pod.as_ref(), None)?;
        let lease = Lease { ip, content, pod: pod.filter(|_| written), opaque: false };
        self.view.set(Entry { lease, ino });
        Ok(())
    }

    /// Put back an OpenYurt marker this call removed, with its time.
    fn restore_marker(&mut self, marker: Marker) -> Result<()> {
        let name = marker.file_name();
        let restored = self
            .dir
            .create_new(&name, 0o600)
            .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(marker.since)));
        match restored {
            Ok(()) => self.changed = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.error("restore", &name, e)),
        }
        if !self.view.markers.contains(&marker) {
            self.view.markers.push(marker);
        }
        Ok(())
    }

    /// Count an event of this call (see [`crate::counters`]).
    pub fn count(&mut self, counter: Counter, range_set: Option<usize>) {
        self.counted.add(counter, range_set, 1);
    }

    /// The store's counters, with this call's events; a store that has none (or whose file
    /// is not whole) starts counting now.
    pub fn counters(&self) -> Counters {
        let saved = match self.private.as_ref().map(|p| read_entry(p, COUNTERS_FILE, MAX_COUNTERS_SIZE)) {
            Some(Content::Regular(bytes)) => Counters::parse(&bytes),
            _ => None,
        };
        let mut counters = saved.unwrap_or_else(|| Counters { created: unix_now(), ..Default::default() });
        for ((counter, set), by) in &self.counted.values {
            counters.add(*counter, *set, *by);
        }
        counters
    }

    /// Add this call's events to the counters file: replaced by a synced temp file, so that
    /// a power cut keeps either the old or the new counts.
    fn save_counters(&mut self) -> io::Result<()> {
        let counters = self.counters();
        self.counted = Counters::default();
        let temp = self.temp_name();
        let private = self.private_dir()?;
        let mut file = private.create_new(&temp, 0o600)?;
        let staged = file.write_all(counters.render().as_bytes()).and_then(|_| file.sync_all());
        match staged.and_then(|_| private.rename_from(private, &temp, COUNTERS_FILE)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = private.remove(&temp);
                Err(e)
            }
        }
    }

    fn write_index(&mut self) {
        // A cache: no fsync, and rewritten in place; the checksum catches a torn write.
        // Creating .hostlocal changes the directory: do it before reading its mtime.
        let written = self.private_dir().map(|_| ()).and_then(|_| {
            let mtime = self.dir.meta()?.mtime;
            let text = self.view.render(mtime);
            let mut file = self.private.as_ref().expect("just opened").open_write(INDEX_FILE, 0o600)?;
            file.write_all(text.as_bytes())?;
            file.set_len(text.len() as u64)
        });
        if let Err(e) = written {
            // Losing the cache costs a rescan next time, nothing more.
            eprintln!("host-local: could not write index in {}: {e}", self.path.join(PRIVATE_DIR).display());
        }
    }

    fn entry(&self, ip: IpAddr) -> Result<Entry> {
        self.view.get_ip(ip).ok_or_else(|| Error::internal(format!("no lease for {}", go_ip_string(ip))))
    }

    /// The lease file of `ip` is still the one the view knows (it is about to be replaced).
    fn confirm(&mut self, ip: IpAddr) -> Result<Entry> {
        let entry = self.entry(ip)?;
        let name = go_ip_string(ip);
        let current = self.dir.stat(&name).ok().filter(|m| m.kind == Kind::File);
        let same = current.is_some_and(|m| entry.ino == 0 || m.ino == entry.ino)
            && lease_unchanged(&self.dir, ip, &entry.lease);
        if !same {
            self.rescan()?;
            self.stale = true;
            return Err(Error::new(
                Code::TRY_AGAIN_LATER,
                format!("lease {name} changed while it was being taken over; try again"),
            ));
        }
        Ok(entry)
    }

    /// Whether an allocation failed on a view that was stale and has been read again
    /// since (then it should be made again); clears the flag.
    pub fn take_stale(&mut self) -> bool {
        std::mem::take(&mut self.stale)
    }

    /// Sync what this call named, in parallel. Each file's fsync makes its name durable
    /// too: the name was given in the same (ext4, xfs) or an earlier (f2fs checkpoint)
    /// transaction, and btrfs logs the names of a new inode with it. The directory itself
    /// is never fsynced: on btrfs that logs every new name in it, also other calls' whose
    /// files are not logged yet, and those would come back empty after a crash.
    fn sync_placed(&mut self) -> io::Result<()> {
        let files = std::mem::take(&mut self.placed);
        std::thread::scope(|scope| {
            let others: Vec<_> = files.iter().skip(1).map(|f| scope.spawn(move || f.sync_all())).collect();
            let mut result = files.first().map_or(Ok(()), |f| f.sync_all());
            for handle in others {
                let synced = handle.join().unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")));
                result = result.and(synced);
            }
            result
        })
    }
}

impl Store for DiskStore {
    fn find(&self, query: Query) -> Vec<Lease> {
        self.view.find(query)
    }

    fn lease(&self, ip: IpAddr) -> Option<Lease> {
        self.view.get_ip(ip).map(|e| e.lease)
    }

    fn markers(&self) -> &[Marker] {
        &self.view.markers
    }

    fn last_reserved(&mut self, range_set: usize) -> Option<IpAddr> {
        match read_entry(&self.dir, &format!("{LAST_RESERVED_PREFIX}{range_set}"), 64) {
            Content::Regular(bytes) => parse_last_reserved(&bytes),
            Content::Opaque | Content::Gone => None,
        }
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()> {
        // Only a cursor, written in place as upstream does: a torn or unwritable one reads
        // as "none", which restarts the round robin at the range start. Never through a
        // symlink. Overwrite, then cut to length: truncating to zero first would make ext4
        // flush the file on close (its replace-via-truncate heuristic), costing milliseconds.
        let text = go_ip_string(ip);
        let written = self
            .dir
            .open_write(&format!("{LAST_RESERVED_PREFIX}{range_set}"), 0o600)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.set_len(text.len() as u64)));
        if let Err(e) = written {
            eprintln!("host-local: could not record the last reserved address in {}: {e}", self.path.display());
        }
        self.index_stale = true; // the file may be new: the directory's mtime moved
        Ok(())
    }

    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let name = go_ip_string(ip);
        if self.view.contains(&name) {
            return Ok(false);
        }
        loop {
            let prepared = match self.prepared_lease.take() {
                Some(p) if p.content == owner.content() => p,
                other => {
                    if let Some(p) = other {
                        self.discard(p)?;
                    }
                    self.prepare(owner.content().to_string())?
                }
            };
            match self.place_new(prepared, &name)? {
                Ok((file, ino)) => {
                    let lease = Lease { ip, content: owner.content().to_string(), pod: None, opaque: false };
                    self.view.set(Entry { lease, ino });
                    self.undo.push(Undo::Created { ip, ino });
                    self.placed(file);
                    return Ok(true);
                }
                Err((prepared, e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.prepared_lease = Some(prepared);
                    // Someone (upstream host-local) created it since the index was written.
                    let content = match read_lease(&self.dir, &name, None) {
                        LeaseFile::Lease(content) => content,
                        LeaseFile::Debris | LeaseFile::Gone => None,
                    };
                    self.view.set(Entry { lease: LeaseFile::lease(content, ip), ino: 0 });
                    self.index_stale = true;
                    return Ok(false);
                }
                // Our named temp file was removed (an upstream DEL matched its content): again.
                Err((prepared, e)) if e.kind() == io::ErrorKind::NotFound && prepared.temp_name.is_some() => {}
                Err((_, e)) => return Err(self.error("link", &name, e)),
            }
        }
    }

    fn verify(&mut self, ip: IpAddr) -> Result<bool> {
        let known = self.view.get_ip(ip).is_some_and(|e| lease_unchanged(&self.dir, ip, &e.lease));
        if !known {
            self.rescan()?;
        }
        Ok(known)
    }

    fn take_over(&mut self, ip: IpAddr, owner: &Owner, pod: Option<&PodRecord>) -> Result<()> {
        let previous = self.confirm(ip)?.lease;
        // The record first, naming the lease it replaces: a crash between the two renames
        // then leaves the old lease still recognised as this pod's (see `rescan`), never a
        // new lease whose record names another sandbox.
        let written = self.write_record(ip, pod, Some(&previous.content))?;
        self.write_lease(ip, owner.content())?;
        let mut entry = self.entry(ip)?;
        entry.lease.pod = pod.filter(|_| written).cloned();
        self.view.set(entry);
        self.undo.push(Undo::Replaced { ip, content: previous.content, pod: previous.pod });
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) -> Result<()> {
        let Some(entry) = self.view.get_ip(ip) else { return Ok(()) };
        if entry.lease.opaque {
            return Ok(()); // not ours to remove
        }
        self.remove_lease(ip)?;
        self.undo.push(Undo::Released { ip, content: entry.lease.content, pod: entry.lease.pod });
        Ok(())
    }

    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()> {
        let mut entry = self.entry(ip)?;
        let pod = if self.write_record(ip, pod.as_ref(), None)? { pod } else { None };
        self.undo.push(Undo::Relabelled { ip, pod: std::mem::replace(&mut entry.lease.pod, pod) });
        self.view.set(entry);
        Ok(())
    }

    fn remove_marker(&mut self, marker: &Marker) -> Result<()> {
        let name = marker.file_name();
        self.changed |= self.dir.remove(&name).map_err(|e| self.error("remove", &name, e))?;
        self.view.markers.retain(|m| m != marker);
        self.undo.push(Undo::MarkerRemoved(marker.clone()));
        Ok(())
    }

    fn clock(&mut self) -> Result<NodeClock> {
        if let Some(clock) = &self.clock {
            return Ok(clock.clone());
        }
        let boot_id = self.boot_id.get_or_insert_with(running_boot_id).clone();
        let boots = self.read_clock_file();
        let boottime = sys::boottime_us();
        let clock = match NodeClock::running(boots.clone(), &boot_id, boottime) {
            Some(clock) => clock,
            None => {
                // The first call of this boot (once per boot: every record is read).
                let latest = self
                    .view
                    .find(Query::All)
                    .iter()
                    .filter_map(|l| l.pod.as_ref())
                    .map(|p| p.changed_at.max(p.added_at))
                    .max();
                let clock = NodeClock::start_boot(boots, &boot_id, boottime, latest.unwrap_or(0));
                self.write_clock_file(&clock);
                clock
            }
        };
        self.clock = Some(clock.clone());
        Ok(clock)
    }

    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let hits = matching(self.view.find(Query::Owner(owner)).iter(), owner);
        if self.fresh {
            return Ok(hits);
        }
        let confirmed = if hits.is_empty() {
            // A miss must be certain: anything created or replaced since the index was
            // written shows up as a new name or a new inode.
            self.listing_matches(&self.view)?
        } else {
            hits.iter().all(|ip| self.view.get_ip(*ip).is_some_and(|e| lease_unchanged(&self.dir, *ip, &e.lease)))
        };
        if confirmed {
            return Ok(hits);
        }
        self.rescan()?;
        Ok(matching(self.view.find(Query::Owner(owner)).iter(), owner))
    }

    fn rollback(&mut self) -> Result<()> {
        // What is undone need not reach the disk.
        self.placed.clear();
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Created { ip, ino } => {
                    // Only our own file: after a failed sync the lock was let go meanwhile.
                    if self.dir.stat(&go_ip_string(ip)).is_ok_and(|m| m.ino == ino) {
                        self.remove_lease(ip)?;
                    }
                }
                Undo::Replaced { ip, content, pod } => {
                    self.write_lease(ip, &content)?;
                    self.write_record(ip, pod.as_ref(), None)?;
                    let mut entry = self.entry(ip)?;
                    entry.lease.pod = pod;
                    self.view.set(entry);
                }
                Undo::Relabelled { ip, pod } => {
                    if let Ok(mut entry) = self.entry(ip) {
                        self.write_record(ip, pod.as_ref(), None)?;
                        entry.lease.pod = pod;
                        self.view.set(entry);
                    }
                }
                Undo::Released { ip, content, pod } => self.restore_lease(ip, content, pod)?,
                Undo::MarkerRemoved(marker) => self.restore_marker(marker)?,
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.discard_prepared()?;
        if !self.counted.values.is_empty() {
            if let Err(e) = self.save_counters() {
                eprintln!(
                    "host-local: could not update the counters in {}: {e}",
                    self.path.join(PRIVATE_DIR).display()
                );
            }
        }
        if self.changed || self.index_stale {
            self.write_index();
        }
        let must_sync = self.durable && !self.placed.is_empty();
        (self.changed, self.index_stale) = (false, false);
        // Nothing below needs the lock: let the next call in while we wait for the disk.
        self.unlock()?;
        if !must_sync {
            self.undo.clear();
            return Ok(());
        }
        let Err(e) = self.sync_placed() else {
            self.undo.clear();
            return Ok(());
        };
        // The disk failed us: what we wrote may not be there. Undo it and say so.
        let failure = Error::io(format!("sync {}: {e}; the call's changes were undone", self.path.display()));
        self.durable = false;
        self.lock()?;
        self.rescan()?;
        let undone = self.rollback();
        self.write_index();
        self.unlock()?;
        undone.map_err(|u| Error::io(format!("{}; undoing them failed too: {u}", failure.msg)))?;
        Err(failure)
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let _ = self.discard_prepared();
    }
}

#[cfg(test)]
mod tests;
