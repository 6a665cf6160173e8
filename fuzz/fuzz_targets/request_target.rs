//! The request-target normaliser and classifier (`firma::fuzzing::request_target`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| firma::fuzzing::request_target(data));
