//! Accounts: customers and staff, API clients, refresh tokens and signing keys.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// What an account may do. The HTTP layer maps roles to permissions.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shopper.
    Customer,
    /// Shop staff.
    Staff,
    /// Administrators.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<Role> {
        [Role::Customer, Role::Staff, Role::Admin].into_iter().find(|r| r.as_str() == value)
    }
}

/// An account that can own carts and orders.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// The id.
    pub id: CustomerId,
    /// The unique email, lower-cased.
    pub email: String,
    /// The display name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The credential as the authenticating layer stores it (a password hash); the
    /// engine only keeps it.
    pub credential: String,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

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
