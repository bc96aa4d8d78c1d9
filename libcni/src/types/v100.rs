//! The 1.0.0 / 1.1.0 result layout (`types100`).

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::common::{cidr, fields, is_zero, parse_routes, Dns, Route};
use crate::error::Result;
use crate::ip::{serialize_opt_go_ip, IpNet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub mtu: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(skip_serializing_if = "String::is_empty", rename = "pciID")]
    pub pci_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    pub address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_go_ip")]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Result100 {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl Interface {
    fn from_json(v: &Value) -> Result<Interface> {
        let f = fields(v, "types100.Interface")?;
        Ok(Interface {
            name: f.string("name")?.unwrap_or_default().into(),
            mac: f.string("mac")?.unwrap_or_default().into(),
            mtu: f.int("mtu")?.unwrap_or(0),
            sandbox: f.string("sandbox")?.unwrap_or_default().into(),
            socket_path: f.string("socketPath")?.unwrap_or_default().into(),
            pci_id: f.string("pciID")?.unwrap_or_default().into(),
        })
    }
}

impl IpConfig {
    fn from_json(v: &Value) -> Result<IpConfig> {
        let f = fields(v, "types100.IPConfig")?;
        Ok(IpConfig { interface: f.int("interface")?, address: cidr(&f, "address")?, gateway: f.ip("gateway")? })
    }
}

impl Result100 {
    /// Go re-marshals 1.x results through a map: keys sorted at every level, empty `dns` dropped.
    pub fn to_json(&self) -> Value {
        let mut v = super::to_value(self);
        super::sort_keys(&mut v);
        v
    }

    pub fn from_json(v: &Value) -> Result<Result100> {
        let f = fields(v, "types100.Result")?;
        Ok(Result100 {
            cni_version: f.string("cniVersion")?.unwrap_or_default().into(),
            interfaces: f.array("interfaces", "array")?.iter().map(Interface::from_json).collect::<Result<_>>()?,
            ips: f.array("ips", "array")?.iter().map(IpConfig::from_json).collect::<Result<_>>()?,
            routes: parse_routes(&f, "routes")?,
            dns: Dns::from_json(f.get("dns"))?,
        })
    }
}
