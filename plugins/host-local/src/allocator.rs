//! Address allocation for one range set: upstream's round robin, plus sticky pod IPs.
//!
//! Pure logic over [`Store`]; the disk details live in `disk.rs`. Without pod identity
//! (or with stickiness off) every decision is upstream's, in upstream's order.

use std::net::IpAddr;

use libcni::args::CniArgs;
use libcni::ip::{canonical, go_ip_string, ip_to_u128, next_ip};
use libcni::{Code, Error, Result};

use crate::clock::NodeClock;
use crate::config::{Sticky, StickyKey};
use crate::range::{describe, range_for, Range};
use crate::store::{Lease, LeaseState, Marker, Owner, PodRecord, Query, Store};

/// Upstream's `RangeIter`: starts after the last reserved address (or at the first
/// range's start), walks every range of the set once, skips each range's gateway.
pub struct RangeIter<'a> {
    set: &'a [Range],
    range: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    pub fn new(set: &'a [Range], last_reserved: Option<IpAddr>) -> Self {
        // An IPv4-mapped cursor walks the IPv4 range, as in Go.
        match last_reserved.map(canonical).and_then(|ip| set.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
            Some((range, ip)) => RangeIter { set, range, cur: Some(ip), start: None },
            None => RangeIter { set, range: 0, cur: None, start: None },
        }
    }
}

impl Iterator for RangeIter<'_> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<IpAddr> {
        loop {
            let r = &self.set[self.range];
            let Some(cur) = self.cur else {
                self.cur = Some(r.start);
                self.start = Some(r.start);
                if r.start == r.gateway {
                    continue;
                }
                return Some(r.start);
            };
            let next = if cur == r.end {
                self.range = (self.range + 1) % self.set.len();
                self.set[self.range].start
            } else {
                // Ranges are validated: start <= end, so cur < end has a successor.
                next_ip(cur).expect("an address below the range end has a successor")
            };
            self.cur = Some(next);
            match self.start {
                None => self.start = Some(next),
                Some(start) if start == next => return None,
                Some(_) => {}
            }
            if next == self.set[self.range].gateway {
                continue;
            }
            return Some(next);
        }
    }
}

/// The pod a call is for, from CNI_ARGS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Pod {
    pub fn from_args(args: &CniArgs) -> Option<Pod> {
        let pod = Pod {
            namespace: args.pod_namespace().unwrap_or("").to_string(),
            name: args.pod_name().unwrap_or("").to_string(),
            uid: args.pod_uid().unwrap_or("").to_string(),
        };
        (!pod.namespace.is_empty() && !pod.name.is_empty() || !pod.uid.is_empty()).then_some(pod)
    }

    /// The identity stickiness is keyed by, if these args carry it.
    pub fn key(&self, key: StickyKey) -> Option<String> {
        match key {
            StickyKey::NamespaceName if !self.namespace.is_empty() && !self.name.is_empty() => {
                Some(format!("{}/{}", self.namespace, self.name))
            }
            StickyKey::Uid if !self.uid.is_empty() => Some(self.uid.clone()),
            _ => None,
        }
    }

    fn record_key(record: &PodRecord, key: StickyKey) -> Option<String> {
        Pod { namespace: record.namespace.clone(), name: record.name.clone(), uid: record.uid.clone() }.key(key)
    }

    /// The record of this pod's new sandbox `owner`, added at wall time `wall` and node time `node_time`.
    pub fn record(&self, owner: &Owner, boot_id: &str, wall: u64, node_time: u64) -> PodRecord {
        PodRecord {
            owner: owner.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            boot_id: boot_id.to_string(),
            state: LeaseState::Active,
            since: wall,
            added_at: node_time,
            changed_at: node_time,
        }
    }
}

/// Everything one range set's allocation depends on besides the store.
pub struct Request<'a> {
    pub index: usize,
    pub set: &'a [Range],
    pub owner: &'a Owner,
    pub requested: Option<IpAddr>,
    /// Stickiness settings and the pod, when stickiness is on.
    pub sticky: Option<&'a Sticky>,
    pub pod: Option<&'a Pod>,
    /// Wall clock (Unix seconds) for records written by this call: for people only.
    pub now: u64,
}

/// Why an address was chosen: kept for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Requested,
    /// The attachment already had it (a repeated ADD).
    Existing,
    /// The pod's held address (or OpenYurt marker), taken over for its new sandbox.
    Sticky,
    RoundRobin,
    /// The pool was full; the oldest hold was reclaimed.
    Reclaimed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub range: Range,
    pub how: How,
    /// The pod whose hold a requested address overrode (it is logged).
    pub overrode_hold_of: Option<String>,
}

/// Whether `ip` may be handed out from `set`: inside one of its ranges, and not that
/// range's gateway (whatever a file in the store says).
fn allocatable(set: &[Range], ip: IpAddr) -> bool {
    range_for(set, ip).is_some_and(|r| r.gateway != canonical(ip))
}

/// Upstream's text for a full range set.
const EXHAUSTED: &str = "no IP addresses available in range set";

fn exhausted(set: &[Range]) -> Error {
    // Addresses come back as pods go: the runtime's retry may succeed.
    Error::new(Code::TRY_AGAIN_LATER, format!("{EXHAUSTED}: {}", describe(set)))
}

/// Whether `allocate` failed because the range set had no address left.
pub fn is_exhaustion(e: &Error) -> bool {
    e.code == Code::TRY_AGAIN_LATER && e.msg.starts_with(EXHAUSTED)
}

/// Allocate one address from `req.set` for `req.owner`.
pub fn allocate(store: &mut dyn Store, req: &Request) -> Result<Allocation> {
    // Every path below picks inside the set; a store that says otherwise is not trusted.
    let found = |ip: IpAddr, how| match range_for(req.set, ip) {
        Some(range) if allocatable(req.set, ip) => {
            Ok(Allocation { ip, range: range.clone(), how, overrode_hold_of: None })
        }
        _ => {
            Err(Error::internal(format!("{} is not allocatable in range set {}", go_ip_string(ip), describe(req.set))))
        }
    };
    let pod_key = req.sticky.zip(req.pod).and_then(|(s, p)| p.key(s.key).map(|k| (s, p, k)));

    if let Some(ip) = req.requested {
        let Some(range) = range_for(req.set, ip) else {
            return Err(Error::internal(format!("{} not in range set {}", go_ip_string(ip), describe(req.set))));
        };
        if ip == range.gateway {
            return Err(Error::config(format!("requested ip {} is subnet's gateway", go_ip_string(ip))));
        }
        let lease = store.lease(ip);
        let mut overrode_hold_of = None;
        let how = if lease.as_ref().is_some_and(|l| l.is_owned_by(req.owner)) {
            How::Existing
        } else if store.reserve(ip, req.owner)? {
            How::Requested
        } else if let Some(lease) = lease.filter(|l| is_reclaimable(store, l, req)) {
            // The pod's own hold, or another pod's: an explicit request outranks a hold.
            let clock = store.clock()?;
            let own = pod_key.as_ref().is_some_and(|(s, _, key)| is_hold_for(&lease, key, s.key, req, &clock));
            let record = pod_record(store, req)?;
            store.take_over(ip, req.owner, record.as_ref())?;
            if own {
                How::Sticky
            } else {
                overrode_hold_of = lease.pod.map(|p| p.pod_name());
                How::Requested
            }
        } else {
            return Err(Error::new(
                Code::TRY_AGAIN_LATER,
                format!(
                    "requested IP address {} is not available in range set {}",
                    go_ip_string(ip),
                    describe(req.set)
                ),
            ));
        };
        if how == How::Requested {
            store.set_last_reserved(req.index, ip)?;
            overrode_hold_of = overrode_hold_of.or(drop_markers_of_others(store, req, ip)?);
        }
        record_pod(store, req, ip)?;
        return found(ip, how).map(|a| Allocation { overrode_hold_of, ..a });
    }

    // A repeated ADD gets what it already has (upstream errors: "duplicate allocation").
    // Only an exact match: an old-format lease names no interface, and two interfaces
    // of one container must never share an address.
    let mine = |store: &dyn Store| {
        store.find(Query::Owner(req.owner)).into_iter().find(|l| l.is_owned_by(req.owner) && allocatable(req.set, l.ip))
    };
    let mut existing = mine(store).map(|l| l.ip);
    if let Some(ip) = existing {
        if !store.verify(ip)? {
            existing = mine(store).map(|l| l.ip); // the store has read its directory again
        }
    }
    if let Some(ip) = existing {
        record_pod(store, req, ip)?;
        return found(ip, How::Existing);
    }

    if let Some((sticky, pod, key)) = &pod_key {
        if let Some(ip) = take_held(store, req, pod, key, sticky.key)? {
            record_pod(store, req, ip)?;
            return found(ip, How::Sticky);
        }
        if let Some(ip) = take_marker(store, req, pod)? {
            record_pod(store, req, ip)?;
            return found(ip, How::Sticky);
        }
    }
    if let Some(hold) = req.sticky.and_then(|s| s.hold_duration) {
        release_expired_holds(store, req, hold.as_micros() as u64)?;
    }

    let last = store.last_reserved(req.index);
    // With stickiness on, OpenYurt-marked addresses are other pods' holds: used last.
    let marked: Vec<IpAddr> =
        if req.sticky.is_some() { store.markers().iter().map(|m| m.ip).collect() } else { Vec::new() };
    for ip in RangeIter::new(req.set, last) {
        if marked.contains(&ip) {
            continue;
        }
        if store.reserve(ip, req.owner)? {
            store.set_last_reserved(req.index, ip)?;
            record_pod(store, req, ip)?;
            return found(ip, How::RoundRobin);
        }
    }
    if let Some(ip) = reclaim_oldest_hold(store, req)? {
        record_pod(store, req, ip)?;
        return found(ip, How::Reclaimed);
    }
    Err(exhausted(req.set))
}

/// Whether `lease`'s sandbox is gone, so that its address may be given to another: a
/// hold, or (with stickiness on, where boots are known) a sandbox of an earlier boot.
/// With stickiness off, holds left from when it was on are ordinary reclaimable addresses.
fn is_reclaimable(store: &mut dyn Store, lease: &Lease, req: &Request) -> bool {
    let Some(pod) = &lease.pod else { return false };
    match req.sticky {
        Some(_) => store.clock().is_ok_and(|clock| clock.reclaimable_since(pod).is_some()),
        None => pod.state == LeaseState::Held,
    }
}

/// A requested address is this pod's now: other pods' OpenYurt markers for it no longer
/// apply. Returns the pod of one it dropped.
fn drop_markers_of_others(store: &mut dyn Store, req: &Request, ip: IpAddr) -> Result<Option<String>> {
    let others: Vec<Marker> = store
        .markers()
        .iter()
        .filter(|m| m.ip == ip && !req.pod.is_some_and(|p| p.namespace == m.namespace && p.name == m.name))
        .cloned()
        .collect();
    for marker in &others {
        store.remove_marker(marker)?;
    }
    Ok(others.first().map(|m| format!("{}/{}", m.namespace, m.name)))
}

/// Whether `lease` is this pod's and may move to the new sandbox: it is held, or its
/// sandbox belongs to an earlier boot. A live sandbox of the same pod in this boot keeps
/// its address: two sandboxes never share one.
fn is_hold_for(lease: &Lease, key: &str, key_kind: StickyKey, req: &Request, clock: &NodeClock) -> bool {
    let Some(pod) = &lease.pod else { return false };
    Pod::record_key(pod, key_kind).as_deref() == Some(key)
        && pod.owner.ifname == req.owner.ifname
        && !lease.is_owned_by(req.owner)
        && clock.reclaimable_since(pod).is_some()
}

fn take_held(
    store: &mut dyn Store,
    req: &Request,
    pod: &Pod,
    key: &str,
    key_kind: StickyKey,
) -> Result<Option<IpAddr>> {
    let query = Query::Pod { namespace: &pod.namespace, name: &pod.name, uid: &pod.uid };
    let clock = store.clock()?;
    let mut holds: Vec<((u64, u64), IpAddr)> = store
        .find(query)
        .into_iter()
        .filter(|l| allocatable(req.set, l.ip) && is_hold_for(l, key, key_kind, req, &clock))
        .map(|l| (l.pod.as_ref().map_or((0, 0), |p| (p.added_at, p.since)), l.ip))
        .collect();
    // The address of the pod's newest sandbox is the one the cluster last saw. (Records
    // from before node time carry 0 and are ordered by the wall clock among themselves.)
    holds.sort();
    let Some((_, ip)) = holds.pop() else { return Ok(None) };
    let record = pod_record(store, req)?;
    store.take_over(ip, req.owner, record.as_ref())?;
    // Older holds of the same pod and interface would never be used again.
    for (_, stale) in holds {
        store.release(stale)?;
    }
    Ok(Some(ip))
}

/// An OpenYurt marker for this pod whose address is free.
fn take_marker(store: &mut dyn Store, req: &Request, pod: &Pod) -> Result<Option<IpAddr>> {
    let mine: Vec<_> = store
        .markers()
        .iter()
        .filter(|m| m.namespace == pod.namespace && m.name == pod.name && allocatable(req.set, m.ip))
        .cloned()
        .collect();
    for marker in mine {
        if store.reserve(marker.ip, req.owner)? {
            store.remove_marker(&marker)?;
            return Ok(Some(marker.ip));
        }
    }
    Ok(None)
}

/// Holds, and leases of sandboxes from earlier boots, free for longer than `holdDuration`
/// (`max_age`, µs of node time).
fn release_expired_holds(store: &mut dyn Store, req: &Request, max_age: u64) -> Result<()> {
    let clock = store.clock()?;
    let expired: Vec<IpAddr> = store
        .find(Query::Reclaimable { boot_id: clock.boot_id() })
        .into_iter()
        .filter(|l| allocatable(req.set, l.ip))
        .filter(|l| {
            let since = l.pod.as_ref().and_then(|p| clock.reclaimable_since(p));
            since.is_some_and(|since| clock.now().saturating_sub(since) >= max_age)
        })
        .map(|l| l.ip)
        .collect();
    for ip in expired {
        store.release(ip)?;
    }
    Ok(())
}

/// When the pool is full, the address free for longest goes to the new pod. OpenYurt
/// markers come first: they were left before this store kept any hold.
fn reclaim_oldest_hold(store: &mut dyn Store, req: &Request) -> Result<Option<IpAddr>> {
    // Without stickiness the boot does not matter: only holds are reclaimable.
    let clock = match req.sticky {
        Some(_) => Some(store.clock()?),
        None => None,
    };
    let query = match &clock {
        Some(clock) => Query::Reclaimable { boot_id: clock.boot_id() },
        None => Query::Held,
    };
    let held = store
        .find(query)
        .into_iter()
        .filter(|l| allocatable(req.set, l.ip))
        .filter_map(|l| {
            let pod = l.pod.as_ref()?;
            let since = match &clock {
                Some(clock) => clock.reclaimable_since(pod)?,
                None => pod.changed_at,
            };
            Some(((1, since), ip_to_u128(l.ip), l.ip))
        })
        .min();
    let marked = store
        .markers()
        .iter()
        .filter(|m| req.sticky.is_some() && allocatable(req.set, m.ip) && store.lease(m.ip).is_none())
        .map(|m| ((0, m.since), ip_to_u128(m.ip), m.ip))
        .min();
    match held.into_iter().chain(marked).min() {
        None => Ok(None),
        Some((_, _, ip)) if store.lease(ip).is_some() => {
            let record = pod_record(store, req)?;
            store.take_over(ip, req.owner, record.as_ref())?;
            Ok(Some(ip))
        }
        Some((_, _, ip)) => {
            let markers: Vec<_> = store.markers().iter().filter(|m| m.ip == ip).cloned().collect();
            if !store.reserve(ip, req.owner)? {
                return Ok(None);
            }
            for m in markers {
                store.remove_marker(&m)?;
            }
            Ok(Some(ip))
        }
    }
}

/// The pod record this request gives its address: `None` without stickiness or a pod.
fn pod_record(store: &mut dyn Store, req: &Request) -> Result<Option<PodRecord>> {
    match (req.sticky, req.pod) {
        (Some(_), Some(pod)) => {
            let clock = store.clock()?;
            Ok(Some(pod.record(req.owner, clock.boot_id(), req.now, clock.now())))
        }
        _ => Ok(None),
    }
}

/// Record (or clear) which pod an address now belongs to.
fn record_pod(store: &mut dyn Store, req: &Request, ip: IpAddr) -> Result<()> {
    let record = pod_record(store, req)?;
    let current = store.lease(ip).and_then(|l| l.pod.clone());
    let unchanged = match (&current, &record) {
        (Some(c), Some(r)) => {
            c.owner == r.owner
                && c.state == r.state
                && c.boot_id == r.boot_id
                && (c.namespace.as_str(), c.name.as_str(), c.uid.as_str())
                    == (r.namespace.as_str(), r.name.as_str(), r.uid.as_str())
        }
        (None, None) => true,
        _ => false,
    };
    if unchanged {
        return Ok(());
    }
    store.set_pod(ip, record)
}

#[cfg(test)]
mod tests;
