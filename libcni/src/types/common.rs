//! Pieces shared by every result layout: routes, DNS, and how their fields are read.

use std::net::IpAddr;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ip::{serialize_opt_go_ip, IpNet};
use crate::json::GoFields;

/// A route (`types.Route`, fields in Go's order). The 1.1.0 fields are zero/None when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `None` prints as Go's `<nil>`, as upstream does for a route without `dst`.
    #[serde(serialize_with = "dst_or_nil")]
    pub dst: Option<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_go_ip")]
    pub gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "is_zero")]
    pub mtu: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub advmss: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<i64>,
}

fn dst_or_nil<S: Serializer>(dst: &Option<IpNet>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match dst {
        Some(dst) => dst.serialize(s),
        None => s.serialize_str("<nil>"),
    }
}

/// Go's `omitempty` for a number.
pub(crate) fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Route {
    pub fn is_v4(&self) -> bool {
        matches!(self.dst, Some(IpNet { addr: IpAddr::V4(_), .. }))
            || matches!(self.dst, Some(IpNet { addr: IpAddr::V6(v6), .. }) if v6.to_ipv4_mapped().is_some())
    }

    /// As results carry it: Go's field order, empty fields omitted.
    pub fn to_json(&self) -> Value {
        super::to_value(self)
    }

    pub fn from_json(v: &Value) -> Result<Route> {
        let f = fields(v, "types.Route")?;
        // "<nil>" is how Go (and we) print a route without dst: read it back as none.
        let dst = match f.string("dst")? {
            Some("<nil>") => None,
            _ => f.cidr("dst")?,
        };
        Ok(Route {
            dst,
            gw: f.ip("gw")?,
            mtu: f.int("mtu")?.unwrap_or(0),
            advmss: f.int("advmss")?.unwrap_or(0),
            priority: f.int("priority")?.unwrap_or(0),
            table: f.int("table")?,
            scope: f.int("scope")?,
        })
    }

    /// Only `dst` and `gw` survive in 0.1.0/0.2.0 results.
    pub fn dst_gw_only(&self) -> Route {
        Route { dst: self.dst, gw: self.gw, ..Route::default() }
    }
}

/// DNS settings (`types.DNS`); every field is omitted when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    pub fn from_json(v: Option<&Value>) -> Result<Dns> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Dns::default()) };
        let f = fields(v, "types.DNS")?;
        Ok(Dns {
            nameservers: f.strings("nameservers")?,
            domain: f.string("domain")?.unwrap_or_default().into(),
            search: f.strings("search")?,
            options: f.strings("options")?,
        })
    }
}

/// A result object's fields: wrong kinds are decoding errors naming the field alone.
pub(crate) fn fields<'a>(v: &'a Value, go_type: &str) -> Result<GoFields<'a>> {
    GoFields::of(v, go_type, "", Error::decoding)
}

pub(crate) fn cidr(f: &GoFields, key: &str) -> Result<IpNet> {
    // Go leaves a missing IPNet zero-valued; a result without an address is unusable, so refuse it.
    f.cidr(key)?.ok_or_else(|| Error::decoding(format!("invalid CIDR address: missing {key}")))
}

pub(crate) fn parse_routes(f: &GoFields, key: &str) -> Result<Vec<Route>> {
    f.array(key, "array")?.iter().map(Route::from_json).collect()
}
