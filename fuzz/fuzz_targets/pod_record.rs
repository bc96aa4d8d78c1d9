//! `<ip>.pod` pod records: bytes -> the record parser. A record that parses is written
//! back identically (to_json -> parse), and survives the index (render -> parse). An update
//! written into the slot the file names for it is the record then. Torn at any byte (the
//! fuzzer picks where), it never leaves the file without a record, nor with one older than
//! the record before it, unless that one was never synced (then the update overwrites it).
//! (Not always the record before itself: the update's first bytes may complete what is left
//! of an older line in that slot, a record the slot did hold whole once.)
#![no_main]
use std::collections::BTreeMap;

use cni_fuzz::api;
use host_local::disk::record::{slot_line, SLOT};
use host_local::index::{Entry, View};
use host_local::store::{Lease, LeaseState, PodRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(stored) = api::read_record(data) else { return };
    let record = stored.record.clone();
    let json = api::record_to_json(&record);
    let again = api::parse_record(json.as_bytes());
    assert_eq!(again.as_ref(), Some(&record), "record round trip through {json:?}");

    if let Some(slot) = stored.next_slot {
        let state = if record.state == LeaseState::Held { LeaseState::Active } else { LeaseState::Held };
        let update = PodRecord { state, changed_at: record.changed_at.wrapping_add(1), ..record.clone() };
        let line = slot_line(&update, stored.replaces.as_deref(), stored.seq + 1, false);
        if line.len() <= SLOT {
            let written = |len: usize| {
                let mut bytes = data.to_vec();
                let at = slot * SLOT;
                bytes.resize(bytes.len().max(at + len), 0);
                bytes[at..at + len].copy_from_slice(&line.as_bytes()[..len]);
                bytes
            };
            let whole = api::read_record(&written(line.len())).map(|s| s.record);
            assert_eq!(whole.as_ref(), Some(&update), "the update is the record");
            let cut = data.first().map_or(0, |b| *b as usize * line.len() / 256);
            if slot != stored.slot {
                let torn = api::read_record(&written(cut));
                let seq = torn.as_ref().map(|t| t.seq);
                assert!(seq >= Some(stored.seq), "torn at {cut} of {}: {torn:?}, not the record before", line.len());
            }
        }
    }

    // The index keeps the record's fields (escaped) next to its lease.
    let ip = "10.1.0.2".parse().unwrap();
    let lease = Lease { ip, content: record.owner.content().to_string(), pod: Some(record), opaque: false };
    let entry = Entry { lease, ino: 7 };
    let view = View::from_entries(BTreeMap::from([("10.1.0.2".to_string(), entry.clone())]), Vec::new());
    let text = view.render((1, 2));
    let (parsed, mtime) = api::parse_index(text.as_bytes()).expect("a rendered index parses");
    assert_eq!(mtime, (1, 2));
    assert_eq!(parsed.get("10.1.0.2"), Some(entry), "index round trip through {text:?}");
});
