//! Runs one command kind many times on the sequencer's code path, for an instruction
//! count under callgrind: a figure that does not move with the machine's load, where
//! the wall-clock criterion benchmark (`benches/engine.rs`) moves by 20% between runs
//! on a shared two-core machine.
//!
//! The state holds the same 10,000 stocked products as `benches/engine.rs`; the inputs
//! (carts for checkouts) are prepared first; only `measured` runs the commands, so
//! callgrind's `--toggle-collect` counts them alone:
//!
//! ```text
//! cargo build --release -p emporium-bench --example command_instructions
//! valgrind --tool=callgrind --toggle-collect='*command_instructions*measured*' \
//!     target/release/examples/command_instructions checkout_1_line 20000
//! ```
//!
//! Instructions per command = the reported total (`Collected`) / the count. Kinds:
//! `create_product`, `checkout_1_line`, `checkout_1_line_1m_orders` (after a million
//! pending orders, as the `apply_1m_orders` group).

use std::fmt::Debug;

use emporium_bench::{checkout, product, set_stock, sku, STOCK_ON_HAND, T0};
use emporium_engine::domain::{execute, Context, Limits};
use emporium_engine::{AddCartItem, CreateCart, Request, State};
use rand::rngs::StdRng;
use rand::SeedableRng;

const CATALOG_PRODUCTS: u64 = 10_000;

struct Fixture {
    state: State,
    ids: StdRng,
    limits: Limits,
    commands: u64,
}

impl Fixture {
    fn run<R: Request + Debug>(&mut self, command: &R) -> R::Output {
        self.commands += 1;
        let now = T0 + (self.commands / 100) as i64;
        let mut ctx = Context { now, ids: &mut self.ids, limits: &self.limits };
        match execute(&self.state, command, &mut ctx) {
            Ok((_, reply)) => reply,
            Err(e) => panic!("command {command:?} failed: {e}"),
        }
    }

    fn cart(&mut self, n: u64) -> String {
        let cart_id = self.run(&CreateCart::default()).id.to_string();
        let sku = sku(n % CATALOG_PRODUCTS);
        self.run(&AddCartItem { cart_id: cart_id.clone(), sku, quantity: 1 });
        cart_id
    }
}

#[inline(never)]
fn measured<R: Request + Debug>(fixture: &mut Fixture, commands: &[R]) {
    let started = std::time::Instant::now();
    for command in commands {
        std::hint::black_box(fixture.run(command));
    }
    let each = started.elapsed().as_nanos() as f64 / commands.len().max(1) as f64;
    eprintln!("{:.0} ns per command (wall clock, this machine, this moment)", each);
}

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "checkout_1_line".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let mut f = Fixture {
        state: State::new(),
        ids: StdRng::seed_from_u64(1),
        limits: Limits::default(),
        commands: 0,
    };
    for n in 0..CATALOG_PRODUCTS {
        f.run(&product(n));
        f.run(&set_stock(n, STOCK_ON_HAND));
    }
    match kind.as_str() {
        "create_product" => {
            let commands: Vec<_> =
                (CATALOG_PRODUCTS..CATALOG_PRODUCTS + count).map(product).collect();
            measured(&mut f, &commands);
        }
        "checkout_1_line" | "checkout_1_line_1m_orders" => {
            if kind.ends_with("1m_orders") {
                for n in 0..1_000_000 {
                    let cart = f.cart(n);
                    f.run(&checkout(cart));
                }
            }
            let commands: Vec<_> = (0..count).map(|n| checkout(f.cart(n))).collect();
            measured(&mut f, &commands);
        }
        other => panic!("unknown kind {other:?}"),
    }
    eprintln!("{count} × {kind}");
}
