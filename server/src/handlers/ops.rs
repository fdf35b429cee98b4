//! Operations: health, readiness, metrics, the OpenAPI document, replication status and
//! checkpoints.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::app::now_ms;
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::rfc3339;

/// The epoch of a primary that has never been promoted over another.
const EPOCH: u64 = 1;

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
    let lsn = call.app.engine.durable_lsn().0;
    Ok(Out::ok(&json!({"status": "ready", "role": "primary", "epoch": EPOCH, "lsn": lsn})))
}

/// `GET /metrics`.
pub async fn metrics(call: Call) -> Result<Out, Problem> {
    let text = call.app.metrics.render(&call.app.engine);
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
    let engine = &call.app.engine;
    Ok(Out::ok(&json!({
        "role": "primary",
        "epoch": EPOCH,
        "last_lsn": engine.last_lsn().0,
        "durable_lsn": engine.durable_lsn().0,
        "standbys": [],
    })))
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
