//! `last_reserved_ip.<n>`: the first byte picks a config, the rest is the content of every
//! range set's cursor. ADDs run until the pool is exhausted: each must succeed while
//! addresses are left, hand out a distinct address inside the configured range that is
//! not its network, broadcast or gateway address; then ADD fails cleanly.
#![no_main]
use cni_fuzz::{api, Live, Planted, Sandbox, CONFIGS};
use libcni::skel::Command::{Add, Check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else { return };
    let conf = &CONFIGS[which as usize % CONFIGS.len()];
    let _ = api::parse_last_reserved(content);
    let sb = Sandbox::new();
    for set in 0..conf.sets.len() {
        sb.plant(&format!("last_reserved_ip.{set}"), Planted::File(content));
    }
    let mut live = Live::default();
    live.boot("b1");
    for n in 0..conf.usable {
        let id = format!("c{n}");
        let stdin = sb.stdin(conf, &[]);
        let ips = sb
            .call(Add, &id, "eth0", "", "b1", stdin)
            .unwrap_or_else(|e| panic!("ADD {id} failed with {} of {} addresses taken: {e}", n, conf.usable));
        conf.assert_valid(&format!("ADD {id}"), &ips);
        live.added(&id, "eth0", &ips);
        sb.call(Check, &id, "eth0", "", "b1", sb.stdin(conf, &[])).unwrap_or_else(|e| panic!("CHECK {id}: {e}"));
    }
    let full = sb.call(Add, "extra", "eth0", "", "b1", sb.stdin(conf, &[]));
    assert!(full.is_err(), "ADD succeeded on an exhausted pool: {full:?}");
    sb.check_outside();
});
