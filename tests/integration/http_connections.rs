//! Connections under attack: one client holding many slow connections, a head sent a
//! line at a time, idle keep-alive connections. A client gets at most its share of
//! connections, past a cap a connection is refused at once with a 503 (never left to
//! wait in the listen backlog), and silent or slow connections are closed at their
//! deadline, while other clients' requests go on answering at their usual latency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::http_support::TestServer;

const PER_CLIENT: usize = 16;
const TOTAL: usize = 48;

fn server() -> TestServer {
    TestServer::with(|config| {
        config.connections_max = TOTAL;
        config.connections_per_client_max = PER_CLIENT;
        config.header_timeout_s = 2;
        config.idle_timeout_s = 3;
    })
}

fn addr(s: &TestServer) -> SocketAddr {
    s.url("").trim_start_matches("http://").parse().unwrap()
}

/// A connection from loopback address `from` (127.0.0.x: all of 127/8 is loopback).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// What the server did with a connection within `wait`: answered (the first bytes),
/// closed it, or nothing yet.
#[derive(Debug, PartialEq)]
enum Seen {
    Answer(String),
    Closed,
    Nothing,
}

fn seen(stream: &mut TcpStream, wait: Duration) -> Seen {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 512];
    match stream.read(&mut buffer) {
        Ok(0) => Seen::Closed,
        Ok(n) => Seen::Answer(String::from_utf8_lossy(&buffer[..n]).to_string()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Seen::Nothing
        }
        Err(_) => Seen::Closed,
    }
}

/// A whole GET from another address, timed.
fn get_from(from: [u8; 4], to: SocketAddr, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = connect_from(from, to);
    // A refused connection may be closed before the request is written: the answer is
    // what counts.
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n");
    let mut answer = Vec::new();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    (answer, started.elapsed())
}

#[test]
fn slow_connections_from_one_client_do_not_stall_another() {
    let s = server();
    let to = addr(&s);
    // Many more half-sent heads from one address than its share, or the total.
    let mut slow: Vec<TcpStream> = (0..TOTAL + 20)
        .map(|_| {
            let mut stream = connect_from([127, 0, 0, 1], to);
            let _ = stream.write_all(b"GET /v1/products HTTP/1.1\r\nhost: shop\r\n");
            stream
        })
        .collect();
    // Refusals are written at once: wait (bounded) until every connection past the
    // client's share has its answer.
    let mut outcomes: Vec<Seen> = slow.iter().map(|_| Seen::Nothing).collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    while outcomes.iter().filter(|o| **o != Seen::Nothing).count() < TOTAL + 20 - PER_CLIENT
        && Instant::now() < deadline
    {
        for (connection, outcome) in slow.iter_mut().zip(outcomes.iter_mut()) {
            if *outcome == Seen::Nothing {
                *outcome = seen(connection, Duration::from_millis(1));
            }
        }
    }
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Seen::Answer(a) if a.starts_with("HTTP/1.1 503") && a.contains("overloaded")))
        .count();
    let waiting = outcomes.iter().filter(|o| **o == Seen::Nothing).count();
    assert_eq!(waiting, PER_CLIENT, "one client holds exactly its share: {outcomes:?}");
    assert_eq!(refused, TOTAL + 20 - PER_CLIENT, "the rest are refused at once");

    // Another client is served as usual meanwhile.
    let (answer, took) = get_from([127, 0, 0, 2], to, "/v1/products");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(1), "another client waited {took:?}");

    // The slow ones are closed once their head deadline (2 s) passes.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, connection) in slow.iter_mut().enumerate() {
        if outcomes[i] != Seen::Nothing {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        assert_ne!(seen(connection, left), Seen::Nothing, "slow connection {i} was kept");
    }
    let metrics = s.get("/metrics").send();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("emporium_connections_refused_total"), "{text}");
}

#[test]
fn past_the_total_cap_a_new_client_is_refused_at_once() {
    let s = server();
    let to = addr(&s);
    // Full shares from three addresses fill the total.
    let mut held: Vec<TcpStream> = Vec::new();
    for client in 0..(TOTAL / PER_CLIENT) as u8 {
        for _ in 0..PER_CLIENT {
            let mut stream = connect_from([127, 0, 1, client], to);
            stream.write_all(b"GET /v1/products HTTP/1.1\r\n").unwrap();
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    for connection in &mut held {
        assert_eq!(seen(connection, Duration::from_millis(2)), Seen::Nothing);
    }
    let started = Instant::now();
    let (answer, _) = get_from([127, 0, 2, 1], to, "/v1/products");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1), "the refusal waited");
    drop(held);
    // Their places come back: the same client is served once they are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (answer, _) = get_from([127, 0, 2, 1], to, "/v1/products");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the places never came back: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_head_sent_a_line_at_a_time_is_cut_at_its_deadline() {
    let s = server();
    let mut stream = connect_from([127, 0, 0, 3], addr(&s));
    let started = Instant::now();
    stream.write_all(b"GET /v1/products HTTP/1.1\r\n").unwrap();
    let mut closed_after = None;
    for line in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        if write!(stream, "x-trickle-{line}: 1\r\n").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if seen(&mut stream, Duration::from_millis(1)) != Seen::Nothing {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a trickled head was kept for 6 s");
    // The deadline is for the whole head (2 s), not per line.
    assert!(closed_after < Duration::from_secs(4), "closed after {closed_after:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = server();
    let mut stream = connect_from([127, 0, 0, 4], addr(&s));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: shop\r\n\r\n").unwrap();
    assert!(
        matches!(seen(&mut stream, Duration::from_secs(2)), Seen::Answer(a) if a.starts_with("HTTP/1.1 200"))
    );
    let started = Instant::now();
    let outcome = seen(&mut stream, Duration::from_secs(6));
    assert_eq!(outcome, Seen::Closed, "an idle connection was kept {:?}", started.elapsed());
}

/// A client that shuts its sending side right after its request (as `nc -N` and some
/// proxies do) still gets the whole answer: found by the HTTP fuzz target, whose first
/// input got an empty reply.
#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let s = server();
    let mut stream = connect_from([127, 0, 0, 5], addr(&s));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: shop\r\n\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// What the server answers a `GET /healthz` whose head carries `fields` after its
/// first two (`host`, `connection: close`).
fn answer_to_head(s: &TestServer, from: [u8; 4], fields: &[String]) -> String {
    let mut stream = connect_from(from, addr(s));
    let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n");
    for field in fields {
        head.push_str(field);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A request head holds at most 100 header fields: one more is refused with 431
/// Request Header Fields Too Large, and 100 are served.
#[test]
fn a_head_of_more_than_a_hundred_fields_is_refused() {
    let s = server();
    // Two fields are the helper's own.
    let fields = |n: usize| (2..n).map(|i| format!("x-field-{i}: {i}")).collect::<Vec<_>>();
    let hundred = answer_to_head(&s, [127, 0, 0, 6], &fields(100));
    assert!(hundred.starts_with("HTTP/1.1 200"), "{hundred:?}");
    let more = answer_to_head(&s, [127, 0, 0, 6], &fields(101));
    assert!(more.starts_with("HTTP/1.1 431"), "{more:?}");
}

/// A request head is at most 64 KiB: a larger one is refused with 431 before any route
/// runs, and one just below is served.
#[test]
fn a_head_of_more_than_64_kib_is_refused() {
    let s = server();
    let field = |bytes: usize| vec![format!("x-big: {}", "a".repeat(bytes))];
    let below = answer_to_head(&s, [127, 0, 0, 7], &field(60 * 1024));
    assert!(below.starts_with("HTTP/1.1 200"), "{}", &below[..below.len().min(200)]);
    let above = answer_to_head(&s, [127, 0, 0, 7], &field(65 * 1024));
    assert!(above.starts_with("HTTP/1.1 431"), "{}", &above[..above.len().min(200)]);
}
