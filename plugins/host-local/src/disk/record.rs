//! Pod records: `<ip>.pod` beside each sticky lease, a small JSON object naming the pod,
//! the boot and the state. JSON, so that its content can never equal a container ID in
//! upstream's directory walks. `since` is the wall clock, for people; `addedAt` and
//! `changedAt` are node time (`crate::clock`), which orders and ages holds.

use libcni::json;
use serde_json::{Map, Value};

use crate::store::{parse_rfc3339, rfc3339, LeaseState, Owner, PodRecord};

pub const SUFFIX: &str = ".pod";

pub fn to_json(p: &PodRecord) -> String {
    to_json_replacing(p, None)
}

/// A record written while its pod's new sandbox takes over the lease: `replaces` is the
/// lease content being replaced. The record is renamed into place before the lease is, so
/// after a crash between the two the old lease is still recognised as the pod's.
pub fn to_json_replacing(p: &PodRecord, replaces: Option<&str>) -> String {
    let mut m = Map::new();
    m.insert("containerId".into(), p.owner.container_id.clone().into());
    m.insert("ifname".into(), p.owner.ifname.clone().into());
    m.insert("namespace".into(), p.namespace.clone().into());
    m.insert("name".into(), p.name.clone().into());
    m.insert("uid".into(), p.uid.clone().into());
    m.insert("bootId".into(), p.boot_id.clone().into());
    m.insert("state".into(), (if p.state == LeaseState::Held { "held" } else { "active" }).into());
    m.insert("since".into(), rfc3339(p.since).into());
    m.insert("addedAt".into(), p.added_at.into());
    m.insert("changedAt".into(), p.changed_at.into());
    if let Some(replaces) = replaces {
        m.insert("replaces".into(), replaces.into());
    }
    json::to_go_compact(&Value::Object(m)) + "\n"
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
