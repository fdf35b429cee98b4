//! Notifications' commands: templates, preferences, and the outbox (queue the rendered
//! messages, record attempts, retry a failed one).

use std::sync::Arc;

use super::*;
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request};
use crate::validate::Checks;

/// The longest template (subject or body), in characters.
pub const NOTIFICATION_TEMPLATE_MAX: usize = 16 * 1024;

/// The longest rendered body, in bytes.
pub const NOTIFICATION_BODY_MAX: usize = 16 * 1024;

/// The longest rendered subject, in characters.
pub const NOTIFICATION_SUBJECT_MAX: usize = 500;

/// The most messages queued or attempts recorded in one command.
pub const NOTIFICATIONS_PER_COMMAND_MAX: usize = 512;

/// The most pending messages: past it, queueing is refused as overloaded (and the
/// queueing side waits, holding its place in the log).
pub const NOTIFICATIONS_PENDING_MAX: usize = 10_000;

/// The sent and the failed messages kept, each (past it, the oldest of the status
/// goes).
pub const NOTIFICATIONS_KEPT: usize = 1_000;

/// Saves the shop's template of a kind of message (the server checks its syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveNotificationTemplate {
    /// The kind.
    pub kind: NotificationKind,
    /// The subject's template: 1 to 500 characters, one line.
    pub subject: String,
    /// The body's template: 1 to [`NOTIFICATION_TEMPLATE_MAX`] characters.
    pub body: String,
}

/// Drops the shop's template of a kind: the default is used again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetNotificationTemplate {
    /// The kind.
    pub kind: NotificationKind,
}

/// Switches kinds of message on or off for a customer; the kinds not named stay as
/// they are (merged with the current preferences when applied, so two changes at
/// once both hold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetNotificationPreferences {
    /// The customer.
    pub customer_id: CustomerId,
    /// Each kind named, and whether it is sent (`true`) or muted.
    pub changes: Vec<(NotificationKind, bool)>,
}

/// A rendered message, to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    /// What it is about.
    pub kind: NotificationKind,
    /// The event-feed record it was made from.
    pub event_id: String,
    /// The order it is about.
    pub order_id: Option<OrderId>,
    /// The customer it goes to.
    pub customer_id: Option<CustomerId>,
    /// The recipient's address (1 to 320 characters).
    pub to: String,
    /// The subject (at most [`NOTIFICATION_SUBJECT_MAX`] characters).
    pub subject: String,
    /// The body (at most [`NOTIFICATION_BODY_MAX`] bytes).
    pub body: String,
}

/// Queues the messages rendered from the log's entries up to `through`. Applied at
/// most once per position: a command whose `through` is not past
/// [`State::notifications_queued_through`] queues nothing (the entries were queued
/// already, before a restart or on a former primary), so the queueing side may repeat
/// itself safely. Replies how many messages were queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNotifications {
    /// The last log position these messages come from (none may be left after it).
    pub through: Lsn,
    /// The messages: at most [`NOTIFICATIONS_PER_COMMAND_MAX`], possibly none (the
    /// position moves all the same).
    pub notifications: Vec<NewNotification>,
}

/// Records attempts to send pending messages (an attempt on a message no longer
/// pending is ignored). Replies how many were recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordNotificationAttempts {
    /// At most [`NOTIFICATIONS_PER_COMMAND_MAX`].
    pub attempts: Vec<NotificationAttempt>,
}

/// Makes a failed message pending again, due now, with its attempts counted anew.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RetryNotification {
    /// The message.
    pub notification_id: String,
}

impl Request for SaveNotificationTemplate {
    type Output = Arc<NotificationTemplate>;
    type Outcome = NotificationKind;

    fn decide(&self, _state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<NotificationKind>> {
        let mut checks = Checks::default();
        checks.text("subject", &self.subject, 1, NOTIFICATION_SUBJECT_MAX, false);
        checks.text("body", &self.body, 1, NOTIFICATION_TEMPLATE_MAX, true);
        done(checks)?;
        let template = NotificationTemplate {
            kind: self.kind,
            subject: self.subject.clone(),
            body: self.body.clone(),
            updated_at: ctx.now,
        };
        Decision::one(self.kind, NotificationEvent::TemplateSaved(Box::new(template)))
    }

    fn reply(state: &State, kind: NotificationKind) -> Arc<NotificationTemplate> {
        state.notification_template(kind).expect(crate::kernel::handler::APPLIED)
    }
}

impl Request for ResetNotificationTemplate {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        if state.notification_template(self.kind).is_none() {
            return Decision::nothing(());
        }
        Decision::one((), NotificationEvent::TemplateReset { kind: self.kind })
    }

    fn reply(_: &State, _: ()) {}
}

impl Request for SetNotificationPreferences {
    type Output = Arc<NotificationPreferences>;
    type Outcome = CustomerId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CustomerId>> {
        if state.customer(&self.customer_id).is_none() {
            return Err(not_found(EntityKind::Customer, self.customer_id.text().as_str()));
        }
        let before = state.notification_preferences(&self.customer_id);
        let mut muted: Vec<NotificationKind> = NotificationKind::ALL
            .into_iter()
            .filter(|kind| {
                let change = self.changes.iter().rev().find(|(k, _)| k == kind).map(|(_, on)| *on);
                !change.unwrap_or_else(|| before.as_ref().is_none_or(|p| p.wants(*kind)))
            })
            .collect();
        muted.sort_by_key(|k| k.as_str());
        let prefs =
            NotificationPreferences { customer_id: self.customer_id, muted, updated_at: ctx.now };
        Decision::one(self.customer_id, NotificationEvent::PreferencesSet(Box::new(prefs)))
    }

    fn reply(state: &State, customer: CustomerId) -> Arc<NotificationPreferences> {
        state.notification_preferences(&customer).expect(crate::kernel::handler::APPLIED)
    }
}

impl Request for QueueNotifications {
    type Output = usize;
    type Outcome = usize;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<usize>> {
        if self.through <= state.notifications_queued_through() {
            return Decision::nothing(0);
        }
        if self.through > state.last_lsn() {
            return Err(EngineError::field("through", "is beyond the log"));
        }
        if self.notifications.len() > NOTIFICATIONS_PER_COMMAND_MAX {
            return Err(EngineError::field(
                "notifications",
                format!("at most {NOTIFICATIONS_PER_COMMAND_MAX} per command"),
            ));
        }
        let mut checks = Checks::default();
        for (i, n) in self.notifications.iter().enumerate() {
            checks.text(&format!("notifications[{i}].to"), &n.to, 1, 320, false);
            checks.text(
                &format!("notifications[{i}].subject"),
                &n.subject,
                0,
                NOTIFICATION_SUBJECT_MAX,
                false,
            );
            if n.body.len() > NOTIFICATION_BODY_MAX {
                checks.fail(
                    format!("notifications[{i}].body"),
                    format!("must be at most {NOTIFICATION_BODY_MAX} bytes"),
                );
            }
        }
        done(checks)?;
        let pending = state.notification_count(NotificationStatus::Pending);
        if pending + self.notifications.len() > NOTIFICATIONS_PENDING_MAX {
            return Err(EngineError::Overloaded);
        }
        let first = state.notifications.seq.next();
        let mut queued = Vec::with_capacity(self.notifications.len());
        for (i, n) in self.notifications.iter().enumerate() {
            let id = loop {
                let id = NotificationId::from_random(ctx.ids.random_u128());
                if state.notification(&id).is_none()
                    && queued.iter().all(|q: &Notification| q.id != id)
                {
                    break id;
                }
            };
            queued.push(Notification {
                id,
                seq: first + i as u64,
                kind: n.kind,
                event_id: n.event_id.chars().take(100).collect(),
                order_id: n.order_id,
                customer_id: n.customer_id,
                to: n.to.clone(),
                subject: n.subject.clone(),
                body: n.body.clone(),
                // Set by apply.
                status_seq: 0,
                status: NotificationStatus::Pending,
                attempts: 0,
                next_attempt_at: ctx.now,
                last_error: String::new(),
                created_at: ctx.now,
                updated_at: ctx.now,
            });
        }
        let count = queued.len();
        let event = NotificationEvent::Queued { through: self.through, notifications: queued };
        Decision::one(count, event)
    }

    fn reply(_: &State, count: usize) -> usize {
        count
    }
}

impl Request for RecordNotificationAttempts {
    type Output = usize;
    type Outcome = usize;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<usize>> {
        if self.attempts.len() > NOTIFICATIONS_PER_COMMAND_MAX {
            return Err(EngineError::field(
                "attempts",
                format!("at most {NOTIFICATIONS_PER_COMMAND_MAX} per command"),
            ));
        }
        let cut = |error: &String| error.chars().take(500).collect::<String>();
        let mut seen = std::collections::HashSet::new();
        let attempts: Vec<NotificationAttempt> = self
            .attempts
            .iter()
            .filter(|a| {
                seen.insert(a.notification_id)
                    && state
                        .notification(&a.notification_id)
                        .is_some_and(|n| n.status == NotificationStatus::Pending)
            })
            .map(|a| NotificationAttempt {
                notification_id: a.notification_id,
                outcome: match &a.outcome {
                    AttemptOutcome::Sent => AttemptOutcome::Sent,
                    AttemptOutcome::Retry { error, next_attempt_at } => AttemptOutcome::Retry {
                        error: cut(error),
                        next_attempt_at: *next_attempt_at,
                    },
                    AttemptOutcome::Failed { error } => {
                        AttemptOutcome::Failed { error: cut(error) }
                    }
                },
            })
            .collect();
        if attempts.is_empty() {
            return Decision::nothing(0);
        }
        let count = attempts.len();
        Decision::one(count, NotificationEvent::Attempted(attempts))
    }

    fn reply(_: &State, count: usize) -> usize {
        count
    }
}

impl Request for RetryNotification {
    type Output = Arc<Notification>;
    type Outcome = NotificationId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<NotificationId>> {
        let message = NotificationId::parse(&self.notification_id)
            .and_then(|id| state.notification(&id))
            .ok_or_else(|| not_found(EntityKind::Notification, &self.notification_id))?;
        if message.status != NotificationStatus::Failed {
            return Err(EngineError::InvalidState(format!(
                "the notification is {}: only a failed one is retried",
                message.status.as_str()
            )));
        }
        if state.notification_count(NotificationStatus::Pending) >= NOTIFICATIONS_PENDING_MAX {
            return Err(EngineError::Overloaded);
        }
        Decision::one(message.id, NotificationEvent::Requeued { notification_id: message.id })
    }

    fn reply(state: &State, id: NotificationId) -> Arc<Notification> {
        state.notification(&id).expect(crate::kernel::handler::APPLIED)
    }
}
