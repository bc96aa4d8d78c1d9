//! `host-local metrics` on state produced by real calls, read back with Prometheus's own
//! text parser (`prometheus_client` from PyPI, in the e2e venv that scripts/test.sh builds).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{ours, run, Call, TempDir};
use serde_json::Value;

fn pod_args(pod: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}")
}

/// The IPAM of network `edge`: a /29 (five addresses) and a v6 /125 (six).
fn ipam(dd: &TempDir) -> String {
    format!(
        r#"{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.70.0.0/29"}}],[{{"subnet":"2001:db8:70::/125"}}]]}}"#,
        dd.path().join("data").display()
    )
}

fn conf(dd: &TempDir) -> String {
    format!(r#"{{"cniVersion":"1.0.0","name":"edge","ipam":{}}}"#, ipam(dd))
}

/// The conflist a node has for `edge`, in `conf/`.
fn write_conflist(dd: &TempDir) {
    let dir = dd.path().join("conf");
    std::fs::create_dir_all(&dir).unwrap();
    let list = format!(r#"{{"cniVersion":"1.0.0","name":"edge","plugins":[{{"type":"bridge","ipam":{}}}]}}"#, ipam(dd));
    std::fs::write(dir.join("10-edge.conflist"), list).unwrap();
}

fn add(dd: &TempDir, pod: &str, sandbox: &str) -> bool {
    run(&ours(), &Call::new("ADD", sandbox, &conf(dd)).args(&pod_args(pod))).ok()
}

fn metrics(dd: &TempDir) -> String {
    let out = Command::new(ours())
        .args(["metrics", "--data-dir"])
        .arg(dd.path().join("data"))
        .arg("--conf-dir")
        .arg(dd.path().join("conf"))
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The exposition parsed by prometheus_client: `[[family, type, [[sample, labels, value]]]]`.
fn parse(text: &str) -> Value {
    let python =
        std::env::var("E2E_PYTHON").expect("E2E_PYTHON: scripts/test.sh builds the venv with prometheus_client");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([[f.name, f.type, [[s.name, s.labels, s.value] for s in f.samples]]
                  for f in text_string_to_metric_families(sys.stdin.read())]))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser rejected:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parsed.as_array().unwrap().iter().flat_map(|f| f[2].as_array().unwrap().iter());
    let found: Vec<f64> = samples
        .filter(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {parsed}");
    found[0]
}

fn family_type(parsed: &Value, family: &str) -> String {
    let f = parsed.as_array().unwrap().iter().find(|f| f[0] == family).unwrap_or_else(|| panic!("{family}"));
    f[1].as_str().unwrap().to_string()
}

#[test]
#[ignore = "needs the e2e venv with prometheus_client: run scripts/test.sh"]
fn metrics_count_the_pool_and_the_events_and_parse_as_prometheus() {
    let dd = TempDir::new("metrics");
    write_conflist(&dd);
    let store = dd.path().join("data/edge");
    // web's sandbox is deleted: a hold in each range set. Four pods fill the /29 but for it.
    assert!(add(&dd, "web", "w1"));
    assert!(run(&ours(), &Call::new("DEL", "w1", &conf(&dd)).args(&pod_args("web"))).ok());
    for i in 0..4 {
        assert!(add(&dd, &format!("p{i}"), &format!("s{i}")));
    }
    let before = parse(&metrics(&dd));
    let v4 = |state| [("network", "edge"), ("range_set", "0"), ("state", state)];
    let v6 = |state| [("network", "edge"), ("range_set", "1"), ("state", state)];
    for (state, n) in [("total", 5.0), ("active", 4.0), ("held", 1.0), ("free", 0.0)] {
        assert_eq!(value(&before, "host_local_addresses", &v4(state)), n, "{state}");
    }
    for (state, n) in [("total", 6.0), ("active", 4.0), ("held", 1.0), ("free", 1.0)] {
        assert_eq!(value(&before, "host_local_addresses", &v6(state)), n, "{state}");
    }
    let oldest = value(&before, "host_local_oldest_hold_seconds", &[("range_set", "0")]);
    assert!(oldest > 0.0 && oldest < 600.0, "{oldest}");

    // A new pod reclaims web's v4 hold; the next one is refused (the v4 set is full).
    assert!(add(&dd, "late", "l1"));
    assert!(!add(&dd, "later", "l2"));
    // Crash debris: an empty lease, a torn pod record, an old temp file.
    std::fs::write(store.join("10.70.0.9"), "").unwrap(); // outside the range: still debris
    std::fs::write(store.join("2001:db8:70::2.pod"), "{\"containerId\":").unwrap();
    let temp = store.join(".hostlocal/.tmp-1-1");
    std::fs::write(&temp, "x").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&temp).unwrap().set_modified(old).unwrap();
    std::fs::remove_file(store.join(".hostlocal/index")).unwrap(); // so that the directory is read

    let after = parse(&metrics(&dd));
    assert_eq!(family_type(&after, "host_local_holds_reclaimed"), "counter");
    assert_eq!(value(&after, "host_local_holds_reclaimed_total", &[("range_set", "0")]), 1.0);
    assert_eq!(value(&after, "host_local_holds_reclaimed_total", &[("range_set", "1")]), 0.0);
    assert_eq!(value(&after, "host_local_adds_refused_total", &[("range_set", "0")]), 1.0);
    assert_eq!(value(&after, "host_local_debris_cleaned_total", &[("network", "edge")]), 3.0);
    assert_eq!(value(&after, "host_local_addresses", &v4("held")), 0.0);
    assert_eq!(value(&after, "host_local_oldest_hold_seconds", &[("range_set", "0")]), 0.0);
    // The counters are the store's: the next run shows the same, not counted twice.
    let again = parse(&metrics(&dd));
    assert_eq!(value(&again, "host_local_debris_cleaned_total", &[("network", "edge")]), 3.0);
    let started = value(&again, "host_local_counters_start_time_seconds", &[("network", "edge")]);

    // A counters file that is not whole (a disk fault) starts again from zero, visibly.
    std::fs::write(store.join(".hostlocal/counters"), "host-local-counters v1 12\nholds_reclaimed 0 99\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let reset = parse(&metrics(&dd));
    assert_eq!(value(&reset, "host_local_holds_reclaimed_total", &[("range_set", "0")]), 0.0);
    assert!(value(&reset, "host_local_counters_start_time_seconds", &[("network", "edge")]) > started);
}

#[test]
#[ignore = "needs the e2e venv with prometheus_client: run scripts/test.sh"]
fn without_a_configuration_only_leases_are_counted() {
    let dd = TempDir::new("metrics-noconf");
    std::fs::create_dir_all(dd.path().join("conf")).unwrap();
    assert!(add(&dd, "web", "w1"));
    let parsed = parse(&metrics(&dd));
    let unknown = |state| [("network", "edge"), ("range_set", "unknown"), ("state", state)];
    assert_eq!(value(&parsed, "host_local_addresses", &unknown("active")), 2.0);
    assert_eq!(value(&parsed, "host_local_addresses", &unknown("held")), 0.0);
    assert!(!metrics(&dd).contains("state=\"total\""));
}

/// The example alert in deploy/ names metrics that exist.
#[test]
fn the_example_alert_uses_exported_metrics() {
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/alerts.yaml")).unwrap();
    for name in ["host_local_addresses", "host_local_adds_refused_total"] {
        assert!(rules.contains(name), "{name}");
    }
}

#[test]
#[ignore = "needs the e2e venv with prometheus_client: run scripts/test.sh"]
fn markers_count_once_per_address_and_the_start_time_moves_only_on_a_reset() {
    let dd = TempDir::new("metrics-markers");
    write_conflist(&dd);
    assert!(add(&dd, "web", "w1"));
    let store = dd.path().join("data/edge");
    // Two OpenYurt markers for one address (an old and a re-created pod of the same name).
    std::fs::write(store.join("10.70.0.6_ns_a"), "").unwrap();
    std::fs::write(store.join("10.70.0.6_ns_b"), "").unwrap();
    std::fs::remove_file(store.join(".hostlocal/index")).unwrap();
    let first = parse(&metrics(&dd));
    let v4 = |state| [("network", "edge"), ("range_set", "0"), ("state", state)];
    assert_eq!(value(&first, "host_local_addresses", &v4("held")), 1.0);
    assert_eq!(value(&first, "host_local_addresses", &v4("free")), 3.0);
    // No event in between: the same start time, a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = parse(&metrics(&dd));
    let start = |m: &Value| value(m, "host_local_counters_start_time_seconds", &[("network", "edge")]);
    assert_eq!(start(&second), start(&first));
    // Debris `host-local leases` removes is counted.
    std::fs::write(store.join("10.70.0.5"), "").unwrap();
    std::fs::remove_file(store.join(".hostlocal/index")).unwrap();
    let out = Command::new(ours())
        .args(["leases", "--data-dir"])
        .arg(dd.path().join("data"))
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!store.join("10.70.0.5").exists());
    assert_eq!(value(&parse(&metrics(&dd)), "host_local_debris_cleaned_total", &[("network", "edge")]), 1.0);
}
