//! Pod records: `<ip>.pod` beside each sticky lease, a small JSON object naming the pod,
//! the boot and the state. JSON, so that its content can never equal a container ID in
//! upstream's directory walks. `since` is the wall clock, for people; `addedAt` and
//! `changedAt` are node time (`crate::clock`), which orders and ages holds.

use libcni::json;
use serde::Serialize;
use serde_json::Value;

use crate::store::{parse_rfc3339, rfc3339, LeaseState, Owner, PodRecord};

pub const SUFFIX: &str = ".pod";

pub fn to_json(p: &PodRecord) -> String {
    to_json_replacing(p, None)
}

/// A record written while its pod's new sandbox takes over the lease: `replaces` is the
/// lease content being replaced. The record is renamed into place before the lease is, so
/// after a crash between the two the old lease is still recognised as the pod's.
pub fn to_json_replacing(p: &PodRecord, replaces: Option<&str>) -> String {
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
    };
    json::to_go_compact(&record) + "\n"
}

/// A record file's fields, in the order they are written.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<&'a str>,
}

/// A record file's content; `None` for anything that is not a complete record.
pub fn parse(bytes: &[u8]) -> Option<PodRecord> {
    parse_replacing(bytes).map(|(record, _)| record)
}

/// A record, and the lease content it replaces if it was written for a take-over.
pub fn parse_replacing(bytes: &[u8]) -> Option<(PodRecord, Option<String>)> {
    let v = json::parse(bytes).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let number = |k: &str| match v.get(k) {
        None => Some(0),
        Some(n) => n.as_u64(),
    };
    let record = PodRecord {
        owner: Owner::new(&field("containerId")?, &field("ifname")?),
        namespace: field("namespace").unwrap_or_default(),
        name: field("name").unwrap_or_default(),
        uid: field("uid").unwrap_or_default(),
        boot_id: field("bootId").unwrap_or_default(),
        state: match field("state")?.as_str() {
            "held" => LeaseState::Held,
            "active" => LeaseState::Active,
            _ => return None,
        },
        since: parse_rfc3339(&field("since")?)?,
        // Node time (µs, see `crate::clock`); 0 in records written before it was kept.
        added_at: number("addedAt")?,
        changed_at: number("changedAt")?,
    };
    Some((record, field("replaces")))
}
