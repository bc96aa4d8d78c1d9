//! The host-local config: upstream's `LoadIPAMConfig` (same schema, order and messages,
//! keys matched case-insensitively like Go), plus our `stickyIPs` section.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use libcni::args::{self, CniArgs, Kind};
use libcni::ip::{canonical, parse_ip, IpNet};
use libcni::json::{field_type_error, GoFields};
use libcni::types::Route;
use libcni::{version, Error, Result};
use serde_json::Value;

use crate::range::{canonicalize_set, sets_overlap, RangeSet, RangeSpec};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The CNI_ARGS keys host-local understands.
pub const ARGS_SCHEMA: &[(&str, Kind)] = &[
    (args::IP, Kind::Ip),
    (args::K8S_POD_NAMESPACE, Kind::Text),
    (args::K8S_POD_NAME, Kind::Text),
    (args::K8S_POD_INFRA_CONTAINER_ID, Kind::Text),
    (args::K8S_POD_UID, Kind::Text),
];

/// What identifies "the same pod" across sandboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StickyKey {
    /// K8S_POD_NAMESPACE + K8S_POD_NAME: survives pod re-creation under the same name.
    NamespaceName,
    /// K8S_POD_UID: only new sandboxes of the same pod object.
    Uid,
}

/// `ipam.stickyIPs`: `false`, `true`, or `{"key": "namespace/name"|"uid", "holdDuration": "72h"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sticky {
    pub key: StickyKey,
    /// How long a released pod's address stays held; `None`: until the pool needs it.
    pub hold_duration: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct IpamConfig {
    pub name: String,
    pub cni_version: String,
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses: CNI_ARGS `IP`, then `args.cni.ips`, then `runtimeConfig.ips`.
    pub requested: Vec<IpAddr>,
    pub sticky: Option<Sticky>,
    /// Optional log file (`ipam.logFile`).
    pub log_file: Option<PathBuf>,
    pub args: CniArgs,
}

impl IpamConfig {
    /// `<dataDir>/<network name>`.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

fn range_spec(f: &GoFields) -> Result<RangeSpec> {
    Ok(RangeSpec {
        subnet: f.cidr("subnet")?,
        range_start: f.ip("rangeStart")?,
        range_end: f.ip("rangeEnd")?,
        gateway: f.ip("gateway")?,
    })
}

/// A `[]allocator.RangeSet` field: each set an array of ranges, null an empty set.
fn range_sets(f: &GoFields, key: &str) -> Result<Vec<Vec<RangeSpec>>> {
    f.array(key, "[]allocator.RangeSet")?
        .iter()
        .map(|set| match set {
            Value::Array(ranges) => ranges.iter().map(|r| range_spec(&f.element(key, r, "allocator.Range")?)).collect(),
            Value::Null => Ok(Vec::new()),
            other => Err(f.type_error(key, other, "allocator.RangeSet")),
        })
        .collect()
}

/// A `[]*ip.IP` field (`args.cni.ips`, `runtimeConfig.ips`): "ip" or "ip/prefix", "" is nil.
fn requested_ips(f: &GoFields, key: &str) -> Result<Vec<Option<IpAddr>>> {
    f.array(key, "[]*ip.IP")?
        .iter()
        .map(|v| {
            let Value::String(s) = v else { return Err(f.type_error(key, v, "ip.IP")) };
            if s.is_empty() {
                return Ok(None);
            }
            let addr = if s.contains('/') { IpNet::parse(s).map(|n| n.addr) } else { parse_ip(s) };
            addr.map(Some).ok_or_else(|| Error::config(format!("invalid IP address {s}")))
        })
        .collect()
}

/// Go-style durations as users write them: "90s", "30m", "72h", "1h30m", "0".
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn sticky(ipam: &GoFields) -> Result<Option<Sticky>> {
    let default = Sticky { key: StickyKey::NamespaceName, hold_duration: None };
    // Our own section: its errors name it `ipam.stickyIPs`, not after a Go struct.
    let o = match ipam.get("stickyIPs") {
        None | Some(Value::Bool(true)) => return Ok(Some(default)),
        Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Object(o)) => GoFields::new(o, "ipam.stickyIPs.", Error::config),
        Some(v) => return Err(Error::config(field_type_error(v, "ipam.stickyIPs", "bool or object"))),
    };
    if matches!(o.get("enabled"), Some(Value::Bool(false))) {
        return Ok(None);
    }
    let key = match o.string("key")? {
        None | Some("namespace/name") => StickyKey::NamespaceName,
        Some("uid") => StickyKey::Uid,
        Some(other) => {
            return Err(Error::config(format!(
                "ipam.stickyIPs.key must be \"namespace/name\" or \"uid\", not {other:?}"
            )))
        }
    };
    let hold_duration = match o.string("holdDuration")? {
        None => None,
        Some(s) => Some(
            parse_duration(s)
                .ok_or_else(|| Error::config(format!("ipam.stickyIPs.holdDuration: invalid duration {s:?}")))?,
        ),
    };
    Ok(Some(Sticky { key, hold_duration }))
}

/// Upstream's `LoadIPAMConfig` over the whole network config and CNI_ARGS.
pub fn load(conf: &Value, cni_args: &str) -> Result<IpamConfig> {
    // Upstream's root error names an empty field, not a Go value.
    let Value::Object(net) = conf else { return Err(Error::config(field_type_error(conf, "", "allocator.Net"))) };
    let net = GoFields::new(net, "Net.", Error::config);
    let name = net.string("name")?.unwrap_or_default().to_string();
    let cni_version = net.string("cniVersion")?.unwrap_or_default().to_string();
    // Decode everything first, as Go's json.Unmarshal does, then validate in upstream's order.
    let ipam = net.object("ipam", "allocator.IPAMConfig")?;
    let runtime = net.object("runtimeConfig", "struct")?;
    let mut args_ips = Vec::new();
    if let Some(args) = net.object("args", "struct")? {
        if let Some(cni) = args.object("cni", "allocator.IPAMArgs")? {
            args_ips = requested_ips(&cni, "ips")?;
        }
    }
    let mut runtime_ips = Vec::new();
    let mut runtime_ranges = Vec::new();
    if let Some(rc) = runtime {
        runtime_ips = requested_ips(&rc, "ips")?;
        runtime_ranges = range_sets(&rc, "ipRanges")?;
    }
    let Some(ipam) = ipam else {
        return Err(Error::config("IPAM config missing 'ipam' key"));
    };
    let legacy = range_spec(&ipam)?;
    let ranges = range_sets(&ipam, "ranges")?;
    let routes = ipam
        .array("routes", "[]*types.Route")?
        .iter()
        .map(|r| Route::from_json(r).map_err(|e| Error::config(e.msg)))
        .collect::<Result<Vec<_>>>()?;
    let data_dir = ipam.string("dataDir")?.filter(|d| !d.is_empty()).unwrap_or(DEFAULT_DATA_DIR);
    let resolv_conf = ipam.string("resolvConf")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let log_file = ipam.string("logFile")?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let sticky = sticky(&ipam)?;

    let mut requested: Vec<Option<IpAddr>> = Vec::new();
    let args = CniArgs::parse(cni_args, ARGS_SCHEMA)?;
    if let Some(ip) = args.ip() {
        requested.push(Some(ip));
    }
    requested.extend(args_ips);
    requested.extend(runtime_ips);
    let requested = requested
        .into_iter()
        .map(|ip| ip.map(canonical).ok_or_else(|| Error::config("cannot understand ip: IP <nil> not v4 nor v6")))
        .collect::<Result<Vec<_>>>()?;

    let mut specs: Vec<Vec<RangeSpec>> = runtime_ranges;
    if legacy.subnet.is_some() {
        specs.push(vec![legacy]);
    }
    specs.extend(ranges);
    if specs.is_empty() {
        return Err(Error::config("no IP ranges specified"));
    }
    let mut sets = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        sets.push(canonicalize_set(spec).map_err(|e| Error::config(format!("invalid range set {i}: {e}")))?);
    }
    let v4 = sets.iter().filter(|s| s[0].is_v4()).count();
    if (v4 > 1 || sets.len() - v4 > 1) && !version::gte(&cni_version, "0.3.0").unwrap_or(false) {
        return Err(Error::config(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }
    for (i, a) in sets.iter().enumerate() {
        for (j, b) in sets.iter().enumerate().skip(i + 1) {
            if sets_overlap(a, b) {
                return Err(Error::config(format!("range set {i} overlaps with {j}")));
            }
        }
    }
    Ok(IpamConfig {
        name,
        cni_version,
        ranges: sets,
        routes,
        data_dir: data_dir.into(),
        resolv_conf,
        requested,
        sticky,
        log_file,
        args,
    })
}

#[cfg(test)]
mod tests;
