//! The CNI verbs: ADD, DEL, CHECK, GC and STATUS over the disk store.

use std::net::IpAddr;
use std::path::Path;

use libcni::ip::{go_ip_string, IpNet};
use libcni::skel::{CmdArgs, Plugin};
use libcni::types::{v100, AnyResult, Result100};
use libcni::{Code, Context, Error, Failures, Result};
use serde_json::Value;

use crate::allocator::{allocate, is_exhaustion, Allocation, How, Pod, Request};
use crate::clock::running_boot_id;
use crate::config::{self, IpamConfig};
use crate::counters::Counter;
use crate::disk::{DiskStore, Prepare};
use crate::dns::parse_resolv_conf;
use crate::range::range_for;
use crate::store::{unix_now, Lease, Owner, PodRecord, Query, Store};
use libcni::log::Log;

pub struct HostLocal;

fn load(args: &CmdArgs) -> Result<IpamConfig> {
    config::load(&args.conf, &args.args)
}

/// The pod this call is for, when stickiness is on and CNI_ARGS name one.
fn sticky_pod(conf: &IpamConfig) -> Option<Pod> {
    let sticky = conf.sticky.as_ref()?;
    Pod::from_args(&conf.args).filter(|p| p.key(sticky.key).is_some())
}

fn allocate_all(
    store: &mut DiskStore,
    conf: &IpamConfig,
    owner: &Owner,
    pod: Option<&Pod>,
    now: u64,
) -> std::result::Result<Vec<Allocation>, Refusal> {
    // Each requested address is used by the first range set that contains it.
    let mut requested: Vec<IpAddr> = Vec::new();
    for ip in &conf.requested {
        if !requested.contains(ip) {
            requested.push(*ip);
        }
    }
    let mut allocations = Vec::with_capacity(conf.ranges.len());
    for (index, set) in conf.ranges.iter().enumerate() {
        let wanted = requested.iter().position(|ip| range_for(set, *ip).is_some()).map(|i| requested.remove(i));
        let req = Request { index, set, owner, requested: wanted, sticky: conf.sticky.as_ref(), pod, now };
        allocations.push(allocate(store, &req).map_err(|e| Refusal {
            exhausted: is_exhaustion(&e).then_some(index),
            error: e.context(format!("failed to allocate for range {index}")),
        })?);
    }
    if !requested.is_empty() {
        let left: Vec<String> = requested.iter().map(|ip| go_ip_string(*ip)).collect();
        let error = Error::config(format!("failed to allocate all requested IPs: {}", left.join(" ")));
        return Err(Refusal { error, exhausted: None });
    }
    Ok(allocations)
}

/// Why an ADD got no addresses, and which range set was full if that was the reason.
struct Refusal {
    error: Error,
    exhausted: Option<usize>,
}

fn add(conf: &IpamConfig, args: &CmdArgs) -> Result<(AnyResult, Vec<Allocation>)> {
    let dns = match &conf.resolv_conf {
        None => Default::default(),
        Some(path) => parse_resolv_conf(&std::fs::read_to_string(path).ctx("open", path.display())?),
    };
    let owner = Owner::new(&args.container_id, &args.ifname);
    let pod = sticky_pod(conf);
    let wall = unix_now();
    // The likely lease (and, for a pod, its record) are written, and their data pushed to the
    // device, before the lock is taken.
    let boot = pod.as_ref().map(|_| running_boot_id());
    let record = |pod: &Pod, node_time| pod.record(&owner, boot.as_deref().unwrap_or_default(), wall, node_time);
    let early_record = |node_time| record(pod.as_ref().expect("a record only for a pod"), node_time);
    let early = Prepare {
        durable: true,
        lease: Some(&owner),
        record: boot.as_deref().map(|boot| (boot, &early_record as &dyn Fn(u64) -> PodRecord)),
    };
    let mut store = DiskStore::open(&conf.store_dir(), early)?;
    let mut allocated = allocate_all(&mut store, conf, &owner, pod.as_ref(), wall);
    if allocated.is_err() && store.take_stale() {
        // A foreign change within our clock tick: the store has read the directory again.
        store.rollback()?;
        allocated = allocate_all(&mut store, conf, &owner, pod.as_ref(), wall);
    }
    let allocations = match allocated {
        Ok(a) => a,
        Err(refusal) => {
            // Undo only what this call did; earlier allocations of this container stay.
            store.rollback()?;
            if let Some(set) = refusal.exhausted {
                store.count(Counter::AddsRefused, Some(set));
            }
            store.commit()?;
            return Err(refusal.error);
        }
    };
    for (set, _) in allocations.iter().enumerate().filter(|(_, a)| a.how == How::Reclaimed) {
        store.count(Counter::HoldsReclaimed, Some(set));
    }
    for a in allocations.iter().filter(|a| a.how == How::Existing) {
        store.sync_existing(a.ip)?;
    }
    store.commit()?;
    let result = Result100 {
        cni_version: libcni::version::CURRENT.into(),
        ips: allocations
            .iter()
            .map(|a| v100::IpConfig {
                interface: None,
                address: IpNet::new(a.ip, a.range.subnet.prefix),
                gateway: Some(a.range.gateway),
            })
            .collect(),
        routes: conf.routes.clone(),
        dns,
        ..Default::default()
    };
    Ok((result.as_version(&conf.cni_version)?, allocations))
}

/// DEL: what happened to each address of the attachment.
fn del(conf: &IpamConfig, args: &CmdArgs, log: &Log) -> Result<Vec<(IpAddr, &'static str)>> {
    let owner = Owner::new(&args.container_id, &args.ifname);
    let mut done = Vec::new();
    let mut store = DiskStore::open(&conf.store_dir(), Prepare::default())?;
    let held = match sticky_pod(conf) {
        Some(pod) => {
            let clock = store.clock()?;
            Some(pod.record(&owner, clock.boot_id(), unix_now(), clock.now()))
        }
        None => None,
    };
    for ip in store.owned_by(&owner)? {
        let lease = store.lease(ip).expect("owned_by returns leases");
        match &held {
            // The address stays with the pod for its next sandbox.
            Some(_) if lease.is_held() => {}
            Some(record) => match hold(&mut store, ip, &lease, &owner, record) {
                Ok(()) => done.push((ip, "held")),
                // A full or read-only disk, or a broken record: the lease stays as it is,
                // still the pod's (README: "When a hold cannot be recorded").
                Err(e) => {
                    log.warn(
                        "hold not recorded; lease kept as it is",
                        &[("ip", go_ip_string(ip)), ("error", e.to_string())],
                    );
                    done.push((ip, "kept"));
                }
            },
            None => {
                store.release(ip)?;
                done.push((ip, "released"));
            }
        }
    }
    store.commit()?;
    Ok(done)
}

/// Mark `ip` held for the pod of `record` (a record of the sandbox being deleted, as of now).
fn hold(store: &mut DiskStore, ip: IpAddr, lease: &Lease, owner: &Owner, record: &PodRecord) -> Result<()> {
    // The sandbox was added when its record says; a lease upstream wrote has no record: oldest.
    let added_at = lease.pod.as_ref().map_or(0, |p| p.added_at);
    let record = &PodRecord { added_at, ..record.held_at(record.since, record.changed_at) };
    if !lease.is_owned_by(owner) {
        // A pre-ifname lease: rewrite it in the current format, or the pod record (which
        // names the ifname) would not match it.
        return store.take_over(ip, owner, Some(record));
    }
    store.set_pod(ip, Some(record.clone()))
}

fn check(conf: &IpamConfig, args: &CmdArgs) -> Result<()> {
    let owner = Owner::new(&args.container_id, &args.ifname);
    let mut store = DiskStore::open(&conf.store_dir(), Prepare::default())?;
    let mut held: Vec<IpAddr> = store.owned_by(&owner)?;
    held.retain(|ip| store.lease(*ip).is_some_and(|l| !l.is_held()));
    store.commit()?;
    if held.is_empty() {
        return Err(Error::new(
            Code::UNKNOWN_CONTAINER,
            format!("host-local: Failed to find address added by container {}", owner.container_id),
        ));
    }
    let mismatch = |msg: String| Error::new(Code(100), format!("host-local: {msg}"));
    for (index, set) in conf.ranges.iter().enumerate() {
        if !held.iter().any(|ip| range_for(set, *ip).is_some()) {
            return Err(mismatch(format!("container {} has no address in range set {index}", owner.container_id)));
        }
    }
    if let Some(prev) = args.conf.get("prevResult").filter(|v| !v.is_null()) {
        let prev = AnyResult::from_json(&args.cni_version, prev)?.to_v100();
        let ours = |ip: &IpAddr| conf.ranges.iter().any(|set| range_for(set, *ip).is_some());
        let mut claimed: Vec<IpAddr> = prev.ips.iter().map(|c| c.address.addr).filter(ours).collect();
        let mut leased: Vec<IpAddr> = held.iter().copied().filter(ours).collect();
        claimed.sort();
        leased.sort();
        if claimed != leased {
            let show = |ips: &[IpAddr]| ips.iter().map(|ip| go_ip_string(*ip)).collect::<Vec<_>>().join(",");
            return Err(mismatch(format!(
                "prevResult addresses [{}] differ from the leases of container {} [{}]",
                show(&claimed),
                owner.container_id,
                show(&leased)
            )));
        }
    }
    Ok(())
}

/// GC: the addresses it released or turned into holds.
fn gc(conf: &IpamConfig, args: &CmdArgs) -> Result<Vec<IpAddr>> {
    let valid = valid_attachments(&args.conf)?;
    let mut store = DiskStore::open(&conf.store_dir(), Prepare::default())?;
    store.refresh()?;
    let is_valid = |id: &str, ifname: Option<&str>| {
        valid.iter().any(|(v_id, v_if)| v_id == id && ifname.is_none_or(|i| i == v_if))
    };
    // With stickiness on, holds are kept for their pods; with it off they are ordinary stale leases.
    let stale: Vec<_> = store
        .find(Query::All)
        .into_iter()
        .filter(|l| !(l.opaque || conf.sticky.is_some() && l.is_held() || is_valid(l.container_id(), l.ifname())))
        .collect();
    let node_time = match (&conf.sticky, stale.iter().any(|l| l.pod.is_some())) {
        (Some(_), true) => store.clock()?.now(),
        _ => 0,
    };
    let mut failures = Failures::default();
    let mut done = Vec::new();
    for lease in stale {
        let outcome = match (&conf.sticky, &lease.pod) {
            // Its pod may come back (a GC after reboot lists only the new sandboxes).
            (Some(_), Some(record)) => store.set_pod(lease.ip, Some(record.held_at(unix_now(), node_time))),
            _ => store.release(lease.ip),
        };
        match outcome {
            Ok(()) => done.push(lease.ip),
            Err(e) => failures.push(e.context(go_ip_string(lease.ip))),
        }
    }
    store.commit()?;
    failures.into_result(Code::IO_FAILURE, "failed to release some leases: ", "; ")?;
    Ok(done)
}

/// The operations log of this call (`ipam.logFile`), with the call's identity on each line.
fn op_log(conf: &IpamConfig, args: &CmdArgs) -> Log {
    let pod = match (conf.args.pod_namespace(), conf.args.pod_name()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => String::new(),
    };
    Log::new(conf.log_file.clone())
        .with("plugin", "host-local")
        .with("cmd", args.command.as_str())
        .with("network", conf.name.clone())
        .with("container", args.container_id.clone())
        .with("ifname", args.ifname.clone())
        .with("pod", pod)
}

fn addresses<'a>(ips: impl Iterator<Item = &'a IpAddr>) -> String {
    ips.map(|ip| go_ip_string(*ip)).collect::<Vec<_>>().join(",")
}

impl Plugin for HostLocal {
    fn add(&self, args: &CmdArgs) -> Result<AnyResult> {
        let conf = load(args)?;
        let log = op_log(&conf, args);
        let outcome = log.outcome(add(&conf, args), |(_, allocations)| {
            for a in allocations {
                if let Some(pod) = &a.overrode_hold_of {
                    let fields = [("ip", go_ip_string(a.ip)), ("heldFor", pod.clone())];
                    log.warn(
                        "requested address was held for another pod: the request wins, the hold is dropped",
                        &fields,
                    );
                }
            }
            let how: Vec<String> = allocations.iter().map(|a| format!("{:?}", a.how).to_lowercase()).collect();
            vec![("ips", addresses(allocations.iter().map(|a| &a.ip))), ("how", how.join(","))]
        });
        outcome.map(|(result, _)| result)
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let conf = load(args)?;
        let log = op_log(&conf, args);
        log.outcome(del(&conf, args, &log), |done| {
            let by = |what| addresses(done.iter().filter(|(_, w)| *w == what).map(|(ip, _)| ip));
            vec![("released", by("released")), ("held", by("held")), ("kept", by("kept"))]
        })
        .map(|_| ())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let conf = load(args)?;
        op_log(&conf, args).outcome(check(&conf, args), |_| Vec::new())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let conf = load(args)?;
        op_log(&conf, args).outcome(gc(&conf, args), |done| vec![("collected", addresses(done.iter()))]).map(|_| ())
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let conf = load(args)?;
        // STATUS is polled constantly: only failures are worth a line.
        op_log(&conf, args).failure(store_usable(&conf.store_dir()))
    }
}

/// `cni.dev/valid-attachments` (or its pre-release name) as (containerID, ifname) pairs.
fn valid_attachments(conf: &Value) -> Result<Vec<(String, String)>> {
    let list = conf.get("cni.dev/valid-attachments").or_else(|| conf.get("cni.dev/attachments"));
    let Some(Value::Array(items)) = list else {
        return Err(Error::config("GC needs cni.dev/valid-attachments: a list of {\"containerID\", \"ifname\"}"));
    };
    items
        .iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
            match (field("containerID"), field("ifname")) {
                (Some(id), Some(ifname)) => Ok((id, ifname)),
                _ => Err(Error::config(format!("invalid entry in cni.dev/valid-attachments: {a}"))),
            }
        })
        .collect()
}

/// STATUS: can leases be written here right now? Cheap: no lock, no directory walk.
fn store_usable(dir: &Path) -> Result<()> {
    let unavailable = |why: String| {
        Error::new(Code::PLUGIN_NOT_AVAILABLE, format!("host-local store {} is not usable: {why}", dir.display()))
    };
    std::fs::DirBuilder::new().recursive(true).create(dir).map_err(|e| unavailable(e.to_string()))?;
    crate::disk::writable_with_space(dir).map_err(unavailable)
}
