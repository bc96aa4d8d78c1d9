//! Differential testing against upstream host-local (Debian's /usr/lib/cni/host-local).
//!
//! Each scenario is a random config and a random sequence of ADD/DEL/CHECK calls. It runs
//! three times, each on its own dataDir: upstream alone, ours alone, and the two binaries
//! alternating at random on one directory. After every call, the output and the files
//! upstream knows must match the upstream-only run, apart from the listed deviations.
//!
//! HOSTLOCAL_DIFF_SCENARIOS (default 200) and HOSTLOCAL_DIFF_SEED reproduce or extend a run.

mod common;

use std::path::PathBuf;

use common::{net_conf, ours, run, upstream, upstream_view, Call, Outcome, Rng, TempDir};

/// Debian's upstream is 1.1.1: it stops at spec 1.0.0.
const VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

struct Scenario {
    version: &'static str,
    ipam: String,
    ops: Vec<Call>,
}

fn v4_range(rng: &mut Rng, third: u8) -> String {
    let prefix = *rng.pick(&[28, 29, 29, 30]);
    let base = format!("10.{}.{third}", 40 + rng.below(3));
    match rng.below(6) {
        0 => format!(r#"{{"subnet":"{base}.0/{prefix}","gateway":"{base}.{}"}}"#, 1 + rng.below(4)),
        1 if prefix <= 29 => {
            format!(r#"{{"subnet":"{base}.0/{prefix}","rangeStart":"{base}.2","rangeEnd":"{base}.5"}}"#)
        }
        2 if prefix == 28 => format!(r#"{{"subnet":"{base}.0/{prefix}","rangeStart":"{base}.{}"}}"#, 3 + rng.below(6)),
        _ => format!(r#"{{"subnet":"{base}.0/{prefix}"}}"#),
    }
}

fn v6_range(rng: &mut Rng) -> String {
    let prefix = *rng.pick(&[124, 125, 126]);
    format!(r#"{{"subnet":"2001:db8:{}::/{prefix}"}}"#, rng.below(3))
}

/// A mostly valid, sometimes invalid, IPAM section; returns (ipam, number of range sets).
fn random_ipam(rng: &mut Rng) -> (String, usize) {
    let sets: Vec<String> = match rng.below(9) {
        0 => vec![format!("[{},{}]", v4_range(rng, 1), v4_range(rng, 2))],
        1 | 2 => vec![format!("[{}]", v4_range(rng, 1)), format!("[{}]", v6_range(rng))],
        3 => vec![format!("[{}]", v4_range(rng, 1)), format!("[{}]", v4_range(rng, 2))],
        4 => vec![format!("[{}]", v6_range(rng))],
        5 => {
            // Invalid: host bits, too small, overlap, start outside.
            let bad = rng.pick(&[
                r#"[{"subnet":"10.50.0.5/29"}]"#,
                r#"[{"subnet":"10.50.0.0/31"}]"#,
                r#"[{"subnet":"10.50.0.0/29"},{"subnet":"10.50.0.0/30"}]"#,
                r#"[{"subnet":"10.50.0.0/29","rangeStart":"10.50.1.2"}]"#,
                r#"[{"subnet":"10.50.0.0/29","rangeEnd":"10.50.0.9"}]"#,
                r#"[{"subnet":"10.50.0.0/29"},{"subnet":"2001:db8::/64"}]"#,
            ]);
            vec![bad.to_string()]
        }
        _ => vec![format!("[{}]", v4_range(rng, 1))],
    };
    let count = sets.len();
    if count == 1 && rng.chance(30) {
        // The legacy single-range form.
        let inner = sets[0].trim_start_matches('[').trim_end_matches(']');
        if !inner.contains("},{") {
            return (inner.trim_start_matches('{').trim_end_matches('}').to_string(), 1);
        }
    }
    (format!(r#""ranges":[{}]"#, sets.join(",")), count)
}

fn random_ip_arg(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => format!("IP=10.4{}.1.{}", rng.below(3), rng.below(16)),
        1 => format!("IP=2001:db8:{}::{:x}", rng.below(3), rng.below(16)),
        2 => "IP=nonsense".into(),
        3 => format!("IP=10.4{}.1.{}/24", rng.below(3), rng.below(16)),
        _ => format!("IP=10.4{}.2.{}", rng.below(3), rng.below(16)),
    }
}

fn scenario(rng: &mut Rng) -> Scenario {
    let version = *rng.pick(&VERSIONS);
    let (ipam, range_sets) = random_ipam(rng);
    let k8s = rng.chance(30);
    let containers = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"];
    let mut added: Vec<(String, String)> = Vec::new();
    let mut ops = Vec::new();
    for _ in 0..(8 + rng.below(18)) {
        let id = *rng.pick(&containers);
        let ifname = if rng.chance(15) { "net1" } else { "eth0" };
        let attachment = (id.to_string(), ifname.to_string());
        let verb = match rng.below(10) {
            0..=4 => "ADD",
            5..=7 => "DEL",
            _ => "CHECK",
        };
        let mut call = Call::new(verb, id, "").ifname(ifname);
        if k8s {
            call = call
                .args(&format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{id};K8S_POD_UID=u-{id}"));
        }
        match verb {
            // Repeating an ADD is deviation 1; upstream's rollback of a failed repeat on a
            // multi-set config is deviation 2. Only the single-set, plain repeat is compared.
            "ADD" if added.contains(&attachment) && range_sets > 1 => continue,
            "ADD" if added.contains(&attachment) => {}
            "ADD" => {
                if rng.chance(25) {
                    let ip = random_ip_arg(rng);
                    call.args = if call.args.is_empty() { ip } else { format!("{};{ip}", call.args) };
                }
                added.push(attachment);
            }
            "DEL" => added.retain(|a| *a != attachment),
            _ => {}
        }
        ops.push(call);
    }
    // Stickiness is on by default; with K8S args it must be off to be upstream-identical.
    let sticky = if k8s { r#","stickyIPs":false"# } else { "" };
    Scenario { version, ipam: format!("{ipam}{sticky}"), ops }
}

/// Compare one call's outcome with upstream's, allowing the documented deviations.
fn same_outcome(reference: &Outcome, got: &Outcome, by_ours: bool, repeat_add: bool) -> Result<(), String> {
    if by_ours && repeat_add && reference.code != 0 {
        // Deviation 1: upstream refuses ("duplicate allocation"), we return the lease.
        let (_, msg) = reference.error();
        if !msg.contains("duplicate allocation is not allowed") {
            return Err(format!("upstream failed a repeated ADD unexpectedly: {msg}"));
        }
        if got.code != 0 {
            return Err(format!("repeated ADD failed: {got:?}"));
        }
        let leased = msg.split(": ").nth(1).and_then(|m| m.split(' ').next()).unwrap_or("");
        return match got.ips().iter().any(|a| a.starts_with(&format!("{leased}/"))) {
            true => Ok(()),
            false => Err(format!("repeated ADD returned {:?}, the lease is {leased}", got.ips())),
        };
    }
    match (reference.code == 0, got.code == 0) {
        (true, true) if reference.stdout == got.stdout => Ok(()),
        (false, false) if !by_ours => {
            (reference.stdout == got.stdout).then_some(()).ok_or("error output differs".into())
        }
        // Our error codes follow the spec; the messages are upstream's.
        (false, false) if reference.error().1 == got.error().1 => Ok(()),
        _ => Err(format!("upstream: {reference:?}\n   ours: {got:?}")),
    }
}

#[test]
#[ignore = "needs Debian's upstream host-local: run scripts/test.sh"]
fn random_scenarios_match_upstream() {
    let scenarios: usize = std::env::var("HOSTLOCAL_DIFF_SCENARIOS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let seed: u64 = std::env::var("HOSTLOCAL_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("differential: {scenarios} scenarios, HOSTLOCAL_DIFF_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (upstream_bin, ours_bin) = (upstream(), ours());
    let mut calls = 0;
    for n in 0..scenarios {
        let s = scenario(&mut rng);
        let dirs = [
            TempDir::new(&format!("diff-u{n}")),
            TempDir::new(&format!("diff-o{n}")),
            TempDir::new(&format!("diff-a{n}")),
        ];
        let confs: Vec<String> = dirs.iter().map(|d| net_conf(s.version, d, &s.ipam)).collect();
        let mut added: Vec<(String, String)> = Vec::new();
        for (step, op) in s.ops.iter().enumerate() {
            let attachment = (op.container_id.clone(), op.ifname.clone());
            let repeat_add = op.command == "ADD" && added.contains(&attachment);
            let call = |i: usize| Call { stdin: confs[i].clone(), ..op.clone() };
            let upstream_run = |i: usize| {
                let mut out = run(&upstream_bin, &call(i));
                if s.version == "1.0.0" {
                    // Debian's 1.1.1 predates the CNI library's 1.x printer (v1.2+, used by
                    // upstream v1.6+ and in testdata/upstream) that drops an empty "dns".
                    out.stdout = out.stdout.replace(",\n    \"dns\": {}\n}", "\n}");
                }
                out
            };
            let reference = upstream_run(0);
            let alternate_is_ours = rng.chance(50);
            let runs: [(&str, PathBuf, bool, Outcome); 2] = [
                ("ours", dirs[1].path().to_path_buf(), true, run(&ours_bin, &call(1))),
                (
                    "alternating",
                    dirs[2].path().to_path_buf(),
                    alternate_is_ours,
                    if alternate_is_ours { run(&ours_bin, &call(2)) } else { upstream_run(2) },
                ),
            ];
            let context = || {
                format!(
                    "seed {seed} scenario {n} step {step}: {} {} {} args={:?}\nconf: {}",
                    op.command, op.container_id, op.ifname, op.args, confs[0]
                )
            };
            for (name, dir, by_ours, got) in &runs {
                if let Err(diff) = same_outcome(&reference, got, *by_ours, repeat_add) {
                    panic!("{name} differs from upstream at {}\n{diff}", context());
                }
                let (want, have) = (upstream_view(&dirs[0].path().join("net")), upstream_view(&dir.join("net")));
                assert_eq!(have, want, "{name}: files differ from upstream at {}", context());
            }
            match op.command.as_str() {
                "ADD" if reference.code == 0 => added.push(attachment),
                "DEL" => added.retain(|a| *a != attachment),
                _ => {}
            }
            calls += 1;
        }
    }
    eprintln!("differential: {calls} calls compared");
    assert!(calls >= scenarios * 5);
}
