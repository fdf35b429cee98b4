//! The process the crash test kills. It opens the engine on the directory it is given,
//! stocks a catalog and opens a flash sale on first start, then runs concurrent
//! checkouts, flash-sale purchases, payments and cancellations, printing one `ACK …` line per acknowledged command only after the
//! engine answered it (which it does only once the command is durable). The parent
//! SIGKILLs it at a random moment and checks every printed acknowledgement against the
//! reopened directory. The materializer flushes and trims the log every few
//! milliseconds, so kills also land inside those.
//!
//! Usage: `crash-child DIR SEED`

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use emporium_engine::*;
use emporium_tests::{
    all_flash_sales, pay, stocked_sku, CRASH_RESTOCK, CRASH_SALE_BUYERS, CRASH_SALE_SKU,
    CRASH_SALE_UNITS, CRASH_SKUS as SKUS,
};
use rand::{Rng, SeedableRng};

const WORKERS: usize = 8;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| anyhow::anyhow!("usage: crash-child DIR SEED"))?;
    let seed: u64 =
        args.next().ok_or_else(|| anyhow::anyhow!("usage: crash-child DIR SEED"))?.parse()?;
    let mut config = EngineConfig::new(&dir);
    config.id_seed = Some(seed);
    // The materializer writes every few milliseconds and the log is trimmed at every
    // write, so kills land in the middle of materializer flushes and log trims too.
    config.materialize_interval_ms = 1 + seed % 8;
    // Rows are persisted (and with them the log trims) every few to some tens of
    // milliseconds, so kills land before, between and after those flushes.
    config.persist_interval_ms = 5 + seed % 60;
    config.log_retain_entries_min = 0;
    // No reservation may lapse while the test runs (200 cycles take ten minutes and
    // more): the parent expects every acknowledged order pending, paid or cancelled.
    config.limits.reservation_ttl_ms = 24 * 60 * 60 * 1000;
    // The deliberately broken build the power-loss test must catch: the log is written
    // without a sync, so acknowledgements outrun durability.
    config.faults.unsynced_log = std::env::var_os("EMPORIUM_CRASH_UNSYNCED_LOG").is_some();
    let engine = Engine::open(config)?;
    let shop = engine.blocking();
    if engine.state().product_count() == 0 {
        for (sku, on_hand) in SKUS {
            stocked_sku(&shop, sku, 500, on_hand);
        }
        stocked_sku(&shop, CRASH_SALE_SKU.0, 900, CRASH_SALE_SKU.1);
        for i in 0..CRASH_SALE_BUYERS {
            shop.send(RegisterCustomer {
                email: format!("crash-buyer{i}@example.com"),
                name: "Crash Buyer".into(),
                role: Role::Customer,
                credential: "hash".into(),
            })?;
        }
        let now = SystemClock.now_ms();
        shop.send(CreateFlashSale {
            sku: CRASH_SALE_SKU.0.into(),
            price: MoneyInput { amount: 450, currency: "USD".into() },
            quantity: CRASH_SALE_UNITS,
            per_customer_limit: CRASH_SALE_UNITS,
            starts_at: now,
            ends_at: now + 30 * 24 * 60 * 60 * 1000,
            // The longest a sale allows, for the same reason.
            reservation_ttl_ms: Some(FLASH_SALE_RESERVATION_TTL_MAX_MS),
        })?;
    }
    let sale = all_flash_sales(engine.state())[0].id.to_string();
    let buyers: Vec<CustomerId> = (0..CRASH_SALE_BUYERS)
        .map(|i| {
            let email = format!("crash-buyer{i}@example.com");
            engine.state().customer_by_email(&email).expect("a registered buyer").id
        })
        .collect();
    let buyers = Arc::new((sale, buyers));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    say(&out, "READY".into());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (shop, out, stop) = (shop.clone(), out.clone(), stop.clone());
            let buyers = buyers.clone();
            let seed = seed.wrapping_mul(31).wrapping_add(worker as u64);
            std::thread::spawn(move || work(&shop, &out, &stop, &buyers, seed))
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked")?;
    }
    Ok(())
}

fn say(out: &Mutex<std::io::Stdout>, line: String) {
    let mut out = out.lock().expect("stdout lock");
    // One write and a flush per line: what the parent reads is exactly what was said.
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn work(
    shop: &BlockingEngine,
    out: &Mutex<std::io::Stdout>,
    stop: &AtomicBool,
    (sale, buyers): &(String, Vec<CustomerId>),
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        if rng.random_bool(0.2) {
            let purchase = PurchaseFlashSale {
                sale_id: sale.clone(),
                customer_id: buyers[rng.random_range(0..buyers.len())],
                quantity: rng.random_range(1..=3),
                idempotency: None,
            };
            let order = shop.send(purchase)?;
            let line = &order.lines[0];
            say(out, format!("ACK checkout {} {}:{}", order.id, line.sku, line.quantity));
            settle(shop, out, &mut rng, &order)?;
            continue;
        }
        let mut lines: Vec<(&str, i64)> = Vec::new();
        for (sku, _) in SKUS {
            if rng.random_bool(0.5) {
                lines.push((sku, rng.random_range(1..=3)));
            }
        }
        if lines.is_empty() {
            continue;
        }
        if rng.random_bool(0.1) {
            // A restock: said before it is sent, so the parent knows it may be durable
            // even when the kill lands before its acknowledgement.
            say(out, format!("TRY adjust {CRASH_RESTOCK}"));
            let adjust = AdjustStock {
                sku: SKUS[0].0.into(),
                delta: CRASH_RESTOCK,
                reason: "restock".into(),
            };
            shop.send(adjust)?;
            say(out, format!("ACK adjust {CRASH_RESTOCK}"));
        }
        let cart = shop.send(CreateCart::default())?;
        say(out, format!("ACK cart {}", cart.id));
        for (sku, quantity) in &lines {
            let item = AddCartItem {
                cart_id: cart.id.to_string(),
                sku: (*sku).into(),
                quantity: *quantity,
            };
            shop.send(item)?;
            say(out, format!("ACK item {} {sku}:{quantity}", cart.id));
        }
        if rng.random_bool(0.2) {
            continue; // abandoned
        }
        let order = match emporium_tests::checkout(shop, &cart.id) {
            Ok(order) => order,
            Err(EngineError::OutOfStock(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let described: Vec<String> =
            order.lines.iter().map(|l| format!("{}:{}", l.sku, l.quantity)).collect();
        say(out, format!("ACK checkout {} {}", order.id, described.join(",")));
        settle(shop, out, &mut rng, &order)?;
    }
    Ok(())
}

/// Pays for `order`, cancels it, or leaves it pending, a third of the time each.
fn settle(
    shop: &BlockingEngine,
    out: &Mutex<std::io::Stdout>,
    rng: &mut impl Rng,
    order: &Order,
) -> anyhow::Result<()> {
    match rng.random_range(0..3) {
        0 => {
            pay(shop, &order.id)?;
            say(out, format!("ACK pay {}", order.id));
        }
        1 => {
            shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None })?;
            say(out, format!("ACK cancel {}", order.id));
        }
        _ => {}
    }
    Ok(())
}
