//! Any bytes as an HTTP/1.1 request to a live server (its real parser, router, JSON
//! bodies, query strings, headers and tokens): the answer is never a 5xx and the server
//! keeps answering. One server per process, on a temporary directory with a catalog.
#![no_main]

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use emporium_server::server::RunningServer;

struct Target {
    addr: SocketAddr,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = common::config(&dir);
        let server = RunningServer::start(config).expect("the server starts");
        Target { addr: server.addr(), _server: server, _dir: dir }
    })
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = target();
    // Mostly well-formed heads around the fuzzed part, so the input reaches the
    // handlers: the first byte picks a route, the rest is the body.
    const ROUTES: [&str; 8] = [
        "POST /v1/carts",
        "POST /v1/products",
        "PATCH /v1/products/prod_000000000001",
        "PUT /v1/inventory/DEMO-1",
        "POST /v1/auth/token",
        "POST /v1/auth/register",
        "GET /v1/products?limit=",
        "POST /v1/carts/x/checkout",
    ];
    let (pick, rest) = data.split_first().unwrap_or((&0, &[]));
    let request = if pick & 0x80 != 0 {
        // Raw: the parser itself.
        rest.to_vec()
    } else {
        let route = ROUTES[usize::from(*pick) % ROUTES.len()];
        let mut request = format!(
            "{route} HTTP/1.1\r\nhost: fuzz\r\ncontent-type: application/json\r\n\
             authorization: Bearer {}\r\nidempotency-key: k\r\ncontent-length: {}\r\n\r\n",
            String::from_utf8_lossy(&rest[..rest.len().min(40)]).replace(['\r', '\n'], ""),
            rest.len()
        )
        .into_bytes();
        request.extend_from_slice(rest);
        request
    };
    let answer = exchange(target.addr, &request);
    let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("");
    assert!(
        !status.starts_with('5'),
        "a 5xx for {request:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    // Still answering.
    let health =
        exchange(target.addr, b"GET /healthz HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n");
    assert!(
        health.starts_with(b"HTTP/1.1 200"),
        "the server stopped answering: {:?}",
        String::from_utf8_lossy(&health)
    );
});
