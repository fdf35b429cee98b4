//! Notifications over HTTP: a customer's preferences (`/v1/customers/me/...`), the
//! shop's templates and the outbox (`/v1/admin/...`, ops:admin). Rendering and sending:
//! `crate::notifications`.

use std::sync::Arc;

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use super::accounts::me_id;
use super::{cursor, limit, status_filter};
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::notifications::{check_template, default_template};
use crate::problem::Problem;
use crate::wire::*;

/// Each kind, on or off, by its wire name.
#[derive(Serialize)]
struct PreferencesView {
    order_confirmation: bool,
    payment_received: bool,
    order_shipped: bool,
    refund_issued: bool,
    updated_at: Option<String>,
}

fn preferences_view(prefs: Option<&NotificationPreferences>) -> PreferencesView {
    let on = |kind| prefs.is_none_or(|p| p.wants(kind));
    PreferencesView {
        order_confirmation: on(NotificationKind::OrderConfirmation),
        payment_received: on(NotificationKind::PaymentReceived),
        order_shipped: on(NotificationKind::OrderShipped),
        refund_issued: on(NotificationKind::RefundIssued),
        updated_at: prefs.map(|p| rfc3339(p.updated_at)),
    }
}

/// `GET /v1/customers/me/notification-preferences`.
pub async fn preferences(call: Call) -> Result<Out, Problem> {
    let me = me_id(&call)?;
    let prefs = call.app.engine.state().notification_preferences(&me);
    Ok(Out::ok(&preferences_view(prefs.as_deref())))
}

/// `PATCH /v1/customers/me/notification-preferences`: the kinds named are switched (a
/// boolean each), the others stay.
pub async fn update_preferences(call: Call) -> Result<Out, Problem> {
    let me = me_id(&call)?;
    let patch: serde_json::Map<String, serde_json::Value> = call.json()?;
    let mut changes = Vec::new();
    for (name, value) in &patch {
        let kind = NotificationKind::parse(name).ok_or_else(|| {
            Problem::invalid_field(name, "is not a notification kind (order_confirmation, payment_received, order_shipped, refund_issued)")
        })?;
        let on =
            value.as_bool().ok_or_else(|| Problem::invalid_field(name, "must be true or false"))?;
        changes.push((kind, on));
    }
    let command = SetNotificationPreferences { customer_id: me, changes };
    let saved = call.app.engine.send(command).await?;
    Ok(Out::ok(&preferences_view(Some(&saved))))
}

#[derive(Serialize)]
struct TemplateView<'a> {
    kind: &'static str,
    subject: &'a str,
    body: &'a str,
    /// The shop's own (else the default).
    custom: bool,
    updated_at: Option<String>,
}

fn template_view(kind: NotificationKind, saved: Option<&NotificationTemplate>) -> TemplateView<'_> {
    let (subject, body) = default_template(kind);
    match saved {
        Some(t) => TemplateView {
            kind: kind.as_str(),
            subject: &t.subject,
            body: &t.body,
            custom: true,
            updated_at: Some(rfc3339(t.updated_at)),
        },
        None => {
            TemplateView { kind: kind.as_str(), subject, body, custom: false, updated_at: None }
        }
    }
}

fn kind(call: &Call) -> Result<NotificationKind, Problem> {
    let name = call.param("kind");
    NotificationKind::parse(name).ok_or_else(|| {
        Problem::not_found(format!(
            "{name:?} is not a notification kind (order_confirmation, payment_received, order_shipped, refund_issued)"
        ))
    })
}

#[derive(Serialize)]
struct TemplateList<'a> {
    data: Vec<TemplateView<'a>>,
}

/// `GET /v1/admin/notification-templates`: each kind's template in use.
pub async fn templates(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let state = call.app.engine.state();
    let saved: Vec<(NotificationKind, Option<Arc<NotificationTemplate>>)> =
        NotificationKind::ALL.iter().map(|k| (*k, state.notification_template(*k))).collect();
    let data = saved.iter().map(|(k, t)| template_view(*k, t.as_deref())).collect();
    Ok(Out::ok(&TemplateList { data }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateJson {
    subject: String,
    body: String,
}

/// `PUT /v1/admin/notification-templates/{kind}`: checked against a sample order first.
pub async fn save_template(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let kind = kind(&call)?;
    let body: TemplateJson = call.json()?;
    if body.subject.chars().count() <= NOTIFICATION_SUBJECT_MAX
        && body.body.chars().count() <= NOTIFICATION_TEMPLATE_MAX
    {
        check_template(&body.subject, &body.body)
            .map_err(|(field, why)| Problem::invalid_field(field, why))?;
    }
    let command = SaveNotificationTemplate { kind, subject: body.subject, body: body.body };
    let saved = call.app.engine.send(command).await?;
    Ok(Out::ok(&template_view(kind, Some(&saved))))
}

/// `DELETE /v1/admin/notification-templates/{kind}`: the default is used again.
pub async fn reset_template(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let kind = kind(&call)?;
    call.app.engine.send(ResetNotificationTemplate { kind }).await?;
    Ok(Out::status(204))
}

#[derive(Serialize)]
struct NotificationView<'a> {
    id: IdText,
    kind: &'static str,
    status: &'static str,
    event_id: &'a str,
    order_id: Option<IdText>,
    customer_id: Option<IdText>,
    to: &'a str,
    subject: &'a str,
    body: &'a str,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_error: Option<&'a str>,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a Notification> for NotificationView<'a> {
    fn from(n: &'a Notification) -> NotificationView<'a> {
        let pending = n.status == NotificationStatus::Pending;
        NotificationView {
            id: n.id.text(),
            kind: n.kind.as_str(),
            status: n.status.as_str(),
            event_id: &n.event_id,
            order_id: n.order_id.map(|id| id.text()),
            customer_id: n.customer_id.map(|id| id.text()),
            to: &n.to,
            subject: &n.subject,
            body: &n.body,
            attempts: n.attempts,
            next_attempt_at: pending.then(|| rfc3339(n.next_attempt_at)),
            last_error: Some(n.last_error.as_str()).filter(|e| !e.is_empty()),
            created_at: rfc3339(n.created_at),
            updated_at: rfc3339(n.updated_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct OutboxPage<'a> {
    data: Vec<NotificationView<'a>>,
    next_cursor: Option<String>,
    /// How many messages have the status.
    total: usize,
}

/// `GET /v1/admin/notifications`: the outbox by status (pending by default), newest
/// first.
pub async fn outbox(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let query: OutboxQuery = call.query()?;
    let status = status_filter(
        query.status.as_deref(),
        "pending, sent or failed",
        NotificationStatus::parse,
    )?
    .unwrap_or(NotificationStatus::Pending);
    let before = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let limit = limit(query.limit.as_deref())?;
    let state = call.app.engine.state();
    let mut page = state.notifications(status, before, limit + 1);
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = if more { page.last().map(|n| n.status_seq.to_string()) } else { None };
    let data = page.iter().map(|n| NotificationView::from(&**n)).collect();
    Ok(Out::ok(&OutboxPage { data, next_cursor, total: state.notification_count(status) }))
}

fn notification(call: &Call) -> Result<Arc<Notification>, Problem> {
    let id = call.param("id");
    NotificationId::parse(id)
        .and_then(|id| call.app.engine.state().notification(&id))
        .ok_or_else(|| Problem::not_found(format!("notification {id} does not exist")))
}

/// `GET /v1/admin/notifications/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let message = notification(&call)?;
    Ok(Out::ok(&NotificationView::from(&*message)))
}

/// `POST /v1/admin/notifications/{id}/retry`: a failed message is pending again.
pub async fn retry(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let message = notification(&call)?;
    let retried =
        call.app.engine.send(RetryNotification { notification_id: message.id.to_string() }).await?;
    call.app.notifier.wake();
    Ok(Out::ok(&NotificationView::from(&*retried)))
}
