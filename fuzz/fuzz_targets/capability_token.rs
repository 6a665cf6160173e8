//! The capability token as presented in `Proxy-Authorization` (`firma::fuzzing::capability_token`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| firma::fuzzing::capability_token(data));
