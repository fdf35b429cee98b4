//! The demo catalog: a deterministic shop of 10,240 products in a two-level category
//! tree, with variants, prices and stock, loaded into an empty data directory by
//! `emporium serve --demo` so a newcomer sees a real shop at once.

use std::collections::BTreeMap;

use emporium_engine::*;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

/// How many products the demo holds.
pub const PRODUCTS: usize = 10_240;
const DEPARTMENTS: [(&str, [&str; 4]); 8] = [
    ("Clothing", ["T-Shirts", "Hoodies", "Jeans", "Jackets"]),
    ("Shoes", ["Sneakers", "Boots", "Sandals", "Running"]),
    ("Home", ["Kitchen", "Bedding", "Lighting", "Decor"]),
    ("Outdoors", ["Camping", "Cycling", "Climbing", "Fishing"]),
    ("Electronics", ["Headphones", "Speakers", "Cables", "Chargers"]),
    ("Books", ["Fiction", "Cooking", "Travel", "Science"]),
    ("Toys", ["Puzzles", "Blocks", "Plush", "Games"]),
    ("Beauty", ["Skincare", "Haircare", "Fragrance", "Bath"]),
];
const ADJECTIVES: [&str; 16] = [
    "Classic",
    "Organic",
    "Ultralight",
    "Vintage",
    "Everyday",
    "Premium",
    "Recycled",
    "Compact",
    "Rugged",
    "Soft",
    "Bold",
    "Minimal",
    "Handmade",
    "Waterproof",
    "Cozy",
    "Modern",
];
const BRANDS: [&str; 12] = [
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Hooli",
    "Vandelay",
    "Soylent",
];
const SIZES: [&str; 3] = ["S", "M", "L"];

/// Loads the demo into an empty engine; does nothing if it holds products already.
pub async fn load(engine: &Engine) -> anyhow::Result<()> {
    if engine.state().product_count() > 0 {
        tracing::info!("the data directory has products; the demo catalog is not loaded");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut leaves = Vec::new();
    for (department, children) in DEPARTMENTS {
        let parent =
            engine.send(CreateCategory { name: department.into(), parent_id: None }).await?;
        for child in children {
            let category = engine
                .send(CreateCategory { name: child.into(), parent_id: Some(parent.id.to_string()) })
                .await?;
            leaves.push((child, category.id.to_string()));
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut tasks = JoinSet::new();
    for n in 0..PRODUCTS {
        let (noun, category) = leaves[n % leaves.len()].clone();
        let product = demo_product(&mut rng, n, noun, category);
        let stock: Vec<i64> = product.variants.iter().map(|_| rng.random_range(0..=500)).collect();
        let engine = engine.clone();
        tasks.spawn(async move {
            let product = engine.send(product).await?;
            for (variant, on_hand) in product.variants.iter().zip(stock) {
                let set = SetStock {
                    sku: variant.sku.to_string(),
                    on_hand,
                    reason: "demo".into(),
                    expected_version: None,
                };
                engine.send(set).await?;
            }
            Ok::<_, EngineError>(())
        });
        // Keep the engine's queue well below its limit.
        while tasks.len() >= 1024 {
            tasks.join_next().await.expect("tasks are running")??;
        }
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    tracing::info!(
        products = PRODUCTS,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the demo catalog"
    );
    Ok(())
}

fn demo_product(
    rng: &mut rand::rngs::StdRng,
    n: usize,
    noun: &str,
    category: String,
) -> CreateProduct {
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let brand = BRANDS[rng.random_range(0..BRANDS.len())];
    let title = format!("{adjective} {} {noun} #{n}", brand);
    let price = rng.random_range(499..=19_999);
    let sized = rng.random_bool(0.5);
    let variants = if sized { &SIZES[..] } else { &SIZES[1..2] };
    CreateProduct {
        handle: None,
        title: title.clone(),
        description: format!(
            "{title}: a {} {} from {brand}.",
            adjective.to_lowercase(),
            noun.to_lowercase()
        ),
        brand: brand.into(),
        category_ids: vec![category],
        attributes: BTreeMap::from([(
            "material".to_string(),
            ["cotton", "steel", "wood", "nylon"][n % 4].to_string(),
        )]),
        status: Some(ProductStatus::Active),
        variants: variants
            .iter()
            .map(|size| VariantInput {
                sku: if sized { format!("DEMO-{n:05}-{size}") } else { format!("DEMO-{n:05}") },
                title: if sized { (*size).to_string() } else { String::new() },
                options: if sized {
                    BTreeMap::from([("size".to_string(), (*size).to_string())])
                } else {
                    BTreeMap::new()
                },
                price: MoneyInput { amount: price, currency: "USD".into() },
            })
            .collect(),
    }
}
