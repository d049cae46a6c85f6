//! Fuzzes the segment parser: any bytes must give a summary or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spillchest::format::check_segment(data);
});
