//! Webhook deliveries: each webhook follows the durable log as the registered consumer
//! `webhook.<id>` and POSTs the event feed's records of its types to its URL, one at a
//! time and in log order.
//!
//! - **Signed**: `Emporium-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//!   "<t>.<body>" under the webhook's secret>`; a receiver checks it in constant time and
//!   refuses a `t` more than five minutes from its clock (the replay window).
//!   `Emporium-Event-Id` (the record's id, stable across redeliveries: receivers
//!   deduplicate on it) and `Emporium-Event-Type` come with it.
//! - **At least once**: the consumer advances past an entry only once each of its
//!   records was delivered (a 2xx) or given up, so a restart — or a SIGKILL — resends
//!   from the last position made durable; nothing is skipped.
//! - **Retried** after a failure (an error, a timeout, a status other than 2xx) with
//!   exponential backoff and jitter (the base delay doubled per attempt, up to 5
//!   minutes, half of it random), up to `attempts_max` attempts; then the record goes
//!   to the dead letters (durable, through the engine) and the next one follows.
//! - **A breaker per endpoint**: after 5 failures in a row it opens for `breaker_ms`
//!   (no attempt), then lets one attempt through (half open): a success closes it, a
//!   failure opens it again.
//! - **No SSRF**: the URL's host is resolved at each attempt and only a public address
//!   is connected to (not loopback, private, link-local, shared, multicast or
//!   unspecified), unless `allow_private` is configured; the connection goes to the
//!   address checked, so a name that changes its answer between check and use gains
//!   nothing. A URL that writes such an address ([`written_address`]: `127.1` too) is
//!   refused when the webhook is made. `https://` is verified against the system's CA
//!   bundle.
//!
//! Deliveries run on the primary only; a standby starts them when promoted.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use emporium_engine::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::watch;

use crate::wire::rfc3339;

/// The prefix of each webhook's log consumer.
pub const CONSUMER_PREFIX: &str = "webhook.";

/// The signature header.
pub const SIGNATURE_HEADER: &str = "emporium-signature";

/// Attempts kept per webhook for `GET /v1/admin/webhooks/{id}/deliveries`.
pub const HISTORY_MAX: usize = 100;

/// Failures in a row that open an endpoint's breaker.
pub const BREAKER_FAILURES: u32 = 5;

const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where the system's CA bundle may be (Debian and Ubuntu, Fedora and RHEL, Alpine and
/// others, openSUSE), unless `SSL_CERT_FILE` names it.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// How the deliveries go.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Deliver to loopback and private addresses too (tests, a shop's own network).
    pub allow_private: bool,
    /// How long one attempt may take.
    pub timeout_ms: u64,
    /// Attempts before a record goes to the dead letters.
    pub attempts_max: u32,
    /// The first retry's delay.
    pub backoff_ms: u64,
    /// How long the breaker stays open.
    pub breaker_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            timeout_ms: 5_000,
            attempts_max: 8,
            backoff_ms: 1_000,
            breaker_ms: 30_000,
        }
    }
}

/// One attempt to deliver a record.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// The record's id.
    pub event_id: String,
    /// The record's type.
    pub event_type: String,
    /// Its number, from 1.
    pub attempt: u32,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// When it started.
    pub at: String,
}

/// Where a webhook's deliveries are.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryStatus {
    /// The last log position fully delivered (or given up).
    pub position: u64,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Until when it is open.
    pub open_until: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Records delivered since the start.
    pub delivered: u64,
    /// Failed attempts since the start.
    pub failed_attempts: u64,
    /// Records given up since the start.
    pub dead_lettered: u64,
    /// Why the log skipped ahead, if the endpoint fell so far behind that the log was
    /// trimmed past it.
    pub resynchronised: Option<String>,
    #[serde(skip)]
    history: VecDeque<Attempt>,
    #[serde(skip)]
    open_until_instant: Option<Instant>,
}

struct Endpoint {
    status: Mutex<DeliveryStatus>,
    stop: watch::Sender<bool>,
}

/// The deliveries of every webhook.
pub struct Webhooks {
    engine: Engine,
    settings: WebhookSettings,
    endpoints: Mutex<HashMap<WebhookId, Arc<Endpoint>>>,
    stop: watch::Sender<bool>,
}

fn consumer_name(id: &WebhookId) -> String {
    format!("{CONSUMER_PREFIX}{}", id.text().as_str())
}

impl Webhooks {
    /// Whether deliveries may go to loopback, private and link-local addresses
    /// (`--webhook-allow-private`).
    pub fn allow_private(&self) -> bool {
        self.settings.allow_private
    }

    /// Starts following the webhooks the state holds (on a primary), and the ones
    /// created later.
    pub fn start(engine: Engine, settings: WebhookSettings) -> Arc<Webhooks> {
        let (stop, mut stopped) = watch::channel(false);
        let webhooks =
            Arc::new(Webhooks { engine, settings, endpoints: Mutex::new(HashMap::new()), stop });
        let manager = webhooks.clone();
        tokio::spawn(async move {
            loop {
                manager.reconcile();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        webhooks
    }

    /// Starts a follower per webhook without one, stops the ones of deleted webhooks.
    fn reconcile(self: &Arc<Webhooks>) {
        if *self.stop.borrow() {
            return;
        }
        let mut endpoints = self.endpoints.lock();
        if self.engine.role() != NodeRole::Primary {
            // Stepped down (or a standby): the new primary delivers; positions stay.
            for endpoint in endpoints.values() {
                let _ = endpoint.stop.send(true);
            }
            endpoints.clear();
            return;
        }
        let webhooks = self.engine.state().webhooks();
        endpoints.retain(|id, endpoint| {
            let keep = webhooks.iter().any(|w| w.id == *id);
            if !keep {
                let _ = endpoint.stop.send(true);
            }
            keep
        });
        // The consumers of webhooks gone (deleted here, on a former primary, or while
        // their follower was starting) hold the log for nobody.
        for (name, _) in self.engine.consumers() {
            let known = webhooks.iter().any(|w| consumer_name(&w.id) == name);
            if name.starts_with(CONSUMER_PREFIX) && !known {
                let _ = self.engine.unregister_consumer(&name);
            }
        }
        for webhook in webhooks {
            if endpoints.contains_key(&webhook.id) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let endpoint = Arc::new(Endpoint {
                status: Mutex::new(DeliveryStatus { breaker: "closed", ..Default::default() }),
                stop,
            });
            endpoints.insert(webhook.id, endpoint.clone());
            let exit = Exit { webhooks: self.clone(), id: webhook.id, endpoint: endpoint.clone() };
            let follower = Follower { webhooks: self.clone(), webhook, endpoint, stopped };
            tokio::spawn(async move {
                let _exit = exit;
                follower.run().await;
            });
        }
    }

    /// A webhook's delivery status and its latest attempts (newest first).
    pub fn status(&self, id: &WebhookId) -> Option<(DeliveryStatus, Vec<Attempt>)> {
        let endpoint = self.endpoints.lock().get(id).cloned()?;
        let status = endpoint.status.lock();
        Some((status.clone(), status.history.iter().rev().cloned().collect()))
    }

    /// Sends a dead letter again, once; whether it was delivered (then it is dropped).
    pub async fn redeliver(&self, webhook: &Webhook, letter: &DeadLetter) -> Result<(), String> {
        let answer = send(
            &self.settings,
            webhook,
            letter.body.as_bytes(),
            &letter.event_id,
            &letter.event_type,
        )
        .await;
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                let clear = ClearDeadLetter { dead_letter_id: letter.id.to_string() };
                match self.engine.send(clear).await {
                    // Another redelivery cleared it first: delivered all the same.
                    Ok(()) | Err(EngineError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(status) => Err(format!("the endpoint answered {status}")),
            Err(error) => Err(error),
        }
    }

    /// Stops every follower (what was not delivered is sent after the restart).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        for endpoint in self.endpoints.lock().values() {
            let _ = endpoint.stop.send(true);
        }
    }
}

/// Takes a follower's endpoint out of the map when its task ends, however it ends (a
/// failure or a panic included): the next reconcile starts a new one.
struct Exit {
    webhooks: Arc<Webhooks>,
    id: WebhookId,
    endpoint: Arc<Endpoint>,
}

impl Drop for Exit {
    fn drop(&mut self) {
        let mut endpoints = self.webhooks.endpoints.lock();
        if endpoints.get(&self.id).is_some_and(|e| Arc::ptr_eq(e, &self.endpoint)) {
            endpoints.remove(&self.id);
        }
    }
}

/// One webhook's delivery loop.
struct Follower {
    webhooks: Arc<Webhooks>,
    webhook: Arc<Webhook>,
    endpoint: Arc<Endpoint>,
    stopped: watch::Receiver<bool>,
}

/// What became of a record.
enum Outcome {
    Done,
    Stopped,
}

impl Follower {
    fn engine(&self) -> &Engine {
        &self.webhooks.engine
    }

    async fn run(mut self) {
        let name = consumer_name(&self.webhook.id);
        let mut durable = self.engine().subscribe();
        let start = self.webhook.created_lsn;
        loop {
            if *self.stopped.borrow() {
                return;
            }
            let consumer = match self.engine().register_consumer(&name) {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(%error, webhook = %self.webhook.id, "cannot follow the log");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            // A new consumer starts at the log's first entry: the webhook's start is
            // its creation (once that is durable).
            let behind = consumer.position() < start;
            if behind && (self.engine().durable_lsn() < start || consumer.advance(start).is_err()) {
                if self.pause(Duration::from_millis(10)).await {
                    return;
                }
                continue;
            }
            // A read of the store: off the runtime's threads.
            let reader = consumer.clone();
            let read = tokio::task::spawn_blocking(move || reader.read(64)).await;
            let read = read.unwrap_or_else(|e| Err(EngineError::Unavailable(e.to_string())));
            let entries = match read {
                Ok(entries) => entries,
                Err(EngineError::LogTrimmed { requested, first }) if consumer.is_dropped() => {
                    // Fell so far behind that the log let it go: what was trimmed
                    // cannot be sent.
                    let why = format!(
                        "the log was trimmed past this endpoint: entries {} to {} were not delivered",
                        requested.0,
                        first.0.saturating_sub(1)
                    );
                    tracing::warn!(webhook = %self.webhook.id, "{why}");
                    self.endpoint.status.lock().resynchronised = Some(why);
                    let _ = self.engine().unregister_consumer(&name);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, webhook = %self.webhook.id, "reading the log failed");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if entries.is_empty() {
                tokio::select! {
                    _ = durable.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.stopped.changed() => return,
                }
                continue;
            }
            let webhook = self.webhook.clone();
            let types: Vec<&str> = webhook.events.iter().map(String::as_str).collect();
            for entry in &entries {
                let (records, _) = crate::handlers::events::page(
                    std::slice::from_ref(entry),
                    &types,
                    usize::MAX,
                    0,
                );
                for record in records {
                    if let Outcome::Stopped = self.deliver(record).await {
                        return;
                    }
                }
                let _ = consumer.advance(entry.lsn);
                self.endpoint.status.lock().position = entry.lsn.0;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sleeps `pause`; whether the follower was stopped meanwhile.
    async fn pause(&mut self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => *self.stopped.borrow(),
            _ = self.stopped.changed() => true,
        }
    }

    /// Delivers one record, retrying, until it is taken or given up.
    async fn deliver(&mut self, record: Value) -> Outcome {
        let settings = self.webhooks.settings.clone();
        let event_id = record["id"].as_str().unwrap_or_default().to_string();
        let event_type = record["type"].as_str().unwrap_or_default().to_string();
        let body = serde_json::to_vec(&record).expect("a JSON value serializes");
        let mut attempt = 0;
        loop {
            // Deleted: not one more delivery (the manager stops this follower soon).
            if self.engine().state().webhook(&self.webhook.id).is_none() {
                return Outcome::Stopped;
            }
            // An open breaker lets nothing through until it half-opens.
            let wait = self.endpoint.status.lock().open_until_instant;
            if let Some(until) = wait {
                let now = Instant::now();
                if until > now && self.pause(until - now).await {
                    return Outcome::Stopped;
                }
                let mut status = self.endpoint.status.lock();
                status.breaker = "half_open";
                status.open_until = None;
                status.open_until_instant = None;
            }
            attempt += 1;
            let started = Instant::now();
            let at = rfc3339(self.engine().now_ms());
            let answer = send(&settings, &self.webhook, &body, &event_id, &event_type).await;
            let delivered = matches!(answer, Ok(status) if (200..300).contains(&status));
            let error = match &answer {
                Ok(status) if !delivered => Some(format!("the endpoint answered {status}")),
                Ok(_) => None,
                Err(error) => Some(error.clone()),
            };
            {
                let mut status = self.endpoint.status.lock();
                if status.history.len() == HISTORY_MAX {
                    status.history.pop_front();
                }
                status.history.push_back(Attempt {
                    event_id: event_id.clone(),
                    event_type: event_type.clone(),
                    attempt,
                    status: answer.as_ref().ok().copied(),
                    error: error.clone(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    at,
                });
                if delivered {
                    status.delivered += 1;
                    status.consecutive_failures = 0;
                    status.breaker = "closed";
                    return Outcome::Done;
                }
                status.failed_attempts += 1;
                status.consecutive_failures += 1;
                if status.consecutive_failures >= BREAKER_FAILURES {
                    let until = Instant::now() + Duration::from_millis(settings.breaker_ms);
                    status.breaker = "open";
                    status.open_until_instant = Some(until);
                    status.open_until =
                        Some(rfc3339(self.engine().now_ms() + settings.breaker_ms as i64));
                }
            }
            let error = error.unwrap_or_default();
            if attempt >= settings.attempts_max {
                return self.give_up(&event_id, &event_type, &body, attempt, error).await;
            }
            if self.pause(backoff(&settings, attempt)).await {
                return Outcome::Stopped;
            }
        }
    }

    /// Records a dead letter; retried until the engine takes it (the record is not
    /// passed over before).
    async fn give_up(
        &mut self,
        event_id: &str,
        event_type: &str,
        body: &[u8],
        attempts: u32,
        error: String,
    ) -> Outcome {
        let mut body = String::from_utf8_lossy(body).into_owned();
        if body.len() > DEAD_LETTER_BODY_MAX {
            // Kept whole where it fits; past the limit, cut at a character boundary.
            let cut = (0..=DEAD_LETTER_BODY_MAX).rev().find(|&i| body.is_char_boundary(i));
            body.truncate(cut.unwrap_or(0));
        }
        let letter = RecordDeadLetter {
            webhook_id: self.webhook.id,
            event_id: event_id.to_string(),
            event_type: event_type.to_string(),
            body,
            attempts,
            last_error: error,
        };
        loop {
            match self.engine().send(letter.clone()).await {
                Ok(_) => {
                    self.endpoint.status.lock().dead_lettered += 1;
                    return Outcome::Done;
                }
                // Deleted meanwhile (nothing left to deliver to), or no longer the
                // primary (the new one delivers).
                Err(EngineError::NotFound { .. } | EngineError::ReadOnlyStandby) => {
                    return Outcome::Stopped
                }
                Err(error) => {
                    tracing::warn!(%error, webhook = %self.webhook.id, "cannot record a dead letter");
                    if self.pause(Duration::from_secs(1)).await {
                        return Outcome::Stopped;
                    }
                }
            }
        }
    }
}

/// The delay after failed attempt `attempt`: the base doubled per attempt, at most 5
/// minutes, of which a random half.
fn backoff(settings: &WebhookSettings, attempt: u32) -> Duration {
    jittered(Duration::from_millis(settings.backoff_ms), attempt - 1, BACKOFF_MAX)
}

/// `base` doubled `doublings` times, capped at `max`, the upper half of it random.
pub(crate) fn jittered(base: Duration, doublings: u32, max: Duration) -> Duration {
    let full = base.saturating_mul(1 << doublings.min(20)).min(max);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// `t=<seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp_s},v1={hex}")
}

/// The address a URL's host writes, if it writes one rather than a name: an IPv6
/// address in brackets, or an IPv4 address in any form the resolver reads as one
/// (`inet_aton`'s: one to four parts, each decimal, `0x` hexadecimal or `0` octal, the
/// last filling the bytes left), so that `127.1`, `2130706433` and `0x7f.0.0.1` are
/// known for the loopback address they are. `None` for a name.
pub fn written_address(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse().ok();
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = match part.get(..2) {
            Some("0x" | "0X") => (&part[2..], 16),
            _ if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
            _ => (*part, 10),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        values.push(u32::from_str_radix(digits, radix).ok()?);
    }
    let (last, leading) = values.split_last()?;
    let mut address = 0u32;
    for (i, &byte) in leading.iter().enumerate() {
        address |= u32::from(u8::try_from(byte).ok()?) << (24 - 8 * i);
    }
    // The last part fills the bytes the others left, and no more.
    if u64::from(*last) >> (32 - 8 * leading.len()) != 0 {
        return None;
    }
    Some(IpAddr::V4(std::net::Ipv4Addr::from(address | last)))
}

/// Whether deliveries may go to `ip`: a public unicast address.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), IETF protocol
                // assignments, and benchmarking.
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() {
                return false;
            }
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            match v6.segments() {
                // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d).
                [0, 0, 0, 0, 0, 0xffff | 0, hi, lo] => embedded(hi, lo),
                // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
                // 6to4 (2002::/16) embeds its IPv4 relay's address.
                [0x2002, hi, lo, ..] => embedded(hi, lo),
                // Local NAT64 (64:ff9b:1::/48), Teredo (2001::/32), documentation
                // (2001:db8::/32).
                [0x64, 0xff9b, 1, ..] | [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
                // Unique local (fc00::/7), link-local (fe80::/10), site-local
                // (fec0::/10).
                [first, ..] => {
                    (first & 0xfe00) != 0xfc00
                        && (first & 0xffc0) != 0xfe80
                        && (first & 0xffc0) != 0xfec0
                }
            }
        }
    }
}

/// The TLS client of `https://` deliveries: built once the CA bundle is found (until
/// then each delivery looks again, and fails saying where it looked).
fn tls_client() -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    static CLIENT: OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let named = std::env::var("SSL_CERT_FILE").ok();
    let paths = named.iter().map(String::as_str).chain(CA_BUNDLES);
    let mut errors = Vec::new();
    for path in paths {
        match emporium_replication::tls::client_config(std::path::Path::new(path)) {
            Ok(config) => return Ok(CLIENT.get_or_init(|| Arc::new(config)).clone()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!("https: no CA bundle ({})", errors.join("; ")))
}

/// One POST of `body` to the webhook; the answer's status.
async fn send(
    settings: &WebhookSettings,
    webhook: &Webhook,
    body: &[u8],
    event_id: &str,
    event_type: &str,
) -> Result<u16, String> {
    let timeout = Duration::from_millis(settings.timeout_ms);
    let post = post(settings, webhook, Outgoing { body, event_id, event_type });
    match tokio::time::timeout(timeout, post).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer in {} ms", settings.timeout_ms)),
    }
}

/// What one delivery POSTs.
struct Outgoing<'a> {
    body: &'a [u8],
    event_id: &'a str,
    event_type: &'a str,
}

async fn post(
    settings: &WebhookSettings,
    webhook: &Webhook,
    Outgoing { body, event_id, event_type }: Outgoing<'_>,
) -> Result<u16, String> {
    let uri: http::Uri = webhook.url.parse().map_err(|e| format!("the URL: {e}"))?;
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the URL is not http:// or https://".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    let address = addresses
        .iter()
        .copied()
        .find(|a| settings.allow_private || public(a.ip()))
        .ok_or_else(|| format!("{host} resolves to no public address: refused"))?;
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    // Host and port only: never the URL's user information.
    let authority = match uri.port_u16() {
        Some(port) if host.contains(':') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
        None if host.contains(':') => format!("[{host}]"),
        None => host.clone(),
    };
    let timestamp = unix_seconds();
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "Emporium-Webhooks/1")
        .header("emporium-webhook-id", webhook.id.to_string())
        .header("emporium-event-id", event_id)
        .header("emporium-event-type", event_type)
        .header(SIGNATURE_HEADER, signature(&webhook.secret, timestamp, body))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let answer = if https {
        let connector = tokio_rustls::TlsConnector::from(tls_client()?);
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("TLS name {host}: {e}"))?;
        let tls = connector.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(tls), request).await?
    } else {
        exchange(TokioIo::new(stream), request).await?
    };
    Ok(answer)
}

async fn exchange<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let answer = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    // The body is not used; at most 64 KiB of it is read.
    let _ = http_body_util::Limited::new(answer.into_body(), 64 * 1024).collect().await;
    Ok(status)
}

/// The wall clock's seconds, for the signature's timestamp (receivers compare it with
/// theirs).
fn unix_seconds() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_secs() as i64)
}
