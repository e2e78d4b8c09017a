//! Client byte stream -> FrameDecoder (split at arbitrary points) ->
//! ClientFrame::decode -> re-encode. See `sotto_relay::fuzzing::check_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_relay::fuzzing::check_frame(data));
