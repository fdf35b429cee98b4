//! Reviews' commands: write or edit a review, vote, moderate, settings.

use std::sync::Arc;

use super::{Moderation, Review, ReviewEvent, ReviewSettings, ReviewStatus};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{check_version, done, not_found, Ctx, Decision, Request, APPLIED};
use crate::orders::OrderFilter;
use crate::types::*;
use crate::validate::Checks;

/// The most words that hold a review.
pub const HOLD_WORDS_MAX: usize = 100;

/// The longest review body, in characters.
pub const REVIEW_BODY_MAX: usize = 5_000;

/// Writes a customer's review of a product, or edits the one they wrote: one per
/// customer and product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitReview {
    /// The product.
    pub product_id: String,
    /// The author (a customer account).
    pub customer_id: CustomerId,
    /// 1 to 5 stars.
    pub rating: i64,
    /// 1–200 characters, one line.
    pub title: String,
    /// Up to [`REVIEW_BODY_MAX`] characters.
    pub body: String,
}

/// A customer finds a published review helpful (once; a second vote changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteReview {
    /// The review.
    pub review_id: String,
    /// The voter, not its author.
    pub customer_id: CustomerId,
}

/// Staff publish a review, or reject it with a reason.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModerateReview {
    /// The review.
    pub review_id: String,
    /// Publish (`true`) or reject.
    pub publish: bool,
    /// Why it is rejected (1–500 characters; required to reject; not kept when
    /// publishing).
    pub reason: Option<String>,
    /// Refuse unless this is the current version (bumped when the author edits it or
    /// staff moderate it; votes leave it).
    pub expected_version: Option<u64>,
}

/// Sets how new and edited reviews are moderated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetReviewSettings {
    /// Every new or edited review waits for staff.
    pub premoderation: bool,
    /// Words that hold a review for staff (at most [`HOLD_WORDS_MAX`], each 1–50
    /// letters or digits).
    pub hold_words: Vec<String>,
}

/// The words of `text`, lower-cased: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// Whether the author paid for the product: a paid order of theirs contains it.
fn bought(state: &State, customer: CustomerId, product: ProductId) -> bool {
    let filter = OrderFilter { customer_id: Some(customer), status: None };
    let mut after = None;
    loop {
        let page = state.orders(&filter, after, 100);
        let paid_for = page.items.iter().any(|order| {
            order.status.was_paid() && order.lines.iter().any(|l| l.product_id == product)
        });
        match (paid_for, page.next) {
            (true, _) => return true,
            (false, Some(next)) => after = next.parse().ok(),
            (false, None) => return false,
        }
        if after.is_none() {
            return false;
        }
    }
}

impl Request for SubmitReview {
    type Output = Arc<Review>;
    type Outcome = ReviewId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ReviewId>> {
        let c = self;
        let mut checks = Checks::default();
        if !(1..=5).contains(&c.rating) {
            checks.fail("rating", "must be 1 to 5");
        }
        checks.text("title", &c.title, 1, 200, false);
        checks.text("body", &c.body, 0, REVIEW_BODY_MAX, true);
        done(checks)?;
        let product = ProductId::parse(&c.product_id)
            .and_then(|id| state.product(&id))
            .ok_or_else(|| not_found(EntityKind::Product, &c.product_id))?;
        let author = state
            .customer(&c.customer_id)
            .ok_or_else(|| not_found(EntityKind::Customer, c.customer_id.text().as_str()))?;
        let settings = state.review_settings();
        let held = words(&c.title)
            .chain(words(&c.body))
            .find(|w| settings.hold_words.iter().any(|h| h == w));
        let before = state.review_by(&product.id, &c.customer_id);
        let rejected = before.as_ref().is_some_and(|r| r.status == ReviewStatus::Rejected);
        let (status, reason) = match held {
            Some(word) => (ReviewStatus::Pending, Some(format!("held: contains \"{word}\""))),
            // Staff turned it down: its edit is theirs to judge again.
            None if rejected => (ReviewStatus::Pending, Some("edited after a rejection".into())),
            None if settings.premoderation => (ReviewStatus::Pending, None),
            None => (ReviewStatus::Published, None),
        };
        let review = match before {
            Some(before) => Review {
                rating: c.rating as u8,
                title: c.title.clone(),
                body: c.body.clone(),
                status,
                reason,
                verified_purchase: before.verified_purchase
                    || bought(state, c.customer_id, product.id),
                author: author.name.clone(),
                updated_at: ctx.now,
                version: before.version + 1,
                ..(*before).clone()
            },
            None => {
                // A seeded id source repeats after a reopen: an id no review has.
                let id = loop {
                    let id = ReviewId::from_random(ctx.ids.random_u128());
                    if state.review(&id).is_none() {
                        break id;
                    }
                };
                Review {
                    id,
                    seq: state.reviews.review_seq.next(),
                    product_id: product.id,
                    customer_id: c.customer_id,
                    author: author.name.clone(),
                    rating: c.rating as u8,
                    title: c.title.clone(),
                    body: c.body.clone(),
                    status,
                    reason,
                    verified_purchase: bought(state, c.customer_id, product.id),
                    helpful: 0,
                    created_at: ctx.now,
                    updated_at: ctx.now,
                    version: 1,
                }
            }
        };
        let id = review.id;
        Decision::one(id, ReviewEvent::Saved(Box::new(review)))
    }

    fn reply(state: &State, id: ReviewId) -> Arc<Review> {
        state.review(&id).expect(APPLIED)
    }
}

fn review_named(state: &State, id: &str) -> Result<Arc<Review>> {
    ReviewId::parse(id)
        .and_then(|id| state.review(&id))
        .ok_or_else(|| not_found(EntityKind::Review, id))
}

impl Request for VoteReview {
    type Output = Arc<Review>;
    type Outcome = ReviewId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<ReviewId>> {
        let review = review_named(state, &self.review_id)?;
        // Only what shoppers can see can be voted on.
        if review.status != ReviewStatus::Published {
            return Err(not_found(EntityKind::Review, &self.review_id));
        }
        if review.customer_id == self.customer_id {
            return Err(EngineError::InvalidState(
                "authors do not vote for their own reviews".into(),
            ));
        }
        if state.has_voted(&review.id, &self.customer_id) {
            return Decision::nothing(review.id);
        }
        let event = ReviewEvent::Voted { review_id: review.id, customer_id: self.customer_id };
        Decision::one(review.id, event)
    }

    fn reply(state: &State, id: ReviewId) -> Arc<Review> {
        state.review(&id).expect(APPLIED)
    }
}

impl Request for ModerateReview {
    type Output = Arc<Review>;
    type Outcome = ReviewId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<ReviewId>> {
        let c = self;
        let mut checks = Checks::default();
        match (&c.reason, c.publish) {
            (Some(reason), _) => checks.text("reason", reason, 1, 500, false),
            (None, false) => checks.fail("reason", "a rejection needs a reason"),
            (None, true) => {}
        }
        done(checks)?;
        let review = review_named(state, &c.review_id)?;
        check_version(c.expected_version, review.version)?;
        let status = if c.publish { ReviewStatus::Published } else { ReviewStatus::Rejected };
        // A published review shows no reason: a note given with it is not kept.
        let reason = if c.publish { None } else { c.reason.clone() };
        if review.status == status && review.reason == reason {
            return Decision::nothing(review.id);
        }
        let moderation =
            Moderation { review_id: review.id, product_id: review.product_id, status, reason };
        Decision::one(review.id, ReviewEvent::Moderated(Box::new(moderation)))
    }

    fn reply(state: &State, id: ReviewId) -> Arc<Review> {
        state.review(&id).expect(APPLIED)
    }
}

impl Request for SetReviewSettings {
    type Output = Arc<ReviewSettings>;
    type Outcome = ();

    fn decide(&self, _state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let mut checks = Checks::default();
        if self.hold_words.len() > HOLD_WORDS_MAX {
            checks.fail("hold_words", format!("at most {HOLD_WORDS_MAX}"));
        }
        for (i, word) in self.hold_words.iter().take(HOLD_WORDS_MAX).enumerate() {
            let chars = word.chars().count();
            if !(1..=50).contains(&chars) || !word.chars().all(char::is_alphanumeric) {
                checks.fail(format!("hold_words[{i}]"), "must be 1 to 50 letters or digits");
            }
        }
        done(checks)?;
        let mut hold_words: Vec<String> =
            self.hold_words.iter().map(|w| w.to_lowercase()).collect();
        hold_words.sort();
        hold_words.dedup();
        let settings = ReviewSettings { premoderation: self.premoderation, hold_words };
        Decision::one((), ReviewEvent::SettingsSet(Box::new(settings)))
    }

    fn reply(state: &State, _: ()) -> Arc<ReviewSettings> {
        state.review_settings()
    }
}
