//! The 0.3.0 / 0.3.1 / 0.4.0 result layout (`types040`): `ips` carry a `version`.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::common::{cidr, object, opt_array, opt_int, opt_ip, opt_str, parse_routes, routes_json, Dns, Route};
use crate::error::Result;
use crate::ip::{go_ip_string, IpNet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// "4" or "6".
    pub version: String,
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Result040 {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Interface {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        if !self.mac.is_empty() {
            m.insert("mac".into(), self.mac.clone().into());
        }
        if !self.sandbox.is_empty() {
            m.insert("sandbox".into(), self.sandbox.clone().into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Interface> {
        let o = object(v, "types040.Interface")?;
        Ok(Interface {
            name: opt_str(o, "name")?.unwrap_or_default(),
            mac: opt_str(o, "mac")?.unwrap_or_default(),
            sandbox: opt_str(o, "sandbox")?.unwrap_or_default(),
        })
    }
}

impl IpConfig {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("version".into(), self.version.clone().into());
        if let Some(i) = self.interface {
            m.insert("interface".into(), i.into());
        }
        m.insert("address".into(), self.address.to_string().into());
        if let Some(gw) = self.gateway {
            m.insert("gateway".into(), go_ip_string(gw).into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<IpConfig> {
        let o = object(v, "types040.IPConfig")?;
        Ok(IpConfig {
            version: opt_str(o, "version")?.unwrap_or_default(),
            interface: opt_int(o, "interface")?,
            address: cidr(o, "address")?,
            gateway: opt_ip(o, "gateway")?,
        })
    }
}

impl Result040 {
    /// Go's struct order: cniVersion, interfaces, ips, routes, dns (always present).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.cni_version.is_empty() {
            m.insert("cniVersion".into(), self.cni_version.clone().into());
        }
        if !self.interfaces.is_empty() {
            m.insert("interfaces".into(), Value::Array(self.interfaces.iter().map(Interface::to_json).collect()));
        }
        if !self.ips.is_empty() {
            m.insert("ips".into(), Value::Array(self.ips.iter().map(IpConfig::to_json).collect()));
        }
        if !self.routes.is_empty() {
            m.insert("routes".into(), routes_json(&self.routes));
        }
        m.insert("dns".into(), self.dns.to_json());
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> Result<Result040> {
        let o = object(v, "types040.Result")?;
        Ok(Result040 {
            cni_version: opt_str(o, "cniVersion")?.unwrap_or_default(),
            interfaces: opt_array(o, "interfaces")?.iter().map(Interface::from_json).collect::<Result<_>>()?,
            ips: opt_array(o, "ips")?.iter().map(IpConfig::from_json).collect::<Result<_>>()?,
            routes: parse_routes(o, "routes")?,
            dns: Dns::from_json(crate::json::get_ci(o, "dns"))?,
        })
    }
}
