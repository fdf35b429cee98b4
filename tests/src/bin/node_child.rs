//! A replicating node the replication tests start, kill and restart: `emporium serve`
//! with `--replication-listen` (a primary) or `emporium standby` (a standby), with the
//! test configuration (cheap password hashing, no rate limits).
//!
//! Usage:
//! - `node-child primary DIR HTTP_ADDR REPLICATION_ADDR SYNC_STANDBYS POLICY`
//! - `node-child standby DIR HTTP_ADDR REPLICATION_ADDR PRIMARY_ADDR NAME SYNC_STANDBYS POLICY`
//!
//! It serves until it is killed or gets SIGTERM. The first admin comes from
//! `EMPORIUM_ADMIN_EMAIL` and `EMPORIUM_ADMIN_PASSWORD`.

use std::sync::Arc;

use emporium_replication::standby::StandbyStats;
use emporium_server::config::{Config, StandbyOf};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i).cloned().ok_or_else(|| anyhow::anyhow!("usage: see the source; missing {i}"))
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EMPORIUM_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let standby = arg(0)? == "standby";
    let sync_at = if standby { 6 } else { 4 };
    let mut config = Config {
        data_dir: arg(1)?.into(),
        listen: arg(2)?.parse()?,
        replication_listen: Some(arg(3)?.parse()?),
        sync_standbys: arg(sync_at)?.parse()?,
        sync_policy: arg(sync_at + 1)?.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        sync_timeout_ms: 2_000,
        password_hash_kib: 64,
        rate_limits: false,
        // The replication tests compare LSNs: no background writes of the outbox.
        notifications: emporium_server::notifications::NotificationSettings {
            sender: emporium_server::notifications::SenderKind::Off,
            ..Default::default()
        },
        ..Config::default()
    };
    if standby {
        config.standby = Some(StandbyOf {
            primary: arg(4)?,
            name: arg(5)?,
            stats: Arc::new(StandbyStats::default()),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            terminate.recv().await;
            let _ = stop.send(true);
        });
        if standby {
            emporium_server::standby::run(config, stopped).await
        } else {
            emporium_server::Server::bind(config).await?.run(stopped).await
        }
    })
}
