//! delegated-ipam: the IPAM plugin cilium-cni runs in Cilium's `delegated-plugin` IPAM mode.
//!
//! cilium-cni passes its whole network config on stdin, unmodified, and its own environment
//! with CNI_COMMAND overridden. Its `ipam` section names us and carries the real IPAM
//! under `delegate`:
//!
//! ```json
//! "ipam": {"type": "delegated-ipam",
//!          "delegate": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}}
//! ```
//!
//! We run the delegate with the same config, its `ipam` replaced by `delegate`, and return
//! what cilium can use: at most one address per family, in the config's cniVersion. cilium
//! never calls DEL after a failed IPAM ADD, so ADD is atomic here: anything that fails after
//! the delegate allocated is undone with a DEL before the error is returned.

use libcni::invoke;
use libcni::ip::to_v4;
use libcni::json::{self, get_ci};
use libcni::log::Log;
use libcni::skel::{CmdArgs, Command, Plugin};
use libcni::types::AnyResult;
use libcni::{Error, Result};
use serde_json::Value;

pub struct DelegatedIpam;

/// The delegate's plugin type and the config it is run with.
struct Delegate {
    plugin_type: String,
    stdin: Vec<u8>,
}

impl Delegate {
    /// `ipam.delegate` from the config; every problem with it is a config error (7).
    fn from_conf(conf: &Value) -> Result<Delegate> {
        let err = |msg: &str| Error::config(format!("delegated-ipam: {msg}"));
        let ipam = conf
            .as_object()
            .and_then(|o| get_ci(o, "ipam"))
            .and_then(Value::as_object)
            .ok_or_else(|| err("the config has no 'ipam' object"))?;
        let delegate = get_ci(ipam, "delegate").filter(|d| !d.is_null()).ok_or_else(|| {
            err("ipam.delegate is missing: it names the IPAM plugin to run, e.g. {\"type\": \"host-local\", ...}")
        })?;
        let plugin_type = delegate
            .as_object()
            .and_then(|d| get_ci(d, "type"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("ipam.delegate.type is missing"))?;
        if plugin_type.contains('/') || plugin_type.contains("..") || plugin_type.contains('\0') {
            return Err(err(&format!(
                "ipam.delegate.type {} must be a plugin name on CNI_PATH, not a path",
                json::go_quote(plugin_type)
            )));
        }
        let mut delegate_conf = conf.clone();
        delegate_conf["ipam"] = delegate.clone();
        Ok(Delegate { plugin_type: plugin_type.to_string(), stdin: json::to_go_compact(&delegate_conf).into_bytes() })
    }

    /// Run the delegate for `command`; its errors keep their code and message, prefixed
    /// with which delegate failed doing what.
    fn run(&self, command: Command) -> Result<Option<AnyResult>> {
        invoke::delegate(command, &self.plugin_type, &self.stdin).map_err(|e| {
            let failed =
                Error { msg: format!("delegate {} failed ({}): {}", self.plugin_type, command.as_str(), e.msg), ..e };
            if command == Command::Del {
                return without_not_found(failed);
            }
            failed
        })
    }
}

/// containerd treats a DEL error whose text contains "not found" as success; a real DEL
/// failure must not be swallowed that way.
fn without_not_found(mut e: Error) -> Error {
    e.msg = e.msg.replace("not found", "missing");
    e.details = e.details.replace("not found", "missing");
    e
}

/// What cilium can use: at least one address, at most one per family, in `version`.
fn for_cilium(result: &AnyResult, version: &str, delegate: &str) -> Result<AnyResult> {
    let full = result.to_v100();
    let (v4, v6): (Vec<_>, Vec<_>) = full.ips.iter().map(|c| c.address).partition(|a| to_v4(a.addr).is_some());
    for (family, addrs) in [("IPv4", &v4), ("IPv6", &v6)] {
        if addrs.len() > 1 {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            return Err(Error::config(format!(
                "delegated-ipam: delegate {delegate} returned {} {family} addresses ({}); cilium uses only one per family: give the delegate one range set per family",
                addrs.len(),
                list.join(", ")
            )));
        }
    }
    if v4.is_empty() && v6.is_empty() {
        return Err(Error::internal(format!("delegated-ipam: delegate {delegate} returned no address")));
    }
    result.convert_to(version)
}

/// The operations log (`ipam.logFile`, beside `delegate`), with this call's identity.
fn op_log(args: &CmdArgs) -> Log {
    let path = args.conf.get("ipam").and_then(|i| i.get("logFile")).and_then(Value::as_str).filter(|p| !p.is_empty());
    let delegate =
        args.conf.get("ipam").and_then(|i| i.get("delegate")).and_then(|d| d.get("type")).and_then(Value::as_str);
    Log::new(path.map(Into::into))
        .with("plugin", "delegated-ipam")
        .with("cmd", args.command.as_str())
        .with("container", args.container_id.clone())
        .with("ifname", args.ifname.clone())
        .with("delegate", delegate.unwrap_or_default())
}

impl Plugin for DelegatedIpam {
    fn add(&self, args: &CmdArgs) -> Result<AnyResult> {
        op_log(args).outcome(add(args), |r| {
            let ips: Vec<String> = r.to_v100().ips.iter().map(|c| c.address.to_string()).collect();
            vec![("ips", ips.join(","))]
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        op_log(args).outcome(forward(args, Command::Del), |_| Vec::new())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        op_log(args).outcome(forward(args, Command::Check), |_| Vec::new())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        op_log(args).outcome(forward(args, Command::Gc), |_| Vec::new())
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        op_log(args).failure(forward(args, Command::Status))
    }
}

fn add(args: &CmdArgs) -> Result<AnyResult> {
    let delegate = Delegate::from_conf(&args.conf)?;
    let result = delegate
        .run(Command::Add)?
        .ok_or_else(|| Error::internal(format!("delegate {} printed no result", delegate.plugin_type)))?;
    for_cilium(&result, &args.cni_version, &delegate.plugin_type).map_err(|e| {
        // cilium-cni does not DEL after a failed IPAM ADD: release here, or it leaks.
        match delegate.run(Command::Del) {
            Ok(_) => e,
            Err(del) => Error { msg: format!("{}; releasing the allocation failed too: {}", e.msg, del.msg), ..e },
        }
    })
}

/// DEL, CHECK, GC and STATUS: the delegate's answer, passed on.
///
/// DEL's idempotence (unknown container, empty netns, missing state) is the delegate's job,
/// as every IPAM must accept repeated DELs.
fn forward(args: &CmdArgs, command: Command) -> Result<()> {
    let delegate =
        Delegate::from_conf(&args.conf).map_err(|e| if command == Command::Del { without_not_found(e) } else { e })?;
    delegate.run(command).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcni::types::{v100, Result100};
    use libcni::Code;

    fn conf(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_delegate_gets_the_config_with_ipam_replaced() {
        let c = conf(
            r#"{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni","mtu":1450,"ipam":{"type":"delegated-ipam","delegate":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir":"/var/lib/cni/networks/cilium"}},"prevResult":{"x":1}}"#,
        );
        let d = Delegate::from_conf(&c).unwrap();
        assert_eq!(d.plugin_type, "host-local");
        assert_eq!(
            String::from_utf8(d.stdin).unwrap(),
            r#"{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni","mtu":1450,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir":"/var/lib/cni/networks/cilium"},"prevResult":{"x":1}}"#
        );
    }

    #[test]
    fn bad_delegate_configs_are_config_errors() {
        for (c, msg) in [
            (r#"{"name":"n"}"#, "no 'ipam' object"),
            (r#"{"name":"n","ipam":{"type":"delegated-ipam"}}"#, "ipam.delegate is missing"),
            (r#"{"name":"n","ipam":{"delegate":{}}}"#, "ipam.delegate.type is missing"),
            (r#"{"name":"n","ipam":{"delegate":{"type":"../../bin/sh"}}}"#, "must be a plugin name on CNI_PATH"),
            (r#"{"name":"n","ipam":{"delegate":{"type":"/usr/bin/true"}}}"#, "must be a plugin name on CNI_PATH"),
        ] {
            let e = Delegate::from_conf(&conf(c)).err().unwrap();
            assert_eq!(e.code, Code::INVALID_NETWORK_CONFIG, "{c}");
            assert!(e.msg.contains(msg), "{c}: {}", e.msg);
        }
    }

    fn result(addrs: &[&str]) -> AnyResult {
        AnyResult::V100(Result100 {
            cni_version: "1.0.0".into(),
            ips: addrs
                .iter()
                .map(|a| v100::IpConfig {
                    interface: None,
                    address: libcni::ip::IpNet::parse(a).unwrap(),
                    gateway: None,
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn one_address_per_family_in_the_config_version() {
        let ok = for_cilium(&result(&["10.0.0.2/24", "2001:db8::2/64"]), "0.3.1", "host-local").unwrap();
        assert_eq!(ok.version(), "0.3.1");
        let e = for_cilium(&result(&["10.0.0.2/24", "10.1.0.2/24"]), "0.3.1", "host-local").unwrap_err();
        assert_eq!(e.code, Code::INVALID_NETWORK_CONFIG);
        assert!(e.msg.contains("returned 2 IPv4 addresses (10.0.0.2/24, 10.1.0.2/24)"), "{}", e.msg);
        assert!(for_cilium(&result(&[]), "0.3.1", "host-local").is_err());
    }

    #[test]
    fn del_errors_never_say_not_found() {
        let e = without_not_found(Error::io("lease dir not found").with_details("not found"));
        assert!(!e.msg.contains("not found") && !e.details.contains("not found"));
    }
}
