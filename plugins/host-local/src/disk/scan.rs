//! Reading the whole directory: the truth the index caches, and where crash debris is found.

use super::*;
use crate::store::LeaseState;

impl DiskStore {
    /// Whether the directory lists exactly the leases (names and inodes), pod records and
    /// markers of `view`.
    pub(super) fn listing_matches(&self, view: &View) -> Result<bool> {
        let mut listed: Vec<(String, Option<u64>)> = Vec::with_capacity(view.len() * 2);
        for entry in self.dir.list().ctx("read", self.file("."))? {
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
    pub(super) fn rescan(&mut self) -> Result<()> {
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
        // Leases that could not be read, or whose record could not: opaque now, but they may
        // read again.
        let mut unreadable = std::collections::BTreeSet::new();
        for entry in self.dir.list().ctx("read", self.file("."))? {
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
                    LeaseFile::Unreadable => {
                        unreadable.insert(name.clone());
                        LeaseFile::lease(None, ip)
                    }
                };
                leases.insert(name, Entry { lease, ino: entry.ino });
            } else if let Some(ip) = name.strip_suffix(record::SUFFIX).and_then(lease_ip) {
                records.push((ip, name, entry.kind));
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
        for (ip, name, kind) in records {
            // The record of a lease that could not be read stays as it is, and out of the
            // view: the pod finds its address again once the lease reads (see `write_index`).
            if unreadable.contains(&go_ip_string(ip)) {
                continue;
            }
            let content = match kind {
                Some(kind) if kind != Kind::File => Content::Opaque,
                _ => read_entry(&self.dir, &name, record::MAX_FILE_SIZE),
            };
            let record = match content {
                Content::Regular(bytes) => record::parse_replacing(&bytes),
                // Not a file we wrote: leave it alone, and never read it.
                Content::Opaque | Content::Gone => continue,
                // Left alone, and its lease too: opaque until the record reads again, so
                // that nothing releases the address meanwhile.
                Content::Unreadable => {
                    if let Some(e) = leases.get_mut(&go_ip_string(ip)) {
                        e.lease = LeaseFile::lease(None, ip);
                    }
                    unreadable.insert(go_ip_string(ip));
                    continue;
                }
            };
            let garbage = record.is_none();
            match (leases.get_mut(&go_ip_string(ip)), record) {
                (Some(e), Some((record, _))) if !e.lease.opaque && record.owner.content() == e.lease.content => {
                    e.lease.pod = Some(record)
                }
                // A take-over cut short after its record was written: the lease is still
                // the old sandbox's, of the same pod. Or it was cut short while the lease
                // was rewritten in place, and the device tore that write: the old
                // sandbox's content is put back.
                (Some(e), Some((record, Some(replaced))))
                    if !e.lease.opaque
                        && (replaced == e.lease.content
                            || torn_between(&e.lease.content, record.owner.content(), &replaced)) =>
                {
                    if replaced != e.lease.content {
                        let lease = go_ip_string(ip);
                        let repaired = match self.dir.open_in_place(&lease) {
                            Ok(Some((file, _))) => {
                                overwrite(&file, replaced.as_bytes(), None).map_err(|e| e.to_string())
                            }
                            // Also linked outside the store: replaced, never written through.
                            Ok(None) => {
                                let replaced_file = self.replace_file(&lease, &replaced).map_err(|e| e.msg);
                                // A failed sync after the rename went through: the inode the name has now.
                                e.ino = self.dir.stat(&lease).map_or(e.ino, |m| m.ino);
                                replaced_file.map(|_| ())
                            }
                            Err(err) => Err(err.to_string()),
                        };
                        if let Err(err) = repaired {
                            eprintln!("host-local: could not repair the torn lease {}: {err}", self.file(&lease));
                        }
                        self.changed = true;
                        self.counted.add(Counter::DebrisCleaned, None, 1);
                        e.lease.content = replaced;
                    }
                    // Held: a take-over only takes an address whose sandbox is gone. The pod
                    // the record names (whose ADD was not acknowledged) may take it back.
                    let owner = Owner::new(e.lease.container_id(), &record.owner.ifname);
                    e.lease.pod = Some(PodRecord { owner, state: LeaseState::Held, ..record })
                }
                // The lease is gone or was replaced by another tool, or the record is
                // garbage: it no longer applies.
                _ => {
                    let removed = self.dir.remove(&name).unwrap_or(false);
                    if removed && garbage {
                        self.counted.add(Counter::DebrisCleaned, None, 1); // a torn or garbage record
                    }
                    self.changed |= removed;
                }
            }
        }
        markers.sort_by_key(|m| (m.since, m.file_name()));
        self.view = View::from_entries(leases, markers);
        self.fresh = true;
        self.index_stale = true;
        self.unreadable = !unreadable.is_empty();
        Ok(())
    }
}

/// Whether `lease` is neither `new` nor `old` but each of its bytes is one of theirs at the
/// same place: a rewrite of `old` into `new` in place, torn by the device.
fn torn_between(lease: &str, new: &str, old: &str) -> bool {
    let (lease, new, old) = (lease.as_bytes(), new.as_bytes(), old.as_bytes());
    lease.len() == new.len()
        && lease.len() == old.len()
        && lease != new
        && lease != old
        && lease.iter().zip(new.iter().zip(old)).all(|(b, (n, o))| b == n || b == o)
}
