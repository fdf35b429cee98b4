//! Product reviews: written and voted on by customers, moderated by staff (catalog:write).

use std::sync::Arc;

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use super::catalog::visible_product;
use super::{cursor, idempotent_send, limit, status_filter};
use crate::auth::{perm, Principal};
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

/// The signed-in customer account, or why the caller may not write reviews.
fn customer(call: &Call, what: &str) -> Result<CustomerId, Problem> {
    match &call.principal {
        Principal::User { id, role: Role::Customer } => Ok(*id),
        Principal::Anonymous => {
            Err(Problem::unauthenticated(format!("sign in as a customer to {what}")))
        }
        _ => Err(Problem::forbidden(format!("only customer accounts {what}"))),
    }
}

/// The review named by the path: a published one for anyone; staff and its author
/// see it whatever its status.
fn review(call: &Call) -> Result<Arc<Review>, Problem> {
    let id = call.param("id");
    let mine =
        |r: &Review| matches!(call.principal, Principal::User { id, .. } if id == r.customer_id);
    ReviewId::parse(id)
        .and_then(|id| call.app.engine.state().review(&id))
        .filter(|r| {
            r.status == ReviewStatus::Published
                || call.principal.can(perm::CATALOG_WRITE)
                || mine(r)
        })
        .ok_or_else(|| Problem::not_found(format!("review {id} does not exist")))
}

fn review_out(review: &Review) -> Out {
    Out::ok(&ReviewView::from(review)).versioned(review.version)
}

/// `POST /v1/products/{id}/reviews`: 201 with a new review, 200 when it edits the
/// caller's review of the product.
pub async fn submit(call: Call) -> Result<Out, Problem> {
    let customer_id = customer(&call, "write reviews")?;
    let product = visible_product(&call)?;
    let body: ReviewJson = call.json()?;
    let submit = async {
        Ok(SubmitReview {
            product_id: product.id.to_string(),
            customer_id,
            rating: body.rating,
            title: body.title,
            body: body.body,
        })
    };
    idempotent_send(&call, submit, |_, review: &Arc<Review>| {
        let view = ReviewView::from(&**review);
        let out = match review.version {
            1 => Out::created(&view, format!("/v1/reviews/{}", review.id)),
            _ => Out::ok(&view),
        };
        out.versioned(review.version)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductReviewsQuery {
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ProductReviews<'a> {
    rating: RatingView,
    data: Vec<ReviewView<'a>>,
    next_cursor: Option<String>,
}

/// `GET /v1/products/{id}/reviews`: published reviews, with the product's rating.
pub async fn of_product(call: Call) -> Result<Out, Problem> {
    let product = visible_product(&call)?;
    let query: ProductReviewsQuery = call.query()?;
    let sort = match query.sort.as_deref() {
        None => ReviewSort::Newest,
        Some(name) => ReviewSort::parse(name).ok_or_else(|| {
            Problem::malformed("sort must be newest, helpful, rating_desc or rating_asc")
        })?,
    };
    let after = cursor(query.cursor.as_deref(), |c| {
        let (first, seq) = c.split_once('.')?;
        Some((first.parse().ok()?, seq.parse().ok()?))
    })?;
    let state = call.app.engine.state();
    let page = state.product_reviews(&product.id, sort, after, limit(query.limit.as_deref())?);
    let body = ProductReviews {
        rating: RatingView::from(state.rating(&product.id)),
        data: page.items.iter().map(|r| ReviewView::from(&**r)).collect(),
        next_cursor: page.next,
    };
    Ok(Out::ok(&body).hashed())
}

/// `GET /v1/reviews/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    Ok(review_out(&*review(&call)?))
}

/// `POST /v1/reviews/{id}/votes`: the caller found it helpful (once).
pub async fn vote(call: Call) -> Result<Out, Problem> {
    let customer_id = customer(&call, "vote on reviews")?;
    let review = review(&call)?;
    let vote = async { Ok(VoteReview { review_id: review.id.to_string(), customer_id }) };
    idempotent_send(&call, vote, |_, review: &Arc<Review>| review_out(review)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/reviews`: reviews by status, oldest first (`pending` by default: the
/// moderation queue).
pub async fn list(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let query: QueueQuery = call.query()?;
    let status = status_filter(
        query.status.as_deref(),
        "pending, published or rejected",
        ReviewStatus::parse,
    )?
    .unwrap_or(ReviewStatus::Pending);
    let after = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let state = call.app.engine.state();
    let page = state.reviews_with_status(status, after, limit(query.limit.as_deref())?);
    let body = List {
        data: page.items.iter().map(|r| ReviewView::from(&**r)).collect(),
        next_cursor: page.next,
    };
    Ok(Out::ok(&body))
}

/// `POST /v1/reviews/{id}/publish` and `/reject`.
async fn moderate(call: Call, publish: bool) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let review = review(&call)?;
    let body: ModerationJson = if publish { ModerationJson::default() } else { call.json()? };
    // The version alone: votes change the body (its helpful count), not the review.
    let expected_version = call.if_match(|| None)?;
    let moderate = async {
        Ok(ModerateReview {
            review_id: review.id.to_string(),
            publish,
            reason: body.reason,
            expected_version,
        })
    };
    idempotent_send(&call, moderate, |_, review: &Arc<Review>| review_out(review)).await
}

/// `POST /v1/reviews/{id}/publish`.
pub async fn publish(call: Call) -> Result<Out, Problem> {
    moderate(call, true).await
}

/// `POST /v1/reviews/{id}/reject`.
pub async fn reject(call: Call) -> Result<Out, Problem> {
    moderate(call, false).await
}

/// `GET /v1/admin/review-settings`.
pub async fn get_settings(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    Ok(Out::ok(&ReviewSettingsJson::from(&*call.app.engine.state().review_settings())))
}

/// `PUT /v1/admin/review-settings`.
pub async fn set_settings(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: ReviewSettingsJson = call.json()?;
    let command =
        SetReviewSettings { premoderation: body.premoderation, hold_words: body.hold_words };
    let settings = call.app.engine.send(command).await?;
    Ok(Out::ok(&ReviewSettingsJson::from(&*settings)))
}
