//! Any text as a bearer token: verified or refused, never a panic.
#![no_main]

use std::sync::OnceLock;

use emporium_server::auth::TokenKeys;

libfuzzer_sys::fuzz_target!(|token: &[u8]| {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        TokenKeys::new(vec![("k1".into(), vec![1; 32]), ("k2".into(), vec![2; 32])])
    });
    if let Ok(token) = std::str::from_utf8(token) {
        let _ = keys.verify(token);
    }
});
