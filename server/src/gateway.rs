//! The `callback` payment provider: a simulated asynchronous gateway, in process, that
//! answers an authorization later by a signed HTTP callback to this server (as real
//! gateways do with webhooks), and the signature scheme its callbacks carry.
//!
//! It decides like the test provider (`tok_visa` and `tok_mastercard` are authorized,
//! anything else declined) but only `callback_delay` after it was asked, by
//! `POST /v1/payment-callbacks/callback`. The call's id is its idempotency key: asked
//! again (after a restart lost its timer), it calls back again with the same reference.
//!
//! A callback is signed like this: the header `Emporium-Signature: t=MS,v1=HEX`, where
//! `MS` is the sending time in milliseconds since the epoch and `HEX` the lowercase hex
//! HMAC-SHA256, under the provider's secret, of `MS`, a `.`, and the raw body. A
//! callback whose time is more than [`CALLBACK_WINDOW_MS`] away from the receiver's
//! clock is refused, so a captured callback cannot be replayed later.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use emporium_engine::{Authorization, PaymentCall, PaymentProvider, ProviderError, ProviderFuture};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header a callback's signature travels in.
pub const SIGNATURE_HEADER: &str = "emporium-signature";
/// How far a callback's signing time may be from the receiver's clock.
pub const CALLBACK_WINDOW_MS: i64 = 5 * 60 * 1000;
/// The provider's name.
pub const NAME: &str = "callback";
/// Deliveries of one callback, at most (at-least-once, until a 2xx or a 4xx).
const DELIVERIES_MAX: u32 = 6;

/// What a callback says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// The payment call answered.
    pub call_id: String,
    /// The provider's reference of the call.
    pub reference: String,
    /// `authorized` or `declined`.
    pub status: String,
    /// The card brand (with `authorized`).
    #[serde(default)]
    pub card_brand: String,
    /// Why (with `declined`).
    #[serde(default)]
    pub message: String,
}

/// `t=MS,v1=HEX` for `body` sent at `at_ms`.
pub fn sign(secret: &[u8], at_ms: i64, body: &[u8]) -> String {
    let digest = mac(secret, at_ms, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at_ms},v1={hex}")
}

fn mac(secret: &[u8], at_ms: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(at_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a signature header against `body` at `now_ms`: why it does not verify, if it
/// does not. The comparison is in constant time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_ms: i64) -> Result<(), &'static str> {
    let (mut at, mut hex) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => at = value.parse::<i64>().ok(),
            Some(("v1", value)) => hex = Some(value),
            _ => {}
        }
    }
    let (Some(at), Some(hex)) = (at, hex) else {
        return Err("the signature header must be t=MILLISECONDS,v1=HEX");
    };
    if now_ms.abs_diff(at) > CALLBACK_WINDOW_MS.unsigned_abs() {
        return Err("the callback was signed too long ago (or in the future)");
    }
    let bytes = decode_hex(hex).ok_or("the signature is not lowercase hex")?;
    mac(secret, at, body).verify_slice(&bytes).map_err(|_| "the signature does not verify")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2)
        || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// The simulated asynchronous gateway. Cheap to clone (clones share it).
#[derive(Clone, Debug)]
pub struct CallbackGateway {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    secret: Vec<u8>,
    delay: Duration,
    /// This server's address, where callbacks go; set once it is bound.
    target: OnceLock<SocketAddr>,
    /// Calls with a callback on its way: at most one each (asked again meanwhile, the
    /// gateway lets the pending one answer), so they are bounded by the open calls.
    pending: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl CallbackGateway {
    /// A gateway with a fresh random secret, calling back after `delay`.
    pub fn new(delay: Duration) -> CallbackGateway {
        let secret: [u8; 32] = rand::random();
        let shared = Shared {
            secret: secret.to_vec(),
            delay,
            target: OnceLock::new(),
            pending: Default::default(),
        };
        CallbackGateway { inner: Arc::new(shared) }
    }

    /// The secret its callbacks are signed with.
    pub fn secret(&self) -> &[u8] {
        &self.inner.secret
    }

    /// Where callbacks go: this server's listening address (a wildcard address is
    /// reached on loopback).
    pub fn set_target(&self, mut addr: SocketAddr) {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = self.inner.target.set(addr);
    }

    /// Sends `body` to the target, signed, until it is taken (2xx) or refused (4xx),
    /// with exponential backoff between tries.
    async fn deliver(self, target: SocketAddr, body: CallbackBody) {
        let body = serde_json::to_vec(&body).expect("a callback serializes");
        for attempt in 0..DELIVERIES_MAX {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let signature = sign(&self.inner.secret, crate::app::now_ms(), &body);
            match post(target, &body, &signature).await {
                Ok(status) if status < 500 && status != 429 => {
                    if status >= 400 {
                        tracing::warn!(status, "the payment callback was refused");
                    }
                    return;
                }
                Ok(status) => tracing::info!(status, "payment callback not taken; retrying"),
                Err(error) => tracing::info!(%error, "payment callback failed; retrying"),
            }
        }
    }
}

/// One POST of a callback; its status.
async fn post(target: SocketAddr, body: &[u8], signature: &str) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("/v1/payment-callbacks/{NAME}"))
        .header(http::header::HOST, target.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(Bytes::copy_from_slice(body)))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| anyhow::anyhow!("no answer in 10 s"))??;
    let status = answer.status().as_u16();
    let _ = answer.into_body().collect().await;
    Ok(status)
}

impl PaymentProvider for CallbackGateway {
    fn name(&self) -> &str {
        NAME
    }

    fn authorize<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, Authorization> {
        let Some(&target) = self.inner.target.get() else {
            let why = "the gateway does not know where to call back yet".to_string();
            return Box::pin(std::future::ready(Err(ProviderError::Unavailable(why))));
        };
        let reference = format!("cb_{}", call.id);
        let (status, card_brand, message) = match call.token.as_str() {
            "tok_visa" => ("authorized", "visa", ""),
            "tok_mastercard" => ("authorized", "mastercard", ""),
            "tok_declined" => ("declined", "", "the card was declined"),
            _ => ("declined", "", "the gateway takes tok_visa, tok_mastercard or tok_declined"),
        };
        let body = CallbackBody {
            call_id: call.id.to_string(),
            reference: reference.clone(),
            status: status.into(),
            card_brand: card_brand.into(),
            message: message.into(),
        };
        if self.inner.pending.lock().insert(body.call_id.clone()) {
            let (gateway, delay) = (self.clone(), self.inner.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let call_id = body.call_id.clone();
                gateway.clone().deliver(target, body).await;
                gateway.inner.pending.lock().remove(&call_id);
            });
        }
        Box::pin(std::future::ready(Ok(Authorization::Pending { reference })))
    }

    fn capture<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn void<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Refunds at once (the gateway's refunds are synchronous), of a charge it made.
    fn refund<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, String> {
        let answer = if call.charge_reference.starts_with("cb_") {
            Ok(format!("cb_{}", call.id))
        } else {
            Err(ProviderError::Declined("the gateway made no such charge".into()))
        };
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let header = sign(b"secret", 1_000_000, b"{}");
        assert_eq!(verify(b"secret", &header, b"{}", 1_000_000), Ok(()));
        assert_eq!(
            verify(b"secret", &header, b"{} ", 1_000_000),
            Err("the signature does not verify")
        );
        assert_eq!(
            verify(b"other", &header, b"{}", 1_000_000),
            Err("the signature does not verify")
        );
        let late = 1_000_000 + CALLBACK_WINDOW_MS + 1;
        assert!(verify(b"secret", &header, b"{}", late).is_err(), "outside the replay window");
        let forged = header.replace("t=1000000", "t=1000001");
        assert!(verify(b"secret", &forged, b"{}", 1_000_000).is_err(), "the time is signed");
        assert!(verify(b"secret", "v1=zz", b"{}", 1_000_000).is_err());
        assert!(verify(b"secret", "t=1000000,v1=abc", b"{}", 1_000_000).is_err());
        let early = sign(b"secret", 1_000_000 + CALLBACK_WINDOW_MS + 1, b"{}");
        assert!(verify(b"secret", &early, b"{}", 1_000_000).is_err(), "from the future");
        for t in [i64::MIN, i64::MAX, -1] {
            let header = format!("t={t},v1=00");
            assert!(verify(b"secret", &header, b"{}", 1_000_000).is_err(), "t={t}");
        }
    }
}
