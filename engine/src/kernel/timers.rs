//! The sequencer's clock: `ExpireDue` runs every domain's timers (reservations that
//! ran out, records past their time to live), at most
//! [`EXPIRIES_PER_COMMAND_MAX`] items of each kind per command so one command stays
//! short.

use crate::domains::{State, DOMAINS};
use crate::error::Result;
use crate::kernel::handler::{Ctx, Decision, Limits, Request};
use crate::types::TimestampMs;

/// How many items of one kind (orders, idempotency records, tokens) one [`ExpireDue`]
/// handles at most; the rest wait for the next tick.
pub const EXPIRIES_PER_COMMAND_MAX: usize = 1024;

/// Expires every unpaid order whose reservation time has passed, drops open carts left
/// unchanged past their time to live, forgets idempotency records past theirs and purges
/// expired refresh tokens (at most
/// [`EXPIRIES_PER_COMMAND_MAX`] of each at once). The engine sends this itself on a
/// timer; tests with a manual clock send it directly. Its output is the number of
/// reservations released.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExpireDue;

impl Request for ExpireDue {
    type Output = usize;
    type Outcome = usize;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<usize>> {
        let mut events = Vec::new();
        let mut released = 0;
        for timers in DOMAINS.iter().filter_map(|d| d.timers.as_ref()) {
            released += (timers.expire)(state, ctx, &mut events);
        }
        Decision::many(released, events)
    }

    fn reply(_: &State, released: usize) -> usize {
        released
    }
}

/// Whether any domain has something due at `now`.
pub(crate) fn due(state: &State, now: TimestampMs, limits: &Limits) -> bool {
    DOMAINS.iter().filter_map(|d| d.timers.as_ref()).any(|t| (t.due)(state, now, limits))
}
