//! The Emporium commerce engine, embeddable in any Rust program.
//!
//! Open an [`Engine`] on a data directory, send it typed commands, read its state. Every
//! command goes through one sequencer thread that decides and applies it in memory;
//! its events are appended to the log in RocksDB, one synced write per commit group,
//! and only then is the command answered (refusals too). The entity rows are written
//! later, coalesced, by a materializer; recovery loads them and replays the log after
//! them. Stock is never oversold: a checkout
//! reserves every line or none, and `on_hand = available + reserved` holds for every
//! SKU at every instant.
//!
//! # Example
//!
//! ```
//! use emporium_engine::*;
//! use std::collections::BTreeMap;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(EngineConfig::new(dir.path()))?;
//! let shop = engine.blocking();
//!
//! let product = shop.send(CreateProduct {
//!     handle: None,
//!     title: "Organic T-Shirt".into(),
//!     description: "Soft and fair.".into(),
//!     brand: "Acme".into(),
//!     category_ids: vec![],
//!     attributes: BTreeMap::new(),
//!     status: Some(ProductStatus::Active),
//!     variants: vec![VariantInput {
//!         sku: "TSHIRT-M".into(),
//!         title: "M".into(),
//!         options: BTreeMap::from([("size".into(), "M".into())]),
//!         price: MoneyInput { amount: 1999, currency: "USD".into() },
//!     }],
//! })?;
//! assert_eq!(product.handle, "organic-t-shirt");
//! shop.send(SetStock { sku: "TSHIRT-M".into(), on_hand: 5, ..Default::default() })?;
//!
//! let cart = shop.send(CreateCart::default())?;
//! shop.send(AddCartItem { cart_id: cart.id.to_string(), sku: "TSHIRT-M".into(), quantity: 2 })?;
//! let order = shop.send(Checkout {
//!     cart_id: cart.id.to_string(),
//!     email: Some("ann@example.com".into()),
//!     ..Default::default()
//! })?;
//! assert_eq!(order.total.amount(), 3998);
//!
//! let receipt = shop.send(CapturePayment {
//!     order_id: order.id.to_string(),
//!     method: "test_card".into(),
//!     token: "tok_visa".into(),
//!     idempotency: None,
//! })?;
//! assert_eq!(receipt.order.status, OrderStatus::Paid);
//!
//! let stock = engine.state().stock(&Sku::new("TSHIRT-M")?).unwrap();
//! assert_eq!((stock.on_hand, stock.reserved, stock.available()), (3, 0, 3));
//!
//! // Asking for more than there is changes nothing and says what is short.
//! let cart = shop.send(CreateCart::default())?;
//! shop.send(AddCartItem { cart_id: cart.id.to_string(), sku: "TSHIRT-M".into(), quantity: 4 })?;
//! let refused = shop.send(Checkout {
//!     cart_id: cart.id.to_string(),
//!     email: Some("bob@example.com".into()),
//!     ..Default::default()
//! });
//! match refused {
//!     Err(EngineError::OutOfStock(short)) => assert_eq!(short[0].available, 3),
//!     other => panic!("expected out of stock, got {other:?}"),
//! }
//! engine.close();
//! # Ok(())
//! # }
//! ```
//!
//! Async callers use [`Engine::send`] (`engine.send(command).await`) instead of the
//! blocking facade.

#![warn(missing_docs)]

mod accounts;
mod carts;
mod catalog;
mod clock;
mod domains;
mod error;
mod flash_sales;
mod follower;
mod idempotency;
mod ids;
mod inventory;
mod kernel;
mod kpis;
mod notifications;
mod orders;
mod payments;
mod process;
mod product_search;
mod promotions;
mod recommendations;
mod returns;
mod reviews;
mod shipping;
mod types;
mod validate;
mod webhooks;

pub use accounts::*;
pub use carts::*;
pub use catalog::*;
pub use clock::{Clock, ManualClock, SystemClock};
pub use domains::{Event, LogEntry, State};
pub use emporium_storage::BackendKind;
#[cfg(feature = "faults")]
pub use emporium_storage::{DiskFaults, ReadFault, WriteFault};
pub use error::{EngineError, EntityKind, FieldError, Result, Shortfall};
pub use flash_sales::*;
pub use idempotency::*;
pub use inventory::*;
pub use kernel::codec::{decode_log, ENGINE_FORMAT_VERSION};
pub use kernel::handler::{IdSource, Limits, Request};
pub use kernel::recovery::{check_rows, table_names};
pub use kernel::replica::{EpochStart, Epochs, NodeRole, ReleaseGate, TableDigest};
#[cfg(feature = "faults")]
pub use kernel::runtime::Faults;
pub use kernel::runtime::{
    BlockingEngine, Engine, EngineConfig, EngineStats, LogConsumer, COMMITTER_THREAD,
};
pub use kernel::timers::{ExpireDue, EXPIRIES_PER_COMMAND_MAX};
pub use kpis::*;
pub use notifications::*;
pub use orders::*;
pub use payments::*;
pub use process::{tune_process_memory, Allocator};
pub use product_search::*;
pub use promotions::*;
pub use recommendations::*;
pub use returns::*;
pub use reviews::*;
pub use shipping::*;
pub use types::*;
pub use webhooks::*;

/// The pure domain, for tests and benchmarks that drive `decide` and `apply` without
/// the runtime or storage.
pub mod domain {
    use crate::domains::{apply, Event, State};
    use crate::error::Result;
    use crate::kernel::handler::Request;

    pub use crate::kernel::handler::{Ctx as Context, IdSource, Limits};

    /// Decides `request` against `state` and applies its events, as the sequencer does
    /// (without logging or persistence). Returns the events and the reply.
    pub fn execute<R: Request>(
        state: &State,
        request: &R,
        ctx: &mut Context<'_>,
    ) -> Result<(Vec<Event>, R::Output)> {
        let decision = request.decide(state, ctx)?;
        let mut rows = Vec::new();
        let mut events = decision.events;
        for event in &events {
            apply(state, event, ctx.now, &mut rows);
        }
        let reply = R::reply(state, decision.outcome);
        if let Some(event) = request.after(state, &reply, ctx) {
            apply(state, &event, ctx.now, &mut rows);
            events.push(event);
        }
        Ok((events, reply))
    }
}
