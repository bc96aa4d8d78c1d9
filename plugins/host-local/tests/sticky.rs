//! Sticky pod IPs through the binary, in every order kubelet produces, and next to upstream
//! host-local on the same store.

mod common;

use common::{exec, ips, leases, net_conf, ok, ours, run, upstream, Call, TempDir};

const V4: &str = r#""ranges":[[{"subnet":"10.30.0.0/24"}]]"#;
const DUAL: &str = r#""ranges":[[{"subnet":"10.30.0.0/24"}],[{"subnet":"2001:db8:30::/64"}]]"#;

/// containerd's CNI_ARGS for a pod sandbox, in one of Go's map orders.
fn pod_args(name: &str, sandbox: &str) -> String {
    format!("K8S_POD_INFRA_CONTAINER_ID={sandbox};K8S_POD_UID=uid-{name};IgnoreUnknown=1;K8S_POD_NAME={name};K8S_POD_NAMESPACE=default")
}

/// A call for `pod`'s sandbox during kernel boot `boot` (HOST_LOCAL_BOOT_ID stands in for
/// the boot_id a real reboot changes).
fn call(verb: &str, pod: &str, sandbox: &str, conf: &str, boot: &str) -> Call {
    Call::new(verb, sandbox, conf).args(&pod_args(pod, sandbox)).env("HOST_LOCAL_BOOT_ID", boot)
}

#[test]
fn del_before_the_new_add_keeps_the_address() {
    let dd = TempDir::new("st-order1");
    let c = net_conf("1.0.0", &dd, V4);
    let first = ips(exec(call("ADD", "web-0", "sb1", &c, "boot-1")));
    ips(exec(call("ADD", "api-0", "sb2", &c, "boot-1")));
    // Reboot; kubelet: StopPodSandbox(old) with the netns gone, then RunPodSandbox(new).
    ok(exec(call("DEL", "web-0", "sb1", &c, "boot-2").netns("")));
    let again = ips(exec(call("ADD", "web-0", "sb3", &c, "boot-2")));
    assert_eq!(again, first);
    // The sandbox GC's second DEL of the old sandbox does not free the new sandbox's address.
    ok(exec(call("DEL", "web-0", "sb1", &c, "boot-2")));
    let lease = std::fs::read_to_string(dd.path().join("net").join(first[0].split('/').next().unwrap())).unwrap();
    assert_eq!(lease, "sb3\r\neth0");
}

#[test]
fn del_after_the_new_add_keeps_the_address() {
    let dd = TempDir::new("st-order2");
    let c = net_conf("1.0.0", &dd, V4);
    let first = ips(exec(call("ADD", "web-0", "sb1", &c, "boot-1")));
    // After the reboot the new sandbox comes first; sb1 is from an earlier boot, so dead.
    let again = ips(exec(call("ADD", "web-0", "sb2", &c, "boot-2")));
    assert_eq!(again, first);
    ok(exec(call("DEL", "web-0", "sb1", &c, "boot-2")));
    assert!(exec(call("CHECK", "web-0", "sb2", &c, "boot-2")).ok(), "sb2 still holds its lease");
}

#[test]
fn two_live_sandboxes_of_one_pod_never_share_an_address() {
    let dd = TempDir::new("st-twins");
    let c = net_conf("1.0.0", &dd, V4);
    let first = ips(exec(call("ADD", "web-0", "sb1", &c, "boot-1")));
    let twin = ips(exec(call("ADD", "web-0", "sb2", &c, "boot-1")));
    assert_ne!(first, twin);
}

#[test]
fn other_pods_do_not_take_held_addresses_until_the_pool_is_full() {
    let dd = TempDir::new("st-pool");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.31.0.0/29""#); // .2 - .6
    let held = ips(exec(call("ADD", "web-0", "sb1", &c, "b")));
    ok(exec(call("DEL", "web-0", "sb1", &c, "b")));
    let mut others = Vec::new();
    for i in 0..4 {
        others.extend(ips(exec(call("ADD", &format!("p{i}"), &format!("o{i}"), &c, "b"))));
    }
    assert!(!others.contains(&held[0]), "{others:?} avoided {held:?}");
    // The pool is full now, but for the hold: the next new pod reclaims it.
    assert_eq!(ips(exec(call("ADD", "late", "o9", &c, "b"))), held);
    // Once every pod is removed, the whole pool can be allocated again.
    for (pod, sb) in [("p0", "o0"), ("p1", "o1"), ("p2", "o2"), ("p3", "o3"), ("late", "o9")] {
        ok(exec(call("DEL", pod, sb, &c, "b")));
    }
    let mut fresh = Vec::new();
    for i in 0..5 {
        fresh.extend(ips(exec(call("ADD", &format!("n{i}"), &format!("n{i}"), &c, "b"))));
    }
    fresh.sort();
    assert_eq!(fresh, ["10.31.0.2/29", "10.31.0.3/29", "10.31.0.4/29", "10.31.0.5/29", "10.31.0.6/29"]);
}

#[test]
fn sandboxes_of_an_earlier_boot_are_holds_when_the_pool_is_full_and_expire() {
    // A power cut: five pods fill a /29 and are never DELeted.
    let dd = TempDir::new("st-oldboot");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.32.0.0/29""#); // .2 - .6
    let mut before = Vec::new();
    for i in 0..5 {
        before.extend(ips(exec(call("ADD", &format!("p{i}"), &format!("a{i}"), &c, "b1"))));
    }
    assert!(!exec(call("ADD", "extra", "x1", &c, "b1")).ok(), "full within one boot: live sandboxes are never taken");
    // After the reboot a new pod comes first: it reclaims the oldest earlier-boot lease,
    // and the other pods still get theirs back.
    assert_eq!(ips(exec(call("ADD", "extra", "x2", &c, "b2"))), before[..1]);
    for i in 1..5 {
        assert_eq!(ips(exec(call("ADD", &format!("p{i}"), &format!("b{i}"), &c, "b2"))), before[i..=i]);
    }
    // holdDuration expires earlier-boot leases as it expires holds.
    let dd = TempDir::new("st-oldboot-expiry");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.33.0.0/29","stickyIPs":{"holdDuration":"1s"}"#);
    let old = ips(exec(call("ADD", "gone", "g1", &c, "b1")));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    ips(exec(call("ADD", "new", "n1", &c, "b2")));
    assert!(!leases(&dd.path().join("net")).contains(&old[0].split('/').next().unwrap().to_string()), "expired");
}

#[test]
fn an_add_without_pod_arguments_never_takes_a_live_pods_address() {
    let dd = TempDir::new("st-podless");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.34.0.0/30""#); // one address: .2
    ips(exec(call("ADD", "web-0", "sb1", &c, "b1")));
    let podless = run(&ours(), &Call::new("ADD", "plain", &c).env("HOST_LOCAL_BOOT_ID", "b1"));
    assert!(!podless.ok(), "the only address belongs to a live sandbox: {podless:?}");
    assert!(exec(call("CHECK", "web-0", "sb1", &c, "b1")).ok());
}

#[test]
fn dual_stack_and_multiple_interfaces_each_keep_their_address() {
    let dd = TempDir::new("st-multi");
    let c = net_conf("1.0.0", &dd, DUAL);
    let eth0 = ips(exec(call("ADD", "web-0", "sb1", &c, "b1")));
    let net1 = ips(exec(call("ADD", "web-0", "sb1", &c, "b1").ifname("net1")));
    assert_eq!(eth0.len(), 2);
    assert_ne!(eth0, net1);
    for ifname in ["net1", "eth0"] {
        ok(exec(call("DEL", "web-0", "sb1", &c, "b2").ifname(ifname)));
    }
    assert_eq!(ips(exec(call("ADD", "web-0", "sb2", &c, "b2").ifname("net1"))), net1);
    assert_eq!(ips(exec(call("ADD", "web-0", "sb2", &c, "b2"))), eth0);
}

#[test]
fn a_requested_ip_overrides_the_hold() {
    let dd = TempDir::new("st-requested");
    let c = net_conf("1.0.0", &dd, V4);
    let held = ips(exec(call("ADD", "web-0", "sb1", &c, "b")));
    ok(exec(call("DEL", "web-0", "sb1", &c, "b")));
    let req = call("ADD", "web-0", "sb2", &c, "b");
    let args = format!("{};IP=10.30.0.77", req.args);
    assert_eq!(ips(exec(req.args(&args))), ["10.30.0.77/24"]);
    assert_ne!(held, ["10.30.0.77/24"]);
}

#[test]
fn uid_keying_follows_the_pod_object() {
    let dd = TempDir::new("st-uid");
    let c = net_conf("1.0.0", &dd, &format!(r#"{V4},"stickyIPs":{{"key":"uid"}}"#));
    let held = ips(exec(call("ADD", "web-0", "sb1", &c, "b")));
    ok(exec(call("DEL", "web-0", "sb1", &c, "b")));
    // Same name, new pod object (another UID): a new address.
    let recreated = call("ADD", "web-0", "sb2", &c, "b");
    let args = recreated.args.replace("uid-web-0", "uid-web-0-v2");
    assert_ne!(ips(exec(recreated.args(&args))), held);
    // Same pod object: the held address.
    assert_eq!(ips(exec(call("ADD", "web-0", "sb3", &c, "b"))), held);
}

#[test]
fn sticky_off_is_upstream_behaviour() {
    let dd = TempDir::new("st-off");
    let c = net_conf("1.0.0", &dd, &format!(r#"{V4},"stickyIPs":false"#));
    let first = ips(exec(call("ADD", "web-0", "sb1", &c, "b")));
    ok(exec(call("DEL", "web-0", "sb1", &c, "b")));
    assert!(leases(&dd.path().join("net")).is_empty(), "DEL freed the address");
    assert_ne!(ips(exec(call("ADD", "web-0", "sb2", &c, "b"))), first, "round robin moved on");
    assert!(!std::fs::read_dir(dd.path().join("net")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".pod")));
}

#[test]
#[ignore = "needs Debian's upstream host-local: run scripts/test.sh"]
fn upstream_reads_checks_and_deletes_our_store() {
    let dd = TempDir::new("st-upstream-reads");
    let c = net_conf("1.0.0", &dd, V4);
    let ours_ip = ips(exec(call("ADD", "web-0", "sb1", &c, "b")));
    // Upstream sees our lease (and is not confused by the .pod record next to it).
    let args = pod_args("web-0", "sb1");
    assert!(run(&upstream(), &Call::new("CHECK", "sb1", &c).args(&args)).ok());
    let theirs = run(&upstream(), &Call::new("ADD", "other", &c).args(&pod_args("other", "other")));
    assert!(theirs.ok());
    assert_ne!(theirs.ips(), ours_ip, "no duplicate");
    // A hold is a lease of the old container to upstream: its DEL of that container frees it.
    ok(exec(call("DEL", "web-0", "sb1", &c, "b")));
    assert!(run(&upstream(), &Call::new("DEL", "sb1", &c).args(&args)).ok());
    let addr = ours_ip[0].split('/').next().unwrap().to_string();
    assert!(!leases(&dd.path().join("net")).contains(&addr));
    // ...and our next call notices: the record of the lease upstream removed is dropped.
    assert_ne!(ips(exec(call("ADD", "api-0", "sb2", &c, "b"))), ours_ip);
    assert!(!dd.path().join(format!("net/{addr}.pod")).exists(), "the stale record is gone");
}

#[test]
#[ignore = "needs Debian's upstream host-local: run scripts/test.sh"]
fn upstream_state_is_adopted_in_place() {
    let dd = TempDir::new("st-adopt");
    let c = net_conf("1.0.0", &dd, V4);
    // A node that ran upstream host-local until now.
    let before = run(&upstream(), &Call::new("ADD", "sb1", &c).args(&pod_args("web-0", "sb1")));
    assert!(before.ok());
    // The switch to our binary, then a reboot: DEL of the old sandbox carries the pod's identity.
    ok(exec(call("DEL", "web-0", "sb1", &c, "b2").netns("")));
    assert_eq!(ips(exec(call("ADD", "web-0", "sb2", &c, "b2"))), before.ips());
}

#[test]
fn openyurt_markers_give_pods_their_addresses_back() {
    let dd = TempDir::new("st-openyurt");
    let c = net_conf("1.0.0", &dd, V4);
    let net = dd.path().join("net");
    std::fs::create_dir_all(&net).unwrap();
    // OpenYurt's patched host-local left: a marker per pod; the lease went with the old sandbox's DEL.
    std::fs::write(net.join("10.30.0.9_default_web-0"), "").unwrap();
    std::fs::write(net.join("10.30.0.2_default_api-0"), "").unwrap();
    std::fs::write(net.join("last_reserved_ip.0"), "10.30.0.9").unwrap();
    // A new pod avoids both marked addresses.
    let other = ips(exec(call("ADD", "other", "o1", &c, "b")));
    assert!(!["10.30.0.9/24", "10.30.0.2/24"].contains(&other[0].as_str()), "{other:?}");
    assert_eq!(ips(exec(call("ADD", "web-0", "sb1", &c, "b"))), ["10.30.0.9/24"]);
    assert_eq!(ips(exec(call("ADD", "api-0", "sb2", &c, "b"))), ["10.30.0.2/24"]);
    assert!(!net.join("10.30.0.9_default_web-0").exists(), "the marker became our record");
    assert!(net.join("10.30.0.9.pod").exists());
}
