//! `<ip>.pod` pod records: bytes -> the record parser. A record that parses is written
//! back identically (to_json -> parse), and survives the index (render -> parse).
#![no_main]
use std::collections::BTreeMap;

use cni_fuzz::api;
use host_local::index::{Entry, View};
use host_local::store::Lease;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(record) = api::parse_record(data) else { return };
    let json = api::record_to_json(&record);
    let again = api::parse_record(json.as_bytes());
    assert_eq!(again.as_ref(), Some(&record), "record round trip through {json:?}");

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
