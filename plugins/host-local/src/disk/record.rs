//! Pod records: `<ip>.pod` beside each sticky lease, naming the pod, the boot and the state.
//! JSON, so that its content can never equal a container ID in upstream's directory walks.
//! `since` is the wall clock, for people; `addedAt` and `changedAt` are node time
//! (`crate::clock`), which orders and ages holds.
//!
//! A record is updated in place, so that a pod's new sandbox taking its address back
//! changes no directory and creates no file. The file holds two slots, like LMDB's two
//! meta pages: slot 0 at offset 0 and slot 1 at [`SLOT`]. Each is one line,
//! `<json>\t<FNV-1a 64 of the json, hex>\n`, whose JSON carries a sequence number `seq`;
//! the valid slot with the highest `seq` is the record. An update writes the other slot,
//! so a torn write leaves the previous record whole:
//! - A call that must be durable (ADD) syncs its slot before it goes on, under the lock.
//! - A call that need not be (DEL) marks its slot `"volatile":true` and does not sync it.
//!   The next update writes that same slot again: the other one holds the last record that
//!   was synced, and must stay whole until a synced one replaces it. (So does the undo of a
//!   write whose sync failed: `DiskStore::unsynced_slot`.)
//! - A new file has both slots' pages written ([`new_file`]): an update never extends it.
//!
//! A record is only updated in place while its file's name is known to be durable: it was
//! written by a durable call. A non-durable call that must replace a record whole (by
//! rename) writes the single-line form of earlier versions (plain JSON), which is never
//! updated in place, until a durable call replaces it whole again. Records longer than a
//! slot (very long names) are always replaced whole.

use libcni::json;
use serde::{Deserialize, Serialize};

use crate::index::fnv1a;
use crate::store::{parse_rfc3339, rfc3339, LeaseState, Owner, PodRecord};

pub const SUFFIX: &str = ".pod";

/// The size of a slot: slot 1 starts here, in a page of its own (where pages are 4 KiB), so
/// that writing one slot back never rewrites the other's sectors. A slot's line is shorter:
/// records of Kubernetes pods take 250 to 700 bytes; a longer one is alone in its file.
pub const SLOT: usize = 4096;

/// A record file is read up to this size: two slots, or one long record.
pub const MAX_FILE_SIZE: usize = 3 * SLOT;

/// A new record file: the record in slot 0, and both slots' pages written (spaces, a newline
/// at the end of each), so that an update in place never extends the file: it allocates
/// nothing and can never expose a block's stale content.
pub fn new_file(p: &PodRecord, replaces: Option<&str>) -> String {
    let mut file = slot_line(p, replaces, 1, false);
    if file.len() < SLOT {
        file.reserve(2 * SLOT - file.len());
        for end in [SLOT, 2 * SLOT] {
            file.push_str(&" ".repeat(end - 1 - file.len()));
            file.push('\n');
        }
    }
    file
}

/// A record as earlier versions wrote it, and as a non-durable call writes it whole: plain
/// JSON, one line.
pub fn to_json(p: &PodRecord) -> String {
    to_json_replacing(p, None)
}

/// The single-line form of a record written while its pod's new sandbox takes over the
/// lease: `replaces` is the lease content being replaced (see [`RecordFile::replaces`]).
pub fn to_json_replacing(p: &PodRecord, replaces: Option<&str>) -> String {
    json_of(p, replaces, None) + "\n"
}

/// A slot's line: the record, its sequence number, whether it will be synced, and its checksum.
pub fn slot_line(p: &PodRecord, replaces: Option<&str>, seq: u64, volatile: bool) -> String {
    let json = json_of(p, replaces, Some((seq, volatile)));
    let sum = fnv1a(json.as_bytes());
    format!("{json}\t{sum:016x}\n")
}

fn json_of(p: &PodRecord, replaces: Option<&str>, slot: Option<(u64, bool)>) -> String {
    let record = RecordFile {
        container_id: &p.owner.container_id,
        ifname: &p.owner.ifname,
        namespace: &p.namespace,
        name: &p.name,
        uid: &p.uid,
        boot_id: &p.boot_id,
        state: if p.state == LeaseState::Held { "held" } else { "active" },
        since: rfc3339(p.since),
        added_at: p.added_at,
        changed_at: p.changed_at,
        replaces,
        seq: slot.map(|(seq, _)| seq),
        volatile: slot.is_some_and(|(_, volatile)| volatile),
    };
    json::to_go_compact(&record)
}

/// A record's fields, in the order they are written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordFile<'a> {
    container_id: &'a str,
    ifname: &'a str,
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    boot_id: &'a str,
    state: &'static str,
    since: String,
    added_at: u64,
    changed_at: u64,
    /// Written while the pod's new sandbox takes over the lease: the lease content being
    /// replaced. The record is durable before the lease changes, so after a crash between
    /// the two the old lease is still recognised as the pod's.
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    volatile: bool,
}

/// A record file as read: the record, the lease content it replaces (if written for a
/// take-over), and where an update may go.
#[derive(Debug, PartialEq)]
pub struct Stored {
    pub record: PodRecord,
    pub replaces: Option<String>,
    /// The record's sequence number (0 in the single-line form).
    pub seq: u64,
    /// The slot it was read from (0 in the single-line form).
    pub slot: usize,
    /// The slot the next update in place writes; `None` if the file must be replaced whole.
    pub next_slot: Option<usize>,
}

/// A record file's content; `None` for anything that holds no whole record.
pub fn parse(bytes: &[u8]) -> Option<PodRecord> {
    read(bytes).map(|s| s.record)
}

/// A record, and the lease content it replaces if it was written for a take-over.
pub fn parse_replacing(bytes: &[u8]) -> Option<(PodRecord, Option<String>)> {
    read(bytes).map(|s| (s.record, s.replaces))
}

/// A record file's newest whole record. Compact JSON never holds a raw tab: a file without
/// one is the single-line form.
pub fn read(bytes: &[u8]) -> Option<Stored> {
    if !bytes.contains(&b'\t') {
        let (record, replaces, _) = parse_json(bytes)?;
        return Some(Stored { record, replaces, seq: 0, slot: 0, next_slot: None });
    }
    let first = slot_at(bytes, 0);
    // A whole first line that runs into slot 1 is a long record, alone in its file. A torn
    // one may run into it too (a longer line was being written over a shorter one).
    let long = first.as_ref().is_some_and(|(slot, end)| slot.is_some() && *end >= SLOT);
    let second = if long { None } else { slot_at(bytes, SLOT) };
    let slots = [first.and_then(|(s, _)| s), second.and_then(|(s, _)| s)];
    let newest = match &slots {
        [Some(a), Some(b)] => usize::from(b.seq > a.seq),
        [Some(_), None] => 0,
        [None, Some(_)] => 1,
        [None, None] => return None,
    };
    let Slot { record, replaces, seq, volatile } = slots.into_iter().nth(newest).flatten()?;
    // The other slot, unless the newest was never synced: it must not be the only whole one.
    let next_slot = (!long).then_some(if volatile { newest } else { 1 - newest });
    Some(Stored { record, replaces, seq, slot: newest, next_slot })
}

struct Slot {
    record: PodRecord,
    replaces: Option<String>,
    seq: u64,
    volatile: bool,
}

/// The slot line at `at` if it is whole (checksum and record), and where the line ends
/// (`None` if it does not: no newline).
fn slot_at(bytes: &[u8], at: usize) -> Option<(Option<Slot>, usize)> {
    let rest = bytes.get(at..)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = &rest[..end];
    let tab = line.iter().rposition(|&b| b == b'\t');
    let whole = tab.and_then(|tab| {
        let (json, sum) = (&line[..tab], &line[tab + 1..]);
        (sum == format!("{:016x}", fnv1a(json)).as_bytes()).then_some(json)
    });
    let slot = whole.and_then(parse_json).and_then(|(record, replaces, slot)| {
        let (seq, volatile) = slot?;
        Some(Slot { record, replaces, seq, volatile })
    });
    Some((slot, at + end + 1))
}

/// A slot's `seq` and `volatile`.
type SlotFields = (u64, bool);

/// A record's fields as read: what `RecordFile` writes, and what earlier versions wrote
/// (no `addedAt`, `changedAt` or slot fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordIn {
    container_id: String,
    ifname: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    boot_id: String,
    state: String,
    since: String,
    // Node time (µs, see `crate::clock`); 0 in records written before it was kept.
    #[serde(default)]
    added_at: u64,
    #[serde(default)]
    changed_at: u64,
    replaces: Option<String>,
    seq: Option<u64>,
    #[serde(default)]
    volatile: bool,
}

/// A record's JSON: the record, what it replaces, and its slot fields if it has a `seq`.
/// Typed, not through a `Value`: a take-back reads two slots on the pod-startup path.
fn parse_json(bytes: &[u8]) -> Option<(PodRecord, Option<String>, Option<SlotFields>)> {
    // An object only: a derived `Deserialize` would also take the fields as an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let r: RecordIn = serde_json::from_slice(bytes).ok()?;
    let record = PodRecord {
        owner: Owner::new(&r.container_id, &r.ifname),
        namespace: r.namespace,
        name: r.name,
        uid: r.uid,
        boot_id: r.boot_id,
        state: match r.state.as_str() {
            "held" => LeaseState::Held,
            "active" => LeaseState::Active,
            _ => return None,
        },
        since: parse_rfc3339(&r.since)?,
        added_at: r.added_at,
        changed_at: r.changed_at,
    };
    Some((record, r.replaces, r.seq.map(|seq| (seq, r.volatile))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(container: &str, state: LeaseState) -> PodRecord {
        PodRecord {
            owner: Owner::new(container, "eth0"),
            namespace: "ns".into(),
            name: "web-0".into(),
            uid: "u-1".into(),
            boot_id: "b-1".into(),
            state,
            since: 1_700_000_000,
            added_at: 5,
            changed_at: 7,
        }
    }

    /// A file holding `slots` (a line or nothing each), slot 1 at its offset.
    fn file(slots: [Option<&str>; 2]) -> Vec<u8> {
        let mut bytes = slots[0].unwrap_or("").as_bytes().to_vec();
        if let Some(second) = slots[1] {
            bytes.resize(SLOT, 0);
            bytes.extend_from_slice(second.as_bytes());
        }
        bytes
    }

    #[test]
    fn only_a_json_object_is_a_record() {
        let fields = r#"["c1","eth0","ns","web-0","u-1","b-1","held","2024-01-02T03:04:05Z",5,7,null,null,false]"#;
        assert_eq!(parse(fields.as_bytes()), None, "the fields as an array");
        let line = to_json(&record("c1", LeaseState::Held));
        assert_eq!(parse(format!(" \n{line}").as_bytes()), Some(record("c1", LeaseState::Held)));
    }

    #[test]
    fn the_single_line_form_reads_as_before_and_is_replaced_whole() {
        let r = record("c1", LeaseState::Held);
        let stored = read(to_json_replacing(&r, Some("c0\r\neth0")).as_bytes()).unwrap();
        assert_eq!(stored, Stored { record: r, replaces: Some("c0\r\neth0".into()), seq: 0, slot: 0, next_slot: None });
    }

    #[test]
    fn the_newest_whole_slot_is_the_record_and_the_next_update_goes_to_the_other() {
        let (old, new) = (record("c1", LeaseState::Active), record("c2", LeaseState::Active));
        let (a, b) = (slot_line(&old, None, 4, false), slot_line(&new, Some("c1\r\neth0"), 5, false));
        let stored = read(&file([Some(&a), Some(&b)])).unwrap();
        assert_eq!((stored.record, stored.seq, stored.next_slot), (new.clone(), 5, Some(0)));
        assert_eq!(stored.replaces.as_deref(), Some("c1\r\neth0"));
        let stored = read(&file([Some(&b), Some(&a)])).unwrap();
        assert_eq!((stored.record, stored.next_slot), (new, Some(1)));
        // A new file: slot 0 alone.
        assert_eq!(read(a.as_bytes()).unwrap().next_slot, Some(1));
        let new = new_file(&old, None);
        assert_eq!(new.len(), 2 * SLOT);
        assert_eq!((read(new.as_bytes()).unwrap().record, read(new.as_bytes()).unwrap().next_slot), (old, Some(1)));
    }

    #[test]
    fn a_slot_never_synced_is_written_again_so_the_synced_one_stays_whole() {
        let synced = slot_line(&record("c1", LeaseState::Active), None, 4, false);
        let held = slot_line(&record("c1", LeaseState::Held), None, 5, true);
        let stored = read(&file([Some(&synced), Some(&held)])).unwrap();
        assert_eq!((stored.record.state, stored.next_slot), (LeaseState::Held, Some(1)));
    }

    #[test]
    fn a_torn_or_altered_slot_leaves_the_other() {
        let (old, new) = (record("c1", LeaseState::Active), record("c2", LeaseState::Active));
        let a = slot_line(&old, None, 4, false);
        let b = slot_line(&new, None, 5, false);
        let torn = [&b[..b.len() / 2], &a[b.len() / 2..]].concat();
        let altered = b.replace("c2", "c3");
        for bad in [torn.as_str(), altered.as_str(), "", "\n", "garbage\tffff\n", &b[..b.len() - 1]] {
            let stored = read(&file([Some(&a), Some(bad)])).unwrap_or_else(|| panic!("{bad:?}"));
            assert_eq!((&stored.record, stored.next_slot), (&old, Some(1)), "{bad:?}");
        }
        assert_eq!(read(&file([Some(&altered), Some(&torn)])), None, "no whole slot: no record");
    }

    #[test]
    fn a_longer_slot_0_torn_short_of_its_newline_leaves_slot_1() {
        let (old, new) = (record("c1", LeaseState::Active), record("c2", LeaseState::Held));
        let synced = slot_line(&old, None, 4, false);
        let longer = slot_line(&PodRecord { name: "n".repeat(600), ..new }, None, 5, false);
        let mut bytes = file([Some(&"x".repeat(100)), Some(&synced)]);
        bytes[..400].copy_from_slice(&longer.as_bytes()[..400]);
        let stored = read(&bytes).expect("slot 1 is whole");
        assert_eq!((stored.record, stored.next_slot), (old, Some(0)));
    }

    #[test]
    fn a_long_record_is_alone_in_its_file_and_replaced_whole() {
        let long = PodRecord { name: "n".repeat(SLOT), ..record("c1", LeaseState::Active) };
        let line = slot_line(&long, None, 3, false);
        let stored = read(line.as_bytes()).unwrap();
        assert_eq!((stored.record, stored.next_slot), (long, None));
    }
}
