//! Notifications: the messages a customer is sent about their orders (confirmation,
//! payment, shipment, refund), the shop's templates for them, each customer's
//! preferences, and the outbox that holds every message from its rendering until it
//! was sent or given up.
//!
//! The outbox is state like any other: the messages are queued and their attempts
//! recorded through the log, so they survive a restart and reach a standby, and a
//! promoted standby sends what its former primary had not. Rendering and sending are
//! the server's (`emporium_server::notifications`): it follows the log from
//! [`State::notifications_queued_through`], renders each message of the entries after
//! it, and queues them with that position in one command, which the engine applies at
//! most once per position.

mod commands;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_skiplist::SkipSet;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;

use crate::domains::State;
use crate::kernel::table::{check_v1, decode_row, persist, Counter, Domain, IdIndex, Row, Table};
use crate::types::*;

const TEMPLATES: &str = "notification_templates";
const PREFERENCES: &str = "notification_preferences";
const OUTBOX: &str = "notifications";

/// What a message is about.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// An order was placed.
    OrderConfirmation,
    /// An order's payment was taken.
    PaymentReceived,
    /// An order was shipped (fulfilled).
    OrderShipped,
    /// Money was refunded on an order.
    RefundIssued,
}

impl NotificationKind {
    /// Every kind.
    pub const ALL: [NotificationKind; 4] = [
        NotificationKind::OrderConfirmation,
        NotificationKind::PaymentReceived,
        NotificationKind::OrderShipped,
        NotificationKind::RefundIssued,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::OrderConfirmation => "order_confirmation",
            NotificationKind::PaymentReceived => "payment_received",
            NotificationKind::OrderShipped => "order_shipped",
            NotificationKind::RefundIssued => "refund_issued",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The shop's own template of a kind of message (without one, the server's default
/// is used). The text is a template of the server's template language; the engine
/// only keeps it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NotificationTemplate {
    /// The kind of message.
    pub kind: NotificationKind,
    /// The subject line's template.
    pub subject: String,
    /// The body's template (plain text).
    pub body: String,
    /// When it was saved.
    pub updated_at: TimestampMs,
}

/// What a customer does not want to be sent (everything else is sent).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NotificationPreferences {
    /// The customer.
    pub customer_id: CustomerId,
    /// The kinds they turned off, sorted by name.
    pub muted: Vec<NotificationKind>,
    /// When they last changed.
    pub updated_at: TimestampMs,
}

impl NotificationPreferences {
    /// Whether messages of `kind` go to the customer.
    pub fn wants(&self, kind: NotificationKind) -> bool {
        !self.muted.contains(&kind)
    }
}

/// Where a message is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Handed to the sender, which took it.
    Sent,
    /// Given up after its last attempt (staff may retry it).
    Failed,
}

impl NotificationStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<NotificationStatus> {
        [NotificationStatus::Pending, NotificationStatus::Sent, NotificationStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    fn rank(self) -> u8 {
        self as u8
    }
}

/// A rendered message in the outbox.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The id.
    pub id: NotificationId,
    /// Its order among the messages queued.
    pub seq: u64,
    /// Its order among the changes of status (set when applied): the lists of a
    /// status go by it, newest first, and the oldest to reach `sent` or `failed` is
    /// the first dropped.
    pub status_seq: u64,
    /// What it is about.
    pub kind: NotificationKind,
    /// The event-feed record it was made from (`evt_LSN_N`).
    pub event_id: String,
    /// The order it is about.
    pub order_id: Option<OrderId>,
    /// The customer it goes to (none for a guest's order).
    pub customer_id: Option<CustomerId>,
    /// The recipient's address.
    pub to: String,
    /// The rendered subject.
    pub subject: String,
    /// The rendered body.
    pub body: String,
    /// Where it is.
    pub status: NotificationStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending ones).
    pub next_attempt_at: TimestampMs,
    /// What the last failed attempt met.
    pub last_error: String,
    /// When it was queued.
    pub created_at: TimestampMs,
    /// When it last changed (when it was sent, for a sent one).
    pub updated_at: TimestampMs,
}

persist!(NotificationTemplate, TEMPLATES, |t| t.kind.as_str().as_bytes().to_vec());
persist!(NotificationPreferences, PREFERENCES, |p| p
    .customer_id
    .text()
    .as_str()
    .as_bytes()
    .to_vec());
persist!(Notification, OUTBOX, |n| n.id.text().as_str().as_bytes().to_vec());

/// The notifications in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    templates: IdIndex<NotificationKind, Arc<NotificationTemplate>>,
    preferences: IdIndex<CustomerId, Arc<NotificationPreferences>>,
    outbox: IdIndex<NotificationId, Arc<Notification>>,
    /// `(status, status_seq, id)`: the messages of each status, in the order they
    /// reached it.
    by_status: SkipSet<(u8, u64, NotificationId)>,
    /// `(next attempt, seq, id)`: the pending messages, soonest due first.
    due: SkipSet<(TimestampMs, u64, NotificationId)>,
    /// How many messages each status has.
    counts: [AtomicUsize; 3],
    seq: Counter,
    status_seq: Counter,
    /// The last log position whose messages were queued.
    queued_through: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            templates: IdIndex::default(),
            preferences: IdIndex::default(),
            outbox: IdIndex::default(),
            by_status: SkipSet::new(),
            due: SkipSet::new(),
            counts: Default::default(),
            seq: Counter::new("notification"),
            status_seq: Counter::new("notification_status"),
            queued_through: Counter::new("notifications_queued_through"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "notifications",
    tables: &[
        Table {
            name: TEMPLATES,
            rows: |s, f| s.notifications.templates.entries().iter().for_each(|(_, t)| f(&**t)),
            load: |state, bytes| {
                let template: NotificationTemplate = decode_row(bytes, "notification template")?;
                state.notifications.templates.insert(template.kind, Arc::new(template));
                Ok(())
            },
            check_v1: check_v1::<NotificationTemplate>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: PREFERENCES,
            rows: |s, f| s.notifications.preferences.entries().iter().for_each(|(_, p)| f(&**p)),
            load: |state, bytes| {
                let prefs: NotificationPreferences = decode_row(bytes, "notification preferences")?;
                state.notifications.preferences.insert(prefs.customer_id, Arc::new(prefs));
                Ok(())
            },
            check_v1: check_v1::<NotificationPreferences>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: OUTBOX,
            rows: |s, f| s.notifications.outbox.entries().iter().for_each(|(_, n)| f(&**n)),
            load: |state, bytes| {
                let message: Notification = decode_row(bytes, "notification")?;
                index(state, Arc::new(message));
                Ok(())
            },
            check_v1: check_v1::<Notification>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        let tables = &state.notifications;
        each(&tables.seq);
        each(&tables.status_seq);
        each(&tables.queued_through);
    },
    timers: None,
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// What became of one attempt to send a message.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum AttemptOutcome {
        /// The sender took it.
        Sent,
        /// It failed; another attempt follows.
        Retry {
            /// What it met.
            error: String,
            /// When the next attempt is due.
            next_attempt_at: TimestampMs,
        },
        /// It failed and is given up.
        Failed {
            /// What it met.
            error: String,
        },
    }

    /// One attempt to send a message.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct NotificationAttempt {
        /// The message.
        pub notification_id: NotificationId,
        /// What became of it.
        pub outcome: AttemptOutcome,
    }

    /// Notifications' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum NotificationEvent {
        TemplateSaved(Box<NotificationTemplate>),
        /// The kind's default template is used again.
        TemplateReset {
            kind: NotificationKind,
        },
        PreferencesSet(Box<NotificationPreferences>),
        /// The messages of the log's entries up to `through` were queued.
        Queued {
            through: Lsn,
            notifications: Vec<Notification>,
        },
        /// Attempts to send pending messages.
        Attempted(Vec<NotificationAttempt>),
        /// A failed message is pending again, with its attempts counted anew.
        Requeued {
            notification_id: NotificationId,
        },
    }
}
pub use event::{AttemptOutcome, NotificationAttempt, NotificationEvent};

pub(crate) fn apply(
    state: &State,
    event: &NotificationEvent,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let tables = &state.notifications;
    match event {
        NotificationEvent::TemplateSaved(template) => {
            let template = Arc::new((**template).clone());
            tables.templates.insert(template.kind, template.clone());
            rows.push(Row::put(template));
        }
        NotificationEvent::TemplateReset { kind } => {
            tables.templates.remove(kind);
            rows.push(Row::delete(TEMPLATES, kind.as_str().as_bytes().to_vec()));
        }
        NotificationEvent::PreferencesSet(prefs) => {
            let prefs = Arc::new((**prefs).clone());
            tables.preferences.insert(prefs.customer_id, prefs.clone());
            rows.push(Row::put(prefs));
        }
        NotificationEvent::Queued { through, notifications } => {
            tables.queued_through.set(through.0);
            for message in notifications {
                let seq = tables.seq.bump();
                debug_assert_eq!(seq, message.seq, "decide numbers messages");
                let status_seq = tables.status_seq.bump();
                let message = Arc::new(Notification { status_seq, ..message.clone() });
                index(state, message.clone());
                rows.push(Row::put(message));
            }
        }
        NotificationEvent::Attempted(attempts) => {
            for attempt in attempts {
                let Some(before) = tables
                    .outbox
                    .get(&attempt.notification_id)
                    .filter(|n| n.status == NotificationStatus::Pending)
                else {
                    continue;
                };
                let mut after = (*before).clone();
                after.attempts += 1;
                after.updated_at = at;
                match &attempt.outcome {
                    AttemptOutcome::Sent => after.status = NotificationStatus::Sent,
                    AttemptOutcome::Retry { error, next_attempt_at } => {
                        after.last_error = error.clone();
                        after.next_attempt_at = *next_attempt_at;
                    }
                    AttemptOutcome::Failed { error } => {
                        after.last_error = error.clone();
                        after.status = NotificationStatus::Failed;
                    }
                }
                replace(state, &before, after, rows);
            }
        }
        NotificationEvent::Requeued { notification_id } => {
            if let Some(before) = tables.outbox.get(notification_id) {
                let after = Notification {
                    status: NotificationStatus::Pending,
                    attempts: 0,
                    next_attempt_at: at,
                    updated_at: at,
                    ..(*before).clone()
                };
                replace(state, &before, after, rows);
            }
        }
    }
}

fn index(state: &State, message: Arc<Notification>) {
    let tables = &state.notifications;
    if !tables.by_status.contains(&(message.status.rank(), message.status_seq, message.id)) {
        tables.by_status.insert((message.status.rank(), message.status_seq, message.id));
        tables.counts[message.status.rank() as usize].fetch_add(1, Ordering::AcqRel);
    }
    if message.status == NotificationStatus::Pending {
        tables.due.insert((message.next_attempt_at, message.seq, message.id));
    }
    tables.outbox.insert(message.id, message);
}

fn unindex(state: &State, message: &Notification) {
    let tables = &state.notifications;
    if tables.by_status.remove(&(message.status.rank(), message.status_seq, message.id)).is_some() {
        tables.counts[message.status.rank() as usize].fetch_sub(1, Ordering::AcqRel);
    }
    tables.due.remove(&(message.next_attempt_at, message.seq, message.id));
}

/// Puts `after` in place of `before`; past [`NOTIFICATIONS_KEPT`] messages of its
/// (final) status, the oldest of that status goes.
fn replace(state: &State, before: &Notification, mut after: Notification, rows: &mut Vec<Row>) {
    let tables = &state.notifications;
    unindex(state, before);
    if after.status != before.status {
        after.status_seq = tables.status_seq.bump();
    }
    let status = after.status;
    let after = Arc::new(after);
    index(state, after.clone());
    rows.push(Row::put(after));
    if status != NotificationStatus::Pending
        && state.notification_count(status) > NOTIFICATIONS_KEPT
    {
        let oldest = tables
            .by_status
            .range((status.rank(), 0, NotificationId::from_random(0))..)
            .next()
            .map(|e| e.value().2);
        if let Some(message) = oldest.and_then(|id| tables.outbox.remove(&id)) {
            unindex(state, &message);
            rows.push(Row::delete(OUTBOX, message.id.text().as_str().as_bytes().to_vec()));
        }
    }
}

/// Notifications' reads.
impl State {
    /// The shop's template of a kind (none: the default is used).
    pub fn notification_template(
        &self,
        kind: NotificationKind,
    ) -> Option<Arc<NotificationTemplate>> {
        self.notifications.templates.get(&kind)
    }

    /// A customer's notification preferences (none: everything is sent).
    pub fn notification_preferences(
        &self,
        customer: &CustomerId,
    ) -> Option<Arc<NotificationPreferences>> {
        self.notifications.preferences.get(customer)
    }

    /// Whether messages of `kind` go to `customer`.
    pub fn wants_notification(&self, customer: &CustomerId, kind: NotificationKind) -> bool {
        self.notification_preferences(customer).is_none_or(|p| p.wants(kind))
    }

    /// A message of the outbox.
    pub fn notification(&self, id: &NotificationId) -> Option<Arc<Notification>> {
        self.notifications.outbox.get(id)
    }

    /// The messages of a status, the last to reach it first, `limit` at most, from
    /// before `before` (a message's `status_seq`) when given.
    pub fn notifications(
        &self,
        status: NotificationStatus,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<Arc<Notification>> {
        let tables = &self.notifications;
        let rank = status.rank();
        let from = (rank, 0, NotificationId::from_random(0));
        let to = (rank, before.unwrap_or(u64::MAX), NotificationId::from_random(0));
        tables
            .by_status
            .range(from..to)
            .rev()
            .filter_map(|e| {
                let (_, status_seq, id) = *e.value();
                // A message changing status meanwhile belongs to its new list.
                tables.outbox.get(&id).filter(|n| n.status == status && n.status_seq == status_seq)
            })
            .take(limit)
            .collect()
    }

    /// How many messages have a status.
    pub fn notification_count(&self, status: NotificationStatus) -> usize {
        self.notifications.counts[status.rank() as usize].load(Ordering::Acquire)
    }

    /// The pending messages due at `now`, soonest first, `limit` at most.
    pub fn notifications_due(&self, now: TimestampMs, limit: usize) -> Vec<Arc<Notification>> {
        let tables = &self.notifications;
        let to = (now, u64::MAX, NotificationId::from_random(u128::MAX));
        tables
            .due
            .range(..=to)
            .filter_map(|e| tables.outbox.get(&e.value().2))
            .take(limit)
            .collect()
    }

    /// When the soonest pending message is due.
    pub fn next_notification_due(&self) -> Option<TimestampMs> {
        self.notifications.due.front().map(|e| e.value().0)
    }

    /// The last log position whose messages were queued (0: none yet).
    pub fn notifications_queued_through(&self) -> Lsn {
        Lsn(self.notifications.queued_through.get())
    }
}
