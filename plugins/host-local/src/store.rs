//! What the allocator needs from storage, and the records it keeps.
//!
//! A lease is upstream's `<ip>` file (`<containerID>\r\n<ifname>`); that file alone says
//! an address is in use, for us and for upstream host-local. Pod metadata for sticky IPs
//! lives in a record beside it. A *held* address is a lease whose pod record says
//! `held`: its file stays, so nobody else can take it until it is reclaimed.

use std::net::IpAddr;

use libcni::ip::go_ip_string;

use crate::clock::NodeClock;
pub use libcni::time::{parse_rfc3339, rfc3339, unix_now};
use libcni::Result;

/// The attachment a lease belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    /// `id\r\nifname`, computed once: leases are compared against it in bulk.
    content: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        let container_id = container_id.trim().to_string();
        let content = format!("{container_id}\r\n{ifname}");
        Owner { container_id, ifname: ifname.to_string(), content }
    }

    /// The lease file content upstream writes and matches.
    pub fn content(&self) -> &str {
        &self.content
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// In use by a sandbox.
    Active,
    /// The sandbox was deleted; kept for the same pod's next sandbox.
    Held,
}

/// Who a lease belongs to beyond its sandbox: the pod, the boot, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    /// The lease content this record describes; a mismatch means the lease was replaced
    /// behind our back (by upstream host-local) and the record no longer applies.
    pub owner: Owner,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The kernel boot in which the owning sandbox was set up.
    pub boot_id: String,
    pub state: LeaseState,
    /// Wall clock (Unix seconds) of the last state change: for people only. Order and
    /// age come from node time ([`crate::clock`]), which a wrong or jumping clock can't move.
    pub since: u64,
    /// Node time when the sandbox that owns the address was added: a pod's newest sandbox
    /// is the one whose address the cluster last saw.
    pub added_at: u64,
    /// Node time of the last state change (added, or held).
    pub changed_at: u64,
}

impl PodRecord {
    /// The same pod's record, now holding the address for its next sandbox.
    pub fn held_at(&self, wall: u64, node_time: u64) -> PodRecord {
        PodRecord { state: LeaseState::Held, since: wall, changed_at: node_time, ..self.clone() }
    }

    /// `namespace/name`, or the UID: who the address is recorded for.
    pub fn pod_name(&self) -> String {
        if self.name.is_empty() {
            self.uid.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// One `<ip>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    /// Trimmed file content: `id\r\nifname`, or just `id` in the pre-v0.8 format. Content
    /// that is not UTF-8 is kept lossily: it matches no container, as upstream's compare.
    pub content: String,
    pub pod: Option<PodRecord>,
    /// Not a regular file (a directory, FIFO, socket or symlink named like an address):
    /// its address stays out of the pool, as with upstream, and it is never read,
    /// replaced or removed.
    pub opaque: bool,
}

impl Lease {
    /// Matched the way upstream's `ReleaseByID`/`GetByID` first pass matches.
    pub fn is_owned_by(&self, owner: &Owner) -> bool {
        !self.opaque && self.content == owner.content
    }

    /// Upstream's fallback for files written before the ifname was recorded.
    pub fn is_old_format_of(&self, owner: &Owner) -> bool {
        !self.opaque && self.content == owner.container_id
    }

    pub fn container_id(&self) -> &str {
        self.content.split("\r\n").next().unwrap_or("")
    }

    /// `None` for old-format files.
    pub fn ifname(&self) -> Option<&str> {
        self.content.split_once("\r\n").map(|(_, ifname)| ifname)
    }

    pub fn is_held(&self) -> bool {
        matches!(&self.pod, Some(p) if p.state == LeaseState::Held)
    }

    pub fn file_name(&self) -> String {
        go_ip_string(self.ip)
    }
}

/// An OpenYurt keep-IP marker `<ip>_<namespace>_<name>`: that pod's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub ip: IpAddr,
    pub namespace: String,
    pub name: String,
    /// Unix seconds (file mtime).
    pub since: u64,
}

impl Marker {
    pub fn file_name(&self) -> String {
        format!("{}_{}_{}", go_ip_string(self.ip), self.namespace, self.name)
    }

    /// Parse a marker file name; namespace and pod names never contain `_`.
    pub fn parse_name(name: &str) -> Option<(IpAddr, String, String)> {
        let mut parts = name.split('_');
        let (ip, ns, pod) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ns.is_empty() || pod.is_empty() {
            return None;
        }
        let addr: IpAddr = ip.parse().ok()?;
        (go_ip_string(addr) == ip).then(|| (addr, ns.to_string(), pod.to_string()))
    }
}

/// Which leases a caller wants. Stores answer these without materialising every lease:
/// on a node with tens of thousands of leases that is most of a call's cost.
#[derive(Clone, Copy, Debug)]
pub enum Query<'a> {
    /// Leases whose file names this attachment, or only its container ID (old format).
    Owner(&'a Owner),
    /// Leases whose pod record names this namespace/name or this UID.
    Pod { namespace: &'a str, name: &'a str, uid: &'a str },
    /// Leases held for a pod whose sandbox is gone.
    Held,
    /// Leases whose pod's sandbox is gone: held, or set up in an earlier boot than
    /// `boot_id` and never DELeted (a power cut, or a DEL the cut undid).
    Reclaimable { boot_id: &'a str },
    /// Every lease.
    All,
}

impl Query<'_> {
    /// The predicate the query stands for, on a materialised lease.
    pub fn matches(&self, lease: &Lease) -> bool {
        match self {
            Query::Owner(owner) => lease.is_owned_by(owner) || lease.is_old_format_of(owner),
            Query::Pod { namespace, name, uid } => lease.pod.as_ref().is_some_and(|p| {
                (!namespace.is_empty() && p.namespace == *namespace && p.name == *name)
                    || (!uid.is_empty() && p.uid == *uid)
            }),
            Query::Held => lease.is_held(),
            Query::Reclaimable { boot_id } => {
                lease.pod.as_ref().is_some_and(|p| p.state == LeaseState::Held || p.boot_id != *boot_id)
            }
            Query::All => true,
        }
    }
}

/// Storage as the allocator sees it. Every mutation is durable once `commit` returns;
/// `rollback` undoes everything this call changed: what it reserved, took over,
/// re-labelled, released, and the markers it consumed.
pub trait Store {
    /// Leases matching `query`, in upstream's lexical file-name order.
    fn find(&self, query: Query) -> Vec<Lease>;
    fn lease(&self, ip: IpAddr) -> Option<Lease>;
    fn markers(&self) -> &[Marker];
    fn last_reserved(&mut self, range_set: usize) -> Option<IpAddr>;
    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()>;
    /// Create the lease if `ip` is free; `Ok(false)` if a lease file already exists.
    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool>;
    /// Whether the lease of `ip` still holds what `lease()` says; if not, the store reads
    /// its directory again.
    fn verify(&mut self, ip: IpAddr) -> Result<bool>;
    /// Give an existing lease to `owner` (atomically replacing the file), with the pod
    /// record it will have (`None`: none).
    fn take_over(&mut self, ip: IpAddr, owner: &Owner, pod: Option<&PodRecord>) -> Result<()>;
    /// Remove the lease and its pod record (`rollback` puts them back).
    fn release(&mut self, ip: IpAddr) -> Result<()>;
    /// Write or remove the pod record of an existing lease.
    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()>;
    /// Remove an OpenYurt marker (`rollback` puts it back).
    fn remove_marker(&mut self, marker: &Marker) -> Result<()>;
    /// The store's node time in the running boot (see [`crate::clock`]). Asked for only
    /// where a decision needs it: most ADDs never read the clock.
    fn clock(&mut self) -> Result<NodeClock>;
    /// Leases of `owner` for DEL and CHECK, where a miss must be certain: exact matches,
    /// else upstream's old-format fallback.
    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<IpAddr>>;
    fn rollback(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
}

/// Leases of `owner` among `leases`: exact matches, else old-format ones (upstream's two passes).
pub fn matching<'a>(leases: impl Iterator<Item = &'a Lease> + Clone, owner: &Owner) -> Vec<IpAddr> {
    let exact: Vec<IpAddr> = leases.clone().filter(|l| l.is_owned_by(owner)).map(|l| l.ip).collect();
    if !exact.is_empty() {
        return exact;
    }
    leases.filter(|l| l.is_old_format_of(owner)).map(|l| l.ip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(
            Marker::parse_name("172.30.132.194_kube-system_coredns-vstxh"),
            Some(("172.30.132.194".parse().unwrap(), "kube-system".into(), "coredns-vstxh".into()))
        );
        for bad in ["10.0.0.1", "10.0.0.1_ns", "10.0.0.1__p", "x_ns_p", "10.0.0.1_a_b_c", "2001:DB8::1_a_b"] {
            assert_eq!(Marker::parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn ownership_matches_upstream() {
        let owner = Owner::new("  c1\n", "eth0");
        let lease = |content: &str| Lease {
            ip: "10.0.0.2".parse().unwrap(),
            content: content.into(),
            pod: None,
            opaque: false,
        };
        assert!(lease("c1\r\neth0").is_owned_by(&owner));
        assert!(!lease("c1\r\neth1").is_owned_by(&owner));
        assert!(lease("c1").is_old_format_of(&owner));
        assert!(!lease("c1\neth0").is_owned_by(&owner), "LF-only files never match, as upstream");
        let leases = [lease("c1"), lease("c1\r\neth0")];
        assert_eq!(matching(leases.iter(), &owner).len(), 1);
        assert_eq!(matching(leases[..1].iter(), &owner).len(), 1, "old format is the fallback");
    }
}
