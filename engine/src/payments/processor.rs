//! The payment processor: makes the provider calls the outbox records, through a
//! circuit breaker per provider and retries with exponential backoff and full jitter,
//! and records every answer. It scans the open calls when told to ([`kick`]) and every
//! `poll` interval, so a call left open by a crash is finished after a restart.
//!
//! What it does with an open call:
//! - `pending`: authorize; an authorization is recorded and captured at once, a
//!   `Pending` answer is recorded as `awaiting_callback`, a decline as `declined`.
//! - `awaiting_callback`: wait for the callback; past `callback_wait` ask the
//!   provider again (the call's id is the idempotency key, so it cannot charge twice).
//! - `authorized`: capture; a declined capture is voided.
//! - any open charge older than `give_up_after` that is not captured is voided with the
//!   provider and recorded `voided`; the order can then be paid again or expire.
//! - a refund: asked of the provider, recorded `refunded` (the refund is made) or
//!   `declined`; never given up, since the money is owed.
//!
//! A provider that cannot be reached leaves its calls open (and their orders held) and
//! retries them: what the provider did is unknown until it answers.
//!
//! [`kick`]: PaymentProcessor::kick

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use super::{
    AdvanceCall, Authorization, CallKind, CallStatus, PaymentCall, PaymentProvider, ProviderError,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{EngineError, Result};
use crate::kernel::replica::NodeRole;
use crate::kernel::runtime::Engine;
use crate::types::*;

/// How the processor retries, breaks circuits and gives up.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// Calls to a provider per attempt at a step, retries included.
    pub attempts: u32,
    /// The first retry's backoff ceiling; doubled per retry (full jitter: a random
    /// wait up to the ceiling).
    pub backoff_base: Duration,
    /// The largest backoff ceiling.
    pub backoff_max: Duration,
    /// Consecutive failures that open a provider's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one trial call.
    pub breaker_cooldown: Duration,
    /// How long a call awaiting a callback waits before the provider is asked again.
    pub callback_wait: Duration,
    /// How old an open call may grow before it is voided.
    pub give_up_after: Duration,
    /// How often the open calls are scanned when nothing kicks the processor.
    pub poll: Duration,
    /// Calls in progress at once, at most.
    pub concurrency: usize,
    /// The clock calls' ages are read with (the engine's).
    pub clock: Arc<dyn Clock>,
}

impl Default for ProcessorConfig {
    fn default() -> ProcessorConfig {
        ProcessorConfig {
            attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            callback_wait: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
            poll: Duration::from_millis(250),
            concurrency: 64,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The backoff before retry `retry` (from 0): a random wait up to
/// `min(max, base × 2^retry)` ("full jitter"), so clients that failed together do not
/// retry together.
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << retry.min(20)).min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(if nanos == 0 { 0 } else { rand::random::<u64>() % (nanos + 1) })
}

/// Where a circuit breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once, until the cooldown ends.
    Open,
    /// One trial call is let through; its outcome closes or reopens the circuit.
    HalfOpen,
}

impl BreakerState {
    /// The name metrics and logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    opened_at: Option<Instant>,
    trial: bool,
}

/// A circuit breaker: `failures_max` consecutive failures open it; after `cooldown`
/// one trial call is let through, and its success closes it.
#[derive(Debug)]
pub struct CircuitBreaker {
    failures_max: u32,
    cooldown: Duration,
    inner: Mutex<Breaker>,
    opened: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(failures_max: u32, cooldown: Duration) -> CircuitBreaker {
        CircuitBreaker {
            failures_max: failures_max.max(1),
            cooldown,
            inner: Mutex::new(Breaker { failures: 0, opened_at: None, trial: false }),
            opened: AtomicU64::new(0),
        }
    }

    /// Whether a call may go through now (in half-open, only the one trial).
    pub fn allow(&self) -> bool {
        let mut b = self.inner.lock();
        match b.opened_at {
            None => true,
            Some(at) if at.elapsed() >= self.cooldown && !b.trial => {
                b.trial = true;
                true
            }
            Some(_) => false,
        }
    }

    /// A call succeeded (or the provider answered, even with a decline).
    pub fn success(&self) {
        let mut b = self.inner.lock();
        *b = Breaker { failures: 0, opened_at: None, trial: false };
    }

    /// A call failed.
    pub fn failure(&self) {
        let mut b = self.inner.lock();
        b.failures = b.failures.saturating_add(1);
        if b.trial || (b.opened_at.is_none() && b.failures >= self.failures_max) {
            b.opened_at = Some(Instant::now());
            b.trial = false;
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Where it is.
    pub fn state(&self) -> BreakerState {
        let b = self.inner.lock();
        match b.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() >= self.cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// How many times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// What the processor has done, for metrics.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    /// Calls made to providers (retries included).
    pub provider_calls: AtomicU64,
    /// Provider calls that failed and were retried or left for later.
    pub provider_failures: AtomicU64,
    /// Calls recorded captured.
    pub captured: AtomicU64,
    /// Calls recorded declined.
    pub declined: AtomicU64,
    /// Calls recorded voided.
    pub voided: AtomicU64,
    /// Refund calls recorded refunded.
    pub refunded: AtomicU64,
}

struct Provider {
    provider: Arc<dyn PaymentProvider>,
    breaker: CircuitBreaker,
}

struct Inner {
    engine: Engine,
    providers: HashMap<String, Provider>,
    config: ProcessorConfig,
    /// Calls being worked on now.
    busy: Mutex<HashMap<PaymentCallId, ()>>,
    /// Calls to come back to later: when, how many passes failed, and the status they
    /// had (a call whose status changed meanwhile, by a callback, is due at once).
    later: Mutex<HashMap<PaymentCallId, (Instant, u32, CallStatus)>>,
    permits: Semaphore,
    wake: Notify,
    stopped: AtomicBool,
    stats: ProcessorStats,
}

/// Makes the provider calls the outbox records ([`crate::StartCharge`]) and records
/// their answers ([`AdvanceCall`]). Cheap to clone; stopped by [`PaymentProcessor::stop`]
/// (it keeps its engine open until then).
///
/// # Example
///
/// ```
/// use emporium_engine::*;
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(EngineConfig::new(dir.path()))?;
/// let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
/// let call = runtime.block_on(async {
///     let variant = VariantInput {
///         sku: "MUG".into(),
///         title: "Mug".into(),
///         options: BTreeMap::new(),
///         price: MoneyInput { amount: 1200, currency: "USD".into() },
///     };
///     let product = CreateProduct {
///         handle: None,
///         title: "Mug".into(),
///         description: String::new(),
///         brand: "Acme".into(),
///         category_ids: vec![],
///         attributes: BTreeMap::new(),
///         status: Some(ProductStatus::Active),
///         variants: vec![variant],
///     };
///     engine.send(product).await?;
///     engine.send(SetStock { sku: "MUG".into(), on_hand: 3, ..Default::default() }).await?;
///     let cart = engine.send(CreateCart::default()).await?;
///     let item = AddCartItem { cart_id: cart.id.to_string(), sku: "MUG".into(), quantity: 1 };
///     engine.send(item).await?;
///     let email = Some("ann@example.com".to_string());
///     let order =
///         engine.send(Checkout { cart_id: cart.id.to_string(), email, ..Default::default() }).await?;
///
///     // The provider: any `PaymentProvider`; here the built-in test one.
///     let providers: Vec<Arc<dyn PaymentProvider>> = vec![Arc::new(TestProvider)];
///     let processor = PaymentProcessor::start(engine.clone(), providers, ProcessorConfig::default())?;
///     let charge = StartCharge {
///         order_id: order.id.to_string(),
///         provider: "test".into(),
///         method: "test_card".into(),
///         token: "tok_visa".into(),
///         idempotency: None,
///     };
///     let call = engine.send(charge).await?; // recorded before the provider is asked
///     processor.kick();
///     let call = processor.answered(call.id, Duration::from_secs(10)).await;
///     processor.stop();
///     Ok::<_, EngineError>(call.expect("the call exists"))
/// })?;
/// assert_eq!(call.status, CallStatus::Captured);
/// assert_eq!(engine.state().order(&call.order_id).unwrap().status, OrderStatus::Paid);
/// engine.close();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PaymentProcessor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PaymentProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentProcessor").field("providers", &self.provider_names()).finish()
    }
}

impl PaymentProcessor {
    /// Starts the processor on the current tokio runtime with these providers (their
    /// names must differ). It first finishes the calls a previous run left open.
    pub fn start(
        engine: Engine,
        providers: Vec<Arc<dyn PaymentProvider>>,
        config: ProcessorConfig,
    ) -> Result<PaymentProcessor> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| EngineError::Unavailable("the processor needs a tokio runtime".into()))?;
        let mut named = HashMap::new();
        for provider in providers {
            let name = provider.name().to_string();
            let breaker = CircuitBreaker::new(config.breaker_failures, config.breaker_cooldown);
            if named.insert(name.clone(), Provider { provider, breaker }).is_some() {
                return Err(EngineError::field("providers", format!("{name} is named twice")));
            }
        }
        let inner = Arc::new(Inner {
            engine,
            providers: named,
            permits: Semaphore::new(config.concurrency.max(1)),
            config,
            busy: Mutex::new(HashMap::new()),
            later: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            stats: ProcessorStats::default(),
        });
        runtime.spawn(run(inner.clone()));
        Ok(PaymentProcessor { inner })
    }

    /// The providers' names.
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.providers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether a provider of this name is configured.
    pub fn has_provider(&self, name: &str) -> bool {
        self.inner.providers.contains_key(name)
    }

    /// A provider's circuit breaker state.
    pub fn breaker(&self, provider: &str) -> Option<BreakerState> {
        self.inner.providers.get(provider).map(|p| p.breaker.state())
    }

    /// How many times a provider's circuit breaker has opened.
    pub fn breaker_openings(&self, provider: &str) -> Option<u64> {
        self.inner.providers.get(provider).map(|p| p.breaker.times_opened())
    }

    /// What it has done.
    pub fn stats(&self) -> &ProcessorStats {
        &self.inner.stats
    }

    /// Scans the open calls now (after a new call or a callback).
    pub fn kick(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits until the call is no longer `pending` or `authorized` (answered, settled
    /// or awaiting a callback), for up to `limit`; returns it as it then is.
    pub async fn answered(&self, id: PaymentCallId, limit: Duration) -> Option<Arc<PaymentCall>> {
        let state = self.inner.engine.state();
        let mut lsn = self.inner.engine.subscribe();
        let until = tokio::time::Instant::now() + limit;
        loop {
            let call = state.payment_call(&id)?;
            if !matches!(call.status, CallStatus::Pending | CallStatus::Authorized) {
                return Some(call);
            }
            match tokio::time::timeout_at(until, lsn.changed()).await {
                Ok(Ok(())) => {}
                _ => return state.payment_call(&id),
            }
        }
    }

    /// Stops it (calls in progress finish their current step).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

async fn run(inner: Arc<Inner>) {
    while !inner.stopped.load(Ordering::Acquire) {
        if inner.engine.role() == NodeRole::Primary && inner.engine.failure().is_none() {
            scan(&inner);
        }
        let _ = tokio::time::timeout(inner.config.poll, inner.wake.notified()).await;
    }
}

/// Starts work on every open call that is not in progress or waiting to retry.
fn scan(inner: &Arc<Inner>) {
    let now = Instant::now();
    let calls = inner.engine.state().open_payment_calls();
    let open: std::collections::HashSet<PaymentCallId> = calls.iter().map(|c| c.id).collect();
    inner.later.lock().retain(|id, _| open.contains(id));
    for call in calls {
        let waiting = inner
            .later
            .lock()
            .get(&call.id)
            .is_some_and(|(at, _, status)| *at > now && *status == call.status);
        if waiting {
            continue;
        }
        let Ok(permit) = inner.permits.try_acquire() else { return };
        if inner.busy.lock().insert(call.id, ()).is_some() {
            continue;
        }
        permit.forget();
        let busy = Busy { inner: inner.clone(), id: call.id };
        tokio::spawn(async move {
            // Released however the pass ends, a provider's panic included.
            let busy = busy;
            work(&busy.inner, call.id).await;
        });
    }
}

/// A call in progress: its place and its permit are given back when dropped.
struct Busy {
    inner: Arc<Inner>,
    id: PaymentCallId,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.inner.busy.lock().remove(&self.id);
        self.inner.permits.add_permits(1);
    }
}

/// One pass over one call: as far as the provider lets it go. The call is read now
/// (a callback may have moved it since the scan), and left alone once settled.
async fn work(inner: &Arc<Inner>, id: PaymentCallId) {
    let Some(call) = inner.engine.state().payment_call(&id).filter(|c| c.status.is_open()) else {
        return;
    };
    let age_ms = inner.config.clock.now_ms().saturating_sub(call.created_at);
    let too_old =
        age_ms > i64::try_from(inner.config.give_up_after.as_millis()).unwrap_or(i64::MAX);
    // An authorization is captured (retried until it is), never given up: the provider
    // may have taken the money already.
    let give_up_now =
        too_old && call.kind == CallKind::Charge && call.status != CallStatus::Authorized;
    let Some(provider) = inner.providers.get(&call.provider) else {
        if give_up_now {
            // Nobody here can ask this provider: given up without its word.
            let why = format!(
                "the provider {} is not configured here: given up without asking it",
                call.provider
            );
            tracing::error!(call = %call.id, provider = %call.provider, "{why}");
            if advance(inner, &call, CallStatus::Voided, "", "", &why).await.is_ok() {
                inner.stats.voided.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if !inner.later.lock().contains_key(&call.id) {
            tracing::warn!(call = %call.id, provider = %call.provider, "a payment call names a provider that is not configured; it waits until it is, or until it is given up");
        }
        retry_later(inner, &call, true);
        return;
    };
    // A refund owed is never given up: it is retried until the provider answers.
    let outcome = if call.kind == CallKind::Refund {
        refund(inner, provider, &call).await.map(|()| None)
    } else if give_up_now {
        give_up(inner, provider, &call, "the provider did not settle the payment in time")
            .await
            .map(|()| None)
    } else {
        step(inner, provider, &call).await
    };
    match outcome {
        Ok(None) => {
            inner.later.lock().remove(&call.id);
        }
        Ok(Some(wait)) => {
            // Only a call awaiting its callback waits; the callback makes it due.
            let entry = (Instant::now() + wait, 0, CallStatus::AwaitingCallback);
            inner.later.lock().insert(call.id, entry);
        }
        Err(error) if error == MOVED_ON => {
            inner.later.lock().remove(&call.id);
        }
        Err(error) => {
            inner.stats.provider_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(call = %call.id, %error, "a payment call will be tried again");
            retry_later(inner, &call, true);
        }
    }
}

/// Schedules the call's next pass after a backoff that grows with each failed pass.
fn retry_later(inner: &Inner, call: &PaymentCall, failed: bool) {
    let mut later = inner.later.lock();
    let passes = later.get(&call.id).map_or(0, |(_, n, _)| *n) + u32::from(failed);
    let c = &inner.config;
    let wait = backoff(passes, c.backoff_base, c.backoff_max).max(c.backoff_base);
    let status = inner.engine.state().payment_call(&call.id).map_or(call.status, |c| c.status);
    later.insert(call.id, (Instant::now() + wait, passes, status));
}

/// Takes the call as far as the provider lets it go now. `Some(wait)`: nothing failed,
/// but the next pass is not due before `wait` (a callback is awaited).
async fn step(
    inner: &Arc<Inner>,
    provider: &Provider,
    call: &PaymentCall,
) -> Result<Option<Duration>, String> {
    let mut call = call.clone();
    let callback_wait = inner.config.callback_wait;
    if matches!(call.status, CallStatus::Pending | CallStatus::AwaitingCallback) {
        if call.status == CallStatus::AwaitingCallback {
            let waited = inner.config.clock.now_ms().saturating_sub(call.updated_at);
            let waited = Duration::from_millis(u64::try_from(waited).unwrap_or(0));
            if waited < callback_wait {
                return Ok(Some(callback_wait - waited));
            }
        }
        match attempt(inner, provider, || provider.provider.authorize(&call)).await {
            Ok(Authorization::Authorized { reference, card_brand }) => {
                call = advance(inner, &call, CallStatus::Authorized, &reference, &card_brand, "")
                    .await?;
            }
            Ok(Authorization::Pending { reference }) => {
                if call.status == CallStatus::Pending {
                    advance(inner, &call, CallStatus::AwaitingCallback, &reference, "", "").await?;
                }
                // Asked again, or for the first time: the callback settles it.
                return Ok(Some(callback_wait));
            }
            Err(ProviderError::Declined(why)) => {
                advance(inner, &call, CallStatus::Declined, "", "", &why).await?;
                inner.stats.declined.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    if call.status == CallStatus::Authorized {
        match attempt(inner, provider, || provider.provider.capture(&call)).await {
            Ok(()) => {
                advance(inner, &call, CallStatus::Captured, "", "", "").await?;
                inner.stats.captured.fetch_add(1, Ordering::Relaxed);
            }
            Err(ProviderError::Declined(why)) => {
                give_up(inner, provider, &call, &format!("the capture was declined: {why}"))
                    .await?;
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(None)
}

/// Asks the provider for a refund and records its answer.
async fn refund(inner: &Arc<Inner>, provider: &Provider, call: &PaymentCall) -> Result<(), String> {
    match attempt(inner, provider, || provider.provider.refund(call)).await {
        Ok(reference) => {
            advance(inner, call, CallStatus::Refunded, &reference, "", "").await?;
            inner.stats.refunded.fetch_add(1, Ordering::Relaxed);
        }
        Err(ProviderError::Declined(why)) => {
            advance(inner, call, CallStatus::Declined, "", "", &why).await?;
            inner.stats.declined.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => return Err(error.to_string()),
    }
    Ok(())
}

/// Voids the call with the provider, then records it voided.
async fn give_up(
    inner: &Arc<Inner>,
    provider: &Provider,
    call: &PaymentCall,
    why: &str,
) -> Result<(), String> {
    match attempt(inner, provider, || provider.provider.void(call)).await {
        // Nothing to void is as good as voided.
        Ok(()) | Err(ProviderError::Declined(_)) => {}
        Err(error) => return Err(error.to_string()),
    }
    advance(inner, call, CallStatus::Voided, "", "", why).await?;
    inner.stats.voided.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Calls the provider through its breaker and timeout, retrying failures with backoff.
async fn attempt<'a, T>(
    inner: &Inner,
    provider: &'a Provider,
    call: impl Fn() -> super::ProviderFuture<'a, T>,
) -> Result<T, ProviderError> {
    let c = &inner.config;
    let mut last = ProviderError::CircuitOpen;
    for retry in 0..c.attempts.max(1) {
        if retry > 0 {
            tokio::time::sleep(backoff(retry - 1, c.backoff_base, c.backoff_max)).await;
        }
        if !provider.breaker.allow() {
            return Err(ProviderError::CircuitOpen);
        }
        inner.stats.provider_calls.fetch_add(1, Ordering::Relaxed);
        let timeout = provider.provider.timeout();
        let answer = match tokio::time::timeout(timeout, call()).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Unavailable(format!("no answer in {timeout:?}"))),
        };
        match answer {
            Ok(value) => {
                provider.breaker.success();
                return Ok(value);
            }
            Err(ProviderError::Declined(why)) => {
                provider.breaker.success();
                return Err(ProviderError::Declined(why));
            }
            Err(error) => {
                provider.breaker.failure();
                last = error;
            }
        }
    }
    Err(last)
}

/// Records the provider's answer; returns the call as recorded. A call that moved on
/// meanwhile (a callback got there first) is not an error: the next pass reads it.
async fn advance(
    inner: &Inner,
    call: &PaymentCall,
    status: CallStatus,
    reference: &str,
    card_brand: &str,
    message: &str,
) -> Result<PaymentCall, String> {
    let command = AdvanceCall {
        call_id: call.id.to_string(),
        status,
        reference: reference.to_string(),
        card_brand: card_brand.to_string(),
        message: message.chars().take(super::PROVIDER_MESSAGE_MAX).collect(),
    };
    match inner.engine.send(command).await {
        Ok(call) => Ok((*call).clone()),
        Err(EngineError::InvalidState(_)) => Err(MOVED_ON.to_string()),
        Err(error) => Err(format!("recording {}: {error}", status.as_str())),
    }
}

/// What a pass ends with when the call moved on meanwhile (a callback settled it): not
/// a failure; the next scan reads it as it is.
const MOVED_ON: &str = "the call moved on meanwhile";
