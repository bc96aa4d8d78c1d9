//! The host-local config with CNI_ARGS (tests/fuzz.rs `fuzz_host_local_config`):
//! stdin JSON, a NUL, then CNI_ARGS. Whatever loads is canonical.
#![no_main]
use cni_fuzz::split_args;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (stdin, args) = split_args(data);
    if let Ok(v) = libcni::json::parse(stdin) {
        if let Ok(conf) = host_local::config::load(&v, &args) {
            // Every range inside its subnet, start <= end.
            for set in &conf.ranges {
                for r in set {
                    assert!(r.subnet.contains(r.start) && r.subnet.contains(r.end), "{r:?}");
                    assert!(libcni::ip::ip_to_u128(r.start) <= libcni::ip::ip_to_u128(r.end), "{r:?}");
                }
            }
        }
    }
});
