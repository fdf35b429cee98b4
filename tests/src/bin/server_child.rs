//! The server the power-loss test kills: `emporium`'s HTTP server on the directory it is
//! given, on a free loopback port, with the test configuration (cheap password hashing,
//! no rate limits). It prints `LISTENING http://ADDR` once it accepts connections, then
//! serves until it is killed. The first admin comes from `EMPORIUM_ADMIN_EMAIL` and
//! `EMPORIUM_ADMIN_PASSWORD`, as for the real binary.
//!
//! Usage: `server-child DIR [SEARCH_DIR]`: the search index goes in SEARCH_DIR when
//! given (the lossy FUSE file system serves no memory maps, which Tantivy needs).
//! `EMPORIUM_PAYMENT_CALLBACK_DELAY_MS` and `EMPORIUM_PAYMENT_CALLBACK_WAIT_S` set the
//! payment settings of those names, `EMPORIUM_WEBHOOK_BACKOFF_MS` the webhooks' first
//! retry delay; webhooks may deliver to loopback (the test's receiver);
//! `EMPORIUM_SMTP_URL` sends notifications there (else they are off).

use emporium_server::config::Config;
use emporium_server::server::RunningServer;

fn main() -> anyhow::Result<()> {
    emporium_engine::tune_process_memory()?;
    let dir = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: server-child DIR"))?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.into(),
        search_dir: std::env::args().nth(2).map(Into::into),
        password_hash_kib: 64,
        rate_limits: false,
        ..Config::default()
    };
    // The payment crash test's timing: a quick callback, and a short wait before a
    // provider that lost its callback (killed with the process) is asked again.
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = number("EMPORIUM_PAYMENT_CALLBACK_DELAY_MS") {
        config.payment_callback_delay_ms = ms;
    }
    if let Some(s) = number("EMPORIUM_PAYMENT_CALLBACK_WAIT_S") {
        config.payment_callback_wait_s = s;
    }
    // The webhook test's receiver listens on loopback; its retries are quick.
    config.webhooks.allow_private = true;
    if let Some(ms) = number("EMPORIUM_WEBHOOK_BACKOFF_MS") {
        config.webhooks.backoff_ms = ms;
    }
    // Notifications only where a test asks, through its SMTP receiver.
    config.notifications.sender = match std::env::var("EMPORIUM_SMTP_URL") {
        Ok(url) => emporium_server::notifications::SenderKind::Smtp(url),
        Err(_) => emporium_server::notifications::SenderKind::Off,
    };
    if let Some(ms) = number("EMPORIUM_NOTIFICATION_BACKOFF_MS") {
        config.notifications.backoff_ms = ms;
    }
    if let Some(attempts) = number("EMPORIUM_NOTIFICATION_ATTEMPTS_MAX") {
        config.notifications.attempts_max = attempts as u32;
    }
    // The deliberately broken build the power-loss test must catch.
    config.faults.unsynced_log = std::env::var_os("EMPORIUM_CRASH_UNSYNCED_LOG").is_some();
    let server = RunningServer::start(config)?;
    println!("LISTENING {}", server.url(""));
    loop {
        std::thread::park();
    }
}
