//! The errors the engine gives its callers: each a case they can match.

use std::fmt;

use crate::types::Sku;

/// The result of an engine call.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// One invalid field of a command: its path (`variants[0].price.amount`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The path of the offending field in the request.
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }

    /// The same error about a field nested under `prefix` (`variants[0]` + `sku`).
    pub fn under(mut self, prefix: &str) -> FieldError {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A SKU that a checkout could not reserve in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The SKU.
    pub sku: Sku,
    /// Units the cart asked for.
    pub requested: u32,
    /// Units available when the checkout was decided.
    pub available: u32,
}

/// What kind of thing was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    /// A product.
    Product,
    /// A category.
    Category,
    /// A SKU (no product variant has it).
    Sku,
    /// A cart.
    Cart,
    /// An order.
    Order,
    /// A customer or staff account.
    Customer,
    /// A flash sale.
    FlashSale,
    /// A discount code.
    DiscountCode,
    /// A return.
    Return,
    /// A payment provider call.
    PaymentCall,
    /// A saved address.
    Address,
    /// A shipping method.
    ShippingMethod,
    /// A tax zone's rate.
    TaxRate,
    /// An automatic promotion.
    Promotion,
    /// A stock location.
    Location,
    /// A product review.
    Review,
    /// A webhook.
    Webhook,
    /// A webhook's dead letter.
    DeadLetter,
    /// A notification in the outbox.
    Notification,
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntityKind::Product => "product",
            EntityKind::Category => "category",
            EntityKind::Sku => "SKU",
            EntityKind::Cart => "cart",
            EntityKind::Order => "order",
            EntityKind::Customer => "customer",
            EntityKind::FlashSale => "flash sale",
            EntityKind::DiscountCode => "discount code",
            EntityKind::Return => "return",
            EntityKind::PaymentCall => "payment call",
            EntityKind::Address => "address",
            EntityKind::ShippingMethod => "shipping method",
            EntityKind::TaxRate => "tax rate",
            EntityKind::Promotion => "promotion",
            EntityKind::Location => "stock location",
            EntityKind::Review => "review",
            EntityKind::Webhook => "webhook",
            EntityKind::DeadLetter => "dead letter",
            EntityKind::Notification => "notification",
        })
    }
}

/// Why the engine refused or failed a call. A refused command changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Some fields of the command are invalid.
    #[error("validation failed: {}", display_fields(.0))]
    Validation(Vec<FieldError>),
    /// The thing the command names does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of thing.
        kind: EntityKind,
        /// The id (or SKU, or email) that was asked for.
        id: String,
    },
    /// Not enough stock for every line of a checkout; nothing was reserved.
    #[error("not enough stock for {} SKU(s)", .0.len())]
    OutOfStock(Vec<Shortfall>),
    /// The command is not allowed in the entity's current state (a closed cart, a paid
    /// order cancelled, …).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The command conflicts with existing data (a duplicate SKU, handle or email, stock
    /// below the reserved units, a category that still has children).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A checkout of a cart without lines.
    #[error("the cart is empty")]
    EmptyCart,
    /// The payment provider declined the payment; the order is unchanged.
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    /// A flash sale has fewer units left than a purchase asks for.
    #[error("the flash sale has {remaining} units left")]
    SoldOut {
        /// Units left in the sale.
        remaining: u32,
    },
    /// A discount code cannot be used on the cart (not active, not valid now, used up,
    /// over the customer's limit, not combinable, or applying to nothing); nothing was
    /// changed.
    #[error("discount code {code} cannot be used: {reason}")]
    DiscountUnavailable {
        /// The code.
        code: String,
        /// Why.
        reason: String,
    },
    /// A flash sale is not selling: before its start, after its end, or cancelled.
    #[error("the flash sale is not live: {0}")]
    SaleNotLive(String),
    /// A purchase would take a customer past the sale's per-customer limit.
    #[error("the purchase exceeds the limit of {limit} units per customer ({held} held)")]
    PurchaseLimitExceeded {
        /// The sale's limit.
        limit: u32,
        /// Units the customer holds in pending and paid orders of the sale.
        held: u32,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The caller's expected version is not the current one.
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// The command queue is full: try again shortly.
    #[error("the engine is overloaded; try again shortly")]
    Overloaded,
    /// The engine stopped after a storage failure (fail-stop) or was shut down; no
    /// write is accepted until it is reopened.
    #[error("the engine is not accepting writes: {0}")]
    Unavailable(String),
    /// The storage layer failed.
    #[error("storage failure: {0}")]
    Storage(#[from] emporium_storage::StorageError),
    /// The data directory holds data this build cannot read.
    #[error("incompatible data directory: {0}")]
    IncompatibleData(String),
    /// The log no longer holds the entries asked for: retention trimmed them. A consumer
    /// that needs them must resynchronise from a checkpoint.
    #[error("the log was trimmed: LSN {} was asked for, the first held is {}", .requested.0, .first.0)]
    LogTrimmed {
        /// The first LSN asked for.
        requested: crate::types::Lsn,
        /// The first LSN the log still holds.
        first: crate::types::Lsn,
    },
    /// This node is a standby: it serves reads and applies its primary's log; every
    /// command is refused until it is promoted.
    #[error("this node is a read-only standby")]
    ReadOnlyStandby,
    /// A primary with synchronous standbys could not get enough of them to hold the
    /// write: it is refused (before it is applied) or, when it was already applied
    /// here, not acknowledged. Try again shortly.
    #[error("synchronous standbys unavailable: {0}")]
    StandbysUnavailable(String),
    /// Replicated log entries do not follow the standby's last LSN: duplicated, out of
    /// order or from another history. Nothing of them past the last good entry was
    /// applied.
    #[error("replicated entry {} does not follow LSN {}", .found.0, .expected.0 - 1)]
    ReplicaGap {
        /// The LSN the standby expected next.
        expected: crate::types::Lsn,
        /// The LSN it was given.
        found: crate::types::Lsn,
    },
}

fn display_fields(fields: &[FieldError]) -> String {
    fields.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
}

impl EngineError {
    /// A validation error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> EngineError {
        EngineError::Validation(vec![FieldError::new(field, message)])
    }

    /// Whether this is [`EngineError::OutOfStock`].
    pub fn is_out_of_stock(&self) -> bool {
        matches!(self, EngineError::OutOfStock(_))
    }

    /// Whether this is [`EngineError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }

    /// Whether this is [`EngineError::Validation`].
    pub fn is_validation(&self) -> bool {
        matches!(self, EngineError::Validation(_))
    }

    /// Whether this is [`EngineError::LogTrimmed`].
    pub fn is_log_trimmed(&self) -> bool {
        matches!(self, EngineError::LogTrimmed { .. })
    }

    /// Whether this is [`EngineError::Overloaded`]: the caller should back off and retry.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, EngineError::Overloaded)
    }

    /// The invalid fields, when this is a validation error.
    pub fn fields(&self) -> &[FieldError] {
        match self {
            EngineError::Validation(fields) => fields,
            _ => &[],
        }
    }
}

impl From<FieldError> for EngineError {
    fn from(error: FieldError) -> EngineError {
        EngineError::Validation(vec![error])
    }
}
