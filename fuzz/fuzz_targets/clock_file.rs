//! `.hostlocal/clock`: bytes -> the boots it lists. Whatever the file says, the clock of the
//! running boot moves forward past every stamp, and a file that parses is written back
//! identically.
#![no_main]
use cni_fuzz::api;
use host_local::clock::NodeClock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let boots = api::parse_clock(data);
    // A new boot, after the largest stamp a store could hold next to this file.
    let stamp = data.iter().take(8).fold(0u64, |n, b| n << 8 | u64::from(*b));
    let started = NodeClock::start_boot(boots.clone(), "fuzz-boot", 0, stamp);
    assert!(started.now() > stamp || stamp == u64::MAX, "node time went back past {stamp}");
    if let Some((last, _)) = boots.last() {
        let clock = NodeClock::running(boots.clone(), last, 1).expect("the last boot is the running one");
        assert_eq!(api::parse_clock(clock.render().as_bytes()), boots, "clock round trip");
    }
});
