//! Recommendations: a product's bought-together and also-bought lists, the trending
//! products, and a signed-in customer's own list. Answered from the recommender's
//! memory (`emporium_engine::Recommendations`), folded from the log; each list holds
//! active products in stock only.

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use super::accounts::me_id;
use super::catalog::visible_product;
use super::limit;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

#[derive(Serialize)]
struct RecommendationView<'a> {
    product: ProductView<'a>,
    basis: &'static str,
    score: f64,
}

#[derive(Serialize)]
struct RecommendationList<'a> {
    data: Vec<RecommendationView<'a>>,
}

fn list_out(state: &State, list: &[Recommendation]) -> Out {
    let data = list
        .iter()
        .map(|r| RecommendationView {
            product: ProductView::new(&r.product, state.rating(&r.product.id)),
            basis: r.basis.as_str(),
            // Decayed counts to three decimals: the rest is noise to a client.
            score: (r.score * 1000.0).round() / 1000.0,
        })
        .collect();
    Out::ok(&RecommendationList { data }).hashed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductQuery {
    kind: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/products/{id}/recommendations`: bought together (the default) or also
/// bought.
pub async fn of_product(call: Call) -> Result<Out, Problem> {
    let product = visible_product(&call)?;
    let query: ProductQuery = call.query()?;
    let limit = limit(query.limit.as_deref())?;
    let app = &call.app;
    let state = app.engine.state();
    let list = match query.kind.as_deref() {
        None | Some("bought_together") => {
            app.recommendations.bought_together(state, &product.id, limit)
        }
        Some("also_bought") => app.recommendations.also_bought(state, &product.id, limit),
        Some(_) => return Err(Problem::malformed("kind must be bought_together or also_bought")),
    };
    Ok(list_out(state, &list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<String>,
}

/// `GET /v1/customers/me/recommendations`.
pub async fn mine(call: Call) -> Result<Out, Problem> {
    let customer = me_id(&call)?;
    let query: LimitQuery = call.query()?;
    let limit = limit(query.limit.as_deref())?;
    let state = call.app.engine.state();
    Ok(list_out(state, &call.app.recommendations.for_customer(state, &customer, limit)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrendingQuery {
    category_id: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/recommendations/trending`.
pub async fn trending(call: Call) -> Result<Out, Problem> {
    let query: TrendingQuery = call.query()?;
    let category = match query.category_id.as_deref() {
        None => None,
        Some(id) => Some(
            CategoryId::parse(id)
                .ok_or_else(|| Problem::malformed("category_id is not a category id"))?,
        ),
    };
    let limit = limit(query.limit.as_deref())?;
    let state = call.app.engine.state();
    Ok(list_out(state, &call.app.recommendations.trending(state, category.as_ref(), limit)))
}
