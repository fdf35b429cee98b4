//! Webhooks' commands: register and delete an endpoint, record and clear dead letters.

use std::sync::Arc;

use super::{DeadLetter, Webhook, WebhookEvent};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::Checks;

/// The most webhooks a shop has.
pub const WEBHOOKS_MAX: usize = 20;

/// The most record types a webhook chooses.
pub const WEBHOOK_EVENTS_MAX: usize = 64;

/// The longest webhook URL.
pub const WEBHOOK_URL_MAX: usize = 2_000;

/// The most dead letters a webhook keeps (past it, the oldest goes).
pub const DEAD_LETTERS_MAX: usize = 1_000;

/// The longest body a dead letter keeps.
pub const DEAD_LETTER_BODY_MAX: usize = 64 * 1024;

/// Registers an endpoint for the records of `events`. Without a secret, one of 256
/// random bits is drawn.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateWebhook {
    /// `http://` or `https://`, at most [`WEBHOOK_URL_MAX`] characters.
    pub url: String,
    /// Record types, 1 to [`WEBHOOK_EVENTS_MAX`] (the server checks the names).
    pub events: Vec<String>,
    /// 16 to 200 characters.
    pub secret: Option<String>,
}

/// Deletes a webhook and its dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteWebhook {
    /// The webhook.
    pub webhook_id: String,
}

/// Records a delivery given up after its last attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordDeadLetter {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The record's id.
    pub event_id: String,
    /// The record's type.
    pub event_type: String,
    /// The body sent (at most [`DEAD_LETTER_BODY_MAX`] bytes).
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt met (cut to 500 characters).
    pub last_error: String,
}

/// Drops a dead letter (after it was redelivered, or by staff).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClearDeadLetter {
    /// The dead letter.
    pub dead_letter_id: String,
}

impl Request for CreateWebhook {
    type Output = Arc<Webhook>;
    type Outcome = WebhookId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<WebhookId>> {
        let mut checks = Checks::default();
        checks.text("url", &self.url, 1, WEBHOOK_URL_MAX, false);
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|s| self.url.len() > s.len() && self.url[..s.len()].eq_ignore_ascii_case(s));
        if !scheme_ok {
            checks.fail("url", "must be an http:// or https:// URL");
        }
        if self.events.is_empty() || self.events.len() > WEBHOOK_EVENTS_MAX {
            checks.fail("events", format!("must hold 1 to {WEBHOOK_EVENTS_MAX} record types"));
        }
        for (i, name) in self.events.iter().enumerate() {
            checks.text(&format!("events[{i}]"), name, 1, 64, false);
        }
        if let Some(secret) = &self.secret {
            checks.text("secret", secret, 16, 200, false);
        }
        done(checks)?;
        if state.webhooks.webhooks.len() >= WEBHOOKS_MAX {
            return Err(EngineError::Conflict(format!(
                "a shop has at most {WEBHOOKS_MAX} webhooks: delete one first"
            )));
        }
        let id = loop {
            let id = WebhookId::from_random(ctx.ids.random_u128());
            if state.webhook(&id).is_none() {
                break id;
            }
        };
        let secret = match &self.secret {
            Some(secret) => secret.clone(),
            None => {
                format!("whsec_{:032x}{:032x}", ctx.ids.random_u128(), ctx.ids.random_u128())
            }
        };
        let mut events = self.events.clone();
        events.sort();
        events.dedup();
        let webhook = Webhook {
            id,
            url: self.url.clone(),
            events,
            secret,
            created_at: ctx.now,
            // Set by apply.
            created_lsn: Lsn(0),
        };
        Decision::one(id, WebhookEvent::Created(Box::new(webhook)))
    }

    fn reply(state: &State, id: WebhookId) -> Arc<Webhook> {
        state.webhook(&id).expect(APPLIED)
    }
}

fn webhook_named(state: &State, id: &str) -> Result<Arc<Webhook>> {
    WebhookId::parse(id)
        .and_then(|id| state.webhook(&id))
        .ok_or_else(|| not_found(EntityKind::Webhook, id))
}

impl Request for DeleteWebhook {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let webhook = webhook_named(state, &self.webhook_id)?;
        Decision::one((), WebhookEvent::Deleted { webhook_id: webhook.id })
    }

    fn reply(_: &State, _: ()) {}
}

impl Request for RecordDeadLetter {
    type Output = Arc<DeadLetter>;
    type Outcome = DeadLetterId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<DeadLetterId>> {
        let webhook = webhook_named(state, self.webhook_id.text().as_str())?;
        if self.body.len() > DEAD_LETTER_BODY_MAX {
            return Err(EngineError::field(
                "body",
                format!("must be at most {DEAD_LETTER_BODY_MAX} bytes"),
            ));
        }
        let id = loop {
            let id = DeadLetterId::from_random(ctx.ids.random_u128());
            if state.dead_letter(&id).is_none() {
                break id;
            }
        };
        let letter = DeadLetter {
            id,
            webhook_id: webhook.id,
            seq: state.webhooks.dead_letter_seq.next(),
            event_id: self.event_id.chars().take(100).collect(),
            event_type: self.event_type.chars().take(100).collect(),
            body: self.body.clone(),
            attempts: self.attempts,
            last_error: self.last_error.chars().take(500).collect(),
            created_at: ctx.now,
        };
        Decision::one(id, WebhookEvent::DeadLettered(Box::new(letter)))
    }

    fn reply(state: &State, id: DeadLetterId) -> Arc<DeadLetter> {
        state.dead_letter(&id).expect(APPLIED)
    }
}

impl Request for ClearDeadLetter {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let letter = DeadLetterId::parse(&self.dead_letter_id)
            .and_then(|id| state.dead_letter(&id))
            .ok_or_else(|| not_found(EntityKind::DeadLetter, &self.dead_letter_id))?;
        Decision::one((), WebhookEvent::DeadLetterCleared { dead_letter_id: letter.id })
    }

    fn reply(_: &State, _: ()) {}
}
