//! Pieces shared by every result layout: routes, DNS, and JSON field readers.

use std::net::IpAddr;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ip::{parse_ip, serialize_opt_go_ip, IpNet};
use crate::json::{self, get_ci};

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
        let o = object(v, "types.Route")?;
        // "<nil>" is how Go (and we) print a route without dst: read it back as none.
        let dst = match opt_str(o, "dst")?.as_deref() {
            Some("<nil>") => None,
            _ => opt_cidr(o, "dst")?,
        };
        Ok(Route {
            dst,
            gw: opt_ip(o, "gw")?,
            mtu: opt_int(o, "mtu")?.unwrap_or(0),
            advmss: opt_int(o, "advmss")?.unwrap_or(0),
            priority: opt_int(o, "priority")?.unwrap_or(0),
            table: opt_int(o, "table")?,
            scope: opt_int(o, "scope")?,
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
        let o = object(v, "types.DNS")?;
        Ok(Dns {
            nameservers: opt_strings(o, "nameservers")?,
            domain: opt_str(o, "domain")?.unwrap_or_default(),
            search: opt_strings(o, "search")?,
            options: opt_strings(o, "options")?,
        })
    }
}

pub(crate) fn type_error(v: &Value, field: &str, go_type: &str) -> Error {
    Error::decoding(format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
        json::go_kind(v)
    ))
}

pub(crate) fn object<'a>(v: &'a Value, go_type: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::decoding(format!("json: cannot unmarshal {} into Go value of type {go_type}", json::go_kind(v)))
    })
}

fn present<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    get_ci(o, key).filter(|v| !v.is_null())
}

pub(crate) fn opt_str(o: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(type_error(v, key, "string")),
    }
}

pub(crate) fn opt_int(o: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    match present(o, key) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| type_error(v, key, "int")),
    }
}

pub(crate) fn opt_strings(o: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match present(o, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| type_error(v, key, "string"))).collect()
        }
        Some(v) => Err(type_error(v, key, "[]string")),
    }
}

pub(crate) fn opt_array<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a [Value]> {
    match present(o, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(type_error(v, key, "array")),
    }
}

/// An IP field: Go's `net.IP` text unmarshalling ("" means absent).
pub(crate) fn opt_ip(o: &Map<String, Value>, key: &str) -> Result<Option<IpAddr>> {
    match opt_str(o, key)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => parse_ip(&s).map(Some).ok_or_else(|| Error::decoding(format!("invalid IP address: {s}"))),
    }
}

/// A CIDR field (`types.IPNet`).
pub(crate) fn opt_cidr(o: &Map<String, Value>, key: &str) -> Result<Option<IpNet>> {
    match opt_str(o, key)? {
        None => Ok(None),
        Some(s) => IpNet::parse(&s).map(Some).ok_or_else(|| Error::decoding(format!("invalid CIDR address: {s}"))),
    }
}

pub(crate) fn cidr(o: &Map<String, Value>, key: &str) -> Result<IpNet> {
    // Go leaves a missing IPNet zero-valued; a result without an address is unusable, so refuse it.
    opt_cidr(o, key)?.ok_or_else(|| Error::decoding(format!("invalid CIDR address: missing {key}")))
}

pub(crate) fn parse_routes(o: &Map<String, Value>, key: &str) -> Result<Vec<Route>> {
    opt_array(o, key)?.iter().map(Route::from_json).collect()
}
