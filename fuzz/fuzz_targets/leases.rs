//! The lease index, pod records, last-reserved cursors and OpenYurt marker names
//! (tests/fuzz.rs `fuzz_lease_index_and_records`).
#![no_main]
use cni_fuzz::api;
use host_local::store::{Marker, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Some((view, mtime)) = api::parse_index(data) {
        let rendered = view.render(mtime);
        let (again, _) = api::parse_index(rendered.as_bytes()).expect("a rendered index parses");
        assert_eq!(again.render(mtime), rendered);
        let _ = view.find(Query::Held);
    }
    let _ = api::parse_record(data);
    let _ = api::parse_last_reserved(data);
    let _ = Marker::parse_name(&text);
});
