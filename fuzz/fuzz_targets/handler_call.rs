//! Any bytes as the parts of a call to any route's handler, in process (no socket, so
//! it runs thousands of times faster than `http_request`): a byte picks the route (all
//! of them), a byte the caller (anonymous, customer, staff, admin), and the rest, split
//! at 0xFF bytes, gives the path parameters, the query string, the JSON body, `If-Match`
//! and `Idempotency-Key`. Every JSON request body and every query string reaches its
//! parser and validation this way. Never a 5xx, never a panic (libFuzzer's panic hook
//! aborts even on a panic the server would catch).
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use emporium_engine::{CustomerId, Role};
use emporium_server::app::App;
use emporium_server::auth::Principal;
use emporium_server::http::{run_handler, Call};
use emporium_server::routes::ROUTES;
use http::{HeaderMap, HeaderValue};

struct Target {
    runtime: tokio::runtime::Runtime,
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = common::config(&dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let app = runtime.block_on(App::open(config)).expect("the app opens");
        Target { runtime, app, _dir: dir }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = target();
    let [route, caller, rest @ ..] = data else { return };
    let route = &ROUTES[usize::from(*route) % ROUTES.len()];
    let principal = match caller % 4 {
        0 => Principal::Anonymous,
        n => Principal::User {
            id: CustomerId::from_seq(u64::from(caller / 4)),
            role: [Role::Customer, Role::Staff, Role::Admin][usize::from(n - 1)],
        },
    };
    let mut parts = rest.split(|&b| b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    // Path parameters: one part each, or a demo product's id when the part is empty.
    let names: Vec<&str> =
        route.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
    let params = names
        .iter()
        .map(|name| {
            let value = match next() {
                [] => "prod_000000000001".to_string(),
                part => text(part),
            };
            (name.to_string(), value)
        })
        .collect();
    let query = text(next());
    let body = Bytes::copy_from_slice(next());
    let mut headers = HeaderMap::new();
    for name in ["if-match", "idempotency-key"] {
        if let Ok(value) = HeaderValue::from_bytes(next()) {
            if !value.is_empty() {
                headers.insert(name, value);
            }
        }
    }
    let call = Call {
        app: target.app.clone(),
        principal,
        params,
        path: route.path.to_string(),
        query,
        headers,
        body,
        request_id: "req_fuzz".to_string(),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        route,
    };
    let outcome = target.runtime.block_on(run_handler(&target.app, call));
    if let Err(problem) = outcome {
        assert!(
            problem.status < 500,
            "{} {} answered {}: {}",
            route.method,
            route.path,
            problem.status,
            problem.detail
        );
    }
});
