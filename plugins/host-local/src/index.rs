//! The store's view of its directory, backed by a text index that is read without being
//! materialised: a call looks at the few leases it needs, found by byte comparisons on
//! the index text, and rewriting the index copies unchanged lines as they are.
//!
//! Index format (one file, lines sorted by lease file name):
//!
//! ```text
//! host-local-index v4 <dir mtime s> <dir mtime ns>
//! L <ip> <inode> <content>
//! P <ip> <containerId> <ifname> <namespace> <name> <uid> <bootId> active|held <since> <addedAt> <changedAt>
//! M <ip> <namespace> <name> <since>
//! end <number of bytes before this line> <checksum of those bytes (`word_checksum`), hex>
//! ```
//!
//! The file is rewritten in place (creating a file is the slowest metadata operation a
//! call makes) and never synced: the checksum makes a torn or half-flushed write fail
//! validation, and the caller then reads the directory.
//!
//! Fields are escaped (`%XX`, `~` for empty) so they never contain spaces or newlines. A
//! lease content of `%` marks an entry that is not a regular file (see [`Lease::opaque`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use libcni::ip::go_ip_string;

use crate::store::{Lease, LeaseState, Marker, Owner, PodRecord, Query};

/// A lease with the inode its file had when we last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub lease: Lease,
    pub ino: u64,
}

/// One lease line of the index text, and the pod line after it.
struct Row {
    name: Range<usize>,
    ino: u64,
    content: Range<usize>,
    /// The `L` line, newline included.
    line: Range<usize>,
    pod: Option<PodLine>,
}

/// A row's `P` line: where it is (newline included), and where each of its fields after
/// `P <name>` starts, found once when the index is read: lookups by pod then compare fields.
struct PodLine {
    line: Range<usize>,
    /// Offsets into the index's text, which is at most 256 MiB: as `u32`, half the memory
    /// `usize` would take in every row.
    field_starts: [u32; POD_FIELDS],
}

#[derive(Default)]
pub struct View {
    text: String,
    rows: Vec<Row>,
    /// This call's changes (`None`: removed) or, after a directory scan, everything.
    changed: BTreeMap<String, Option<Entry>>,
    pub markers: Vec<Marker>,
}

impl View {
    /// A view built from a directory scan.
    pub fn from_entries(entries: BTreeMap<String, Entry>, markers: Vec<Marker>) -> View {
        View { changed: entries.into_iter().map(|(k, v)| (k, Some(v))).collect(), markers, ..View::default() }
    }

    /// Index an index file; also returns the directory mtime it was written for.
    /// Anything unexpected rejects the whole file (the caller then scans the directory).
    pub fn parse(bytes: Vec<u8>) -> Option<(View, (i64, i64))> {
        let mut text = String::from_utf8(bytes).ok()?;
        let trailer_start = text.strip_suffix('\n')?.rfind('\n')? + 1;
        // Exactly the trailer `render` writes for what precedes it.
        if text[trailer_start..] != trailer(&text.as_bytes()[..trailer_start]) {
            return None;
        }
        text.truncate(trailer_start);
        let body_start = text.find('\n')? + 1;
        let mut header = text[..body_start - 1].strip_prefix(HEADER)?.strip_prefix(' ')?.split(' ');
        let mtime = (header.next()?.parse().ok()?, header.next()?.parse().ok()?);
        if header.next().is_some() {
            return None;
        }
        let mut rows: Vec<Row> = Vec::new();
        let mut markers = Vec::new();
        let mut pos = body_start;
        while pos < text.len() {
            // Most lines are leases: read in one pass over their bytes.
            if text.as_bytes()[pos..].starts_with(b"L ") {
                let row = lease_row(&text, pos)?;
                // Sorted: lookups are binary searches.
                if rows.last().is_some_and(|r| text[r.name.clone()] >= text[row.name.clone()]) {
                    return None;
                }
                pos = row.line.end;
                rows.push(row);
                continue;
            }
            // Every lease of a pod has a pod line after it: read in one pass too.
            if text.as_bytes()[pos..].starts_with(b"P ") {
                let row = rows.last_mut()?;
                if row.pod.is_some() {
                    return None;
                }
                let pod = pod_line(text.as_bytes(), pos, text[row.name.clone()].as_bytes())?;
                pos = pod.line.end;
                row.pod = Some(pod);
                continue;
            }
            let end = text[pos..].find('\n').map(|i| pos + i + 1)?;
            let line = &text[pos..end - 1];
            let mut fields = line.split(' ');
            match fields.next()? {
                "M" => {
                    let (ip, ns, name, since) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
                    let (namespace, name) = (unescape(ns)?, unescape(name)?);
                    // As `render` writes it, or the line is not ours: `::ffff:10.1.0.6` would be
                    // written back as `10.1.0.6`, another address to `parse`.
                    let parsed = ip.parse().ok()?;
                    if go_ip_string(parsed) != ip {
                        return None;
                    }
                    markers.push(Marker { ip: parsed, namespace, name, since: since.parse().ok()? });
                }
                _ => return None,
            }
            pos = end;
        }
        Some((View { text, rows, changed: BTreeMap::new(), markers }, mtime))
    }

    fn row_name(&self, row: &Row) -> &str {
        &self.text[row.name.clone()]
    }

    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.binary_search_by(|r| self.row_name(r).cmp(name)).ok().map(|i| &self.rows[i])
    }

    /// The first `N` fields of a row's pod line after `P <name>`.
    fn pod_fields<'a, const N: usize>(&'a self, row: &Row) -> Option<[&'a str; N]> {
        const { assert!(N <= POD_FIELDS) };
        let pod = row.pod.as_ref()?;
        let mut fields = [""; N];
        for (i, field) in fields.iter_mut().enumerate() {
            // Each field ends one byte before the next one starts; the last, before the newline.
            let next = pod.field_starts.get(i + 1).map_or(pod.line.end, |&start| start as usize);
            *field = self.text.get(pod.field_starts[i] as usize..next - 1)?;
        }
        Some(fields)
    }

    fn materialise(&self, row: &Row) -> Option<Entry> {
        let pod = match self.pod_fields::<POD_FIELDS>(row) {
            None => None,
            Some(f) => Some(PodRecord {
                owner: Owner::new(&unescape(f[0])?, &unescape(f[1])?),
                namespace: unescape(f[2])?,
                name: unescape(f[3])?,
                uid: unescape(f[4])?,
                boot_id: unescape(f[5])?,
                state: if f[6] == "held" { LeaseState::Held } else { LeaseState::Active },
                since: f[7].parse().ok()?,
                added_at: f[8].parse().ok()?,
                changed_at: f[9].parse().ok()?,
            }),
        };
        let ip = self.row_name(row).parse().ok()?;
        let lease = match &self.text[row.content.clone()] {
            OPAQUE => Lease { ip, content: String::new(), pod: None, opaque: true },
            content => Lease { ip, content: unescape(content)?, pod, opaque: false },
        };
        Some(Entry { lease, ino: row.ino })
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        match self.changed.get(name) {
            Some(entry) => entry.clone(),
            None => self.row(name).and_then(|r| self.materialise(r)),
        }
    }

    pub fn get_ip(&self, ip: IpAddr) -> Option<Entry> {
        self.get(&go_ip_string(ip))
    }

    pub fn contains(&self, name: &str) -> bool {
        match self.changed.get(name) {
            Some(entry) => entry.is_some(),
            None => self.row(name).is_some(),
        }
    }

    pub fn set(&mut self, entry: Entry) {
        self.changed.insert(go_ip_string(entry.lease.ip), Some(entry));
    }

    pub fn remove(&mut self, ip: IpAddr) {
        self.changed.insert(go_ip_string(ip), None);
    }

    /// Whether a row could match `query`, judged on its raw text; `needles` are the
    /// query's escaped values.
    fn row_may_match(&self, row: &Row, query: &Query, needles: &[String]) -> bool {
        match query {
            Query::All => true,
            Query::Owner(_) => needles.iter().any(|n| self.text[row.content.clone()] == **n),
            Query::Held => self.pod_fields::<7>(row).is_some_and(|f| f[6] == "held"),
            Query::Reclaimable { .. } => {
                self.pod_fields::<7>(row).is_some_and(|f| f[6] == "held" || f[5] != needles[0])
            }
            Query::Pod { namespace, uid, .. } => self.pod_fields::<5>(row).is_some_and(|f| {
                (!namespace.is_empty() && f[2] == needles[0] && f[3] == needles[1])
                    || (!uid.is_empty() && f[4] == needles[2])
            }),
        }
    }

    /// Leases matching `query`, in file-name order.
    pub fn find(&self, query: Query) -> Vec<Lease> {
        let needles: Vec<String> = match query {
            Query::Owner(owner) => vec![escape(owner.content()), escape(&owner.container_id)],
            Query::Pod { namespace, name, uid } => vec![escape(namespace), escape(name), escape(uid)],
            Query::Reclaimable { boot_id } => vec![escape(boot_id)],
            Query::Held | Query::All => Vec::new(),
        };
        let from_rows = self
            .rows
            .iter()
            .filter(|r| !self.changed.contains_key(self.row_name(r)) && self.row_may_match(r, &query, &needles))
            .filter_map(|r| self.materialise(r));
        let from_changes = self.changed.values().flatten().cloned();
        let mut found: Vec<Lease> =
            from_rows.chain(from_changes).map(|e| e.lease).filter(|l| query.matches(l)).collect();
        found.sort_by_key(|l| go_ip_string(l.ip));
        found
    }

    /// Number of leases (upper bound while changes are pending).
    pub fn len(&self) -> usize {
        self.rows.len() + self.changed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names of the entries the directory must list for this view to be true: leases
    /// (with their inodes), pod records and markers, sorted.
    pub fn expected_entries(&self) -> Vec<(String, Option<u64>)> {
        let mut all: Vec<(String, Option<u64>)> = Vec::with_capacity(self.len() + self.markers.len());
        let mut push = |name: &str, ino: u64, has_pod: bool| {
            all.push((name.to_string(), Some(ino)));
            if has_pod {
                all.push((format!("{name}{}", crate::disk::record::SUFFIX), None));
            }
        };
        for row in self.rows.iter().filter(|r| !self.changed.contains_key(self.row_name(r))) {
            push(self.row_name(row), row.ino, row.pod.is_some());
        }
        for (name, entry) in self.changed.iter() {
            if let Some(e) = entry {
                push(name, e.ino, e.lease.pod.is_some());
            }
        }
        all.extend(self.markers.iter().map(|m| (m.file_name(), None)));
        all.sort_unstable();
        all
    }

    /// The index file for this view, written for the directory mtime `mtime`.
    pub fn render(&self, mtime: (i64, i64)) -> String {
        let mut out = String::with_capacity(self.text.len() + self.changed.len() * 96 + 64);
        out.push_str(&format!("{HEADER} {} {}\n", mtime.0, mtime.1));
        let mut changes = self.changed.iter().peekable();
        for row in &self.rows {
            let name = self.row_name(row);
            let mut changed = false;
            while let Some((changed_name, entry)) = changes.next_if(|(n, _)| n.as_str() <= name) {
                changed |= changed_name == name;
                if let Some(entry) = entry {
                    render_entry(&mut out, changed_name, entry);
                }
            }
            if !changed {
                out.push_str(&self.text[row.line.clone()]);
                if let Some(pod) = &row.pod {
                    out.push_str(&self.text[pod.line.clone()]);
                }
            }
        }
        for (name, entry) in changes {
            if let Some(entry) = entry {
                render_entry(&mut out, name, entry);
            }
        }
        for m in &self.markers {
            out.push_str("M ");
            out.push_str(&go_ip_string(m.ip));
            out.push(' ');
            escape_into(&mut out, &m.namespace);
            out.push(' ');
            escape_into(&mut out, &m.name);
            out.push(' ');
            out.push_str(&m.since.to_string());
            out.push('\n');
        }
        let trailer = trailer(out.as_bytes());
        out + &trailer
    }
}

/// The index's first line starts with this.
pub const HEADER: &str = "host-local-index v4";

/// The index's last line, `end <length> <checksum>`, for the `body` before it (public for
/// the fuzz targets, which get fuzzed lines past it).
pub fn trailer(body: &[u8]) -> String {
    format!("end {} {:016x}\n", body.len(), word_checksum(body))
}

const OPAQUE: &str = "%";

/// Fields after `P <name>` on a pod line.
const POD_FIELDS: usize = 10;

/// `text` with a trailer line `end <FNV-1a 64 of text>`: the small files of `.hostlocal/`
/// (clock, counters) are rewritten without a sync, and a torn one must never pass for whole.
pub fn seal(text: String) -> String {
    let sum = fnv1a(text.as_bytes());
    text + &format!("end {sum:016x}\n")
}

/// The text [`seal`] sealed, if `bytes` are whole; `None` for a torn or altered file.
pub fn unseal(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let sum = text[body_end..].strip_prefix("end ")?.strip_suffix('\n')?;
    (sum == format!("{:016x}", fnv1a(&bytes[..body_end]))).then(|| &text[..body_end])
}

/// The lease line at `pos` of `text`, `L <name> <inode> <content>\n`, in one pass: an index
/// holds one per lease, and every call reads them all. (Not the memchr crate: its first
/// search detects the CPU's features, a dozen `cpuid`s, each a trap in a VM: more than a
/// whole index takes to read.)
fn lease_row(text: &str, pos: usize) -> Option<Row> {
    let bytes = text.as_bytes();
    let name = pos + 2..field_end(bytes, pos + 2)?;
    let ino_field = name.end + 1..field_end(bytes, name.end + 1)?;
    let content = ino_field.end + 1..field_end(bytes, ino_field.end + 1)?;
    if bytes[name.end] != b' ' || bytes[ino_field.end] != b' ' || bytes[content.end] != b'\n' || ino_field.is_empty() {
        return None;
    }
    let ino = bytes[ino_field].iter().try_fold(0u64, |ino, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        ino.checked_mul(10)?.checked_add(u64::from(digit))
    })?;
    Some(Row { name, ino, line: pos..content.end + 1, content, pod: None })
}

/// The pod line at `pos` for the lease `name`: `P <name>` and exactly [`POD_FIELDS`] more
/// fields, found eight bytes at a time.
fn pod_line(bytes: &[u8], pos: usize, name: &[u8]) -> Option<PodLine> {
    let name_end = field_end(bytes, pos + 2)?;
    if bytes[pos + 2..name_end] != *name || bytes[name_end] != b' ' {
        return None;
    }
    let mut field_starts = [0; POD_FIELDS];
    let mut at = name_end + 1;
    for (i, start) in field_starts.iter_mut().enumerate() {
        *start = u32::try_from(at).ok()?;
        let end = field_end(bytes, at)?;
        if bytes[end] != if i + 1 == POD_FIELDS { b'\n' } else { b' ' } {
            return None;
        }
        at = end + 1;
    }
    Some(PodLine { line: pos..at, field_starts })
}

/// Where the field starting at `from` ends: the next space or newline. Eight bytes at a time
/// (a byte equal to `b` is a zero byte of `word ^ b * ONES`; the lowest flagged one is exact).
fn field_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?);
        let hits = zero_bytes(word ^ (ONES * u64::from(b' '))) | zero_bytes(word ^ (ONES * u64::from(b'\n')));
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    Some(at + bytes.get(at..)?.iter().position(|&b| b == b' ' || b == b'\n')?)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits: enough to tell a torn write from a whole one (the clock, counters and
/// pod record slots).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// The index's checksum: FNV-1a's step over 8-byte little-endian words, each product's
/// high half folded back into its low half, then the last bytes one at a time. A byte-wise
/// hash waits for one multiply per byte, which at 10,000 leases was a tenth of a call.
fn word_checksum(bytes: &[u8]) -> u64 {
    let step = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(FNV_PRIME);
        h ^ (h >> 32)
    };
    let mut words = bytes.chunks_exact(8);
    let h = words.by_ref().fold(FNV_OFFSET, |h, w| step(h, u64::from_le_bytes(w.try_into().expect("8 bytes"))));
    words.remainder().iter().fold(h, |h, &b| step(h, u64::from(b)))
}

fn render_entry(out: &mut String, name: &str, e: &Entry) {
    out.push_str("L ");
    out.push_str(name);
    out.push(' ');
    out.push_str(&e.ino.to_string());
    out.push(' ');
    if e.lease.opaque {
        out.push_str(OPAQUE);
    } else {
        escape_into(out, &e.lease.content);
    }
    out.push('\n');
    if let Some(p) = &e.lease.pod {
        out.push_str("P ");
        out.push_str(name);
        for field in [&p.owner.container_id, &p.owner.ifname, &p.namespace, &p.name, &p.uid, &p.boot_id] {
            out.push(' ');
            escape_into(out, field);
        }
        out.push_str(if p.state == LeaseState::Held { " held" } else { " active" });
        for number in [p.since, p.added_at, p.changed_at] {
            out.push(' ');
            out.push_str(&number.to_string());
        }
        out.push('\n');
    }
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

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, content: &str, pod: Option<(&str, LeaseState)>) -> Entry {
        let lease = Lease {
            ip: ip.parse().unwrap(),
            content: content.into(),
            pod: pod.map(|(name, state)| PodRecord {
                owner: Owner::new(content.split("\r\n").next().unwrap(), "eth0"),
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid {name}"),
                boot_id: "b".into(),
                state,
                since: 7,
                added_at: 8,
                changed_at: 9,
            }),
            opaque: false,
        };
        Entry { lease, ino: 42 }
    }

    const MTIME: (i64, i64) = (1, 2);

    fn sample() -> View {
        let entries: BTreeMap<String, Entry> = [
            entry("10.0.0.2", "c1\r\neth0", None),
            entry("10.0.0.3", "c2\r\neth0", Some(("web-0", LeaseState::Held))),
            entry("10.0.0.4", "c3", None),
            entry("2001:db8::2", "c1\r\neth0", Some(("web-1", LeaseState::Active))),
        ]
        .into_iter()
        .map(|e| (go_ip_string(e.lease.ip), e))
        .collect();
        let markers = vec![Marker {
            ip: "10.0.0.9".parse().unwrap(),
            namespace: "kube-system".into(),
            name: "dns".into(),
            since: 3,
        }];
        View::from_entries(entries, markers)
    }

    fn ips(leases: Vec<Lease>) -> Vec<String> {
        leases.iter().map(|l| l.ip.to_string()).collect()
    }

    #[test]
    fn render_and_parse_round_trip_and_answer_queries_alike() {
        let fresh = sample();
        let text = fresh.render(MTIME);
        let (parsed, mtime) = View::parse(text.clone().into_bytes()).unwrap();
        assert_eq!(mtime, MTIME);
        assert_eq!(parsed.render(MTIME), text, "unchanged lines are copied verbatim");
        let c1 = Owner::new("c1", "eth0");
        let c3 = Owner::new("c3", "eth0");
        for view in [&fresh, &parsed] {
            assert_eq!(ips(view.find(Query::Owner(&c1))), ["10.0.0.2", "2001:db8::2"]);
            assert_eq!(ips(view.find(Query::Owner(&c3))), ["10.0.0.4"], "old-format content");
            assert_eq!(ips(view.find(Query::Held)), ["10.0.0.3"]);
            assert_eq!(ips(view.find(Query::Pod { namespace: "default", name: "web-1", uid: "" })), ["2001:db8::2"]);
            assert_eq!(ips(view.find(Query::Pod { namespace: "", name: "", uid: "uid web-0" })), ["10.0.0.3"]);
            assert_eq!(view.find(Query::All).len(), 4);
            assert_eq!(view.get("10.0.0.3"), sample().get("10.0.0.3"));
            assert_eq!(view.markers, sample().markers);
        }
    }

    #[test]
    fn pod_fields_are_the_plain_split_of_the_pod_line() {
        let (view, _) = View::parse(sample().render(MTIME).into_bytes()).unwrap();
        let mut pods = 0;
        for row in view.rows.iter().filter(|r| r.pod.is_some()) {
            let line = view.text[row.pod.as_ref().unwrap().line.clone()].trim_end_matches('\n');
            let plain: Vec<&str> = line.split(' ').skip(2).collect();
            assert_eq!(view.pod_fields::<POD_FIELDS>(row).unwrap().to_vec(), plain, "{line:?}");
            assert_eq!(view.pod_fields::<5>(row).unwrap().to_vec(), plain[..5], "{line:?}");
            pods += 1;
        }
        assert_eq!(pods, 2);
    }

    #[test]
    fn changes_shadow_rows_and_render_in_order() {
        let mut view = View::parse(sample().render(MTIME).into_bytes()).unwrap().0;
        view.remove("10.0.0.2".parse().unwrap());
        view.set(entry("10.0.0.10", "c9\r\neth0", None));
        view.set(entry("10.0.0.3", "c9\r\neth0", None));
        assert!(!view.contains("10.0.0.2") && view.contains("10.0.0.10"));
        assert_eq!(ips(view.find(Query::Owner(&Owner::new("c9", "eth0")))), ["10.0.0.10", "10.0.0.3"]);
        assert!(view.find(Query::Held).is_empty(), "the held row was replaced");
        let reparsed = View::parse(view.render(MTIME).into_bytes()).unwrap().0;
        assert_eq!(ips(reparsed.find(Query::All)), ["10.0.0.10", "10.0.0.3", "10.0.0.4", "2001:db8::2"]);
        assert_eq!(reparsed.expected_entries().len(), 4 + 1 + 1, "leases, the pod record left, the marker");
    }

    #[test]
    fn the_checksum_is_the_one_the_fuzz_corpus_is_made_with() {
        // fuzz/make_corpus.py's `word_checksum` on the same text.
        let text = "host-local-index v4 1 2\nL 10.0.0.2 7 c1%0D%0Aeth0\n";
        assert_eq!(trailer(text.as_bytes()), "end 50 f5acbe333ad068e0\n");
    }

    #[test]
    fn the_checksum_sees_any_one_byte_changed_anywhere() {
        let text: Vec<u8> = (0..203u32).map(|i| (i * 7 % 251) as u8).collect();
        let sum = word_checksum(&text);
        for at in 0..text.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut changed = text.clone();
                changed[at] ^= flip;
                assert_ne!(word_checksum(&changed), sum, "byte {at} ^ {flip:#x}");
            }
        }
        assert_ne!(word_checksum(&text[..200]), word_checksum(&text[..201]), "a shorter text");
    }

    /// An index with a valid trailer for whatever body it is given.
    fn sealed(body: &str) -> Vec<u8> {
        (body.to_string() + &trailer(body.as_bytes())).into_bytes()
    }

    #[test]
    fn malformed_indexes_are_rejected() {
        let good = sample().render(MTIME);
        assert!(View::parse(good.clone().into_bytes()).is_some());
        let (head, _) = good.split_once("end ").unwrap();
        let body = |lines: &str| sealed(&format!("{HEADER} 1 2\n{lines}"));
        assert!(View::parse(body("L 10.0.0.2 1 a\nL 10.0.0.3 22 b\n")).is_some(), "the well-formed base");
        assert!(View::parse(body("M 10.0.0.6 ns n 9\n")).is_some(), "a well-formed marker");
        for bad in [
            body("X 1\n"),
            body("L 10.0.0.2 1\n"),
            body("L 10.0.0.2 1 a b\n"),
            body("L 10.0.0.2  a\n"),
            body("L 10.0.0.2 x1 a\n"),
            body("L 10.0.0.2 +1 a\n"),
            body("L 10.0.0.2 18446744073709551616 a\n"),
            body("L 10.0.0.2\n1 a\n"),
            body("L 10.0.0.3 1 a\nL 10.0.0.2 1 b\n"),
            body("L 10.0.0.2 1 a\nL 10.0.0.2 1 b\n"),
            body("P 10.0.0.2 a b c d e f active 1\n"),
            body("M ::ffff:10.0.0.6 ns n 9\n"),
            body("M 10.0.0.06 ns n 9\n"),
            sealed(&format!("{HEADER} 1 2 2\n")),
            sealed(&format!("{HEADER} 1\n")),
            sealed("host-local-index v3 1 2\n"),
            good.as_bytes()[..good.len() - 1].to_vec(),
            good.as_bytes()[..good.len() - 20].to_vec(),
            good.replace("end ", "end 1").into_bytes(),
            format!("{head}end {}\n", head.len()).into_bytes(),
            format!("{head}end {} 0\n", head.len()).into_bytes(),
            vec![0xff, 0xfe, b'\n'],
        ] {
            assert!(View::parse(bad.clone()).is_none(), "{:?}", String::from_utf8_lossy(&bad));
        }
    }

    /// `lease_row` against the plain reading of `L <name> <inode> <content>`: the same rows,
    /// the same rejections, on lines made of the bytes that matter (and a multibyte one).
    #[test]
    fn lease_lines_read_as_their_plain_split_says() {
        fn plain(line: &str) -> Option<(&str, u64, &str)> {
            let (name, rest) = line.strip_prefix("L ")?.split_once(' ')?;
            let (ino, content) = rest.split_once(' ')?;
            let digits = !ino.is_empty() && ino.bytes().all(|b| b.is_ascii_digit());
            (digits && !content.contains(' ')).then_some((name, ino.parse().ok()?, content))
        }
        let alphabet = ["L", " ", "1", "9", "0", "a", "\n", "é", "10.0.0.2", "%0D", "99999999999"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            let mut line = String::from(if seed.is_multiple_of(8) { "L" } else { "L " });
            for _ in 0..(seed >> 60) + 1 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                line.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let Some(first) = line.split('\n').next().filter(|l| l.starts_with("L ")) else { continue };
            let text = format!("{line}\n");
            let row = lease_row(&text, 0)
                .map(|r| (&text[r.name.clone()], r.ino, &text[r.content.clone()], r.line.end == first.len() + 1));
            let expected = plain(first).map(|(name, ino, content)| (name, ino, content, true));
            assert_eq!(row, expected, "{line:?}");
        }
    }

    /// `pod_line` against the plain reading: `P <name>` and exactly ten more fields.
    #[test]
    fn pod_lines_read_as_their_plain_split_says() {
        fn plain(line: &str, name: &str) -> bool {
            let mut fields = line.split(' ');
            fields.next() == Some("P") && fields.next() == Some(name) && fields.count() == POD_FIELDS
        }
        let alphabet = [" ", "a", "10.0.0.2", "\n", "é", "%20", "held", "  "];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut line = String::from("P 10.0.0.2");
            for _ in 0..(seed >> 59) + 8 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                line.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let Some(first) = line.split('\n').next() else { continue };
            let text = format!("{line}\n");
            let expected = plain(first, "10.0.0.2").then(|| (first.len() + 1, first.split(' ').skip(2).collect()));
            let read = pod_line(text.as_bytes(), 0, b"10.0.0.2").map(|p| {
                let ends = p.field_starts.iter().skip(1).map(|&s| s as usize).chain([p.line.end]);
                let fields: Vec<&str> =
                    p.field_starts.iter().zip(ends).map(|(&s, e)| &text[s as usize..e - 1]).collect();
                (p.line.end, fields)
            });
            assert_eq!(read, expected, "{line:?}");
            accepted += usize::from(expected.is_some());
        }
        assert!(accepted > 1000, "the lines must include valid ones: {accepted}");
    }

    #[test]
    fn a_torn_rewrite_never_validates() {
        // Upstream's new head over our old tail, as a crash mid-rewrite leaves it: the old
        // trailer survives, its checksum does not.
        let old = sample().render(MTIME);
        let mut view = View::parse(old.clone().into_bytes()).unwrap().0;
        view.remove("10.0.0.2".parse().unwrap());
        view.set(entry("10.0.0.7", "c7\r\neth0", None));
        let new = view.render((1, 3));
        for cut in 1..new.len().min(old.len()) {
            let torn = format!("{}{}", &new[..cut], &old[cut..]);
            if torn != old && torn != new {
                assert!(View::parse(torn.clone().into_bytes()).is_none(), "cut at {cut}: {torn:?}");
            }
        }
        for i in 0..old.len() {
            let mut flipped = old.clone().into_bytes();
            flipped[i] ^= 0x20;
            assert!(View::parse(flipped).is_none(), "a flipped byte at {i}");
        }
    }

    #[test]
    fn entries_that_are_not_files_round_trip_as_opaque() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let opaque = Entry { lease: Lease { ip, content: String::new(), pod: None, opaque: true }, ino: 9 };
        let empty = Entry { lease: Lease { ip, content: String::new(), pod: None, opaque: false }, ino: 9 };
        for e in [opaque, empty] {
            let view = View::from_entries([("10.0.0.5".to_string(), e.clone())].into(), Vec::new());
            let parsed = View::parse(view.render(MTIME).into_bytes()).unwrap().0;
            assert_eq!(parsed.get("10.0.0.5"), Some(e));
        }
    }

    #[test]
    fn escaping_round_trips() {
        for s in ["", "a b", "c1\r\neth0", "%~x", "ünï"] {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
            assert!(!escape(s).contains(' ') && !escape(s).contains('\n'));
        }
    }
}
