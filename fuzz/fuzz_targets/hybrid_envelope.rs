//! Bytes -> `open_hybrid`, `open_pairwise` (the post-quantum envelope
//! versions 3 and 4). See `src/core_checks.rs`.
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_hybrid_envelope(data));
