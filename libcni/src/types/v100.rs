//! The 1.0.0 / 1.1.0 result layout (`types100`).

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::common::{cidr, object, opt_array, opt_int, opt_ip, opt_str, parse_routes, routes_json, Dns, Route};
use crate::error::Result;
use crate::ip::{go_ip_string, IpNet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: i64,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Result100 {
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
        for (k, v) in
            [("mac", &self.mac), ("sandbox", &self.sandbox), ("socketPath", &self.socket_path), ("pciID", &self.pci_id)]
        {
            if !v.is_empty() {
                m.insert(k.into(), v.clone().into());
            }
        }
        if self.mtu != 0 {
            m.insert("mtu".into(), self.mtu.into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Interface> {
        let o = object(v, "types100.Interface")?;
        Ok(Interface {
            name: opt_str(o, "name")?.unwrap_or_default(),
            mac: opt_str(o, "mac")?.unwrap_or_default(),
            mtu: opt_int(o, "mtu")?.unwrap_or(0),
            sandbox: opt_str(o, "sandbox")?.unwrap_or_default(),
            socket_path: opt_str(o, "socketPath")?.unwrap_or_default(),
            pci_id: opt_str(o, "pciID")?.unwrap_or_default(),
        })
    }
}

impl IpConfig {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
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
        let o = object(v, "types100.IPConfig")?;
        Ok(IpConfig {
            interface: opt_int(o, "interface")?,
            address: cidr(o, "address")?,
            gateway: opt_ip(o, "gateway")?,
        })
    }
}

impl Result100 {
    /// Go re-marshals 1.x results through a map: keys sorted at every level, empty `dns` dropped.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.cni_version.is_empty() {
            m.insert("cniVersion".into(), self.cni_version.clone().into());
        }
        if !self.dns.is_empty() {
            m.insert("dns".into(), self.dns.to_json());
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
        let mut v = Value::Object(m);
        super::sort_keys(&mut v);
        v
    }

    pub fn from_json(v: &Value) -> Result<Result100> {
        let o = object(v, "types100.Result")?;
        Ok(Result100 {
            cni_version: opt_str(o, "cniVersion")?.unwrap_or_default(),
            interfaces: opt_array(o, "interfaces")?.iter().map(Interface::from_json).collect::<Result<_>>()?,
            ips: opt_array(o, "ips")?.iter().map(IpConfig::from_json).collect::<Result<_>>()?,
            routes: parse_routes(o, "routes")?,
            dns: Dns::from_json(crate::json::get_ci(o, "dns"))?,
        })
    }
}
