//! The baselines' drivers: PostgreSQL through `tokio-postgres` (one connection per
//! virtual client, prepared statements) and Redis through the `redis` crate (one
//! connection per client, the script called with `EVALSHA`). The schemas and the
//! script live here, so the SQL and Lua that the report compares with are in one
//! place. Durability is the servers' (`synchronous_commit=on` and
//! `appendfsync always`, set by `scripts/baselines`); [`pg_settings`] reads it back so
//! a report never claims a durability the server did not have.

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls};

/// The flash-sale tables and function, and the checkout tables. Keys are integers (the
/// cheapest key PostgreSQL can have); every stock update is guarded so stock cannot go
/// below zero even without the CHECK constraint.
pub const PG_SCHEMA: &str = "
DROP TABLE IF EXISTS payments, order_lines, orders, stock, flash_orders, flash_holdings, flash_sales;
CREATE TABLE flash_sales (
    id bigint PRIMARY KEY,
    remaining bigint NOT NULL CHECK (remaining >= 0),
    price bigint NOT NULL,
    per_customer_limit int NOT NULL
);
CREATE TABLE flash_holdings (
    sale_id bigint NOT NULL,
    customer_id bigint NOT NULL,
    units int NOT NULL,
    PRIMARY KEY (sale_id, customer_id)
);
CREATE TABLE flash_orders (
    id bigserial PRIMARY KEY,
    sale_id bigint NOT NULL,
    customer_id bigint NOT NULL,
    qty int NOT NULL,
    total bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending_payment',
    created_at timestamptz NOT NULL DEFAULT now()
);
-- One purchase, one transaction: the guarded decrement of the sale's row (which also
-- serialises the sale's buyers), the customer's units counted against the cap (the
-- decrement is given back if the cap refuses), and the order row. Answers the units
-- left, -1 when too few are left, -2 when the cap refuses.
CREATE OR REPLACE FUNCTION flash_purchase(p_sale bigint, p_customer bigint, p_qty int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint;
    v_price bigint;
    v_limit int;
BEGIN
    UPDATE flash_sales SET remaining = remaining - p_qty
    WHERE id = p_sale AND remaining >= p_qty
    RETURNING remaining, price, per_customer_limit INTO v_left, v_price, v_limit;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    INSERT INTO flash_holdings AS h VALUES (p_sale, p_customer, p_qty)
    ON CONFLICT (sale_id, customer_id) DO UPDATE SET units = h.units + p_qty
    WHERE h.units + p_qty <= v_limit;
    IF NOT FOUND THEN
        UPDATE flash_sales SET remaining = remaining + p_qty WHERE id = p_sale;
        RETURN -2;
    END IF;
    INSERT INTO flash_orders (sale_id, customer_id, qty, total)
    VALUES (p_sale, p_customer, p_qty, v_price * p_qty);
    RETURN v_left;
END
$$;
CREATE TABLE stock (
    sku bigint PRIMARY KEY,
    qty bigint NOT NULL CHECK (qty >= 0),
    price bigint NOT NULL
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    status text NOT NULL,
    total bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders (id),
    line_no int NOT NULL,
    sku bigint NOT NULL,
    qty int NOT NULL,
    unit_price bigint NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
";

/// A flash-sale purchase: `(sale, customer, quantity)`.
pub const PG_FLASH_PURCHASE: &str = "SELECT flash_purchase($1, $2, $3)";

/// A checkout line's guarded stock update (lines are sent in ascending SKU order, so
/// row locks are always taken in the same order and transactions cannot deadlock).
pub const PG_RESERVE_LINE: &str =
    "UPDATE stock SET qty = qty - $2 WHERE sku = $1 AND qty >= $2 RETURNING price";

/// The order row and its line rows, in one statement.
pub const PG_INSERT_ORDER: &str = "
WITH o AS (
    INSERT INTO orders (email, status, total) VALUES ($1, 'pending_payment', $2) RETURNING id
)
INSERT INTO order_lines (order_id, line_no, sku, qty, unit_price)
SELECT o.id, l.n, l.sku, l.qty, l.price
FROM o, unnest($3::bigint[], $4::int[], $5::bigint[]) WITH ORDINALITY AS l (sku, qty, price, n)
RETURNING order_id";

/// The payment: the order turns paid (only from pending) and a payment row is added.
pub const PG_PAY: &str = "
WITH p AS (
    UPDATE orders SET status = 'paid' WHERE id = $1 AND status = 'pending_payment'
    RETURNING id, total
)
INSERT INTO payments (order_id, amount) SELECT id, total FROM p RETURNING id";

/// Redis's flash-sale purchase: customer `ARGV[1]` takes `ARGV[2]` units of the stock
/// at `KEYS[1]` if at least that many are left and the units they hold in the hash at
/// `KEYS[2]` stay within the cap `ARGV[3]`; answers the units left, -1 when too few are
/// left, -2 when the cap refuses (the same order of checks as Emporium's).
pub const REDIS_PURCHASE_LUA: &str = "
local want = tonumber(ARGV[2])
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left < want then
  return -1
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + want > tonumber(ARGV[3]) then
  return -2
end
redis.call('HINCRBY', KEYS[2], ARGV[1], want)
return redis.call('DECRBY', KEYS[1], want)
";

/// Opens one PostgreSQL connection (its driver task runs on the runtime).
pub async fn pg_connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The durability settings in force (`synchronous_commit`, `fsync`), as `name=value`.
pub async fn pg_settings(client: &Client) -> anyhow::Result<String> {
    let rows = client
        .query(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN \
             ('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections') ORDER BY name",
            &[],
        )
        .await?;
    let mut version = client.query_one("SHOW server_version", &[]).await?.get::<_, String>(0);
    version.truncate(version.find(' ').unwrap_or(version.len()));
    let settings: Vec<String> = rows
        .iter()
        .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    Ok(format!("PostgreSQL {version}, {}", settings.join(", ")))
}

/// Writes everything out and cleans the dead rows of the last run, so one measured
/// point does not pay for the previous one's checkpoint or vacuum.
pub async fn pg_quiesce(client: &Client, tables: &str) -> anyhow::Result<()> {
    // One statement per query: VACUUM cannot run inside the implicit transaction of a
    // multi-statement query.
    client.batch_execute(&format!("VACUUM {tables}")).await?;
    client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// Opens one Redis connection (its own socket: a multiplexed connection that is never
/// cloned).
pub async fn redis_connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to {url}"))
}

/// The durability settings in force (`appendonly`, `appendfsync`), as `name=value`.
pub async fn redis_settings(
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for name in ["appendonly", "appendfsync", "save"] {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await?;
        out.push(format!("{}={}", name, pair.get(1).cloned().unwrap_or_default()));
    }
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    Ok(format!("Redis {version}, {}", out.join(", ")))
}
