//! CNI results: one type per wire layout, and conversions between every pair of versions.
//!
//! The conversions mirror Go's `types/internal/convert.go` registry, including what each
//! one drops (0.2.0 keeps only the first address per family and only `dst`/`gw` of routes)
//! and refuses ("cannot convert: no valid IP addresses").

mod common;
pub mod v020;
pub mod v040;
pub mod v100;

use serde::Serialize;
use serde_json::Value;

pub use common::{Dns, Route};
pub use v020::Result020;
pub use v040::Result040;
pub use v100::Result100;

use crate::error::{Error, Result};
use crate::ip::to_v4;
use crate::json;
use crate::version::Layout;

/// A result in any of the three layouts, tagged with its `cniVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyResult {
    V020(Result020),
    V040(Result040),
    V100(Result100),
}

impl AnyResult {
    pub fn version(&self) -> &str {
        match self {
            AnyResult::V020(r) => &r.cni_version,
            AnyResult::V040(r) => &r.cni_version,
            AnyResult::V100(r) => &r.cni_version,
        }
    }

    /// Go's `create.Create(version, bytes)`: decode `v` in the layout of `version`.
    pub fn from_json(version: &str, v: &Value) -> Result<AnyResult> {
        let layout = Layout::of(version)
            .ok_or_else(|| Error::decoding(format!("unsupported CNI result version {}", json::go_quote(version))))?;
        let mut r = match layout {
            Layout::V020 => AnyResult::V020(Result020::from_json(v)?),
            Layout::V040 => AnyResult::V040(Result040::from_json(v)?),
            Layout::V100 => AnyResult::V100(Result100::from_json(v)?),
        };
        r.set_version(version);
        Ok(r)
    }

    /// Decode a result that names its own version (Go's `CreateFromBytes`; none means 0.1.0).
    pub fn from_json_any(v: &Value) -> Result<AnyResult> {
        let version = crate::version::decode_conf_version(v)?;
        Self::from_json(&version, v)
    }

    fn set_version(&mut self, version: &str) {
        let slot = match self {
            AnyResult::V020(r) => &mut r.cni_version,
            AnyResult::V040(r) => &mut r.cni_version,
            AnyResult::V100(r) => &mut r.cni_version,
        };
        *slot = version.to_string();
    }

    /// Go's `GetAsVersion`: "" means 0.1.0; the same version is returned unchanged.
    pub fn convert_to(&self, to: &str) -> Result<AnyResult> {
        let to = if to.is_empty() { "0.1.0" } else { to };
        if self.version() == to {
            return Ok(self.clone());
        }
        let (Some(to_layout), Some(_)) = (Layout::of(to), Layout::of(self.version())) else {
            return Err(Error::internal(format!("no converter for CNI result version {} to {to}", self.version())));
        };
        let mut converted = match (self, to_layout) {
            (AnyResult::V020(r), Layout::V020) => AnyResult::V020(r.clone()),
            (AnyResult::V020(r), Layout::V040) => AnyResult::V040(v020_to_v040(r)),
            (AnyResult::V020(r), Layout::V100) => AnyResult::V100(v040_to_v100(&v020_to_v040(r))),
            (AnyResult::V040(r), Layout::V020) => AnyResult::V020(v040_to_v020(r)?),
            (AnyResult::V040(r), Layout::V040) => AnyResult::V040(r.clone()),
            (AnyResult::V040(r), Layout::V100) => AnyResult::V100(v040_to_v100(r)),
            (AnyResult::V100(r), Layout::V020) => AnyResult::V020(v040_to_v020(&v100_to_v040(r))?),
            (AnyResult::V100(r), Layout::V040) => AnyResult::V040(v100_to_v040(r)),
            (AnyResult::V100(r), Layout::V100) => AnyResult::V100(r.clone()),
        };
        converted.set_version(to);
        Ok(converted)
    }

    /// The newest layout, which every result can be widened to without loss.
    pub fn to_v100(&self) -> Result100 {
        match self {
            AnyResult::V020(r) => v040_to_v100(&v020_to_v040(r)),
            AnyResult::V040(r) => v040_to_v100(r),
            AnyResult::V100(r) => r.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            AnyResult::V020(r) => to_value(r),
            AnyResult::V040(r) => to_value(r),
            AnyResult::V100(r) => r.to_json(),
        }
    }

    /// What Go's `Result.Print()` writes: four-space indent, no trailing newline.
    pub fn to_wire(&self) -> String {
        json::to_go_pretty(&self.to_json())
    }
}

impl Result100 {
    /// Go's `types.PrintResult(result, version)` without the printing.
    pub fn as_version(&self, version: &str) -> Result<AnyResult> {
        AnyResult::V100(self.clone()).convert_to(version)
    }
}

/// A result type's derived `Serialize` as a `Value`, to be sorted or embedded in a config.
fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("result types serialise to a Value without failing")
}

/// Sort object keys at every level, as a round trip through a Go map does.
pub(crate) fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

fn ip_version(addr: std::net::IpAddr) -> &'static str {
    if to_v4(addr).is_some() {
        "4"
    } else {
        "6"
    }
}

fn v020_to_v040(r: &Result020) -> Result040 {
    let mut out = Result040 { cni_version: r.cni_version.clone(), dns: r.dns.clone(), ..Default::default() };
    for (block, version) in [(&r.ip4, "4"), (&r.ip6, "6")] {
        if let Some(c) = block {
            out.ips.push(v040::IpConfig {
                version: version.into(),
                interface: None,
                address: c.ip,
                gateway: c.gateway,
            });
            out.routes.extend(c.routes.iter().cloned());
        }
    }
    out
}

fn v040_to_v020(r: &Result040) -> Result<Result020> {
    let mut out = Result020 { cni_version: r.cni_version.clone(), dns: r.dns.clone(), ..Default::default() };
    for ip in &r.ips {
        let block = v020::IpConfig { ip: ip.address, gateway: ip.gateway, routes: Vec::new() };
        if ip.version == "4" && out.ip4.is_none() {
            out.ip4 = Some(block);
        } else if ip.version == "6" && out.ip6.is_none() {
            out.ip6 = Some(block);
        }
        if out.ip4.is_some() && out.ip6.is_some() {
            break;
        }
    }
    for route in &r.routes {
        let block = if route.is_v4() { &mut out.ip4 } else { &mut out.ip6 };
        if let Some(b) = block {
            b.routes.push(route.dst_gw_only());
        }
    }
    if out.ip4.is_none() && out.ip6.is_none() {
        return Err(Error::internal("cannot convert: no valid IP addresses"));
    }
    Ok(out)
}

fn v040_to_v100(r: &Result040) -> Result100 {
    Result100 {
        cni_version: r.cni_version.clone(),
        interfaces: r
            .interfaces
            .iter()
            .map(|i| v100::Interface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                sandbox: i.sandbox.clone(),
                ..Default::default()
            })
            .collect(),
        ips: r
            .ips
            .iter()
            .map(|i| v100::IpConfig { interface: i.interface, address: i.address, gateway: i.gateway })
            .collect(),
        routes: r.routes.clone(),
        dns: r.dns.clone(),
    }
}

fn v100_to_v040(r: &Result100) -> Result040 {
    Result040 {
        cni_version: r.cni_version.clone(),
        interfaces: r
            .interfaces
            .iter()
            .map(|i| v040::Interface { name: i.name.clone(), mac: i.mac.clone(), sandbox: i.sandbox.clone() })
            .collect(),
        ips: r
            .ips
            .iter()
            .map(|i| v040::IpConfig {
                version: ip_version(i.address.addr).into(),
                interface: i.interface,
                address: i.address,
                gateway: i.gateway,
            })
            .collect(),
        routes: r.routes.clone(),
        dns: r.dns.clone(),
    }
}

#[cfg(test)]
mod tests;
