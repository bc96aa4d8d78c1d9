//! The few system calls the store needs that std does not offer, all relative to a
//! directory handle so that no path is ever resolved through a symlink planted in the
//! store. Every `unsafe` block of the plugin lives here.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    fn from_mode(mode: libc::mode_t) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// From a `getdents64` type; `None` where the filesystem does not say (`DT_UNKNOWN`).
    fn from_dirent(d_type: u8) -> Option<Kind> {
        match d_type {
            libc::DT_REG => Some(Kind::File),
            libc::DT_DIR => Some(Kind::Dir),
            libc::DT_LNK => Some(Kind::Symlink),
            libc::DT_UNKNOWN => None,
            _ => Some(Kind::Other),
        }
    }
}

fn meta_of(st: &libc::stat) -> Meta {
    Meta {
        ino: st.st_ino,
        kind: Kind::from_mode(st.st_mode),
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
        Dir::open_raw(libc::AT_FDCWD, path.as_os_str())
    }

    /// Open the subdirectory `name` of this one, never through a symlink.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        Dir::open_raw(self.0.as_raw_fd(), OsStr::new(name))
    }

    fn open_raw(at: RawFd, name: &OsStr) -> io::Result<Dir> {
        let c = cstr(name)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; the returned descriptor is owned only here.
        let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the filesystem commits a rename only with or after the data and size of a
    /// file written out before it (`write_out`), so that a replacement needs no sync of its
    /// own: ext4 and xfs, whose journal commits are ordered and carry the file's size and
    /// extents in the rename's transaction or an earlier one. Not btrfs, whose log can make
    /// the removal of the replaced name durable alone (see `replace_files`), nor f2fs or any
    /// filesystem not named here: those sync the file before the rename.
    pub fn orders_renames_after_write_out(&self) -> bool {
        const EXT4_SUPER_MAGIC: i64 = 0xEF53;
        const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
        // SAFETY: zeroed `statfs` is a valid out-parameter of fstatfs on a valid descriptor.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatfs(self.fd(), &mut fs) };
        rc == 0 && matches!(fs.f_type as i64, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC)
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn open_at(&self, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: as in `open_raw`.
        let fd = unsafe { libc::openat(self.fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Open an entry for reading: never through a symlink (`ELOOP`), and never blocking
    /// on a FIFO. Callers check the kind with `File::metadata` before reading.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_at(name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)
    }

    /// Open (creating if needed) a file for writing in place, never through a symlink.
    pub fn open_write(&self, name: &str, mode: libc::mode_t) -> io::Result<File> {
        self.open_at(name, libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK, mode)
    }

    /// The lock file `name`, created if missing (mode 0750, as upstream). On a read-only
    /// store an existing one is opened as it is. A symlink there is replaced, not followed.
    pub fn open_lock(&self, name: &str) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        match self.open_at(name, flags | libc::O_CREAT, 0o750) {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => match self.open_at(name, flags, 0) {
                Err(missing) if missing.kind() == io::ErrorKind::NotFound => Err(e),
                other => other,
            },
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.remove(name)?;
                self.open_at(name, flags | libc::O_CREAT, 0o750)
            }
            other => other,
        }
    }

    /// Create `name`, failing if it exists.
    pub fn create_new(&self, name: &str, mode: libc::mode_t) -> io::Result<File> {
        self.open_at(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, mode)
    }

    /// An unnamed file in this directory (`O_TMPFILE`); it vanishes if never linked.
    pub fn create_unnamed(&self, mode: libc::mode_t) -> io::Result<File> {
        self.open_at(".", libc::O_WRONLY | libc::O_TMPFILE, mode)
    }

    /// The entry `name` itself (a symlink is described, not followed).
    pub fn stat(&self, name: &str) -> io::Result<Meta> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: zeroed `stat` is a valid out-parameter; `c` is NUL-terminated.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstatat(self.fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(meta_of(&st))
    }

    /// This directory itself.
    pub fn meta(&self) -> io::Result<Meta> {
        fstat(self.fd())
    }

    /// Remove the file `name`; `Ok(false)` if it was not there.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        self.unlink(name, 0)
    }

    fn unlink(&self, name: &str, flags: libc::c_int) -> io::Result<bool> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: `c` is NUL-terminated.
        match check(unsafe { libc::unlinkat(self.fd(), c.as_ptr(), flags) }) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Create the subdirectory `name`.
    pub fn make_dir(&self, name: &str, mode: libc::mode_t) -> io::Result<()> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: `c` is NUL-terminated.
        check(unsafe { libc::mkdirat(self.fd(), c.as_ptr(), mode) })
    }

    /// Move `from` (in `from_dir`) to `to` here, replacing what is there.
    pub fn rename_from(&self, from_dir: &Dir, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (cstr(OsStr::new(from))?, cstr(OsStr::new(to))?);
        // SAFETY: both NUL-terminated.
        check(unsafe { libc::renameat(from_dir.fd(), f.as_ptr(), self.fd(), t.as_ptr()) })
    }

    /// Move `from` (in `from_dir`) to `to` here unless `to` exists (`AlreadyExists`).
    /// `renameat2(RENAME_NOREPLACE)`, or link and unlink where the filesystem lacks it.
    pub fn rename_new_from(&self, from_dir: &Dir, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (cstr(OsStr::new(from))?, cstr(OsStr::new(to))?);
        // SAFETY: both NUL-terminated.
        let rc = unsafe { libc::renameat2(from_dir.fd(), f.as_ptr(), self.fd(), t.as_ptr(), libc::RENAME_NOREPLACE) };
        match check(rc) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                // SAFETY: both NUL-terminated.
                check(unsafe { libc::linkat(from_dir.fd(), f.as_ptr(), self.fd(), t.as_ptr(), 0) })?;
                from_dir.remove(from).map(|_| ())
            }
            other => other,
        }
    }

    /// Give an unnamed (`O_TMPFILE`) file the name `to`, failing if it exists.
    pub fn link_unnamed(&self, file: &File, to: &str) -> io::Result<()> {
        let t = cstr(OsStr::new(to))?;
        // SAFETY: valid descriptors and NUL-terminated names.
        let rc = unsafe { libc::linkat(file.as_raw_fd(), c"".as_ptr(), self.fd(), t.as_ptr(), libc::AT_EMPTY_PATH) };
        match check(rc) {
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc path does not.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) => {
                let proc_path = cstr(OsStr::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
                // SAFETY: as above.
                check(unsafe {
                    libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), self.fd(), t.as_ptr(), libc::AT_SYMLINK_FOLLOW)
                })
            }
            other => other,
        }
    }

    /// Every entry but `.` and `..`, in the order the filesystem keeps them.
    pub fn list(&self) -> io::Result<Vec<DirEntry>> {
        // A descriptor of our own: getdents64 moves its offset.
        let fd = Dir::open_raw(self.fd(), OsStr::new("."))?;
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.fd(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(entries);
            }
            let mut at = 0usize;
            while at < n as usize {
                // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name NUL-terminated.
                let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
                let reclen = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().expect("2 bytes")) as usize;
                let d_type = buf[at + 18];
                let name = CStr::from_bytes_until_nul(&buf[at + 19..at + reclen])
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
                    .to_bytes();
                if name != b"." && name != b".." {
                    entries.push(DirEntry { name: name.to_vec(), ino, kind: Kind::from_dirent(d_type) });
                }
                at += reclen;
            }
        }
    }
}

pub fn fstat(fd: RawFd) -> io::Result<Meta> {
    // SAFETY: zeroed `stat` is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(meta_of(&st))
}

/// Start writing a file's dirty pages to the device (no metadata, no cache flush).
pub fn start_write_out(file: &File) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) })
}

/// Write a file's dirty pages to the device and wait for them. Done before a new file
/// gets its name, so that no journal commit can ever carry the name without the data.
pub fn write_out(file: &File) -> io::Result<()> {
    let all = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid descriptor.
    check(unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, all) })
}

/// Whether `dir` can take new leases now: writable, not read-only, space and inodes left.
pub fn writable_with_space(dir: &Path) -> Result<(), String> {
    let c = cstr(dir.as_os_str()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is NUL-terminated; zeroed `statvfs` is a valid out-parameter.
    unsafe {
        if libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) != 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        let mut fs: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut fs) != 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        if fs.f_flag & libc::ST_RDONLY != 0 {
            return Err("read-only file system".into());
        }
        if fs.f_bavail == 0 || fs.f_favail == 0 {
            return Err("no space left on device".into());
        }
    }
    Ok(())
}

/// Microseconds since this boot started, suspend included: the clock that never jumps.
pub fn boottime_us() -> u64 {
    // SAFETY: zeroed `timespec` is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-parameter; CLOCK_BOOTTIME exists since Linux 2.6.39.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
