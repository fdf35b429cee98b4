//! The load generator's HTTP/1.1 client: one keep-alive connection per virtual client,
//! requests sent one after another on it (no pipelining), bodies read whole.
//!
//! It is deliberately thin, as `wrk` is: the request is written into one buffer and sent
//! with one write, the answer's head is parsed in place by `httparse` (hyper's parser)
//! and its body read by `Content-Length` or chunks, all on the virtual client's own task.
//! No pool, no redirects, no retries, and no connection task beside the caller's: a
//! client over hyper's connection (a task per connection, a channel between it and the
//! caller) took 26–31 µs of CPU per flash-sale purchase where this one takes 19, and on a
//! two-core machine whatever the generator takes is taken from the server under test.
//! It never interprets a response: checking what came back is the caller's job
//! ([`super::check`]).

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most header lines an answer may have.
const HEADERS_MAX: usize = 64;

/// The largest answer head read.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// The largest answer body read.
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` (empty when absent).
    pub content_type: HeaderValue,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Whether the body was declared as JSON (`application/json` or a `+json` type).
    pub fn is_json(&self) -> bool {
        let media = self.content_type.as_bytes();
        let media = media.split(|&b| b == b';').next().unwrap_or_default();
        media == b"application/json" || media.ends_with(b"+json")
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    wire: Wire,
    /// The request being written.
    output: Vec<u8>,
    /// The server closed it, said it would, or it failed mid-answer.
    closed: bool,
}

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

impl Conn {
    /// Connects to `addr` (TCP_NODELAY on, as every HTTP benchmark client does).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        Ok(Conn {
            addr,
            host: addr.to_string(),
            wire: Wire::connect(addr).await?,
            output: Vec::with_capacity(1024),
            closed: false,
        })
    }

    /// The address it is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server closed the connection (a reconnect is needed).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        if self.closed {
            bail!("the connection is closed");
        }
        self.write_request(&method, path, headers, body.as_deref());
        let sent = self.wire.stream.write_all(&self.output).await;
        if let Err(error) = sent {
            self.closed = true;
            return Err(error).context("sending the request");
        }
        let reply = self.read_reply(method == Method::HEAD).await;
        if reply.is_err() {
            self.closed = true;
        }
        reply
    }

    fn write_request(
        &mut self,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<&[u8]>,
    ) {
        let out = &mut self.output;
        out.clear();
        for part in [method.as_str(), " ", path, " HTTP/1.1\r\nhost: ", &self.host, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = body {
            out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }

    async fn read_reply(&mut self, head_only: bool) -> anyhow::Result<Reply> {
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.wire.input)? {
                    break head;
                }
                if self.wire.input.len() > HEAD_BYTES_MAX {
                    bail!("an answer head longer than {HEAD_BYTES_MAX} bytes");
                }
                self.wire.fill().await?;
            };
            self.wire.input.advance(head.used);
            let Head { status, content_type, framing, keep, .. } = head;
            // An interim answer (100 Continue) is followed by the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let bodiless = head_only || status == 204 || status == 304;
            let body = match framing {
                _ if bodiless => Bytes::new(),
                Framing::Length(length) => self.wire.read_exactly(length, BODY_BYTES_MAX).await?,
                Framing::Chunked => self.read_chunked().await?,
                Framing::Close => self.read_to_end().await?,
            };
            if !keep {
                self.closed = true;
            }
            return Ok(Reply { status, content_type, body });
        }
    }

    async fn read_chunked(&mut self) -> anyhow::Result<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let line = self.wire.read_line(HEAD_BYTES_MAX).await?;
            let size = line[..].split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size).ok().map(str::trim).unwrap_or_default();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("a chunk size of {size:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.wire.read_line(HEAD_BYTES_MAX).await?.is_empty() {}
                return Ok(body.freeze());
            }
            if size > BODY_BYTES_MAX - body.len() {
                bail!("a chunked answer body above {BODY_BYTES_MAX} bytes");
            }
            let chunk = self.wire.read_exactly(size, BODY_BYTES_MAX).await?;
            body.extend_from_slice(&chunk);
            if !self.wire.read_line(HEAD_BYTES_MAX).await?.is_empty() {
                bail!("a chunk not followed by CRLF");
            }
        }
    }

    async fn read_to_end(&mut self) -> anyhow::Result<Bytes> {
        loop {
            if self.wire.input.len() > BODY_BYTES_MAX {
                bail!("an answer body above {BODY_BYTES_MAX} bytes");
            }
            if self.wire.read_more().await? == 0 {
                self.closed = true;
                return Ok(self.wire.input.split().freeze());
            }
        }
    }

    /// `GET path`.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, headers, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, headers, Some(body.into())).await
    }
}

/// A TCP connection and what was read from it and not yet used: the framing both lean
/// clients (this one and [`super::resp`]) read through.
pub(crate) struct Wire {
    pub(crate) stream: TcpStream,
    pub(crate) input: BytesMut,
}

impl Wire {
    /// Connects to `addr`, TCP_NODELAY on (as every benchmark client does).
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Wire> {
        let stream =
            TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Wire { stream, input: BytesMut::with_capacity(16 * 1024) })
    }

    /// Reads more into the input: how much (0 at the end of the stream).
    pub(crate) async fn read_more(&mut self) -> anyhow::Result<usize> {
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.input).await.context("reading the answer")
    }

    /// Reads more into the input; the end of the stream is an error.
    pub(crate) async fn fill(&mut self) -> anyhow::Result<()> {
        if self.read_more().await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    /// The next line, without its CRLF; a line longer than `max` is an error.
    pub(crate) async fn read_line(&mut self, max: usize) -> anyhow::Result<BytesMut> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = self.input.split_to(end);
                self.input.advance(2);
                return Ok(line);
            }
            if self.input.len() > max {
                bail!("a line longer than {max} bytes");
            }
            self.fill().await?;
        }
    }

    /// The next `length` bytes; more than `max` is an error.
    pub(crate) async fn read_exactly(
        &mut self,
        length: usize,
        max: usize,
    ) -> anyhow::Result<Bytes> {
        if length > max {
            bail!("{length} bytes, above the {max} read at most");
        }
        while self.input.len() < length {
            self.fill().await?;
        }
        Ok(self.input.split_to(length).freeze())
    }
}

/// What an answer's head says.
struct Head {
    status: u16,
    content_type: HeaderValue,
    framing: Framing,
    /// Whether the connection stays open after the answer.
    keep: bool,
    /// The head's length in bytes.
    used: usize,
}

/// An answer's head, if the input holds all of it.
fn parse_head(input: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(input).context("parsing the answer's head")? {
        httparse::Status::Complete(used) => used,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("an answer without a status")?;
    let mut keep = response.version == Some(1);
    let mut content_type = HeaderValue::from_static("");
    let mut framing = Framing::Close;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-type") {
            content_type = HeaderValue::from_bytes(header.value).context("a content type")?;
        } else if name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                let length =
                    std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse().ok());
                framing = Framing::Length(length.context("a malformed Content-Length")?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if header.value.eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if header.value.eq_ignore_ascii_case(b"close") {
                keep = false;
            } else if header.value.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            }
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        framing = Framing::Length(0);
    } else if matches!(framing, Framing::Close) {
        keep = false;
    }
    Ok(Some(Head { status, content_type, framing, keep, used }))
}

/// `Authorization: Bearer token`.
pub fn bearer(token: &str) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is header-safe");
    (http::header::AUTHORIZATION, value)
}

/// `Idempotency-Key: key`.
pub fn idempotency(key: &str) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(key).expect("idempotency keys are printable ASCII");
    (HeaderName::from_static("idempotency-key"), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request (read up to its blank line, and its body by
    /// `content-length`) with the next canned answer, and hands back what it read.
    async fn serve(answers: Vec<&'static [u8]>) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let start = seen.len();
                let mut buf = [0u8; 4096];
                loop {
                    let text = &seen[start..];
                    if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&text[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if text.len() >= end + 4 + length {
                            break;
                        }
                    }
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before its request was whole");
                    seen.extend_from_slice(&buf[..n]);
                }
                // Sent in two pieces, so that a head and a body arrive apart.
                let (first, second) = answer.split_at(answer.len() / 2);
                socket.write_all(first).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                socket.write_all(second).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn requests_are_written_whole_and_answers_read_by_their_framing() {
        let (addr, server) = serve(vec![
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"id\":\"x\"}\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\netag: \"1\"\r\n\r\n",
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let mut conn = Conn::connect(addr).await.unwrap();
        let key = idempotency("k-1");
        let reply = conn.post("/v1/things", &[key], "{\"a\":1}").await.unwrap();
        assert_eq!((reply.status, &reply.body[..]), (201, &b"{\"id\":\"x\"}\n"[..]));
        assert!(reply.is_json());
        let reply = conn.get("/v1/chunks?q=1", &[]).await.unwrap();
        assert_eq!((reply.status, &reply.body[..]), (200, &b"hello, world"[..]));
        assert_eq!(reply.content_type, "text/plain");
        assert!(!reply.is_json());
        let reply = conn.get("/v1/same", &[]).await.unwrap();
        assert_eq!((reply.status, reply.body.len()), (304, 0));
        assert!(!conn.is_closed());
        let reply = conn.get("/v1/last", &[]).await.unwrap();
        assert_eq!(reply.status, 409);
        assert!(reply.is_json());
        assert!(conn.is_closed(), "the server said it closes");
        assert!(conn.get("/v1/after", &[]).await.is_err());
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        let host = addr.to_string();
        assert_eq!(
            seen,
            format!(
                "POST /v1/things HTTP/1.1\r\nhost: {host}\r\nidempotency-key: k-1\r\n\
                 content-type: application/json\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}\
                 GET /v1/chunks?q=1 HTTP/1.1\r\nhost: {host}\r\n\r\n\
                 GET /v1/same HTTP/1.1\r\nhost: {host}\r\n\r\n\
                 GET /v1/last HTTP/1.1\r\nhost: {host}\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn a_connection_closed_mid_answer_is_an_error_and_closed() {
        let (addr, server) =
            serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this much"]).await;
        let mut conn = Conn::connect(addr).await.unwrap();
        let error = conn.get("/", &[]).await.unwrap_err();
        assert!(format!("{error:#}").contains("closed"), "{error:#}");
        assert!(conn.is_closed());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_chunk_larger_than_any_body_is_refused() {
        let (addr, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nx",
        ])
        .await;
        let mut conn = Conn::connect(addr).await.unwrap();
        let error = conn.get("/", &[]).await.unwrap_err();
        assert!(format!("{error:#}").contains("above"), "{error:#}");
        assert!(conn.is_closed());
        server.await.unwrap();
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(head).is_err(), "{}", String::from_utf8_lossy(head));
        }
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }
}
