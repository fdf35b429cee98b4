//! The endpoint handlers, one module per resource. Each reads its [`Call`], sends a
//! command to the engine or reads its state, and answers an [`Out`] or a [`Problem`].

pub mod accounts;
pub mod carts;
pub mod catalog;
pub mod events;
pub mod flash_sales;
pub mod inventory;
pub mod notifications;
pub mod ops;
pub mod orders;
pub mod promotions;
pub mod recommendations;
pub mod returns;
pub mod reviews;
pub mod search;
pub mod shipping;
pub mod stats;
pub mod webhooks;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;

use emporium_engine::{
    IdempotencyKey, IdempotencyRecord, IdempotentOutcome, RecordResponse, Recorded,
    RecordedResponse, Request, State,
};

use crate::app::{now_ms, App};
use crate::auth::{perm, Principal};
use crate::http::{Call, Out};
use crate::problem::Problem;

/// How long a recorded outcome is replayed (the engine forgets it after the same time).
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The request's `Idempotency-Key`, scoped to the caller and the endpoint instance.
/// Required where the route says so.
///
/// A replay hands its caller the first request's resource, so a key must never be shared
/// between callers. An authenticated caller's keys are its own. An anonymous caller has
/// no identity to scope by, so its key is honoured only where the path names a resource
/// it already holds (a guest cart's id or a guest order's id, unguessable bearer
/// credentials: `/v1/carts/{id}/checkout`, `/v1/orders/{id}/payments`); anywhere else
/// (creating a guest cart, registering) the key is ignored: the request runs as if it had
/// none, and is never answered with another caller's resource.
pub(crate) fn idempotency_key(call: &Call) -> Result<Option<ScopedKey>, Problem> {
    // A name made once: looking a header up by a string parses the name every time.
    const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
    let Some(raw) = call.headers.get(IDEMPOTENCY_KEY) else {
        return match call.route.idempotency {
            Some(true) => {
                Err(Problem::malformed("this endpoint requires an Idempotency-Key header"))
            }
            _ => Ok(None),
        };
    };
    let key = Some(raw.as_bytes())
        .filter(|k| (1..=255).contains(&k.len()) && k.iter().all(|b| (0x20..0x7f).contains(b)))
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(|| {
            Problem::malformed("Idempotency-Key must be 1-255 printable ASCII characters")
        })?;
    let mut scoped = String::with_capacity(48 + key.len());
    if !call.principal.push_key(&mut scoped) {
        if !call.route.path.contains('{') {
            return Ok(None);
        }
        scoped.push_str("anonymous");
    }
    scoped.push('|');
    crate::wire::push_hex(&mut scoped, fnv(call.path.as_bytes()).into(), 16);
    let scope_len = scoped.len();
    scoped.push(IdempotencyKey::SCOPE_END);
    scoped.push_str(key);
    Ok(Some(ScopedKey { scoped, scope_len }))
}

/// An idempotency key as the engine stores it ([`IdempotencyKey::scoped`]: the scope,
/// [`IdempotencyKey::SCOPE_END`], the key), made in one string: a request refused without reading its key's
/// record needs no more.
pub(crate) struct ScopedKey {
    scoped: String,
    scope_len: usize,
}

impl ScopedKey {
    /// The key as the engine's commands take it.
    fn key(&self) -> IdempotencyKey {
        IdempotencyKey {
            scope: self.scoped[..self.scope_len].to_string(),
            key: self.scoped[self.scope_len + IdempotencyKey::SCOPE_END.len_utf8()..].to_string(),
        }
    }
}

/// The idempotency keys whose first request is still running, each held as a 64-bit
/// SipHash of its scoped key under this process's random key: hashed before the lock
/// is taken, nothing allocated under it. Two keys that share a hash would make the
/// second answer 409 while the first runs; with a secret key nobody can aim for that,
/// and by chance it is one in 2^64 per pair in flight together.
#[derive(Default)]
pub struct InFlightKeys {
    hasher: std::hash::RandomState,
    keys: parking_lot::Mutex<std::collections::HashSet<u64, foldhash::fast::FixedState>>,
    /// How many keys `keys` holds, written under its lock: read without it, so that
    /// a request refused by the published state (a sold-out sale, where nothing is in
    /// flight) neither hashes its key nor takes the lock the other workers take.
    held: std::sync::atomic::AtomicUsize,
}

/// Marks an idempotency key as being worked on; a second request with it while the
/// first runs gets 409 `request_in_progress`.
pub(crate) struct InFlight {
    app: Arc<App>,
    key: String,
    hash: u64,
}

impl InFlightKeys {
    fn hash(&self, scoped: &str) -> u64 {
        self.hasher.hash_one(scoped)
    }

    /// Whether the scoped key is in flight. A key marked after the count was read is
    /// not seen: its request came after this one.
    fn holds(&self, scoped: &str) -> bool {
        self.held.load(std::sync::atomic::Ordering::Acquire) != 0
            && self.keys.lock().contains(&self.hash(scoped))
    }
}

fn request_in_progress() -> Problem {
    Problem::new(
        409,
        "request_in_progress",
        "Request in progress",
        "a request with this Idempotency-Key is still being processed",
    )
}

impl InFlight {
    pub(crate) fn enter(app: &Arc<App>, key: ScopedKey) -> Result<InFlight, Problem> {
        let hash = app.in_flight.hash(&key.scoped);
        let mut keys = app.in_flight.keys.lock();
        if !keys.insert(hash) {
            return Err(request_in_progress());
        }
        app.in_flight.held.store(keys.len(), std::sync::atomic::Ordering::Release);
        drop(keys);
        Ok(InFlight { app: app.clone(), key: key.scoped, hash })
    }

    /// The key as the engine stores it ([`IdempotencyKey::scoped`]).
    pub(crate) fn scoped(&self) -> &str {
        &self.key
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut keys = self.app.in_flight.keys.lock();
        keys.remove(&self.hash);
        self.app.in_flight.held.store(keys.len(), std::sync::atomic::Ordering::Release);
    }
}

/// The record of the scoped key `scoped`, unless it has outlived its replay window.
fn live_record(call: &Call, scoped: &str) -> Option<Arc<IdempotencyRecord>> {
    let record = call.app.engine.state().idempotency_record(scoped)?;
    (record.created_at + IDEMPOTENCY_TTL_MS > now_ms()).then_some(record)
}

/// The recorded answer for the key `guard` holds, if a live one exists: replayed when
/// `print` (the request's fingerprint) matches, else 422 `idempotency_key_reused`.
fn recorded_answer(call: &Call, guard: &InFlight, print: u64) -> Result<Option<Out>, Problem> {
    let Some(record) = live_record(call, guard.scoped()) else { return Ok(None) };
    match &record.outcome {
        IdempotentOutcome::Response(response) if record.fingerprint == print => Ok(Some(Out {
            body: (!response.body.is_empty()).then(|| response.body.clone()),
            replayed: true,
            ..Out::status(response.status)
        })),
        _ => Err(crate::problem::Problem::from(emporium_engine::EngineError::IdempotencyKeyReused)),
    }
}

/// Runs `run` once per idempotency key: a retry with the same key and body gets the
/// recorded status and body; with another body, 422 `idempotency_key_reused`. Only
/// successes are recorded, so a refused request may be retried.
///
/// The answer is recorded by a second command after `run`, so a crash in between lets
/// a retry run twice: only for work that is not an engine command (a checkpoint).
/// Engine commands use [`idempotent_send`], which records in the same log entry.
pub(crate) async fn idempotent(
    call: &Call,
    run: impl Future<Output = Result<Out, Problem>>,
) -> Result<Out, Problem> {
    let Some(scoped) = idempotency_key(call)? else { return run.await };
    let key = scoped.key();
    let guard = InFlight::enter(&call.app, scoped)?;
    let print = fnv(&call.body);
    if let Some(replay) = recorded_answer(call, &guard, print)? {
        return Ok(replay);
    }
    let out = run.await?;
    if (200..300).contains(&out.status) {
        let record = RecordResponse {
            key,
            fingerprint: print,
            status: out.status,
            body: out.body.clone().unwrap_or_default(),
        };
        if let Err(error) = call.app.engine.send(record).await {
            tracing::warn!(request_id = %call.request_id, %error, "could not record the idempotent response");
        }
    }
    Ok(out)
}

/// Sends the command `prepare` makes and answers with `render` of its output, once per
/// idempotency key: a retry with the same key and body gets the first answer; with
/// another body, 422 `idempotency_key_reused`. The answer is recorded by the engine in
/// the same log entry as the command's effect, so after a crash a retry either replays
/// it or runs for the first time, never twice. `prepare` runs only when the request is
/// not a replay (it may be costly: a password hash).
pub(crate) async fn idempotent_send<R, F>(
    call: &Call,
    prepare: impl Future<Output = Result<R, Problem>>,
    render: F,
) -> Result<Out, Problem>
where
    R: Request,
    F: Fn(&State, &R::Output) -> Out + Send + Sync + 'static,
{
    let Some(scoped) = idempotency_key(call)? else {
        let output = call.app.engine.send(prepare.await?).await?;
        return Ok(render(call.app.engine.state(), &output));
    };
    let key = scoped.key();
    let guard = InFlight::enter(&call.app, scoped)?;
    let fingerprint = fnv(&call.body);
    if let Some(replay) = recorded_answer(call, &guard, fingerprint)? {
        return Ok(replay);
    }
    let request = prepare.await?;
    let render = Arc::new(render);
    let keep = render.clone();
    let command = Recorded {
        request,
        key,
        fingerprint,
        render: Box::new(move |state, output| {
            let out = keep(state, output);
            (200..300).contains(&out.status).then(|| (out.status, out.body.unwrap_or_default()))
        }),
    };
    let output = call.app.engine.send(command).await?;
    Ok(render(call.app.engine.state(), &output))
}

/// Checkout and payment keep their successes in the engine, which replays them. A
/// declined payment is the provider's final word on that request, so it is recorded
/// here and replayed too. Other refusals changed nothing and depend on state that may
/// change (stock, the cart's lines), so a retry with the same key is decided afresh.
fn recorded_refusal(
    call: &Call,
    record: &IdempotencyRecord,
    response: &RecordedResponse,
) -> Result<Out, Problem> {
    if record.fingerprint != fnv(&call.body) {
        return Err(Problem::from(emporium_engine::EngineError::IdempotencyKeyReused));
    }
    // The original problem, but naming this request, as every problem does.
    let mut problem: serde_json::Value =
        serde_json::from_slice(&response.body).unwrap_or_else(|_| serde_json::json!({}));
    problem["request_id"] = serde_json::json!(call.request_id);
    Ok(Out {
        body: Some(serde_json::to_vec(&problem).expect("JSON values serialize")),
        content_type: "application/problem+json",
        replayed: true,
        ..Out::status(response.status)
    })
}

/// How a checkout or payment with its (required) key goes on.
pub(crate) enum Keyed {
    /// A recorded refusal, replayed.
    Replay(Out),
    /// Proceed with this key, marked in flight until the guard drops. The flag says
    /// the engine holds a success for the key: its answer will be a replay (to be
    /// marked `Idempotent-Replayed`), or a refusal when the body differs.
    Proceed(Option<IdempotencyKey>, Option<InFlight>, bool),
}

/// Reads the key of a checkout or payment, marks it in flight, and replays a recorded
/// refusal; the engine replays recorded successes itself.
pub(crate) fn begin_keyed(call: &Call) -> Result<Keyed, Problem> {
    let Some(key) = idempotency_key(call)? else { return Ok(Keyed::Proceed(None, None, false)) };
    mark_keyed(call, key)
}

/// [`begin_keyed`] for a request that the published state may refuse on its own (a
/// flash sale sold out or not live). `refusal` (a read, no write) is asked first; a
/// refused request whose key is neither in flight nor recorded answers without marking
/// its key: it reads and writes nothing of the key's, so it stands as if it came before
/// any other request with the key. Otherwise as [`begin_keyed`]: a key in flight is 409
/// `request_in_progress`, a recorded one replays.
pub(crate) fn begin_keyed_or_refuse(
    call: &Call,
    refusal: impl FnOnce() -> Option<Problem>,
) -> Result<Keyed, Problem> {
    let refused = refusal();
    let Some(key) = idempotency_key(call)? else {
        return refused.map_or(Ok(Keyed::Proceed(None, None, false)), Err);
    };
    if let Some(problem) = refused {
        if !call.app.in_flight.holds(&key.scoped) && live_record(call, &key.scoped).is_none() {
            return Err(problem);
        }
    }
    mark_keyed(call, key)
}

/// Marks the key in flight, then replays a recorded refusal or proceeds.
fn mark_keyed(call: &Call, scoped: ScopedKey) -> Result<Keyed, Problem> {
    let key = scoped.key();
    let in_flight = InFlight::enter(&call.app, scoped)?;
    // No other request with this key can run meanwhile (it is in flight), so a success
    // recorded now is the one the engine will replay.
    let replaying = match live_record(call, in_flight.scoped()) {
        None => false,
        Some(record) => match &record.outcome {
            IdempotentOutcome::Response(response) => {
                return recorded_refusal(call, &record, response).map(Keyed::Replay)
            }
            _ => true,
        },
    };
    Ok(Keyed::Proceed(Some(key), Some(in_flight), replaying))
}

/// Records `error` for `key` when it is a declined payment.
pub(crate) async fn record_refusal(
    call: &Call,
    key: Option<IdempotencyKey>,
    error: emporium_engine::EngineError,
) -> Problem {
    use emporium_engine::EngineError as E;
    let lasting = matches!(error, E::PaymentDeclined(_));
    let problem = Problem::from(error);
    if let (Some(key), true) = (key, lasting) {
        let body = problem.body(&call.request_id);
        let record =
            RecordResponse { key, fingerprint: fnv(&call.body), status: problem.status, body };
        if let Err(error) = call.app.engine.send(record).await {
            tracing::warn!(request_id = %call.request_id, %error, "could not record the refusal for its idempotency key");
        }
    }
    problem
}

/// Whether the caller may see or change a resource owned by `owner` (`None`: a guest
/// resource, reachable by anyone holding its unguessable id).
pub(crate) fn check_owner(
    call: &Call,
    owner: Option<&emporium_engine::CustomerId>,
    write: bool,
) -> Result<(), Problem> {
    let Some(owner) = owner else { return Ok(()) };
    if call.principal.customer_id() == Some(owner) {
        return Ok(());
    }
    let permission = if write { perm::ORDERS_WRITE } else { perm::ORDERS_READ };
    if call.principal.can(permission) {
        return Ok(());
    }
    match call.principal {
        Principal::Anonymous => {
            Err(Problem::unauthenticated("this belongs to an account: sign in"))
        }
        _ => Err(Problem::forbidden("this belongs to another account")),
    }
}

/// `?limit=` (1–100, default 20).
/// A list's `cursor` parameter as `parse` reads it (absent: the first page).
pub(crate) fn cursor<T>(
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Problem> {
    value
        .map(|c| parse(c).ok_or_else(|| Problem::malformed("cursor is not one this server gave")))
        .transpose()
}

/// A list's `status` filter as `parse` reads it (absent: any), naming `what` it is.
pub(crate) fn status_filter<T>(
    value: Option<&str>,
    what: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Problem> {
    value
        .map(|s| parse(s).ok_or_else(|| Problem::malformed(format!("status is not {what}"))))
        .transpose()
}

pub(crate) fn limit(value: Option<&str>) -> Result<usize, Problem> {
    match value {
        None => Ok(20),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| Problem::malformed("limit must be a whole number from 1 to 100")),
    }
}
