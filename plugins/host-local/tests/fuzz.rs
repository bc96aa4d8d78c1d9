//! Fuzz targets for the parsers, with a small mutation-based engine that runs on stable Rust.
//!
//! Targets: the host-local config (with CNI_ARGS), CNI_ARGS alone, results (parse, convert
//! to every version, print, parse back), the lease index and pod records, OpenYurt marker
//! names, and the skel's handling of stdin. Seeds are the recorded upstream traffic
//! (testdata/upstream) and the example conflists; inputs are mutated with byte edits, a
//! dictionary of JSON and CNI tokens, and splices between seeds.
//!
//! Each target runs for FUZZ_SECONDS (default 2) with FUZZ_SEED (default: the clock).
//! A panic saves the input to target/fuzz-crashes/ and fails the test.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::Rng;
use host_local::index::View;
use host_local::store::Marker;
use libcni::args::{CniArgs, Kind};
use libcni::types::AnyResult;
use libcni::version::ALL;

const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e400",
    "\\u0000",
    "\\ud800",
    "\"cniVersion\":\"1.1.0\"",
    "\"cniVersion\":\"0.2.0\"",
    "\"name\":\"n\"",
    "\"ipam\":{",
    "\"ranges\":[[",
    "\"subnet\":",
    "\"10.0.0.0/8\"",
    "\"::/0\"",
    "\"::ffff:1.2.3.4/120\"",
    "\"255.255.255.255/32\"",
    "\"rangeStart\":",
    "\"rangeEnd\":",
    "\"gateway\":",
    "\"routes\":[{\"dst\":",
    "\"ips\":[",
    "\"ip4\":{\"ip\":",
    "\"address\":",
    "\"version\":\"4\"",
    "\"interface\":",
    "\"dns\":{",
    "\"stickyIPs\":",
    "\"holdDuration\":\"1h\"",
    "\"runtimeConfig\":{\"ipRanges\":",
    "IP=",
    "IgnoreUnknown=1",
    ";",
    "=",
    "K8S_POD_NAME=",
    "K8S_POD_NAMESPACE=",
    "\r\n",
    " ",
    "%",
    "~",
    "L ",
    "P ",
    "M ",
    "end ",
    "held",
    "active",
    "_",
];

fn seconds() -> Duration {
    Duration::from_secs_f64(std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0))
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let recorded = include_str!("../../../testdata/upstream/host-local-outputs.txt");
    for block in recorded.split("##### ").skip(1) {
        if let Some((_, rest)) = block.split_once("stdin: ") {
            seeds.push(rest.lines().next().unwrap_or("").as_bytes().to_vec());
        }
        if let Some((_, rest)) = block.split_once("stdout:\n") {
            seeds.push(rest.split("\nexit:").next().unwrap_or("").as_bytes().to_vec());
        }
    }
    let conflists = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/conflists");
    for e in std::fs::read_dir(conflists).unwrap().flatten() {
        seeds.push(std::fs::read(e.path()).unwrap());
    }
    seeds.push(b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.0.0.5/24".to_vec());
    seeds.push(
        b"host-local-index v1 1 2\nL 10.0.0.2 7 c1%0D%0Aeth0\nP 10.0.0.2 c1 eth0 default web-0 ~ b active 5\nM 10.0.0.9 ns p 3\nend 99\n"
            .to_vec(),
    );
    seeds.push(br#"{"containerId":"c1","ifname":"eth0","namespace":"d","name":"p","uid":"","bootId":"b","state":"held","since":"2026-01-01T00:00:00Z"}"#.to_vec());
    seeds.push(b"10.0.0.9_kube-system_coredns-x".to_vec());
    seeds
}

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if data.is_empty() { 0 } else { rng.below(data.len() + 1) };
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *rng.pick(&[0u8, 0xff, b'"', b'{', b'[', b':', b',', b'\\', b'\n', 0x80]);
            }
            2 => {
                let token = rng.pick(DICTIONARY).as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            3 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(32)).min(data.len());
                let chunk = data[start..end].to_vec();
                data.splice(at..at, chunk);
            }
            5 => {
                let other = rng.pick(seeds);
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    data.truncate(at);
                    data.extend_from_slice(&other[start..]);
                }
            }
            _ => {
                let digits = rng.below(30).to_string();
                data.splice(at..at, digits.bytes());
            }
        }
    }
    data.truncate(64 * 1024);
    data
}

/// Run `target` on mutated inputs for the configured time; panics are failures.
fn fuzz(name: &str, target: impl Fn(&[u8])) {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut rng = Rng::new(seed ^ name.len() as u64);
    let mut corpus = seeds();
    let budget = seconds();
    let started = Instant::now();
    let mut runs = 0u64;
    std::panic::set_hook(Box::new(|_| {}));
    while started.elapsed() < budget {
        let base = corpus[rng.below(corpus.len())].clone();
        let input = mutate(&mut rng, &base, &corpus);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let _ = std::panic::take_hook();
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{runs}"));
            std::fs::write(&path, &input).unwrap();
            target(&input); // panic again, with the message this time
            panic!("{name}: crash saved to {} (FUZZ_SEED={seed})", path.display());
        }
        // Keep some mutants around so that edits compound.
        if runs.is_multiple_of(16) && corpus.len() < 4096 {
            corpus.push(input);
        }
        runs += 1;
    }
    let _ = std::panic::take_hook();
    eprintln!("fuzz {name}: {runs} runs in {:?}, no crash (FUZZ_SEED={seed})", started.elapsed());
    assert!(runs > 100, "{name} barely ran");
}

fn split_args(data: &[u8]) -> (&[u8], String) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        None => (data, String::new()),
    }
}

#[test]
fn fuzz_host_local_config() {
    fuzz("config", |data| {
        let (stdin, args) = split_args(data);
        if let Ok(v) = libcni::json::parse(stdin) {
            if let Ok(conf) = host_local::config::load(&v, &args) {
                // Whatever loads is canonical: every range inside its subnet, start <= end.
                for set in &conf.ranges {
                    for r in set {
                        assert!(r.subnet.contains(r.start) && r.subnet.contains(r.end), "{r:?}");
                        assert!(libcni::ip::ip_to_u128(r.start) <= libcni::ip::ip_to_u128(r.end));
                    }
                }
            }
        }
    });
}

#[test]
fn fuzz_cni_args() {
    const SCHEMA: &[(&str, Kind)] =
        &[("IP", Kind::Ip), ("K8S_POD_NAME", Kind::Text), ("K8S_POD_NAMESPACE", Kind::Text)];
    fuzz("cni_args", |data| {
        let text = String::from_utf8_lossy(data);
        if let Ok(args) = CniArgs::parse(&text, SCHEMA) {
            let _ = (args.ip(), args.pod_name(), args.pod_namespace());
        }
        let _ = libcni::args::split_pairs(&text);
    });
}

#[test]
fn fuzz_results_and_conversions() {
    fuzz("result", |data| {
        let Ok(v) = libcni::json::parse(data) else { return };
        let Ok(result) = AnyResult::from_json_any(&v) else { return };
        for version in ALL {
            if let Ok(converted) = result.convert_to(version) {
                let printed = converted.to_wire();
                let reparsed = libcni::json::parse(printed.as_bytes()).expect("we print valid JSON");
                let back = AnyResult::from_json(version, &reparsed).expect("we parse what we print");
                // Printing is Go's, which is not injective (an IPv4-mapped /120 prints as the
                // IPv4 /24): what we print must read back to the same text.
                assert_eq!(back.to_wire(), printed, "print/parse round trip in {version}");
            }
        }
    });
}

#[test]
fn fuzz_lease_index_and_records() {
    fuzz("leases", |data| {
        let text = String::from_utf8_lossy(data).into_owned();
        if let Some((view, mtime)) = View::parse(data.to_vec()) {
            let rendered = view.render(mtime);
            let (again, _) = View::parse(rendered.clone().into_bytes()).expect("a rendered index parses");
            assert_eq!(again.render(mtime), rendered);
            let _ = view.find(host_local::store::Query::Held);
        }
        let _ = host_local::disk::record::parse(data);
        let _ = host_local::disk::parse_last_reserved(data);
        let _ = Marker::parse_name(&text);
    });
}

#[test]
fn fuzz_skel_stdin() {
    struct Never;
    impl libcni::skel::Plugin for Never {
        fn add(&self, _: &libcni::skel::CmdArgs) -> libcni::Result<AnyResult> {
            Err(libcni::Error::internal("not reached"))
        }
        fn del(&self, _: &libcni::skel::CmdArgs) -> libcni::Result<()> {
            Ok(())
        }
        fn check(&self, _: &libcni::skel::CmdArgs) -> libcni::Result<()> {
            Ok(())
        }
        fn gc(&self, _: &libcni::skel::CmdArgs) -> libcni::Result<()> {
            Ok(())
        }
        fn status(&self, _: &libcni::skel::CmdArgs) -> libcni::Result<()> {
            Ok(())
        }
    }
    let info = libcni::skel::PluginInfo { name: "fuzz", version: "0", supported: &ALL };
    let env: HashMap<&str, &str> =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")].into();
    fuzz("skel", |data| {
        let getenv = |k: &str| env.get(k).unwrap_or(&"").to_string();
        let out = libcni::skel::dispatch(&Never, &info, &getenv, &mut &data[..]);
        if out.exit_code != 0 {
            let v = libcni::json::parse(out.stdout.as_bytes()).expect("errors are JSON");
            assert!(v["code"].as_u64().is_some() && v["msg"].is_string());
        }
    });
}

/// The coverage-guided fuzzer's seed indexes include whole ones with lease and pod lines
/// (fuzz/make_corpus.py mirrors index.rs's format): its `index` target starts from indexes
/// the store accepts, not only from rejected ones.
#[test]
fn the_fuzz_corpus_has_whole_index_seeds() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/index");
    let mut whole = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        if let Some((view, _)) = View::parse(std::fs::read(&path).unwrap()) {
            if view.find(host_local::store::Query::All).iter().any(|lease| lease.pod.is_some()) {
                whole.push(path);
            }
        }
    }
    assert!(whole.len() >= 2, "whole seeds with pod lines: {whole:?}");
}
