//! Group blobs and group control payloads -> a member's engine. See
//! `src/core_checks.rs` (`check_group_message`).
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_group_message(data));
