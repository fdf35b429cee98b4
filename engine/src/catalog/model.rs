//! The catalog's entities: products with their variants, and the category tree.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// Whether customers see a product.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProductStatus {
    /// Being prepared; staff only.
    Draft,
    /// On sale.
    Active,
    /// Withdrawn; kept for orders that name it.
    Archived,
}

impl ProductStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProductStatus::Draft => "draft",
            ProductStatus::Active => "active",
            ProductStatus::Archived => "archived",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<ProductStatus> {
        match value {
            "draft" => Some(ProductStatus::Draft),
            "active" => Some(ProductStatus::Active),
            "archived" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

/// One purchasable variant of a product.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The unique SKU.
    pub sku: Sku,
    /// "Medium / Blue".
    pub title: String,
    /// `{"size": "M"}`.
    pub options: BTreeMap<String, String>,
    /// The current price.
    pub price: Money,
}

/// Kept for the layout of stored products (always zero): a product's rating is its
/// published reviews' ([`crate::State::rating`]).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rating {
    /// Sum of all ratings (1–5 each).
    pub sum: u64,
    /// Number of ratings.
    pub count: u64,
}

impl Rating {
    /// The mean rating, 0 when there is none.
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// A product with its variants.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// The id.
    pub id: ProductId,
    /// The unique, URL-friendly name.
    pub handle: String,
    /// The title.
    pub title: String,
    /// The description.
    pub description: String,
    /// The brand.
    pub brand: String,
    /// The categories the product is listed in.
    pub category_ids: Vec<CategoryId>,
    /// Free-form attributes (`material: cotton`).
    pub attributes: BTreeMap<String, String>,
    /// Draft, active or archived.
    pub status: ProductStatus,
    /// The variants, at least one.
    pub variants: Vec<Variant>,
    /// The review aggregate.
    pub rating: Rating,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change; starts at 1.
    pub version: u64,
}

impl Product {
    /// The variant with `sku`.
    pub fn variant(&self, sku: &Sku) -> Option<&Variant> {
        self.variants.iter().find(|v| &v.sku == sku)
    }
}

/// A node of the category tree.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Category {
    /// The id.
    pub id: CategoryId,
    /// The name.
    pub name: String,
    /// The parent, or `None` for a root.
    pub parent_id: Option<CategoryId>,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}
