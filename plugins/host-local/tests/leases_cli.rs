//! `host-local leases|release|gc` on state produced by real ADD/DEL calls.

mod common;

use std::process::Command;

use common::{ours, run, Call, TempDir};

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ours()).args(args).env_remove("CNI_COMMAND").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pod_args(name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME={name};K8S_POD_UID=u-{name}")
}

/// Network "edge": web-0 active, api-0 held (its sandbox was deleted), a lease written the way
/// upstream writes it (no pod record), and an OpenYurt marker. Network "other": one lease.
fn scene(tag: &str) -> TempDir {
    let dd = TempDir::new(tag);
    let conf = |net: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","ipam":{{"dataDir":"{}","subnet":"10.60.0.0/24"}}}}"#,
            dd.display()
        )
    };
    for (pod, sandbox) in [("web-0", "sb-web"), ("api-0", "sb-api")] {
        assert!(run(&ours(), &Call::new("ADD", sandbox, &conf("edge")).args(&pod_args(pod))).ok());
    }
    assert!(run(&ours(), &Call::new("DEL", "sb-api", &conf("edge")).args(&pod_args("api-0"))).ok());
    std::fs::write(dd.path().join("edge/10.60.0.50"), "upstream-sb\r\nnet1").unwrap();
    std::fs::write(dd.path().join("edge/10.60.0.60_kube-system_coredns-x"), "").unwrap();
    assert!(run(&ours(), &Call::new("ADD", "sb-o", &conf("other"))).ok());
    dd
}

#[test]
fn leases_json_has_every_field_for_every_address() {
    let dd = scene("cli-json");
    let (code, out, err) = cli(&["leases", "--data-dir", &dd.display(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let by_ip = |ip: &str| rows.iter().find(|r| r["ip"] == ip).unwrap_or_else(|| panic!("no {ip} in {out}"));
    let web = by_ip("10.60.0.2");
    assert_eq!(web["network"], "edge");
    assert_eq!(web["containerId"], "sb-web");
    assert_eq!(web["ifname"], "eth0");
    assert_eq!(web["podNamespace"], "prod");
    assert_eq!(web["podName"], "web-0");
    assert_eq!(web["state"], "active");
    assert!(libcni::time::parse_rfc3339(web["since"].as_str().unwrap()).is_some());
    assert_eq!(by_ip("10.60.0.3")["state"], "held");
    assert_eq!(by_ip("10.60.0.3")["podName"], "api-0");
    let upstream = by_ip("10.60.0.50");
    assert_eq!(
        (upstream["containerId"].as_str(), upstream["ifname"].as_str(), upstream["podName"].as_str()),
        (Some("upstream-sb"), Some("net1"), Some(""))
    );
    assert_eq!(upstream["state"], "active");
    let marker = by_ip("10.60.0.60");
    assert_eq!(
        (marker["state"].as_str(), marker["podNamespace"].as_str(), marker["containerId"].as_str()),
        (Some("held"), Some("kube-system"), Some(""))
    );
    assert_eq!(rows.iter().filter(|r| r["network"] == "other").count(), 1);
    assert_eq!(rows.len(), 5);
    for row in &rows {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["ip", "network", "containerId", "ifname", "podNamespace", "podName", "state", "since"]);
    }
}

#[test]
fn leases_table_is_aligned() {
    let dd = scene("cli-table");
    let (code, out, _) = cli(&["leases", "--data-dir", &dd.display(), "--network", "edge"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("IP "));
    let state_col = lines[0].find("STATE").unwrap();
    for line in &lines[1..] {
        let state = &line[state_col..state_col + 6];
        assert!(state == "active" || state.starts_with("held"), "{line:?} in\n{out}");
    }
    assert!(out.contains("10.60.0.3 ") && out.contains("api-0"));
}

#[test]
fn release_frees_held_addresses_only() {
    let dd = scene("cli-release");
    let d = dd.display();
    let (code, _, err) = cli(&["release", "--data-dir", &d, "--network", "edge", "10.60.0.2"]);
    assert_eq!(code, 1);
    assert!(err.contains("10.60.0.2 is in use by container sb-web (not held)"), "{err}");
    let (code, out, _) = cli(&["release", "--data-dir", &d, "--network", "edge", "10.60.0.3"]);
    assert_eq!((code, out.as_str()), (0, "released 10.60.0.3\n"));
    assert!(!dd.path().join("edge/10.60.0.3").exists() && !dd.path().join("edge/10.60.0.3.pod").exists());
    let (code, _, _) = cli(&["release", "--data-dir", &d, "--network", "edge", "10.60.0.60"]);
    assert_eq!(code, 0);
    assert!(!dd.path().join("edge/10.60.0.60_kube-system_coredns-x").exists());
    assert_eq!(cli(&["release", "--data-dir", &d, "--network", "edge", "10.60.0.99"]).0, 1);
    assert_eq!(cli(&["release", "--data-dir", &d, "--network", "nope", "10.60.0.3"]).0, 1);
}

#[test]
fn gc_drops_stale_holds() {
    let dd = scene("cli-gc");
    let d = dd.display();
    let (code, out, _) = cli(&["gc", "--data-dir", &d, "--network", "edge", "--older-than", "1h"]);
    assert_eq!((code, out.as_str()), (0, ""), "nothing is an hour old");
    let (code, out, _) = cli(&["gc", "--data-dir", &d, "--network", "edge"]);
    assert_eq!(code, 0);
    assert_eq!(out, "released 10.60.0.3\nreleased 10.60.0.60 (OpenYurt marker of kube-system/coredns-x)\n");
    assert!(
        dd.path().join("edge/10.60.0.2").exists() && dd.path().join("edge/10.60.0.50").exists(),
        "active leases stay"
    );
}

#[test]
fn every_command_has_help_and_bad_usage_says_so() {
    for cmd in ["leases", "release", "gc"] {
        let (code, out, _) = cli(&[cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(out.starts_with(&format!("host-local {cmd} ")), "{out}");
    }
    let (code, out, _) = cli(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("host-local leases") && out.contains("host-local gc"));
    assert_eq!(cli(&["leases", "--bogus"]).0, 2);
    assert_eq!(cli(&["frobnicate"]).0, 2);
    assert_eq!(cli(&["gc", "--data-dir", "/tmp"]).0, 1, "--network is required");
}

/// `ipam.logFile`: one line per call, with the command, container, pod and addresses; stdout
/// carries only the result or the error JSON.
#[test]
fn the_operations_log_records_every_call() {
    let dd = TempDir::new("oplog");
    let log = dd.path().join("host-local.log");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"edge","ipam":{{"dataDir":"{}","subnet":"10.61.0.0/24","logFile":"{}"}}}}"#,
        dd.display(),
        log.display()
    );
    let add = run(&ours(), &Call::new("ADD", "sb-web", &conf).args(&pod_args("web-0")));
    assert!(add.ok() && add.stderr.is_empty());
    assert!(serde_json::from_str::<serde_json::Value>(&add.stdout).is_ok(), "stdout is only the result");
    assert!(run(&ours(), &Call::new("DEL", "sb-web", &conf).args(&pod_args("web-0"))).ok());
    let failed = run(&ours(), &Call::new("ADD", "sb-x", &conf).args("IP=10.99.0.1"));
    assert!(!failed.ok());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines {
        assert!(libcni::time::parse_rfc3339(line.split(' ').next().unwrap()).is_some(), "timestamped: {line}");
    }
    assert!(lines[0].contains(" INFO ok plugin=host-local cmd=ADD network=edge container=sb-web ifname=eth0 pod=prod/web-0 ips=10.61.0.2 how=roundrobin"), "{}", lines[0]);
    assert!(
        lines[1].contains(" INFO ok plugin=host-local cmd=DEL") && lines[1].ends_with("held=10.61.0.2"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(" ERROR failed")
            && lines[2].contains("code=7")
            && lines[2].contains("error=\"failed to allocate all requested IPs: 10.99.0.1\""),
        "{}",
        lines[2]
    );
}

/// delegated-ipam logs too (its `ipam.logFile`), naming the delegate.
#[test]
fn delegated_ipam_logs_its_calls() {
    let dd = TempDir::new("oplog-dipam");
    let bin = dd.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(ours(), bin.join("host-local")).unwrap();
    let plugin = ours().with_file_name("delegated-ipam");
    assert!(plugin.is_file(), "{} is missing: cargo build --workspace first", plugin.display());
    let log = dd.path().join("dipam.log");
    let conf = format!(
        r#"{{"cniVersion":"0.3.1","name":"cilium","ipam":{{"type":"delegated-ipam","logFile":"{}","delegate":{{"type":"host-local","dataDir":"{}","subnet":"10.62.0.0/24"}}}}}}"#,
        log.display(),
        dd.display()
    );
    let out = Command::new(&plugin)
        .env_clear()
        .envs([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .env("CNI_PATH", &bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), conf.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "INFO ok plugin=delegated-ipam cmd=ADD container=c1 ifname=eth0 delegate=host-local ips=10.62.0.2/24"
        ),
        "{text}"
    );
}
