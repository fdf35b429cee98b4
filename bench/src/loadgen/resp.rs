//! A lean Redis client for the hot loop of the Redis baseline: a command is written as
//! one RESP array with one write and its reply read on the caller's own task, as the
//! HTTP client ([`super::http`]) does for Emporium and nginx. The `redis` crate's
//! multiplexed connection runs a task per connection with a channel to it: 15.9 µs of
//! the generator's CPU per purchase script, against 12.6 µs here. Set-up and checks
//! still use it.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use tokio::io::AsyncWriteExt;

use super::http::Wire;

/// The longest reply line read.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// The most values one reply may hold, its nested arrays' elements included.
const REPLY_VALUES_MAX: u64 = 1 << 20;

/// One Redis connection, a command at a time.
pub struct RespConn {
    wire: Wire,
    output: Vec<u8>,
}

/// A reply that is not an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    /// `:n`.
    Int(i64),
    /// `+text` or a bulk string.
    Text(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// An array (its elements are read and dropped).
    Array,
}

impl RespConn {
    /// Connects to `redis://HOST:PORT/` (TCP_NODELAY on).
    pub async fn connect(url: &str) -> anyhow::Result<RespConn> {
        let rest =
            url.strip_prefix("redis://").with_context(|| format!("not a redis URL: {url}"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = tokio::net::lookup_host(host)
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(RespConn { wire: Wire::connect(addr).await?, output: Vec::with_capacity(256) })
    }

    /// Sends one command and reads its reply: `Err` for a broken connection, `Ok(Err)`
    /// for an error reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Result<Value, String>> {
        let out = &mut self.output;
        out.clear();
        out.push(b'*');
        out.extend_from_slice(args.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for arg in args {
            out.push(b'$');
            out.extend_from_slice(arg.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.wire.stream.write_all(&self.output).await.context("sending the command")?;
        self.reply().await
    }

    async fn reply(&mut self) -> anyhow::Result<Result<Value, String>> {
        // Arrays are read element by element; `pending` counts what is left of them,
        // `values` what the reply has announced so far.
        let (mut pending, mut values) = (1u64, 1u64);
        let mut first = None;
        while pending > 0 {
            pending -= 1;
            let line = self.wire.read_line(LINE_BYTES_MAX).await?;
            let (&kind, rest) = line.split_first().context("an empty reply line")?;
            let rest = std::str::from_utf8(rest).context("a reply line that is not text")?;
            let number =
                || rest.parse::<i64>().with_context(|| format!("a malformed reply {rest:?}"));
            let value = match kind {
                b':' => Ok(Value::Int(number()?)),
                b'+' => Ok(Value::Text(rest.as_bytes().to_vec())),
                b'-' => Err(rest.to_string()),
                b'$' => match number()? {
                    -1 => Ok(Value::Nil),
                    length if length >= 0 => {
                        let with_end = (length as usize).saturating_add(2);
                        let text = self.wire.read_exactly(with_end, LINE_BYTES_MAX).await?;
                        let Some(text) = text.strip_suffix(b"\r\n") else {
                            bail!("a bulk reply not followed by CRLF");
                        };
                        Ok(Value::Text(text.to_vec()))
                    }
                    length => bail!("a bulk reply of {length} bytes"),
                },
                b'*' => match number()? {
                    -1 => Ok(Value::Nil),
                    length if length >= 0 => {
                        values = values.saturating_add(length as u64);
                        if values > REPLY_VALUES_MAX {
                            bail!("a reply of more than {REPLY_VALUES_MAX} values");
                        }
                        pending += length as u64;
                        Ok(Value::Array)
                    }
                    length => bail!("an array reply of {length} elements"),
                },
                other => bail!("a reply of unknown kind {:?}", other as char),
            };
            first.get_or_insert(value);
        }
        Ok(first.expect("one reply was read"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn commands_are_resp_arrays_and_replies_are_read_by_kind() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        // Each command as it must arrive, and the reply it gets.
        let exchanges: [(&[u8], &[u8]); 6] = [
            (b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$5\r\nstock\r\n", b":-2\r\n"),
            (b"*1\r\n$7\r\nEVALSHA\r\n", b"-NOSCRIPT No matching script\r\n"),
            (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"$5\r\nhello\r\n"),
            (b"*2\r\n$5\r\nHVALS\r\n$1\r\nh\r\n", b"*2\r\n$1\r\na\r\n:3\r\n"),
            (b"*2\r\n$3\r\nGET\r\n$4\r\nnone\r\n", b"$-1\r\n"),
            (b"*1\r\n$4\r\nPING\r\n", b"+OK\r\n"),
        ];
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for (command, reply) in exchanges {
                let mut seen = vec![0u8; command.len()];
                socket.read_exact(&mut seen).await.unwrap();
                assert_eq!(String::from_utf8_lossy(&seen), String::from_utf8_lossy(command));
                // In two pieces, so that a reply arrives over more than one read.
                let (first, second) = reply.split_at(reply.len() / 2);
                socket.write_all(first).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                socket.write_all(second).await.unwrap();
            }
        });
        let mut conn = RespConn::connect(&url).await.unwrap();
        let evalsha: [&[u8]; 4] = [b"EVALSHA", b"abc", b"1", b"stock"];
        assert_eq!(conn.command(&evalsha).await.unwrap(), Ok(Value::Int(-2)));
        assert_eq!(
            conn.command(&[b"EVALSHA"]).await.unwrap(),
            Err("NOSCRIPT No matching script".to_string())
        );
        assert_eq!(
            conn.command(&[b"GET", b"k"]).await.unwrap(),
            Ok(Value::Text(b"hello".to_vec()))
        );
        // An array's elements are read (and dropped), so the next reply lines up.
        assert_eq!(conn.command(&[b"HVALS", b"h"]).await.unwrap(), Ok(Value::Array));
        assert_eq!(conn.command(&[b"GET", b"none"]).await.unwrap(), Ok(Value::Nil));
        assert_eq!(conn.command(&[b"PING"]).await.unwrap(), Ok(Value::Text(b"OK".to_vec())));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(b":1").await.unwrap();
        });
        let mut conn = RespConn::connect(&url).await.unwrap();
        assert!(conn.command(&[b"INCR", b"k"]).await.is_err());
        server.await.unwrap();
        assert!(RespConn::connect("http://localhost/").await.is_err());
    }

    /// Nested arrays that announce more values than a reply may hold are refused when
    /// announced, not added up past `u64` nor read for ever.
    #[tokio::test]
    async fn a_reply_announcing_too_many_values_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let huge = format!("*{}\r\n", i64::MAX);
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            // Within the limit, then past it: an array of arrays.
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n").await.unwrap();
            let _ = socket.read(&mut buf).await.unwrap();
            socket.write_all(format!("*1\r\n{huge}{huge}").as_bytes()).await.unwrap();
            // Held open: the client must not wait for the values announced.
            let _ = socket.read(&mut buf).await;
        });
        let mut conn = RespConn::connect(&url).await.unwrap();
        assert_eq!(conn.command(&[b"LRANGE"]).await.unwrap(), Ok(Value::Array));
        let limit = std::time::Duration::from_secs(10);
        let reply = tokio::time::timeout(limit, conn.command(&[b"LRANGE"])).await;
        let error = reply.expect("the client waits for the values announced").unwrap_err();
        assert!(error.to_string().contains("more than"), "{error:#}");
        drop(conn);
        server.await.unwrap();
    }
}
