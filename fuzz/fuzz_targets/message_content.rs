//! Encoded `Content` (replies, reactions, edits, deletes) ->
//! `Content::decode`, and back. See `src/core_checks.rs`.
#![no_main]

#[path = "../src/core_checks.rs"]
mod core_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| core_checks::check_message_content(data));
