//! Files written before they are named: complete, their data on the device, then given a name
//! by `link` (a new lease or record) or `rename` (a replacement), and synced after the call
//! lets go of the lock. See the module doc of `disk` for why in this order.

use super::*;

/// A complete file waiting for its name: written before the lock is taken, its data
/// already on its way to the device (and waited for before it is named: `written_out`).
pub(super) struct Prepared {
    pub(super) content: String,
    pub(super) file: File,
    pub(super) ino: u64,
    /// Where the filesystem has no `O_TMPFILE`: our named temp file in `.hostlocal/`.
    pub(super) temp_name: Option<String>,
    /// Its data is on the device: it may be named.
    pub(super) written_out: bool,
}

/// What a call can write before it takes the lock, and whether it must be durable.
#[derive(Default)]
pub struct Prepare<'a> {
    /// ADD: what the call reports is on stable storage before `commit` returns.
    pub durable: bool,
    /// The lease this call will most likely create: written before the lock is taken.
    pub lease: Option<&'a Owner>,
    /// For a pod: the boot this call runs in, and the pod record it will write given the
    /// call's node time. A pod the store knows takes its address back in place; for a new
    /// pod, lease and record are written once the store is read (`prepare_for_pod`).
    pub record: Option<(&'a str, &'a dyn Fn(u64) -> PodRecord)>,
}

/// A file ready to be renamed over its target: whether its temp name is in `.hostlocal/`
/// (else in the store), that name, the file and its inode.
pub(super) type Staged = (bool, String, File, u64);

impl Prepared {
    /// Give a not yet named file other content, in place.
    pub(super) fn rewrite(&mut self, content: String) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(content.as_bytes(), 0)?;
        self.file.set_len(content.len() as u64)?;
        sys::start_write_out(&self.file)?;
        (self.content, self.written_out) = (content, false);
        Ok(())
    }
}

impl DiskStore {
    pub(super) fn temp_name(&mut self) -> String {
        self.temp_counter += 1;
        format!("{TEMP_PREFIX}{}-{}", std::process::id(), self.temp_counter)
    }

    /// Write `content` to a new nameless file and start pushing it to the device; it may
    /// be named once `write_out` has waited for that.
    pub(super) fn prepare(&mut self, content: String) -> Result<Prepared> {
        let (mut file, temp_name) = match self.dir.create_unnamed(0o600) {
            Ok(file) => (file, None),
            // Not every filesystem has O_TMPFILE: fall back to a named temp file.
            Err(_) => {
                let name = self.temp_name();
                let _ = self.private_dir();
                let file = self.temps().create_new(&name, 0o600).ctx("create", self.file(&name))?;
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
    pub(super) fn place_new(
        &mut self,
        p: Prepared,
        target: &str,
    ) -> Result<std::result::Result<(File, u64), (Prepared, io::Error)>> {
        if !p.written_out {
            if let Err(e) = sys::write_out(&p.file) {
                let _ = self.discard(p);
                return Err(self.error("write out", target, e));
            }
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

    pub(super) fn discard(&mut self, p: Prepared) -> Result<()> {
        if let Some(name) = &p.temp_name {
            self.temps().remove(name).ctx("remove", self.file(name))?;
        }
        Ok(())
    }

    pub(super) fn discard_prepared(&mut self) -> Result<()> {
        for p in [self.prepared_lease.take(), self.prepared_record.take()].into_iter().flatten() {
            self.discard(p)?;
        }
        Ok(())
    }

    /// A new file placed by this call: synced before `commit` returns, if durable.
    pub(super) fn placed(&mut self, file: File) {
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
                    // Best effort: without it the sync is what it was (a read-only mount, an
                    // immutable file), and the call must not fail with changes made.
                    if self.durability().touch_unwritten_before_sync {
                        if let Err(e) = sys::touch(&file, true) {
                            eprintln!("host-local: could not touch {} before syncing it: {e}", self.file(&file_name));
                        }
                    }
                    self.placed(file);
                    self.placed_named_earlier = true;
                }
            }
        }
        Ok(())
    }

    /// Put `data` at `target` in place of what is there, by renaming a complete, synced
    /// file over it (see `replace_files`). Returns the new inode.
    pub(super) fn replace_file(&mut self, target: &str, data: &str) -> Result<u64> {
        Ok(self.replace_files([(target, data)])?[0])
    }

    /// Put each `(target, data)` in place of what is there, in order, by renaming complete,
    /// synced files over them: the file prepared with that content, if any (nothing written
    /// early is thrown away: on ext4, freeing a written but uncommitted file costs
    /// milliseconds), else a new temp file. All are named and complete on the device before
    /// the first rename: at most one journal commit, however many files. Returns the new
    /// inodes.
    pub(super) fn replace_files<const N: usize>(&mut self, files: [(&str, &str); N]) -> Result<[u64; N]> {
        let _ = self.private_dir();
        let mut staged = Vec::with_capacity(N);
        for (target, data) in files {
            let prepared = [&mut self.prepared_lease, &mut self.prepared_record]
                .into_iter()
                .find_map(|slot| slot.take_if(|p| p.content == data));
            let temp = self.temp_name();
            let stage = match prepared {
                Some(p) => self.stage_prepared(p, &temp),
                None => self.stage_new(&temp, data),
            };
            match stage {
                Ok(stage) => staged.push((target, stage)),
                Err(e) => {
                    self.remove_staged(&staged);
                    return Err(self.error("replace", target, e));
                }
            }
        }
        // Complete on the device before they replace anything. ext4 and xfs then commit
        // each rename with or after the file's data and size. btrfs logs the removal of a
        // recently synced file's name at once, and the new name only for a file it has
        // logged: there (and wherever we do not know better) each file is synced first, or
        // another call's sync could make the removal durable alone.
        let files = staged.iter().map(|(_, (_, _, file, _))| file);
        let complete = if self.durability().ordered_renames {
            files.into_iter().try_for_each(sys::write_out)
        } else {
            sync_each(files)
        };
        if let Err(e) = complete {
            self.remove_staged(&staged);
            return Err(self.error("replace", staged[0].0, e));
        }
        let mut inodes = [0; N];
        for (i, (target, (in_private, name, _, ino))) in staged.iter().enumerate() {
            let from = if *in_private { self.temps() } else { &self.dir };
            if let Err(e) = self.dir.rename_from(from, name, target) {
                self.remove_staged(&staged[i..]);
                return Err(self.error("replace", target, e));
            }
            inodes[i] = *ino;
        }
        // Without a journal the replaced files are freed in memory now, and any later
        // writeback of their inode-table block (another call's fsync shares it) would reach
        // the disk before our entries: fsck then drops the name altogether. Sync them now;
        // the files were synced before their renames, so this makes them durable.
        if self.durability().sync_directory {
            self.changed = true;
            self.sync_directory(false).map_err(|e| self.error("sync", ".", e))?;
        } else {
            for (_, (_, _, file, _)) in staged {
                self.placed(file);
            }
        }
        Ok(inodes)
    }

    /// Remove the temp names of files staged but not renamed into place.
    fn remove_staged(&self, staged: &[(&str, Staged)]) {
        for (_, (in_private, name, _, _)) in staged {
            let from = if *in_private { self.temps() } else { &self.dir };
            let _ = from.remove(name);
        }
    }

    /// Give a prepared file the temp name `temp` (if it has none yet), ready to be renamed.
    pub(super) fn stage_prepared(&self, p: Prepared, temp: &str) -> io::Result<Staged> {
        // No write-out of its own: `replace_files` writes it out or fsyncs it before the rename
        // gives it its real name (a crash before leaves only a temp file, swept later).
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

    /// A new temp file holding `data` (written out or synced by `replace_files` before its rename): in
    /// `.hostlocal/`, or in the store itself where no file can be created there (read-only,
    /// out of inodes, broken).
    pub(super) fn stage_new(&self, temp: &str, data: &str) -> io::Result<Staged> {
        let in_private =
            self.private.as_ref().and_then(|private| Some((private, private.create_new(temp, 0o600).ok()?)));
        let (in_private, dir, mut file) = match in_private {
            Some((private, file)) => (true, private, file),
            None => (false, &self.dir, self.dir.create_new(temp, 0o600)?),
        };
        // Started at once: the device writes the data while the call goes on.
        let written =
            file.write_all(data.as_bytes()).and_then(|_| sys::start_write_out(&file)).and_then(|_| file.metadata());
        match written {
            Ok(meta) => Ok((in_private, temp.to_string(), file, std::os::unix::fs::MetadataExt::ino(&meta))),
            Err(e) => {
                let _ = dir.remove(temp);
                Err(e)
            }
        }
    }

    /// Sync what this call named. Each file's fsync makes its name durable
    /// too: the name was given in the same (ext4, xfs) or an earlier (f2fs checkpoint)
    /// transaction, and btrfs logs the names of a new inode with it. The directory itself
    /// is fsynced only where that is not so (an ext4 without a journal, an unknown
    /// filesystem): on btrfs it would log every new name in it, also other calls' whose
    /// files are not logged yet, and those would come back empty after a crash. There,
    /// replacements are durable already (`replace_files`).
    pub(super) fn sync_placed(&mut self) -> io::Result<()> {
        let placed = std::mem::take(&mut self.placed);
        sync_each(&placed)?;
        if self.durability().sync_directory && (!placed.is_empty() || self.names_to_sync) {
            self.sync_directory(!self.names_to_sync && !self.placed_named_earlier)?;
        }
        Ok(())
    }
}

/// fsync each file. One after another: all were named before the first sync, so on ext4
/// and xfs its journal commit carries them all and the later syncs find little left to do;
/// a thread per sync cost more than it saved (docs/benchmarks.md).
fn sync_each<'a>(files: impl IntoIterator<Item = &'a File>) -> io::Result<()> {
    files.into_iter().try_for_each(File::sync_all)
}
