//! Running a network config list like Go's libcni, with a result cache Go can read.
//!
//! ADD runs the plugins in order, each getting the previous result as `prevResult`;
//! DEL runs them in reverse with the cached result; CHECK, GC and STATUS follow libcni.
//! The cache file `<cacheDir>/results/<net>-<containerID>-<ifname>` is byte-compatible
//! with libcni's `cniCacheV1`, so Go tools and ours can CHECK/DEL each other's attachments.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::conf::{NetworkConfig, NetworkConfigList};
use crate::error::{Code, Context, Error, Failures, Result};
use crate::json::{self, go_quote};
use crate::skel::Command;
use crate::types::AnyResult;
use crate::{base64, invoke, validate, version};

pub const CACHE_KIND: &str = "cniCacheV1";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// What the runtime knows about one attachment (Go's `RuntimeConf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments, handed to plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

/// An attachment found in the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedAttachment {
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    pub netns: String,
    pub args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

/// Plugin search path and cache location (Go's `CNIConfig`).
#[derive(Clone, Debug)]
pub struct CniConfig {
    pub path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

fn plugin_description(p: &NetworkConfig) -> String {
    let mut out = format!("type={}", go_quote(&p.plugin_type));
    if !p.name.is_empty() {
        out += &format!(" name={}", go_quote(&p.name));
    }
    out
}

impl CniConfig {
    pub fn new(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        CniConfig { path, cache_dir: cache_dir.into() }
    }

    pub fn add_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<AnyResult> {
        let mut prev: Option<AnyResult> = None;
        for plugin in &list.plugins {
            validate::container_id(&rt.container_id)?;
            validate::network_name(&list.name)?;
            validate::interface_name(&rt.ifname)?;
            let stdin = build_config(&list.name, &list.cni_version, plugin, prev.as_ref(), Some(rt))?;
            let stdout = self
                .exec(plugin, Command::Add, &stdin, rt)
                .with_context(|| format!("plugin {} failed (add)", plugin_description(plugin)))?;
            let result = invoke::parse_result(&list.cni_version, &stdout)
                .with_context(|| format!("plugin {} failed (add)", plugin_description(plugin)))?;
            prev = Some(result);
        }
        let result = prev.expect("a list has at least one plugin");
        self.cache_add(&result, &list.bytes, &list.name, rt)
            .with_context(|| format!("failed to set network {} cached result", go_quote(&list.name)))?;
        Ok(result)
    }

    pub fn check_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        if !version::gte(&list.cni_version, "0.4.0")? {
            return Err(Error::config(format!(
                "configuration version {} does not support the CHECK command",
                go_quote(&list.cni_version)
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result(list, rt)
            .with_context(|| format!("failed to get network {} cached result", go_quote(&list.name)))?;
        for plugin in &list.plugins {
            let stdin = build_config(&list.name, &list.cni_version, plugin, cached.as_ref(), Some(rt))?;
            self.exec(plugin, Command::Check, &stdin, rt)?;
        }
        Ok(())
    }

    pub fn del_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        let mut cached = None;
        if version::gte(&list.cni_version, "0.4.0")? {
            // An unreadable cache entry must not block DEL forever: drop it, as libcni does.
            cached = self.cached_result(list, rt).unwrap_or_else(|_| {
                let _ = self.cache_del(&list.name, rt);
                None
            });
        }
        for plugin in list.plugins.iter().rev() {
            let stdin = build_config(&list.name, &list.cni_version, plugin, cached.as_ref(), Some(rt))?;
            self.exec(plugin, Command::Del, &stdin, rt)
                .with_context(|| format!("plugin {} failed (delete)", plugin_description(plugin)))?;
        }
        let _ = self.cache_del(&list.name, rt);
        Ok(())
    }

    /// DEL every cached attachment of this network not in `valid`, then send GC to each plugin.
    pub fn gc_network_list(&self, list: &NetworkConfigList, valid: &[(String, String)]) -> Result<()> {
        if list.disable_gc {
            return Ok(());
        }
        let mut failures = Failures::default();
        for a in self.cached_attachments()?.into_iter().filter(|a| a.network == list.name) {
            if valid.iter().any(|(id, ifname)| *id == a.container_id && *ifname == a.ifname) {
                continue;
            }
            let rt = RuntimeConf {
                container_id: a.container_id,
                netns: a.netns,
                ifname: a.ifname,
                args: a.args,
                capability_args: a.capability_args,
            };
            if let Err(e) = self.del_network_list(list, &rt) {
                failures
                    .push(e.context(format!("failed to delete stale attachment {} {}", rt.container_id, rt.ifname)));
            }
        }
        if version::gte(&list.cni_version, "1.1.0")? {
            let attachments: Vec<GcAttachment> =
                valid.iter().map(|(id, ifname)| GcAttachment { container_id: id, ifname }).collect();
            let attachments = serde_json::to_value(attachments).expect("attachments serialise to a Value");
            for plugin in &list.plugins {
                let mut inject = Map::new();
                inject.insert("cni.dev/valid-attachments".into(), attachments.clone());
                // The pre-1.1.0-final name, still read by some plugins.
                inject.insert("cni.dev/attachments".into(), attachments.clone());
                let stdin = inject_conf(plugin, &list.name, &list.cni_version, inject);
                if let Err(e) = self.exec(plugin, Command::Gc, &stdin, &RuntimeConf::default()) {
                    failures.push(e);
                }
            }
        }
        failures.into_result(Code::INTERNAL, "", "\n")
    }

    /// STATUS to each plugin (config lists ≥ 1.1.0 only), stopping at the first error.
    pub fn status_network_list(&self, list: &NetworkConfigList) -> Result<()> {
        if !version::gte(&list.cni_version, "1.1.0")? {
            return Ok(());
        }
        for plugin in &list.plugins {
            let stdin = inject_conf(plugin, &list.name, &list.cni_version, Map::new());
            self.exec(plugin, Command::Status, &stdin, &RuntimeConf::default())?;
        }
        Ok(())
    }

    fn exec(&self, plugin: &NetworkConfig, command: Command, stdin: &[u8], rt: &RuntimeConf) -> Result<Vec<u8>> {
        let path = invoke::find_in_path(&plugin.plugin_type, &self.path)?;
        invoke::exec_plugin(&path, stdin, &self.env(command, rt))
    }

    /// Our environment plus the CNI_* variables (Go's `invoke.Args.AsEnv`).
    fn env(&self, command: Command, rt: &RuntimeConf) -> Vec<(OsString, OsString)> {
        const OURS: [&str; 6] = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS", "CNI_IFNAME", "CNI_PATH"];
        let mut env: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| !OURS.iter().any(|o| k == o)).collect();
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        for (k, v) in [
            ("CNI_COMMAND", command.as_str().to_string()),
            ("CNI_CONTAINERID", rt.container_id.clone()),
            ("CNI_NETNS", rt.netns.clone()),
            ("CNI_ARGS", args.join(";")),
            ("CNI_IFNAME", rt.ifname.clone()),
            ("CNI_PATH", path.join(":")),
        ] {
            env.push((k.into(), v.into()));
        }
        env
    }

    fn cache_path(&self, net: &str, rt: &RuntimeConf) -> Result<PathBuf> {
        if net.is_empty() || rt.container_id.is_empty() || rt.ifname.is_empty() {
            return Err(Error::internal(format!(
                "cache file path requires network name ({}), container ID ({}), and interface name ({})",
                go_quote(net),
                go_quote(&rt.container_id),
                go_quote(&rt.ifname)
            )));
        }
        Ok(self.cache_dir.join("results").join(format!("{net}-{}-{}", rt.container_id, rt.ifname)))
    }

    /// Write the cache entry in libcni's exact `cniCacheV1` byte layout, atomically.
    fn cache_add(&self, result: &AnyResult, config: &[u8], net: &str, rt: &RuntimeConf) -> Result<()> {
        let capability_args = (!rt.capability_args.is_empty()).then(|| {
            let mut caps = Value::Object(rt.capability_args.clone());
            crate::types::sort_keys(&mut caps);
            caps
        });
        let mut result_json = result.to_json();
        crate::types::sort_keys(&mut result_json);
        let entry = CachedInfo {
            kind: CACHE_KIND,
            container_id: &rt.container_id,
            config: base64::encode(config),
            if_name: &rt.ifname,
            network_name: net,
            netns: &rt.netns,
            cni_args: &rt.args,
            capability_args,
            result: result_json,
        };
        let path = self.cache_path(net, rt)?;
        write_atomic(&path, json::to_go_compact(&entry).as_bytes()).ctx("write", path.display())
    }

    fn cache_del(&self, net: &str, rt: &RuntimeConf) -> Result<()> {
        let path = self.cache_path(net, rt)?;
        fs::remove_file(&path).ctx("remove", path.display())
    }

    /// The cached result converted to the list's version; `None` if there is no entry.
    pub fn cached_result(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Option<AnyResult>> {
        let path = self.cache_path(&list.name, rt)?;
        let Ok(bytes) = fs::read(&path) else { return Ok(None) };
        let cached = json::parse(&bytes).map_err(|e| {
            Error::decoding(format!("failed to unmarshal cached network {} config: {e}", go_quote(&list.name)))
        })?;
        let result = if cached.get("kind").and_then(Value::as_str) == Some(CACHE_KIND) {
            cached.get("result").cloned().unwrap_or(Value::Null)
        } else {
            // Pre-cniCacheV1 caches held the bare result.
            cached
        };
        let result = AnyResult::from_json_any(&result)?;
        let converted = result.convert_to(&list.cni_version).map_err(|e| {
            e.context(format!("failed to convert cached result to config version {}", go_quote(&list.cni_version)))
        })?;
        Ok(Some(converted))
    }

    /// Every valid cache entry, sorted by file name (Go's `GetCachedAttachments("")`).
    pub fn cached_attachments(&self) -> Result<Vec<CachedAttachment>> {
        let dir = self.cache_dir.join("results");
        let mut names: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("open {}: {e}", dir.display()))),
        };
        names.sort();
        Ok(names.iter().filter_map(|p| parse_cache_entry(&fs::read(p).ok()?)).collect())
    }
}

/// An attachment GC keeps (Go's `types.GCAttachment`).
#[derive(Serialize)]
struct GcAttachment<'a> {
    #[serde(rename = "containerID")]
    container_id: &'a str,
    ifname: &'a str,
}

/// A cache entry: libcni's `cachedInfo`, its field order and `omitempty`s.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CachedInfo<'a> {
    kind: &'static str,
    container_id: &'a str,
    /// Go marshals the `[]byte` as base64.
    config: String,
    if_name: &'a str,
    network_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    netns: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cni_args: &'a [(String, String)],
    // Both Go maps in libcni, so keys sorted at every level.
    #[serde(skip_serializing_if = "Option::is_none")]
    capability_args: Option<Value>,
    result: Value,
}

fn parse_cache_entry(bytes: &[u8]) -> Option<CachedAttachment> {
    let v = json::parse(bytes).ok()?;
    let o = v.as_object()?;
    if o.get("kind")?.as_str()? != CACHE_KIND {
        return None;
    }
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (ifname, network) = (text("ifName"), text("networkName"));
    if ifname.is_empty() || network.is_empty() {
        return None;
    }
    let args = o
        .get("cniArgs")
        .and_then(Value::as_array)
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let capability_args = o.get("capabilityArgs").and_then(Value::as_object).cloned().unwrap_or_default();
    Some(CachedAttachment {
        container_id: text("containerId"),
        ifname,
        network,
        netns: text("netns"),
        args,
        capability_args,
    })
}

/// The plugin's config with `name`, `cniVersion` and `extra` injected (Go's `InjectConf`).
fn inject_conf(plugin: &NetworkConfig, name: &str, cni_version: &str, extra: Map<String, Value>) -> Vec<u8> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), name.into());
    conf.insert("cniVersion".into(), cni_version.into());
    for (k, v) in extra {
        conf.insert(k, v);
    }
    let mut v = Value::Object(conf);
    crate::types::sort_keys(&mut v);
    json::to_go_compact(&v).into_bytes()
}

/// Go's `buildOneConfig`: inject name, version, prevResult and capability-filtered runtimeConfig.
fn build_config(
    name: &str,
    cni_version: &str,
    plugin: &NetworkConfig,
    prev: Option<&AnyResult>,
    rt: Option<&RuntimeConf>,
) -> Result<Vec<u8>> {
    let mut extra = Map::new();
    if let Some(prev) = prev {
        extra.insert("prevResult".into(), prev.to_json());
    }
    if let Some(rt) = rt {
        let runtime_config: Map<String, Value> = plugin
            .capabilities
            .iter()
            .filter_map(|cap| rt.capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
            .collect();
        if !runtime_config.is_empty() {
            extra.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
    }
    Ok(inject_conf(plugin, name, cni_version, extra))
}

/// Write `data` to `path` so that readers see the old file or the new one, never a torn one.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cache"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entry_layout_matches_libcni() {
        let scratch = tempfile::Builder::new().prefix("libcni-cache-").tempdir().unwrap();
        let dir = scratch.path().join("cache");
        let cni = CniConfig::new(vec![], &dir);
        let rt = RuntimeConf {
            container_id: "c1".into(),
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: serde_json::from_str(r#"{"ips":["10.0.0.5"],"aliases":{"b":1,"a":2}}"#).unwrap(),
        };
        let result = crate::invoke::parse_result(
            "1.0.0",
            br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","gateway":"10.0.0.1"}]}"#,
        )
        .unwrap();
        cni.cache_add(&result, b"{\"name\":\"n\"}", "n", &rt).unwrap();
        let written = fs::read_to_string(dir.join("results/n-c1-eth0")).unwrap();
        assert_eq!(
            written,
            r#"{"kind":"cniCacheV1","containerId":"c1","config":"eyJuYW1lIjoibiJ9","ifName":"eth0","networkName":"n","netns":"/var/run/netns/x","cniArgs":[["IgnoreUnknown","1"]],"capabilityArgs":{"aliases":{"a":2,"b":1},"ips":["10.0.0.5"]},"result":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","gateway":"10.0.0.1"}]}}"#
        );
        let attachments = cni.cached_attachments().unwrap();
        assert_eq!(attachments.len(), 1);
        assert_eq!(
            (attachments[0].container_id.as_str(), attachments[0].netns.as_str(), &attachments[0].args),
            ("c1", "/var/run/netns/x", &rt.args)
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn build_config_injects_and_filters_capabilities() {
        let plugin =
            NetworkConfig::from_bytes(br#"{"type":"x","capabilities":{"ips":true,"mac":false},"z":1}"#).unwrap();
        let rt = RuntimeConf {
            capability_args: serde_json::from_str(r#"{"ips":["10.0.0.5"],"mac":"aa","portMappings":[]}"#).unwrap(),
            ..Default::default()
        };
        let out = build_config("net", "1.1.0", &plugin, None, Some(&rt)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"capabilities":{"ips":true,"mac":false},"cniVersion":"1.1.0","name":"net","runtimeConfig":{"ips":["10.0.0.5"]},"type":"x","z":1}"#
        );
    }
}
