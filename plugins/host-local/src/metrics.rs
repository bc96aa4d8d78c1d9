//! `host-local metrics`: each network's pools in the Prometheus text format, for
//! node-exporter's textfile collector (README "Metrics").
//!
//! The store knows its leases but not its ranges: those come from the network's
//! configuration in the CNI conf dir (host-local as the IPAM, or as delegated-ipam's
//! delegate). Without one, only the leases are counted.

use std::fmt::Write;
use std::path::Path;

use std::net::IpAddr;

use libcni::ip::{canonical, ip_to_u128};
use libcni::Result;
use serde_json::{Map, Value};

use crate::config::{self, IpamConfig};
use crate::counters::Counter;
use crate::disk::DiskStore;
use crate::range::{describe, range_for, RangeSet};
use crate::store::{LeaseState, PodRecord, Query, Store};

/// One metric family: its samples, printed together under one HELP and TYPE.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, String)>,
}

pub struct Metrics {
    families: Vec<Family>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

const ADDRESSES: usize = 0;
const OLDEST_HOLD: usize = 1;
const COUNTERS_START: usize = 2;

impl Metrics {
    pub fn new() -> Metrics {
        let family = |name, kind, help| Family { name, kind, help, samples: Vec::new() };
        let mut families = vec![
            family("host_local_addresses", "gauge", "Addresses of a range set: total (allocatable), active (in use by a sandbox), held (kept for a pod whose sandbox is gone), free."),
            family("host_local_oldest_hold_seconds", "gauge", "How long the oldest hold of a range set has been free to reclaim, in seconds of node running time (not the wall clock); 0 without holds."),
            family("host_local_counters_start_time_seconds", "gauge", "When the store started counting (Unix time): a change means its counters were reset."),
        ];
        for counter in Counter::ALL {
            let (name, help) = match counter {
                Counter::HoldsReclaimed => ("host_local_holds_reclaimed_total", "Holds given to another pod because the range set was full."),
                Counter::AddsRefused => ("host_local_adds_refused_total", "ADDs refused because the range set had no address left."),
                Counter::DebrisCleaned => ("host_local_debris_cleaned_total", "Files only a crash leaves (empty leases, unreadable pod records, old temp files) that were removed."),
            };
            families.push(family(name, "counter", help));
        }
        Metrics { families }
    }

    fn sample(&mut self, family: usize, labels: &[(&str, &str)], value: impl ToString) {
        let mut text = String::new();
        for (i, (key, v)) in labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let escaped = v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n");
            let _ = write!(text, "{sep}{key}=\"{escaped}\"");
        }
        self.families[family].samples.push((text, value.to_string()));
    }

    /// Add the network `name` from its open store and its configuration, if there is one.
    pub fn add_network(&mut self, name: &str, store: &mut DiskStore, conf: Option<&IpamConfig>) -> Result<()> {
        let clock = store.clock()?;
        let leases = store.find(Query::All);
        let unknown = [Vec::new()];
        let sets = conf.map_or(&unknown[..], |c| &c.ranges[..]);
        // What the allocator would reclaim: with stickiness off, only holds (see allocator).
        let sticky = conf.is_none_or(|c| c.sticky.is_some());
        let held_since = |pod: &PodRecord| match sticky {
            true => clock.reclaimable_since(pod),
            false => clock.reclaimable_since(pod).filter(|_| pod.state == LeaseState::Held),
        };
        for (index, set) in sets.iter().enumerate() {
            // Addresses the set hands out (a lease on a gateway is not one of them).
            let in_set = |ip| set.is_empty() || range_for(set, ip).is_some_and(|r| r.gateway != canonical(ip));
            let (mut active, mut held, mut oldest) = (0u128, 0u128, 0u64);
            for lease in leases.iter().filter(|l| in_set(l.ip)) {
                match lease.pod.as_ref().and_then(held_since) {
                    Some(since) => {
                        held += 1;
                        oldest = oldest.max(clock.now().saturating_sub(since));
                    }
                    None => active += 1,
                }
            }
            // OpenYurt markers without a lease hold their address for a pod too (once per
            // address), where stickiness honours them.
            let mut marked: Vec<IpAddr> = store
                .markers()
                .iter()
                .filter(|m| sticky && in_set(m.ip) && store.lease(m.ip).is_none())
                .map(|m| m.ip)
                .collect();
            marked.sort_unstable();
            marked.dedup();
            held += marked.len() as u128;
            let (set_label, ranges) = if set.is_empty() {
                ("unknown".to_string(), String::new())
            } else {
                (index.to_string(), describe(set))
            };
            let labels = |state| [("network", name), ("range_set", &set_label), ("ranges", &ranges), ("state", state)];
            if !set.is_empty() {
                let total = allocatable(set);
                self.sample(ADDRESSES, &labels("total"), total);
                self.sample(ADDRESSES, &labels("free"), total.saturating_sub(active + held));
            }
            self.sample(ADDRESSES, &labels("active"), active);
            self.sample(ADDRESSES, &labels("held"), held);
            let per_set = [("network", name), ("range_set", set_label.as_str())];
            self.sample(OLDEST_HOLD, &per_set, format!("{:.3}", oldest as f64 / 1e6));
        }

        let counters = store.counters();
        self.sample(COUNTERS_START, &[("network", name)], counters.created);
        let mut indices: Vec<usize> = (0..sets.len()).collect();
        indices.extend(counters.values.keys().filter_map(|(_, set)| *set));
        indices.sort_unstable();
        indices.dedup();
        for (family, counter) in (COUNTERS_START + 1..).zip(Counter::ALL) {
            if counter.per_range_set() {
                for set in &indices {
                    let value = counters.get(counter, Some(*set));
                    self.sample(family, &[("network", name), ("range_set", &set.to_string())], value);
                }
            } else {
                self.sample(family, &[("network", name)], counters.get(counter, None));
            }
        }
        Ok(())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
            for (labels, value) in &f.samples {
                let _ = writeln!(out, "{}{{{labels}}} {value}", f.name);
            }
        }
        out
    }
}

/// Addresses a range set hands out: every range's addresses but its gateway.
fn allocatable(set: &RangeSet) -> u128 {
    set.iter()
        .map(|r| {
            let (start, end, gateway) = (ip_to_u128(r.start), ip_to_u128(r.end), ip_to_u128(r.gateway));
            (end - start).saturating_add(1) - u128::from((start..=end).contains(&gateway))
        })
        .sum()
}

/// The host-local configuration of network `name` in `conf_dir`: the first plugin whose
/// IPAM is host-local, directly or as delegated-ipam's delegate.
pub fn configuration(conf_dir: &Path, name: &str) -> Option<IpamConfig> {
    let list = libcni::conf::load_conf_list(conf_dir, name).ok()?;
    let ipam = list.plugins.iter().find_map(|p| {
        let ipam = p.raw.get("ipam")?;
        match ipam.get("type")?.as_str()? {
            "host-local" => Some(ipam.clone()),
            "delegated-ipam" => ipam.get("delegate").filter(|d| d["type"] == "host-local").cloned(),
            _ => None,
        }
    })?;
    let mut net = Map::new();
    net.insert("cniVersion".into(), list.cni_version.clone().into());
    net.insert("name".into(), name.into());
    net.insert("ipam".into(), ipam);
    config::load(&Value::Object(net), "").ok()
}
