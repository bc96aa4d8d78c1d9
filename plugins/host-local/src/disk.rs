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
//!   journal commit carries it. Except on xfs and journalled ext4, a replacement is also
//!   synced before its rename (btrfs, see `replace_files` and `sys::Durability`).
//! - A pod's new sandbox taking its address back changes both files in place, the same on
//!   every filesystem: the record's free slot (see [`record`]), synced, then the lease
//!   (same length: container IDs from CRI runtimes always are), synced. The record names the
//!   lease content it replaces, so after a crash the lease reads as the new sandbox's, the
//!   old one's, or (a torn write) a mix of the two that `rescan` puts back to the old one:
//!   the pod's in every case. Before the first change in place the index is made to fail its
//!   check, on the device: a change in place moves no directory mtime.
//! - What ADD reports is durable before it returns: after the lock is released, each file
//!   it named is fsynced, which makes the name durable with it. Files are
//!   synced *after* they have their names: btrfs ignores an fsync of a nameless
//!   (`O_TMPFILE`) inode. The directory is fsynced only where a file's fsync does not carry
//!   its name (ext4 without a journal, unknown filesystems; there right after renames too,
//!   which makes replacements durable under the lock): on btrfs that would log every new
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

// The store's parts: `entry` reads one entry as what it claims to be; `prepared` writes files
// before they are named and syncs them; `private` keeps `.hostlocal/` (index, clock,
// counters); `scan` reads the whole directory; `undo` puts back what a failed call changed;
// `record` is the pod record format; `sys` has the raw syscalls. This file is `DiskStore`
// and its `Store` implementation.
mod entry;
mod prepared;
mod private;
pub mod record;
mod scan;
mod sys;
mod undo;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcni::ip::{canonical, go_ip_string};
use libcni::{Code, Context, Error, Result};
use rustix::io::Errno;

use crate::clock::{running_boot_id, NodeClock, Saved};
use crate::counters::{Counter, Counters};
use crate::index::{Entry, View};
use crate::store::{matching, unix_now, Lease, Marker, Owner, PodRecord, Query, Store};
use sys::{Dir, Durability, Kind};

pub use entry::parse_last_reserved;
use entry::{lease_ip, lease_unchanged, read_entry, read_lease, read_regular, read_sized, Content, LeaseFile};
pub use prepared::Prepare;
use prepared::Prepared;
pub use sys::writable_with_space;
use undo::{Placed, Undo};

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
/// A cursor holds one address; anything longer is not ours.
const MAX_CURSOR_SIZE: usize = 64;
/// A temp file this old belongs to a crashed call (live calls hold theirs for milliseconds).
const TEMP_DEBRIS_AGE: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// A lease or record could not be read when the view was made (a lease is then opaque,
    /// and its record left out): the view is not written as the index, so that the next
    /// call reads the directory again.
    unreadable: bool,
    durable: bool,
    /// How names become durable on the store's filesystem: found when a call first writes
    /// (a look at /proc and /sys that a CHECK need not pay for).
    durability: std::cell::OnceCell<Durability>,
    /// The view turned out stale (a foreign change within our clock tick) and was read
    /// again: the allocation should be made again.
    stale: bool,
    undo: Vec<Undo>,
    prepared_lease: Option<Prepared>,
    prepared_record: Option<Prepared>,
    /// Files this call named, to be synced before `commit` returns.
    placed: Vec<File>,
    /// This call changed files in place whose names an earlier call gave and may not have
    /// made durable: where a file's sync does not carry its name, the directory is synced.
    names_to_sync: bool,
    /// Among the files to sync are files an earlier call named (`sync_existing`).
    placed_named_earlier: bool,
    /// The directory's size when this call read its mtime (`sync_directory`).
    dir_size: Option<u64>,
    temp_counter: u32,
    /// The boot this call runs in, once known.
    boot_id: Option<String>,
    /// Node time, once this call has asked for it: one instant per call.
    clock: Option<NodeClock>,
    /// Events of this call, added to the store's counters when it commits.
    counted: Counters,
    /// The index file as this call read it, to be rewritten in place, and its length.
    index_file: Option<(File, u64)>,
    /// The cursor this call read, to be rewritten in place.
    cursor: Option<Cursor>,
    /// The index on disk can no longer pass its check: this call changes files in place.
    index_invalidated: bool,
    /// ... and that is not known to be on the device yet.
    index_invalidation_in_flight: bool,
    /// A record file and the slot whose sync failed: the next write to that record (the
    /// undo) goes to that slot again, so that the other one, synced before, stays whole.
    unsynced_slot: Option<(String, usize)>,
}

/// A `last_reserved_ip.<range set>` file as a call read it.
struct Cursor {
    range_set: usize,
    file: File,
    /// Its length, if it was not oversized.
    len: Option<u64>,
}

/// Overwrite `file` with `data` in place, and cut it to that length unless it was no longer
/// (`len`, if known): the `ftruncate` is skipped for the usual same-length rewrite.
fn overwrite(file: &File, data: &[u8], len: Option<u64>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, 0)?;
    if len.is_none_or(|len| len > data.len() as u64) {
        file.set_len(data.len() as u64)?;
    }
    Ok(())
}

impl DiskStore {
    /// Create the directory if needed, write what can be written early, take the lock,
    /// and load the view of the store.
    pub fn open(path: &Path, prepare: Prepare) -> Result<DiskStore> {
        let fail = |what: &str, e: io::Error| Error::io(format!("{what} {}: {e}", path.display()));
        // Opened first: the directory nearly always exists, and `mkdir -p` costs two calls.
        let opened = match Dir::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path).map_err(|e| fail("mkdir", e))?;
                Dir::open(path)
            }
            other => other,
        };
        let dir = opened.map_err(|e| match Errno::from_io_error(&e) {
            Some(Errno::LOOP | Errno::NOTDIR) => {
                Error::io(format!("refusing to use {}: it is a symlink or not a directory", path.display()))
            }
            _ => fail("open", e),
        })?;
        let lock = match dir.open_lock(LOCK_FILE) {
            Ok(lock) => Some(lock),
            // A read-only store without a lock file: nobody can change it.
            Err(e) if Errno::from_io_error(&e) == Some(Errno::ROFS) => None,
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
            unreadable: false,
            durable: prepare.durable,
            durability: std::cell::OnceCell::new(),
            stale: false,
            undo: Vec::new(),
            prepared_lease: None,
            prepared_record: None,
            placed: Vec::new(),
            names_to_sync: false,
            placed_named_earlier: false,
            dir_size: None,
            temp_counter: 0,
            boot_id: None,
            clock: None,
            counted: Counters::default(),
            index_file: None,
            cursor: None,
            index_invalidated: false,
            index_invalidation_in_flight: false,
            unsynced_slot: None,
        };
        // A pod's ADD most likely takes its recorded address back, in place: what it would
        // prepare is known once the store is read (`prepare_for_pod`).
        if let Some(owner) = prepare.lease.filter(|_| prepare.record.is_none()) {
            store.prepared_lease = Some(store.prepare(owner.content().to_string())?);
        }
        // The data is on its way to the device. With the lock free, it travels while the
        // store is read, and is waited for just before the file is named (`place_new`,
        // `replace_files`). When the lock is held (others are queued: a reboot storm), it is
        // waited for first, so that the queue does not wait for this call's device write
        // too. (scripts/bench.sh's storm of 110 ADDs did not slow down.) A call that will
        // sync looks up how while the device writes.
        if store.durable && store.prepared_lease.is_some() {
            store.durability();
        }
        if !store.try_lock()? {
            for p in [&mut store.prepared_lease, &mut store.prepared_record].into_iter().flatten() {
                sys::write_out(&p.file).ctx("write a new file in", path.display())?;
                p.written_out = true;
            }
            store.lock()?;
        }
        if store.private.is_none() {
            store.private = store.open_private();
        }
        if !store.load_index() {
            store.rescan()?;
        }
        if let (Some(owner), Some((boot_id, record))) = (prepare.lease, prepare.record) {
            store.prepare_for_pod(owner, boot_id, record)?;
        }
        Ok(store)
    }

    /// A pod's ADD: a pod the store knows takes its address back in place and writes no new
    /// file. For a new pod, its lease and record are written now, and pushed to the device
    /// while the call allocates.
    fn prepare_for_pod(&mut self, owner: &Owner, boot_id: &str, record: &dyn Fn(u64) -> PodRecord) -> Result<()> {
        self.boot_id = Some(boot_id.to_string());
        let record = record(self.clock()?.now());
        let pod = Query::Pod { namespace: &record.namespace, name: &record.name, uid: &record.uid };
        if self.view.find(pod).is_empty() {
            self.prepared_lease = Some(self.prepare(owner.content().to_string())?);
            self.prepared_record = Some(self.prepare(record::new_file(&record, None))?);
        }
        Ok(())
    }

    fn durability(&self) -> Durability {
        *self.durability.get_or_init(|| self.dir.durability())
    }

    fn lock(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.lock().ctx("lock", self.file(LOCK_FILE)),
            None => Ok(()),
        }
    }

    /// Take the lock if nobody holds it; `Ok(false)` if somebody does.
    fn try_lock(&self) -> Result<bool> {
        match &self.lock {
            Some(lock) => match lock.try_lock() {
                Ok(()) => Ok(true),
                Err(std::fs::TryLockError::WouldBlock) => Ok(false),
                Err(std::fs::TryLockError::Error(e)) => Err(self.error("lock", LOCK_FILE, e)),
            },
            None => Ok(true),
        }
    }

    fn unlock(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.unlock().ctx("unlock", self.file(LOCK_FILE)),
            None => Ok(()),
        }
    }

    /// `<store>/<name>` in a message: formatted only when a call fails.
    fn file<'a>(&'a self, name: &'a str) -> impl std::fmt::Display + 'a {
        struct InStore<'a>(&'a Path, &'a str);
        impl std::fmt::Display for InStore<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.join(self.1).display().fmt(f)
            }
        }
        InStore(&self.path, name)
    }

    fn error(&self, what: &str, name: &str, e: io::Error) -> Error {
        Error::io(format!("{what} {}: {e}", self.file(name)))
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

    /// The directory's mtime; its size is kept for `sync_directory`.
    fn dir_mtime(&mut self) -> Result<(i64, i64)> {
        let meta = self.dir.meta().ctx("stat", self.file("."))?;
        self.dir_size = Some(meta.size);
        Ok(meta.mtime)
    }

    /// fsync the directory. On an ext4 without a journal that writes the directory's inode
    /// only if the kernel holds it dirty, and names added or renamed dirty it only in ext4's
    /// own way; before Linux 6.5 nothing is then flushed either (in the power-cut VM's 6.1,
    /// a rename and the directory's fsync made no flush request; with its atime touched
    /// first, one). So its atime is touched first where the directory grew this call (its
    /// size and block map must be written), and before 6.5 unless every name to make durable
    /// is one this call gave to a file it has synced since (`new_names_only`): that file's
    /// fsync wrote the directory's blocks and flushed (`ext4_sync_parent`).
    fn sync_directory(&self, new_names_only: bool) -> io::Result<()> {
        let durability = self.durability();
        let grown = || self.dir.meta().map_or(true, |m| Some(m.size) != self.dir_size);
        let flush_needs_touch = durability.touch_overwritten_before_sync && !new_names_only;
        if flush_needs_touch || (durability.touch_unwritten_before_sync && grown()) {
            // Best effort: setting only the atime needs the directory's owner (or
            // CAP_FOWNER), where its sync needs nothing.
            if let Err(e) = self.dir.touch_atime() {
                eprintln!("host-local: could not touch {} before syncing it: {e}", self.path.display());
            }
        }
        self.dir.sync()
    }

    /// Write (or remove) the pod record of `ip`; `Ok(false)` if something that is not a
    /// file occupies its name, so there can be no record. `replaces`: the lease content a
    /// take-over is about to replace.
    fn write_record(&mut self, ip: IpAddr, pod: Option<&PodRecord>, replaces: Option<&str>) -> Result<bool> {
        let name = record_name(ip);
        let Some(record) = pod else {
            if self.dir.stat(&name).is_ok_and(|m| m.kind == Kind::File) {
                self.changed |= self.dir.remove(&name).ctx("remove", self.file(&name))?;
            }
            return Ok(true);
        };
        let exists = self.view.get_ip(ip).is_some_and(|e| e.lease.pod.is_some());
        if exists && self.rewrite_record(&name, record, replaces)? {
            return Ok(true);
        }
        let whole = self.whole_record(record, replaces);
        self.fit_prepared_record(&whole)?;
        // A new record takes the prepared file; an existing one is replaced below.
        if !exists {
            let p = match self.prepared_record.take_if(|p| p.content == whole) {
                Some(p) => p,
                None => self.prepare(whole.clone())?,
            };
            match self.place_new(p, &name)? {
                Ok((file, _)) => {
                    self.placed(file);
                    return Ok(true);
                }
                Err((p, _)) => self.prepared_record = Some(p),
            }
        }
        match self.replace_file(&name, &whole) {
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

    /// A record file written whole: in slots only where the call makes it durable (see `record`).
    fn whole_record(&self, record: &PodRecord, replaces: Option<&str>) -> String {
        match self.durable {
            true => record::new_file(record, replaces),
            false => record::to_json_replacing(record, replaces),
        }
    }

    /// Update the record file `name` in place, in the slot `record::read` names (see
    /// `record`); synced before this returns if the call is durable. `Ok(false)` if it must
    /// be replaced whole: the single-line form, a long record, not a file of ours alone.
    fn rewrite_record(&mut self, name: &str, record: &PodRecord, replaces: Option<&str>) -> Result<bool> {
        use std::os::unix::fs::FileExt;
        let Ok(Some((file, len))) = self.dir.open_in_place(name) else { return Ok(false) };
        let Ok(bytes) = read_sized(&file, len, record::MAX_FILE_SIZE) else { return Ok(false) };
        let Some(stored) = record::read(&bytes) else { return Ok(false) };
        let failed_before = self.unsynced_slot.take_if(|(failed, _)| failed == name).map(|(_, slot)| slot);
        let (Some(slot), Some(seq)) = (failed_before.or(stored.next_slot), stored.seq.checked_add(1)) else {
            return Ok(false);
        };
        let line = record::slot_line(record, replaces, seq, !self.durable);
        if line.len() >= record::SLOT || !self.invalidate_index() {
            return Ok(false);
        }
        file.write_all_at(line.as_bytes(), (slot * record::SLOT) as u64).ctx("write", self.file(name))?;
        self.changed = true;
        if self.durable {
            if let Err(e) = self.sync_in_place(&file, name) {
                self.unsynced_slot = Some((name.to_string(), slot));
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Put `content` in the lease file of `ip` (a pod's new sandbox taking it back): in place
    /// where the file holds as many bytes and has no other name, and synced before this
    /// returns if the call is durable; else replaced by rename (`write_lease`).
    fn rewrite_lease(&mut self, ip: IpAddr, content: &str) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let name = go_ip_string(ip);
        let in_place = self.dir.open_in_place(&name).ctx("open", self.file(&name))?;
        let Some((file, _)) = in_place.filter(|(_, len)| *len == content.len() as u64 && self.invalidate_index())
        else {
            return self.write_lease(ip, content);
        };
        file.write_all_at(content.as_bytes(), 0).ctx("write", self.file(&name))?;
        self.changed = true;
        if self.durable {
            self.sync_in_place(&file, &name)?;
        }
        let ino = self.entry(ip)?.ino;
        self.lease_written(ip, content, ino);
        Ok(())
    }

    /// Give the prepared record `json` as its content, rather than throwing it away (see
    /// `replace_files`).
    fn fit_prepared_record(&mut self, json: &str) -> Result<()> {
        if let Some(p) = self.prepared_record.as_mut().filter(|p| p.content != json) {
            p.rewrite(json.to_string()).with_context(|| "rewrite a new file")?;
        }
        Ok(())
    }

    fn write_lease(&mut self, ip: IpAddr, content: &str) -> Result<()> {
        let ino = self.replace_file(&go_ip_string(ip), content)?;
        self.lease_written(ip, content, ino);
        Ok(())
    }

    fn lease_written(&mut self, ip: IpAddr, content: &str, ino: u64) {
        if let Some(mut entry) = self.view.get_ip(ip) {
            (entry.lease.content, entry.ino) = (content.to_string(), ino);
            self.view.set(entry);
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
        // Opened for writing too: an allocation rewrites the cursor it read.
        let file = self.dir.open_update(&format!("{LAST_RESERVED_PREFIX}{range_set}")).ok()?;
        let Content::Regular(bytes) = read_regular(&file, MAX_CURSOR_SIZE) else { return None };
        let ip = parse_last_reserved(&bytes);
        let len = (bytes.len() <= MAX_CURSOR_SIZE).then_some(bytes.len() as u64);
        self.cursor = Some(Cursor { range_set, file, len });
        ip
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()> {
        // Only a cursor, written in place as upstream does: a torn or unwritable one reads
        // as "none", which restarts the round robin at the range start. Never through a
        // symlink. Overwrite, then cut to length: truncating to zero first would make ext4
        // flush the file on close (its replace-via-truncate heuristic), costing milliseconds.
        let text = go_ip_string(ip);
        let read = self.cursor.take().filter(|c| c.range_set == range_set);
        let rewritten = read.is_some_and(|c| overwrite(&c.file, text.as_bytes(), c.len).is_ok());
        if !rewritten {
            let name = format!("{LAST_RESERVED_PREFIX}{range_set}");
            let written = self.dir.open_write(&name, 0o600).and_then(|f| overwrite(&f, text.as_bytes(), None));
            if let Err(e) = written {
                eprintln!("host-local: could not record the last reserved address in {}: {e}", self.path.display());
            }
            self.index_stale = true; // the file may be new: the directory's mtime moved
        }
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
                    self.undo.push(Undo::Created { ip, lease: Placed { ino, content: owner.content().to_string() } });
                    self.placed(file);
                    return Ok(true);
                }
                Err((prepared, e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.prepared_lease = Some(prepared);
                    // Someone (upstream host-local) created it since the index was written.
                    let content = match read_lease(&self.dir, &name, None) {
                        LeaseFile::Lease(content) => content,
                        LeaseFile::Debris | LeaseFile::Unreadable | LeaseFile::Gone => None,
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
        // The record first, naming the lease it replaces: a crash between the two writes
        // then leaves the old lease still recognised as this pod's (see `rescan`), never a
        // new lease whose record names another sandbox.
        // Recorded first: a failure between the two writes is undone too.
        let placed = Placed { ino: 0, content: owner.content().to_string() };
        self.undo.push(Undo::Replaced { ip, content: previous.content.clone(), pod: previous.pod.clone(), placed });
        let written = match pod {
            // A pod's new sandbox takes back its hold, or another pod reclaims it: the record
            // is rewritten in place and synced, naming the lease it replaces; then the lease,
            // in place too where its length allows (no file created, no directory changed).
            Some(record) if previous.pod.is_some() => {
                let record_name = record_name(ip);
                if self.rewrite_record(&record_name, record, Some(&previous.content))? {
                    self.rewrite_lease(ip, owner.content())?;
                    // The ADD that named these files may have been killed before its syncs.
                    self.names_to_sync = true;
                } else {
                    // The single-line form, or a long record: both replaced whole, both synced
                    // before either is renamed, the record first.
                    let json = self.whole_record(record, Some(&previous.content));
                    self.fit_prepared_record(&json)?;
                    let [_, ino] = self.replace_files([(&record_name, &json), (&go_ip_string(ip), owner.content())])?;
                    self.lease_written(ip, owner.content(), ino);
                }
                true
            }
            _ => {
                let written = self.write_record(ip, pod, Some(&previous.content))?;
                self.write_lease(ip, owner.content())?;
                written
            }
        };
        let mut entry = self.entry(ip)?;
        entry.lease.pod = pod.filter(|_| written).cloned();
        if let Some(Undo::Replaced { placed, .. }) = self.undo.last_mut() {
            placed.ino = entry.ino;
        }
        self.view.set(entry);
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) -> Result<()> {
        let Some(entry) = self.view.get_ip(ip) else { return Ok(()) };
        if entry.lease.opaque {
            return Ok(()); // not ours to remove
        }
        // Recorded first: if the lease goes but its record cannot, both are put back.
        self.undo.push(Undo::Released { ip, content: entry.lease.content, pod: entry.lease.pod });
        self.remove_lease(ip)
    }

    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()> {
        let mut entry = self.entry(ip)?;
        let lease = Placed { ino: entry.ino, content: entry.lease.content.clone() };
        // Recorded first: a record written but not synced is undone too.
        self.undo.push(Undo::Relabelled { ip, pod: entry.lease.pod.clone(), lease });
        entry.lease.pod = if self.write_record(ip, pod.as_ref(), None)? { pod } else { None };
        self.view.set(entry);
        Ok(())
    }

    fn remove_marker(&mut self, marker: &Marker) -> Result<()> {
        let name = marker.file_name();
        self.changed |= self.dir.remove(&name).ctx("remove", self.file(&name))?;
        self.view.markers.retain(|m| m != marker);
        self.undo.push(Undo::MarkerRemoved(marker.clone()));
        Ok(())
    }

    fn clock(&mut self) -> Result<NodeClock> {
        if let Some(clock) = &self.clock {
            return Ok(clock.clone());
        }
        let boot_id = self.boot_id.get_or_insert_with(running_boot_id).clone();
        let saved = self.read_clock_file();
        let boottime = sys::boottime_us();
        let clock = match saved.clone().and_then(|saved| NodeClock::running(saved, &boot_id, boottime)) {
            Some(clock) => clock,
            None => {
                // The first call of this boot (once per boot: every record is read).
                let leases = self.view.find(Query::All);
                let stamps = leases
                    .iter()
                    .filter_map(|l| l.pod.as_ref())
                    .map(|p| (p.boot_id == boot_id, p.changed_at.max(p.added_at)));
                let clock = NodeClock::start_boot(saved, &boot_id, boottime, stamps);
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
        self.undo_changes()
    }

    fn commit(&mut self) -> Result<()> {
        self.discard_prepared()?;
        if !self.counted.values.is_empty() || self.counted.created != 0 {
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
        let must_sync = self.durable && (!self.placed.is_empty() || self.names_to_sync);
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
        // Others may have rewritten the index meanwhile: its length is no longer known.
        self.index_file = None;
        self.rescan()?;
        let undone = self.rollback();
        self.write_index();
        self.unlock()?;
        undone.map_err(|u| Error::io(format!("{}; undoing them failed too: {u}", failure.msg)))?;
        Err(failure)
    }
}

/// The pod record file of `ip`.
fn record_name(ip: IpAddr) -> String {
    format!("{}{}", go_ip_string(ip), record::SUFFIX)
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let _ = self.discard_prepared();
    }
}

#[cfg(test)]
mod tests;
