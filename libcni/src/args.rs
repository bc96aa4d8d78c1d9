//! `CNI_ARGS` parsing with Go's `types.LoadArgs` rules.
//!
//! `K=V` pairs separated by `;`; keys are case-sensitive field names; values are parsed
//! by the field's type in order; unknown keys fail unless `IgnoreUnknown` is true,
//! wherever it appears. Runtimes send the K8S_POD_* keys in random order.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::ip::{parse_ip, IpNet};
use crate::json::{go_quote, go_quote_list};

pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";
pub const IP: &str = "IP";
pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
pub const K8S_POD_INFRA_CONTAINER_ID: &str = "K8S_POD_INFRA_CONTAINER_ID";
pub const K8S_POD_UID: &str = "K8S_POD_UID";

/// The four keys containerd and CRI-O pass for a Kubernetes pod.
pub const K8S_KEYS: [&str; 4] = [K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID];

/// How a known key's value is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Free text (`types.UnmarshallableString`).
    Text,
    /// `ip` or `ip/prefix` (the prefix is accepted and dropped); empty means unset.
    Ip,
}

/// The parsed, known arguments; unknown ones are kept only for error reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    values: Vec<(String, String)>,
    ip: Option<IpAddr>,
}

impl CniArgs {
    /// Parse `s` against the keys a plugin knows (besides `IgnoreUnknown`).
    pub fn parse(s: &str, known: &[(&str, Kind)]) -> Result<CniArgs> {
        let mut args = CniArgs::default();
        if s.is_empty() {
            return Ok(args);
        }
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in s.split(';') {
            let mut kv = pair.split('=');
            let (Some(key), Some(value), None) = (kv.next(), kv.next(), kv.next()) else {
                return Err(Error::env(format!("ARGS: invalid pair {}", go_quote(pair))));
            };
            let value_error =
                |e: String| Error::env(format!("ARGS: error parsing value of pair {}: {e}", go_quote(pair)));
            if key == IGNORE_UNKNOWN {
                ignore_unknown = match value.to_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => return Err(value_error(format!("boolean unmarshal error: invalid input {other}"))),
                };
                continue;
            }
            match known.iter().find(|(k, _)| *k == key).map(|(_, kind)| kind) {
                None => unknown.push(pair.to_string()),
                Some(Kind::Text) => args.values.push((key.to_string(), value.to_string())),
                Some(Kind::Ip) => {
                    args.ip = if value.is_empty() {
                        None
                    } else {
                        let addr =
                            if value.contains('/') { IpNet::parse(value).map(|n| n.addr) } else { parse_ip(value) };
                        Some(addr.ok_or_else(|| value_error(format!("invalid IP address {value}")))?)
                    };
                }
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(Error::env(format!("ARGS: unknown args {}", go_quote_list(&unknown))));
        }
        Ok(args)
    }

    /// The value of a known text key (the last one given).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A known text key that is present and non-empty.
    fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// The requested address from `IP=`.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.non_empty(K8S_POD_NAMESPACE)
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.non_empty(K8S_POD_NAME)
    }

    pub fn pod_infra_container_id(&self) -> Option<&str> {
        self.non_empty(K8S_POD_INFRA_CONTAINER_ID)
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.non_empty(K8S_POD_UID)
    }
}

/// Split `CNI_ARGS` into pairs as cnitool does for the runtime's `Args` (no schema).
pub fn split_pairs(s: &str) -> Result<Vec<(String, String)>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !v.contains('=') => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::env(format!("invalid CNI_ARGS pair {}", go_quote(pair)))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_LOCAL: &[(&str, Kind)] = &[(IP, Kind::Ip)];
    const WITH_K8S: &[(&str, Kind)] = &[
        (IP, Kind::Ip),
        (K8S_POD_NAMESPACE, Kind::Text),
        (K8S_POD_NAME, Kind::Text),
        (K8S_POD_INFRA_CONTAINER_ID, Kind::Text),
        (K8S_POD_UID, Kind::Text),
    ];

    /// (CNI_ARGS, schema, the requested IP or the error message)
    type Case = (&'static str, &'static [(&'static str, Kind)], Result<Option<&'static str>, &'static str>);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            ("", HOST_LOCAL, Ok(None)),
            ("IP=10.1.2.10", HOST_LOCAL, Ok(Some("10.1.2.10"))),
            ("IP=10.1.2.11/24", HOST_LOCAL, Ok(Some("10.1.2.11"))),
            ("IP=2001:db8::5/64", HOST_LOCAL, Ok(Some("2001:db8::5"))),
            ("IP=", HOST_LOCAL, Ok(None)),
            ("IP=x", HOST_LOCAL, Err(r#"ARGS: error parsing value of pair "IP=x": invalid IP address x"#)),
            ("IP=10.1.2.10;", HOST_LOCAL, Err(r#"ARGS: invalid pair """#)),
            ("IP", HOST_LOCAL, Err(r#"ARGS: invalid pair "IP""#)),
            ("IP=1=2", HOST_LOCAL, Err(r#"ARGS: invalid pair "IP=1=2""#)),
            ("ip=10.1.2.10", HOST_LOCAL, Err(r#"ARGS: unknown args ["ip=10.1.2.10"]"#)),
            ("FOO=1;BAR=2", HOST_LOCAL, Err(r#"ARGS: unknown args ["FOO=1" "BAR=2"]"#)),
            ("FOO=1;IgnoreUnknown=1", HOST_LOCAL, Ok(None)),
            ("IgnoreUnknown=true;FOO=1;IP=10.0.0.9", HOST_LOCAL, Ok(Some("10.0.0.9"))),
            ("IgnoreUnknown=TRUE;FOO=1", HOST_LOCAL, Ok(None)),
            ("IgnoreUnknown=0;FOO=1", HOST_LOCAL, Err(r#"ARGS: unknown args ["FOO=1"]"#)),
            ("ignoreunknown=1;FOO=1", HOST_LOCAL, Err(r#"ARGS: unknown args ["ignoreunknown=1" "FOO=1"]"#)),
            (
                "IgnoreUnknown=Yes",
                HOST_LOCAL,
                Err(
                    r#"ARGS: error parsing value of pair "IgnoreUnknown=Yes": boolean unmarshal error: invalid input yes"#,
                ),
            ),
            ("K8S_POD_NAME=web-0", HOST_LOCAL, Err(r#"ARGS: unknown args ["K8S_POD_NAME=web-0"]"#)),
            ("K8S_POD_NAME=web-0", WITH_K8S, Ok(None)),
        ];
        for (input, schema, want) in cases {
            let got = CniArgs::parse(input, schema).map(|a| a.ip().map(|ip| ip.to_string()));
            let got = got.as_ref().map(|o| o.as_deref()).map_err(|e| e.msg.as_str());
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn kubernetes_keys_in_any_order() {
        let keys = [
            "IgnoreUnknown=1",
            "K8S_POD_NAMESPACE=default",
            "K8S_POD_NAME=web-0",
            "K8S_POD_INFRA_CONTAINER_ID=abc123",
            "K8S_POD_UID=0f0e-11",
        ];
        // Every rotation and its reverse: containerd builds CNI_ARGS from a Go map.
        for start in 0..keys.len() {
            let mut order: Vec<&str> = keys[start..].iter().chain(&keys[..start]).copied().collect();
            for _ in 0..2 {
                let a = CniArgs::parse(&order.join(";"), WITH_K8S).unwrap();
                assert_eq!(a.pod_namespace(), Some("default"));
                assert_eq!(a.pod_name(), Some("web-0"));
                assert_eq!(a.pod_infra_container_id(), Some("abc123"));
                assert_eq!(a.pod_uid(), Some("0f0e-11"));
                order.reverse();
            }
        }
        let a = CniArgs::parse("K8S_POD_NAME=;K8S_POD_NAMESPACE=x", WITH_K8S).unwrap();
        assert_eq!((a.pod_name(), a.pod_namespace()), (None, Some("x")));
        // Without the keys in the schema they are just unknown, and ignored here.
        let a = CniArgs::parse(&keys.join(";"), HOST_LOCAL).unwrap();
        assert_eq!(a.pod_name(), None);
    }

    #[test]
    fn runtime_pairs() {
        assert_eq!(split_pairs("").unwrap(), vec![]);
        assert_eq!(split_pairs("A=1;B=").unwrap(), vec![("A".into(), "1".into()), ("B".into(), "".into())]);
        assert_eq!(split_pairs("A").unwrap_err().msg, r#"invalid CNI_ARGS pair "A""#);
    }
}
