//! How the engine's values become storage rows: rkyv encoding, the column families,
//! format versions, and recovery (rebuilding the in-memory state from the rows).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use emporium_storage::{Store, WriteBatch, CF_META};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::apply::{index_order, put_idempotency, put_product, Row};
use crate::error::{EngineError, Result};
use crate::event::LogEntry;
use crate::model::*;
use crate::state::{State, StockCell, COUNTERS};

/// The version of the rows and log payloads this build writes. Every column family
/// records it; a directory with another version is refused.
pub const ENGINE_FORMAT_VERSION: u32 = 1;

pub(crate) const CF_PRODUCTS: &str = "products";
pub(crate) const CF_CATEGORIES: &str = "categories";
pub(crate) const CF_STOCK: &str = "stock";
pub(crate) const CF_CARTS: &str = "carts";
pub(crate) const CF_ORDERS: &str = "orders";
pub(crate) const CF_CUSTOMERS: &str = "customers";
pub(crate) const CF_IDEMPOTENCY: &str = "idempotency";
pub(crate) const CF_API_CLIENTS: &str = "api_clients";
pub(crate) const CF_REFRESH_TOKENS: &str = "refresh_tokens";
pub(crate) const CF_SIGNING_KEYS: &str = "signing_keys";

/// The entity column families, besides the storage crate's `log` and `meta`.
pub(crate) const ENTITY_CFS: [&str; 10] = [
    CF_PRODUCTS,
    CF_CATEGORIES,
    CF_STOCK,
    CF_CARTS,
    CF_ORDERS,
    CF_CUSTOMERS,
    CF_IDEMPOTENCY,
    CF_API_CLIENTS,
    CF_REFRESH_TOKENS,
    CF_SIGNING_KEYS,
];

const META_LAST_LSN: &[u8] = b"last_lsn";
const META_COUNTERS: &[u8] = b"counters";

fn format_key(cf: &str) -> Vec<u8> {
    format!("format/{cf}").into_bytes()
}

pub(crate) fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    rkyv::to_bytes::<RkyvError>(value).expect("in-memory values always serialize").into_vec()
}

pub(crate) fn decode<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    // Rows come back from the store at any alignment; rkyv reads aligned bytes.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, RkyvError>(&aligned)
        .map_err(|e| EngineError::IncompatibleData(format!("cannot decode {what}: {e}")))
}

/// Adds a row's persisted form to `batch`.
pub(crate) fn put_row(batch: &mut WriteBatch, row: &Row) {
    match row {
        Row::Product(p) => batch.put_owned(CF_PRODUCTS, p.id.as_str().into(), encode(&**p)),
        Row::Category(c) => batch.put_owned(CF_CATEGORIES, c.id.as_str().into(), encode(&**c)),
        Row::CategoryDeleted(id) => batch.delete(CF_CATEGORIES, id.as_str().as_bytes()),
        Row::Stock(s) => batch.put_owned(CF_STOCK, s.sku.as_str().into(), encode(s)),
        // Carts and orders are keyed by their sequence, not their random ids: new rows
        // append to the memtable instead of landing at random places in it.
        Row::Cart(c) => batch.put_owned(CF_CARTS, c.seq.to_be_bytes().into(), encode(&**c)),
        Row::Order(o) => batch.put_owned(CF_ORDERS, o.seq.to_be_bytes().into(), encode(&**o)),
        Row::Customer(c) => batch.put_owned(CF_CUSTOMERS, c.id.as_str().into(), encode(&**c)),
        Row::Idempotency(r) => batch.put_owned(CF_IDEMPOTENCY, r.key.as_str().into(), encode(&**r)),
        Row::IdempotencyDeleted(key) => batch.delete(CF_IDEMPOTENCY, key.as_bytes()),
        Row::ApiClient(c) => batch.put_owned(CF_API_CLIENTS, c.id.as_str().into(), encode(&**c)),
        Row::RefreshToken(t) => {
            batch.put_owned(CF_REFRESH_TOKENS, t.hash.as_str().into(), encode(&**t))
        }
        Row::RefreshTokenDeleted(hash) => batch.delete(CF_REFRESH_TOKENS, hash.as_bytes()),
        Row::SigningKey(k) => batch.put_owned(CF_SIGNING_KEYS, k.kid.as_str().into(), encode(&**k)),
    }
}

/// A row's key within its column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RowKey<'a> {
    Text(&'a str),
    Seq(u64),
}

/// The key a row is stored under, so a group writes each row once (its last value).
pub(crate) fn row_key(row: &Row) -> (&'static str, RowKey<'_>) {
    match row {
        Row::Product(p) => (CF_PRODUCTS, RowKey::Text(p.id.as_str())),
        Row::Category(c) => (CF_CATEGORIES, RowKey::Text(c.id.as_str())),
        Row::CategoryDeleted(id) => (CF_CATEGORIES, RowKey::Text(id.as_str())),
        Row::Stock(s) => (CF_STOCK, RowKey::Text(s.sku.as_str())),
        Row::Cart(c) => (CF_CARTS, RowKey::Seq(c.seq)),
        Row::Order(o) => (CF_ORDERS, RowKey::Seq(o.seq)),
        Row::Customer(c) => (CF_CUSTOMERS, RowKey::Text(c.id.as_str())),
        Row::Idempotency(r) => (CF_IDEMPOTENCY, RowKey::Text(r.key.as_str())),
        Row::IdempotencyDeleted(key) => (CF_IDEMPOTENCY, RowKey::Text(key.as_str())),
        Row::ApiClient(c) => (CF_API_CLIENTS, RowKey::Text(c.id.as_str())),
        Row::RefreshToken(t) => (CF_REFRESH_TOKENS, RowKey::Text(t.hash.as_str())),
        Row::RefreshTokenDeleted(hash) => (CF_REFRESH_TOKENS, RowKey::Text(hash.as_str())),
        Row::SigningKey(k) => (CF_SIGNING_KEYS, RowKey::Text(k.kid.as_str())),
    }
}

pub(crate) fn put_meta(batch: &mut WriteBatch, last_lsn: u64, counters: [u64; COUNTERS]) {
    batch.put(CF_META, META_LAST_LSN, &last_lsn.to_le_bytes());
    let mut bytes = Vec::with_capacity(32);
    for counter in counters {
        bytes.extend_from_slice(&counter.to_le_bytes());
    }
    batch.put_owned(CF_META, META_COUNTERS.to_vec(), bytes);
}

pub(crate) fn encode_log(entry: &LogEntry) -> Vec<u8> {
    encode(entry)
}

/// Decodes a log record's payload.
pub fn decode_log(payload: &[u8]) -> Result<LogEntry> {
    decode(payload, "log entry")
}

/// Checks (or, in a new directory, writes) every column family's format version.
pub(crate) fn check_format(store: &Store) -> Result<()> {
    let mut missing = WriteBatch::default();
    for cf in ENTITY_CFS.iter().chain(&[emporium_storage::CF_LOG]) {
        match store.get(CF_META, &format_key(cf))? {
            Some(bytes) => {
                let found = bytes.as_slice().try_into().map(u32::from_le_bytes).map_err(|_| {
                    EngineError::IncompatibleData(format!("format row of {cf} is malformed"))
                })?;
                if found != ENGINE_FORMAT_VERSION {
                    return Err(EngineError::IncompatibleData(format!(
                        "column family {cf} has format version {found}; this build reads \
                         version {ENGINE_FORMAT_VERSION}"
                    )));
                }
            }
            None => missing.put(CF_META, &format_key(cf), &ENGINE_FORMAT_VERSION.to_le_bytes()),
        }
    }
    if !missing.is_empty() {
        store.write(&missing, true)?;
    }
    Ok(())
}

/// Rebuilds the in-memory state from the entity rows (no log replay: the rows and log
/// records of a group were written in one atomic batch).
pub(crate) fn recover(store: &Store) -> Result<State> {
    let state = State::new();
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
        put_product(&state, decode(v, "product")?, &mut sink);
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
        index_order(&state, &order);
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
        put_idempotency(&state, decode(v, "idempotency record")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_API_CLIENTS, &mut |v| {
        crate::accounts::put_api_client(&state, decode(v, "API client")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_REFRESH_TOKENS, &mut |v| {
        crate::accounts::put_refresh_token(&state, decode(v, "refresh token")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    each(CF_SIGNING_KEYS, &mut |v| {
        crate::accounts::put_signing_key(&state, decode(v, "signing key")?, &mut sink);
        sink.clear();
        Ok(())
    })?;
    recover_meta(store, &state)?;
    check_reservations(&state)?;
    Ok(state)
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
    let mut held = std::collections::HashMap::new();
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

fn recover_meta(store: &Store, state: &State) -> Result<()> {
    let last_lsn = match store.get(CF_META, META_LAST_LSN)? {
        Some(bytes) => u64::from_le_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| EngineError::IncompatibleData("last LSN row is malformed".into()))?,
        ),
        None => 0,
    };
    let logged = store.last_lsn()?.unwrap_or(0);
    if logged != last_lsn {
        return Err(EngineError::IncompatibleData(format!(
            "the rows are at LSN {last_lsn} but the log ends at {logged}"
        )));
    }
    state.last_lsn.store(last_lsn, Ordering::Release);
    if let Some(bytes) = store.get(CF_META, META_COUNTERS)? {
        let values: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let values: [u64; COUNTERS] = values
            .try_into()
            .map_err(|_| EngineError::IncompatibleData("counters row is malformed".into()))?;
        state.counters.restore(values);
    }
    Ok(())
}
