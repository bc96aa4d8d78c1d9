//! Upstream's host_local_test.go cases and the recorded upstream outputs
//! (testdata/upstream/host-local-outputs.txt), run against our binary in every spec version.

mod common;

use common::{leases, ours, run, Call, TempDir};

const VERSIONS: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn add(stdin: &str, id: &str) -> common::Outcome {
    run(&ours(), &Call::new("ADD", id, stdin))
}

fn del(stdin: &str, id: &str) -> common::Outcome {
    run(&ours(), &Call::new("DEL", id, stdin))
}

/// The recorded upstream blocks: (title, stdin, stdout, exit code).
fn recorded() -> Vec<(String, String, String, i32)> {
    let text = include_str!("../../../testdata/upstream/host-local-outputs.txt");
    text.split("##### ")
        .skip(1)
        .filter_map(|block| {
            let title = block.lines().next()?.to_string();
            let stdin = block.split_once("\nstdin: ")?.1.lines().next()?.to_string();
            let (stdout, rest) = block.split_once("\nstdout:\n")?.1.split_once("\nexit: ")?;
            let code = rest.lines().next()?.parse().ok()?;
            Some((title, stdin, stdout.to_string(), code))
        })
        .collect()
}

/// `[CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_IFNAME=eth0]` from a block title.
fn env_of(title: &str) -> (String, String, String) {
    let inner = title.rsplit_once('[').unwrap().1.trim_end_matches(']');
    let get = |k: &str| inner.split(' ').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    (get("CNI_COMMAND"), get("CNI_CONTAINERID"), get("CNI_IFNAME"))
}

#[test]
fn recorded_upstream_outputs_are_reproduced_byte_for_byte() {
    let dd = TempDir::new("recorded");
    std::fs::write(dd.path().join("resolv.conf"), "nameserver 192.0.2.3\nsearch a.example\n").unwrap();
    let mut compared = 0;
    for (title, stdin, want, want_code) in recorded() {
        let (command, id, ifname) = env_of(&title);
        let stdin = stdin.replace("@DD@", &dd.display());
        let out =
            run(&ours(), &Call::new(&command, &id, &stdin).ifname(if ifname.is_empty() { "eth0" } else { &ifname }));
        if title.starts_with("ADD duplicate") {
            // Deliberate deviation 1: a repeated ADD returns the existing allocation.
            assert_eq!((want_code, out.code), (1, 0), "{title}");
            assert_eq!(out.ips(), ["10.0.0.2/29"], "{title}");
            continue;
        }
        if title.starts_with("CHECK absent") {
            // Same text; the code is the spec's "container unknown" (3) instead of Go's 999.
            assert_eq!(out.error(), (3, "host-local: Failed to find address added by container zz".into()));
            continue;
        }
        if title.starts_with("ADD fill /29 #6") {
            assert_eq!(
                out.error(),
                (
                    11,
                    "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6".into()
                )
            );
            continue;
        }
        assert_eq!((out.code, out.stdout.as_str()), (want_code, want.as_str()), "{title}");
        compared += 1;
    }
    assert_eq!(compared, 25, "every recorded block but the three deviations was compared");
    // The lease files, byte for byte, as upstream left them.
    let files = |net: &str| -> Vec<(String, Vec<u8>)> {
        common::upstream_view(&dd.path().join(net)).into_iter().filter(|(n, _)| n != "lock").collect()
    };
    let v = |s: &str| s.as_bytes().to_vec();
    assert_eq!(
        files("mynet1.1.0"),
        [
            ("10.1.2.2".into(), v("dummy\r\neth0")),
            ("2001:db8:1::2".into(), v("dummy\r\neth0")),
            ("last_reserved_ip.0".into(), v("10.1.2.2")),
            ("last_reserved_ip.1".into(), v("2001:db8:1::2")),
        ]
    );
    // Deliberate deviation 7: the recorded GC with an empty valid-attachments list is a
    // no-op upstream (its lease files stay); ours releases every lease, as the spec asks.
    assert_eq!(files("n"), [("last_reserved_ip.0".into(), v("10.0.0.4"))]);
}

/// Network "mynet" in `dd` with the given ipam fields (upstream's test fixture).
fn mynet(version: &str, dd: &TempDir, ipam: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"mynet","ipam":{{"type":"host-local","dataDir":"{}",{ipam}}}}}"#,
        dd.display()
    )
}

fn dual_stack(version: &str, dd: &TempDir) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"mynet","type":"ipvlan","master":"foo0","ipam":{{"type":"host-local","dataDir":"{dd}","resolvConf":"{dd}/resolv.conf","ranges":[[{{"subnet":"10.1.2.0/24"}},{{"subnet":"10.2.2.0/24"}}],[{{"subnet":"2001:db8:1::0/64"}}]],"routes":[{{"dst":"0.0.0.0/0"}},{{"dst":"::/0"}},{{"dst":"192.168.0.0/16","gw":"1.1.1.1"}},{{"dst":"2001:db8:2::0/64","gw":"2001:db8:3::1"}}]}}}}"#,
        dd = dd.display()
    )
}

#[test]
fn allocates_and_releases_addresses_with_add_del() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("adddel{version}"));
        std::fs::write(dd.path().join("resolv.conf"), "nameserver 192.0.2.3\n").unwrap();
        let conf = dual_stack(version, &dd);
        let out = add(&conf, "dummy");
        assert!(out.ok(), "{version}: {out:?}");
        assert_eq!(out.stdout.contains("\"version\":"), ["0.3.0", "0.3.1", "0.4.0"].contains(&version), "{version}");
        assert_eq!(out.ips(), ["10.1.2.2/24", "2001:db8:1::2/64"], "{version}");
        let net = dd.path().join("mynet");
        for (file, content) in [
            ("10.1.2.2", "dummy\r\neth0"),
            ("2001:db8:1::2", "dummy\r\neth0"),
            ("last_reserved_ip.0", "10.1.2.2"),
            ("last_reserved_ip.1", "2001:db8:1::2"),
        ] {
            assert_eq!(std::fs::read_to_string(net.join(file)).unwrap(), content, "{version} {file}");
        }
        assert!(del(&conf, "dummy").ok());
        assert!(leases(&net).is_empty(), "{version}");
    }
}

#[test]
fn allocates_per_interface() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("ifname{version}"));
        let conf = |net: &str, subnet: &str| {
            format!(
                r#"{{"cniVersion":"{version}","name":"{net}","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{subnet}"}}]]}}}}"#,
                dd.display()
            )
        };
        let (c0, c1) = (conf("mynet0", "10.1.2.0/24"), conf("mynet1", "10.2.2.0/24"));
        assert!(run(&ours(), &Call::new("ADD", "dummy", &c0).ifname("eth0")).ok());
        assert!(run(&ours(), &Call::new("ADD", "dummy", &c1).ifname("eth1")).ok());
        let read = |p: &str| std::fs::read_to_string(dd.path().join(p)).ok();
        assert_eq!(read("mynet0/10.1.2.2").as_deref(), Some("dummy\r\neth0"));
        assert_eq!(read("mynet1/10.2.2.2").as_deref(), Some("dummy\r\neth1"));
        assert!(run(&ours(), &Call::new("DEL", "dummy", &c0).ifname("eth0")).ok());
        assert_eq!(read("mynet0/10.1.2.2"), None);
        assert_eq!(read("mynet1/10.2.2.2").as_deref(), Some("dummy\r\neth1"));
        assert!(run(&ours(), &Call::new("DEL", "dummy", &c1).ifname("eth1")).ok());
        assert_eq!(read("mynet1/10.2.2.2"), None);
    }
}

/// Upstream: the repeat ADD errors ("duplicate allocation"). Deviation 1: it returns the existing address.
#[test]
fn repeated_add_for_the_same_attachment_returns_its_address() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("repeat{version}"));
        let conf = format!(
            r#"{{"cniVersion":"{version}","name":"mynet0","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.1.2.0/24"}}]]}}}}"#,
            dd.display()
        );
        assert_eq!(add(&conf, "dummy").ips(), ["10.1.2.2/24"], "{version}");
        assert_eq!(add(&conf, "dummy").ips(), ["10.1.2.2/24"], "{version}");
        assert_eq!(add(&conf, "dummy1").ips(), ["10.1.2.3/24"], "{version}");
        assert_eq!(add(&conf, "dummy").ips(), ["10.1.2.2/24"], "{version}");
        assert_eq!(leases(&dd.path().join("mynet0")), ["10.1.2.2", "10.1.2.3"], "no second lease was created");
        assert!(del(&conf, "dummy").ok());
        assert!(!dd.path().join("mynet0/10.1.2.2").exists());
        assert!(del(&conf, "dummy1").ok());
    }
}

#[test]
fn del_releases_old_format_leases() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("oldfmt{version}"));
        let conf = mynet(version, &dd, r#""ranges":[[{"subnet":"10.1.2.0/24"}]]"#);
        assert!(add(&conf, "dummy").ok());
        let lease = dd.path().join("mynet/10.1.2.2");
        assert_eq!(std::fs::read_to_string(&lease).unwrap(), "dummy\r\neth0");
        std::fs::write(&lease, "dummy").unwrap();
        assert!(del(&conf, "dummy").ok());
        assert!(!lease.exists(), "{version}");
    }
}

#[test]
fn del_of_an_unknown_id_succeeds() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("unknown{version}"));
        let conf = mynet(version, &dd, r#""subnet":"10.1.2.0/24""#);
        let out = del(&conf, "dummy");
        assert!(out.ok() && out.stdout.is_empty(), "{version}: {out:?}");
        let out = run(&ours(), &Call::new("DEL", "dummy", &conf).netns(""));
        assert!(out.ok(), "DEL with an empty CNI_NETNS: {out:?}");
    }
}

#[test]
fn no_error_message_on_initial_subnet_creation() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("initial{version}"));
        let conf = mynet(version, &dd, r#""subnet":"10.1.2.0/24""#);
        let out = add(&conf, "testing");
        assert!(out.ok());
        assert!(!out.stdout.contains("Error retrieving last reserved ip") && out.stderr.is_empty(), "{out:?}");
    }
}

fn with_ips(version: &str, dd: &TempDir, ranges: &str, ips: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"mynet","ipam":{{"type":"host-local","dataDir":"{}","ranges":{ranges}}},"args":{{"cni":{{"ips":{ips}}}}}}}"#,
        dd.display()
    )
}

#[test]
fn requested_addresses_from_config_args() {
    for version in VERSIONS {
        let dd = TempDir::new(&format!("custom{version}"));
        let one = with_ips(version, &dd, r#"[[{"subnet":"10.1.2.0/24"}]]"#, r#"["10.1.2.88"]"#);
        assert_eq!(add(&one, "dummy").ips(), ["10.1.2.88/24"], "{version}");

        let dd = TempDir::new(&format!("custom2{version}"));
        let two = with_ips(
            version,
            &dd,
            r#"[[{"subnet":"10.1.2.0/24"}],[{"subnet":"10.1.3.0/24"}]]"#,
            r#"["10.1.2.88","10.1.3.77"]"#,
        );
        let out = add(&two, "dummy");
        if version == "0.1.0" || version == "0.2.0" {
            assert_eq!(out.error().1, format!("CNI version {version} does not support more than 1 address per family"));
        } else {
            assert_eq!(out.ips(), ["10.1.2.88/24", "10.1.3.77/24"], "{version}");
        }

        let dd = TempDir::new(&format!("custom3{version}"));
        let protocols = with_ips(
            version,
            &dd,
            r#"[[{"subnet":"172.16.1.0/24"},{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/48"}]]"#,
            r#"["10.1.2.88","2001:db8:1::999"]"#,
        );
        assert_eq!(add(&protocols, "dummy").ips(), ["10.1.2.88/24", "2001:db8:1::999/48"], "{version}");

        let dd = TempDir::new(&format!("custom4{version}"));
        let unused = with_ips(
            version,
            &dd,
            r#"[[{"subnet":"10.1.2.0/24"}],[{"subnet":"10.1.3.0/24"}]]"#,
            r#"["10.1.2.88","10.1.2.77"]"#,
        );
        let (_, msg) = add(&unused, "dummy").error();
        if version == "0.1.0" || version == "0.2.0" {
            assert_eq!(msg, format!("CNI version {version} does not support more than 1 address per family"));
        } else {
            assert!(msg.starts_with("failed to allocate all requested IPs: 10.1.2."), "{msg}");
            assert!(leases(&dd.path().join("mynet")).is_empty(), "a failed ADD leaves nothing behind");
        }
    }
}

#[test]
fn extra_upstream_acceptance_cases() {
    let dd = TempDir::new("extra");
    let conf = |name: &str, ipam: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{name}","ipam":{{"type":"host-local","dataDir":"{}",{ipam}}}}}"#,
            dd.display()
        )
    };
    // /30: one address, then exhaustion.
    let c = conf("n30", r#""subnet":"192.0.2.0/30""#);
    assert_eq!(add(&c, "a").ips(), ["192.0.2.2/30"]);
    assert_eq!(
        add(&c, "b").error().1,
        "failed to allocate for range 0: no IP addresses available in range set: 192.0.2.1-192.0.2.2"
    );
    // /126: two addresses.
    let c = conf("n126", r#""subnet":"2001:db8::/126""#);
    assert_eq!(add(&c, "a").ips(), ["2001:db8::2/126"]);
    assert_eq!(add(&c, "b").ips(), ["2001:db8::3/126"]);
    assert!(add(&c, "c").error().1.starts_with("failed to allocate for range 0: no IP addresses available"));
    for small in ["10.0.0.0/31", "10.0.0.0/32", "2001:db8::/127"] {
        let (code, msg) = add(&conf("small", &format!(r#""subnet":"{small}""#)), "a").error();
        assert_eq!((code, msg), (7, format!("invalid range set 0: Network {small} too small to allocate from")));
    }
    // A custom gateway makes .1 allocatable.
    let c = conf("gw6", r#""subnet":"10.5.0.0/29","gateway":"10.5.0.6""#);
    let got: Vec<String> = (0..5).map(|i| add(&c, &format!("g{i}")).ips()[0].clone()).collect();
    assert_eq!(got, ["10.5.0.1/29", "10.5.0.2/29", "10.5.0.3/29", "10.5.0.4/29", "10.5.0.5/29"]);
    // rangeStart = gateway: the gateway is skipped.
    assert_eq!(add(&conf("rs", r#""subnet":"10.6.0.0/24","rangeStart":"10.6.0.1""#), "a").ips(), ["10.6.0.2/24"]);
    // Requested gateway, taken, outside the range.
    let c = conf(
        "req",
        r#""ranges":[[{"subnet":"10.1.3.0/24"}],[{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.10","rangeEnd":"10.1.2.20"}]]"#,
    );
    let out = run(&ours(), &Call::new("ADD", "r1", &c).args("IP=10.1.3.1"));
    assert_eq!(out.error().1, "failed to allocate for range 0: requested ip 10.1.3.1 is subnet's gateway");
    assert!(run(&ours(), &Call::new("ADD", "r2", &c).args("IP=10.1.2.15")).ok());
    let out = run(&ours(), &Call::new("ADD", "r3", &c).args("IP=10.1.2.15"));
    assert_eq!(out.error().1, "failed to allocate for range 1: requested IP address 10.1.2.15 is not available in range set 10.1.2.10-10.1.2.20");
    for outside in ["10.1.2.5", "10.1.2.0", "10.1.2.255"] {
        let out = run(&ours(), &Call::new("ADD", "r4", &c).args(&format!("IP={outside}")));
        assert_eq!(out.error().1, format!("failed to allocate all requested IPs: {outside}"));
    }
    // CHECK needs 0.4.0; GC and STATUS need 1.1.0.
    let old = conf("chk", r#""subnet":"10.7.0.0/24""#).replace("1.0.0", "0.3.1");
    assert_eq!(run(&ours(), &Call::new("CHECK", "a", &old)).error(), (1, "config version does not allow CHECK".into()));
    let c10 = conf("gc", r#""subnet":"10.8.0.0/24""#);
    assert_eq!(run(&ours(), &Call::new("GC", "a", &c10)).error(), (1, "config version does not allow GC".into()));
    assert_eq!(
        run(&ours(), &Call::new("STATUS", "a", &c10)).error(),
        (1, "config version does not allow STATUS".into())
    );
}

#[test]
fn unknown_cni_args_fail_every_verb_like_upstream() {
    let dd = TempDir::new("args");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"mynet","ipam":{{"type":"host-local","dataDir":"{}","subnet":"10.1.2.0/24"}}}}"#,
        dd.display()
    );
    for verb in ["ADD", "DEL", "CHECK"] {
        let out = run(&ours(), &Call::new(verb, "a", &conf).args("FOO=1"));
        assert_eq!(out.error(), (4, r#"ARGS: unknown args ["FOO=1"]"#.into()), "{verb}");
    }
}
