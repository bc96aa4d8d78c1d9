//! What a call changed, so that a failed ADD (or a failed sync) can put the store back as it
//! found it: leases created, replaced, relabelled or released, and OpenYurt markers consumed.

use super::*;

/// What `rollback` must undo. A step is undone only while the lease file is still the one
/// this call left (`Placed`): after a failed sync the lock was let go, and another call may
/// have taken the address since. Theirs is never touched.
pub(super) enum Undo {
    Created {
        ip: IpAddr,
        lease: Placed,
    },
    /// A take-over: the lease and record it replaced, and the lease it writes (`placed`,
    /// inode 0 until the call has it in place).
    Replaced {
        ip: IpAddr,
        content: String,
        pod: Option<PodRecord>,
        placed: Placed,
    },
    Relabelled {
        ip: IpAddr,
        pod: Option<PodRecord>,
        lease: Placed,
    },
    Released {
        ip: IpAddr,
        content: String,
        pod: Option<PodRecord>,
    },
    MarkerRemoved(Marker),
}

/// A lease file as this call left it: its inode (0: unknown) and content.
pub(super) struct Placed {
    pub(super) ino: u64,
    pub(super) content: String,
}

impl DiskStore {
    /// Whether the lease file of `ip` is still `placed`.
    fn still(&self, ip: IpAddr, placed: &Placed) -> bool {
        let name = go_ip_string(ip);
        self.dir.stat(&name).is_ok_and(|m| placed.ino == 0 || m.ino == placed.ino)
            && matches!(read_lease(&self.dir, &name, None), LeaseFile::Lease(Some(c)) if c == placed.content)
    }
}

impl DiskStore {
    /// Remove a lease file and its record (no undo: `release` and `rollback` use it).
    pub(super) fn remove_lease(&mut self, ip: IpAddr) -> Result<()> {
        let name = go_ip_string(ip);
        self.changed |= self.dir.remove(&name).ctx("remove", self.file(&name))?;
        self.write_record(ip, None, None)?;
        self.view.remove(ip);
        Ok(())
    }

    /// Put back a lease this call released.
    pub(super) fn restore_lease(&mut self, ip: IpAddr, content: String, pod: Option<PodRecord>) -> Result<()> {
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
    pub(super) fn restore_marker(&mut self, marker: Marker) -> Result<()> {
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

    /// Undo every change of this call, newest first; a step that fails does not stop the
    /// others.
    pub(super) fn undo_changes(&mut self) -> Result<()> {
        // What is undone need not reach the disk.
        self.placed.clear();
        let mut failed = Vec::new();
        while let Some(step) = self.undo.pop() {
            if let Err(e) = self.undo_step(step) {
                failed.push(e.msg);
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(Error::io(failed.join("; "))),
        }
    }

    fn undo_step(&mut self, step: Undo) -> Result<()> {
        match step {
            Undo::Created { ip, lease } => {
                // Only our own file: after a failed sync the lock was let go meanwhile, and a
                // take-back in place keeps the inode.
                if self.still(ip, &lease) {
                    self.remove_lease(ip)?;
                }
            }
            Undo::Replaced { ip, content, pod, placed } => {
                let lease_ours = self.still(ip, &placed);
                // Failed under the lock, before the lease was known to be in place: the
                // lease is this call's (its rename went through, a sync after it failed)
                // or still the one replaced (only the record was written).
                let only_record =
                    placed.ino == 0 && !lease_ours && self.still(ip, &Placed { ino: 0, content: content.clone() });
                if !lease_ours && !only_record {
                    return Ok(());
                }
                // The record too when putting the lease back fails (its rename may have gone
                // through and only the sync after it failed): the new record beside the old
                // lease would read as the new sandbox's, cut short between its renames.
                // In place where the take-over wrote it in place: its name is durable.
                let lease = if lease_ours { self.rewrite_lease(ip, &content) } else { Ok(()) };
                // Naming the lease content it puts back in turn: written without a sync after a
                // failed one, the record may reach the disk before the lease does, and still
                // names it (see `rescan`).
                let record = self.write_record(ip, pod.as_ref(), lease_ours.then_some(placed.content.as_str()));
                lease.and(record)?;
                let mut entry = self.entry(ip)?;
                entry.lease.pod = pod;
                self.view.set(entry);
            }
            Undo::Relabelled { ip, pod, lease } => {
                if !self.still(ip, &lease) {
                    return Ok(());
                }
                let mut entry = self.entry(ip)?;
                self.write_record(ip, pod.as_ref(), None)?;
                entry.lease.pod = pod;
                self.view.set(entry);
            }
            Undo::Released { ip, content, pod } => self.restore_lease(ip, content, pod)?,
            Undo::MarkerRemoved(marker) => self.restore_marker(marker)?,
        }
        Ok(())
    }
}
