//! Operations: health, readiness, metrics, the OpenAPI document, replication status and
//! checkpoints.

use std::sync::atomic::Ordering;

use emporium_engine::{EngineError, NodeRole};
use emporium_replication::SyncPolicy;
use serde_json::json;

use crate::app::now_ms;
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::rfc3339;

/// `GET /healthz`.
pub async fn health(_call: Call) -> Result<Out, Problem> {
    Ok(Out::ok(&json!({"status": "ok"})))
}

/// `GET /readyz`.
pub async fn ready(call: Call) -> Result<Out, Problem> {
    if !call.app.ready.load(Ordering::Acquire) {
        let mut problem =
            Problem::new(503, "unavailable", "Not ready", "recovery is still running");
        problem.retry_after_s = Some(1);
        return Err(problem);
    }
    if let Some(reason) = call.app.engine.failure() {
        return Err(Problem::new(503, "unavailable", "Not ready", reason));
    }
    let engine = &call.app.engine;
    let lsn = engine.durable_lsn().0;
    let role = role_name(engine.role());
    Ok(Out::ok(&json!({"status": "ready", "role": role, "epoch": engine.epoch(), "lsn": lsn})))
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Primary => "primary",
        NodeRole::Standby => "standby",
    }
}

/// `GET /metrics`.
pub async fn metrics(call: Call) -> Result<Out, Problem> {
    let app = &call.app;
    let text = app.metrics.render(&app.engine, &app.replication, &app.payments, &app.kpis);
    Ok(Out {
        body: Some(text.into_bytes()),
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        ..Out::status(200)
    })
}

/// `GET /openapi.json`.
pub async fn openapi(_call: Call) -> Result<Out, Problem> {
    Ok(Out { body: Some(crate::openapi::document_bytes().to_vec()), ..Out::status(200) }
        .hashed()
        .public())
}

/// `GET /v1/admin/replication`.
pub async fn replication(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let app = &call.app;
    let engine = &app.engine;
    let durable = engine.durable_lsn().0;
    let replication = &app.replication;
    let standbys: Vec<_> = replication
        .primary
        .iter()
        .flat_map(|p| p.standbys())
        .map(|s| {
            json!({
                "id": s.name,
                "addr": s.addr.to_string(),
                "acked_lsn": s.acked_lsn,
                "shipped_lsn": s.shipped_lsn,
                "lag_lsn": durable.saturating_sub(s.acked_lsn),
                "lag_ms": s.lag_ms,
                "mode": s.mode,
            })
        })
        .collect();
    let sync = replication.primary.as_ref().map(|p| {
        let config = p.config();
        json!({
            "standbys": config.sync_standbys,
            "policy": match config.sync_policy { SyncPolicy::Strict => "strict", SyncPolicy::Degrade => "degrade" },
            "timeout_ms": config.sync_timeout.as_millis() as u64,
            "degraded": p.degraded(),
        })
    });
    let primary = match (&replication.standby, &app.config.standby) {
        (Some(stats), Some(of)) => {
            let heard = stats.primary_durable_lsn.load(Ordering::Acquire);
            json!({
                "addr": of.primary,
                "connected": stats.connected.load(Ordering::Acquire),
                "epoch": stats.primary_epoch.load(Ordering::Acquire),
                "durable_lsn": heard,
                "lag_lsn": heard.saturating_sub(durable),
                "reconnects": stats.reconnects.load(Ordering::Relaxed),
                "resyncs": stats.resyncs.load(Ordering::Relaxed),
                "bootstraps": stats.bootstraps.load(Ordering::Relaxed),
            })
        }
        _ => serde_json::Value::Null,
    };
    Ok(Out::ok(&json!({
        "role": role_name(engine.role()),
        "epoch": engine.epoch(),
        "last_lsn": engine.last_lsn().0,
        "durable_lsn": durable,
        "replication_addr": replication.listen.map(|a| a.to_string()),
        "sync": sync,
        "standbys": standbys,
        "primary": primary,
    })))
}

/// `GET /v1/admin/digest`: a digest of every table of the state, to compare a standby
/// with its primary at the same LSN (the LSN before and after reading: equal when no
/// write came in meanwhile). Reads the whole state on the blocking pool.
pub async fn digest(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let engine = call.app.engine.clone();
    let body = tokio::task::spawn_blocking(move || {
        let before = engine.last_lsn().0;
        let tables: Vec<_> = engine
            .state()
            .digest()
            .into_iter()
            .map(|t| json!({"table": t.table, "rows": t.rows, "hash": format!("{:016x}", t.hash)}))
            .collect();
        json!({"lsn_before": before, "lsn_after": engine.last_lsn().0, "tables": tables})
    })
    .await
    .map_err(|_| Problem::internal("the digest task failed"))?;
    Ok(Out::ok(&body))
}

/// `POST /v1/admin/promote`: this standby becomes a primary. Its follower notices and
/// stops; standbys may connect to its replication address from then on.
pub async fn promote(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let engine = call.app.engine.clone();
    let epoch = tokio::task::spawn_blocking(move || engine.promote())
        .await
        .map_err(|_| Problem::internal("the promotion task failed"))?
        .map_err(|e| match e {
            EngineError::InvalidState(detail) => {
                Problem::new(409, "invalid_state", "Not a standby", detail)
            }
            other => other.into(),
        })?;
    if let Some(primary) = &call.app.replication.primary {
        primary.promoted();
    }
    let epochs = call.app.engine.epochs();
    let lsn = epochs.starts().last().map_or(0, |start| start.first_lsn.0.saturating_sub(1));
    Ok(Out::ok(&json!({"role": "primary", "epoch": epoch, "lsn": lsn})))
}

/// `POST /v1/admin/checkpoints`: a consistent copy of the data directory, beside it,
/// named by its LSN and time. Clients never choose a path on the server.
pub async fn checkpoint(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    super::idempotent(&call, async {
        let data_dir = &call.app.config.data_dir;
        let name = data_dir.file_name().and_then(|n| n.to_str()).unwrap_or("data");
        let parent = data_dir.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let lsn = call.app.engine.durable_lsn().0;
        let created_at = now_ms();
        let target =
            parent.join(format!("{name}-checkpoints")).join(format!("lsn-{lsn:012}-{created_at}"));
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Problem::internal(format!("creating the checkpoint folder: {e}")))?;
        }
        let engine = call.app.engine.clone();
        let path = target.clone();
        tokio::task::spawn_blocking(move || engine.checkpoint(&path))
            .await
            .map_err(|_| Problem::internal("the checkpoint task failed"))??;
        let body = json!({
            "path": target.display().to_string(),
            "lsn": lsn,
            "created_at": rfc3339(created_at),
        });
        Ok(Out::json(201, &body))
    })
    .await
}
