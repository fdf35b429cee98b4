//! The accounts' commands. Secrets arrive hashed; the engine never sees a password or
//! a raw token.

use std::sync::Arc;

use super::{AccountEvent, ApiClient, Customer, RefreshState, RefreshToken, Role, SigningKey};
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::kernel::handler::{done, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::{self, Checks};

/// Registers an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterCustomer {
    /// The email, unique (case-insensitively).
    pub email: String,
    /// The display name, up to 100 characters.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The credential to keep (a password hash made by the caller).
    pub credential: String,
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

/// What a refresh-token exchange's reply is read from.
#[doc(hidden)]
#[derive(Debug)]
pub enum Exchange {
    Rotated(String),
    Reused,
    Invalid,
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

impl Request for CreateApiClient {
    type Output = Arc<ApiClient>;
    type Outcome = ApiClientId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ApiClientId>> {
        let c = self;
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
                checks.fail(
                    format!("scopes[{i}]"),
                    "must be 1-64 characters of a-z, ':', '_' or '.'",
                );
            }
        }
        if !checks.is_ok() {
            return Err(EngineError::Validation(checks.errors));
        }
        let id = ApiClientId::from_random(ctx.ids.random_u128());
        debug_assert!(!state.accounts.api_clients.contains_key(&id));
        let client = ApiClient {
            id,
            name: c.name.clone(),
            secret_hash: c.secret_hash.clone(),
            scopes: c.scopes.clone(),
            created_at: ctx.now,
        };
        Decision::one(id, AccountEvent::ApiClientCreated(Box::new(client)))
    }

    fn reply(state: &State, outcome: ApiClientId) -> Arc<ApiClient> {
        state.api_client(&outcome).expect(APPLIED)
    }
}

fn check_hash(checks: &mut Checks, field: &str, hash: &str) {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        checks.fail(field, "must be a hex SHA-256");
    }
}

impl Request for IssueRefreshToken {
    type Output = Arc<RefreshToken>;
    type Outcome = String;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<String>> {
        let c = self;
        let mut checks = Checks::default();
        check_hash(&mut checks, "token_hash", &c.token_hash);
        checks.text("subject", &c.subject, 1, 64, false);
        if c.expires_at <= ctx.now {
            checks.fail("expires_at", "must be in the future");
        }
        if !checks.is_ok() {
            return Err(EngineError::Validation(checks.errors));
        }
        if state.accounts.refresh_tokens.contains_key(&c.token_hash) {
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
        // A new session past the subject's bound ends its oldest.
        let live = super::live_families(state, &c.subject);
        let mut events: Vec<crate::domains::Event> = live
            .iter()
            .take((live.len() + 1).saturating_sub(super::REFRESH_FAMILIES_PER_SUBJECT_MAX))
            .map(|family| AccountEvent::RefreshFamilyRevoked { family: family.clone() }.into())
            .collect();
        events.push(AccountEvent::RefreshTokenIssued(Box::new(token)).into());
        Decision::many(c.token_hash.clone(), events)
    }

    fn reply(state: &State, outcome: String) -> Arc<RefreshToken> {
        state.refresh_token(&outcome).expect(APPLIED)
    }
}

impl Request for RotateRefreshToken {
    type Output = Rotation;
    type Outcome = Exchange;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Exchange>> {
        let c = self;
        let mut checks = Checks::default();
        check_hash(&mut checks, "presented_hash", &c.presented_hash);
        check_hash(&mut checks, "new_hash", &c.new_hash);
        if !checks.is_ok() {
            return Err(EngineError::Validation(checks.errors));
        }
        let invalid = Decision::nothing(Exchange::Invalid);
        let Some(presented) = state.accounts.refresh_tokens.get(&c.presented_hash) else {
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
                let outcome = Exchange::Rotated(successor.hash.clone());
                let event = AccountEvent::RefreshTokenRotated {
                    presented: presented.hash.clone(),
                    successor: Box::new(successor),
                };
                Decision::one(outcome, event)
            }
            RefreshState::Rotated => {
                let event = AccountEvent::RefreshFamilyRevoked { family: presented.family.clone() };
                Decision::one(Exchange::Reused, event)
            }
            _ => invalid,
        }
    }

    fn reply(state: &State, outcome: Exchange) -> Rotation {
        match outcome {
            Exchange::Rotated(hash) => {
                Rotation::Rotated(state.refresh_token(&hash).expect(APPLIED))
            }
            Exchange::Reused => Rotation::Reused,
            Exchange::Invalid => Rotation::Invalid,
        }
    }
}

impl Request for AddSigningKey {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let c = self;
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
        if state.accounts.signing_keys.contains_key(&c.kid) {
            return Err(EngineError::Conflict(format!("a signing key {} exists", c.kid)));
        }
        let key = SigningKey { kid: c.kid.clone(), secret: c.secret.clone(), created_at: ctx.now };
        Decision::one((), AccountEvent::SigningKeyAdded(Box::new(key)))
    }

    fn reply(_: &State, (): ()) {}
}

impl Request for RegisterCustomer {
    type Output = Arc<Customer>;
    type Outcome = CustomerId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CustomerId>> {
        let c = self;
        let mut checks = Checks::default();
        let email = validate::email(&c.email).map_err(|e| checks.push(e)).ok();
        checks.text("name", &c.name, 0, 100, false);
        if c.credential.is_empty() || c.credential.len() > 512 {
            checks.fail("credential", "must be 1-512 bytes");
        }
        done(checks)?;
        let email = email.expect("checked");
        if state.accounts.emails.contains_key(&email) {
            return Err(EngineError::Conflict("an account with this email exists".into()));
        }
        let id = CustomerId::from_seq(state.accounts.customer_seq.next());
        let customer = Customer {
            id,
            email,
            name: c.name.clone(),
            role: c.role,
            credential: c.credential.clone(),
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        Decision::one(id, AccountEvent::CustomerRegistered(Box::new(customer)))
    }

    fn reply(state: &State, outcome: CustomerId) -> Arc<Customer> {
        state.customer(&outcome).expect(APPLIED)
    }
}
