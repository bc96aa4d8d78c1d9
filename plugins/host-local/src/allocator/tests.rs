//! Upstream's allocator_test.go cases over an in-memory store, plus stickiness.

use std::collections::BTreeMap;

use libcni::ip::IpNet;

use super::*;
use crate::clock::{NodeClock, Saved};
use crate::config::Sticky;
use crate::range::{canonicalize_set, RangeSpec};
use crate::store::{matching, Lease, Marker, Query};

/// An in-memory [`Store`], like upstream's fake store (but ifname-aware).
#[derive(Default)]
struct MemoryStore {
    leases: BTreeMap<String, Lease>,
    markers: Vec<Marker>,
    last: BTreeMap<usize, IpAddr>,
    snapshot: Option<(BTreeMap<String, Lease>, Vec<Marker>)>,
    /// The boot the next calls run in.
    boot: String,
}

impl MemoryStore {
    fn with_taken(ips: &[&str]) -> MemoryStore {
        let mut s = MemoryStore::default();
        for ip in ips {
            assert!(s.reserve(ip.parse().unwrap(), &Owner::new("other", "eth0")).unwrap());
        }
        s
    }

    /// The store as calls in kernel boot `boot` see it.
    fn in_boot(&mut self, boot: &str) -> &mut MemoryStore {
        self.boot = boot.to_string();
        self
    }

    fn begin(&mut self) {
        self.snapshot = Some((self.leases.clone(), self.markers.clone()));
    }
}

impl Store for MemoryStore {
    fn find(&self, query: Query) -> Vec<Lease> {
        self.leases.values().filter(|l| query.matches(l)).cloned().collect()
    }
    fn lease(&self, ip: IpAddr) -> Option<Lease> {
        self.leases.get(&libcni::ip::go_ip_string(ip)).cloned()
    }
    fn markers(&self) -> &[Marker] {
        &self.markers
    }
    fn last_reserved(&mut self, range_set: usize) -> Option<IpAddr> {
        self.last.get(&range_set).copied()
    }
    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<()> {
        self.last.insert(range_set, ip);
        Ok(())
    }
    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let name = libcni::ip::go_ip_string(ip);
        if self.leases.contains_key(&name) {
            return Ok(false);
        }
        self.leases.insert(name, Lease { ip, content: owner.content().to_string(), pod: None, opaque: false });
        Ok(true)
    }
    fn verify(&mut self, _: IpAddr) -> Result<bool> {
        Ok(true)
    }

    fn take_over(&mut self, ip: IpAddr, owner: &Owner, pod: Option<&PodRecord>) -> Result<()> {
        let lease = self.leases.get_mut(&libcni::ip::go_ip_string(ip)).expect("take_over of an existing lease");
        lease.content = owner.content().to_string();
        lease.pod = pod.cloned();
        Ok(())
    }
    fn release(&mut self, ip: IpAddr) -> Result<()> {
        self.leases.remove(&libcni::ip::go_ip_string(ip));
        Ok(())
    }
    fn set_pod(&mut self, ip: IpAddr, pod: Option<PodRecord>) -> Result<()> {
        self.leases.get_mut(&libcni::ip::go_ip_string(ip)).expect("set_pod of an existing lease").pod = pod;
        Ok(())
    }
    fn remove_marker(&mut self, marker: &Marker) -> Result<()> {
        self.markers.retain(|m| m != marker);
        Ok(())
    }
    fn clock(&mut self) -> Result<NodeClock> {
        // A clock that has counted since node time 1.
        let saved = Saved { origin: 1, boots: vec![(self.boot.clone(), 1)] };
        Ok(NodeClock::running(saved, &self.boot, NOW - 1).expect("the running boot"))
    }
    fn owned_by(&mut self, owner: &Owner) -> Result<Vec<IpAddr>> {
        Ok(matching(self.leases.values(), owner))
    }
    fn rollback(&mut self) -> Result<()> {
        if let Some((leases, markers)) = self.snapshot.take() {
            self.leases = leases;
            self.markers = markers;
        }
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        self.snapshot = None;
        Ok(())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(subnets: &[&str]) -> Vec<Range> {
    canonicalize_set(
        &subnets
            .iter()
            .map(|s| RangeSpec { subnet: Some(IpNet::parse(s).unwrap()), ..Default::default() })
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

/// Node time of the calls below: an hour into the store's first boot.
const NOW: u64 = 3_600_000_000;

fn plain<'a>(set: &'a [Range], owner: &'a Owner) -> Request<'a> {
    Request { index: 0, set, owner, requested: None, sticky: None, pod: None, now: 1_000 }
}

fn iter_all(set: &[Range], last: Option<&str>) -> Vec<String> {
    RangeIter::new(set, last.map(ip)).map(|a| a.to_string()).collect()
}

#[test]
fn range_iter_loops_from_beginning_end_and_middle() {
    let s = set(&["192.168.1.0/29"]);
    assert_eq!(iter_all(&s, None), ["192.168.1.2", "192.168.1.3", "192.168.1.4", "192.168.1.5", "192.168.1.6"]);
    assert_eq!(
        iter_all(&s, Some("192.168.1.6")),
        ["192.168.1.2", "192.168.1.3", "192.168.1.4", "192.168.1.5", "192.168.1.6"]
    );
    assert_eq!(
        iter_all(&s, Some("192.168.1.3")),
        ["192.168.1.4", "192.168.1.5", "192.168.1.6", "192.168.1.2", "192.168.1.3"]
    );
}

/// (subnets, taken addresses, last reserved, expected address)
type RoundRobinCase = (&'static [&'static str], &'static [&'static str], Option<&'static str>, &'static str);

#[test]
fn a_cursor_that_is_not_an_address_of_the_set_restarts_at_the_start() {
    let s = set(&["10.1.0.0/29"]);
    let all = ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"];
    assert_eq!(iter_all(&s, Some("::ffff:10.1.0.4")), ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3", "10.1.0.4"]);
    for outside in ["10.1.0.7", "10.1.0.0", "10.2.0.3", "2001:db8::3", "::ffff:10.1.0.7"] {
        assert_eq!(iter_all(&s, Some(outside)), all, "{outside}");
    }
}

#[test]
fn round_robin_table_from_upstream() {
    let cases: &[RoundRobinCase] = &[
        (&["10.0.0.0/29"], &[], None, "10.0.0.2"),
        (&["2001:db8:1::0/64"], &[], None, "2001:db8:1::2"),
        (&["10.0.0.0/30"], &[], None, "10.0.0.2"),
        (&["10.0.0.0/29"], &["10.0.0.2"], None, "10.0.0.3"),
        (&["10.0.0.0/29"], &[], Some("10.0.0.5"), "10.0.0.6"),
        (&["10.0.0.0/29"], &["10.0.0.4", "10.0.0.5"], Some("10.0.0.3"), "10.0.0.6"),
        (&["10.0.0.0/29"], &["10.0.0.6"], Some("10.0.0.5"), "10.0.0.2"),
        (&["10.0.0.0/29"], &["10.0.0.2"], Some("10.0.0.128"), "10.0.0.3"),
        (&["10.0.0.0/29"], &["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"], Some("10.0.0.3"), "10.0.0.3"),
        (&["10.0.0.0/30", "10.0.1.0/30"], &[], None, "10.0.0.2"),
        (&["10.0.0.0/30", "10.0.1.0/30"], &[], Some("10.0.0.2"), "10.0.1.2"),
        (&["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"], &[], Some("10.0.2.2"), "10.0.0.2"),
    ];
    for (subnets, taken, last, want) in cases {
        let s = set(subnets);
        let mut store = MemoryStore::with_taken(taken);
        if let Some(last) = last {
            store.last.insert(0, ip(last));
        }
        let owner = Owner::new("ID", "eth0");
        let got = allocate(&mut store, &plain(&s, &owner)).unwrap();
        assert_eq!(got.ip.to_string(), *want, "{subnets:?} taken={taken:?} last={last:?}");
        assert_eq!(store.last.get(&0), Some(&got.ip));
    }
}

#[test]
fn does_not_allocate_the_broadcast_address_and_exhausts_with_upstreams_error() {
    let s = set(&["192.168.1.0/29"]);
    let mut store = MemoryStore::default();
    for n in 2..=6 {
        let owner = Owner::new(&format!("ID{n}"), "eth0");
        let got = allocate(&mut store, &plain(&s, &owner)).unwrap();
        assert_eq!(format!("{}/{}", got.ip, got.range.subnet.prefix), format!("192.168.1.{n}/29"));
    }
    let e = allocate(&mut store, &plain(&s, &Owner::new("ID8", "eth0"))).unwrap_err();
    assert_eq!(e.msg, "no IP addresses available in range set: 192.168.1.1-192.168.1.6");
    assert_eq!(e.code, Code::TRY_AGAIN_LATER);
}

#[test]
fn allocates_round_robin_after_release() {
    let s = set(&["192.168.1.0/29"]);
    let mut store = MemoryStore::default();
    let owner = Owner::new("ID", "eth0");
    assert_eq!(allocate(&mut store, &plain(&s, &owner)).unwrap().ip, ip("192.168.1.2"));
    store.release(ip("192.168.1.2")).unwrap();
    assert_eq!(allocate(&mut store, &plain(&s, &owner)).unwrap().ip, ip("192.168.1.3"));
}

#[test]
fn requested_addresses() {
    let s = set(&["192.168.1.0/29"]);
    let mut store = MemoryStore::default();
    let (a, b) = (Owner::new("A", "eth0"), Owner::new("B", "eth0"));
    let req = |owner, requested| Request { requested: Some(ip(requested)), ..plain(&s, owner) };
    assert_eq!(allocate(&mut store, &req(&a, "192.168.1.5")).unwrap().how, How::Requested);
    let e = allocate(&mut store, &req(&b, "192.168.1.5")).unwrap_err();
    assert_eq!(e.msg, "requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6");
    // A retried ADD for the same attachment gets its address back.
    assert_eq!(allocate(&mut store, &req(&a, "192.168.1.5")).unwrap().how, How::Existing);
    assert_eq!(
        allocate(&mut store, &req(&b, "192.168.1.1")).unwrap_err().msg,
        "requested ip 192.168.1.1 is subnet's gateway"
    );

    let narrow = canonicalize_set(&[RangeSpec {
        subnet: IpNet::parse("192.168.1.0/29"),
        range_end: Some(ip("192.168.1.4")),
        ..Default::default()
    }])
    .unwrap();
    let e = allocate(&mut store, &Request { requested: Some(ip("192.168.1.5")), ..plain(&narrow, &b) }).unwrap_err();
    assert_eq!(e.msg, "192.168.1.5 not in range set 192.168.1.1-192.168.1.4");
    let narrow = canonicalize_set(&[RangeSpec {
        subnet: IpNet::parse("192.168.1.0/29"),
        range_start: Some(ip("192.168.1.3")),
        ..Default::default()
    }])
    .unwrap();
    let e = allocate(&mut store, &Request { requested: Some(ip("192.168.1.2")), ..plain(&narrow, &b) }).unwrap_err();
    assert_eq!(e.msg, "192.168.1.2 not in range set 192.168.1.3-192.168.1.6");
}

#[test]
fn out_of_addresses_in_every_shape() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["10.0.0.0/30"], &["10.0.0.2"]),
        (&["10.0.0.0/29"], &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        (&["10.0.0.0/30", "10.0.1.0/30"], &["10.0.0.2", "10.0.1.2"]),
    ];
    for (subnets, taken) in cases {
        let s = set(subnets);
        let e = allocate(&mut MemoryStore::with_taken(taken), &plain(&s, &Owner::new("ID", "eth0"))).unwrap_err();
        assert!(e.msg.starts_with("no IP addresses available in range set"), "{e:?}");
    }
}

#[test]
fn start_ip_after_a_range_end_is_the_next_ranges_start() {
    // Upstream's two ranges with host bits set and canonicalisation skipped: start/end as given.
    let raw = |net: &str, start: &str, end: &str| Range {
        subnet: IpNet::parse(net).unwrap(),
        start: ip(start),
        end: ip(end),
        gateway: ip("0.0.0.0"),
    };
    let s =
        vec![raw("192.168.1.1/30", "192.168.1.0", "192.168.1.3"), raw("192.168.2.1/30", "192.168.2.0", "192.168.2.3")];
    let mut it = RangeIter::new(&s, Some(ip("192.168.1.3")));
    assert_eq!(it.next(), Some(ip("192.168.2.0")));
    let mut it = RangeIter::new(&s, None);
    assert_eq!(it.next(), Some(ip("192.168.1.0")));
}

#[test]
fn a_repeated_add_returns_the_existing_address() {
    let s = set(&["10.0.0.0/29"]);
    let mut store = MemoryStore::default();
    let owner = Owner::new("c1", "eth0");
    let first = allocate(&mut store, &plain(&s, &owner)).unwrap();
    let again = allocate(&mut store, &plain(&s, &owner)).unwrap();
    assert_eq!((again.ip, again.how), (first.ip, How::Existing));
    // Another interface of the same container is another attachment.
    assert_ne!(allocate(&mut store, &plain(&s, &Owner::new("c1", "net1"))).unwrap().ip, first.ip);
}

#[test]
fn an_old_format_lease_is_never_an_existing_allocation() {
    // `c1` names no interface: reusing it would give eth0 and eth1 one address (upstream
    // refuses the ADD as a duplicate instead).
    let s = set(&["10.0.0.0/29"]);
    let mut store = MemoryStore::default();
    assert!(store.reserve(ip("10.0.0.2"), &Owner::new("c1", "")).unwrap());
    store.leases.get_mut("10.0.0.2").unwrap().content = "c1".into();
    let eth0 = allocate(&mut store, &plain(&s, &Owner::new("c1", "eth0"))).unwrap();
    let eth1 = allocate(&mut store, &plain(&s, &Owner::new("c1", "eth1"))).unwrap();
    assert_eq!((eth0.how, eth1.how), (How::RoundRobin, How::RoundRobin));
    assert!(eth0.ip != eth1.ip && eth0.ip != ip("10.0.0.2"));
}

#[test]
fn the_gateway_is_never_handed_out_whatever_the_store_says() {
    let s = set(&["10.0.0.0/29"]); // gateway .1, addresses .2 - .6
    let owner = Owner::new("c1", "eth0");
    // A lease of this very container at the gateway (planted).
    let mut store = MemoryStore::default();
    assert!(store.reserve(ip("10.0.0.1"), &owner).unwrap());
    assert_eq!(allocate(&mut store, &plain(&s, &owner)).unwrap().ip, ip("10.0.0.2"));
    // An OpenYurt marker for this pod at the gateway.
    let web = pod("web-0");
    let marker = Marker { ip: ip("10.0.0.1"), namespace: "default".into(), name: "web-0".into(), since: 1 };
    let mut store = MemoryStore { markers: vec![marker.clone()], ..MemoryStore::default() };
    assert_eq!(allocate(store.in_boot("b1"), &sticky(&s, &owner, &web)).unwrap().ip, ip("10.0.0.2"));
    // A full pool with another pod's marker at the gateway: nothing to reclaim there.
    let mut store = MemoryStore::with_taken(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    store.markers = vec![Marker { name: "other".into(), ..marker }];
    assert!(allocate(store.in_boot("b1"), &sticky(&s, &owner, &web)).is_err());
}

// ---- stickiness ----

const STICKY: Sticky = Sticky { key: StickyKey::NamespaceName, hold_duration: None };

fn pod(name: &str) -> Pod {
    Pod { namespace: "default".into(), name: name.into(), uid: format!("uid-{name}") }
}

fn sticky<'a>(set: &'a [Range], owner: &'a Owner, pod: &'a Pod) -> Request<'a> {
    Request { sticky: Some(&STICKY), pod: Some(pod), ..plain(set, owner) }
}

/// What the plugin's DEL does with a sticky lease: keep the file, mark it held.
fn del_hold(store: &mut MemoryStore, owner: &Owner, pod: &Pod) {
    for ip in store.owned_by(owner).unwrap() {
        let boot = store.lease(ip).unwrap().pod.as_ref().map(|p| p.boot_id.clone()).unwrap_or_default();
        let added_at = store.lease(ip).unwrap().pod.as_ref().map_or(0, |p| p.added_at);
        let held = PodRecord { added_at, ..pod.record(owner, &boot, 2_000, NOW).held_at(2_000, NOW) };
        store.set_pod(ip, Some(held)).unwrap();
    }
}

#[test]
fn a_held_address_returns_to_the_pods_next_sandbox() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let web = pod("web-0");
    let (old, new) = (Owner::new("old", "eth0"), Owner::new("new", "eth0"));
    let first = allocate(store.in_boot("boot-1"), &sticky(&s, &old, &web)).unwrap();
    del_hold(&mut store, &old, &web);
    // Another pod does not get it while the pool has room.
    let other = allocate(store.in_boot("boot-2"), &sticky(&s, &Owner::new("x", "eth0"), &pod("other"))).unwrap();
    assert_ne!(other.ip, first.ip);
    let again = allocate(store.in_boot("boot-2"), &sticky(&s, &new, &web)).unwrap();
    assert_eq!((again.ip, again.how), (first.ip, How::Sticky));
    let lease = store.lease(first.ip).unwrap();
    assert!(lease.is_owned_by(&new));
    assert_eq!(lease.pod.as_ref().unwrap().state, LeaseState::Active);
}

#[test]
fn an_undeleted_sandbox_from_an_earlier_boot_hands_over_its_address() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let web = pod("web-0");
    let first = allocate(store.in_boot("boot-1"), &sticky(&s, &Owner::new("old", "eth0"), &web)).unwrap();
    // Same boot: a second live sandbox gets a different address.
    let twin = allocate(store.in_boot("boot-1"), &sticky(&s, &Owner::new("twin", "eth0"), &web)).unwrap();
    assert_ne!(twin.ip, first.ip);
    store.release(twin.ip).unwrap();
    // After a reboot the old sandbox is dead even if its DEL has not come yet.
    let after = allocate(store.in_boot("boot-2"), &sticky(&s, &Owner::new("new", "eth0"), &web)).unwrap();
    assert_eq!((after.ip, after.how), (first.ip, How::Sticky));
}

#[test]
fn holds_are_per_interface_and_per_range_set() {
    let v4 = set(&["10.0.0.0/28"]);
    let v6 = set(&["2001:db8::/120"]);
    let web = pod("web-0");
    let mut store = MemoryStore::default();
    let (old0, old1) = (Owner::new("old", "eth0"), Owner::new("old", "net1"));
    let a4 = allocate(store.in_boot("b1"), &sticky(&v4, &old0, &web)).unwrap().ip;
    let a6 = allocate(store.in_boot("b1"), &Request { index: 1, ..sticky(&v6, &old0, &web) }).unwrap().ip;
    let n4 = allocate(store.in_boot("b1"), &sticky(&v4, &old1, &web)).unwrap().ip;
    del_hold(&mut store, &old0, &web);
    del_hold(&mut store, &old1, &web);
    let (new0, new1) = (Owner::new("new", "eth0"), Owner::new("new", "net1"));
    assert_eq!(allocate(store.in_boot("b2"), &sticky(&v4, &new1, &web)).unwrap().ip, n4);
    assert_eq!(allocate(store.in_boot("b2"), &sticky(&v4, &new0, &web)).unwrap().ip, a4);
    assert_eq!(allocate(store.in_boot("b2"), &Request { index: 1, ..sticky(&v6, &new0, &web) }).unwrap().ip, a6);
}

#[test]
fn a_full_pool_reclaims_the_oldest_hold() {
    let s = set(&["10.0.0.0/29"]); // .2 - .6
    let mut store = MemoryStore::default();
    let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        let owner = Owner::new(&format!("c{i}"), "eth0");
        allocate(store.in_boot("b1"), &sticky(&s, &owner, p)).unwrap();
        del_hold(&mut store, &owner, p);
        let hold = store.leases.get_mut(&format!("10.0.0.{}", i + 2)).unwrap().pod.as_mut().unwrap();
        // Node time orders holds; the wall clock (here running backwards) does not.
        (hold.changed_at, hold.since) = (100 + i as u64, 1_000 - i as u64);
    }
    // p3's hold is made the oldest.
    store.leases.get_mut("10.0.0.5").unwrap().pod.as_mut().unwrap().changed_at = 1;
    let got = allocate(store.in_boot("b1"), &sticky(&s, &Owner::new("n", "eth0"), &pod("newcomer"))).unwrap();
    assert_eq!((got.ip, got.how), (ip("10.0.0.5"), How::Reclaimed));
    // Without stickiness, holds left from when it was on are ordinary reclaimable
    // addresses, oldest first; once none is left, a full pool is full, as upstream.
    for (i, expected) in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"].into_iter().enumerate() {
        let got = allocate(&mut store, &plain(&s, &Owner::new(&format!("m{i}"), "eth0"))).unwrap();
        assert_eq!((got.ip, got.how), (ip(expected), How::Reclaimed));
        assert_eq!(store.lease(got.ip).unwrap().pod, None, "no pod record without stickiness");
    }
    let e = allocate(&mut store, &plain(&s, &Owner::new("m", "eth0"))).unwrap_err();
    assert!(e.msg.starts_with("no IP addresses available"));
}

#[test]
fn a_requested_address_overrides_the_hold() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let web = pod("web-0");
    let old = Owner::new("old", "eth0");
    let held = allocate(store.in_boot("b1"), &sticky(&s, &old, &web)).unwrap().ip;
    del_hold(&mut store, &old, &web);
    let new = Owner::new("new", "eth0");
    let got =
        allocate(store.in_boot("b2"), &Request { requested: Some(ip("10.0.0.9")), ..sticky(&s, &new, &web) }).unwrap();
    assert_eq!((got.ip, got.how), (ip("10.0.0.9"), How::Requested));
    assert!(store.lease(held).unwrap().is_held(), "the old hold is untouched");
}

#[test]
fn openyurt_markers_are_honoured() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    store.markers.push(Marker { ip: ip("10.0.0.2"), namespace: "default".into(), name: "web-0".into(), since: 5 });
    // Another pod skips the marked address while others are free.
    let other = allocate(store.in_boot("b1"), &sticky(&s, &Owner::new("x", "eth0"), &pod("other"))).unwrap();
    assert_eq!(other.ip, ip("10.0.0.3"));
    let web = allocate(store.in_boot("b1"), &sticky(&s, &Owner::new("w", "eth0"), &pod("web-0"))).unwrap();
    assert_eq!((web.ip, web.how), (ip("10.0.0.2"), How::Sticky));
    assert!(store.markers.is_empty(), "the marker became our own pod record");
    assert_eq!(store.lease(web.ip).unwrap().pod.as_ref().unwrap().name, "web-0");
}

#[test]
fn uid_keying_only_matches_the_same_pod_object() {
    let uid_sticky = Sticky { key: StickyKey::Uid, hold_duration: None };
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let old_pod = pod("web-0");
    let old = Owner::new("old", "eth0");
    fn req<'a>(s: &'a [Range], st: &'a Sticky, owner: &'a Owner, p: &'a Pod) -> Request<'a> {
        Request { sticky: Some(st), ..sticky(s, owner, p) }
    }
    let held = allocate(store.in_boot("b1"), &req(&s, &uid_sticky, &old, &old_pod)).unwrap().ip;
    del_hold(&mut store, &old, &old_pod);
    let recreated = Pod { uid: "uid-other".into(), ..old_pod.clone() };
    let (n1, n2) = (Owner::new("n1", "eth0"), Owner::new("n2", "eth0"));
    assert_ne!(allocate(store.in_boot("b2"), &req(&s, &uid_sticky, &n1, &recreated)).unwrap().ip, held);
    assert_eq!(allocate(store.in_boot("b2"), &req(&s, &uid_sticky, &n2, &old_pod)).unwrap().ip, held);
}

#[test]
fn expired_holds_are_released() {
    let short = Sticky { key: StickyKey::NamespaceName, hold_duration: Some(std::time::Duration::from_secs(60)) };
    let s = set(&["10.0.0.0/30"]); // one address
    let mut store = MemoryStore::default();
    let old = Owner::new("old", "eth0");
    let web = pod("web-0");
    allocate(store.in_boot("b1"), &Request { sticky: Some(&short), ..sticky(&s, &old, &web) }).unwrap();
    del_hold(&mut store, &old, &web);
    // Held for 60 s of node time (the wall clock says it was just now).
    let hold = store.leases.get_mut("10.0.0.2").unwrap().pod.as_mut().unwrap();
    (hold.changed_at, hold.since) = (NOW - 60_000_000, 9_999_999_999);
    let got =
        allocate(&mut store, &Request { sticky: Some(&short), ..sticky(&s, &Owner::new("n", "eth0"), &pod("other")) })
            .unwrap();
    assert_eq!((got.ip, got.how), (ip("10.0.0.2"), How::RoundRobin));
}

#[test]
fn rollback_restores_the_store() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    store.begin();
    allocate(&mut store, &plain(&s, &Owner::new("c", "eth0"))).unwrap();
    store.rollback().unwrap();
    assert!(store.leases.is_empty());
}

#[test]
fn a_requested_address_takes_another_pods_hold_but_not_a_live_sandbox() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let (old_pod, new_pod, third) = (pod("old"), pod("new"), pod("third"));
    let (old, c2, c3) = (Owner::new("c1", "eth0"), Owner::new("c2", "eth0"), Owner::new("c3", "eth0"));
    let asked = |owner, p| Request { requested: Some(ip("10.0.0.5")), ..sticky(&s, owner, p) };
    allocate(&mut store, &asked(&old, &old_pod)).unwrap();
    del_hold(&mut store, &old, &old_pod);
    let got = allocate(&mut store, &asked(&c2, &new_pod)).unwrap();
    assert_eq!(
        (got.ip, got.how, got.overrode_hold_of.as_deref()),
        (ip("10.0.0.5"), How::Requested, Some("default/old"))
    );
    assert_eq!(store.lease(got.ip).unwrap().pod.unwrap().name, "new");
    let e = allocate(&mut store, &asked(&c3, &third)).unwrap_err();
    assert_eq!(e.code, Code::TRY_AGAIN_LATER);
}

#[test]
fn of_a_pods_leases_its_newest_sandboxs_wins_whatever_the_wall_clock() {
    let s = set(&["10.0.0.0/28"]);
    let mut store = MemoryStore::default();
    let web = pod("web");
    for (sandbox, added_at, wall) in [("a", 10, 2_000), ("b", 20, 1_000)] {
        let owner = Owner::new(sandbox, "eth0");
        let got = allocate(store.in_boot("b1"), &sticky(&s, &owner, &web)).unwrap();
        let record = store.leases.get_mut(&got.ip.to_string()).unwrap().pod.as_mut().unwrap();
        (record.added_at, record.since) = (added_at, wall);
    }
    del_hold(&mut store, &Owner::new("a", "eth0"), &web);
    let got = allocate(store.in_boot("b2"), &sticky(&s, &Owner::new("c", "eth0"), &web)).unwrap();
    assert_eq!((got.ip, got.how), (ip("10.0.0.3"), How::Sticky));
    assert!(store.lease(ip("10.0.0.2")).is_none(), "the older sandbox's hold is released");
}
