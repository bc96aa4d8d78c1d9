//! The 0.1.0 / 0.2.0 result layout (`types020`): one `ip4` and one `ip6` block.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::common::{cidr, object, opt_ip, opt_str, parse_routes, routes_json, Dns, Route};
use crate::error::Result;
use crate::ip::{go_ip_string, IpNet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub ip: IpNet,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Result020 {
    pub cni_version: String,
    pub ip4: Option<IpConfig>,
    pub ip6: Option<IpConfig>,
    pub dns: Dns,
}

impl IpConfig {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("ip".into(), self.ip.to_string().into());
        if let Some(gw) = self.gateway {
            m.insert("gateway".into(), go_ip_string(gw).into());
        }
        if !self.routes.is_empty() {
            m.insert("routes".into(), routes_json(&self.routes));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<IpConfig> {
        let o = object(v, "types020.IPConfig")?;
        Ok(IpConfig { ip: cidr(o, "ip")?, gateway: opt_ip(o, "gateway")?, routes: parse_routes(o, "routes")? })
    }
}

impl Result020 {
    /// Go's struct order: cniVersion, ip4, ip6, dns (always present).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.cni_version.is_empty() {
            m.insert("cniVersion".into(), self.cni_version.clone().into());
        }
        if let Some(ip4) = &self.ip4 {
            m.insert("ip4".into(), ip4.to_json());
        }
        if let Some(ip6) = &self.ip6 {
            m.insert("ip6".into(), ip6.to_json());
        }
        m.insert("dns".into(), self.dns.to_json());
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> Result<Result020> {
        let o = object(v, "types020.Result")?;
        let block = |k| crate::json::get_ci(o, k).filter(|v| !v.is_null()).map(IpConfig::from_json).transpose();
        Ok(Result020 {
            cni_version: opt_str(o, "cniVersion")?.unwrap_or_default(),
            ip4: block("ip4")?,
            ip6: block("ip6")?,
            dns: Dns::from_json(crate::json::get_ci(o, "dns"))?,
        })
    }
}
