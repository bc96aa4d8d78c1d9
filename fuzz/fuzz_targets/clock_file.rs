//! `.hostlocal/clock`: bytes -> what it keeps. Whatever the file says, a new boot's clock
//! moves forward past every plausible stamp, and a file that parses is written back
//! identically.
#![no_main]
use cni_fuzz::api;
use host_local::clock::NodeClock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let saved = api::parse_clock(data);
    // A store's newest stamp, from this boot or an earlier one.
    let stamp = data.iter().take(8).fold(0u64, |n, b| n << 8 | u64::from(*b));
    let here = data.first().is_some_and(|b| b & 1 == 1);
    let before = NodeClock::start_boot(saved.clone(), "fuzz-boot", 0, std::iter::empty());
    let started = NodeClock::start_boot(saved.clone(), "fuzz-boot", 0, [(here, stamp)].into_iter());
    assert!(started.now() >= before.now(), "a stamp moved node time back");
    if let Some(saved) = saved.filter(|s| !s.boots.is_empty()) {
        let last = saved.boots.last().unwrap().0.clone();
        let clock = NodeClock::running(saved.clone(), &last, 1).expect("the last boot is the running one");
        assert_eq!(api::parse_clock(clock.render().as_bytes()), Some(saved), "clock round trip");
    }
});
