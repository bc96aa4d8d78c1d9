use super::*;
use crate::ip::IpNet;
use crate::version::ALL;

fn net(s: &str) -> IpNet {
    IpNet::parse(s).unwrap()
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, gw: Option<&str>) -> Route {
    Route { dst: Some(net(dst)), gw: gw.map(ip), ..Route::default() }
}

/// A result that exercises every field: two IPv4 and one IPv6 address, both route
/// families, 1.1.0 route and interface fields, and DNS.
fn rich() -> Result100 {
    Result100 {
        cni_version: "1.1.0".into(),
        interfaces: vec![v100::Interface {
            name: "eth0".into(),
            mac: "0a:58:0a:01:02:02".into(),
            mtu: 1450,
            sandbox: "/var/run/netns/x".into(),
            socket_path: "/run/s.sock".into(),
            pci_id: "0000:00:01.0".into(),
        }],
        ips: vec![
            v100::IpConfig { interface: Some(0), address: net("10.1.2.2/24"), gateway: Some(ip("10.1.2.1")) },
            v100::IpConfig { interface: Some(0), address: net("10.1.3.2/24"), gateway: None },
            v100::IpConfig { interface: None, address: net("2001:db8:1::2/64"), gateway: Some(ip("2001:db8:1::1")) },
        ],
        routes: vec![
            Route {
                mtu: 1400,
                advmss: 1360,
                priority: 5,
                table: Some(100),
                scope: Some(0),
                ..route("0.0.0.0/0", None)
            },
            route("::/0", Some("2001:db8:1::1")),
            route("192.168.0.0/16", Some("1.1.1.1")),
        ],
        dns: Dns {
            nameservers: vec!["192.0.2.3".into()],
            domain: "a.example".into(),
            search: vec!["b".into()],
            options: vec!["ndots:5".into()],
        },
    }
}

fn layout(v: &str) -> Layout {
    Layout::of(v).unwrap()
}

/// What converting `rich()` into `version` must keep, per Go's converters.
fn expected_in(version: &str) -> AnyResult {
    let r = rich();
    let mut expected = match layout(version) {
        Layout::V100 => AnyResult::V100(r),
        Layout::V040 => AnyResult::V040(Result040 {
            cni_version: String::new(),
            interfaces: vec![v040::Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:01:02:02".into(),
                sandbox: "/var/run/netns/x".into(),
            }],
            ips: vec![
                v040::IpConfig {
                    version: "4".into(),
                    interface: Some(0),
                    address: net("10.1.2.2/24"),
                    gateway: Some(ip("10.1.2.1")),
                },
                v040::IpConfig { version: "4".into(), interface: Some(0), address: net("10.1.3.2/24"), gateway: None },
                v040::IpConfig {
                    version: "6".into(),
                    interface: None,
                    address: net("2001:db8:1::2/64"),
                    gateway: Some(ip("2001:db8:1::1")),
                },
            ],
            routes: r.routes.clone(),
            dns: r.dns.clone(),
        }),
        Layout::V020 => AnyResult::V020(Result020 {
            cni_version: String::new(),
            ip4: Some(v020::IpConfig {
                ip: net("10.1.2.2/24"),
                gateway: Some(ip("10.1.2.1")),
                routes: vec![route("0.0.0.0/0", None), route("192.168.0.0/16", Some("1.1.1.1"))],
            }),
            ip6: Some(v020::IpConfig {
                ip: net("2001:db8:1::2/64"),
                gateway: Some(ip("2001:db8:1::1")),
                routes: vec![route("::/0", Some("2001:db8:1::1"))],
            }),
            dns: r.dns.clone(),
        }),
    };
    expected.set_version(version);
    expected
}

#[test]
fn every_version_pair_converts_like_go() {
    for from in ALL {
        let source = expected_in(from);
        for to in ALL {
            let got = source.convert_to(to).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
            assert_eq!(got.version(), to, "{from} -> {to}");
            // Whatever was lost on the way into `from` stays lost; everything else survives.
            let want = if layout(from) == Layout::V020 || layout(to) == Layout::V020 {
                let narrowest = if layout(from) == Layout::V020 { from } else { to };
                expected_in(narrowest).convert_to(to).unwrap()
            } else if layout(from) == Layout::V040 && layout(to) == Layout::V100 {
                // 0.4.0 has no interface mtu/socketPath/pciID.
                let mut r = rich();
                r.cni_version = to.into();
                r.interfaces[0] = v100::Interface {
                    mtu: 0,
                    socket_path: String::new(),
                    pci_id: String::new(),
                    ..r.interfaces[0].clone()
                };
                AnyResult::V100(r)
            } else {
                expected_in(to)
            };
            assert_eq!(got, want, "{from} -> {to}");
        }
    }
}

#[test]
fn v020_conversion_drops_extra_addresses_and_route_fields() {
    let AnyResult::V020(r) = rich().as_version("0.2.0").unwrap() else { panic!("wrong layout") };
    assert_eq!(r.ip4.as_ref().unwrap().ip, net("10.1.2.2/24"));
    assert_eq!(r.ip4.as_ref().unwrap().routes[0], route("0.0.0.0/0", None));
}

#[test]
fn v020_conversion_refuses_results_without_addresses() {
    let empty = Result100 { cni_version: "1.0.0".into(), ..Default::default() };
    for to in ["0.1.0", "0.2.0"] {
        assert_eq!(empty.as_version(to).unwrap_err().msg, "cannot convert: no valid IP addresses");
    }
    assert!(empty.as_version("0.4.0").is_ok());
}

#[test]
fn unknown_versions_are_refused() {
    assert_eq!(rich().as_version("0.5.0").unwrap_err().msg, "no converter for CNI result version 1.1.0 to 0.5.0");
    let v: Value = serde_json::json!({"cniVersion": "9.9.9"});
    assert_eq!(AnyResult::from_json_any(&v).unwrap_err().msg, "unsupported CNI result version \"9.9.9\"");
}

#[test]
fn empty_version_means_0_1_0() {
    let r = rich().as_version("").unwrap();
    assert_eq!(r.version(), "0.1.0");
}

#[test]
fn wire_round_trip_in_every_version() {
    for v in ALL {
        let r = rich().as_version(v).unwrap();
        let parsed = AnyResult::from_json_any(&json::parse(r.to_wire().as_bytes()).unwrap()).unwrap();
        assert_eq!(parsed, r, "{v}");
    }
}

#[test]
fn route_without_dst_prints_like_go() {
    let r = Route { dst: None, gw: Some(ip("10.0.0.1")), ..Route::default() };
    assert_eq!(json::to_go_compact(&r.to_json()), r#"{"dst":"\u003cnil\u003e","gw":"10.0.0.1"}"#);
    assert_eq!(Route::from_json(&r.to_json()).unwrap(), r, "and it reads back");
}

#[test]
fn v100_output_has_sorted_keys_at_every_level() {
    let text = json::to_go_compact(&rich().to_json());
    assert!(text.starts_with(r#"{"cniVersion":"1.1.0","dns":{"domain":"a.example","nameservers":["192.0.2.3"],"options":["ndots:5"],"search":["b"]},"interfaces":[{"mac":"#), "{text}");
    assert!(
        text.contains(r#"{"advmss":1360,"dst":"0.0.0.0/0","mtu":1400,"priority":5,"scope":0,"table":100}"#),
        "{text}"
    );
}

#[test]
fn v040_output_keeps_go_struct_order_and_empty_dns() {
    let r = Result100 { cni_version: "1.0.0".into(), ips: vec![rich().ips[0].clone()], ..Default::default() };
    let text = json::to_go_compact(&r.as_version("0.3.1").unwrap().to_json());
    assert_eq!(
        text,
        r#"{"cniVersion":"0.3.1","ips":[{"version":"4","interface":0,"address":"10.1.2.2/24","gateway":"10.1.2.1"}],"dns":{}}"#
    );
}

/// The blocks of testdata/upstream/host-local-outputs.txt: (title, stdout).
fn upstream_outputs() -> Vec<(String, String)> {
    let text = include_str!("../../../testdata/upstream/host-local-outputs.txt");
    let mut out = Vec::new();
    for block in text.split("##### ").skip(1) {
        let title = block.lines().next().unwrap().to_string();
        if let Some(rest) = block.split_once("\nstdout:\n") {
            let stdout = rest.1.split_once("\nexit: ").unwrap().0;
            out.push((title, stdout.to_string()));
        }
    }
    out
}

/// What upstream host-local builds for the dual-stack golden config before printing.
fn host_local_dual_stack(version: &str) -> Result100 {
    Result100 {
        cni_version: version.into(),
        ips: vec![
            v100::IpConfig { interface: None, address: net("10.1.2.2/24"), gateway: Some(ip("10.1.2.1")) },
            v100::IpConfig { interface: None, address: net("2001:db8:1::2/64"), gateway: Some(ip("2001:db8:1::1")) },
        ],
        routes: vec![
            route("0.0.0.0/0", None),
            route("::/0", None),
            route("192.168.0.0/16", Some("1.1.1.1")),
            route("2001:db8:2::0/64", Some("2001:db8:3::1")),
        ],
        dns: Dns { nameservers: vec!["192.0.2.3".into()], search: vec!["a.example".into()], ..Dns::default() },
        ..Default::default()
    }
}

#[test]
fn golden_outputs_match_upstream_byte_for_byte() {
    let outputs = upstream_outputs();
    let mut checked = 0;
    for version in ALL {
        let (_, want) = outputs.iter().find(|(t, _)| t.starts_with(&format!("ADD dual-stack v{version} "))).unwrap();
        let got = host_local_dual_stack("1.1.0").as_version(version).unwrap().to_wire();
        assert_eq!(&got, want, "dual-stack {version}");

        let (_, want) =
            outputs.iter().find(|(t, _)| t.starts_with(&format!("ADD minimal legacy subnet v{version} "))).unwrap();
        let minimal = Result100 {
            cni_version: "1.1.0".into(),
            ips: vec![v100::IpConfig { interface: None, address: net("10.9.0.2/16"), gateway: Some(ip("10.9.0.1")) }],
            ..Default::default()
        };
        assert_eq!(&minimal.as_version(version).unwrap().to_wire(), want, "minimal {version}");
        checked += 2;
    }
    assert_eq!(checked, 14);
}

#[test]
fn golden_error_outputs_match_upstream() {
    let outputs = upstream_outputs();
    let (_, want) = outputs.iter().find(|(t, _)| t.starts_with("ADD fill /29 #6")).unwrap();
    let e =
        Error::internal("failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6");
    assert_eq!(&e.to_wire(), want);
}
