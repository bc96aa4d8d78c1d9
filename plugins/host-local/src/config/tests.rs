//! Upstream's config_test.go cases, plus our additions.

use super::*;

fn parse(conf: &str, args: &str) -> Result<IpamConfig> {
    load(&serde_json::from_str(conf).unwrap(), args)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (subnet, start, end, gateway) of every range of every set.
fn shape(c: &IpamConfig) -> Vec<Vec<(String, String, String, String)>> {
    c.ranges
        .iter()
        .map(|set| {
            set.iter()
                .map(|r| (r.subnet.to_string(), r.start.to_string(), r.end.to_string(), r.gateway.to_string()))
                .collect()
        })
        .collect()
}

fn r(subnet: &str, start: &str, end: &str, gw: &str) -> (String, String, String, String) {
    (subnet.into(), start.into(), end.into(), gw.into())
}

#[test]
fn old_style_config() {
    let c = parse(
        r#"{"cniVersion":"0.3.1","name":"mynet","type":"ipvlan","master":"foo0","ipam":{"type":"host-local","subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"}}"#,
        "",
    )
    .unwrap();
    assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("mynet", "0.3.1"));
    assert_eq!(shape(&c), vec![vec![r("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")]]);
    assert!(c.routes.is_empty() && c.requested.is_empty() && c.resolv_conf.is_none());
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
}

#[test]
fn new_style_config() {
    let c = parse(
        r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"},{"subnet":"10.1.4.0/24"}],[{"subnet":"11.1.2.0/24","rangeStart":"11.1.2.9","rangeEnd":"11.1.2.20","gateway":"11.1.2.30"}]]}}"#,
        "",
    )
    .unwrap();
    assert_eq!(
        shape(&c),
        vec![
            vec![
                r("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30"),
                r("10.1.4.0/24", "10.1.4.1", "10.1.4.254", "10.1.4.1")
            ],
            vec![r("11.1.2.0/24", "11.1.2.9", "11.1.2.20", "11.1.2.30")],
        ]
    );
}

#[test]
fn mixed_config_with_runtime_ranges_orders_sets_like_upstream() {
    let c = parse(
        r#"{"cniVersion":"0.3.1","name":"mynet","runtimeConfig":{"irrelevant":"a","ipRanges":[[{"subnet":"12.1.3.0/24"}]]},"ipam":{"type":"host-local","subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30","ranges":[[{"subnet":"11.1.2.0/24","rangeStart":"11.1.2.9","rangeEnd":"11.1.2.20","gateway":"11.1.2.30"}]]}}"#,
        "",
    )
    .unwrap();
    assert_eq!(
        shape(&c),
        vec![
            vec![r("12.1.3.0/24", "12.1.3.1", "12.1.3.254", "12.1.3.1")],
            vec![r("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")],
            vec![r("11.1.2.0/24", "11.1.2.9", "11.1.2.20", "11.1.2.30")],
        ]
    );
}

const THREE_RANGES: &str = r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"11.1.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}"#;

#[test]
fn requested_ips_from_cni_args_and_config_args() {
    let minimal = r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#;
    assert_eq!(parse(minimal, "IP=10.1.2.10").unwrap().requested, vec![ip("10.1.2.10")]);
    assert_eq!(parse(minimal, "IP=10.1.2.11/24").unwrap().requested, vec![ip("10.1.2.11")]);
    for (ips, env) in [
        (r#"["10.1.2.11","11.11.11.11","2001:db8:1::11"]"#, "IP=10.1.2.10"),
        (r#"["10.1.2.11/24","11.11.11.11/24","2001:db8:1::11/64"]"#, "IP=10.1.2.10/24"),
    ] {
        let conf = THREE_RANGES.replacen(
            r#""name":"mynet","#,
            &format!(r#""name":"mynet","args":{{"cni":{{"ips":{ips}}}}},"#),
            1,
        );
        let c = parse(&conf, env).unwrap();
        assert_eq!(c.requested, vec![ip("10.1.2.10"), ip("10.1.2.11"), ip("11.11.11.11"), ip("2001:db8:1::11")]);
    }
    let rc = r#"{"cniVersion":"0.3.1","name":"mynet","runtimeConfig":{"ips":["192.168.0.1","192.168.0.5/24","2001:db8::1/64"]},"ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#;
    let c = parse(rc, "").unwrap();
    assert_eq!(
        (c.cni_version.as_str(), c.requested),
        ("0.3.1", vec![ip("192.168.0.1"), ip("192.168.0.5"), ip("2001:db8::1")])
    );
}

#[test]
fn errors_match_upstream() {
    let with_ranges = |version: &str, ranges: &str| {
        format!(r#"{{"cniVersion":"{version}","name":"mynet","ipam":{{"type":"host-local","ranges":{ranges}}}}}"#)
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            with_ranges(
                "0.3.1",
                r#"[[{"subnet":"10.1.2.0/24"},{"subnet":"10.2.2.0/24"}],[{"subnet":"10.1.4.0/24"},{"subnet":"10.1.6.0/24"},{"subnet":"10.1.8.0/24"},{"subnet":"10.1.2.0/24"}]]"#,
            ),
            "",
            "range set 0 overlaps with 1",
        ),
        (
            with_ranges("0.3.1", r#"[[{"subnet":"10.1.0.0/22"},{"subnet":"10.1.2.0/24"}]]"#),
            "",
            "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap",
        ),
        (
            with_ranges("0.3.1", r#"[[{"subnet":"10.1.0.0/22"},{"subnet":"2001:db8:5::/64"}]]"#),
            "",
            "invalid range set 0: mixed address families",
        ),
        (
            with_ranges("0.2.0", r#"[[{"subnet":"10.1.2.0/24"}],[{"subnet":"11.1.2.0/24"}]]"#),
            "",
            "CNI version 0.2.0 does not support more than 1 address per family",
        ),
        (
            with_ranges("", r#"[[{"subnet":"10.1.2.0/24"}],[{"subnet":"11.1.2.0/24"}]]"#),
            "",
            "CNI version  does not support more than 1 address per family",
        ),
        (r#"{"cniVersion":"0.3.1","name":"n"}"#.into(), "", "IPAM config missing 'ipam' key"),
        (r#"{"cniVersion":"0.3.1","name":"n","ipam":{"type":"host-local"}}"#.into(), "", "no IP ranges specified"),
        (r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":""}}"#.into(), "", "invalid CIDR address: "),
        (
            r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":"10.1.2.0"}}"#.into(),
            "",
            "invalid CIDR address: 10.1.2.0",
        ),
        (
            r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":"10.1.2.0/24","gateway":"foo"}}"#.into(),
            "",
            "invalid IP address: foo",
        ),
        (
            r#"{"cniVersion":"0.3.1","name":"n","args":{"cni":{"ips":[""]}},"ipam":{"subnet":"10.1.2.0/24"}}"#.into(),
            "",
            "cannot understand ip: IP <nil> not v4 nor v6",
        ),
        (
            r#"{"cniVersion":"0.3.1","name":"n","ipam":{"subnet":"10.1.2.0/24"}}"#.into(),
            "FOO=1",
            r#"ARGS: unknown args ["FOO=1"]"#,
        ),
        (
            r#"{"cniVersion":"0.3.1","name":"n","ipam":"x"}"#.into(),
            "",
            "json: cannot unmarshal string into Go struct field Net.ipam of type allocator.IPAMConfig",
        ),
    ];
    for (conf, args, want) in &cases {
        assert_eq!(parse(conf, args).unwrap_err().msg, *want, "{conf}");
    }
}

#[test]
fn one_v4_and_one_v6_set_are_fine_for_0_2_0() {
    let c = r#"{"cniVersion":"0.2.0","name":"mynet","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/48"}]]}}"#;
    assert!(parse(c, "").is_ok());
}

#[test]
fn keys_match_case_insensitively_like_go() {
    let c = parse(r#"{"cniVersion":"0.3.1","name":"n","IPAM":{"SUBNET":"10.1.2.0/24","RangeStart":"10.1.2.5","DataDir":"/tmp/x"}}"#, "").unwrap();
    assert_eq!(shape(&c), vec![vec![r("10.1.2.0/24", "10.1.2.5", "10.1.2.254", "10.1.2.1")]]);
    assert_eq!(c.store_dir(), PathBuf::from("/tmp/x/n"));
}

#[test]
fn legacy_fields_without_subnet_are_ignored() {
    let c = parse(
        r#"{"cniVersion":"0.3.1","name":"n","ipam":{"rangeStart":"10.9.9.9","ranges":[[{"subnet":"10.1.2.0/24"}]]}}"#,
        "",
    )
    .unwrap();
    assert_eq!(c.ranges.len(), 1);
}

#[test]
fn sticky_section() {
    let with = |sticky: &str| {
        parse(&format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"subnet":"10.1.2.0/24"{sticky}}}}}"#), "")
    };
    let default = Some(Sticky { key: StickyKey::NamespaceName, hold_duration: None });
    assert_eq!(with("").unwrap().sticky, default);
    assert_eq!(with(r#","stickyIPs":true"#).unwrap().sticky, default);
    assert_eq!(with(r#","stickyIPs":false"#).unwrap().sticky, None);
    assert_eq!(with(r#","stickyIPs":{"enabled":false}"#).unwrap().sticky, None);
    assert_eq!(
        with(r#","stickyIPs":{"key":"uid","holdDuration":"72h"}"#).unwrap().sticky,
        Some(Sticky { key: StickyKey::Uid, hold_duration: Some(Duration::from_secs(72 * 3600)) })
    );
    assert_eq!(with(r#","stickyIPs":{"key":"name"}"#).unwrap_err().code, libcni::Code::INVALID_NETWORK_CONFIG);
    assert!(with(r#","stickyIPs":{"holdDuration":"soon"}"#).is_err());
}

#[test]
fn durations() {
    for (s, secs) in [
        ("0", 0.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
    ] {
        assert_eq!(parse_duration(s), Some(Duration::from_secs_f64(secs)), "{s}");
    }
    for bad in ["", "h", "5", "5x", "-1h"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
