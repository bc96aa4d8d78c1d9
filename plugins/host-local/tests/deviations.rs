//! The deliberate deviations from upstream host-local, one test each (README: "Compatibility").
//! Deviation 1 (a repeated ADD returns the existing allocation) is in upstream_cases.rs.

mod common;

use common::{leases, net_conf, ours, run, Call, TempDir};

const DUAL: &str = r#""ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]"#;

/// 2. A failed ADD rolls back only what that call reserved.
#[test]
fn a_failed_add_keeps_earlier_allocations_of_the_container() {
    let dd = TempDir::new("rollback");
    let c = net_conf("1.0.0", &dd, DUAL);
    assert_eq!(run(&ours(), &Call::new("ADD", "c1", &c)).ips(), ["10.1.2.2/24", "2001:db8:1::2/64"]);
    assert!(run(&ours(), &Call::new("ADD", "other", &c).args("IP=2001:db8:1::99")).ok());
    // c1 again, asking for a free v4 and a taken v6: set 1 fails after set 0 reserved .50.
    let retry =
        c.replacen(r#""name":"net","#, r#""name":"net","args":{"cni":{"ips":["10.1.2.50","2001:db8:1::99"]}},"#, 1);
    let (code, msg) = run(&ours(), &Call::new("ADD", "c1", &retry)).error();
    assert_eq!((code, msg.as_str()), (11, "failed to allocate for range 1: requested IP address 2001:db8:1::99 is not available in range set 2001:db8:1::1-2001:db8:1:0:ffff:ffff:ffff:ffff"));
    // Upstream's rollback releases by container ID and would leave c1 with nothing.
    let net = dd.path().join("net");
    assert_eq!(leases(&net), ["10.1.2.2", "10.1.2.3", "2001:db8:1::2", "2001:db8:1::99"], "10.1.2.50 was rolled back");
    assert!(run(&ours(), &Call::new("CHECK", "c1", &c)).ok());
}

/// 3. `lock` and `last_reserved_ip.*` are never leases, whatever their content.
#[test]
fn lock_and_last_reserved_ip_are_never_leases() {
    let dd = TempDir::new("notleases");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.31.0.0/24""#);
    assert!(run(&ours(), &Call::new("ADD", "a", &c)).ok());
    let net = dd.path().join("net");
    assert_eq!(std::fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(), "10.31.0.2");
    // A container ID equal to that content: upstream's CHECK passes and its DEL deletes the file.
    let (code, msg) = run(&ours(), &Call::new("CHECK", "10.31.0.2", &c)).error();
    assert_eq!((code, msg.as_str()), (3, "host-local: Failed to find address added by container 10.31.0.2"));
    assert!(run(&ours(), &Call::new("DEL", "10.31.0.2", &c)).ok());
    assert!(net.join("last_reserved_ip.0").exists());
    std::fs::write(net.join("lock"), "a").unwrap();
    assert!(run(&ours(), &Call::new("DEL", "a", &c)).ok());
    assert!(net.join("lock").exists());
}

/// 4. Ranges that would allocate outside their subnet are config errors.
#[test]
fn invalid_ranges_are_config_errors() {
    let dd = TempDir::new("ranges");
    for (ipam, msg) in [
        (
            r#""subnet":"10.47.0.0/30","rangeStart":"10.47.0.3""#,
            "invalid range set 0: RangeStart 10.47.0.3 not in network 10.47.0.0/30",
        ),
        (
            r#""subnet":"255.255.255.0/24","rangeStart":"255.255.255.255""#,
            "invalid range set 0: RangeStart 255.255.255.255 not in network 255.255.255.0/24",
        ),
        (
            r#""subnet":"10.1.0.0/24","rangeStart":"10.1.0.50","rangeEnd":"10.1.0.40""#,
            "invalid range set 0: RangeStart 10.1.0.50 not in network 10.1.0.0/24",
        ),
    ] {
        assert_eq!(run(&ours(), &Call::new("ADD", "a", &net_conf("1.0.0", &dd, ipam))).error(), (7, msg.to_string()));
    }
    assert!(leases(&dd.path().join("net")).is_empty());
}

/// 5. Error codes follow the spec; the messages are upstream's.
#[test]
fn error_codes_follow_the_spec() {
    let dd = TempDir::new("codes");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.9.0.0/30""#);
    let cases = [
        (Call::new("ADD", "a", &net_conf("1.0.0", &dd, r#""subnet":"10.9.0.1/30""#)), 7),
        (Call::new("ADD", "a", &c).args("IP=bad"), 4),
        (Call::new("ADD", "a", &c).ifname("a/b"), 4),
        (Call::new("ADD", "bad id", &c), 4),
        (Call::new("ADD", "a", "{not json"), 6),
        (Call::new("ADD", "a", &c.replace("1.0.0", "0.9.0")), 1),
    ];
    for (call, code) in cases {
        assert_eq!(run(&ours(), &call).error().0, code, "{call:?}");
    }
    assert!(run(&ours(), &Call::new("ADD", "a", &c)).ok());
    assert_eq!(run(&ours(), &Call::new("ADD", "b", &c)).error().0, 11, "exhaustion: try again later");
    let (code, _) = run(
        &ours(),
        &Call::new(
            "ADD",
            "b",
            &net_conf("1.0.0", &dd, r#""subnet":"10.9.0.0/30","resolvConf":"/nonexistent/resolv.conf""#),
        ),
    )
    .error();
    assert_eq!(code, 5);
}

/// 6. CHECK looks at every range set and at prevResult.
#[test]
fn check_verifies_every_range_set_and_prev_result() {
    let dd = TempDir::new("check");
    let c = net_conf("1.0.0", &dd, DUAL);
    let added = run(&ours(), &Call::new("ADD", "c1", &c));
    assert!(run(&ours(), &Call::new("CHECK", "c1", &c)).ok());
    let with_prev = |prev: &str| c.replacen(r#""name":"net","#, &format!(r#""name":"net","prevResult":{prev},"#), 1);
    assert!(run(&ours(), &Call::new("CHECK", "c1", &with_prev(&added.stdout))).ok());
    let wrong = added.stdout.replace("10.1.2.2/24", "10.1.2.9/24");
    let (code, msg) = run(&ours(), &Call::new("CHECK", "c1", &with_prev(&wrong))).error();
    assert_eq!(code, 100);
    assert!(msg.contains("prevResult addresses [10.1.2.9,2001:db8:1::2] differ from the leases of container c1 [10.1.2.2,2001:db8:1::2]"), "{msg}");
    // A lease missing in one set (removed behind our back) fails, where upstream passes.
    std::fs::remove_file(dd.path().join("net/2001:db8:1::2")).unwrap();
    let (code, msg) = run(&ours(), &Call::new("CHECK", "c1", &c)).error();
    assert_eq!((code, msg.as_str()), (100, "host-local: container c1 has no address in range set 1"));
}

fn gc_conf(dd: &TempDir, valid: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.1.0","name":"net","ipam":{{"type":"host-local","dataDir":"{}","subnet":"10.20.0.0/24"}},"cni.dev/valid-attachments":{valid}}}"#,
        dd.display()
    )
}

/// 7. GC releases every lease of an attachment not in the valid list.
#[test]
fn gc_releases_leases_of_invalid_attachments() {
    let dd = TempDir::new("gc");
    let c = gc_conf(&dd, "[]");
    for (id, ifname) in [("keep", "eth0"), ("keep", "net1"), ("stale", "eth0"), ("old", "eth0")] {
        assert!(run(&ours(), &Call::new("ADD", id, &c).ifname(ifname)).ok());
    }
    let net = dd.path().join("net");
    std::fs::write(net.join("10.20.0.5"), "old").unwrap(); // pre-ifname format, like ReleaseByID handles
    let valid = r#"[{"containerID":"keep","ifname":"eth0"},{"containerID":"old","ifname":"eth0"}]"#;
    let out = run(&ours(), &Call::new("GC", "", &gc_conf(&dd, valid)).ifname(""));
    assert!(out.ok() && out.stdout.is_empty(), "{out:?}");
    assert_eq!(leases(&net), ["10.20.0.2", "10.20.0.5"], "keep/eth0 and old-format 'old' stay");
    assert_eq!(std::fs::read_to_string(net.join("10.20.0.2")).unwrap(), "keep\r\neth0");
    // The spec's empty list means "release everything"; lock and last_reserved_ip stay.
    assert!(run(&ours(), &Call::new("GC", "", &gc_conf(&dd, "[]")).ifname("")).ok());
    assert!(leases(&net).is_empty());
    assert!(net.join("lock").exists() && net.join("last_reserved_ip.0").exists());
    // Without the list, GC refuses rather than guessing.
    let missing = gc_conf(&dd, "[]").replace(r#","cni.dev/valid-attachments":[]"#, "");
    assert_eq!(run(&ours(), &Call::new("GC", "", &missing).ifname("")).error().0, 7);
}

/// 8. STATUS is cheap, reports an unusable store as 50, and ignores a full pool.
#[test]
fn status_reports_the_store_not_the_pool() {
    let dd = TempDir::new("status");
    let c = net_conf("1.1.0", &dd, r#""subnet":"10.21.0.0/30""#);
    let status = |conf: &str| run(&ours(), &Call::new("STATUS", "", conf).ifname(""));
    assert!(status(&c).ok());
    assert!(run(&ours(), &Call::new("ADD", "a", &c)).ok());
    assert_eq!(run(&ours(), &Call::new("ADD", "b", &c)).error().0, 11, "the pool is full");
    assert!(status(&c).ok(), "a full pool is not an unusable plugin");
    let file = dd.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let broken = c.replace(&dd.display(), &file.display().to_string());
    let (code, msg) = status(&broken).error();
    assert_eq!(code, 50);
    assert!(msg.starts_with(&format!("host-local store {}/net is not usable: ", file.display())), "{msg}");
}

#[test]
fn nothing_is_written_outside_the_network_directory() {
    let dd = TempDir::new("confined");
    let c = net_conf("1.0.0", &dd, r#""subnet":"10.22.0.0/24""#);
    let traversal = c.replace(r#""name":"net""#, r#""name":"../escape""#);
    assert_eq!(
        run(&ours(), &Call::new("ADD", "a", &traversal)).error(),
        (7, "invalid characters found in network name".into())
    );
    assert!(run(&ours(), &Call::new("ADD", "a", &c)).ok());
    let top: Vec<String> =
        std::fs::read_dir(dd.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(top, ["net"]);
}
