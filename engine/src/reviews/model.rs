//! Reviews' entities: a review, a product's rating, the moderation settings.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// Where a review is in moderation.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewStatus {
    /// Waiting for staff: shoppers do not see it.
    Pending,
    /// Shown on the product and counted in its rating.
    Published,
    /// Turned down by staff, with a reason.
    Rejected,
}

impl ReviewStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Published => "published",
            ReviewStatus::Rejected => "rejected",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<ReviewStatus> {
        match name {
            "pending" => Some(ReviewStatus::Pending),
            "published" => Some(ReviewStatus::Published),
            "rejected" => Some(ReviewStatus::Rejected),
            _ => None,
        }
    }
}

/// A customer's review of a product: one per customer and product (a second one edits
/// the first).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// The id.
    pub id: ReviewId,
    /// Its order among all reviews, for "newest first".
    pub seq: u64,
    /// The product.
    pub product_id: ProductId,
    /// The author.
    pub customer_id: CustomerId,
    /// The author's display name when it was written.
    pub author: String,
    /// 1 to 5 stars.
    pub rating: u8,
    /// 1–200 characters.
    pub title: String,
    /// Up to 5,000 characters.
    pub body: String,
    /// Where it is in moderation.
    pub status: ReviewStatus,
    /// Why it was held or rejected.
    pub reason: Option<String>,
    /// The author had a paid order containing the product when it was written.
    pub verified_purchase: bool,
    /// Customers who found it helpful.
    pub helpful: u32,
    /// When it was first written.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

/// A product's rating over its published reviews, in exact integers: `stars[n - 1]`
/// reviews gave `n` stars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StarCounts {
    /// Published reviews per star count, one star first.
    pub stars: [u32; 5],
}

impl StarCounts {
    /// Published reviews.
    pub fn count(&self) -> u32 {
        self.stars.iter().sum()
    }

    /// The sum of their stars.
    pub fn sum(&self) -> u64 {
        self.stars.iter().zip(1u64..).map(|(&n, stars)| u64::from(n) * stars).sum()
    }

    /// The average to two decimals (the sum over the count, rounded half up); 0
    /// without reviews.
    pub fn average(&self) -> f64 {
        match u64::from(self.count()) {
            0 => 0.0,
            count => ((self.sum() * 200 + count) / (2 * count)) as f64 / 100.0,
        }
    }
}

/// How new and edited reviews are moderated.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReviewSettings {
    /// Every new or edited review waits for staff; otherwise it is published at once
    /// unless it contains a held word.
    pub premoderation: bool,
    /// Words (matched case-insensitively, as whole words) that hold a review for staff.
    pub hold_words: Vec<String>,
}

/// A customer's helpful vote on a review.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReviewVote {
    /// The review.
    pub review_id: ReviewId,
    /// The voter.
    pub customer_id: CustomerId,
}
