//! Commands: what a caller asks the engine to do. Fields carry the caller's raw input
//! (strings, signed numbers) so that the engine, not each caller, validates it and
//! names the offending field.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::*;

/// A price as received: minor units and an ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoneyInput {
    /// Minor units (cents).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A variant as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantInput {
    /// The SKU, unique across the catalog.
    pub sku: String,
    /// The variant's title.
    pub title: String,
    /// Its options (`size: M`).
    pub options: BTreeMap<String, String>,
    /// Its price.
    pub price: MoneyInput,
}

/// An `Idempotency-Key`, scoped to whoever sent it so that two clients cannot collide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent it (a customer id, an API client id, or `guest`).
    pub scope: String,
    /// The key: 1–255 printable ASCII characters.
    pub key: String,
}

/// Creates a category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateCategory {
    /// The name, 1–100 characters.
    pub name: String,
    /// The parent category, or `None` for a root.
    pub parent_id: Option<String>,
}

/// Renames or moves a category. A move that would make a cycle is refused.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateCategory {
    /// The category.
    pub id: String,
    /// A new name.
    pub name: Option<String>,
    /// A new parent (`Some(None)` makes it a root).
    pub parent_id: Option<Option<String>>,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Deletes a category that has no children and lists no product.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteCategory {
    /// The category.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Creates a product with its variants; each new SKU starts with no stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateProduct {
    /// The handle; derived from the title when `None`.
    pub handle: Option<String>,
    /// The title, 1–200 characters.
    pub title: String,
    /// The description, up to 10,000 characters.
    pub description: String,
    /// The brand, up to 100 characters.
    pub brand: String,
    /// Categories it is listed in (at most 20).
    pub category_ids: Vec<String>,
    /// Attributes (at most 50).
    pub attributes: BTreeMap<String, String>,
    /// Draft (the default) or active.
    pub status: Option<ProductStatus>,
    /// 1–100 variants.
    pub variants: Vec<VariantInput>,
}

/// Changes a product. `None` fields keep their value; `variants` replaces the list (a
/// SKU with reserved units cannot be dropped).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateProduct {
    /// The product.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
    /// A new handle.
    pub handle: Option<String>,
    /// A new title.
    pub title: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A new brand.
    pub brand: Option<String>,
    /// New categories.
    pub category_ids: Option<Vec<String>>,
    /// New attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    /// A new status.
    pub status: Option<ProductStatus>,
    /// New variants.
    pub variants: Option<Vec<VariantInput>>,
}

/// Archives a product: customers no longer see it or can buy it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ArchiveProduct {
    /// The product.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Sets a SKU's units on hand (a stock count). Below the reserved units is a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetStock {
    /// The SKU.
    pub sku: String,
    /// The new units on hand.
    pub on_hand: i64,
    /// Why (`stock count`), up to 200 characters.
    pub reason: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Adds `delta` (positive or negative) to a SKU's units on hand.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AdjustStock {
    /// The SKU.
    pub sku: String,
    /// Units to add (negative removes); not zero.
    pub delta: i64,
    /// Why (`received`, `damaged`), 1–200 characters.
    pub reason: String,
}

/// Opens a cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateCart {
    /// The owner, or `None` for a guest cart.
    pub customer_id: Option<String>,
    /// The currency; the engine's default when `None`.
    pub currency: Option<String>,
}

/// Adds units of a SKU to a cart (to its line, if it has one).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AddCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU of an active product priced in the cart's currency.
    pub sku: String,
    /// Units to add, at least 1.
    pub quantity: i64,
}

/// Sets the units of a cart line; 0 removes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU.
    pub sku: String,
    /// The new units, 0 to the line maximum.
    pub quantity: i64,
}

/// Removes a line from a cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RemoveCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU of the line.
    pub sku: String,
}

/// Turns a cart into an order, reserving every line's stock or none.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Checkout {
    /// The cart.
    pub cart_id: String,
    /// Where to send the receipt; required for a guest cart, the account's email
    /// otherwise.
    pub email: Option<String>,
    /// Where to ship.
    pub shipping_address: Option<Address>,
    /// Makes a retry return the first outcome.
    pub idempotency: Option<IdempotencyKey>,
}

/// Captures payment for a pending order through the built-in test provider.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CapturePayment {
    /// The order.
    pub order_id: String,
    /// `test_card`.
    pub method: String,
    /// `tok_visa` and `tok_mastercard` are approved, `tok_declined` is declined.
    pub token: String,
    /// Makes a retry return the first outcome.
    pub idempotency: Option<IdempotencyKey>,
}

/// Cancels a pending order, releasing its stock.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelOrder {
    /// The order.
    pub order_id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Marks a paid order fulfilled.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FulfillOrder {
    /// The order.
    pub order_id: String,
}

/// Registers an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterCustomer {
    /// The email, unique (case-insensitively).
    pub email: String,
    /// The display name, up to 100 characters.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The credential to keep (a password hash made by the caller).
    pub credential: String,
}

/// Expires every unpaid order whose reservation time has passed (at most
/// [`crate::EXPIRIES_PER_COMMAND_MAX`] at once) and forgets idempotency records past
/// their time to live. The engine sends this itself on a timer; tests with a manual
/// clock send it directly.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExpireDue;

/// What a captured payment gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReceipt {
    /// The order after the capture.
    pub order: Arc<Order>,
    /// The payment.
    pub payment: Payment,
}

/// Every command, as the sequencer receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    CreateCategory(CreateCategory),
    UpdateCategory(UpdateCategory),
    DeleteCategory(DeleteCategory),
    CreateProduct(CreateProduct),
    UpdateProduct(UpdateProduct),
    ArchiveProduct(ArchiveProduct),
    SetStock(SetStock),
    AdjustStock(AdjustStock),
    CreateCart(CreateCart),
    AddCartItem(AddCartItem),
    SetCartItem(SetCartItem),
    RemoveCartItem(RemoveCartItem),
    Checkout(Checkout),
    CapturePayment(CapturePayment),
    CancelOrder(CancelOrder),
    FulfillOrder(FulfillOrder),
    RegisterCustomer(RegisterCustomer),
    ExpireDue(ExpireDue),
    CreateApiClient(crate::accounts::CreateApiClient),
    IssueRefreshToken(crate::accounts::IssueRefreshToken),
    RotateRefreshToken(crate::accounts::RotateRefreshToken),
    AddSigningKey(crate::accounts::AddSigningKey),
    RecordResponse(crate::accounts::RecordResponse),
}

/// What a successful command gives back, before it is narrowed to its request's type.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum Reply {
    Category(Arc<Category>),
    Deleted,
    Product(Arc<Product>),
    Stock(StockLevels),
    Cart(Arc<Cart>),
    Order(Arc<Order>),
    Payment(PaymentReceipt),
    Customer(Arc<Customer>),
    Expired(usize),
    ApiClient(Arc<crate::accounts::ApiClient>),
    Rotation(crate::accounts::Rotation),
}

/// A typed command: [`crate::Engine::send`] takes any of these and returns its
/// `Output`.
pub trait Request: Into<Command> {
    /// What a success gives back.
    type Output;
    /// Narrows the reply of this request's command.
    #[doc(hidden)]
    fn output(reply: Reply) -> Self::Output;
}

macro_rules! requests {
    ($($name:ident => $variant:ident($out:ty)),* $(,)?) => {$(
        impl From<$name> for Command {
            fn from(request: $name) -> Command {
                Command::$name(request)
            }
        }
        impl Request for $name {
            type Output = $out;
            fn output(reply: Reply) -> $out {
                match reply {
                    Reply::$variant(value) => value,
                    other => unreachable!(concat!(stringify!($name), " answered {:?}"), other),
                }
            }
        }
    )*};
}

requests! {
    CreateCategory => Category(Arc<Category>),
    UpdateCategory => Category(Arc<Category>),
    CreateProduct => Product(Arc<Product>),
    UpdateProduct => Product(Arc<Product>),
    ArchiveProduct => Product(Arc<Product>),
    SetStock => Stock(StockLevels),
    AdjustStock => Stock(StockLevels),
    CreateCart => Cart(Arc<Cart>),
    AddCartItem => Cart(Arc<Cart>),
    SetCartItem => Cart(Arc<Cart>),
    RemoveCartItem => Cart(Arc<Cart>),
    Checkout => Order(Arc<Order>),
    CapturePayment => Payment(PaymentReceipt),
    CancelOrder => Order(Arc<Order>),
    FulfillOrder => Order(Arc<Order>),
    RegisterCustomer => Customer(Arc<Customer>),
    ExpireDue => Expired(usize),
}

impl From<DeleteCategory> for Command {
    fn from(request: DeleteCategory) -> Command {
        Command::DeleteCategory(request)
    }
}

impl Request for DeleteCategory {
    type Output = ();
    fn output(_: Reply) {}
}
