//! The entities: what a product, cart or order is. Values only; the rules that change
//! them live in `decide` and `apply`.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// Whether customers see a product.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProductStatus {
    /// Being prepared; staff only.
    Draft,
    /// On sale.
    Active,
    /// Withdrawn; kept for orders that name it.
    Archived,
}

impl ProductStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProductStatus::Draft => "draft",
            ProductStatus::Active => "active",
            ProductStatus::Archived => "archived",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<ProductStatus> {
        match value {
            "draft" => Some(ProductStatus::Draft),
            "active" => Some(ProductStatus::Active),
            "archived" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

/// One purchasable variant of a product.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The unique SKU.
    pub sku: Sku,
    /// "Medium / Blue".
    pub title: String,
    /// `{"size": "M"}`.
    pub options: BTreeMap<String, String>,
    /// The current price.
    pub price: Money,
}

/// The aggregate of a product's reviews.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rating {
    /// Sum of all ratings (1–5 each).
    pub sum: u64,
    /// Number of ratings.
    pub count: u64,
}

impl Rating {
    /// The mean rating, 0 when there is none.
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// A product with its variants.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// The id.
    pub id: ProductId,
    /// The unique, URL-friendly name.
    pub handle: String,
    /// The title.
    pub title: String,
    /// The description.
    pub description: String,
    /// The brand.
    pub brand: String,
    /// The categories the product is listed in.
    pub category_ids: Vec<CategoryId>,
    /// Free-form attributes (`material: cotton`).
    pub attributes: BTreeMap<String, String>,
    /// Draft, active or archived.
    pub status: ProductStatus,
    /// The variants, at least one.
    pub variants: Vec<Variant>,
    /// The review aggregate.
    pub rating: Rating,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change; starts at 1.
    pub version: u64,
}

impl Product {
    /// The variant with `sku`.
    pub fn variant(&self, sku: &Sku) -> Option<&Variant> {
        self.variants.iter().find(|v| &v.sku == sku)
    }
}

/// A node of the category tree.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Category {
    /// The id.
    pub id: CategoryId,
    /// The name.
    pub name: String,
    /// The parent, or `None` for a root.
    pub parent_id: Option<CategoryId>,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

/// A SKU's stock: `available = on_hand - reserved`, all non-negative.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StockLevels {
    /// The SKU.
    pub sku: Sku,
    /// Units in the warehouse, including reserved ones.
    pub on_hand: u32,
    /// Units held by unpaid orders.
    pub reserved: u32,
    /// Bumped by every change.
    pub version: u64,
}

impl StockLevels {
    /// Units that can still be reserved.
    pub fn available(&self) -> u32 {
        debug_assert!(self.reserved <= self.on_hand, "reserved exceeds on hand for {}", self.sku);
        self.on_hand - self.reserved
    }
}

/// One line of a cart: a SKU and how many.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CartLine {
    /// The SKU.
    pub sku: Sku,
    /// How many, 1 to the configured maximum.
    pub quantity: u32,
}

/// Whether a cart may still change.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CartStatus {
    /// Lines may be added and changed.
    Open,
    /// Checked out into the order; closed for good.
    CheckedOut(OrderId),
}

/// A cart. Prices are not stored: they are the current ones when the cart is read.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cart {
    /// The id (128 random bits: holding it is what gives a guest access).
    pub id: CartId,
    /// Position in the order of cart creation: the storage key, so new rows append.
    pub seq: u64,
    /// The owner, or `None` for a guest cart.
    pub customer_id: Option<CustomerId>,
    /// The currency every line must be priced in.
    pub currency: Currency,
    /// The lines, one per SKU, in the order they were added.
    pub lines: Vec<CartLine>,
    /// Open or checked out.
    pub status: CartStatus,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

/// Where an order ships to.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Address {
    /// The recipient.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// Optional second line.
    pub line2: String,
    /// The city.
    pub city: String,
    /// State, province or region, where one is used.
    pub region: String,
    /// The postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// Where an order is in its life.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Stock reserved, waiting for payment until the reservation expires.
    PendingPayment,
    /// Paid: the reserved units left `on_hand`.
    Paid,
    /// Shipped.
    Fulfilled,
    /// Cancelled before payment: stock released.
    Cancelled,
    /// Not paid in time: stock released.
    Expired,
}

impl OrderStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<OrderStatus> {
        [
            OrderStatus::PendingPayment,
            OrderStatus::Paid,
            OrderStatus::Fulfilled,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// One line of an order, priced when the order was placed.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// The SKU.
    pub sku: Sku,
    /// The product the SKU belonged to.
    pub product_id: ProductId,
    /// The product and variant title at checkout.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// The price of one unit at checkout.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// A captured payment.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The id.
    pub id: PaymentId,
    /// The method (`test_card`).
    pub method: String,
    /// The card brand the test token stands for (`visa`), never a card number.
    pub card_brand: String,
    /// The amount captured.
    pub amount: Money,
    /// When it was captured.
    pub created_at: TimestampMs,
}

/// An order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The id (128 random bits: holding it is what gives a guest access).
    pub id: OrderId,
    /// Position in the order of checkouts, for listing.
    pub seq: u64,
    /// The cart it was checked out from.
    pub cart_id: CartId,
    /// The owner, or `None` for a guest order.
    pub customer_id: Option<CustomerId>,
    /// Where to send the receipt.
    pub email: String,
    /// Where to ship.
    pub shipping_address: Option<Address>,
    /// The status.
    pub status: OrderStatus,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the line totals.
    pub subtotal: Money,
    /// Discounts applied.
    pub discount_total: Money,
    /// `subtotal - discount_total`.
    pub total: Money,
    /// When an unpaid order expires and its stock is released.
    pub reservation_expires_at: TimestampMs,
    /// Captured payments.
    pub payments: Vec<Payment>,
    /// When it was placed.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

impl Order {
    /// The currency of every amount of the order.
    pub fn currency(&self) -> Currency {
        self.total.currency()
    }

    /// Whether the order still holds a reservation of its lines' stock.
    pub fn holds_reservation(&self) -> bool {
        self.status == OrderStatus::PendingPayment
    }
}

/// What an account may do. The HTTP layer maps roles to permissions.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shopper.
    Customer,
    /// Shop staff.
    Staff,
    /// Administrators.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<Role> {
        [Role::Customer, Role::Staff, Role::Admin].into_iter().find(|r| r.as_str() == value)
    }
}

/// An account that can own carts and orders.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// The id.
    pub id: CustomerId,
    /// The unique email, lower-cased.
    pub email: String,
    /// The display name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The credential as the authenticating layer stores it (a password hash); the
    /// engine only keeps it.
    pub credential: String,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

/// The recorded outcome of an idempotent command, replayed for a retry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum IdempotentOutcome {
    /// A checkout that placed this order (as it was then).
    Checkout(Order),
    /// A payment that was captured (the order as it was then).
    Payment(Order, Payment),
    /// A response recorded by the HTTP layer.
    Response(RecordedResponse),
}

/// A response kept for an idempotency key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The idempotency key an event was made under; `apply` turns it into the record, so
/// the log does not carry the outcome twice.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyTag {
    /// The scoped key (`scope` NUL `key`).
    pub key: String,
    /// A fingerprint of the request.
    pub fingerprint: u64,
}

/// An idempotency key's record.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The scoped key (`scope` NUL `key`).
    pub key: String,
    /// A fingerprint of the request that first used the key.
    pub fingerprint: u64,
    /// What that request did.
    pub outcome: IdempotentOutcome,
    /// When; the record is forgotten after the configured time to live.
    pub created_at: TimestampMs,
}
