//! Recovery: the state at the materialized LSN is loaded from the entity rows, then the
//! log tail after it is replayed through the same `apply` the sequencer uses. The
//! materializer bounds the tail, so recovery time is bounded too.
//!
//! Never guesses: a gap in the log, a log trimmed past the rows, a row or record that
//! does not decode, or stock that disagrees with what pending orders hold is an error
//! ([`EngineError::IncompatibleData`]), not a repaired state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use emporium_storage::{Store, WriteBatch};

use crate::apply::{apply, index_order, put_idempotency, put_product, Row};
use crate::codec::{self, *};
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::state::{State, StockCell};

/// What recovery found.
pub(crate) struct Recovered {
    pub(crate) state: State,
    /// The LSN the rows reflect after recovery (the replayed tail is written back).
    pub(crate) materialized_lsn: u64,
    /// Log entries replayed after the rows' LSN.
    pub(crate) replayed: u64,
    /// The LSN of the first entry the log holds, if any.
    pub(crate) first_log_lsn: Option<u64>,
}

/// Rebuilds the state: rows, then the log tail.
pub(crate) fn recover(store: &Store) -> Result<Recovered> {
    let state = State::new();
    load_rows(store, &state)?;
    let (materialized, counters) = codec::read_materialized(store)?;
    state.counters.restore(counters);
    state.last_lsn.store(materialized, Ordering::Release);
    let first_log_lsn = codec::first_log_lsn(store)?;
    let replayed = replay_tail(store, &state, materialized, first_log_lsn)?;
    check_reservations(&state)?;
    Ok(Recovered { materialized_lsn: state.last_lsn().0, state, replayed, first_log_lsn })
}

/// Applies every log entry after `materialized`, then writes the rows it changed with
/// the new materialized LSN, so the next open starts from there.
fn replay_tail(store: &Store, state: &State, materialized: u64, first: Option<u64>) -> Result<u64> {
    if let Some(first) = first {
        if first > materialized + 1 {
            return Err(EngineError::IncompatibleData(format!(
                "the rows reflect LSN {materialized} but the log starts at {first}: entries \
                 {} to {} are missing",
                materialized + 1,
                first - 1
            )));
        }
    }
    let mut rows = Vec::new();
    let mut last = materialized;
    let jump = |next: u64, found| {
        EngineError::IncompatibleData(format!("the log jumps from LSN {} to {found}", next - 1))
    };
    codec::walk_log(store, materialized + 1, jump, &mut |entry| {
        replay_one(state, &entry, &mut rows)?;
        last = entry.lsn.0;
        Ok(true)
    })?;
    if last > materialized {
        let mut batch = WriteBatch::default();
        put_rows(&mut batch, &rows);
        codec::put_materialized(&mut batch, last, state.counters.snapshot());
        store.write(&batch, false)?;
    }
    Ok(last - materialized)
}

/// Applies one entry; an entry that does not fit the state is reported, not a crash at
/// open.
fn replay_one(state: &State, entry: &crate::event::LogEntry, rows: &mut Vec<Row>) -> Result<()> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for event in &entry.events {
            apply(state, event, entry.at, rows);
        }
    }));
    if applied.is_err() {
        return Err(EngineError::IncompatibleData(format!(
            "log entry {} does not apply to the state before it",
            entry.lsn.0
        )));
    }
    state.last_lsn.store(entry.lsn.0, Ordering::Release);
    Ok(())
}

/// Adds each row of `rows` once, with its last value.
fn put_rows(batch: &mut WriteBatch, rows: &[Row]) {
    let mut last = HashMap::with_capacity(rows.len());
    for row in rows {
        last.insert(codec::row_key(row), row);
    }
    for (key, row) in last {
        codec::put_row(batch, key, row);
    }
}

fn load_rows(store: &Store, state: &State) -> Result<()> {
    let mut failure: Option<EngineError> = None;
    let mut each = |cf: &'static str, f: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
        store.scan(cf, &mut |_, value| match f(value) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        failure.take().map_or(Ok(()), Err)
    };
    let mut sink = Vec::new();
    each(CF_CATEGORIES, &mut |v| {
        let category: Category = decode(v, "category")?;
        state.categories.insert(category.id.clone(), Arc::new(category));
        Ok(())
    })?;
    each(CF_STOCK, &mut |v| {
        let levels: StockLevels = decode(v, "stock levels")?;
        check_stock(&levels)?;
        let cell = StockCell::new(levels.on_hand, levels.reserved, levels.version);
        state.stock.insert(levels.sku, Arc::new(cell));
        Ok(())
    })?;
    each(CF_PRODUCTS, &mut |v| {
        put_product(state, decode(v, "product")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_CARTS, &mut |v| {
        let cart: Cart = decode(v, "cart")?;
        state.carts.insert(cart.id.clone(), Arc::new(cart));
        Ok(())
    })?;
    each(CF_ORDERS, &mut |v| {
        let order: Order = decode(v, "order")?;
        index_order(state, &order);
        state.orders.insert(order.id.clone(), Arc::new(order));
        Ok(())
    })?;
    each(CF_CUSTOMERS, &mut |v| {
        let customer: Customer = decode(v, "customer")?;
        state.emails.insert(customer.email.clone(), customer.id.clone());
        state.customers.insert(customer.id.clone(), Arc::new(customer));
        Ok(())
    })?;
    each(CF_IDEMPOTENCY, &mut |v| {
        put_idempotency(state, decode(v, "idempotency record")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_API_CLIENTS, &mut |v| {
        crate::accounts::put_api_client(state, decode(v, "API client")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_REFRESH_TOKENS, &mut |v| {
        crate::accounts::put_refresh_token(state, decode(v, "refresh token")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_SIGNING_KEYS, &mut |v| {
        crate::accounts::put_signing_key(state, decode(v, "signing key")?, &mut sink);
        sink.clear();
        Ok(())
    })
}

fn check_stock(levels: &StockLevels) -> Result<()> {
    if levels.reserved > levels.on_hand {
        return Err(EngineError::IncompatibleData(format!(
            "SKU {} has {} reserved of {} on hand",
            levels.sku, levels.reserved, levels.on_hand
        )));
    }
    Ok(())
}

/// Pair assertion for stock: what pending orders hold must be what the SKUs say is
/// reserved.
fn check_reservations(state: &State) -> Result<()> {
    let mut held = HashMap::new();
    for entry in state.expiry.iter() {
        let order = state.order(&entry.value().1).expect("the expiry index names orders");
        for line in &order.lines {
            *held.entry(line.sku.clone()).or_insert(0u64) += u64::from(line.quantity);
        }
    }
    for levels in state.all_stock() {
        let expected = held.get(&levels.sku).copied().unwrap_or(0);
        if u64::from(levels.reserved) != expected {
            return Err(EngineError::IncompatibleData(format!(
                "SKU {} has {} units reserved but pending orders hold {expected}",
                levels.sku, levels.reserved
            )));
        }
    }
    Ok(())
}
