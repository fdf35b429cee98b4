//! The registry of domains. The kernel knows a domain only through what this list
//! generates from it: a variant of [`Event`] (the log's unit), the dispatch of `apply`,
//! a field of [`State`] holding its tables, and its [`Domain`] descriptor (tables,
//! counters, timers, recovery check). Adding a domain is its own folder plus one line
//! here; ARCHITECTURE.md has the steps.
//!
//! The order is the load order at recovery (a domain's rows may refer to an earlier
//! one's) and the order of the event variants in the log: append, never reorder.

use std::sync::atomic::{AtomicU64, Ordering};

use rkyv::{Archive, Deserialize, Serialize};

use crate::kernel::table::{Counter, Domain, Row};
use crate::types::{Lsn, TimestampMs};

macro_rules! domains {
    ($($module:ident: $variant:ident($event:ty)),* $(,)?) => {
        /// One fact, of one domain: what the log records. `apply` turns each into a state
        /// change with no decision left to make, so replaying the log (or a standby
        /// applying it) gives the same state.
        #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
        pub enum Event {
            $(
                #[doc = concat!("A fact of the `", stringify!($module), "` domain.")]
                $variant($event),
            )*
        }

        $(
            impl From<$event> for Event {
                fn from(event: $event) -> Event {
                    Event::$variant(event)
                }
            }
        )*

        /// Applies `event` of a log entry made at `at` (the entry's time, which `decide`
        /// saw as its `now`), reporting the rows it changed.
        pub(crate) fn apply(state: &State, event: &Event, at: TimestampMs, rows: &mut Vec<Row>) {
            match event {
                $(Event::$variant(event) => crate::$module::apply(state, event, at, rows),)*
            }
        }

        /// The archived size and alignment of [`Event`] and of each domain's event
        /// enum: the layout of every log already written.
        #[cfg(test)]
        pub(crate) fn archived_event_layouts() -> Vec<(&'static str, usize, usize)> {
            use std::mem::{align_of, size_of};
            let mut layouts = vec![(
                "Event",
                size_of::<<Event as Archive>::Archived>(),
                align_of::<<Event as Archive>::Archived>(),
            )];
            $(layouts.push((
                stringify!($variant),
                size_of::<<$event as Archive>::Archived>(),
                align_of::<<$event as Archive>::Archived>(),
            ));)*
            layouts
        }

        /// Every domain, in load order.
        pub(crate) const DOMAINS: &[&Domain] = &[$(&crate::$module::DOMAIN),*];

        /// The state: every domain's tables. Read it through [`crate::Engine::state`];
        /// only the sequencer changes it.
        ///
        /// Entities are immutable `Arc` values published in lock-free maps; a change
        /// publishes a new value. Point lookups go through concurrent hash maps with
        /// lock-free reads; ordered indexes remain only where order is needed (listings,
        /// expiry, ages). Nothing blocks a reader on a write.
        #[derive(Debug, Default)]
        pub struct State {
            $(#[allow(dead_code)] pub(crate) $module: crate::$module::Tables,)*
            pub(crate) last_lsn: AtomicU64,
        }
    };
}

domains! {
    catalog: Catalog(crate::catalog::CatalogEvent),
    inventory: Inventory(crate::inventory::InventoryEvent),
    carts: Carts(crate::carts::CartEvent),
    orders: Orders(crate::orders::OrderEvent),
    payments: Payments(crate::payments::PaymentEvent),
    accounts: Accounts(crate::accounts::AccountEvent),
    idempotency: Idempotency(crate::idempotency::IdempotencyEvent),
    flash_sales: FlashSales(crate::flash_sales::FlashSaleEvent),
    promotions: Promotions(crate::promotions::PromotionEvent),
    returns: Returns(crate::returns::ReturnEvent),
    shipping: Shipping(crate::shipping::ShippingEvent),
    reviews: Reviews(crate::reviews::ReviewEvent),
    webhooks: Webhooks(crate::webhooks::WebhookEvent),
    notifications: Notifications(crate::notifications::NotificationEvent),
}

/// Room made for the counters' values at each snapshot: more than every domain has
/// together (`counters_fit_the_room_made_for_them`).
const COUNTERS_EXPECTED: usize = 24;

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::default()
    }

    /// The LSN of the last applied command (which may not be durable yet).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.last_lsn.load(Ordering::Acquire))
    }

    /// Every domain's counters.
    pub(crate) fn counters(&self) -> Vec<&Counter> {
        let mut counters = Vec::new();
        for domain in DOMAINS {
            (domain.counters)(self, &mut |counter| counters.push(counter));
        }
        counters
    }

    /// The counters' values, by name: one list made (at every commit group's hand-over).
    pub(crate) fn counter_snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut values = Vec::with_capacity(COUNTERS_EXPECTED);
        for domain in DOMAINS {
            (domain.counters)(self, &mut |counter| values.push((counter.name, counter.get())));
        }
        values
    }
}

/// The events of one command, as one log record.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position in the log.
    pub lsn: Lsn,
    /// When the command was applied.
    pub at: TimestampMs,
    /// What it did.
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log entry's events are an array of the archived enum, each domain's enum
    /// inline in it, so these sizes and alignments are the layout of every log already
    /// written. A new event variant must fit within its enum's largest and add no
    /// field aligned wider than the others (a `u64` among 4-aligned ids and strings
    /// moves every event of the enum); otherwise the old logs need an upgrade of their
    /// own, not just a bump of the log format. A new domain adds a row.
    #[test]
    fn archived_events_keep_the_layout_of_the_logs_written() {
        let expected: &[(&str, usize, usize)] = &[
            ("Event", 32, 8),
            ("Catalog", 12, 4),
            ("Inventory", 24, 4),
            ("Carts", 24, 4),
            ("Orders", 12, 4),
            ("Payments", 24, 4),
            ("Accounts", 16, 4),
            ("Idempotency", 12, 4),
            ("FlashSales", 12, 4),
            ("Promotions", 8, 4),
            ("Returns", 8, 4),
            ("Shipping", 20, 4),
            ("Reviews", 20, 4),
            ("Webhooks", 12, 4),
            ("Notifications", 24, 8),
        ];
        assert_eq!(archived_event_layouts(), expected);
    }

    #[test]
    fn counters_fit_the_room_made_for_them() {
        let state = State::new();
        let snapshot = state.counter_snapshot();
        assert!(snapshot.len() <= COUNTERS_EXPECTED, "{} counters", snapshot.len());
        let names: Vec<&str> = state.counters().iter().map(|c| c.name).collect();
        assert_eq!(snapshot.iter().map(|(name, _)| *name).collect::<Vec<_>>(), names);
    }

    #[test]
    fn counter_and_table_names_are_unique() {
        let state = State::new();
        let mut counters: Vec<&str> = state.counters().iter().map(|c| c.name).collect();
        let mut tables: Vec<&str> =
            DOMAINS.iter().flat_map(|d| d.tables.iter().map(|t| t.name)).collect();
        for names in [&mut counters, &mut tables] {
            let all = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all, "a name is used twice: {names:?}");
        }
        assert_eq!(
            counters,
            [
                "cart",
                "cart_abandoned",
                "cart_closed_through",
                "category",
                "customer",
                "dead_letter",
                "discount_code",
                "flash_sale",
                "location",
                "notification",
                "notification_status",
                "notifications_queued_through",
                "order",
                "product",
                "promotion",
                "return",
                "review",
                "shipping_method"
            ]
        );
    }
}
