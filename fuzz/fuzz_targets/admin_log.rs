//! Admin log values -> `AdminLog::open`, with sealing and signing
//! oracles that reach past the AEAD and the signature. See
//! `src/core_checks.rs`.
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_admin_log(data));
