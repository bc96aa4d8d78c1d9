//! A lease file's content: the bytes are `<store>/10.1.0.2` (the address round robin tries
//! first), then ADD/CHECK/ADD/DEL/DEL/GC run in process. The store's lease reader is
//! private (disk.rs reads and trims leases during its directory scan), so the reader is
//! fuzzed through the whole store. Whatever a lease holds, no call may fail or panic, a
//! foreign lease keeps its address and its bytes, and nothing outside the store changes.
#![no_main]
use cni_fuzz::{Live, Planted, Sandbox, CONFIGS};
use libcni::skel::Command::{Add, Check, Del, Gc};
use libfuzzer_sys::fuzz_target;

const POD: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p9";

fuzz_target!(|data: &[u8]| {
    let conf = &CONFIGS[1]; // 10.1.0.0/29, sticky
    let sb = Sandbox::new();
    sb.plant("10.1.0.2", Planted::File(data));
    let lease = sb.store_dir().join("10.1.0.2");
    let trimmed = String::from_utf8_lossy(data).trim().to_string();
    let debris = data.iter().all(|b| b.is_ascii_whitespace() || *b == 0);
    let ours = |id: &str| debris || trimmed == format!("{id}\r\neth0") || trimmed == id;
    let stdin = || sb.stdin(conf, &[]);
    let ok = |what: &str, r: libcni::Result<Vec<std::net::IpAddr>>| {
        r.unwrap_or_else(|e| panic!("{what} failed with lease content {data:?}: {e}"))
    };
    let mut live = Live::default();
    live.boot("b1");

    let a = ok("ADD c9", sb.call(Add, "c9", "eth0", POD, "b1", stdin()));
    conf.assert_valid("ADD c9", &a);
    assert!(
        a[0] != "10.1.0.2".parse::<std::net::IpAddr>().unwrap() || ours("c9"),
        "ADD c9 took the foreign lease 10.1.0.2: {a:?}"
    );
    live.added("c9", "eth0", &a);
    ok("CHECK c9", sb.call(Check, "c9", "eth0", POD, "b1", stdin()));
    let b = ok("ADD c8", sb.call(Add, "c8", "eth0", "", "b1", stdin()));
    conf.assert_valid("ADD c8", &b);
    assert!(
        b[0] != "10.1.0.2".parse::<std::net::IpAddr>().unwrap() || ours("c8"),
        "ADD c8 took the foreign lease 10.1.0.2: {b:?}"
    );
    live.added("c8", "eth0", &b);
    ok("DEL c8", sb.call(Del, "c8", "eth0", "", "b1", stdin()));
    ok("DEL c9", sb.call(Del, "c9", "eth0", POD, "b1", stdin()));
    if !ours("c8") && !ours("c9") {
        let now = std::fs::read(&lease).unwrap_or_else(|e| panic!("the foreign lease 10.1.0.2 is gone: {e}"));
        assert_eq!(now, data, "the foreign lease 10.1.0.2 was rewritten");
    }
    ok("GC", sb.call(Gc, "", "", "", "b1", stdin()));
    sb.check_outside();
});
