//! The 0.3.0 / 0.3.1 / 0.4.0 result layout (`types040`): `ips` carry a `version`.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::common::{cidr, object, opt_array, opt_int, opt_ip, opt_str, parse_routes, Dns, Route};
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
        let o = object(v, "types040.Interface")?;
        Ok(Interface {
            name: opt_str(o, "name")?.unwrap_or_default(),
            mac: opt_str(o, "mac")?.unwrap_or_default(),
            sandbox: opt_str(o, "sandbox")?.unwrap_or_default(),
        })
    }
}

impl IpConfig {
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
