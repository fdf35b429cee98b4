//! Typed commands. Every command is a [`Request`]: it decides its events against the
//! state (pure, changing nothing), and once they are applied, reads its own reply from
//! the state. The runtime carries each request with a reply channel of its own output
//! type, so no reply is ever narrowed from a shared enum.

use crate::domains::{Event, State};
use crate::error::{EngineError, EntityKind, FieldError, Result};
use crate::types::*;
use crate::validate::Checks;

/// Where randomness comes from: the runtime draws from an OS-seeded generator, tests
/// from a seeded one.
pub trait IdSource {
    /// 128 random bits.
    fn random_u128(&mut self) -> u128;
}

impl<R: rand::RngCore> IdSource for R {
    fn random_u128(&mut self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }
}

/// The rules' limits, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most lines in a cart.
    pub cart_lines_max: usize,
    /// Most units on one cart line.
    pub line_quantity_max: u32,
    /// How long a checkout's reservation holds before the order expires.
    pub reservation_ttl_ms: i64,
    /// How long an idempotency key's outcome is kept.
    pub idempotency_ttl_ms: i64,
    /// The currency of a cart created without one.
    pub default_currency: Currency,
    /// How long an open cart lives without a change before it is dropped (abandoned),
    /// and how long a checked-out cart is kept after its checkout.
    pub cart_ttl_ms: i64,
    /// The most idempotency records kept; past it the oldest are forgotten before their
    /// time to live, so a flood of keyed requests cannot take unbounded memory.
    pub idempotency_records_max: usize,
    /// How long after an order is fulfilled its customer may ask to return units.
    pub return_window_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cart_lines_max: 100,
            line_quantity_max: 1000,
            reservation_ttl_ms: 15 * 60 * 1000,
            idempotency_ttl_ms: 24 * 60 * 60 * 1000,
            default_currency: Currency::USD,
            cart_ttl_ms: 30 * 24 * 60 * 60 * 1000,
            idempotency_records_max: 1_000_000,
            return_window_ms: 30 * 24 * 60 * 60 * 1000,
        }
    }
}

/// The inputs of a decision besides state and command.
pub struct Ctx<'a> {
    /// The time the command is applied at.
    pub now: TimestampMs,
    /// Where new random ids come from.
    pub ids: &'a mut dyn IdSource,
    /// The limits.
    pub limits: &'a Limits,
}

/// The events a command decided on, and what its reply will be read from once they
/// are applied. Made only inside the engine, so [`Request`] cannot be implemented
/// outside it.
#[doc(hidden)]
pub struct Decision<O> {
    pub(crate) events: Vec<Event>,
    pub(crate) outcome: O,
}

impl<O> Decision<O> {
    /// A decision with no events: the reply only.
    pub(crate) fn nothing(outcome: O) -> Result<Decision<O>> {
        Ok(Decision { events: Vec::new(), outcome })
    }

    /// One event.
    pub(crate) fn one(outcome: O, event: impl Into<Event>) -> Result<Decision<O>> {
        Ok(Decision { events: vec![event.into()], outcome })
    }

    /// Several events.
    pub(crate) fn many(outcome: O, events: Vec<Event>) -> Result<Decision<O>> {
        Ok(Decision { events, outcome })
    }
}

/// A command: [`crate::Engine::send`] takes any of these and returns its `Output`.
///
/// `decide` reads the state and refuses with a typed error or returns the events that
/// carry the command out; it changes nothing, so a refused command changes nothing.
/// `reply` runs after the events are applied and reads the reply from the state.
pub trait Request: Send + 'static {
    /// What a success gives back.
    type Output: Send + 'static;
    /// What `decide` tells `reply` (an id to look up, a count, a replayed value).
    #[doc(hidden)]
    type Outcome;
    /// The events of this command, or why it is refused.
    #[doc(hidden)]
    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Self::Outcome>>;
    /// The reply, read once the events are applied.
    #[doc(hidden)]
    fn reply(state: &State, outcome: Self::Outcome) -> Self::Output;
    /// An event about the reply itself (a keyed request's recorded answer), applied and
    /// logged in the same entry as the command's events.
    #[doc(hidden)]
    fn after(&self, _state: &State, _output: &Self::Output, _ctx: &Ctx<'_>) -> Option<Event> {
        None
    }
}

/// What `reply` says when an entity its own command just wrote is missing: a broken
/// invariant, which the sequencer turns into a fail-stop.
pub(crate) const APPLIED: &str = "an applied command's entity exists";

pub(crate) fn not_found(kind: EntityKind, id: &str) -> EngineError {
    EngineError::NotFound { kind, id: id.chars().take(80).collect() }
}

pub(crate) fn check_version(expected: Option<u64>, current: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != current => {
            Err(EngineError::VersionMismatch { expected, current })
        }
        _ => Ok(()),
    }
}

/// The collected field errors, if any, as one refusal.
pub(crate) fn done(checks: Checks) -> Result<()> {
    if checks.is_ok() {
        Ok(())
    } else {
        Err(EngineError::Validation(checks.errors))
    }
}

/// The refusal of an amount past what the engine's money type holds.
pub(crate) fn too_large(field: &str) -> EngineError {
    EngineError::field(field, "the total exceeds the largest amount of money the engine handles")
}

impl From<Vec<FieldError>> for EngineError {
    fn from(errors: Vec<FieldError>) -> EngineError {
        EngineError::Validation(errors)
    }
}
