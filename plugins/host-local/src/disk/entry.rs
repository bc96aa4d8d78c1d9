//! Reading one entry of the store as what it claims to be: a lease, a record, a cursor. Never
//! through a symlink, never blocking on a FIFO, never more than a lease's size: an entry that
//! is not what we (or upstream) write is opaque or ignored, and never fails a call.

use super::*;

/// A lease file name: exactly Go's text form of an address.
pub(super) fn lease_ip(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (go_ip_string(ip) == name).then_some(ip)
}

/// Go's `net.ParseIP` on a `last_reserved_ip` file: no trimming, IPv4-mapped is IPv4.
pub fn parse_last_reserved(bytes: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok().map(canonical)
}

/// What reading one entry found.
pub(super) enum Content {
    Regular(Vec<u8>),
    /// A directory, FIFO, socket or symlink: never read.
    Opaque,
    /// Reading it failed (EIO from a worn card): it may read again later.
    Unreadable,
    Gone,
}

/// Read at most `limit + 1` bytes of the regular file `name`, never through a symlink
/// and never blocking on a FIFO.
pub(super) fn read_entry(dir: &Dir, name: &str, limit: usize) -> Content {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match dir.open_read(name) {
        Ok(file) => read_regular(&file, limit),
        Err(e) if gone(&e) => Content::Gone,
        // What it is decides: a symlink (`O_NOFOLLOW`), a socket or a device (on a `nodev`
        // mount, say) is not ours to read; a regular file that does not open may later.
        Err(_) => match dir.stat(name) {
            Ok(meta) if meta.kind != Kind::File => Content::Opaque,
            Err(e) if gone(&e) => Content::Gone,
            _ => Content::Unreadable,
        },
    }
}

/// At most `limit + 1` bytes of `file` if it is a regular file.
pub(super) fn read_regular(file: &File, limit: usize) -> Content {
    match file.metadata() {
        Ok(meta) if meta.is_file() => match read_sized(file, meta.len(), limit) {
            Ok(bytes) => Content::Regular(bytes),
            Err(_) => Content::Unreadable,
        },
        Ok(_) => Content::Opaque,
        Err(_) => Content::Unreadable,
    }
}

/// The first `limit + 1` bytes of a file that `fstat` said is `size` bytes long: one `read`
/// when it still is, rather than a second one to find the end. A size of 0 is not trusted
/// (the file may have been written since): that file is read to its end.
pub(super) fn read_sized(file: &File, size: u64, limit: usize) -> io::Result<Vec<u8>> {
    let known = usize::try_from(size).ok().filter(|&size| size > 0);
    let want = known.map_or(limit, |size| size.min(limit)) + 1;
    // Read into the spare capacity: zeroing the buffer first took longer than the read of
    // an index of a hundred pods.
    let mut bytes = Vec::with_capacity(want);
    while bytes.len() < want && Some(bytes.len()) != known {
        match rustix::io::read(file, rustix::buffer::spare_capacity(&mut bytes)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bytes)
}

/// What an entry named like an address holds.
pub(super) enum LeaseFile {
    Gone,
    /// Nothing but whitespace or NULs: only a crash leaves that.
    Debris,
    /// It could not be read: opaque for now, but it may read again (see `rescan`).
    Unreadable,
    /// Its content as upstream compares it, or `None` for an opaque entry.
    Lease(Option<String>),
}

/// Read the entry `name` (of kind `kind`, if the listing said) as the lease of `ip`.
/// Anything but a regular file of UTF-8 text of lease size is opaque: it keeps its
/// address out of the pool and matches no container.
pub(super) fn read_lease(dir: &Dir, name: &str, kind: Option<Kind>) -> LeaseFile {
    let opaque = LeaseFile::Lease(None);
    if kind.is_some_and(|k| k != Kind::File) {
        return opaque;
    }
    let bytes = match read_entry(dir, name, MAX_ENTRY_READ) {
        Content::Gone => return LeaseFile::Gone,
        Content::Opaque => return opaque,
        Content::Unreadable => return LeaseFile::Unreadable,
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
pub(super) fn lease_unchanged(dir: &Dir, ip: IpAddr, expected: &Lease) -> bool {
    matches!(read_lease(dir, &go_ip_string(ip), None),
        LeaseFile::Lease(Some(content)) if !expected.opaque && content == expected.content)
}

impl LeaseFile {
    pub(super) fn lease(content: Option<String>, ip: IpAddr) -> Lease {
        Lease { ip, opaque: content.is_none(), content: content.unwrap_or_default(), pod: None }
    }
}
