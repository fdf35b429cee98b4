//! `GET /v1/admin/stats`: business KPIs by time, from the KPI model folded from the log
//! (`emporium_engine::Kpis`).

use emporium_engine::*;
use serde::{Deserialize, Serialize};

use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

#[derive(Serialize)]
struct AmountView {
    amount: i64,
    currency: String,
}

fn amounts(amounts: &Amounts) -> Vec<AmountView> {
    let view = |(currency, amount): (&Currency, &i64)| AmountView {
        amount: *amount,
        currency: currency.as_str().to_string(),
    };
    amounts.iter().map(view).collect()
}

#[derive(Serialize)]
struct CountsView {
    carts_created: u64,
    carts_with_items: u64,
    carts_converted: u64,
    carts_abandoned: u64,
    orders_placed: u64,
    checkouts: u64,
    orders_paid: u64,
    gmv: Vec<AmountView>,
    average_order_value: Vec<AmountView>,
    refunded: Vec<AmountView>,
    payments_declined: u64,
    conversion_rate: Option<f64>,
    abandonment_rate: Option<f64>,
    payment_decline_rate: Option<f64>,
}

impl From<&KpiCounts> for CountsView {
    fn from(c: &KpiCounts) -> CountsView {
        CountsView {
            carts_created: c.carts_created,
            carts_with_items: c.carts_with_items,
            carts_converted: c.carts_converted,
            carts_abandoned: c.carts_abandoned,
            orders_placed: c.orders_placed,
            checkouts: c.checkouts,
            orders_paid: c.orders_paid,
            gmv: amounts(&c.gmv),
            average_order_value: amounts(&c.average_order_value()),
            refunded: amounts(&c.refunded),
            payments_declined: c.payments_declined,
            conversion_rate: c.conversion_rate(),
            abandonment_rate: c.abandonment_rate(),
            payment_decline_rate: c.payment_decline_rate(),
        }
    }
}

#[derive(Serialize)]
struct BucketView {
    start: String,
    #[serde(flatten)]
    counts: CountsView,
}

#[derive(Serialize)]
struct TopProductView {
    product_id: IdText,
    title: Option<String>,
    units: u64,
    revenue: Vec<AmountView>,
}

#[derive(Serialize)]
struct SellThroughView {
    sale_id: IdText,
    sku: String,
    quantity: u32,
    sold: u32,
    reserved: u32,
    sell_through: f64,
}

#[derive(Serialize)]
struct StatsView {
    from: String,
    to: String,
    bucket: &'static str,
    abandonment_window_s: i64,
    lsn: u64,
    totals: CountsView,
    carts_undecided: u64,
    buckets: Vec<BucketView>,
    top_products: Vec<TopProductView>,
    top_products_from: String,
    top_products_to: String,
    flash_sales: Vec<SellThroughView>,
}

const BUCKETS: [(&str, i64); 3] = [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

fn time(name: &str, value: Option<&str>) -> Result<Option<i64>, Problem> {
    value
        .map(|text| parse_rfc3339(text).map_err(|e| Problem::malformed(format!("{name} {e}"))))
        .transpose()
}

/// `GET /v1/admin/stats`.
pub async fn stats(call: Call) -> Result<Out, Problem> {
    call.require(perm::ORDERS_READ)?;
    let query: StatsQuery = call.query()?;
    let (bucket, bucket_ms) = match query.bucket.as_deref() {
        None => BUCKETS[1],
        Some(name) => *BUCKETS
            .iter()
            .find(|(b, _)| *b == name)
            .ok_or_else(|| Problem::malformed("bucket must be minute, hour or day"))?,
    };
    // By default the day up to the end of the current bucket (by the minute: the
    // last 1000 minutes).
    let now = call.app.engine.now_ms();
    let to = time("to", query.to.as_deref())?.unwrap_or(now + bucket_ms);
    let span = (KPI_BUCKETS_MAX * bucket_ms).min(86_400_000);
    let from = time("from", query.from.as_deref())?.unwrap_or(to - span);
    let report = call.app.kpis.report(from, to, bucket_ms)?;
    let state = call.app.engine.state();
    let view = StatsView {
        from: rfc3339(report.from),
        to: rfc3339(report.to),
        bucket,
        abandonment_window_s: report.abandonment_window_ms / 1000,
        lsn: report.lsn.0,
        totals: CountsView::from(&report.totals),
        carts_undecided: report.carts_undecided,
        buckets: report
            .buckets
            .iter()
            .map(|b| BucketView { start: rfc3339(b.start), counts: CountsView::from(&b.counts) })
            .collect(),
        top_products: report
            .top_products
            .iter()
            .map(|(id, sales)| TopProductView {
                product_id: id.text(),
                title: state.product(id).map(|p| p.title.clone()),
                units: sales.units,
                revenue: amounts(&sales.revenue),
            })
            .collect(),
        top_products_from: rfc3339(report.products_from),
        top_products_to: rfc3339(report.products_to),
        flash_sales: report
            .flash_sales
            .iter()
            .map(|s| SellThroughView {
                sale_id: s.sale_id.text(),
                sku: s.sku.as_str().to_string(),
                quantity: s.quantity,
                sold: s.sold,
                reserved: s.reserved,
                sell_through: s.rate(),
            })
            .collect(),
    };
    Ok(Out::ok(&view))
}
