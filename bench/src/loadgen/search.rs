//! Product search beside PostgreSQL's full-text search, on one deterministic catalog.
//!
//! The catalog ([`catalog`]) is generated from a seed: titles of 2–4 words from fixed
//! vocabularies (adjective, material, noun, and a model word), a brand out of 40, one
//! or two categories out of a two-level tree of 60, a price, stock in 90% of products.
//! The query mix ([`queries`]) draws 1–3 consecutive words from real titles, so most
//! queries have hits; 20% carry a typo (two adjacent letters of a word of at least four
//! swapped), 30% a filter (brand, category or price range) and ask for facets.
//!
//! Emporium: the `emporium-search` index in-process, on disk, built from the catalog
//! (indexing time measured), queried from 1 and 2 threads. PostgreSQL: the same rows
//! with a generated `tsvector` (title weight A, brand B, description C) under a GIN
//! index, queried with `websearch_to_tsquery('english', …)`, `ts_rank`, `LIMIT 20`
//! and the same filters; where a query asks for facets, the three `GROUP BY` counts
//! are run too, so both systems answer the same question. Each system is measured for
//! the same window at each thread count; the latency of each query is recorded.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use emporium_search::{FacetRequest, ProductDoc, SearchConfig, SearchIndex, SearchQuery};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const ADJECTIVES: [&str; 24] = [
    "classic",
    "modern",
    "vintage",
    "compact",
    "rugged",
    "slim",
    "deluxe",
    "organic",
    "wireless",
    "portable",
    "heavy",
    "light",
    "premium",
    "everyday",
    "outdoor",
    "indoor",
    "ergonomic",
    "waterproof",
    "foldable",
    "smart",
    "handmade",
    "minimal",
    "bold",
    "soft",
];
const MATERIALS: [&str; 16] = [
    "cotton", "leather", "steel", "bamboo", "ceramic", "wool", "linen", "oak", "copper", "glass",
    "canvas", "silicone", "walnut", "marble", "denim", "titanium",
];
const NOUNS: [&str; 40] = [
    "backpack",
    "jacket",
    "lamp",
    "kettle",
    "headphones",
    "keyboard",
    "sneakers",
    "watch",
    "blanket",
    "mug",
    "chair",
    "desk",
    "wallet",
    "sunglasses",
    "bottle",
    "speaker",
    "camera",
    "tripod",
    "notebook",
    "pillow",
    "tent",
    "bicycle",
    "helmet",
    "gloves",
    "scarf",
    "boots",
    "teapot",
    "knife",
    "skillet",
    "blender",
    "monitor",
    "router",
    "charger",
    "cable",
    "mattress",
    "sofa",
    "rug",
    "mirror",
    "candle",
    "vase",
];
const MODELS: [&str; 12] =
    ["pro", "max", "mini", "plus", "air", "ultra", "lite", "one", "go", "neo", "prime", "edge"];
const BRANDS: [&str; 40] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Vandelay",
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Aperture",
    "Massive",
    "Vehement",
    "Monarch",
    "Pied",
    "Dunder",
    "Prestige",
    "Sterling",
    "Bluth",
    "Krusty",
    "Duff",
    "Ollivander",
    "Zorg",
    "Virtucon",
    "Gekko",
    "Nakatomi",
    "Sirius",
    "Spacely",
    "Cogswell",
    "Oceanic",
    "Ajax",
    "Bravo",
    "Cobalt",
];
const FILLER: [&str; 20] = [
    "made", "for", "daily", "use", "with", "a", "durable", "finish", "and", "easy", "care",
    "designed", "in", "small", "batches", "built", "to", "last", "years", "comfort",
];

/// Top categories and children per top category.
const TOP_CATEGORIES: usize = 10;
const CHILD_CATEGORIES: usize = 5;

/// A generated product.
#[derive(Clone, Debug)]
pub struct CatalogProduct {
    pub doc: ProductDoc,
    /// Its own categories (not their ancestors).
    pub categories: Vec<String>,
}

fn category_id(n: usize) -> String {
    format!("cat_{n:012}")
}

/// `products` products from `seed`.
pub fn catalog(products: usize, seed: u64) -> Vec<CatalogProduct> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..products)
        .map(|n| {
            let mut words = Vec::new();
            if rng.random_bool(0.7) {
                words.push(ADJECTIVES[rng.random_range(0..ADJECTIVES.len())]);
            }
            if rng.random_bool(0.5) {
                words.push(MATERIALS[rng.random_range(0..MATERIALS.len())]);
            }
            words.push(NOUNS[rng.random_range(0..NOUNS.len())]);
            if rng.random_bool(0.4) {
                words.push(MODELS[rng.random_range(0..MODELS.len())]);
            }
            let brand = BRANDS[rng.random_range(0..BRANDS.len())];
            let mut title: Vec<String> = vec![brand.to_string()];
            title.extend(words.iter().map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
            }));
            let description: Vec<&str> = (0..rng.random_range(8..20))
                .map(|_| {
                    if rng.random_bool(0.2) {
                        words[rng.random_range(0..words.len())]
                    } else {
                        FILLER[rng.random_range(0..FILLER.len())]
                    }
                })
                .collect();
            let top = rng.random_range(0..TOP_CATEGORIES);
            let child =
                TOP_CATEGORIES + top * CHILD_CATEGORIES + rng.random_range(0..CHILD_CATEGORIES);
            let mut own = vec![category_id(child)];
            if rng.random_bool(0.2) {
                own.push(category_id(rng.random_range(0..TOP_CATEGORIES)));
            }
            let mut categories = own.clone();
            categories.push(category_id(top));
            categories.sort();
            categories.dedup();
            let price = rng.random_range(199..150_000);
            CatalogProduct {
                doc: ProductDoc {
                    id: format!("prod_{n:012}"),
                    title: title.join(" "),
                    description: description.join(" "),
                    brand: brand.to_string(),
                    categories,
                    attributes: Vec::new(),
                    skus: vec![format!("SKU-{n}")],
                    price,
                    currency: "USD".into(),
                    rating: f64::from(rng.random_range(0..=50u32)) / 10.0,
                    in_stock: rng.random_bool(0.9),
                    created_at: n as i64,
                },
                categories: own,
            }
        })
        .collect()
}

/// What a benchmark query asks, for both systems.
#[derive(Clone, Debug, Serialize)]
pub struct BenchQuery {
    pub text: String,
    pub typo: bool,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub price: Option<(i64, i64)>,
    pub facets: bool,
}

/// `count` queries drawn from the catalog's titles with `seed`.
pub fn queries(catalog: &[CatalogProduct], count: usize, seed: u64) -> Vec<BenchQuery> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let title = &catalog[rng.random_range(0..catalog.len())].doc.title;
            let words: Vec<String> = title.split(' ').skip(1).map(|w| w.to_lowercase()).collect();
            let take = rng.random_range(1..=3usize).min(words.len());
            let start = rng.random_range(0..=words.len() - take);
            let mut chosen: Vec<String> = words[start..start + take].to_vec();
            let typo = rng.random_bool(0.2);
            if typo {
                if let Some(word) = chosen.iter_mut().find(|w| w.len() >= 4) {
                    let mut bytes = word.clone().into_bytes();
                    let at = rng.random_range(1..bytes.len() - 1);
                    bytes.swap(at, at + 1);
                    *word = String::from_utf8(bytes).expect("ASCII");
                }
            }
            let filtered = rng.random_bool(0.3);
            let (mut brand, mut category, mut price) = (None, None, None);
            if filtered {
                match rng.random_range(0..3) {
                    0 => brand = Some(BRANDS[rng.random_range(0..BRANDS.len())].to_string()),
                    1 => category = Some(category_id(rng.random_range(0..TOP_CATEGORIES))),
                    _ => {
                        let low = rng.random_range(0..50_000);
                        price = Some((low, low + rng.random_range(5_000..60_000)));
                    }
                }
            }
            BenchQuery {
                // Finished words: a trailing space, as a submitted query has.
                text: format!("{} ", chosen.join(" ")),
                typo,
                brand,
                category,
                price,
                facets: filtered,
            }
        })
        .collect()
}

impl BenchQuery {
    fn to_search(&self) -> SearchQuery {
        SearchQuery {
            text: self.text.clone(),
            brand: self.brand.clone(),
            category: self.category.clone(),
            price_min: self.price.map(|p| p.0),
            price_max: self.price.map(|p| p.1),
            facets: if self.facets {
                FacetRequest { brand: true, category: true, price: true }
            } else {
                FacetRequest::default()
            },
            limit: 20,
            ..SearchQuery::default()
        }
    }
}

/// One system at one thread count.
#[derive(Clone, Debug, Serialize)]
pub struct SearchPoint {
    pub system: String,
    pub threads: usize,
    pub queries: u64,
    pub qps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Queries that found at least one product.
    pub with_hits: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub products: usize,
    pub emporium_index_s: f64,
    pub postgres_load_s: Option<f64>,
    /// Creating the catalog through the API until search showed all of it.
    pub http_load_s: Option<f64>,
    pub points: Vec<SearchPoint>,
    /// `GET /v1/search` over HTTP.
    pub http: Vec<super::stats::Point>,
}

fn point(
    system: &str,
    threads: usize,
    elapsed: Duration,
    histogram: &Histogram<u64>,
    hits: u64,
) -> SearchPoint {
    let queries = histogram.len();
    SearchPoint {
        system: system.into(),
        threads,
        queries,
        qps: queries as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        with_hits: hits as f64 / queries.max(1) as f64,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Builds the index in `dir` and times it.
pub fn build_index(
    dir: &Path,
    catalog: &[CatalogProduct],
) -> anyhow::Result<(SearchIndex, Duration)> {
    let started = Instant::now();
    let index = SearchIndex::open(dir, SearchConfig::default())?;
    for product in catalog {
        index.upsert(&product.doc)?;
    }
    index.commit(1)?;
    Ok((index, started.elapsed()))
}

/// Runs the queries on `threads` threads for `duration` against the index.
pub fn run_emporium(
    index: &Arc<SearchIndex>,
    queries: &Arc<Vec<BenchQuery>>,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<SearchPoint> {
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (index, queries, stop, hits) =
                (index.clone(), queries.clone(), stop.clone(), hits.clone());
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let mut h = histogram();
                let mut i = t * queries.len() / threads.max(1);
                while !stop.load(Ordering::Relaxed) {
                    let q = queries[i % queries.len()].to_search();
                    let begun = Instant::now();
                    let found = index.search(&q)?;
                    h.record(begun.elapsed().as_micros().max(1) as u64)?;
                    if found.total > 0 {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                Ok(h)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for worker in workers {
        all.add(worker.join().map_err(|_| anyhow::anyhow!("a search thread panicked"))??)?;
    }
    Ok(point("emporium", threads, started.elapsed(), &all, hits.load(Ordering::Relaxed) as u64))
}

/// Parameters of differing types, owned, as the driver takes them.
type SqlParams = Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>;

/// `params` as the driver's borrowed slice.
fn sql_params(params: &SqlParams) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync)).collect()
}

/// Loads the catalog into PostgreSQL (table `search_products`, GIN index) and times it.
pub async fn load_postgres(url: &str, catalog: &[CatalogProduct]) -> anyhow::Result<Duration> {
    let client = super::baseline::pg_connect(url).await?;
    let started = Instant::now();
    client
        .batch_execute(
            "DROP TABLE IF EXISTS search_products;
             CREATE TABLE search_products (
                 id text PRIMARY KEY, title text NOT NULL, brand text NOT NULL,
                 description text NOT NULL, categories text[] NOT NULL,
                 price bigint NOT NULL, in_stock boolean NOT NULL,
                 tsv tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', title), 'A') ||
                     setweight(to_tsvector('english', brand), 'B') ||
                     setweight(to_tsvector('english', description), 'C')) STORED);",
        )
        .await?;
    for chunk in catalog.chunks(1000) {
        let mut sql = String::from(
            "INSERT INTO search_products (id, title, brand, description, categories, price, in_stock) VALUES ",
        );
        let mut params: SqlParams = Vec::new();
        for (i, p) in chunk.iter().enumerate() {
            let b = i * 7;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
            params.push(Box::new(p.doc.id.clone()));
            params.push(Box::new(p.doc.title.clone()));
            params.push(Box::new(p.doc.brand.clone()));
            params.push(Box::new(p.doc.description.clone()));
            params.push(Box::new(p.doc.categories.clone()));
            params.push(Box::new(p.doc.price));
            params.push(Box::new(p.doc.in_stock));
        }
        client.execute(sql.as_str(), &sql_params(&params)).await?;
    }
    client
        .batch_execute(
            "CREATE INDEX search_products_tsv ON search_products USING GIN (tsv);
             CREATE INDEX search_products_categories ON search_products USING GIN (categories);
             ANALYZE search_products;",
        )
        .await?;
    Ok(started.elapsed())
}

/// The hits query and, with facets, the three counts, as PostgreSQL runs them.
async fn pg_query(client: &tokio_postgres::Client, q: &BenchQuery) -> anyhow::Result<bool> {
    let mut filters = String::new();
    let mut params: SqlParams = vec![Box::new(q.text.trim().to_string())];
    if let Some(brand) = &q.brand {
        params.push(Box::new(brand.clone()));
        filters.push_str(&format!(" AND brand = ${}", params.len()));
    }
    if let Some(category) = &q.category {
        params.push(Box::new(vec![category.clone()]));
        filters.push_str(&format!(" AND categories @> ${}", params.len()));
    }
    if let Some((low, high)) = q.price {
        params.push(Box::new(low));
        params.push(Box::new(high));
        filters.push_str(&format!(
            " AND price BETWEEN ${} AND ${}",
            params.len() - 1,
            params.len()
        ));
    }
    let refs = sql_params(&params);
    let matched =
        "FROM search_products, websearch_to_tsquery('english', $1) query WHERE tsv @@ query";
    let hits = client
        .query(
            &format!("SELECT id, title, brand, price, in_stock, ts_rank(tsv, query) AS rank {matched}{filters} ORDER BY rank DESC LIMIT 20"),
            &refs,
        )
        .await?;
    if q.facets {
        for group in [
            "brand",
            "unnest(categories)",
            "width_bucket(price, ARRAY[1000,2500,5000,10000,25000,50000,100000])",
        ] {
            client
                .query(&format!("SELECT {group}, count(*) {matched}{filters} GROUP BY 1"), &refs)
                .await?;
        }
    }
    Ok(!hits.is_empty())
}

/// Runs the queries on `connections` connections for `duration`.
pub async fn run_postgres(
    url: &str,
    queries: &Arc<Vec<BenchQuery>>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<SearchPoint> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..connections {
        let client = super::baseline::pg_connect(url).await?;
        let (queries, stop) = (queries.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut hits = 0u64;
            let mut i = t * queries.len() / connections.max(1);
            while !stop.load(Ordering::Relaxed) {
                let begun = Instant::now();
                if pg_query(&client, &queries[i % queries.len()]).await? {
                    hits += 1;
                }
                h.record(begun.elapsed().as_micros().max(1) as u64)?;
                i += 1;
            }
            anyhow::Ok((h, hits))
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    let mut hits = 0;
    for task in tasks {
        let (h, n) = task.await.context("a postgres task")??;
        all.add(h)?;
        hits += n;
    }
    Ok(point("postgres", connections, started.elapsed(), &all, hits))
}

/// Creates the catalog on a running Emporium through its API: the category tree (the
/// server's ids replace the generated ones), the products, their stock (5 units, or 0
/// for those out of stock); then waits until search shows all of them. Answers the
/// server's category id for each generated one, and how long it all took.
pub async fn load_emporium(
    admin: &super::emporium::Admin,
    catalog: &[CatalogProduct],
) -> anyhow::Result<(std::collections::HashMap<String, String>, Duration)> {
    use super::emporium::{expect, parallel, PREPARE_CONNECTIONS};
    use super::http::Conn;
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
    }
    let started = Instant::now();
    let mut ids: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut conn = Conn::connect(admin.addr).await?;
    for n in 0..TOP_CATEGORIES + TOP_CATEGORIES * CHILD_CATEGORIES {
        let parent = (n >= TOP_CATEGORIES)
            .then(|| ids[&category_id((n - TOP_CATEGORIES) / CHILD_CATEGORIES)].clone());
        let body = serde_json::json!({"name": format!("Category {n}"), "parent_id": parent});
        let reply = conn
            .post("/v1/categories", std::slice::from_ref(admin.auth()), body.to_string())
            .await?;
        let created: Created = expect(&reply, 201, "creating a category")?;
        ids.insert(category_id(n), created.id);
    }
    let items: Vec<(serde_json::Value, String, bool)> = catalog
        .iter()
        .map(|p| {
            let body = serde_json::json!({
                "title": p.doc.title, "description": p.doc.description, "brand": p.doc.brand,
                "status": "active",
                "category_ids": p.categories.iter().map(|c| ids[c].clone()).collect::<Vec<_>>(),
                "variants": [{"sku": p.doc.skus[0], "price": {"amount": p.doc.price, "currency": "USD"}}],
            });
            (body, p.doc.skus[0].clone(), p.doc.in_stock)
        })
        .collect();
    let auth = admin.auth().clone();
    parallel(admin.addr, items, PREPARE_CONNECTIONS, move |mut conn, (body, sku, in_stock)| {
        let auth = auth.clone();
        async move {
            let result = async {
                let reply = conn
                    .post("/v1/products", std::slice::from_ref(&auth), body.to_string())
                    .await?;
                let _: Created = expect(&reply, 201, "creating a product")?;
                let stock = serde_json::json!({"on_hand": if in_stock { 5 } else { 0 }});
                let reply = conn
                    .send(
                        http::Method::PUT,
                        &format!("/v1/inventory/{sku}"),
                        std::slice::from_ref(&auth),
                        Some(stock.to_string().into()),
                    )
                    .await?;
                anyhow::ensure!(reply.status == 200, "setting stock: {}", reply.status);
                anyhow::Ok(())
            }
            .await;
            (conn, result)
        }
    })
    .await?;
    #[derive(serde::Deserialize)]
    struct Total {
        total: usize,
    }
    // The loading took long enough for the server to close an idle connection.
    let mut conn = Conn::connect(admin.addr).await?;
    loop {
        let reply = conn.get("/v1/search?limit=1", &[]).await?;
        let found: Total = expect(&reply, 200, "searching")?;
        if found.total >= catalog.len() {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the index did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((ids, started.elapsed()))
}

impl BenchQuery {
    /// The query as a `/v1/search` path, with the server's category ids.
    pub fn path(&self, categories: &std::collections::HashMap<String, String>) -> String {
        use super::emporium::form_escape;
        let mut path = format!("/v1/search?limit=20&q={}", form_escape(&self.text));
        if let Some(brand) = &self.brand {
            path.push_str(&format!("&brand={}", form_escape(brand)));
        }
        if let Some(category) = &self.category {
            path.push_str(&format!("&category_id={}", categories[category]));
        }
        if let Some((low, high)) = self.price {
            path.push_str(&format!("&price_min={low}&price_max={high}"));
        }
        if self.facets {
            path.push_str("&facets=brand,category_id,price");
        }
        path
    }
}
