//! `.hostlocal/`: our files beside upstream's. The index (a cache of the directory), the clock
//! (node time's per-boot bases), the counters (for `host-local metrics`), and named temp files
//! where the filesystem has no `O_TMPFILE`. Never followed if it is a symlink.

use super::*;

impl DiskStore {
    /// `.hostlocal/`, replacing a symlink or file of that name (never followed) with our
    /// own directory; `None` if that is not possible (a read-only store).
    pub(super) fn open_private(&self) -> Option<Dir> {
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
    pub(super) fn private_dir(&mut self) -> io::Result<&Dir> {
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
    pub(super) fn temps(&self) -> &Dir {
        self.private.as_ref().unwrap_or(&self.dir)
    }

    /// Use the cached index if it is whole and the directory has not changed since it
    /// was written.
    pub(super) fn load_index(&mut self) -> bool {
        let Some(private) = &self.private else { return false };
        // Opened for writing too: most calls that read the index rewrite it.
        let Ok(file) = private.open_update(INDEX_FILE) else { return false };
        let Ok(meta) = file.metadata() else { return false };
        if !meta.is_file() {
            return false;
        }
        let sized = meta.len() > 0 && meta.len() <= MAX_INDEX_SIZE;
        let read = sized.then(|| read_sized(&file, meta.len(), MAX_INDEX_SIZE as usize));
        self.index_file = Some((file, meta.len()));
        let Some(Ok(bytes)) = read else { return false };
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

    /// Before this call's first change in place: make the index on disk fail its check, and
    /// in a durable call get that onto the device before the change can follow. A change
    /// in place moves no directory mtime, so an index written before it would still pass
    /// after a crash that kept the change and not the index rewritten after it. `false` if
    /// that cannot be done (the change must then be made by renaming, which moves the mtime).
    pub(super) fn invalidate_index(&mut self) -> bool {
        use std::os::unix::fs::FileExt;
        if self.index_invalidated {
            return true;
        }
        if self.index_file.is_none() {
            let opened = self.private.as_ref().map(|private| private.open_update(INDEX_FILE));
            match opened {
                None => return true,
                Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => return true,
                Some(Err(_)) => return false,
                Some(Ok(file)) => {
                    let Ok(meta) = file.metadata() else { return false };
                    self.index_file = Some((file, meta.len()));
                }
            }
        }
        let in_place = self.durability().overwrites_in_place;
        let (file, _) = self.index_file.as_ref().expect("opened above");
        // `#` where the header starts: the index no longer parses. Where an overwrite stays in
        // place its write travels while the change is written (`sync_in_place` waits for it);
        // elsewhere (btrfs, f2fs) only a sync of the index makes the overwrite durable.
        let poisoned = file.write_all_at(b"#", 0).and_then(|_| match (self.durable, in_place) {
            (false, _) => Ok(()),
            (true, true) => sys::start_write_out_head(file),
            (true, false) => file.sync_data(),
        });
        self.index_invalidated = poisoned.is_ok();
        self.index_invalidation_in_flight = self.index_invalidated && self.durable && in_place;
        self.changed |= self.index_invalidated;
        self.index_invalidated
    }

    /// Sync `file`, changed in place, once the index's invalidation is on the device: the
    /// sync's cache flush then makes both durable, the invalidation no later than the change.
    pub(super) fn sync_in_place(&mut self, file: &File, name: &str) -> Result<()> {
        if std::mem::take(&mut self.index_invalidation_in_flight) {
            let (index, _) = self.index_file.as_ref().expect("invalidated");
            sys::write_out_head(index).ctx("write out", self.path.join(PRIVATE_DIR).join(INDEX_FILE).display())?;
        }
        if self.durability().touch_overwritten_before_sync {
            sys::touch(file, true).ctx("touch", self.file(name))?;
        }
        file.sync_data().ctx("sync", self.file(name))
    }

    pub(super) fn write_index(&mut self) {
        // Without an index the next call reads the directory again, and with it what could
        // not be read this time (see `rescan`).
        if self.unreadable {
            if let Some(private) = &self.private {
                let _ = private.remove(INDEX_FILE);
            }
            self.index_file = None;
            return;
        }
        // A cache: no fsync, and rewritten in place; the checksum catches a torn write.
        // Creating .hostlocal changes the directory: do it before reading its mtime.
        let written = self.private_dir().map(|_| ()).and_then(|_| {
            let mtime = self.dir.meta()?.mtime;
            let text = self.view.render(mtime);
            let read =
                self.index_file.take().filter(|(file, len)| overwrite(file, text.as_bytes(), Some(*len)).is_ok());
            let file = match read {
                Some((file, _)) => file,
                None => {
                    let file = self.private.as_ref().expect("just opened").open_write(INDEX_FILE, 0o600)?;
                    overwrite(&file, text.as_bytes(), None)?;
                    file
                }
            };
            self.index_file = Some((file, text.len() as u64));
            self.index_invalidated = false;
            Ok(())
        });
        if let Err(e) = written {
            // Losing the cache costs a rescan next time, nothing more.
            eprintln!("host-local: could not write index in {}: {e}", self.path.join(PRIVATE_DIR).display());
        }
    }

    /// What `.hostlocal/clock` keeps (`None` if it is missing or not whole).
    pub(super) fn read_clock_file(&self) -> Option<Saved> {
        match self.private.as_ref().map(|p| read_entry(p, CLOCK_FILE, MAX_CLOCK_SIZE)) {
            Some(Content::Regular(bytes)) => NodeClock::parse(&bytes),
            _ => None,
        }
    }

    pub(super) fn write_clock_file(&mut self, clock: &NodeClock) {
        // Like the index, rewritten in place and never synced: a torn or lost file is started
        // again from the records' stamps (see `NodeClock::start_boot`).
        let text = clock.render();
        let written = self.private_dir().and_then(|private| private.open_write(CLOCK_FILE, 0o600)).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.set_len(text.len() as u64)
        });
        if let Err(e) = written {
            eprintln!("host-local: could not write the clock in {}: {e}", self.path.join(PRIVATE_DIR).display());
        }
    }

    /// Count an event of this call (see [`crate::counters`]).
    pub fn count(&mut self, counter: Counter, range_set: Option<usize>) {
        self.counted.add(counter, range_set, 1);
    }

    /// The store's counters, with this call's events. A store that has none (or whose file is
    /// not whole) starts counting now, and its new file is written when the call commits:
    /// the start time changes only when the counters really start again.
    pub fn counters(&mut self) -> Counters {
        let saved = match self.private.as_ref().map(|p| read_entry(p, COUNTERS_FILE, MAX_COUNTERS_SIZE)) {
            Some(Content::Regular(bytes)) => Counters::parse(&bytes),
            _ => None,
        };
        let mut counters = saved.unwrap_or_else(|| {
            // `counted.created` set: a new counters file is due.
            if self.counted.created == 0 {
                self.counted.created = unix_now().max(1);
            }
            Counters { created: self.counted.created, ..Default::default() }
        });
        for ((counter, set), by) in &self.counted.values {
            counters.add(*counter, *set, *by);
        }
        counters
    }

    /// Add this call's events to the counters file: replaced by a synced temp file, so that
    /// a power cut keeps either the old or the new counts.
    pub(super) fn save_counters(&mut self) -> io::Result<()> {
        let counters = self.counters();
        let temp = self.temp_name();
        let private = self.private_dir()?;
        let mut file = private.create_new(&temp, 0o600)?;
        let staged = file.write_all(counters.render().as_bytes()).and_then(|_| file.sync_all());
        match staged.and_then(|_| private.rename_from(private, &temp, COUNTERS_FILE)) {
            Ok(()) => {
                self.counted = Counters::default();
                Ok(())
            }
            Err(e) => {
                let _ = private.remove(&temp);
                Err(e)
            }
        }
    }

    /// Calls write temp files before taking the lock, so only an old one is debris.
    /// Best effort: debris costs space, never correctness. Whether it was removed.
    pub(super) fn sweep_temp_file(dir: &Dir, name: &str) -> bool {
        let Ok(meta) = dir.stat(name) else { return false };
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.mtime.0.max(0) as u64);
        meta.kind == Kind::File
            && modified.elapsed().is_ok_and(|age| age >= TEMP_DEBRIS_AGE)
            && dir.remove(name).unwrap_or(false)
    }
}
