//! A standby server: bootstrap an empty data directory from the primary, serve the
//! HTTP API read-only while following the primary's log, bootstrap again when the
//! primary cannot resume it, and go on serving as a primary once promoted.

use std::sync::Arc;

use emporium_replication::standby::{self, Outcome, StandbyConfig};
use tokio::sync::watch;

use crate::{Config, Server};

/// Runs the standby `config.standby` describes until `shutdown` turns true (then it
/// drains and stops like [`Server::run`]). Promoted, it keeps serving as the primary.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let of = config
        .standby
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a standby needs the primary it follows"))?;
    let stats = of.stats.clone();
    let tls = match &config.replication_ca {
        Some(trusted) => {
            let host = of.primary.rsplit_once(':').map_or(of.primary.as_str(), |(host, _)| host);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = config.replication_server_name.as_deref().unwrap_or(host);
            Some(emporium_replication::tls::Connector::new(trusted, name)?)
        }
        None => None,
    };
    let following = StandbyConfig {
        primary: of.primary,
        name: of.name,
        data_dir: config.data_dir.clone(),
        tls,
        secret: config.replication_secret.clone(),
    };
    loop {
        while standby::needs_bootstrap(&config.data_dir) {
            if let Err(error) = standby::bootstrap(&following, &stats).await {
                tracing::warn!(%error, primary = %following.primary, "bootstrap failed; retrying");
                let mut signalled = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = signalled.wait_for(|s| *s) => return Ok(()),
                }
            }
        }
        let server = Server::bind(config.clone()).await?;
        let engine = server.app().engine.clone();
        let (stop, stopped) = watch::channel(false);
        let stop = Arc::new(stop);
        let mut running = tokio::spawn(server.run(stopped));
        {
            let (stop, mut signalled) = (stop.clone(), shutdown.clone());
            tokio::spawn(async move {
                let _ = signalled.wait_for(|s| *s).await;
                let _ = stop.send(true);
            });
        }
        let outcome = tokio::select! {
            outcome = standby::follow(
                engine.clone(), following.clone(), &stats, shutdown.clone()
            ) => outcome,
            result = &mut running => return result?,
        };
        match outcome {
            Outcome::Promoted => {
                tracing::info!("promoted: serving as the primary");
                // The primary this node followed may still run (a partition): tell it,
                // so it stops acknowledging writes through any standby still on it.
                let (engine, following) = (engine.clone(), following.clone());
                tokio::spawn(async move {
                    if let Err(error) = standby::fence(&engine, &following).await {
                        tracing::info!(%error, "the former primary could not be told of the new epoch");
                    }
                });
                return running.await?;
            }
            Outcome::Shutdown => {
                let _ = stop.send(true);
                return running.await?;
            }
            Outcome::Resync(reason) => {
                tracing::warn!(%reason, "the primary cannot resume this standby: bootstrapping again");
                let _ = stop.send(true);
                running.await??;
                standby::wipe(&config.data_dir)?;
                if let Some(search_dir) = &config.search_dir {
                    standby::wipe(search_dir)?;
                }
            }
        }
    }
}
