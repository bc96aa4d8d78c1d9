use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::ip::IpNet;
use crate::types::{v100, Result100};
use crate::version::ALL;

/// Records which verb ran; ADD answers one address in the config's version.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<Command>>,
}

impl Plugin for Recorder {
    fn add(&self, args: &CmdArgs) -> Result<AnyResult> {
        self.calls.borrow_mut().push(Command::Add);
        let r = Result100 {
            cni_version: "1.1.0".into(),
            ips: vec![v100::IpConfig { interface: None, address: IpNet::parse("10.0.0.2/24").unwrap(), gateway: None }],
            ..Default::default()
        };
        r.as_version(&args.cni_version)
    }
    fn del(&self, _: &CmdArgs) -> Result<()> {
        self.calls.borrow_mut().push(Command::Del);
        Ok(())
    }
    fn check(&self, _: &CmdArgs) -> Result<()> {
        self.calls.borrow_mut().push(Command::Check);
        Ok(())
    }
    fn gc(&self, _: &CmdArgs) -> Result<()> {
        self.calls.borrow_mut().push(Command::Gc);
        Ok(())
    }
    fn status(&self, _: &CmdArgs) -> Result<()> {
        self.calls.borrow_mut().push(Command::Status);
        Err(Error::new(Code::PLUGIN_NOT_AVAILABLE, "store unusable"))
    }
}

const INFO: PluginInfo = PluginInfo { name: "test", version: "9.9", supported: &ALL };

fn call(env: &[(&str, &str)], stdin: &str) -> (Outcome, Vec<Command>) {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let getenv = |k: &str| env.get(k).cloned().unwrap_or_default();
    let plugin = Recorder::default();
    let out = dispatch(&plugin, &INFO, &getenv, &mut stdin.as_bytes());
    let calls = plugin.calls.into_inner();
    (out, calls)
}

fn full_env(cmd: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/does-not-exist"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn error_of(out: &Outcome) -> Error {
    assert_eq!(out.exit_code, 1, "{out:?}");
    Error::from_json(&json::parse(out.stdout.as_bytes()).unwrap()).unwrap()
}

const CONF: &str = r#"{"cniVersion":"1.1.0","name":"net1","ipam":{}}"#;

#[test]
fn environment_validation_table() {
    type Env = &'static [(&'static str, &'static str)];
    let cases: &[(Env, u32, &str)] = &[
        (
            &[("CNI_COMMAND", "ADD")],
            4,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
        ),
        (&[("CNI_COMMAND", "DEL")], 4, "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing"),
        (
            &[("CNI_COMMAND", "CHECK"), ("CNI_PATH", "/x")],
            4,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
        ),
        (&[("CNI_COMMAND", "GC")], 4, "required env variables [CNI_PATH] missing"),
        (&[("CNI_COMMAND", "STATUS")], 4, "required env variables [CNI_PATH] missing"),
        (&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "bad id")], 4, "invalid characters in containerID"),
        (
            &[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "a/b")],
            4,
            "interface name contains / or : or whitespace characters",
        ),
        (
            &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "0123456789abcdef")],
            4,
            "interface name is too long",
        ),
        (&[("CNI_COMMAND", "FOO")], 4, "unknown CNI_COMMAND: FOO"),
    ];
    for (env, code, msg) in cases {
        let (out, calls) = call(env, CONF);
        let e = error_of(&out);
        assert_eq!((e.code.0, e.msg.as_str()), (*code, *msg), "{env:?}");
        assert!(calls.is_empty());
    }
}

#[test]
fn del_and_gc_do_not_need_a_netns_or_container() {
    let mut env = full_env("DEL");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    let (out, calls) = call(&env, CONF);
    assert_eq!((out.exit_code, calls), (0, vec![Command::Del]));
    let (out, calls) = call(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x"), ("CNI_CONTAINERID", "not valid!")], CONF);
    assert_eq!((out.exit_code, calls), (0, vec![Command::Gc]));
}

#[test]
fn stdin_validation() {
    let cases: &[(&str, u32, &str)] = &[
        ("", 6, "error unmarshall network config: "),
        ("{", 6, "error unmarshall network config: "),
        ("[]", 6, "error unmarshall network config: json: cannot unmarshal array"),
        (
            r#"{"name":5}"#,
            6,
            "error unmarshall network config: json: cannot unmarshal number into Go struct field .name",
        ),
        (r#"{"cniVersion":"1.1.0"}"#, 7, "missing network name"),
        (r#"{"name":"../etc"}"#, 7, "invalid characters found in network name"),
        (r#"{"name":"n","cniVersion":1}"#, 6, "decoding version from network config: json: cannot unmarshal number"),
        (r#"{"name":"n","cniVersion":"0.5.0"}"#, 1, "incompatible CNI versions"),
    ];
    for (stdin, code, prefix) in cases {
        let (out, calls) = call(&full_env("ADD"), stdin);
        let e = error_of(&out);
        assert_eq!(e.code.0, *code, "{stdin:?}: {e:?}");
        assert!(e.msg.starts_with(prefix), "{stdin:?}: {e:?}");
        assert!(calls.is_empty());
    }
    let huge = format!(r#"{{"name":"n","pad":"{}"}}"#, "x".repeat(MAX_STDIN as usize));
    assert_eq!(error_of(&call(&full_env("ADD"), &huge).0).code, Code::DECODING_FAILURE);
}

#[test]
fn version_and_about() {
    let (out, _) = call(&[("CNI_COMMAND", "VERSION")], "not json at all");
    assert_eq!(out.stdout, "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n");
    assert_eq!(out.exit_code, 0);
    let (out, _) = call(&[], "");
    assert_eq!((out.stdout.as_str(), out.exit_code), ("", 0));
    assert_eq!(out.stderr, "CNI test plugin version 9.9\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n");
}

#[test]
fn verbs_are_gated_by_config_version() {
    for version in ALL.iter().chain(&["", "0.4.5", "2.0.0"]) {
        let conf = format!(r#"{{"cniVersion":"{version}","name":"n"}}"#);
        for (verb, floor) in [("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")] {
            let (out, calls) = call(&full_env(verb), &conf);
            let effective = if version.is_empty() { "0.1.0" } else { version };
            let allowed = crate::version::gte(effective, floor).unwrap();
            if !allowed {
                let e = error_of(&out);
                assert_eq!((e.code.0, e.msg), (1, format!("config version does not allow {verb}")), "{verb} {version}");
            } else if !ALL.contains(version) {
                let e = error_of(&out);
                assert_eq!(e.code.0, 1, "{verb} {version}");
                assert!(calls.is_empty());
            } else {
                assert_eq!(calls.len(), 1, "{verb} {version}");
            }
        }
    }
}

#[test]
fn add_prints_the_result_in_the_config_version() {
    for version in ALL {
        let conf = format!(r#"{{"cniVersion":"{version}","name":"n"}}"#);
        let (out, calls) = call(&full_env("ADD"), &conf);
        assert_eq!((out.exit_code, calls), (0, vec![Command::Add]), "{version}");
        let printed = json::parse(out.stdout.as_bytes()).unwrap();
        assert_eq!(printed["cniVersion"], version, "{version}");
    }
}

#[test]
fn plugin_errors_keep_their_code() {
    let (out, _) = call(&full_env("STATUS"), CONF);
    let e = error_of(&out);
    assert_eq!((e.code, e.msg.as_str()), (Code::PLUGIN_NOT_AVAILABLE, "store unusable"));
}

#[test]
fn own_netns_is_refused_before_add() {
    let mut env = full_env("ADD");
    env[2] = ("CNI_NETNS", "/proc/self/ns/net");
    let (out, calls) = call(&env, CONF);
    assert_eq!(error_of(&out).code, Code::INVALID_NETNS);
    assert!(calls.is_empty(), "nothing may be allocated");
    env.push(("CNI_NETNS_OVERRIDE", "true"));
    let (out, calls) = call(&env, CONF);
    assert_eq!((out.exit_code, calls), (0, vec![Command::Add]));
}
