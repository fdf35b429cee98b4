//! What the server targets share: the configuration of the server they fuzz.

use emporium_server::config::Config;

/// A server on a free loopback port over a data directory in `dir`, with the demo
/// catalog, cheap password hashing and no rate limits (the fuzzer is one client).
pub fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a loopback address"),
        data_dir: dir.path().join("data"),
        demo: true,
        password_hash_kib: 64,
        rate_limits: false,
        ..Config::default()
    }
}
