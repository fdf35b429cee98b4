//! Reviews and ratings: one review per customer and product (a second one edits the
//! first), marked as a verified purchase when its author had paid for the product;
//! moderated (published at once unless premoderation is on or it contains a held word,
//! else waiting in the staff's queue; staff publish or reject with a reason); helpful
//! votes, one per customer; and each product's rating over its published reviews in
//! exact integer counts per star, kept as reviews are published, edited or rejected.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::SkipSet;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::catalog::Page;
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, Table,
};
use crate::types::*;

const REVIEWS: &str = "reviews";
const REVIEW_VOTES: &str = "review_votes";
const REVIEW_SETTINGS: &str = "review_settings";
const SETTINGS_KEY: &[u8] = b"settings";

persist!(Review, REVIEWS, |r| r.id.text().as_str().as_bytes().to_vec());
persist!(ReviewVote, REVIEW_VOTES, |v| vote_key(&v.review_id, &v.customer_id));
persist!(ReviewSettings, REVIEW_SETTINGS, |_settings| SETTINGS_KEY.to_vec());

fn vote_key(review: &ReviewId, customer: &CustomerId) -> Vec<u8> {
    format!("{}/{}", review.text(), customer.text()).into_bytes()
}

/// The reviews in memory, with their indexes.
#[derive(Debug)]
pub(crate) struct Tables {
    reviews: IdIndex<ReviewId, Arc<Review>>,
    /// Each customer's review of each product.
    by_author: IdIndex<(ProductId, CustomerId), ReviewId>,
    /// `(product, seq, id)`: each product's reviews (every status), oldest first.
    by_product: SkipSet<(ProductId, u64, ReviewId)>,
    /// `(status, seq, id)`: the moderation queue and the listings by status.
    by_status: SkipSet<(u8, u64, ReviewId)>,
    votes: IdIndex<(ReviewId, CustomerId), ()>,
    /// Over published reviews only.
    ratings: IdIndex<ProductId, StarCounts>,
    settings: Index<u8, Arc<ReviewSettings>>,
    review_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            reviews: IdIndex::default(),
            by_author: IdIndex::default(),
            by_product: SkipSet::new(),
            by_status: SkipSet::new(),
            votes: IdIndex::default(),
            ratings: IdIndex::default(),
            settings: Index::default(),
            review_seq: Counter::new("review"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "reviews",
    tables: &[
        Table {
            name: REVIEWS,
            rows: |s, f| s.reviews.reviews.entries().iter().for_each(|(_, r)| f(&**r)),
            load: |state, bytes| {
                let review: Review = decode_row(bytes, "review")?;
                if !(1..=5).contains(&review.rating) {
                    return Err(EngineError::IncompatibleData(format!(
                        "review {} has {} stars",
                        review.id, review.rating
                    )));
                }
                index(state, None, Arc::new(review));
                Ok(())
            },
            check_v1: check_v1::<Review>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: REVIEW_VOTES,
            rows: |s, f| {
                s.reviews.votes.entries().into_iter().for_each(|((review_id, customer_id), ())| {
                    f(&ReviewVote { review_id, customer_id })
                })
            },
            load: |state, bytes| {
                let vote: ReviewVote = decode_row(bytes, "review vote")?;
                state.reviews.votes.insert((vote.review_id, vote.customer_id), ());
                Ok(())
            },
            check_v1: check_v1::<ReviewVote>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: REVIEW_SETTINGS,
            rows: |s, f| {
                if let Some(settings) = s.reviews.settings.get(&0) {
                    f(&*settings)
                }
            },
            load: |state, bytes| {
                let settings: ReviewSettings = decode_row(bytes, "review settings")?;
                state.reviews.settings.insert(0, Arc::new(settings));
                Ok(())
            },
            check_v1: check_v1::<ReviewSettings>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.reviews.review_seq);
    },
    timers: None,
    verify: Some(check_votes),
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// Reviews' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum ReviewEvent {
        /// A review was written or edited: its words are the new facts.
        Saved(Box<Review>),
        /// A customer found a review helpful.
        Voted {
            review_id: ReviewId,
            customer_id: CustomerId,
        },
        /// Staff published or rejected a review.
        Moderated(Box<Moderation>),
        SettingsSet(Box<ReviewSettings>),
    }

    /// A moderation decision.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct Moderation {
        pub review_id: ReviewId,
        /// The review's product (for readers of the log).
        pub product_id: ProductId,
        pub status: ReviewStatus,
        pub reason: Option<String>,
    }
}
pub use event::{Moderation, ReviewEvent};

pub(crate) fn apply(state: &State, event: &ReviewEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    let tables = &state.reviews;
    match event {
        ReviewEvent::Saved(review) => {
            let before = tables.reviews.get(&review.id);
            if before.is_none() {
                let seq = tables.review_seq.bump();
                debug_assert_eq!(seq, review.seq, "decide numbers new reviews");
            }
            put(state, before, (**review).clone(), rows);
        }
        ReviewEvent::Voted { review_id, customer_id } => {
            tables.votes.insert((*review_id, *customer_id), ());
            rows.push(Row::put(Arc::new(ReviewVote {
                review_id: *review_id,
                customer_id: *customer_id,
            })));
            // Not a change of the review's words or status: its version stays, so a
            // moderator's If-Match survives the votes that come in meanwhile.
            let before = tables.reviews.get(review_id).expect("decide checked the review");
            let mut review = (*before).clone();
            review.helpful += 1;
            put(state, Some(before), review, rows);
        }
        ReviewEvent::Moderated(decision) => {
            let before =
                tables.reviews.get(&decision.review_id).expect("decide checked the review");
            let mut review = (*before).clone();
            review.status = decision.status;
            review.reason.clone_from(&decision.reason);
            review.updated_at = at;
            review.version += 1;
            put(state, Some(before), review, rows);
        }
        ReviewEvent::SettingsSet(settings) => {
            let settings = Arc::new((**settings).clone());
            tables.settings.insert(0, settings.clone());
            rows.push(Row::put(settings));
        }
    }
}

/// Publishes `review` in place of `before` (if it had one) with its row.
fn put(state: &State, before: Option<Arc<Review>>, review: Review, rows: &mut Vec<Row>) {
    let review = Arc::new(review);
    index(state, before, review.clone());
    rows.push(Row::put(review));
}

/// Indexes `review` in place of `before`: status index and the product's rating.
fn index(state: &State, before: Option<Arc<Review>>, review: Arc<Review>) {
    let tables = &state.reviews;
    match &before {
        Some(before) => {
            tables.by_status.remove(&(status_rank(before.status), before.seq, before.id));
            if before.status == ReviewStatus::Published {
                rate(state, before.product_id, before.rating, false);
            }
        }
        None => {
            tables.by_author.insert((review.product_id, review.customer_id), review.id);
            tables.by_product.insert((review.product_id, review.seq, review.id));
        }
    }
    tables.by_status.insert((status_rank(review.status), review.seq, review.id));
    if review.status == ReviewStatus::Published {
        rate(state, review.product_id, review.rating, true);
    }
    tables.reviews.insert(review.id, review);
}

fn status_rank(status: ReviewStatus) -> u8 {
    match status {
        ReviewStatus::Pending => 0,
        ReviewStatus::Published => 1,
        ReviewStatus::Rejected => 2,
    }
}

/// Counts a published review's stars in (or out of) its product's rating.
fn rate(state: &State, product: ProductId, stars: u8, add: bool) {
    let mut rating = state.reviews.ratings.get(&product).unwrap_or_default();
    let slot = &mut rating.stars[usize::from(stars - 1)];
    *slot = if add { *slot + 1 } else { *slot - 1 };
    state.reviews.ratings.insert(product, rating);
}

/// Every vote is on a review that exists, and each review's helpful count is its votes.
fn check_votes(state: &State) -> Result<()> {
    let mut counted: std::collections::HashMap<ReviewId, u32> = Default::default();
    for ((review_id, customer_id), ()) in state.reviews.votes.entries() {
        if state.review(&review_id).is_none() {
            return Err(EngineError::IncompatibleData(format!(
                "{customer_id} voted for review {review_id}, which does not exist"
            )));
        }
        *counted.entry(review_id).or_default() += 1;
    }
    for (id, review) in state.reviews.reviews.entries() {
        let votes = counted.get(&id).copied().unwrap_or(0);
        if review.helpful != votes {
            return Err(EngineError::IncompatibleData(format!(
                "review {id} counts {} helpful votes but {votes} are recorded",
                review.helpful
            )));
        }
    }
    Ok(())
}

/// The orders of a product's published reviews.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReviewSort {
    /// The newest first.
    #[default]
    Newest,
    /// The most helpful first, then the newest.
    MostHelpful,
    /// The most stars first, then the newest.
    HighestRating,
    /// The fewest stars first, then the newest.
    LowestRating,
}

impl ReviewSort {
    /// Parses a wire name: `newest`, `helpful`, `rating_desc`, `rating_asc`.
    pub fn parse(name: &str) -> Option<ReviewSort> {
        match name {
            "newest" => Some(ReviewSort::Newest),
            "helpful" => Some(ReviewSort::MostHelpful),
            "rating_desc" => Some(ReviewSort::HighestRating),
            "rating_asc" => Some(ReviewSort::LowestRating),
            _ => None,
        }
    }

    /// A review's place: listings run from the greatest key down.
    fn key(self, review: &Review) -> (i64, u64) {
        let first = match self {
            ReviewSort::Newest => 0,
            ReviewSort::MostHelpful => i64::from(review.helpful),
            ReviewSort::HighestRating => i64::from(review.rating),
            ReviewSort::LowestRating => -i64::from(review.rating),
        };
        (first, review.seq)
    }
}

/// Reviews' reads.
impl State {
    /// A review by id, whatever its status.
    pub fn review(&self, id: &ReviewId) -> Option<Arc<Review>> {
        self.reviews.reviews.get(id)
    }

    /// A customer's review of a product.
    pub fn review_by(&self, product: &ProductId, customer: &CustomerId) -> Option<Arc<Review>> {
        self.reviews.by_author.get(&(*product, *customer)).and_then(|id| self.review(&id))
    }

    /// A product's published reviews in `sort` order, after cursor `after` (a page's
    /// `next`: `KEY.SEQ`).
    pub fn product_reviews(
        &self,
        product: &ProductId,
        sort: ReviewSort,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Page<Arc<Review>> {
        let cursor = |r: &Arc<Review>| {
            let (first, seq) = sort.key(r);
            format!("{first}.{seq}")
        };
        let low = (*product, 0, ReviewId::from_random(0));
        let high = (*product, u64::MAX, ReviewId::from_random(u128::MAX));
        let newest_first = self
            .reviews
            .by_product
            .range(low..=high)
            .rev()
            .filter_map(|e| self.review(&e.value().2))
            .filter(|r| r.status == ReviewStatus::Published)
            .filter(move |r| after.is_none_or(|after| sort.key(r) < after));
        if sort == ReviewSort::Newest {
            // The index's own order: a page reads only as far as it reaches.
            return Page::of(newest_first, limit, cursor);
        }
        let mut published: Vec<Arc<Review>> = newest_first.collect();
        published.sort_by_key(|r| std::cmp::Reverse(sort.key(r)));
        Page::of(published.into_iter(), limit, cursor)
    }

    /// Reviews with `status`, oldest first (the moderation queue for `Pending`), after
    /// position `after` (a page's `next`).
    pub fn reviews_with_status(
        &self,
        status: ReviewStatus,
        after: Option<u64>,
        limit: usize,
    ) -> Page<Arc<Review>> {
        let rank = status_rank(status);
        let from = (rank, after.map_or(0, |a| a.saturating_add(1)), ReviewId::from_random(0));
        let items = self
            .reviews
            .by_status
            .range(from..)
            .take_while(|e| e.value().0 == rank)
            .filter_map(|e| self.review(&e.value().2));
        Page::of(items, limit, |r| r.seq.to_string())
    }

    /// A product's rating over its published reviews.
    pub fn rating(&self, product: &ProductId) -> StarCounts {
        self.reviews.ratings.get(product).unwrap_or_default()
    }

    /// How new and edited reviews are moderated.
    pub fn review_settings(&self) -> Arc<ReviewSettings> {
        self.reviews.settings.get(&0).unwrap_or_default()
    }

    /// Whether `customer` found `review` helpful.
    pub fn has_voted(&self, review: &ReviewId, customer: &CustomerId) -> bool {
        self.reviews.votes.contains_key(&(*review, *customer))
    }
}
