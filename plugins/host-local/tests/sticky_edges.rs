//! The edges of the hold policy, through the binary: explicit requests against holds, a
//! pod with two leases after a reboot, stickiness turned off, clocks that jump, and a failed
//! ADD's rollback. Rules (README "Which address a pod gets"): explicit request > the pod's
//! own lease > a free address > the oldest hold.

mod common;

use std::path::{Path, PathBuf};

use common::{exec, ips, leases, net_conf, ok, ours, run, Call, TempDir};

/// A /28: .1 is the gateway, .2 to .14 are allocatable.
const N28: &str = r#""subnet":"10.1.0.0/28""#;

fn pod_args(pod: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}")
}

fn call(verb: &str, pod: &str, sandbox: &str, conf: &str, boot: &str) -> Call {
    Call::new(verb, sandbox, conf).args(&pod_args(pod)).env("HOST_LOCAL_BOOT_ID", boot)
}

fn with_ip(call: Call, ip: &str) -> Call {
    let args = format!("{};IP={ip}", call.args);
    call.args(&args)
}

fn net(dd: &TempDir) -> PathBuf {
    dd.path().join("net")
}

/// A pod record's fields (its newest whole slot), as JSON.
fn record(dir: &Path, ip: &str) -> serde_json::Value {
    let bytes = std::fs::read(dir.join(format!("{ip}.pod"))).unwrap();
    let record = host_local::disk::record::parse(&bytes).expect("a whole record");
    serde_json::from_str(&host_local::disk::record::to_json(&record)).unwrap()
}

/// Change a pod record as a node with a wrong clock (or a planted file) would have left it. By
/// rename, so that the store sees the change (its index is keyed to the directory's mtime).
fn rewrite_record(dir: &Path, ip: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut r = record(dir, ip);
    edit(&mut r);
    let tmp = dir.join(format!("planted-{ip}"));
    std::fs::write(&tmp, serde_json::to_vec(&r).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{ip}.pod"))).unwrap();
}

/// A pod record's wall-clock `since`, as a node whose clock was wrong wrote it.
fn set_wall_clock(dir: &Path, ip: &str, since: &str) {
    rewrite_record(dir, ip, |r| r["since"] = since.into());
}

#[test]
fn an_explicit_request_wins_over_another_pods_hold_but_never_over_a_live_sandbox() {
    let dd = TempDir::new("se-request");
    let c = net_conf("1.0.0", &dd, N28);
    // The issue's repro: `old` held .5 since its sandbox was deleted; `new` asks for .5.
    assert_eq!(ips(exec(with_ip(call("ADD", "old", "c1", &c, "b"), "10.1.0.5"))), ["10.1.0.5/28"]);
    ok(exec(call("DEL", "old", "c1", &c, "b")));
    let granted = exec(with_ip(call("ADD", "new", "c2", &c, "b"), "10.1.0.5"));
    assert_eq!(ips(granted.clone()), ["10.1.0.5/28"]);
    assert!(granted.stderr.contains("heldFor=ns/old"), "the dropped hold is logged: {}", granted.stderr);
    assert_eq!(std::fs::read_to_string(net(&dd).join("10.1.0.5")).unwrap(), "c2\r\neth0");
    assert_eq!(record(&net(&dd), "10.1.0.5")["name"], "new");
    // The hold is gone: `old` comes back to another address.
    assert_ne!(ips(exec(call("ADD", "old", "c3", &c, "b"))), ["10.1.0.5/28"]);
    // A live sandbox keeps its address against any request.
    let refused = exec(with_ip(call("ADD", "third", "c4", &c, "b"), "10.1.0.5"));
    assert_eq!(refused.error().0, 11, "{refused:?}");

    // runtimeConfig.ips (how Multus and the `ips` capability ask) behaves the same.
    let dd = TempDir::new("se-request-rc");
    let c = net_conf("1.0.0", &dd, N28);
    let rc = c.replacen(r#""name":"net","#, r#""name":"net","runtimeConfig":{"ips":["10.1.0.7/28"]},"#, 1);
    assert_eq!(ips(exec(call("ADD", "old", "c1", &rc, "b"))), ["10.1.0.7/28"]);
    ok(exec(call("DEL", "old", "c1", &rc, "b")));
    assert_eq!(ips(exec(call("ADD", "new", "c2", &rc, "b"))), ["10.1.0.7/28"]);

    // An OpenYurt marker of another pod on the requested address is dropped too.
    let dd = TempDir::new("se-request-marker");
    let c = net_conf("1.0.0", &dd, N28);
    std::fs::create_dir_all(net(&dd)).unwrap();
    std::fs::write(net(&dd).join("10.1.0.9_ns_gone"), "").unwrap();
    let granted = exec(with_ip(call("ADD", "new", "c1", &c, "b"), "10.1.0.9"));
    assert_eq!(ips(granted.clone()), ["10.1.0.9/28"]);
    assert!(granted.stderr.contains("heldFor=ns/gone"), "{}", granted.stderr);
    assert!(!net(&dd).join("10.1.0.9_ns_gone").exists());
}

#[test]
fn after_a_reboot_a_pod_with_two_leases_gets_its_newest_sandboxs_address() {
    // Boot b1: sandbox A of `web`, then sandbox B of `web` (the address the API server
    // has), then the late DEL of A holds A's address. The wall clock is no help: B's record
    // says it was written in 1970 (the node had no RTC yet), and the addresses are chosen
    // so that ordering by address would pick A's.
    let dd = TempDir::new("se-newest");
    let c = net_conf("1.0.0", &dd, N28);
    assert_eq!(ips(exec(with_ip(call("ADD", "web", "A", &c, "b1"), "10.1.0.9"))), ["10.1.0.9/28"]);
    assert_eq!(ips(exec(with_ip(call("ADD", "web", "B", &c, "b1"), "10.1.0.4"))), ["10.1.0.4/28"]);
    ok(exec(call("DEL", "web", "A", &c, "b1")));
    assert_eq!(record(&net(&dd), "10.1.0.9")["state"], "held");
    set_wall_clock(&net(&dd), "10.1.0.4", "1970-01-01T00:00:09Z");
    // Boot b2: the new sandbox C gets B's address; A's hold would never be used again.
    assert_eq!(ips(exec(call("ADD", "web", "C", &c, "b2"))), ["10.1.0.4/28"]);
    assert_eq!(leases(&net(&dd)), ["10.1.0.4"]);
}

#[test]
fn with_stickiness_off_holds_are_ordinary_addresses() {
    // A /29 (.2 to .6): web's hold, and four live pods.
    let dd = TempDir::new("se-off");
    let on = net_conf("1.0.0", &dd, r#""subnet":"10.2.0.0/29""#);
    let off = net_conf("1.0.0", &dd, r#""subnet":"10.2.0.0/29","stickyIPs":false"#);
    let held = ips(exec(call("ADD", "web", "w1", &on, "b")));
    ok(exec(call("DEL", "web", "w1", &on, "b")));
    for i in 0..4 {
        ips(exec(call("ADD", &format!("p{i}"), &format!("s{i}"), &on, "b")));
    }
    // Stickiness off: the hold is reclaimable, so the last address is not refused.
    assert_eq!(ips(exec(call("ADD", "late", "x1", &off, "b"))), held);
    assert!(
        !net(&dd).join(format!("{}.pod", held[0].trim_end_matches("/29"))).exists(),
        "no record without stickiness"
    );

    // GC: with stickiness on it keeps holds for their pods; off, it releases them like any
    // attachment not in the list.
    let dd = TempDir::new("se-off-gc");
    let on = net_conf("1.1.0", &dd, r#""subnet":"10.2.0.0/29""#);
    let off = net_conf("1.1.0", &dd, r#""subnet":"10.2.0.0/29","stickyIPs":false"#);
    ips(exec(call("ADD", "web", "w1", &on, "b")));
    ok(exec(call("DEL", "web", "w1", &on, "b")));
    let gc = |conf: &str| {
        let conf = conf.replacen(r#""name":"net","#, r#""name":"net","cni.dev/valid-attachments":[],"#, 1);
        exec(Call::new("GC", "", &conf).env("HOST_LOCAL_BOOT_ID", "b"))
    };
    ok(gc(&on));
    assert_eq!(leases(&net(&dd)), ["10.2.0.2"], "kept: the pod may come back");
    ok(gc(&off));
    assert!(leases(&net(&dd)).is_empty(), "released");
}

#[test]
fn hold_expiry_counts_node_time_whatever_the_wall_clock_says() {
    // The hold's record says 1970: written before NTP set the clock. A wall-clock age of
    // 56 years must not expire a one-hour hold.
    let dd = TempDir::new("se-clock-early");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.3.0.0/29","stickyIPs":{"holdDuration":"1h"}"#);
    assert_eq!(ips(exec(call("ADD", "web", "w1", &c, "b"))), ["10.3.0.2/29"]);
    ok(exec(call("DEL", "web", "w1", &c, "b")));
    set_wall_clock(&net(&dd), "10.3.0.2", "1970-01-01T00:00:05Z");
    assert_eq!(ips(exec(call("ADD", "other", "o1", &c, "b"))), ["10.3.0.3/29"]);
    assert_eq!(leases(&net(&dd)), ["10.3.0.2", "10.3.0.3"], "the hold is kept");
    assert_eq!(ips(exec(call("ADD", "web", "w2", &c, "b"))), ["10.3.0.2/29"]);

    // The record says 2099: the clock was ahead, then jumped back. The hold still expires
    // after its second of node time.
    let dd = TempDir::new("se-clock-forever");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.3.0.0/29","stickyIPs":{"holdDuration":"1s"}"#);
    assert_eq!(ips(exec(call("ADD", "web", "w1", &c, "b"))), ["10.3.0.2/29"]);
    ok(exec(call("DEL", "web", "w1", &c, "b")));
    set_wall_clock(&net(&dd), "10.3.0.2", "2099-01-01T00:00:00Z");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(ips(exec(call("ADD", "other", "o1", &c, "b"))), ["10.3.0.3/29"]);
    assert_eq!(leases(&net(&dd)), ["10.3.0.3"], "the hold expired");
}

/// The plugin run as if the node had been up for `uptime_s` seconds (a time namespace moves
/// CLOCK_BOOTTIME): a reboot whose uptime starts again from zero, or a node up for days.
fn up_for(dir: &Path, uptime_s: u64) -> PathBuf {
    let now_s = std::fs::read_to_string("/proc/uptime").unwrap().split('.').next().unwrap().parse::<i64>().unwrap();
    let wrapper = dir.join(format!("up-for-{uptime_s}"));
    let script = format!(
        "#!/bin/sh\nexec unshare --time --fork --boottime {} {} \"$@\"\n",
        uptime_s as i64 - now_s,
        ours().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wrapper
}

/// A day and a bit: longer than the holds below last.
const LONG_UPTIME: u64 = 100_000;

#[test]
#[ignore = "needs root for time namespaces: run scripts/test.sh"]
fn a_clock_lost_during_a_long_boot_does_not_age_holds() {
    let dd = TempDir::new("se-clock-lost");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.6.0.0/28""#);
    let long = up_for(dd.path(), LONG_UPTIME);
    ips(run(&long, &call("ADD", "web", "w1", &c, "b")));
    ok(run(&long, &call("DEL", "web", "w1", &c, "b")));
    std::fs::remove_file(net(&dd).join(".hostlocal/clock")).unwrap();
    // A one-hour gc a second later: the hold is a second old, not a day.
    let gc = std::process::Command::new(&long)
        .args(["gc", "--network", "net", "--older-than", "1h", "--data-dir"])
        .arg(dd.path())
        .env("HOST_LOCAL_BOOT_ID", "b")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(String::from_utf8_lossy(&gc.stdout), "", "nothing is released");
    assert_eq!(leases(&net(&dd)), ["10.6.0.2"]);
}

#[test]
#[ignore = "needs root for time namespaces: run scripts/test.sh"]
fn holds_from_before_node_time_are_not_expired_by_the_upgrade() {
    // A store written by the version before node time: a held lease whose record has no
    // stamps, and no clock. The node has been up for a day when the new binary first runs.
    let dd = TempDir::new("se-clock-upgrade");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.6.0.0/28","stickyIPs":{"holdDuration":"1h"}"#);
    std::fs::create_dir_all(net(&dd)).unwrap();
    std::fs::write(net(&dd).join("10.6.0.2"), "old\r\neth0").unwrap();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let since = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{wall}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let record = format!(
        r#"{{"bootId":"b0","containerId":"old","ifname":"eth0","name":"web","namespace":"ns","since":"{}","state":"held","uid":""}}"#,
        String::from_utf8_lossy(&since.stdout).trim()
    );
    std::fs::write(net(&dd).join("10.6.0.2.pod"), record).unwrap();
    let long = up_for(dd.path(), LONG_UPTIME);
    assert_eq!(ips(run(&long, &call("ADD", "other", "o1", &c, "b1"))), ["10.6.0.3/28"]);
    assert_eq!(leases(&net(&dd)), ["10.6.0.2", "10.6.0.3"], "the hold is kept");
    assert_eq!(ips(run(&long, &call("ADD", "web", "w2", &c, "b1"))), ["10.6.0.2/28"]);
}

#[test]
fn a_planted_stamp_no_boot_could_reach_does_not_expire_holds() {
    let dd = TempDir::new("se-clock-planted");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.6.0.0/28","stickyIPs":{"holdDuration":"72h"}"#);
    assert_eq!(ips(exec(call("ADD", "web", "w1", &c, "b1"))), ["10.6.0.2/28"]);
    ok(exec(call("DEL", "web", "w1", &c, "b1")));
    assert_eq!(ips(exec(call("ADD", "db", "d1", &c, "b1"))), ["10.6.0.3/28"]);
    // db's record says it was added 146,000 years of node time from now.
    rewrite_record(&net(&dd), "10.6.0.3", |r| {
        (r["addedAt"], r["changedAt"]) = ((1u64 << 62).into(), (1u64 << 62).into());
    });
    // After a reboot, a new pod: web's hold has not been held for 72 hours.
    assert_eq!(ips(exec(call("ADD", "other", "o1", &c, "b2"))), ["10.6.0.4/28"]);
    assert_eq!(ips(exec(call("ADD", "web", "w2", &c, "b2"))), ["10.6.0.2/28"]);
}

#[test]
#[ignore = "needs root for time namespaces: run scripts/test.sh"]
fn node_time_moves_forward_across_a_reboot_that_restarts_the_uptime() {
    let dd = TempDir::new("se-reboot-clock");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.4.0.0/28","stickyIPs":{"holdDuration":"1h"}"#);
    // Boot b1 has been up for as long as this machine; web's sandbox is deleted late in it.
    ips(exec(call("ADD", "web", "w1", &c, "b1")));
    ok(exec(call("DEL", "web", "w1", &c, "b1")));
    let held_at = record(&net(&dd), "10.4.0.2")["changedAt"].as_u64().unwrap();
    // Boot b2, 5 s after power-on: node time goes on from where b1 left off.
    let b2 = up_for(dd.path(), 5);
    let other = run(&b2, &call("ADD", "other", "o1", &c, "b2"));
    assert_eq!(ips(other), ["10.4.0.3/28"]);
    let added_at = record(&net(&dd), "10.4.0.3")["addedAt"].as_u64().unwrap();
    assert!(added_at > held_at, "node time went back: {added_at} <= {held_at}");
    assert_eq!(leases(&net(&dd)), ["10.4.0.2", "10.4.0.3"], "the hold has not expired");
    // And web's new sandbox in b2 gets its address.
    assert_eq!(ips(run(&b2, &call("ADD", "web", "w2", &c, "b2"))), ["10.4.0.2/28"]);
}

#[test]
fn a_failed_add_restores_the_holds_and_markers_it_consumed() {
    // Dual stack with a v6 range of two addresses (::2, ::3).
    let dd = TempDir::new("se-rollback");
    let c = net_conf("1.0.0", &dd, r#""ranges":[[{"subnet":"10.5.0.0/24"}],[{"subnet":"2001:db8:5::/126"}]]"#);
    // web had two sandboxes in boot b (a twin), both deleted: two v4 and two v6 holds.
    ips(exec(call("ADD", "web", "sb0", &c, "b")));
    ips(exec(call("ADD", "web", "sb1", &c, "b")));
    ok(exec(call("DEL", "web", "sb0", &c, "b")));
    ok(exec(call("DEL", "web", "sb1", &c, "b")));
    // Two other pods find the v6 range full and reclaim web's v6 holds.
    ips(exec(call("ADD", "p1", "o1", &c, "b")));
    ips(exec(call("ADD", "p2", "o2", &c, "b")));
    std::fs::write(net(&dd).join("10.5.0.99_ns_api"), "").unwrap();
    // Marker times are kept in seconds (they order markers among themselves).
    let marker_time = || {
        let modified = std::fs::metadata(net(&dd).join("10.5.0.99_ns_api")).unwrap().modified().unwrap();
        modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    };
    let marker_was = marker_time();
    let before = common::upstream_view(&net(&dd));
    let records_before: Vec<_> = ["10.5.0.2", "10.5.0.3"].iter().map(|ip| record(&net(&dd), ip)).collect();

    // web's new sandbox: v4 takes the newest hold and drops the older one, then v6 fails.
    let failed = exec(call("ADD", "web", "sb2", &c, "b"));
    assert_eq!(failed.error().0, 11, "{failed:?}");
    assert_eq!(common::upstream_view(&net(&dd)), before, "every lease as it was");
    let records_after: Vec<_> = ["10.5.0.2", "10.5.0.3"].iter().map(|ip| record(&net(&dd), ip)).collect();
    assert_eq!(records_after, records_before, "both holds restored");

    // api's OpenYurt marker: v4 consumes it, v6 fails, the marker comes back as it was.
    let failed = exec(call("ADD", "api", "sb3", &c, "b"));
    assert_eq!(failed.error().0, 11, "{failed:?}");
    assert_eq!(common::upstream_view(&net(&dd)), before);
    assert_eq!(marker_time(), marker_was);
    // The holds still work: once p1 is gone for good, web gets all its addresses back.
    ok(exec(Call::new("DEL", "o1", &c).env("HOST_LOCAL_BOOT_ID", "b")));
    let back = ips(exec(call("ADD", "web", "sb4", &c, "b")));
    assert_eq!(back[0], "10.5.0.3/24", "{back:?}");
}
