//! Fuzzes the follower of an index (a read-only handle reading what a writer appended): the
//! first two bytes say where the reader's open cut the index, the rest is the index. Whatever
//! the bytes, a follower that reads on must end with the keys and places a replay of the whole
//! index gives; a disagreement panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cut = usize::from(u16::from_le_bytes([data[0], data[1]]));
    if let Err(why) = spillchest::format::check_index_follow(&data[2..], cut) {
        panic!("follower and replay disagree: {why}");
    }
});
