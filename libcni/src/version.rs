//! CNI spec versions and Go's version comparison rules.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::json;

/// Every spec version this library speaks, oldest first.
pub const ALL: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version (what Go's `version.Current()` returns).
pub const CURRENT: &str = "1.1.0";

/// The result wire layout a spec version uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 0.1.0 and 0.2.0: `ip4` / `ip6`.
    V020,
    /// 0.3.0, 0.3.1 and 0.4.0: `ips` with `version`.
    V040,
    /// 1.0.0 and 1.1.0.
    V100,
}

impl Layout {
    pub fn of(version: &str) -> Option<Layout> {
        match version {
            "0.1.0" | "0.2.0" => Some(Layout::V020),
            "0.3.0" | "0.3.1" | "0.4.0" => Some(Layout::V040),
            "1.0.0" | "1.1.0" => Some(Layout::V100),
            _ => None,
        }
    }
}

/// Go's `version.ParseVersion`: "" is 0.1.0; up to three numeric dot-separated parts.
pub fn parse(version: &str) -> Result<(i64, i64, i64)> {
    if version.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() >= 4 {
        return Err(Error::decoding(format!("invalid version {}: too many parts", json::go_quote(version))));
    }
    let part = |i: usize, name: &str| -> Result<i64> {
        match parts.get(i) {
            None => Ok(0),
            Some(p) => go_atoi(p).ok_or_else(|| {
                Error::decoding(format!(
                    "failed to convert {name} version part {}: strconv.Atoi: parsing {}: invalid syntax",
                    json::go_quote(p),
                    json::go_quote(p)
                ))
            }),
        }
    };
    Ok((part(0, "major")?, part(1, "minor")?, part(2, "micro")?))
}

/// `strconv.Atoi`: optional sign, decimal digits only.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `version.GreaterThanOrEqualTo`.
pub fn gte(version: &str, other: &str) -> Result<bool> {
    Ok(parse(version)? >= parse(other)?)
}

/// The `cniVersion` of a config, as Go's `ConfigDecoder` reads it ("" means 0.1.0).
pub fn decode_conf_version(conf: &Value) -> Result<String> {
    let Some(obj) = conf.as_object() else { return Ok("0.1.0".into()) };
    let fail = |m: String| Error::decoding(format!("decoding version from network config: {m}"));
    // Go decodes into an anonymous struct: its fields are named `.cniVersion`.
    match json::GoFields::new(obj, ".", fail).string("cniVersion")? {
        None | Some("") => Ok("0.1.0".into()),
        Some(version) => Ok(version.into()),
    }
}

/// The details Go's reconciler gives for an unsupported config version.
pub fn incompatible(config: &str, supported: &[&str]) -> Error {
    Error::new(crate::error::Code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(format!(
        "config is {}, plugin supports {}",
        json::go_quote(config),
        json::go_quote_list(supported)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_go() {
        assert_eq!(parse("").unwrap(), (0, 1, 0));
        assert_eq!(parse("1").unwrap(), (1, 0, 0));
        assert_eq!(parse("0.4").unwrap(), (0, 4, 0));
        assert_eq!(parse("1.1.0").unwrap(), (1, 1, 0));
        assert_eq!(parse("1.1.0.0").unwrap_err().msg, r#"invalid version "1.1.0.0": too many parts"#);
        assert_eq!(
            parse("1.x").unwrap_err().msg,
            r#"failed to convert minor version part "x": strconv.Atoi: parsing "x": invalid syntax"#
        );
    }

    #[test]
    fn ordering() {
        assert!(gte("0.4.0", "0.4.0").unwrap());
        assert!(gte("1.0.0", "0.4.0").unwrap());
        assert!(!gte("0.3.1", "0.4.0").unwrap());
        assert!(gte("0.10.0", "0.4.0").unwrap());
        assert!(!gte("1.0.0", "1.1.0").unwrap());
    }

    #[test]
    fn layouts() {
        let layouts: Vec<_> = ALL.iter().map(|v| Layout::of(v).unwrap()).collect();
        use Layout::*;
        assert_eq!(layouts, [V020, V020, V040, V040, V040, V100, V100]);
        assert_eq!(Layout::of("0.5.0"), None);
    }

    #[test]
    fn incompatible_details() {
        let e = incompatible("0.5.0", &ALL);
        assert_eq!(
            e.details,
            r#"config is "0.5.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
    }
}
