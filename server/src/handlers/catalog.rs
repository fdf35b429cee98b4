//! Products and categories.

use emporium_engine::*;
use serde::Deserialize;

use super::{cursor, idempotent_send, limit};
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductQuery {
    category_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_status(value: &str, field: &str) -> Result<ProductStatus, Problem> {
    ProductStatus::parse(value)
        .ok_or_else(|| Problem::invalid_field(field, "must be draft, active or archived"))
}

/// `GET /v1/products`.
pub async fn list_products(call: Call) -> Result<Out, Problem> {
    let query: ProductQuery = call.query()?;
    let staff = call.principal.can(perm::CATALOG_WRITE);
    let status = match query.status.as_deref() {
        None if staff => None,
        None => Some(ProductStatus::Active),
        Some(value) => {
            let status = ProductStatus::parse(value)
                .ok_or_else(|| Problem::malformed("status must be draft, active or archived"))?;
            if status != ProductStatus::Active && !staff {
                return Err(Problem::forbidden(
                    "only catalog:write may list products that are not active",
                ));
            }
            Some(status)
        }
    };
    let category_id = match query.category_id.as_deref() {
        None => None,
        Some(id) => Some(
            CategoryId::parse(id)
                .ok_or_else(|| Problem::malformed("category_id is not a category id"))?,
        ),
    };
    let after = cursor(query.cursor.as_deref(), ProductId::parse)?;
    let filter = ProductFilter { category_id, status };
    let state = call.app.engine.state();
    let page = state.products(&filter, after.as_ref(), limit(query.limit.as_deref())?);
    let body = List {
        data: page.items.iter().map(|p| ProductView::new(p, state.rating(&p.id))).collect(),
        next_cursor: page.next,
    };
    // Staff lists may hold drafts: only what every customer sees is publicly cacheable.
    let out = Out::ok(&body).hashed();
    Ok(if staff { out } else { out.public() })
}

/// The product named by the path, if the caller may see it.
pub(crate) fn visible_product(call: &Call) -> Result<std::sync::Arc<Product>, Problem> {
    let id = call.param("id");
    let product = ProductId::parse(id)
        .and_then(|id| call.app.engine.state().product(&id))
        .ok_or_else(|| Problem::not_found(format!("product {id} does not exist")))?;
    if product.status != ProductStatus::Active && !call.principal.can(perm::CATALOG_WRITE) {
        return Err(Problem::not_found(format!("product {id} does not exist")));
    }
    Ok(product)
}

/// A product as a GET answers it. Its ETag's hash covers the rating too, so a cache
/// never keeps an old one; the price is that a review published between a GET and a
/// PATCH makes the PATCH's `If-Match` fail (412: read again).
fn product_out(state: &State, product: &Product) -> Out {
    Out::ok(&ProductView::new(product, state.rating(&product.id))).versioned(product.version)
}

/// The product named by the path as it is now, for `If-Match`.
fn current_product(call: &Call) -> Option<Out> {
    let product =
        ProductId::parse(call.param("id")).and_then(|id| call.app.engine.state().product(&id))?;
    Some(product_out(call.app.engine.state(), &product))
}

/// The category named by the path as it is now, for `If-Match`.
fn current_category(call: &Call) -> Option<Out> {
    let category = category(call).ok()?;
    Some(category_out(&category, call.app.engine.state()))
}

/// A category as a GET answers it.
fn category_out(category: &Category, state: &State) -> Out {
    Out::ok(&CategoryView::new(category, state)).versioned(category.version)
}

/// `GET /v1/products/{id}`.
pub async fn get_product(call: Call) -> Result<Out, Problem> {
    let product = visible_product(&call)?;
    let out = product_out(call.app.engine.state(), &product);
    Ok(if product.status == ProductStatus::Active { out.public() } else { out })
}

/// `POST /v1/products`.
pub async fn create_product(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewProduct = call.json()?;
    let create = async {
        let status = body.status.as_deref().map(|s| parse_status(s, "status")).transpose()?;
        Ok(CreateProduct {
            handle: body.handle,
            title: body.title,
            description: body.description,
            brand: body.brand,
            category_ids: body.category_ids,
            attributes: body.attributes,
            status,
            variants: body.variants.into_iter().map(VariantInput::from).collect(),
        })
    };
    idempotent_send(&call, create, |state, product| {
        let view = ProductView::new(product, state.rating(&product.id));
        Out::created(&view, format!("/v1/products/{}", product.id)).versioned(product.version)
    })
    .await
}

/// `PATCH /v1/products/{id}`.
pub async fn update_product(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: ProductPatch = call.json()?;
    let status = body.status.as_deref().map(|s| parse_status(s, "status")).transpose()?;
    let command = UpdateProduct {
        id: call.param("id").to_string(),
        expected_version: call.if_match(|| current_product(&call))?,
        handle: body.handle,
        title: body.title,
        description: body.description,
        brand: body.brand,
        category_ids: body.category_ids,
        attributes: body.attributes,
        status,
        variants: body.variants.map(|v| v.into_iter().map(VariantInput::from).collect()),
    };
    let product = call.app.engine.send(command).await?;
    Ok(product_out(call.app.engine.state(), &product))
}

/// `DELETE /v1/products/{id}`: archives.
pub async fn archive_product(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let command = ArchiveProduct {
        id: call.param("id").to_string(),
        expected_version: call.if_match(|| current_product(&call))?,
    };
    call.app.engine.send(command).await?;
    Ok(Out::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/categories`.
pub async fn list_categories(call: Call) -> Result<Out, Problem> {
    let query: CategoryQuery = call.query()?;
    let limit = limit(query.limit.as_deref())?;
    let after = cursor(query.cursor.as_deref(), CategoryId::parse)?;
    let state = call.app.engine.state();
    let all = state.categories();
    let mut items: Vec<_> =
        all.iter().filter(|c| after.as_ref().is_none_or(|a| &c.id > a)).take(limit + 1).collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|c| c.id.to_string())
    } else {
        None
    };
    let body = List {
        data: items.iter().map(|c| CategoryView::new(c, state)).collect(),
        next_cursor: next,
    };
    Ok(Out::ok(&body).hashed().public())
}

fn category(call: &Call) -> Result<std::sync::Arc<Category>, Problem> {
    let id = call.param("id");
    CategoryId::parse(id)
        .and_then(|id| call.app.engine.state().category(&id))
        .ok_or_else(|| Problem::not_found(format!("category {id} does not exist")))
}

/// `GET /v1/categories/{id}`.
pub async fn get_category(call: Call) -> Result<Out, Problem> {
    let category = category(&call)?;
    Ok(category_out(&category, call.app.engine.state()).public())
}

/// `POST /v1/categories`.
pub async fn create_category(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewCategory = call.json()?;
    let create = async { Ok(CreateCategory { name: body.name, parent_id: body.parent_id }) };
    idempotent_send(&call, create, |state, category| {
        let view = CategoryView::new(category, state);
        Out::created(&view, format!("/v1/categories/{}", category.id)).versioned(category.version)
    })
    .await
}

/// `PATCH /v1/categories/{id}`.
pub async fn update_category(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: CategoryPatch = call.json()?;
    let command = UpdateCategory {
        id: call.param("id").to_string(),
        name: body.name,
        parent_id: body.parent_id,
        expected_version: call.if_match(|| current_category(&call))?,
    };
    let category = call.app.engine.send(command).await?;
    Ok(category_out(&category, call.app.engine.state()))
}

/// `DELETE /v1/categories/{id}`.
pub async fn delete_category(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let command = DeleteCategory {
        id: call.param("id").to_string(),
        expected_version: call.if_match(|| current_category(&call))?,
    };
    call.app.engine.send(command).await?;
    Ok(Out::no_content())
}
