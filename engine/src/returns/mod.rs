//! Returns: a customer asks to send back units of a fulfilled order within the return
//! window; staff approve or reject; receiving the units restocks them (per line, as
//! staff choose) and refunds what the customer paid for them, in the same log entry.
//!
//! What units are worth: the line's total after its discount, pro rata and rounded
//! down, less what the order's other returns of the line (rejected ones aside) already
//! claim; the last units of a line take exactly what is left. So a line's returns add
//! up to exactly what it cost, whatever was rejected in between (`q` more units when
//! others hold `r` valued `c` are worth `⌊line_paid × (r + q) / line_units⌋ - c`, at
//! least 0). Receiving refunds that, but never more than is left to refund of the
//! order.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::catalog::Page;
use crate::domains::State;
use crate::kernel::table::{check_v1, decode_row, persist, Counter, Domain, IdIndex, Row, Table};
use crate::types::*;

const RETURNS: &str = "returns";

persist!(Return, RETURNS, |r| r.seq.to_be_bytes().to_vec());

/// The returns in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    returns: IdIndex<ReturnId, Arc<Return>>,
    /// Returns in the order they were requested.
    by_seq: SkipMap<u64, ReturnId>,
    /// Each order's returns, oldest first.
    by_order: IdIndex<OrderId, Arc<Vec<ReturnId>>>,
    return_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            returns: IdIndex::default(),
            by_seq: SkipMap::new(),
            by_order: IdIndex::default(),
            return_seq: Counter::new("return"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "returns",
    tables: &[Table {
        name: RETURNS,
        rows: |s, f| s.returns.returns.entries().iter().for_each(|(_, r)| f(&**r)),
        load: |state, bytes| {
            let r: Return = decode_row(bytes, "return")?;
            put_in_memory(state, Arc::new(r));
            Ok(())
        },
        check_v1: check_v1::<Return>,
        load_in_parallel: false,
        skip_list: false,
        reserve: None,
    }],
    counters: |state, each| {
        each(&state.returns.return_seq);
    },
    timers: None,
    verify: None,
    written: None,
};

/// Staff's decision on a requested return.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReturnDecision {
    /// The return.
    pub return_id: ReturnId,
    /// Approved, or rejected.
    pub approved: bool,
    /// Staff's note (a rejection's reason).
    pub note: String,
}

/// The receipt of a return's units.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReturnReceipt {
    /// The return.
    pub return_id: ReturnId,
    /// Its order.
    pub order_id: OrderId,
    /// The SKUs of its lines put back in stock.
    pub restocked: Vec<Sku>,
    /// The refund made in the same entry (the event after this one), if any.
    pub refund_id: Option<RefundId>,
}

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The returns' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum ReturnEvent {
        Requested(Box<Return>),
        Decided(Box<ReturnDecision>),
        Received(Box<ReturnReceipt>),
    }
}
pub use event::ReturnEvent;

pub(crate) fn apply(state: &State, event: &ReturnEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        ReturnEvent::Requested(new) => {
            state.returns.return_seq.bump();
            put(state, (**new).clone(), rows);
        }
        ReturnEvent::Decided(decision) => {
            let mut r = taken(state, &decision.return_id);
            r.status =
                if decision.approved { ReturnStatus::Approved } else { ReturnStatus::Rejected };
            r.note = decision.note.clone();
            touch(&mut r, at);
            put(state, r, rows);
        }
        ReturnEvent::Received(receipt) => {
            let mut r = taken(state, &receipt.return_id);
            for line in r.lines.iter_mut() {
                line.restocked = receipt.restocked.contains(&line.sku);
                if line.restocked {
                    crate::inventory::restock(state, &line.sku, line.quantity, rows);
                }
            }
            r.status = ReturnStatus::Received;
            r.refund_id = receipt.refund_id;
            touch(&mut r, at);
            put(state, r, rows);
        }
    }
}

fn taken(state: &State, id: &ReturnId) -> Return {
    (*state.order_return(id).expect("decide checked the return")).clone()
}

fn touch(r: &mut Return, at: TimestampMs) {
    r.updated_at = at;
    r.version += 1;
}

fn put(state: &State, r: Return, rows: &mut Vec<Row>) {
    let r = Arc::new(r);
    put_in_memory(state, r.clone());
    rows.push(Row::put(r));
}

fn put_in_memory(state: &State, r: Arc<Return>) {
    let tables = &state.returns;
    if !tables.returns.contains_key(&r.id) {
        // New returns come in `seq` order, when requested and at load (rows are keyed
        // by it), so appending keeps an order's list oldest first.
        let mut ids = tables.by_order.get(&r.order_id).map_or_else(Vec::new, |ids| (*ids).clone());
        ids.push(r.id);
        tables.by_order.insert(r.order_id, Arc::new(ids));
        tables.by_seq.insert(r.seq, r.id);
    }
    tables.returns.insert(r.id, r);
}

/// The returns' reads.
impl State {
    /// A return by id.
    pub fn order_return(&self, id: &ReturnId) -> Option<Arc<Return>> {
        self.returns.returns.get(id)
    }

    /// An order's returns, oldest first.
    pub fn returns_of_order(&self, order_id: &OrderId) -> Vec<Arc<Return>> {
        let ids = self.returns.by_order.get(order_id).unwrap_or_default();
        ids.iter().filter_map(|id| self.order_return(id)).collect()
    }

    /// Returns in the order they were requested, after position `after`, optionally of
    /// one status (staff's queue: `requested`).
    pub fn returns(
        &self,
        status: Option<ReturnStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Page<Arc<Return>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let items = self
            .returns
            .by_seq
            .range(start..)
            .filter_map(|e| self.order_return(e.value()))
            .filter(|r| status.is_none_or(|s| r.status == s));
        Page::of(items, limit, |r| r.seq.to_string())
    }
}
