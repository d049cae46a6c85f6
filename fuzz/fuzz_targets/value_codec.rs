//! Fuzzes the default codec's bulk path for byte and float vectors against serde's: any bytes
//! must be refused by both or decode to the same elements.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = spillchest::format::check_value_codec(data) {
        panic!("{why}");
    }
});
