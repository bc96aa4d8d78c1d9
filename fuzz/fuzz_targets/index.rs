//! The lease index (`.hostlocal/index`): bytes -> `View::parse`, twice: as they are (the
//! trailer and checksum check), and with a correct trailer appended (so the fuzzer gets
//! past the checksum to the line parser). What validates answers the same after
//! render -> parse; re-rendering from the answers alone gives the same answers; no
//! truncation or torn rewrite of a valid index validates.
#![no_main]
use std::collections::BTreeMap;

use cni_fuzz::api;
use host_local::index::{Entry, View};
use host_local::store::Query;
use libfuzzer_sys::fuzz_target;

fn answers(view: &View) -> (Vec<host_local::store::Lease>, Vec<(String, Option<Entry>)>, Vec<(String, Option<u64>)>) {
    let all = view.find(Query::All);
    let names: Vec<(String, Option<Entry>)> = view
        .expected_entries()
        .into_iter()
        .filter(|(_, ino)| ino.is_some())
        .map(|(n, _)| (n.clone(), view.get(&n)))
        .collect();
    (all, names, view.expected_entries())
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&cni_fuzz::with_trailer(data));
});

fn check(data: &[u8]) {
    let Some((view, mtime)) = api::parse_index(data) else { return };
    let _ = (view.find(Query::Held), view.len());

    // parse -> render -> parse: the same answers, and rendering is then stable.
    let rendered = view.render(mtime);
    let (again, mtime2) = api::parse_index(rendered.as_bytes()).expect("a rendered index parses");
    assert_eq!(mtime2, mtime);
    assert_eq!(again.markers, view.markers);
    let first = answers(&view);
    assert_eq!(answers(&again), first, "answers changed through render -> parse of {rendered:?}");
    assert_eq!(again.render(mtime), rendered, "render is not stable");

    // Rebuilt from the leases alone (escaping every field anew): the same leases.
    let entries: BTreeMap<String, Entry> = first.1.iter().filter_map(|(n, e)| Some((n.clone(), e.clone()?))).collect();
    let rebuilt = View::from_entries(entries.clone(), view.markers.clone());
    let text = rebuilt.render(mtime);
    let (reparsed, _) = api::parse_index(text.as_bytes()).expect("a rendered index parses");
    for (name, entry) in &entries {
        assert_eq!(reparsed.get(name).as_ref(), Some(entry), "{name} changed through escaping in {text:?}");
    }

    // Torn writes: the index is rewritten in place (write, then cut to length). Neither a
    // cut-short new index nor new bytes over an older, different one may validate.
    let new = rendered.as_bytes();
    let old_view = {
        let mut v = View::from_entries(entries, view.markers.clone());
        if let Some(first) = first.0.first() {
            v.remove(first.ip);
        }
        v
    };
    let old = old_view.render((mtime.0.wrapping_add(1), mtime.1));
    let old = old.as_bytes();
    let step = (new.len() / 16).max(1);
    for cut in (1..new.len()).step_by(step) {
        assert!(
            api::parse_index(&new[..cut]).is_none(),
            "a truncated index validates: {:?}",
            String::from_utf8_lossy(&new[..cut])
        );
        if cut < old.len() {
            let mut torn = new[..cut].to_vec();
            torn.extend_from_slice(&old[cut..]);
            if torn != old && torn != new {
                assert!(
                    api::parse_index(&torn).is_none(),
                    "a torn index validates: {:?}",
                    String::from_utf8_lossy(&torn)
                );
            }
        }
    }
    // The new index fully written over a longer old one, before the cut to length.
    if old.len() > new.len() {
        let mut torn = new.to_vec();
        torn.extend_from_slice(&old[new.len()..]);
        assert!(api::parse_index(&torn).is_none(), "an uncut index validates: {:?}", String::from_utf8_lossy(&torn));
    }
}
