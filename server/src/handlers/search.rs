//! Product search and suggestions, from the engine's search index.

use std::time::Instant;

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use super::limit;
use crate::http::{Call, Out};
use crate::problem::Problem;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    category_id: Option<String>,
    brand: Option<String>,
    price_min: Option<String>,
    price_max: Option<String>,
    in_stock: Option<String>,
    attributes: Option<String>,
    sort: Option<String>,
    facets: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuggestParams {
    q: Option<String>,
    limit: Option<String>,
}

/// A search page's cursor: the offset of its first hit, which no other list uses.
const CURSOR_PREFIX: &str = "s";

fn price(value: Option<&str>, name: &str) -> Result<Option<i64>, Problem> {
    value
        .map(|v| {
            v.parse::<i64>().ok().filter(|p| (0..=MONEY_AMOUNT_MAX).contains(p)).ok_or_else(|| {
                Problem::malformed(format!("{name} must be a whole number of minor units"))
            })
        })
        .transpose()
}

fn parse_query(params: SearchParams) -> Result<SearchQuery, Problem> {
    let sort = match params.sort.as_deref() {
        None | Some("relevance") => Sort::Relevance,
        Some("price_asc") => Sort::PriceAsc,
        Some("price_desc") => Sort::PriceDesc,
        Some("rating") => Sort::Rating,
        Some("newest") => Sort::Newest,
        Some(_) => {
            return Err(Problem::malformed(
                "sort must be relevance, price_asc, price_desc, rating or newest",
            ))
        }
    };
    let mut facets = FacetRequest::default();
    for name in params.facets.as_deref().unwrap_or("").split(',').filter(|n| !n.is_empty()) {
        match name {
            "brand" => facets.brand = true,
            "category_id" => facets.category = true,
            "price" => facets.price = true,
            _ => return Err(Problem::malformed("facets lists brand, category_id and price")),
        }
    }
    let category = params
        .category_id
        .map(|id| {
            CategoryId::parse(&id)
                .map(|c| c.text().to_string())
                .ok_or_else(|| Problem::malformed("category_id is not a category id"))
        })
        .transpose()?;
    let in_stock = match params.in_stock.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Problem::malformed("in_stock must be true or false")),
    };
    let mut attributes = Vec::new();
    for pair in params.attributes.as_deref().unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once(':').ok_or_else(|| {
            Problem::malformed("attributes lists name:value pairs, comma-separated")
        })?;
        attributes.push((name.to_string(), value.to_string()));
    }
    let offset = match params.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < RESULT_WINDOW_MAX)
            .ok_or_else(|| Problem::malformed("cursor is not one this server gave"))?,
    };
    let limit = limit(params.limit.as_deref())?;
    let query = SearchQuery {
        text: params.q.unwrap_or_default(),
        category,
        brand: params.brand,
        price_min: price(params.price_min.as_deref(), "price_min")?,
        price_max: price(params.price_max.as_deref(), "price_max")?,
        in_stock,
        attributes,
        sort,
        facets,
        // The last page of the window is cut short rather than refused.
        limit: limit.min(RESULT_WINDOW_MAX - offset),
        offset,
    };
    if query.text.chars().count() > QUERY_CHARS_MAX {
        return Err(Problem::invalid_field(
            "q",
            format!("must be at most {QUERY_CHARS_MAX} characters"),
        ));
    }
    if let (Some(min), Some(max)) = (query.price_min, query.price_max) {
        if min > max {
            return Err(Problem::invalid_field("price_min", "must not be above price_max"));
        }
    }
    Ok(query)
}

#[derive(Serialize)]
struct MoneyView<'a> {
    amount: i64,
    currency: &'a str,
}

#[derive(Serialize)]
struct Highlights<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
struct HitView<'a> {
    id: &'a str,
    title: &'a str,
    brand: &'a str,
    price: MoneyView<'a>,
    rating: f64,
    in_stock: bool,
    highlights: Highlights<'a>,
}

#[derive(Serialize)]
struct ValueCount<'a> {
    value: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct PriceCount {
    from: i64,
    to: Option<i64>,
    count: u64,
}

#[derive(Serialize)]
struct FacetsView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<Vec<ValueCount<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<Vec<ValueCount<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Vec<PriceCount>>,
}

#[derive(Serialize)]
struct SearchView<'a> {
    hits: Vec<HitView<'a>>,
    total: usize,
    facets: FacetsView<'a>,
    next_cursor: Option<String>,
    took_ms: u64,
}

fn values(counts: &[(String, u64)]) -> Vec<ValueCount<'_>> {
    counts.iter().map(|(value, count)| ValueCount { value, count: *count }).collect()
}

/// A place among the searches in flight, or 503 `overloaded`.
fn admit(
    searches: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    searches
        .clone()
        .try_acquire_owned()
        .map_err(|_| Problem::overloaded("too many searches are running; try again"))
}

/// `GET /v1/search`.
pub async fn search(call: Call) -> Result<Out, Problem> {
    let started = Instant::now();
    let query = parse_query(call.query()?)?;
    let app = call.app.clone();
    let permit = admit(&app.searches)?;
    let (asked, offset) = (query.facets, query.offset);
    let search = app.clone();
    let found = app
        .search_threads
        .run(move || {
            let found = search.search.search(&query);
            drop(permit);
            found
        })
        .await??;
    let end = offset + found.hits.len();
    let next_cursor = (end < found.total && end < RESULT_WINDOW_MAX && !found.hits.is_empty())
        .then(|| format!("{CURSOR_PREFIX}{end}"));
    let body = SearchView {
        hits: found
            .hits
            .iter()
            .map(|h| HitView {
                id: &h.id,
                title: &h.title,
                brand: &h.brand,
                price: MoneyView { amount: h.price, currency: &h.currency },
                rating: h.rating,
                in_stock: h.in_stock,
                highlights: Highlights {
                    title: h.title_highlight.as_deref(),
                    description: h.description_highlight.as_deref(),
                },
            })
            .collect(),
        total: found.total,
        facets: FacetsView {
            brand: asked.brand.then(|| values(&found.facets.brand)),
            category_id: asked.category.then(|| values(&found.facets.category)),
            price: asked.price.then(|| {
                found
                    .facets
                    .price
                    .iter()
                    .map(|b| PriceCount { from: b.from, to: b.to, count: b.count })
                    .collect()
            }),
        },
        next_cursor,
        took_ms: started.elapsed().as_millis() as u64,
    };
    Ok(Out::ok(&body))
}

#[derive(Serialize)]
struct SuggestionView<'a> {
    text: &'a str,
    product_id: Option<&'a str>,
}

#[derive(Serialize)]
struct SuggestView<'a> {
    suggestions: Vec<SuggestionView<'a>>,
}

/// `GET /v1/search/suggest`.
pub async fn suggest(call: Call) -> Result<Out, Problem> {
    let params: SuggestParams = call.query()?;
    let limit = match params.limit.as_deref() {
        None => 10,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=20).contains(n))
            .ok_or_else(|| Problem::malformed("limit must be a whole number from 1 to 20"))?,
    };
    let q = params.q.unwrap_or_default();
    if q.chars().count() > QUERY_CHARS_MAX {
        return Err(Problem::invalid_field(
            "q",
            format!("must be at most {QUERY_CHARS_MAX} characters"),
        ));
    }
    let app = call.app.clone();
    let permit = admit(&app.searches)?;
    let search = app.clone();
    let found = app
        .search_threads
        .run(move || {
            let found = search.search.suggest(&q, limit);
            drop(permit);
            found
        })
        .await??;
    let body = SuggestView {
        suggestions: found
            .iter()
            .map(|s| SuggestionView { text: &s.text, product_id: Some(&s.product_id) })
            .collect(),
    };
    Ok(Out::ok(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_past_the_cap_is_refused_at_once_with_retry_after() {
        let searches = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let running = admit(&searches).expect("the first takes the place");
        let refused = admit(&searches).expect_err("the second finds none");
        assert_eq!(
            (refused.status, refused.code, refused.retry_after_s),
            (503, "overloaded", Some(1))
        );
        drop(running);
        let _again = admit(&searches).expect("the place is free again");
    }
}
