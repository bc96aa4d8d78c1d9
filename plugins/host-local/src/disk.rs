//! The on-disk store: upstream's directory layout and lock, made durable and indexed.
//!
//! `<dataDir>/<network>/` holds, exactly as upstream host-local writes them:
//! `<ip>` leases (`<containerID>\r\n<ifname>`, 0600), `last_reserved_ip.<set>` and `lock`.
//! Beside them we keep `<ip>.pod` pod records for sticky IPs (JSON, so their content can
//! never match a container ID in upstream's directory walks). `.hostlocal/` holds a cache
//! of the whole directory (`index`) and our temp files, so that writing them does not
//! change the network directory itself.
//!
//! Rules that keep this correct next to a concurrent upstream host-local:
//! - One exclusive `flock` on `<dir>/lock` for the whole call (upstream takes the same lock).
//! - A lease is created by `link()`ing a complete, fsynced temp file to `<ip>`: it appears
//!   atomically with its content or not at all, and `link` fails if the name exists,
//!   which is upstream's `O_EXCL` uniqueness. Replacements use `rename()`.
//! - Lease and record data are written to temp files and fsynced *before* the lock is
//!   taken; under the lock we only link/rename. The directory is fsynced *after* the
//!   lock is released and before the result is printed or DEL returns, so concurrent
//!   calls (a reboot storm) share journal commits instead of queueing on them.
//! - The index is only a cache. It is trusted when the directory's mtime is the one we
//!   recorded after our last change; otherwise the directory is read again. Answers
//!   that must be certain (what does this container hold?) are checked against the
//!   files: hits are re-read, and a miss is confirmed against a fresh directory listing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use libcni::ip::go_ip_string;
use libcni::json;
use libcni::{Error, Result};
use serde_json::{Map, Value};

use crate::index::{Entry, View};
use crate::store::{matching, parse_rfc3339, rfc3339, Lease, LeaseState, Marker, Owner, PodRecord, Query, Store};

const PRIVATE_DIR: &str = ".hostlocal";
const INDEX_FILE: &str = "index";
const INDEX_HEADER: &str = "host-local-index v1";
const TEMP_PREFIX: &str = ".tmp-";
const POD_SUFFIX: &str = ".pod";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Lease files are a few dozen bytes; anything longer is garbage we never need in full.
const MAX_LEASE_READ: u64 = 4096;
/// A temp file this old belongs to a crashed call (live calls hold theirs for milliseconds).
const TEMP_DEBRIS_AGE: std::time::Duration = std::time::Duration::from_secs(60);

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}: {e}", path.display()))
}

/// A lease file name: exactly Go's text form of an address.
fn lease_ip(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (go_ip_string(ip) == name).then_some(ip)
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

fn read_small(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_nofollow(path)?.take(MAX_LEASE_READ).read_to_string(&mut text)?;
    Ok(text)
}

/// Move `from` to `to` unless `to` exists (`AlreadyExists`): upstream's O_EXCL uniqueness
/// with the content already in place. One `renameat2(RENAME_NOREPLACE)`, or `link` and
/// `unlink` where the filesystem lacks it.
fn place_new(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD makes them relative to the cwd.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, from_c.as_ptr(), libc::AT_FDCWD, to_c.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(err);
    }
    fs::hard_link(from, to)?;
    remove_if_present(from).map(|_| ())
}

/// Give an `O_TMPFILE` inode the name `to`, failing if it exists (`AlreadyExists`).
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let to_c = c(to)?;
    let fd = file.as_raw_fd();
    // SAFETY: valid fd and NUL-terminated paths.
    if unsafe { libc::linkat(fd, c"".as_ptr(), libc::AT_FDCWD, to_c.as_ptr(), libc::AT_EMPTY_PATH) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) {
        return Err(err);
    }
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc path does not.
    let proc_path = c(Path::new(&format!("/proc/self/fd/{fd}")))?;
    // SAFETY: as above.
    match unsafe {
        libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), libc::AT_FDCWD, to_c.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `.hostlocal/` must be our own directory: never a symlink that would take temp files
/// out of the store.
fn ensure_private_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!("{} is not a directory (a symlink?)", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new().mode(0o700).create(path),
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `rollback` must undo.
enum Undo {
    Created(IpAddr),
    Replaced { ip: IpAddr, content: String, pod: Option<PodRecord> },
    Relabelled { ip: IpAddr, pod: Option<PodRecord> },
}

/// An fsync running on a helper thread, so that the call does other work meanwhile.
struct BackgroundSync(std::thread::JoinHandle<io::Result<()>>);

impl BackgroundSync {
    /// Sync the data of a new file (`fdatasync`).
    fn data(file: File) -> BackgroundSync {
        BackgroundSync(std::thread::spawn(move || file.sync_data()))
    }

    /// Sync a directory's entries (`fsync`).
    fn all(file: File) -> BackgroundSync {
        BackgroundSync(std::thread::spawn(move || file.sync_all()))
    }

    /// Wait for the sync; `what` names it in errors (formatted only then).
    fn wait(self, what: std::fmt::Arguments) -> Result<()> {
        match self.0.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io(format!("{what}: {e}"))),
            Err(_) => Err(Error::internal(format!("{what}: helper thread panicked"))),
        }
    }
}

/// A complete file waiting for its name: written before the lock is taken, synced on a
/// helper thread meanwhile, and placed only after the sync returned.
struct Prepared {
    content: String,
    ino: u64,
    body: Body,
    synced: Option<BackgroundSync>,
}

enum Body {
    /// An `O_TMPFILE` inode: nameless until linked, and gone by itself after a crash.
    Unnamed(File),
    /// A named temp file in `.hostlocal/`, where the filesystem lacks `O_TMPFILE`.
    Named(PathBuf),
}

impl Prepared {
    /// Wait until the data is on stable storage; it may be placed after that.
    fn wait_synced(&mut self) -> Result<()> {
        self.synced.take().map_or(Ok(()), |sync| sync.wait(format_args!("fdatasync of a new file")))
    }

    /// Give the file the name `target`, unless that exists (`AlreadyExists`).
    fn place_new(&mut self, target: &Path) -> Result<io::Result<()>> {
        self.wait_synced()?;
        Ok(match &self.body {
            Body::Unnamed(file) => link_unnamed(file, target),
            Body::Named(path) => place_new(path, target),
        })
    }

    /// Whether our named temp file is gone (an upstream DEL matched its content).
    fn vanished(&self) -> bool {
        matches!(&self.body, Body::Named(path) if !path.exists())
    }

    fn discard(self) -> Result<()> {
        if let Body::Named(path) = &self.body {
            remove_if_present(path).map_err(|e| io_error("remove", path, e))?;
        }
        Ok(())
    }
}

/// What a call can write before it takes the lock (see the module docs).
#[derive(Default)]
pub struct Prepare<'a> {
    /// The lease this call will most likely create.
    pub lease: Option<&'a Owner>,
    /// The pod record it will most likely write.
    pub record: Option<&'a PodRecord>,
}

pub struct DiskStore {
    dir: PathBuf,
    dir_handle: File,
    /// flock'ed from `open` until `commit` (or drop).
    lock: File,
    view: View,
    /// The view was read from the directory in this call (not from the index).
    fresh: bool,
    /// Directory entries changed: fsync the directory and rewrite the index.
    changed: bool,
    index_stale: bool,
    undo: Vec<Undo>,
    prepared_lease: Option<Prepared>,
    prepared_record: Option<Prepared>,
    temp_counter: u32,
}

impl DiskStore {
    /// Create `dir` if needed, write what can be written early, take the lock, and load
    /// the view of the store.
    pub fn open(dir: &Path, prepare: Prepare) -> Result<DiskStore> {
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::io(format!("refusing to use {}: it is a symlink", dir.display())));
        }
        fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|e| io_error("mkdir", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CREAT | libc::O_NOFOLLOW)
            .mode(0o750)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        let dir_handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .map_err(|e| io_error("open", dir, e))?;
        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            dir_handle,
            lock,
            view: View::default(),
            fresh: false,
            changed: false,
            index_stale: false,
            undo: Vec::new(),
            prepared_lease: None,
            prepared_record: None,
            temp_counter: 0,
        };
        if let Some(owner) = prepare.lease {
            store.prepared_lease = Some(store.prepare(owner.content().to_string())?);
        }
        if let Some(record) = prepare.record {
            store.prepared_record = Some(store.prepare(record_json(record))?);
        }
        store.lock.lock().map_err(|e| io_error("lock", &lock_path, e))?;
        if !store.load_index()? {
            store.rescan()?;
        }
        Ok(store)
    }

    /// Write `content` to a new file and start syncing it in the background.
    fn prepare(&mut self, content: String) -> Result<Prepared> {
        let unnamed = OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(&self.dir);
        let (body, ino, for_sync) = match unnamed {
            Ok(mut file) => {
                file.write_all(content.as_bytes()).map_err(|e| io_error("write", &self.dir, e))?;
                let ino = file.metadata().map_err(|e| io_error("stat", &self.dir, e))?.ino();
                let for_sync = file.try_clone().map_err(|e| io_error("dup", &self.dir, e))?;
                (Body::Unnamed(file), ino, for_sync)
            }
            // Not every filesystem has O_TMPFILE: fall back to a named temp file.
            Err(_) => {
                let (path, file, ino) = self.create_temp(content.as_bytes())?;
                (Body::Named(path), ino, file)
            }
        };
        let synced = Some(BackgroundSync::data(for_sync));
        Ok(Prepared { content, ino, body, synced })
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
        fs::symlink_metadata(self.path_of(ip)).ok().map(|m| m.mtime().max(0) as u64)
    }

    fn dir_mtime(&self) -> Result<(i64, i64)> {
        let m = self.dir_handle.metadata().map_err(|e| io_error("stat", &self.dir, e))?;
        Ok((m.mtime(), m.mtime_nsec()))
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join(INDEX_FILE)
    }

    fn index_header(&self) -> Result<String> {
        let (mtime, nsec) = self.dir_mtime()?;
        Ok(format!("{INDEX_HEADER} {mtime} {nsec}"))
    }

    /// Use the cached index if the directory has not changed since we wrote it.
    fn load_index(&mut self) -> Result<bool> {
        let mut text = String::new();
        let private_is_ours = fs::symlink_metadata(self.private_dir()).is_ok_and(|m| m.file_type().is_dir());
        let read = open_nofollow(&self.index_path()).and_then(|mut f| f.read_to_string(&mut text));
        if !private_is_ours || read.is_err() {
            return Ok(false);
        }
        match View::parse(text, &self.index_header()?) {
            Some(view) => {
                self.view = view;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Read every entry of the directory, dropping debris that only a crash leaves.
    fn rescan(&mut self) -> Result<()> {
        self.sweep_temp_files()?;
        let mut leases = BTreeMap::new();
        let mut markers = Vec::new();
        let mut records = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("read", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("read", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let Ok(file_type) = entry.file_type() else { continue };
            if !file_type.is_file() {
                continue; // symlinks are never followed; directories are not ours to read
            }
            let path = entry.path();
            if let Some(ip) = lease_ip(&name) {
                let content = match read_small(&path) {
                    Ok(text) => text.trim().to_string(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("read", &path, e)),
                };
                if content.is_empty() {
                    // Upstream creates the file, then writes it, under the lock we hold: an
                    // empty lease is a crashed upstream call, and would block the address forever.
                    remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
                    self.changed = true;
                    continue;
                }
                leases.insert(name, Entry { lease: Lease { ip, content, pod: None }, ino: entry.ino() });
            } else if let Some(ip) = name.strip_suffix(POD_SUFFIX).and_then(lease_ip) {
                records.push((ip, path));
            } else if let Some((ip, namespace, pod)) = Marker::parse_name(&name) {
                let since = entry.metadata().map(|m| m.mtime().max(0) as u64).unwrap_or(0);
                markers.push(Marker { ip, namespace, name: pod, since });
            }
        }
        for (ip, path) in records {
            let record = read_small(&path).ok().and_then(|text| parse_record(&text));
            match (leases.get_mut(&go_ip_string(ip)), record) {
                (Some(e), Some(record)) if record.owner.content() == e.lease.content => e.lease.pod = Some(record),
                // The lease is gone or was replaced by another tool: the record is stale.
                _ => {
                    remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
                    self.changed = true;
                }
            }
        }
        markers.sort_by_key(|m| (m.since, m.file_name()));
        self.view = View::from_entries(leases, markers);
        self.fresh = true;
        self.index_stale = true;
        Ok(())
    }

    fn private_dir(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR)
    }

    /// Calls write temp files before taking the lock, so only an old one is debris.
    fn sweep_temp_files(&mut self) -> Result<()> {
        let Ok(entries) = fs::read_dir(self.private_dir()) else { return Ok(()) };
        for entry in entries.flatten() {
            let is_temp = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX));
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if is_temp && age.is_some_and(|a| a >= TEMP_DEBRIS_AGE) {
                let path = entry.path();
                remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
            }
        }
        Ok(())
    }

    /// Whether the directory lists exactly the lease files (names and inodes) of the view.
    fn listing_matches_view(&self) -> Result<bool> {
        let mut listed: Vec<(String, u64)> = Vec::with_capacity(self.view.len());
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error("read", &self.dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &self.dir, e))?;
            let name = entry.file_name();
            // Cheap pre-filter; a non-canonical name that parses is a mismatch, as it should be.
            let Some(name) = name.to_str().filter(|n| n.parse::<IpAddr>().is_ok()) else { continue };
            listed.push((name.to_string(), entry.ino()));
        }
        listed.sort_unstable();
        Ok(listed.iter().map(|(n, i)| (n.as_str(), *i)).eq(self.view.inodes_sorted()))
    }

    fn path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(go_ip_string(ip))
    }

    fn pod_path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(format!("{}{POD_SUFFIX}", go_ip_string(ip)))
    }

    /// A fresh temp file name in our private directory (created on first use).
    fn temp_path(&mut self) -> Result<PathBuf> {
        let private = self.private_dir();
        if self.temp_counter == 0 {
            ensure_private_dir(&private).map_err(|e| io_error("mkdir", &private, e))?;
        }
        self.temp_counter += 1;
        Ok(private.join(format!("{TEMP_PREFIX}{}-{}", std::process::id(), self.temp_counter)))
    }

    /// Write `data` to a new temp file and fsync it; it is then linked or renamed into place.
    fn write_temp(&mut self, data: &[u8]) -> Result<(PathBuf, u64)> {
        let (path, file, ino) = self.create_temp(data)?;
        file.sync_data().map_err(|e| {
            let _ = fs::remove_file(&path);
            io_error("fdatasync", &path, e)
        })?;
        Ok((path, ino))
    }

    /// A new temp file holding `data`, not yet synced.
    fn create_temp(&mut self, data: &[u8]) -> Result<(PathBuf, File, u64)> {
        let path = self.temp_path()?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        f.write_all(data).map_err(|e| {
            let _ = fs::remove_file(&path);
            io_error("write", &path, e)
        })?;
        let ino = f.metadata().map_err(|e| io_error("stat", &path, e))?.ino();
        Ok((path, f, ino))
    }

    /// Atomically put `data` at `target` (temp file + rename). Returns the new inode.
    fn replace_file(&mut self, target: &Path, data: &[u8]) -> Result<u64> {
        let (tmp, ino) = self.write_temp(data)?;
        fs::rename(&tmp, target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error("rename", target, e)
        })?;
        self.changed = true;
        Ok(ino)
    }

    fn write_record(&mut self, ip: IpAddr, pod: Option<&PodRecord>) -> Result<()> {
        let path = self.pod_path_of(ip);
        match pod {
            Some(record) => {
                let json = record_json(record);
                let placed = match self.prepared_record.take_if(|p| p.content == json) {
                    // A new record takes the prepared file; an existing one is replaced below.
                    Some(mut p) => {
                        let placed = p.place_new(&path)?.is_ok();
                        p.discard()?;
                        placed
                    }
                    None => false,
                };
                if placed {
                    self.changed = true;
                } else {
                    self.replace_file(&path, json.as_bytes())?;
                }
            }
            None => {
                self.changed |= remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
            }
        }
        Ok(())
    }

    fn write_lease(&mut self, ip: IpAddr, content: &str) -> Result<()> {
        let path = self.path_of(ip);
        let ino = self.replace_file(&path, content.as_bytes())?;
        if let Some(mut entry) = self.view.get_ip(ip) {
            (entry.lease.content, entry.ino) = (content.to_string(), ino);
            self.view.set(entry);
        }
        Ok(())
    }

    fn discard_prepared(&mut self) -> Result<()> {
        for p in [self.prepared_lease.take(), self.prepared_record.take()].into_iter().flatten() {
            p.discard()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        // A cache: no fsync, and rewritten in place. A torn or lost index fails to
        // validate and the directory is read instead.
        let path = self.index_path();
        // Creating .hostlocal changes the directory: do it before reading its mtime.
        let file = ensure_private_dir(&self.private_dir()).and_then(|_| {
            OpenOptions::new().write(true).create(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(&path)
        });
        let written = file.and_then(|mut f| {
            let text = self.view.render(&self.index_header().map_err(|e| io::Error::other(e.msg))?);
            f.write_all(text.as_bytes())?;
            f.set_len(text.len() as u64)
        });
        if let Err(e) = written {
            // Losing the cache costs a rescan next time, nothing more.
            eprintln!("host-local: could not write index {}: {e}", path.display());
        }
        Ok(())
    }

    fn entry(&self, ip: IpAddr) -> Result<Entry> {
        self.view.get_ip(ip).ok_or_else(|| Error::internal(format!("no lease for {}", go_ip_string(ip))))
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
        // Parsed like Go's net.ParseIP on the raw bytes: a newline or garbage means none.
        let text = read_small(&self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"))).ok()?;
        text.parse().ok()
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()> {
        // Only a cursor, written in place as upstream does: a torn one reads as "none",
        // which restarts the round robin at the range start.
        // Overwrite, then cut to length: truncating to zero first would make ext4 flush
        // the file on close (its replace-via-truncate heuristic), costing milliseconds.
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        let text = go_ip_string(ip);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.set_len(text.len() as u64)));
        written.map_err(|e| io_error("write", &path, e))?;
        self.changed = true;
        Ok(())
    }

    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let name = go_ip_string(ip);
        if self.view.contains(&name) {
            return Ok(false);
        }
        let target = self.dir.join(&name);
        loop {
            let mut prepared = match self.prepared_lease.take() {
                Some(p) if p.content == owner.content() => p,
                other => {
                    if let Some(p) = other {
                        p.discard()?;
                    }
                    self.prepare(owner.content().to_string())?
                }
            };
            match prepared.place_new(&target)? {
                Ok(()) => {
                    let lease = Lease { ip, content: prepared.content, pod: None };
                    self.view.set(Entry { lease, ino: prepared.ino });
                    self.undo.push(Undo::Created(ip));
                    self.changed = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.prepared_lease = Some(prepared);
                    // Someone (upstream host-local) created it since the index was written.
                    if let Ok(text) = read_small(&target) {
                        let lease = Lease { ip, content: text.trim().to_string(), pod: None };
                        self.view.set(Entry { lease, ino: 0 });
                    }
                    self.index_stale = true;
                    return Ok(false);
                }
                // Our named temp file was removed (an upstream DEL matched its content): again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && prepared.vanished() => {}
                Err(e) => return Err(io_error("link", &target, e)),
            }
        }
    }

    fn take_over(&mut self, ip: IpAddr, owner: &Owner) -> Result<()> {
        let previous = self.entry(ip)?.lease;
        self.write_lease(ip, owner.content())?;
        self.undo.push(Undo::Replaced { ip, content: previous.content, pod: previous.pod });
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) -> Result<()> {
        let path = self.path_of(ip);
        self.changed |= remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
        self.write_record(ip, None)?;
        self.view.remove(ip);
        Ok(())
    }

    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()> {
        let mut entry = self.entry(ip)?;
        self.write_record(ip, pod.as_ref())?;
        self.undo.push(Undo::Relabelled { ip, pod: std::mem::replace(&mut entry.lease.pod, pod) });
        self.view.set(entry);
        Ok(())
    }

    fn remove_marker(&mut self, marker: &Marker) -> Result<()> {
        let path = self.dir.join(marker.file_name());
        self.changed |= remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
        self.view.markers.retain(|m| m != marker);
        Ok(())
    }

    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let hits = matching(self.view.find(Query::Owner(owner)).iter(), owner);
        if self.fresh {
            return Ok(hits);
        }
        let confirmed = if hits.is_empty() {
            // A miss must be certain: anything created or replaced since the index was
            // written shows up as a new name or a new inode.
            self.listing_matches_view()?
        } else {
            hits.iter().all(|ip| {
                let content = self.view.get_ip(*ip).map(|e| e.lease.content);
                read_small(&self.path_of(*ip)).is_ok_and(|text| Some(text.trim()) == content.as_deref())
            })
        };
        if confirmed {
            return Ok(hits);
        }
        self.rescan()?;
        Ok(matching(self.view.find(Query::Owner(owner)).iter(), owner))
    }

    fn rollback(&mut self) -> Result<()> {
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Created(ip) => self.release(ip)?,
                Undo::Replaced { ip, content, pod } => {
                    self.write_lease(ip, &content)?;
                    self.write_record(ip, pod.as_ref())?;
                    let mut entry = self.entry(ip)?;
                    entry.lease.pod = pod;
                    self.view.set(entry);
                }
                Undo::Relabelled { ip, pod } => {
                    if let Ok(mut entry) = self.entry(ip) {
                        self.write_record(ip, pod.as_ref())?;
                        entry.lease.pod = pod;
                        self.view.set(entry);
                    }
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.discard_prepared()?;
        // Every name is in place: start the directory fsync now, so that it overlaps
        // the index write and the unlock. It completes before this returns.
        let dir_synced = if std::mem::take(&mut self.changed) {
            let dir = self.dir_handle.try_clone().map_err(|e| io_error("dup", &self.dir, e))?;
            Some(BackgroundSync::all(dir))
        } else {
            None
        };
        if dir_synced.is_some() || self.index_stale {
            self.write_index()?;
        }
        self.undo.clear();
        self.index_stale = false;
        // Nothing below needs the lock: let the next call in while we wait for the disk.
        self.lock.unlock().map_err(|e| io_error("unlock", &self.dir.join("lock"), e))?;
        dir_synced.map_or(Ok(()), |sync| sync.wait(format_args!("fsync {}", self.dir.display())))
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let _ = self.discard_prepared();
    }
}

/// Pod record files: small JSON objects.
fn record_json(p: &PodRecord) -> String {
    let mut m = Map::new();
    m.insert("containerId".into(), p.owner.container_id.clone().into());
    m.insert("ifname".into(), p.owner.ifname.clone().into());
    m.insert("namespace".into(), p.namespace.clone().into());
    m.insert("name".into(), p.name.clone().into());
    m.insert("uid".into(), p.uid.clone().into());
    m.insert("bootId".into(), p.boot_id.clone().into());
    m.insert("state".into(), (if p.state == LeaseState::Held { "held" } else { "active" }).into());
    m.insert("since".into(), rfc3339(p.since).into());
    json::to_go_compact(&Value::Object(m)) + "\n"
}

pub fn parse_record(text: &str) -> Option<PodRecord> {
    let v = json::parse(text.as_bytes()).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(PodRecord {
        owner: Owner::new(&field("containerId")?, &field("ifname")?),
        namespace: field("namespace").unwrap_or_default(),
        name: field("name").unwrap_or_default(),
        uid: field("uid").unwrap_or_default(),
        boot_id: field("bootId").unwrap_or_default(),
        state: match field("state")?.as_str() {
            "held" => LeaseState::Held,
            "active" => LeaseState::Active,
            _ => return None,
        },
        since: parse_rfc3339(&field("since")?)?,
    })
}

#[cfg(test)]
mod tests;
