//! The audit line verifier (`firma::fuzzing::audit_line`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| firma::fuzzing::audit_line(data));
