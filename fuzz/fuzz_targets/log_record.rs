//! Any bytes as a log record's payload: decoded or refused with an error, never a panic
//! (the log is read back at every open and by every standby).
#![no_main]

libfuzzer_sys::fuzz_target!(|payload: &[u8]| {
    let _ = emporium_engine::decode_log(payload);
});
