//! A file message (`File`) -> `FileInfo::decode` and back, or a 64 KiB
//! chunk -> `open_file_chunk`, picked by the first byte. See
//! `src/core_checks.rs`.
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_file_message(data));
