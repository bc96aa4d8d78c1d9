//! Network configurations and configuration lists, loaded like Go's `libcni/conf.go`.
//!
//! Unknown fields are kept: each plugin's raw JSON object goes to the plugin untouched
//! apart from what the runtime injects.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Context, Error, Result};
use crate::json::{self, GoFields};
use crate::version;

/// One plugin's configuration inside a list (or a standalone `.conf`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    pub plugin_type: String,
    pub name: String,
    pub cni_version: String,
    /// Capabilities the plugin declares it supports (`"capabilities": {"ips": true}`).
    pub capabilities: Vec<String>,
    /// The plugin's whole config object, unknown fields included.
    pub raw: Map<String, Value>,
}

/// A `.conflist`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<NetworkConfig>,
    /// The file's exact bytes: this is what the result cache stores as `config`.
    pub bytes: Vec<u8>,
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

impl NetworkConfig {
    /// Go's `ConfFromBytes`.
    pub fn from_value(v: &Value) -> Result<NetworkConfig> {
        let err = |m: String| Error::config(format!("error parsing configuration: {m}"));
        let Value::Object(raw) = v else { return Err(err(json::value_type_error(v, "types.NetConf"))) };
        let f = GoFields::new(raw, "NetConf.", err);
        let text = |key: &str| -> Result<String> { Ok(f.string(key)?.unwrap_or_default().into()) };
        let plugin_type = text("type")?;
        if plugin_type.is_empty() {
            return Err(err("missing 'type'".into()));
        }
        let capabilities = match f.get("capabilities") {
            None => Vec::new(),
            Some(Value::Object(caps)) => {
                caps.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(k, _)| k.clone()).collect()
            }
            Some(other) => return Err(f.type_error("capabilities", other, "map[string]bool")),
        };
        Ok(NetworkConfig {
            plugin_type,
            name: text("name")?,
            cni_version: text("cniVersion")?,
            capabilities,
            raw: raw.clone(),
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfig> {
        let v = json::parse(bytes).map_err(|e| Error::config(format!("error parsing configuration: {e}")))?;
        Self::from_value(&v)
    }
}

impl NetworkConfigList {
    /// Go's `ConfListFromBytes` (current libcni: `cniVersions`, `disableCheck`, `disableGC`).
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfigList> {
        let err = |m: String| Error::config(format!("error parsing configuration list: {m}"));
        let v = json::parse(bytes).map_err(|e| err(e.to_string()))?;
        let Value::Object(list) = &v else {
            return Err(err(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json::go_kind(&v)
            )));
        };
        let name = match list.get("name") {
            None => return Err(err("no name".into())),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err(format!("invalid name type {}", go_type(other)))),
        };
        let mut cni_version = match list.get("cniVersion") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err(format!("invalid cniVersion type {}", go_type(other)))),
        };
        if let Some(raw) = list.get("cniVersions") {
            cni_version = pick_version(raw, &cni_version).map_err(err)?;
        }
        let read_bool = |key: &str| -> Result<bool> {
            match list.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) => match s.to_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    lower => Err(err(format!("invalid value {} for {key}", json::go_quote(lower)))),
                },
                Some(other) => Err(err(format!("invalid type {} for {key}", go_type(other)))),
            }
        };
        let disable_check = read_bool("disableCheck")?;
        let disable_gc = read_bool("disableGC")?;
        let plugins = match list.get("plugins") {
            None => return Err(err("no 'plugins' key".into())),
            Some(Value::Array(p)) if p.is_empty() => return Err(err("no plugins in list".into())),
            Some(Value::Array(p)) => p,
            Some(other) => return Err(err(format!("invalid 'plugins' type {}", go_type(other)))),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| NetworkConfig::from_value(p).with_context(|| format!("failed to parse plugin config {i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(NetworkConfigList { name, cni_version, disable_check, disable_gc, plugins, bytes: bytes.to_vec() })
    }

    /// Go's `ConfListFromConf`: wrap a single plugin config into a list.
    pub fn from_conf(conf: &NetworkConfig) -> Result<NetworkConfigList> {
        let mut list = Map::new();
        list.insert("cniVersion".into(), conf.cni_version.clone().into());
        list.insert("name".into(), conf.name.clone().into());
        let mut plugin = Value::Object(conf.raw.clone());
        crate::types::sort_keys(&mut plugin);
        list.insert("plugins".into(), Value::Array(vec![plugin]));
        Self::from_bytes(json::to_go_compact(&Value::Object(list)).as_bytes())
    }
}

/// The highest of `cniVersions` (plus `cniVersion`) that this library implements.
fn pick_version(raw: &Value, cni_version: &str) -> std::result::Result<String, String> {
    let Value::Array(items) = raw else {
        return Err(format!("invalid type for cniVersions: {}", go_type(raw)));
    };
    let mut candidates = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(v) = item else {
            return Err(format!("invalid type for cniVersions index {i}: {}", go_type(item)));
        };
        let parsed = version::parse(v).map_err(|e| format!("invalid cniVersions entry {v} at index {i}: {}", e.msg))?;
        if parsed <= version::parse(version::CURRENT).expect("CURRENT parses") {
            candidates.push((parsed, v.clone()));
        }
    }
    if !cni_version.is_empty() {
        let parsed = version::parse(cni_version).map_err(|e| format!("invalid cniVersion {cni_version}: {}", e.msg))?;
        if parsed <= version::parse(version::CURRENT).expect("CURRENT parses") {
            candidates.push((parsed, cni_version.to_string()));
        }
    }
    Ok(candidates.into_iter().max_by(|a, b| a.0.cmp(&b.0)).map(|(_, v)| v).unwrap_or_else(|| cni_version.to_string()))
}

/// Config files in `dir` with one of `extensions`, sorted; a missing dir has none.
pub fn conf_files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("open {}: {e}", dir.display()))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.iter().any(|want| want.trim_start_matches('.') == x))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).ctx("error reading", path.display())
}

/// Go's `LoadConfList`: a `.conflist` named `name`, else a `.conf`/`.json` wrapped into a list.
pub fn load_conf_list(dir: &Path, name: &str) -> Result<NetworkConfigList> {
    let lists = conf_files(dir, &[".conflist"])?;
    for file in &lists {
        let list = NetworkConfigList::from_bytes(&read(file)?)?;
        if list.name == name {
            return Ok(list);
        }
    }
    let singles = conf_files(dir, &[".conf", ".json"])?;
    if singles.is_empty() {
        if lists.is_empty() {
            return Err(Error::config(format!("no net configurations found in {}", dir.display())));
        }
        return Err(not_found(dir, name));
    }
    for file in &singles {
        let bytes = read(file)?;
        let conf = NetworkConfig::from_bytes(&bytes).with_context(|| format!("error parsing {}", file.display()))?;
        if conf.name == name {
            return NetworkConfigList::from_conf(&conf);
        }
    }
    Err(not_found(dir, name))
}

fn not_found(dir: &Path, name: &str) -> Error {
    Error::config(format!("no net configuration with name \"{name}\" in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_and_keeps_unknown_fields() {
        let bytes = br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"TRUE","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","x-extra":[1]}},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#;
        let list = NetworkConfigList::from_bytes(bytes).unwrap();
        assert_eq!(
            (list.name.as_str(), list.cni_version.as_str(), list.disable_check, list.disable_gc),
            ("n", "1.0.0", true, false)
        );
        assert_eq!(list.plugins[0].raw["ipam"]["x-extra"], serde_json::json!([1]));
        assert_eq!(list.plugins[1].capabilities, vec!["portMappings".to_string()]);
        assert_eq!(list.bytes, bytes);
    }

    #[test]
    fn list_errors_match_go() {
        let cases: &[(&str, &str)] = &[
            (r#"{"plugins":[]}"#, "error parsing configuration list: no name"),
            (r#"{"name":1}"#, "error parsing configuration list: invalid name type float64"),
            (r#"{"name":"n"}"#, "error parsing configuration list: no 'plugins' key"),
            (r#"{"name":"n","plugins":[]}"#, "error parsing configuration list: no plugins in list"),
            (
                r#"{"name":"n","plugins":[{}]}"#,
                "failed to parse plugin config 0: error parsing configuration: missing 'type'",
            ),
            (
                r#"{"name":"n","disableGC":"maybe","plugins":[{"type":"x"}]}"#,
                "error parsing configuration list: invalid value \"maybe\" for disableGC",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(NetworkConfigList::from_bytes(input.as_bytes()).unwrap_err().msg, *want, "{input}");
        }
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let list = NetworkConfigList::from_bytes(
            br#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","9.0.0","0.3.1"],"plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.0.0");
    }

    #[test]
    fn loads_lists_and_wraps_single_confs() {
        let scratch = tempfile::Builder::new().prefix("libcni-conf-").tempdir().unwrap();
        let dir = scratch.path().to_path_buf();
        assert!(load_conf_list(&dir, "a").unwrap_err().msg.starts_with("no net configurations found in"));
        std::fs::write(dir.join("10-a.conflist"), r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x"}]}"#)
            .unwrap();
        std::fs::write(dir.join("20-b.conf"), r#"{"cniVersion":"0.3.1","name":"b","type":"y","z":{"b":1,"a":2}}"#)
            .unwrap();
        assert_eq!(load_conf_list(&dir, "a").unwrap().plugins[0].plugin_type, "x");
        let b = load_conf_list(&dir, "b").unwrap();
        assert_eq!(
            std::str::from_utf8(&b.bytes).unwrap(),
            r#"{"cniVersion":"0.3.1","name":"b","plugins":[{"cniVersion":"0.3.1","name":"b","type":"y","z":{"a":2,"b":1}}]}"#
        );
        assert_eq!(
            load_conf_list(&dir, "c").unwrap_err().msg,
            format!("no net configuration with name \"c\" in {}", dir.display())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
