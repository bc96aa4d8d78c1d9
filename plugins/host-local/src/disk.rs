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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use libcni::ip::go_ip_string;
use libcni::json;
use libcni::{Error, Result};
use serde_json::{Map, Value};

use crate::store::{matching, parse_rfc3339, rfc3339, Lease, LeaseState, Marker, Owner, PodRecord, Store};

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

/// A temp file, fsynced, ready to be linked or renamed into place.
struct Prepared {
    path: PathBuf,
    content: String,
    ino: u64,
}

/// What a call can write before it takes the lock (see the module docs).
#[derive(Default)]
pub struct Prepare<'a> {
    /// The lease this call will most likely create.
    pub lease: Option<&'a Owner>,
    /// The pod record it will most likely write.
    pub record: Option<&'a PodRecord>,
}

/// A lease with the inode its file had when we last saw it.
#[derive(Clone)]
struct Entry {
    lease: Lease,
    ino: u64,
}

pub struct DiskStore {
    dir: PathBuf,
    dir_handle: File,
    /// flock'ed from `open` until `commit` (or drop).
    lock: File,
    leases: BTreeMap<String, Entry>,
    markers: Vec<Marker>,
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
            leases: BTreeMap::new(),
            markers: Vec::new(),
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

    fn prepare(&mut self, content: String) -> Result<Prepared> {
        let (path, ino) = self.write_temp(content.as_bytes())?;
        Ok(Prepared { path, content, ino })
    }

    /// Re-read the whole directory now (for answers that must be authoritative).
    pub fn refresh(&mut self) -> Result<()> {
        if !self.fresh {
            self.rescan()?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn dir_mtime(&self) -> Result<(i64, i64)> {
        let m = self.dir_handle.metadata().map_err(|e| io_error("stat", &self.dir, e))?;
        Ok((m.mtime(), m.mtime_nsec()))
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join(INDEX_FILE)
    }

    /// Use the cached index if the directory has not changed since we wrote it.
    fn load_index(&mut self) -> Result<bool> {
        let Ok(text) = fs::read_to_string(self.index_path()) else { return Ok(false) };
        let (mtime, nsec) = self.dir_mtime()?;
        let mut lines = text.lines();
        if lines.next() != Some(&format!("{INDEX_HEADER} {mtime} {nsec}")) {
            return Ok(false);
        }
        match parse_index(lines) {
            Some((leases, markers)) => {
                (self.leases, self.markers) = (leases, markers);
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
        markers.sort_by(|a, b| (a.since, a.file_name()).cmp(&(b.since, b.file_name())));
        (self.leases, self.markers) = (leases, markers);
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

    /// The inodes of the lease files as the directory lists them now.
    fn list_lease_inodes(&self) -> Result<HashMap<String, u64>> {
        let mut listed = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error("read", &self.dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &self.dir, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                if lease_ip(&name).is_some() {
                    listed.insert(name, entry.ino());
                }
            }
        }
        Ok(listed)
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
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&private)
                .map_err(|e| io_error("mkdir", &private, e))?;
        }
        self.temp_counter += 1;
        Ok(private.join(format!("{TEMP_PREFIX}{}-{}", std::process::id(), self.temp_counter)))
    }

    /// Write `data` to a new temp file and fsync it; it is then linked or renamed into place.
    fn write_temp(&mut self, data: &[u8]) -> Result<(PathBuf, u64)> {
        let path = self.temp_path()?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        f.write_all(data).and_then(|_| f.sync_data()).map_err(|e| {
            let _ = fs::remove_file(&path);
            io_error("write", &path, e)
        })?;
        let ino = f.metadata().map_err(|e| io_error("stat", &path, e))?.ino();
        Ok((path, ino))
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
                match self.prepared_record.take_if(|p| p.content == json) {
                    Some(p) if fs::rename(&p.path, &path).is_ok() => self.changed = true,
                    _ => {
                        self.replace_file(&path, json.as_bytes())?;
                    }
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
        if let Some(e) = self.leases.get_mut(&go_ip_string(ip)) {
            e.ino = ino;
        }
        Ok(())
    }

    fn discard_prepared(&mut self) -> Result<()> {
        for p in [self.prepared_lease.take(), self.prepared_record.take()].into_iter().flatten() {
            remove_if_present(&p.path).map_err(|e| io_error("remove", &p.path, e))?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        let index_dir = self.dir.join(PRIVATE_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&index_dir)
            .map_err(|e| io_error("mkdir", &index_dir, e))?;
        let (mtime, nsec) = self.dir_mtime()?;
        let mut text = String::with_capacity(64 + self.leases.len() * 64);
        text.push_str(&format!("{INDEX_HEADER} {mtime} {nsec}\n"));
        for (name, e) in &self.leases {
            let lease = &e.lease;
            text.push_str("L ");
            text.push_str(name);
            text.push(' ');
            text.push_str(&e.ino.to_string());
            text.push(' ');
            escape_into(&mut text, &lease.content);
            text.push('\n');
            if let Some(p) = &lease.pod {
                text.push_str("P ");
                text.push_str(name);
                for field in [&p.owner.container_id, &p.owner.ifname, &p.namespace, &p.name, &p.uid, &p.boot_id] {
                    text.push(' ');
                    escape_into(&mut text, field);
                }
                text.push_str(if p.state == LeaseState::Held { " held " } else { " active " });
                text.push_str(&p.since.to_string());
                text.push('\n');
            }
        }
        for m in &self.markers {
            text.push_str(&format!("M {} ", go_ip_string(m.ip)));
            escape_into(&mut text, &m.namespace);
            text.push(' ');
            escape_into(&mut text, &m.name);
            text.push_str(&format!(" {}\n", m.since));
        }
        // A cache: no fsync. A torn or lost index fails to validate and is rebuilt.
        let tmp = self.temp_path()?;
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|_| fs::rename(&tmp, self.index_path()));
        if let Err(e) = written {
            // Losing the cache costs a rescan next time, nothing more.
            let _ = fs::remove_file(&tmp);
            eprintln!("host-local: could not write index {}: {e}", self.index_path().display());
        }
        Ok(())
    }

    fn lease_mut(&mut self, ip: IpAddr) -> Result<&mut Lease> {
        let entry = self.leases.get_mut(&go_ip_string(ip));
        entry.map(|e| &mut e.lease).ok_or_else(|| Error::internal(format!("no lease for {}", go_ip_string(ip))))
    }
}

impl Store for DiskStore {
    fn leases(&self) -> Vec<&Lease> {
        self.leases.values().map(|e| &e.lease).collect()
    }

    fn lease(&self, ip: IpAddr) -> Option<&Lease> {
        self.leases.get(&go_ip_string(ip)).map(|e| &e.lease)
    }

    fn markers(&self) -> &[Marker] {
        &self.markers
    }

    fn last_reserved(&mut self, range_set: usize) -> Option<IpAddr> {
        // Parsed like Go's net.ParseIP on the raw bytes: a newline or garbage means none.
        let text = read_small(&self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"))).ok()?;
        text.parse().ok()
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()> {
        // Only a cursor: atomic, but not worth an fsync of its own.
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        let tmp = self.temp_path()?;
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(go_ip_string(ip).as_bytes()))
            .and_then(|_| fs::rename(&tmp, &path));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error("write", &path, e)
        })?;
        self.changed = true;
        Ok(())
    }

    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let name = go_ip_string(ip);
        if self.leases.contains_key(&name) {
            return Ok(false);
        }
        let target = self.dir.join(&name);
        loop {
            let prepared = match self.prepared_lease.take() {
                Some(p) if p.content == owner.content() => p,
                other => {
                    if let Some(p) = other {
                        remove_if_present(&p.path).map_err(|e| io_error("remove", &p.path, e))?;
                    }
                    self.prepare(owner.content().to_string())?
                }
            };
            match fs::hard_link(&prepared.path, &target) {
                Ok(()) => {
                    // Each lease gets its own inode: the temp name goes, the lease keeps it.
                    remove_if_present(&prepared.path).map_err(|e| io_error("remove", &prepared.path, e))?;
                    let lease = Lease { ip, content: prepared.content, pod: None };
                    self.leases.insert(name, Entry { lease, ino: prepared.ino });
                    self.undo.push(Undo::Created(ip));
                    self.changed = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.prepared_lease = Some(prepared);
                    // Someone (upstream host-local) created it since the index was written.
                    if let Ok(text) = read_small(&target) {
                        let lease = Lease { ip, content: text.trim().to_string(), pod: None };
                        self.leases.insert(name, Entry { lease, ino: 0 });
                    }
                    self.index_stale = true;
                    return Ok(false);
                }
                // Our prepared file was removed (an upstream DEL matching its content, or a
                // debris sweep after a very long lock wait): write it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !prepared.path.exists() => {}
                Err(e) => return Err(io_error("link", &target, e)),
            }
        }
    }

    fn take_over(&mut self, ip: IpAddr, owner: &Owner) -> Result<()> {
        let previous =
            self.lease(ip).cloned().ok_or_else(|| Error::internal(format!("no lease for {}", go_ip_string(ip))))?;
        self.write_lease(ip, &owner.content())?;
        self.undo.push(Undo::Replaced { ip, content: previous.content, pod: previous.pod });
        self.lease_mut(ip)?.content = owner.content().to_string();
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) -> Result<()> {
        let path = self.path_of(ip);
        self.changed |= remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
        self.write_record(ip, None)?;
        self.leases.remove(&go_ip_string(ip));
        Ok(())
    }

    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()> {
        let previous = self
            .lease(ip)
            .map(|l| l.pod.clone())
            .ok_or_else(|| Error::internal(format!("no lease for {}", go_ip_string(ip))))?;
        self.write_record(ip, pod.as_ref())?;
        self.undo.push(Undo::Relabelled { ip, pod: previous });
        self.lease_mut(ip)?.pod = pod;
        Ok(())
    }

    fn remove_marker(&mut self, marker: &Marker) -> Result<()> {
        let path = self.dir.join(marker.file_name());
        self.changed |= remove_if_present(&path).map_err(|e| io_error("remove", &path, e))?;
        self.markers.retain(|m| m != marker);
        Ok(())
    }

    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        let hits = matching(self.leases.values().map(|e| &e.lease), owner);
        if self.fresh {
            return Ok(hits);
        }
        let confirmed = if hits.is_empty() {
            // A miss must be certain: anything created or replaced since the index was
            // written shows up as a new name or a new inode.
            self.list_lease_inodes()? == self.leases.iter().map(|(n, e)| (n.clone(), e.ino)).collect::<HashMap<_, _>>()
        } else {
            hits.iter().all(|ip| {
                let lease = &self.leases[&go_ip_string(*ip)].lease;
                read_small(&self.path_of(*ip)).is_ok_and(|text| text.trim() == lease.content)
            })
        };
        if confirmed {
            return Ok(hits);
        }
        self.rescan()?;
        Ok(matching(self.leases.values().map(|e| &e.lease), owner))
    }

    fn rollback(&mut self) -> Result<()> {
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Created(ip) => self.release(ip)?,
                Undo::Replaced { ip, content, pod } => {
                    self.write_lease(ip, &content)?;
                    self.write_record(ip, pod.as_ref())?;
                    let lease = self.lease_mut(ip)?;
                    (lease.content, lease.pod) = (content, pod);
                }
                Undo::Relabelled { ip, pod } => {
                    if self.lease(ip).is_some() {
                        self.write_record(ip, pod.as_ref())?;
                        self.lease_mut(ip)?.pod = pod;
                    }
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.discard_prepared()?;
        if self.changed || self.index_stale {
            self.write_index()?;
        }
        self.undo.clear();
        self.index_stale = false;
        // Nothing below needs the lock: let the next call in while we wait for the disk.
        self.lock.unlock().map_err(|e| io_error("unlock", &self.dir.join("lock"), e))?;
        if std::mem::take(&mut self.changed) {
            self.dir_handle.sync_all().map_err(|e| io_error("fsync", &self.dir, e))?;
        }
        Ok(())
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

/// Index fields are space-separated: escape what could split or confuse a line.
fn escape_into(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('~');
        return;
    }
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'~' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
fn escape(s: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, s);
    out
}

fn unescape(s: &str) -> Option<String> {
    if s == "~" {
        return Some(String::new());
    }
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

type IndexView = (BTreeMap<String, Entry>, Vec<Marker>);

/// Parse the index; any malformed line rejects it (and the directory is read instead).
fn parse_index<'a>(lines: impl Iterator<Item = &'a str>) -> Option<IndexView> {
    let mut leases: Vec<(String, Entry)> = Vec::new();
    let mut markers = Vec::new();
    for line in lines {
        let mut f = line.split(' ');
        match f.next()? {
            "L" => {
                let (name, ino, content) = (f.next()?, f.next()?, f.next()?);
                let lease = Lease { ip: name.parse().ok()?, content: unescape(content)?, pod: None };
                leases.push((name.to_string(), Entry { lease, ino: ino.parse().ok()? }));
            }
            "P" => {
                let name = f.next()?;
                let (last_name, entry) = leases.last_mut()?;
                if last_name != name {
                    return None;
                }
                let mut next = || unescape(f.next()?);
                let owner = Owner::new(&next()?, &next()?);
                let (namespace, pod, uid, boot_id) = (next()?, next()?, next()?, next()?);
                let state = match f.next()? {
                    "held" => LeaseState::Held,
                    "active" => LeaseState::Active,
                    _ => return None,
                };
                let since = f.next()?.parse().ok()?;
                entry.lease.pod = Some(PodRecord { owner, namespace, name: pod, uid, boot_id, state, since });
            }
            "M" => {
                let (ip, ns, name, since) = (f.next()?, f.next()?, f.next()?, f.next()?);
                markers.push(Marker {
                    ip: ip.parse().ok()?,
                    namespace: unescape(ns)?,
                    name: unescape(name)?,
                    since: since.parse().ok()?,
                });
            }
            _ => return None,
        }
        if f.next().is_some() {
            return None;
        }
    }
    // Written in order, so this is a linear bulk build.
    Some((leases.into_iter().collect(), markers))
}

#[cfg(test)]
mod tests;
