//! Differential fuzzing: arbitrary operation sequences on a chest against a `HashMap`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../differential_driver.rs"]
mod driver;

fuzz_target!(|data: &[u8]| {
    driver::run(data);
});
