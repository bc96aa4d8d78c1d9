//! The 0.3.0 / 0.3.1 / 0.4.0 result layout (`types040`): `ips` carry a `version`.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::common::{cidr, fields, parse_routes, Dns, Route};
use crate::error::Result;
use crate::ip::{serialize_opt_go_ip, IpNet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    /// "4" or "6".
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    pub address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_go_ip")]
    pub gateway: Option<IpAddr>,
}

/// Go's struct order: cniVersion, interfaces, ips, routes, dns (always present).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Result040 {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Interface {
    fn from_json(v: &Value) -> Result<Interface> {
        let f = fields(v, "types040.Interface")?;
        Ok(Interface {
            name: f.string("name")?.unwrap_or_default().into(),
            mac: f.string("mac")?.unwrap_or_default().into(),
            sandbox: f.string("sandbox")?.unwrap_or_default().into(),
        })
    }
}

impl IpConfig {
    fn from_json(v: &Value) -> Result<IpConfig> {
        let f = fields(v, "types040.IPConfig")?;
        Ok(IpConfig {
            version: f.string("version")?.unwrap_or_default().into(),
            interface: f.int("interface")?,
            address: cidr(&f, "address")?,
            gateway: f.ip("gateway")?,
        })
    }
}

impl Result040 {
    pub fn from_json(v: &Value) -> Result<Result040> {
        let f = fields(v, "types040.Result")?;
        Ok(Result040 {
            cni_version: f.string("cniVersion")?.unwrap_or_default().into(),
            interfaces: f.array("interfaces", "array")?.iter().map(Interface::from_json).collect::<Result<_>>()?,
            ips: f.array("ips", "array")?.iter().map(IpConfig::from_json).collect::<Result<_>>()?,
            routes: parse_routes(&f, "routes")?,
            dns: Dns::from_json(f.get("dns"))?,
        })
    }
}
