//! Results: parse, convert to every version, print, parse back
//! (tests/fuzz.rs `fuzz_results_and_conversions`).
#![no_main]
use libcni::types::AnyResult;
use libcni::version::ALL;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
