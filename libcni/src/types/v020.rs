//! The 0.1.0 / 0.2.0 result layout (`types020`): one `ip4` and one `ip6` block.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::common::{cidr, fields, parse_routes, Dns, Route};
use crate::error::Result;
use crate::ip::{serialize_opt_go_ip, IpNet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    pub ip: IpNet,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_go_ip")]
    pub gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Go's struct order: cniVersion, ip4, ip6, dns (always present).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Result020 {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip4: Option<IpConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpConfig>,
    pub dns: Dns,
}

impl IpConfig {
    fn from_json(v: &Value) -> Result<IpConfig> {
        let f = fields(v, "types020.IPConfig")?;
        Ok(IpConfig { ip: cidr(&f, "ip")?, gateway: f.ip("gateway")?, routes: parse_routes(&f, "routes")? })
    }
}

impl Result020 {
    pub fn from_json(v: &Value) -> Result<Result020> {
        let f = fields(v, "types020.Result")?;
        let block = |k| f.get(k).map(IpConfig::from_json).transpose();
        Ok(Result020 {
            cni_version: f.string("cniVersion")?.unwrap_or_default().into(),
            ip4: block("ip4")?,
            ip6: block("ip6")?,
            dns: Dns::from_json(f.get("dns"))?,
        })
    }
}
