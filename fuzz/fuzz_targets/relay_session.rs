//! Random action sequences against the relay's sans-IO session over
//! MemoryStorage, checked against a model. See
//! `sotto_relay::fuzzing::check_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_relay::fuzzing::check_session(data));
