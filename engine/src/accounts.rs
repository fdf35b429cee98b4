//! What authentication needs the engine to keep durable and replicated: API clients,
//! refresh-token families (rotation with reuse detection), token signing keys, and
//! recorded responses of idempotent requests. Secrets arrive hashed; the engine never
//! sees a password or a raw token.

use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

use crate::apply::Row;
use crate::command::{Command, IdempotencyKey, Reply, Request};
use crate::decide::{Ctx, Decision, Outcome};
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{IdempotencyRecord, IdempotentOutcome, RecordedResponse};
use crate::state::State;
use crate::types::*;
use crate::validate::Checks;

/// An API client: a program that authenticates with its id and secret and may do what
/// its scopes allow.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiClient {
    /// The client id.
    pub id: ApiClientId,
    /// A name for people.
    pub name: String,
    /// The secret as the authenticating layer hashed it.
    pub secret_hash: String,
    /// The permissions it holds (`catalog:write`, …).
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: TimestampMs,
}

/// Where a refresh token is in its life.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshState {
    /// May be exchanged once.
    Active,
    /// Exchanged for its successor; presenting it again means it leaked.
    Rotated,
    /// Its family was revoked.
    Revoked,
}

/// A refresh token, kept by the hash of its value.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// The rotation chain it belongs to.
    pub family: String,
    /// Whom it authenticates (`cus_…`).
    pub subject: String,
    /// When it stops being accepted.
    pub expires_at: TimestampMs,
    /// Its state.
    pub state: RefreshState,
    /// When it was issued.
    pub created_at: TimestampMs,
}

/// A key that signs access tokens, named by its key id.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    /// The key id (`kid` of the token header).
    pub kid: String,
    /// The secret.
    pub secret: Vec<u8>,
    /// When it was added; the newest key signs.
    pub created_at: TimestampMs,
}

/// Registers an API client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateApiClient {
    /// A name, 1–100 characters.
    pub name: String,
    /// The hashed secret.
    pub secret_hash: String,
    /// Its permissions, at most 32.
    pub scopes: Vec<String>,
}

/// Issues the first refresh token of a new family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRefreshToken {
    /// Whom it authenticates.
    pub subject: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// When it expires.
    pub expires_at: TimestampMs,
}

/// Exchanges a refresh token for its successor. Presenting a token that was already
/// exchanged revokes its whole family (it must have leaked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateRefreshToken {
    /// SHA-256 of the presented token, hex.
    pub presented_hash: String,
    /// SHA-256 of the successor, hex.
    pub new_hash: String,
    /// When the successor expires.
    pub expires_at: TimestampMs,
}

/// What a refresh-token exchange did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The successor was issued.
    Rotated(Arc<RefreshToken>),
    /// The token had been used before: its family is revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// Adds a token signing key; the newest signs, all verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddSigningKey {
    /// The key id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub kid: String,
    /// The secret, 32–256 bytes.
    pub secret: Vec<u8>,
}

/// Records the response of an idempotent request so a retry with the same key gets it
/// again, also after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordResponse {
    /// The key.
    pub key: IdempotencyKey,
    /// A fingerprint of the request.
    pub fingerprint: u64,
    /// The HTTP status.
    pub status: u16,
    /// The body, at most [`RESPONSE_BYTES_MAX`].
    pub body: Vec<u8>,
}

/// The largest response body kept for an idempotency key.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024;

impl IdempotencyKey {
    /// The key as stored: scope and key joined by a NUL.
    pub fn scoped(&self) -> String {
        format!("{}\u{0}{}", self.scope, self.key)
    }
}

pub(crate) fn create_api_client(
    state: &State,
    c: &CreateApiClient,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    let mut checks = Checks::default();
    checks.text("name", &c.name, 1, 100, false);
    if c.secret_hash.is_empty() || c.secret_hash.len() > 512 {
        checks.fail("secret_hash", "must be 1-512 bytes");
    }
    if c.scopes.len() > 32 {
        checks.fail("scopes", "must list at most 32 scopes");
    }
    for (i, scope) in c.scopes.iter().enumerate() {
        let ok = (1..=64).contains(&scope.len())
            && scope.bytes().all(|b| b.is_ascii_lowercase() || matches!(b, b':' | b'_' | b'.'));
        if !ok {
            checks.fail(format!("scopes[{i}]"), "must be 1-64 characters of a-z, ':', '_' or '.'");
        }
    }
    if !checks.is_ok() {
        return Err(EngineError::Validation(checks.errors));
    }
    let id = ApiClientId::from_random(ctx.ids.random_u128());
    debug_assert!(!state.api_clients.contains_key(&id));
    let client = ApiClient {
        id: id.clone(),
        name: c.name.clone(),
        secret_hash: c.secret_hash.clone(),
        scopes: c.scopes.clone(),
        created_at: ctx.now,
    };
    Ok(Decision {
        events: vec![Event::ApiClientCreated(Box::new(client))],
        outcome: Outcome::ApiClient(id),
    })
}

fn check_hash(checks: &mut Checks, field: &str, hash: &str) {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        checks.fail(field, "must be a hex SHA-256");
    }
}

pub(crate) fn issue_refresh_token(
    state: &State,
    c: &IssueRefreshToken,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    let mut checks = Checks::default();
    check_hash(&mut checks, "token_hash", &c.token_hash);
    checks.text("subject", &c.subject, 1, 64, false);
    if c.expires_at <= ctx.now {
        checks.fail("expires_at", "must be in the future");
    }
    if !checks.is_ok() {
        return Err(EngineError::Validation(checks.errors));
    }
    if state.refresh_tokens.contains_key(&c.token_hash) {
        return Err(EngineError::Conflict("the refresh token exists".into()));
    }
    let token = RefreshToken {
        hash: c.token_hash.clone(),
        family: format!("fam_{:032x}", ctx.ids.random_u128()),
        subject: c.subject.clone(),
        expires_at: c.expires_at,
        state: RefreshState::Active,
        created_at: ctx.now,
    };
    let outcome = Outcome::RefreshToken(token.hash.clone());
    Ok(Decision { events: vec![Event::RefreshTokenIssued(Box::new(token))], outcome })
}

pub(crate) fn rotate_refresh_token(
    state: &State,
    c: &RotateRefreshToken,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    let mut checks = Checks::default();
    check_hash(&mut checks, "presented_hash", &c.presented_hash);
    check_hash(&mut checks, "new_hash", &c.new_hash);
    if !checks.is_ok() {
        return Err(EngineError::Validation(checks.errors));
    }
    let invalid = Ok(Decision { events: vec![], outcome: Outcome::Rotation(None) });
    let Some(presented) = state.refresh_tokens.get(&c.presented_hash) else {
        return invalid;
    };
    match presented.state {
        RefreshState::Active if presented.expires_at > ctx.now => {
            let successor = RefreshToken {
                hash: c.new_hash.clone(),
                family: presented.family.clone(),
                subject: presented.subject.clone(),
                expires_at: c.expires_at,
                state: RefreshState::Active,
                created_at: ctx.now,
            };
            let outcome = Outcome::Rotation(Some(successor.hash.clone()));
            let event = Event::RefreshTokenRotated {
                presented: presented.hash.clone(),
                successor: Box::new(successor),
            };
            Ok(Decision { events: vec![event], outcome })
        }
        RefreshState::Rotated => {
            let event = Event::RefreshFamilyRevoked { family: presented.family.clone() };
            Ok(Decision { events: vec![event], outcome: Outcome::RotationReused })
        }
        _ => invalid,
    }
}

pub(crate) fn add_signing_key(
    state: &State,
    c: &AddSigningKey,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    let mut checks = Checks::default();
    let kid_ok = (1..=64).contains(&c.kid.len())
        && c.kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !kid_ok {
        checks.fail("kid", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'");
    }
    if !(32..=256).contains(&c.secret.len()) {
        checks.fail("secret", "must be 32-256 bytes");
    }
    if !checks.is_ok() {
        return Err(EngineError::Validation(checks.errors));
    }
    if state.signing_keys.contains_key(&c.kid) {
        return Err(EngineError::Conflict(format!("a signing key {} exists", c.kid)));
    }
    let key = SigningKey { kid: c.kid.clone(), secret: c.secret.clone(), created_at: ctx.now };
    Ok(Decision { events: vec![Event::SigningKeyAdded(Box::new(key))], outcome: Outcome::Deleted })
}

pub(crate) fn record_response(
    state: &State,
    c: &RecordResponse,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    if c.body.len() > RESPONSE_BYTES_MAX {
        return Err(EngineError::field("body", "is too large to keep for an idempotency key"));
    }
    let scoped = c.key.scoped();
    if let Some(existing) = state.idempotency_record(&scoped) {
        if existing.created_at + ctx.limits.idempotency_ttl_ms > ctx.now {
            return Err(EngineError::Conflict("the idempotency key has a recorded outcome".into()));
        }
    }
    let record = IdempotencyRecord {
        key: scoped,
        fingerprint: c.fingerprint,
        outcome: IdempotentOutcome::Response(RecordedResponse {
            status: c.status,
            body: c.body.clone(),
        }),
        created_at: ctx.now,
    };
    Ok(Decision {
        events: vec![Event::ResponseRecorded(Box::new(record))],
        outcome: Outcome::Deleted,
    })
}

/// Purges up to `max` refresh tokens past their expiry.
pub(crate) fn expired_refresh_tokens(state: &State, now: TimestampMs, max: usize) -> Vec<String> {
    state
        .refresh_by_expiry
        .iter()
        .take_while(|e| e.value().0 <= now)
        .take(max)
        .map(|e| e.value().1.clone())
        .collect()
}

pub(crate) fn put_api_client(state: &State, client: ApiClient, rows: &mut Vec<Row>) {
    let client = Arc::new(client);
    state.api_clients.insert(client.id.clone(), client.clone());
    rows.push(Row::ApiClient(client));
}

pub(crate) fn put_refresh_token(state: &State, token: RefreshToken, rows: &mut Vec<Row>) {
    let token = Arc::new(token);
    state.refresh_by_expiry.insert((token.expires_at, token.hash.clone()));
    state.refresh_families.insert((token.family.clone(), token.hash.clone()));
    state.refresh_tokens.insert(token.hash.clone(), token.clone());
    rows.push(Row::RefreshToken(token));
}

pub(crate) fn set_refresh_state(state: &State, hash: &str, to: RefreshState, rows: &mut Vec<Row>) {
    let mut token = (*state.refresh_tokens.get(hash).expect("decide found the token")).clone();
    token.state = to;
    put_refresh_token(state, token, rows);
}

pub(crate) fn revoke_family(state: &State, family: &str, rows: &mut Vec<Row>) {
    let hashes: Vec<String> = state
        .refresh_families
        .range((family.to_string(), String::new())..)
        .take_while(|e| e.value().0 == family)
        .map(|e| e.value().1.clone())
        .collect();
    for hash in hashes {
        set_refresh_state(state, &hash, RefreshState::Revoked, rows);
    }
}

pub(crate) fn purge_refresh_tokens(state: &State, hashes: &[String], rows: &mut Vec<Row>) {
    for hash in hashes {
        if let Some(token) = state.refresh_tokens.remove(hash) {
            state.refresh_by_expiry.remove(&(token.expires_at, hash.clone()));
            state.refresh_families.remove(&(token.family.clone(), hash.clone()));
            rows.push(Row::RefreshTokenDeleted(hash.clone()));
        }
    }
}

pub(crate) fn put_signing_key(state: &State, key: SigningKey, rows: &mut Vec<Row>) {
    let key = Arc::new(key);
    state.signing_keys.insert(key.kid.clone(), key.clone());
    rows.push(Row::SigningKey(key));
}

macro_rules! unit_requests {
    ($($name:ident),*) => {$(
        impl From<$name> for Command {
            fn from(request: $name) -> Command {
                Command::$name(request)
            }
        }
        impl Request for $name {
            type Output = ();
            fn output(_: Reply) {}
        }
    )*};
}

unit_requests!(AddSigningKey, RecordResponse);

impl From<CreateApiClient> for Command {
    fn from(request: CreateApiClient) -> Command {
        Command::CreateApiClient(request)
    }
}

impl Request for CreateApiClient {
    type Output = Arc<ApiClient>;
    fn output(reply: Reply) -> Arc<ApiClient> {
        match reply {
            Reply::ApiClient(client) => client,
            other => unreachable!("CreateApiClient answered {other:?}"),
        }
    }
}

impl From<IssueRefreshToken> for Command {
    fn from(request: IssueRefreshToken) -> Command {
        Command::IssueRefreshToken(request)
    }
}

impl Request for IssueRefreshToken {
    type Output = Arc<RefreshToken>;
    fn output(reply: Reply) -> Arc<RefreshToken> {
        match reply {
            Reply::Rotation(Rotation::Rotated(token)) => token,
            other => unreachable!("IssueRefreshToken answered {other:?}"),
        }
    }
}

impl From<RotateRefreshToken> for Command {
    fn from(request: RotateRefreshToken) -> Command {
        Command::RotateRefreshToken(request)
    }
}

impl Request for RotateRefreshToken {
    type Output = Rotation;
    fn output(reply: Reply) -> Rotation {
        match reply {
            Reply::Rotation(rotation) => rotation,
            other => unreachable!("RotateRefreshToken answered {other:?}"),
        }
    }
}
