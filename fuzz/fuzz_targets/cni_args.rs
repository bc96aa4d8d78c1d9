//! CNI_ARGS alone (tests/fuzz.rs `fuzz_cni_args`).
#![no_main]
use libcni::args::{CniArgs, Kind};
use libfuzzer_sys::fuzz_target;

const SCHEMA: &[(&str, Kind)] = &[("IP", Kind::Ip), ("K8S_POD_NAME", Kind::Text), ("K8S_POD_NAMESPACE", Kind::Text)];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(args) = CniArgs::parse(&text, SCHEMA) {
        let _ = (args.ip(), args.pod_name(), args.pod_namespace());
    }
    let _ = libcni::args::split_pairs(&text);
    // host-local's own schema too.
    if let Ok(args) = CniArgs::parse(&text, host_local::config::ARGS_SCHEMA) {
        let _ = (args.ip(), args.pod_name(), args.pod_namespace(), args.pod_uid(), args.pod_infra_container_id());
    }
});
