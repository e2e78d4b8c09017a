//! Directory entries and rosters -> `verify_entry` / `verify_roster`, and
//! the admin's and member's encoders again. See `src/core_checks.rs`.
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_directory(data));
