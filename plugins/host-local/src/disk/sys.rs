//! The few system calls the store needs that std does not offer, all relative to a
//! directory handle so that no path is ever resolved through a symlink planted in the
//! store. They go through rustix, except `sync_file_range` and an ext4 `ioctl`, which
//! rustix lacks or offers only as `unsafe` too: those two `unsafe` blocks are the
//! plugin's only ones.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, FsWord, Mode, OFlags, RawDir, RawMode, RenameFlags, Stat, StatVfsMountFlags, CWD};
use rustix::io::Errno;
use rustix::time::{clock_gettime_dynamic, DynamicClockId};

/// How names become durable on a filesystem.
#[derive(Clone, Copy, Debug)]
pub struct Durability {
    /// A rename is committed only with or after the data and size of a file written out
    /// before it (`write_out`): xfs, and ext4 with its journal, whose commits are ordered and
    /// carry the file's size and extents in the rename's transaction or an earlier one. So
    /// a replacement needs no sync before its rename. Not btrfs, whose log can make the
    /// removal of the replaced name durable alone (see `replace_files`), nor anything else.
    pub ordered_renames: bool,
    /// A file's fsync does not make the name it was linked or renamed to durable: the
    /// directory is synced too. Never on btrfs, where that would log other calls' new names
    /// without their data (see `sync_placed`); ext4 with a journal, xfs and f2fs carry the
    /// name with the file. (An ext4 without a journal syncs a new entry's directory with the
    /// file, `ext4_sync_parent`, but before Linux 6.5 only while the file's inode is still
    /// dirty, and a concurrent fsync of the same file can take that over: not relied on.)
    pub sync_directory: bool,
    /// An overwrite of a file's written blocks goes to the same place on the device, so
    /// writing it out (`write_out`) puts it where the next cache flush makes it durable: ext4
    /// and xfs. Not btrfs or f2fs, which write it elsewhere and must log where (`fdatasync`).
    pub overwrites_in_place: bool,
    /// A sync writes a file's inode only if the kernel holds it dirty: ext4 without a
    /// journal, whose background writeback marks an inode clean while its block is still
    /// only in memory. So a file this call did not write is `touch`ed before its sync.
    pub touch_unwritten_before_sync: bool,
    /// An `fdatasync` of a file changed only in place returns without flushing the device's
    /// write cache: ext4 without a journal before Linux 6.5, which flushes only after
    /// writing a dirty inode, and an overwrite dirties at most its timestamps. (In the
    /// power-cut VM's 6.1 kernel such an `fdatasync` made no flush request at all; with a
    /// `touch` first, one.) So such a file is `touch`ed before its sync.
    pub touch_overwritten_before_sync: bool,
}

/// A directory opened without following a symlink at its last component.
pub struct Dir(OwnedFd);

/// What `fstatat` tells about one entry, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: (i64, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets and devices: never opened.
    Other,
}

impl Kind {
    fn of(file_type: FileType) -> Kind {
        match file_type {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// From a `getdents64` type; `None` where the filesystem does not say (`DT_UNKNOWN`).
    fn from_dirent(file_type: FileType) -> Option<Kind> {
        match file_type {
            FileType::Unknown => None,
            known => Some(Kind::of(known)),
        }
    }
}

fn meta_of(st: &Stat) -> Meta {
    Meta {
        ino: st.st_ino,
        kind: Kind::of(FileType::from_raw_mode(st.st_mode)),
        size: st.st_size.max(0) as u64,
        mtime: (st.st_mtime, st.st_mtime_nsec),
    }
}

/// One directory entry as `getdents64` lists it.
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: Option<Kind>,
}

impl Dir {
    /// Open `path` as a directory; fails if its last component is a symlink.
    pub fn open(path: &Path) -> io::Result<Dir> {
        Dir::open_in(CWD, path)
    }

    /// Open the subdirectory `name` of this one, never through a symlink.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        Dir::open_in(&self.0, name)
    }

    fn open_in(at: impl AsFd, name: impl rustix::path::Arg) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(Dir(rustix::fs::openat(at, name, flags, Mode::empty())?))
    }

    /// What the filesystem needs for a name to be durable (see `Durability`).
    pub fn durability(&self) -> Durability {
        const EXT4_SUPER_MAGIC: FsWord = 0xEF53;
        const XFS_SUPER_MAGIC: FsWord = 0x5846_5342;
        const BTRFS_SUPER_MAGIC: FsWord = 0x9123_683E;
        const F2FS_SUPER_MAGIC: FsWord = 0xF2F5_2010;
        let journalled = Durability {
            ordered_renames: true,
            sync_directory: false,
            overwrites_in_place: true,
            touch_unwritten_before_sync: false,
            touch_overwritten_before_sync: false,
        };
        let posix =
            Durability { ordered_renames: false, sync_directory: true, overwrites_in_place: false, ..journalled };
        match rustix::fs::fstatfs(&self.0).map(|fs| fs.f_type) {
            Ok(XFS_SUPER_MAGIC) => journalled,
            Ok(EXT4_SUPER_MAGIC) if self.ext4_has_journal() => journalled,
            Ok(BTRFS_SUPER_MAGIC | F2FS_SUPER_MAGIC) => Durability { sync_directory: false, ..posix },
            // An ext4 (or ext2) without a journal, as some SD-card images are made, writes
            // metadata blocks back in any order and its file fsync carries only a brand-new
            // file's name.
            Ok(EXT4_SUPER_MAGIC) => Durability {
                overwrites_in_place: true,
                touch_unwritten_before_sync: true,
                touch_overwritten_before_sync: linux_before(6, 5),
                ..posix
            },
            // Anything we do not know: the POSIX way.
            _ => posix,
        }
    }

    /// fsync the directory: its entries, on a filesystem where a file's sync does not
    /// carry its name.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.0)?)
    }

    /// Set the directory's atime to now, its mtime untouched (the index compares it): see
    /// `touch`.
    pub fn touch_atime(&self) -> io::Result<()> {
        touch(&self.0, false)
    }

    /// Whether the ext4 this directory is on has a journal. ext4 answers one `ioctl` on the
    /// handle we hold: `EXT4_IOC_CHECKPOINT` in its dry-run form fails with `ENODEV` exactly
    /// when there is none, and does nothing else (Linux 5.14 and later, with CAP_SYS_ADMIN,
    /// which a plugin has). Where it gives no answer, two lookups in /sys and /proc do; they
    /// cost every writing call some 20 µs here.
    fn ext4_has_journal(&self) -> bool {
        const EXT4_IOC_CHECKPOINT: libc::c_ulong = 0x4004_662b; // _IOW('f', 43, __u32)
        const EXT4_IOC_CHECKPOINT_FLAG_DRY_RUN: u32 = 4;
        let flags = EXT4_IOC_CHECKPOINT_FLAG_DRY_RUN;
        // SAFETY: a valid descriptor, borrowed for the call; the kernel reads one u32
        // through the pointer, which outlives the call.
        match unsafe { libc::ioctl(self.0.as_raw_fd(), EXT4_IOC_CHECKPOINT, &flags as *const u32) } {
            0 => true,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) => false,
            // ENOTTY before 5.14, EPERM without CAP_SYS_ADMIN, EINVAL from the ioctl's first
            // version, which refused the dry run where there is a journal.
            _ => self.has_internal_journal(),
        }
    }

    /// jbd2 lists an ext4's internal journal as /proc/fs/jbd2/<device>-8 (8: the journal's
    /// inode), the device named as /sys/dev/block/<major>:<minor> links to it.
    fn has_internal_journal(&self) -> bool {
        let Ok(st) = rustix::fs::fstat(&self.0) else { return false };
        let dev = format!("/sys/dev/block/{}:{}", rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
        let Ok(target) = rustix::fs::readlink(dev, Vec::new()) else { return false };
        let Some(name) = target.to_str().ok().and_then(|t| t.rsplit('/').next()) else { return false };
        rustix::fs::access(format!("/proc/fs/jbd2/{name}-8"), rustix::fs::Access::EXISTS).is_ok()
    }

    fn open_at(&self, name: &str, flags: OFlags, mode: RawMode) -> Result<File, Errno> {
        let fd = rustix::fs::openat(&self.0, name, flags | OFlags::CLOEXEC, Mode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    }

    /// Open an entry for reading: never through a symlink (`ELOOP`), and never blocking
    /// on a FIFO. Callers check the kind with `File::metadata` before reading.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        Ok(self.open_at(name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK, 0)?)
    }

    /// Open an existing entry to read it and maybe rewrite it in place (as `open_read`);
    /// read-only where it cannot be written.
    pub fn open_update(&self, name: &str) -> io::Result<File> {
        match self.open_at(name, OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK, 0) {
            Err(e) if e != Errno::NOENT && e != Errno::LOOP => self.open_read(name),
            other => Ok(other?),
        }
    }

    /// Open an existing entry to rewrite it in place (as `open_update`), with its size: `None`
    /// unless it is a regular file with no other name. A file also linked elsewhere (planted,
    /// or a backup made with hard links) is replaced, never written in place, which would
    /// change it outside the store too.
    pub fn open_in_place(&self, name: &str) -> io::Result<Option<(File, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let file = self.open_update(name)?;
        let len = file.metadata().ok().filter(|m| m.is_file() && m.nlink() == 1).map(|m| m.len());
        Ok(len.map(|len| (file, len)))
    }

    /// Open (creating if needed) a file for writing in place, never through a symlink.
    pub fn open_write(&self, name: &str, mode: RawMode) -> io::Result<File> {
        Ok(self.open_at(name, OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK, mode)?)
    }

    /// The lock file `name`, created if missing (mode 0750, as upstream). On a read-only
    /// store an existing one is opened as it is. A symlink there is replaced, not followed.
    pub fn open_lock(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        match self.open_at(name, flags | OFlags::CREATE, 0o750) {
            Err(Errno::ROFS) => match self.open_at(name, flags, 0) {
                Err(Errno::NOENT) => Err(Errno::ROFS.into()),
                other => Ok(other?),
            },
            Err(Errno::LOOP) => {
                self.remove(name)?;
                Ok(self.open_at(name, flags | OFlags::CREATE, 0o750)?)
            }
            other => Ok(other?),
        }
    }

    /// Create `name`, failing if it exists.
    pub fn create_new(&self, name: &str, mode: RawMode) -> io::Result<File> {
        Ok(self.open_at(name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW, mode)?)
    }

    /// An unnamed file in this directory (`O_TMPFILE`); it vanishes if never linked.
    pub fn create_unnamed(&self, mode: RawMode) -> io::Result<File> {
        Ok(self.open_at(".", OFlags::WRONLY | OFlags::TMPFILE, mode)?)
    }

    /// The entry `name` itself (a symlink is described, not followed).
    pub fn stat(&self, name: &str) -> io::Result<Meta> {
        Ok(meta_of(&rustix::fs::statat(&self.0, name, AtFlags::SYMLINK_NOFOLLOW)?))
    }

    /// This directory itself.
    pub fn meta(&self) -> io::Result<Meta> {
        Ok(meta_of(&rustix::fs::fstat(&self.0)?))
    }

    /// Remove the file `name`; `Ok(false)` if it was not there.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.0, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Create the subdirectory `name`.
    pub fn make_dir(&self, name: &str, mode: RawMode) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(&self.0, name, Mode::from_raw_mode(mode))?)
    }

    /// Move `from` (in `from_dir`) to `to` here, replacing what is there.
    pub fn rename_from(&self, from_dir: &Dir, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&from_dir.0, from, &self.0, to)?)
    }

    /// Move `from` (in `from_dir`) to `to` here unless `to` exists (`AlreadyExists`).
    /// `renameat2(RENAME_NOREPLACE)`, or link and unlink where the filesystem lacks it.
    pub fn rename_new_from(&self, from_dir: &Dir, from: &str, to: &str) -> io::Result<()> {
        match rustix::fs::renameat_with(&from_dir.0, from, &self.0, to, RenameFlags::NOREPLACE) {
            Err(Errno::INVAL | Errno::NOSYS) => {
                rustix::fs::linkat(&from_dir.0, from, &self.0, to, AtFlags::empty())?;
                from_dir.remove(from).map(|_| ())
            }
            other => Ok(other?),
        }
    }

    /// Give an unnamed (`O_TMPFILE`) file the name `to`, failing if it exists.
    pub fn link_unnamed(&self, file: &File, to: &str) -> io::Result<()> {
        match rustix::fs::linkat(file, "", &self.0, to, AtFlags::EMPTY_PATH) {
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc path does not.
            Err(Errno::NOENT | Errno::PERM) => {
                let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                Ok(rustix::fs::linkat(CWD, &proc_path, &self.0, to, AtFlags::SYMLINK_FOLLOW)?)
            }
            other => Ok(other?),
        }
    }

    /// Every entry but `.` and `..`, in the order the filesystem keeps them.
    pub fn list(&self) -> io::Result<Vec<DirEntry>> {
        // A descriptor of our own: getdents64 moves its offset.
        let own = Dir::open_in(&self.0, ".")?;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut listing = RawDir::new(own.0, buf.spare_capacity_mut());
        let mut entries = Vec::new();
        while let Some(entry) = listing.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                entries.push(DirEntry {
                    name: name.to_vec(),
                    ino: entry.ino(),
                    kind: Kind::from_dirent(entry.file_type()),
                });
            }
        }
        Ok(entries)
    }
}

/// Start writing a file's dirty pages to the device (no metadata, no cache flush).
pub fn start_write_out(file: &File) -> io::Result<()> {
    sync_file_range(file, 0, 0, libc::SYNC_FILE_RANGE_WRITE)
}

/// Write a file's dirty pages to the device and wait for them. Done before a new file
/// gets its name, so that no journal commit can ever carry the name without the data.
pub fn write_out(file: &File) -> io::Result<()> {
    sync_file_range(file, 0, 0, WRITE_AND_WAIT)
}

/// Start writing the page that holds a file's first byte (its header) to the device.
pub fn start_write_out_head(file: &File) -> io::Result<()> {
    sync_file_range(file, 0, 1, libc::SYNC_FILE_RANGE_WRITE)
}

/// Write the page that holds a file's first byte to the device, and wait for it.
pub fn write_out_head(file: &File) -> io::Result<()> {
    sync_file_range(file, 0, 1, WRITE_AND_WAIT)
}

const WRITE_AND_WAIT: libc::c_uint =
    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;

/// Set an inode's atime, and its mtime too if `mtime`, to now: the inode is then dirty, so
/// that the next sync writes it and flushes the device's write cache (see
/// `Durability::touch_overwritten_before_sync`).
pub fn touch(fd: impl AsFd, mtime: bool) -> io::Result<()> {
    let now = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
    let keep = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT };
    let times = rustix::fs::Timestamps { last_access: now, last_modification: if mtime { now } else { keep } };
    Ok(rustix::fs::futimens(fd, &times)?)
}

/// Whether the running kernel is older than `major.minor`.
fn linux_before(major: u32, minor: u32) -> bool {
    release_before(&rustix::system::uname().release().to_string_lossy(), major, minor)
}

/// Whether a kernel release (`6.1.0-57-cloud-amd64`) is older than `major.minor`, or does
/// not parse.
pub fn release_before(release: &str, major: u32, minor: u32) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(running_major)), Some(Ok(running_minor))) => (running_major, running_minor) < (major, minor),
        _ => true,
    }
}

/// `sync_file_range` over `len` bytes from `offset` (0: to the end). rustix (1.1) has no
/// wrapper for it, nor has nix.
fn sync_file_range(file: &File, offset: i64, len: i64, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: a valid descriptor, borrowed for the call; no pointers are passed.
    match unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether `dir` can take new leases now: writable, not read-only, space and inodes left.
pub fn writable_with_space(dir: &Path) -> Result<(), String> {
    let os_error = |e: Errno| io::Error::from(e).to_string();
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).map_err(os_error)?;
    let fs = rustix::fs::statvfs(dir).map_err(os_error)?;
    if fs.f_flag.contains(StatVfsMountFlags::RDONLY) {
        return Err("read-only file system".into());
    }
    if fs.f_bavail == 0 || fs.f_favail == 0 {
        return Err("no space left on device".into());
    }
    Ok(())
}

/// Microseconds since this boot started, suspend included: the clock that never jumps.
pub fn boottime_us() -> u64 {
    // 0 if it fails; CLOCK_BOOTTIME exists since Linux 2.6.39.
    clock_gettime_dynamic(DynamicClockId::Boottime)
        .map_or(0, |ts| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}
