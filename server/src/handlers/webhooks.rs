//! `/v1/admin/webhooks`: endpoints that receive the event feed (ops:admin), their
//! delivery status and history, and their dead letters. Deliveries: `crate::webhooks`.

use std::sync::Arc;

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use super::events::EVENT_TYPES;
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::webhooks::{public, written_address, Attempt, DeliveryStatus};
use crate::wire::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookJson {
    url: String,
    events: Vec<String>,
    secret: Option<String>,
}

#[derive(Serialize)]
struct WebhookView<'a> {
    id: IdText,
    url: &'a str,
    events: &'a [String],
    /// Shown once, in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    created_at: String,
    delivery: Option<DeliveryStatus>,
}

fn view<'a>(
    webhook: &'a Webhook,
    secret: bool,
    delivery: Option<DeliveryStatus>,
) -> WebhookView<'a> {
    WebhookView {
        id: webhook.id.text(),
        url: &webhook.url,
        events: &webhook.events,
        secret: secret.then_some(webhook.secret.as_str()),
        created_at: rfc3339(webhook.created_at),
        delivery,
    }
}

fn webhook(call: &Call) -> Result<Arc<Webhook>, Problem> {
    let id = call.param("id");
    WebhookId::parse(id)
        .and_then(|id| call.app.engine.state().webhook(&id))
        .ok_or_else(|| Problem::not_found(format!("webhook {id} does not exist")))
}

/// `POST /v1/admin/webhooks`: 201 with the webhook and its secret (shown this once).
pub async fn create(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let body: WebhookJson = call.json()?;
    for (i, name) in body.events.iter().enumerate() {
        if !EVENT_TYPES.contains(&name.as_str()) {
            return Err(Problem::invalid_field(
                &format!("events[{i}]"),
                format!("{name:?} is not an event type (see GET /v1/events)"),
            ));
        }
    }
    // The engine checks the text; here, that it is a URL the deliveries can use.
    let uri = body.url.parse::<http::Uri>().ok();
    let usable = uri.as_ref().is_some_and(|u| {
        let scheme = u.scheme_str().map(str::to_ascii_lowercase);
        matches!(scheme.as_deref(), Some("http" | "https"))
            && u.host().is_some_and(|h| !h.is_empty())
    });
    if !usable {
        return Err(Problem::invalid_field(
            "url",
            "must be an http:// or https:// URL with a host",
        ));
    }
    // A name is resolved at each attempt (its answer may change); an address written
    // in the URL never does, and one deliveries may not go to is refused now.
    let host = uri.as_ref().and_then(|u| u.host()).unwrap_or_default();
    let written = written_address(host);
    if let Some(ip) = written.filter(|ip| !call.app.webhooks.allow_private() && !public(*ip)) {
        return Err(Problem::invalid_field(
            "url",
            format!(
                "{ip} is not a public address: deliveries to it would be refused \
                 (the server allows them with --webhook-allow-private)"
            ),
        ));
    }
    let command = CreateWebhook { url: body.url, events: body.events, secret: body.secret };
    let created = call.app.engine.send(command).await?;
    let out =
        Out::created(&view(&created, true, None), format!("/v1/admin/webhooks/{}", created.id));
    Ok(out)
}

#[derive(Serialize)]
struct WebhookList<'a> {
    data: Vec<WebhookView<'a>>,
}

/// `GET /v1/admin/webhooks`.
pub async fn list(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhooks = call.app.engine.state().webhooks();
    let status = |w: &Webhook| call.app.webhooks.status(&w.id).map(|(s, _)| s);
    let data = webhooks.iter().map(|w| view(w, false, status(w))).collect();
    Ok(Out::ok(&WebhookList { data }))
}

/// `GET /v1/admin/webhooks/{id}`: with its delivery status.
pub async fn get(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhook = webhook(&call)?;
    let status = call.app.webhooks.status(&webhook.id).map(|(s, _)| s);
    Ok(Out::ok(&view(&webhook, false, status)))
}

/// `DELETE /v1/admin/webhooks/{id}`: deliveries stop; its dead letters go too.
pub async fn delete(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhook = webhook(&call)?;
    call.app.engine.send(DeleteWebhook { webhook_id: webhook.id.to_string() }).await?;
    Ok(Out::status(204))
}

#[derive(Serialize)]
struct Deliveries {
    data: Vec<Attempt>,
}

/// `GET /v1/admin/webhooks/{id}/deliveries`: the latest attempts, newest first.
pub async fn deliveries(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhook = webhook(&call)?;
    let data = call.app.webhooks.status(&webhook.id).map(|(_, h)| h).unwrap_or_default();
    Ok(Out::ok(&Deliveries { data }))
}

#[derive(Serialize)]
struct DeadLetterView<'a> {
    id: IdText,
    event_id: &'a str,
    event_type: &'a str,
    attempts: u32,
    last_error: &'a str,
    created_at: String,
    body: &'a str,
}

impl<'a> From<&'a DeadLetter> for DeadLetterView<'a> {
    fn from(d: &'a DeadLetter) -> DeadLetterView<'a> {
        DeadLetterView {
            id: d.id.text(),
            event_id: &d.event_id,
            event_type: &d.event_type,
            attempts: d.attempts,
            last_error: &d.last_error,
            created_at: rfc3339(d.created_at),
            body: &d.body,
        }
    }
}

#[derive(Serialize)]
struct DeadLetters<'a> {
    data: Vec<DeadLetterView<'a>>,
}

/// `GET /v1/admin/webhooks/{id}/dead-letters`: oldest first (at most 1000 kept).
pub async fn dead_letters(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhook = webhook(&call)?;
    let letters = call.app.engine.state().dead_letters(&webhook.id, DEAD_LETTERS_MAX);
    let data = letters.iter().map(|d| DeadLetterView::from(&**d)).collect();
    Ok(Out::ok(&DeadLetters { data }))
}

/// `POST /v1/admin/webhooks/{id}/dead-letters/{dead_letter_id}/redeliver`: one attempt
/// now; delivered, the dead letter is dropped (200), else 502 with what the endpoint
/// did.
pub async fn redeliver(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let webhook = webhook(&call)?;
    let id = call.param("dead_letter_id");
    let letter = DeadLetterId::parse(id)
        .and_then(|id| call.app.engine.state().dead_letter(&id))
        .filter(|d| d.webhook_id == webhook.id)
        .ok_or_else(|| Problem::not_found(format!("dead letter {id} does not exist")))?;
    match call.app.webhooks.redeliver(&webhook, &letter).await {
        Ok(()) => Ok(Out::ok(&serde_json::json!({"delivered": true, "event_id": letter.event_id}))),
        Err(why) => Err(Problem::new(
            502,
            "webhook_delivery_failed",
            "Delivery failed",
            format!("the endpoint did not take {}: {why}", letter.event_id),
        )),
    }
}
