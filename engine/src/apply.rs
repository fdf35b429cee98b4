//! `apply`: makes an event's change to the state and reports the rows it touched, so
//! the runtime can persist exactly those. No decisions here: every check was made in
//! `decide`, and an event that does not fit the state is a programming error (panic).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::accounts::{self, RefreshState};
use crate::event::{Event, PlacedOrder};
use crate::model::*;
use crate::state::{State, StockCell};
use crate::types::*;

/// A changed row, as it must be persisted: the value right after the change.
#[derive(Clone, Debug)]
pub(crate) enum Row {
    Product(Arc<Product>),
    Category(Arc<Category>),
    CategoryDeleted(CategoryId),
    Stock(StockLevels),
    Cart(Arc<Cart>),
    Order(Arc<Order>),
    Customer(Arc<Customer>),
    Idempotency(Arc<IdempotencyRecord>),
    IdempotencyDeleted(String),
    ApiClient(Arc<accounts::ApiClient>),
    RefreshToken(Arc<accounts::RefreshToken>),
    RefreshTokenDeleted(String),
    SigningKey(Arc<accounts::SigningKey>),
}

/// Applies `event` of a log entry made at `at` (the entry's time, which `decide` saw as
/// its `now`).
pub(crate) fn apply(state: &State, event: &Event, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        Event::CategoryCreated(category) => {
            state.counters.category.fetch_add(1, Ordering::AcqRel);
            put_category(state, (**category).clone(), rows);
        }
        Event::CategoryUpdated(category) => put_category(state, (**category).clone(), rows),
        Event::CategoryDeleted(id) => {
            state.categories.remove(id);
            rows.push(Row::CategoryDeleted(id.clone()));
        }
        Event::ProductCreated(product) => {
            state.counters.product.fetch_add(1, Ordering::AcqRel);
            put_product(state, (**product).clone(), rows);
        }
        Event::ProductUpdated(product) => put_product(state, (**product).clone(), rows),
        Event::StockSet { sku, on_hand, .. } => {
            let (_, reserved) = levels(state, sku);
            write_stock(state, sku, *on_hand, reserved, rows);
        }
        Event::StockAdjusted { sku, delta, .. } => {
            let (on_hand, reserved) = levels(state, sku);
            let on_hand =
                u32::try_from(i64::from(on_hand) + delta).expect("decide bounds the delta");
            write_stock(state, sku, on_hand, reserved, rows);
        }
        Event::CartCreated(cart) => {
            state.counters.cart.fetch_add(1, Ordering::AcqRel);
            put_cart(state, (**cart).clone(), rows);
        }
        Event::CartLineSet { cart_id, sku, quantity, at } => {
            let mut cart = (*state.cart(cart_id).expect("decide checked the cart")).clone();
            match cart.lines.iter().position(|l| &l.sku == sku) {
                Some(i) if *quantity == 0 => {
                    cart.lines.remove(i);
                }
                Some(i) => cart.lines[i].quantity = *quantity,
                None => cart.lines.push(CartLine { sku: sku.clone(), quantity: *quantity }),
            }
            cart.updated_at = *at;
            cart.version += 1;
            put_cart(state, cart, rows);
        }
        Event::OrderPlaced(placed) => place_order(state, placed, at, rows),
        Event::PaymentCaptured { order_id, payment, idempotency, at } => {
            let mut order = take_pending(state, order_id);
            for line in &order.lines {
                let (on_hand, reserved) = levels(state, &line.sku);
                // Units sold leave the warehouse: both counts drop by the line's units.
                write_stock(
                    state,
                    &line.sku,
                    on_hand - line.quantity,
                    reserved - line.quantity,
                    rows,
                );
            }
            mark_paid(&mut order, (**payment).clone(), *at);
            if let Some(tag) = idempotency {
                let outcome = IdempotentOutcome::Payment(order.clone(), (**payment).clone());
                put_idempotency(state, record(tag, outcome, *at), rows);
            }
            put_order(state, order, rows);
        }
        Event::OrderCancelled { order_id, at } => {
            release(state, order_id, OrderStatus::Cancelled, *at, rows)
        }
        Event::OrderExpired { order_id, at } => {
            release(state, order_id, OrderStatus::Expired, *at, rows)
        }
        Event::OrderFulfilled { order_id, at } => {
            let mut order = (*state.order(order_id).expect("decide checked the order")).clone();
            assert_eq!(order.status, OrderStatus::Paid);
            order.status = OrderStatus::Fulfilled;
            touch(&mut order, *at);
            put_order(state, order, rows);
        }
        Event::CustomerRegistered(customer) => {
            state.counters.customer.fetch_add(1, Ordering::AcqRel);
            let customer = Arc::new((**customer).clone());
            state.emails.insert(customer.email.clone(), customer.id.clone());
            state.customers.insert(customer.id.clone(), customer.clone());
            rows.push(Row::Customer(customer));
        }
        Event::ApiClientCreated(client) => {
            accounts::put_api_client(state, (**client).clone(), rows)
        }
        Event::RefreshTokenIssued(token) => {
            accounts::put_refresh_token(state, (**token).clone(), rows)
        }
        Event::RefreshTokenRotated { presented, successor } => {
            accounts::set_refresh_state(state, presented, RefreshState::Rotated, rows);
            accounts::put_refresh_token(state, (**successor).clone(), rows);
        }
        Event::RefreshFamilyRevoked { family } => accounts::revoke_family(state, family, rows),
        Event::RefreshTokensPurged { hashes } => {
            accounts::purge_refresh_tokens(state, hashes, rows)
        }
        Event::SigningKeyAdded(key) => accounts::put_signing_key(state, (**key).clone(), rows),
        Event::ResponseRecorded(record) => put_idempotency(state, (**record).clone(), rows),
        Event::IdempotencyForgotten { keys } => {
            for key in keys {
                if let Some(record) = state.idempotency.remove(key) {
                    state.idempotency_by_age.remove(&(record.created_at, key.clone()));
                    rows.push(Row::IdempotencyDeleted(key.clone()));
                }
            }
        }
    }
}

/// The order after `payment` is captured: paid, the payment listed.
pub(crate) fn mark_paid(order: &mut Order, payment: Payment, at: TimestampMs) {
    order.status = OrderStatus::Paid;
    order.payments.push(payment);
    touch(order, at);
}

fn touch(order: &mut Order, at: TimestampMs) {
    order.updated_at = at;
    order.version += 1;
}

fn levels(state: &State, sku: &Sku) -> (u32, u32) {
    let cell = state.stock.get(sku).expect("every SKU of a product has a stock row");
    let (on_hand, reserved, _) = cell.read();
    (on_hand, reserved)
}

fn write_stock(state: &State, sku: &Sku, on_hand: u32, reserved: u32, rows: &mut Vec<Row>) {
    let cell = state.stock.get(sku).expect("every SKU of a product has a stock row");
    cell.write(on_hand, reserved);
    let (on_hand, reserved, version) = cell.read();
    rows.push(Row::Stock(StockLevels { sku: sku.clone(), on_hand, reserved, version }));
}

fn put_category(state: &State, category: Category, rows: &mut Vec<Row>) {
    let category = Arc::new(category);
    state.categories.insert(category.id.clone(), category.clone());
    rows.push(Row::Category(category));
}

pub(crate) fn put_product(state: &State, product: Product, rows: &mut Vec<Row>) {
    let product = Arc::new(product);
    if let Some(previous) = state.product(&product.id) {
        if previous.handle != product.handle {
            state.handles.remove(&previous.handle);
        }
        for dropped in previous.variants.iter().filter(|v| product.variant(&v.sku).is_none()) {
            state.skus.remove(&dropped.sku);
        }
    }
    state.handles.insert(product.handle.clone(), product.id.clone());
    for variant in &product.variants {
        state.skus.insert(variant.sku.clone(), product.clone());
        if !state.stock.contains_key(&variant.sku) {
            state.stock.insert(variant.sku.clone(), Arc::new(StockCell::new(0, 0, 1)));
            rows.push(Row::Stock(StockLevels {
                sku: variant.sku.clone(),
                on_hand: 0,
                reserved: 0,
                version: 1,
            }));
        }
    }
    state.products.insert(product.id.clone(), product.clone());
    rows.push(Row::Product(product));
}

fn put_cart(state: &State, cart: Cart, rows: &mut Vec<Row>) {
    let cart = Arc::new(cart);
    state.carts.insert(cart.id.clone(), cart.clone());
    rows.push(Row::Cart(cart));
}

/// Publishes an order and keeps the indexes over it (listing order, owner, expiry).
pub(crate) fn put_order(state: &State, order: Order, rows: &mut Vec<Row>) {
    let order = Arc::new(order);
    index_order(state, &order);
    state.orders.insert(order.id.clone(), order.clone());
    rows.push(Row::Order(order));
}

pub(crate) fn index_order(state: &State, order: &Order) {
    state.orders_by_seq.insert(order.seq, order.id.clone());
    if let Some(customer) = &order.customer_id {
        state.customer_orders.insert((customer.clone(), order.seq));
    }
    let expiry = (order.reservation_expires_at, order.id.clone());
    if order.holds_reservation() {
        state.expiry.insert(expiry);
    } else {
        state.expiry.remove(&expiry);
    }
}

pub(crate) fn put_idempotency(state: &State, record: IdempotencyRecord, rows: &mut Vec<Row>) {
    let record = Arc::new(record);
    if let Some(previous) = state.idempotency.get(&record.key) {
        state.idempotency_by_age.remove(&(previous.created_at, record.key.clone()));
    }
    state.idempotency_by_age.insert((record.created_at, record.key.clone()));
    state.idempotency.insert(record.key.clone(), record.clone());
    rows.push(Row::Idempotency(record));
}

/// Reserves the lines' stock, closes the cart and publishes the order, built from the
/// event's facts and the state at its LSN (owner and currency from the cart, product
/// ids and titles from the catalog, totals from the lines).
fn place_order(state: &State, placed: &PlacedOrder, at: TimestampMs, rows: &mut Vec<Row>) {
    let seq = state.counters.order.fetch_add(1, Ordering::AcqRel) + 1;
    debug_assert!(!state.orders_by_seq.contains_key(&seq), "order sequence reused");
    let mut cart = (*state.cart(&placed.cart_id).expect("decide checked the cart")).clone();
    let zero = Money::zero(cart.currency);
    let mut subtotal = zero;
    let mut lines = Vec::with_capacity(placed.lines.len());
    for line in &placed.lines {
        let (on_hand, reserved) = levels(state, &line.sku);
        let reserved = reserved + line.quantity;
        assert!(reserved <= on_hand, "decide reserves only available units");
        write_stock(state, &line.sku, on_hand, reserved, rows);
        let product = state.product_by_sku(&line.sku).expect("decide checked the SKU is sold");
        let line_total = line.unit_price.times(line.quantity).expect("decide bounded the total");
        subtotal = subtotal.plus(line_total).expect("decide bounded the total");
        lines.push(OrderLine {
            sku: line.sku.clone(),
            product_id: product.id.clone(),
            title: crate::state::line_title(Some(&product), product.variant(&line.sku)),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total,
        });
    }
    let order = Order {
        id: placed.id.clone(),
        seq,
        cart_id: cart.id.clone(),
        customer_id: cart.customer_id.clone(),
        email: placed.email.clone(),
        shipping_address: placed.shipping_address.as_deref().cloned(),
        status: OrderStatus::PendingPayment,
        lines,
        subtotal,
        discount_total: zero,
        total: subtotal,
        reservation_expires_at: placed.reservation_expires_at,
        payments: Vec::new(),
        created_at: at,
        updated_at: at,
        version: 1,
    };
    cart.status = CartStatus::CheckedOut(order.id.clone());
    cart.updated_at = at;
    cart.version += 1;
    put_cart(state, cart, rows);
    if let Some(tag) = &placed.idempotency {
        let outcome = IdempotentOutcome::Checkout(order.clone());
        put_idempotency(state, record(tag, outcome, at), rows);
    }
    put_order(state, order, rows);
}

fn record(tag: &IdempotencyTag, outcome: IdempotentOutcome, at: TimestampMs) -> IdempotencyRecord {
    IdempotencyRecord {
        key: tag.key.clone(),
        fingerprint: tag.fingerprint,
        outcome,
        created_at: at,
    }
}

fn take_pending(state: &State, order_id: &OrderId) -> Order {
    let order = (*state.order(order_id).expect("decide checked the order")).clone();
    assert_eq!(
        order.status,
        OrderStatus::PendingPayment,
        "only a pending order holds a reservation"
    );
    order
}

/// Ends a pending order's reservation: its units go back to `available`.
fn release(
    state: &State,
    order_id: &OrderId,
    status: OrderStatus,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let mut order = take_pending(state, order_id);
    for line in &order.lines {
        let (on_hand, reserved) = levels(state, &line.sku);
        write_stock(state, &line.sku, on_hand, reserved - line.quantity, rows);
    }
    order.status = status;
    touch(&mut order, at);
    put_order(state, order, rows);
}
