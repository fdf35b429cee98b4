//! Webhooks: the endpoints that receive the public event feed, and the deliveries
//! that failed every attempt (dead letters), kept until staff redeliver or drop them.
//! The deliveries themselves are the server's (`emporium_server::webhooks`): each
//! endpoint follows the log as a registered consumer, so its position is durable.

mod commands;

use std::sync::Arc;

use crossbeam_skiplist::SkipSet;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;

use crate::domains::State;
use crate::kernel::table::{check_v1, decode_row, persist, Counter, Domain, IdIndex, Row, Table};
use crate::types::*;

const WEBHOOKS: &str = "webhooks";
const DEAD_LETTERS: &str = "webhook_dead_letters";

/// An endpoint that receives the event feed's records of the types it chose.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// The id.
    pub id: WebhookId,
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The record types it receives.
    pub events: Vec<String>,
    /// The key of the deliveries' HMAC-SHA256 signatures.
    pub secret: String,
    /// When it was created.
    pub created_at: TimestampMs,
    /// The log position of its creation: it receives the records of the entries after
    /// it (set when the creation is applied, the same on every node).
    pub created_lsn: Lsn,
}

/// A delivery that failed every attempt.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The id.
    pub id: DeadLetterId,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// Its order among the dead letters.
    pub seq: u64,
    /// The record's id (`evt_LSN_N`).
    pub event_id: String,
    /// The record's type.
    pub event_type: String,
    /// The body that was sent.
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt met.
    pub last_error: String,
    /// When it was given up.
    pub created_at: TimestampMs,
}

persist!(Webhook, WEBHOOKS, |w| w.id.text().as_str().as_bytes().to_vec());
persist!(DeadLetter, DEAD_LETTERS, |d| d.id.text().as_str().as_bytes().to_vec());

/// The webhooks in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    webhooks: IdIndex<WebhookId, Arc<Webhook>>,
    dead_letters: IdIndex<DeadLetterId, Arc<DeadLetter>>,
    /// `(webhook, seq, id)`: each webhook's dead letters, oldest first.
    by_webhook: SkipSet<(WebhookId, u64, DeadLetterId)>,
    dead_letter_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            webhooks: IdIndex::default(),
            dead_letters: IdIndex::default(),
            by_webhook: SkipSet::new(),
            dead_letter_seq: Counter::new("dead_letter"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "webhooks",
    tables: &[
        Table {
            name: WEBHOOKS,
            rows: |s, f| s.webhooks.webhooks.entries().iter().for_each(|(_, w)| f(&**w)),
            load: |state, bytes| {
                let webhook: Webhook = decode_row(bytes, "webhook")?;
                state.webhooks.webhooks.insert(webhook.id, Arc::new(webhook));
                Ok(())
            },
            check_v1: check_v1::<Webhook>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: DEAD_LETTERS,
            rows: |s, f| s.webhooks.dead_letters.entries().iter().for_each(|(_, d)| f(&**d)),
            load: |state, bytes| {
                let letter: DeadLetter = decode_row(bytes, "dead letter")?;
                index_letter(state, Arc::new(letter));
                Ok(())
            },
            check_v1: check_v1::<DeadLetter>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.webhooks.dead_letter_seq);
    },
    timers: None,
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// Webhooks' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum WebhookEvent {
        Created(Box<Webhook>),
        /// The webhook and its dead letters are gone.
        Deleted {
            webhook_id: WebhookId,
        },
        /// A delivery was given up (the oldest dead letter past the limit goes).
        DeadLettered(Box<DeadLetter>),
        /// A dead letter was redelivered or dropped.
        DeadLetterCleared {
            dead_letter_id: DeadLetterId,
        },
    }
}
pub use event::WebhookEvent;

pub(crate) fn apply(state: &State, event: &WebhookEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    let tables = &state.webhooks;
    match event {
        WebhookEvent::Created(webhook) => {
            // Every path that applies an entry (the sequencer, a standby, recovery)
            // stores its LSN only after its events: this one is the next.
            let created_lsn = Lsn(state.last_lsn().0 + 1);
            let webhook = Arc::new(Webhook { created_lsn, ..(**webhook).clone() });
            tables.webhooks.insert(webhook.id, webhook.clone());
            rows.push(Row::put(webhook));
        }
        WebhookEvent::Deleted { webhook_id } => {
            tables.webhooks.remove(webhook_id);
            rows.push(Row::delete(WEBHOOKS, webhook_id.text().as_str().as_bytes().to_vec()));
            for letter in state.dead_letters(webhook_id, usize::MAX) {
                clear(state, &letter.id, rows);
            }
        }
        WebhookEvent::DeadLettered(letter) => {
            let seq = tables.dead_letter_seq.bump();
            debug_assert_eq!(seq, letter.seq, "decide numbers dead letters");
            let letter = Arc::new((**letter).clone());
            index_letter(state, letter.clone());
            rows.push(Row::put(letter.clone()));
            let held = state.dead_letters(&letter.webhook_id, DEAD_LETTERS_MAX + 1);
            if held.len() > DEAD_LETTERS_MAX {
                clear(state, &held[0].id, rows);
            }
        }
        WebhookEvent::DeadLetterCleared { dead_letter_id } => clear(state, dead_letter_id, rows),
    }
}

fn index_letter(state: &State, letter: Arc<DeadLetter>) {
    let tables = &state.webhooks;
    tables.by_webhook.insert((letter.webhook_id, letter.seq, letter.id));
    tables.dead_letters.insert(letter.id, letter);
}

fn clear(state: &State, id: &DeadLetterId, rows: &mut Vec<Row>) {
    let tables = &state.webhooks;
    if let Some(letter) = tables.dead_letters.remove(id) {
        tables.by_webhook.remove(&(letter.webhook_id, letter.seq, letter.id));
        rows.push(Row::delete(DEAD_LETTERS, id.text().as_str().as_bytes().to_vec()));
    }
}

/// Webhooks' reads.
impl State {
    /// A webhook.
    pub fn webhook(&self, id: &WebhookId) -> Option<Arc<Webhook>> {
        self.webhooks.webhooks.get(id)
    }

    /// Every webhook, oldest first.
    pub fn webhooks(&self) -> Vec<Arc<Webhook>> {
        let mut all: Vec<Arc<Webhook>> =
            self.webhooks.webhooks.entries().into_iter().map(|(_, w)| w).collect();
        all.sort_by_key(|w| (w.created_at, w.id));
        all
    }

    /// A webhook's dead letters, oldest first, `limit` at most.
    pub fn dead_letters(&self, webhook: &WebhookId, limit: usize) -> Vec<Arc<DeadLetter>> {
        let from = (*webhook, 0, DeadLetterId::from_random(0));
        self.webhooks
            .by_webhook
            .range(from..)
            .take_while(|e| e.value().0 == *webhook)
            .filter_map(|e| self.webhooks.dead_letters.get(&e.value().2))
            .take(limit)
            .collect()
    }

    /// A dead letter.
    pub fn dead_letter(&self, id: &DeadLetterId) -> Option<Arc<DeadLetter>> {
        self.webhooks.dead_letters.get(id)
    }
}
