//! Accounts: customers and staff (registered with a credential hashed by the caller),
//! API clients, refresh-token families (rotation with reuse detection) and the keys
//! that sign access tokens.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::{SkipMap, SkipSet};
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::{Event, State};
use crate::kernel::handler::Ctx;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, Table, Timers,
};
use crate::types::*;
use crate::EXPIRIES_PER_COMMAND_MAX;

const CUSTOMERS: &str = "customers";
const API_CLIENTS: &str = "api_clients";
const REFRESH_TOKENS: &str = "refresh_tokens";
const SIGNING_KEYS: &str = "signing_keys";

persist!(Customer, CUSTOMERS, |c| c.id.text().as_str().as_bytes().to_vec());
persist!(ApiClient, API_CLIENTS, |c| c.id.text().as_str().as_bytes().to_vec());
persist!(RefreshToken, REFRESH_TOKENS, |t| t.hash.as_bytes().to_vec());
persist!(SigningKey, SIGNING_KEYS, |k| k.kid.as_bytes().to_vec());

/// The accounts in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) customers: IdIndex<CustomerId, Arc<Customer>>,
    pub(crate) emails: Index<String, CustomerId>,
    pub(crate) customer_seq: Counter,
    pub(crate) api_clients: IdIndex<ApiClientId, Arc<ApiClient>>,
    pub(crate) refresh_tokens: Index<String, Arc<RefreshToken>>,
    /// `(expires_at, hash)` of every refresh token.
    pub(crate) refresh_by_expiry: SkipSet<(TimestampMs, String)>,
    /// `(family, hash)` of every refresh token.
    pub(crate) refresh_families: SkipSet<(String, String)>,
    /// `(subject, created_at, family)` of every family not revoked, oldest first per
    /// subject: the bound on a subject's sessions.
    pub(crate) live_families: SkipSet<(String, TimestampMs, String)>,
    /// Each live family's key in `live_families`.
    pub(crate) family_keys: Index<String, (String, TimestampMs)>,
    pub(crate) signing_keys: SkipMap<String, Arc<SigningKey>>,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            customers: Index::default(),
            emails: Index::default(),
            customer_seq: Counter::new("customer"),
            api_clients: Index::default(),
            refresh_tokens: Index::default(),
            refresh_by_expiry: SkipSet::new(),
            refresh_families: SkipSet::new(),
            live_families: SkipSet::new(),
            family_keys: Index::default(),
            signing_keys: SkipMap::new(),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "accounts",
    tables: &[
        Table {
            name: CUSTOMERS,
            rows: |s, f| s.accounts.customers.for_each_in_share(0, 1, |_, c| f(&**c)),
            load: |state, bytes| {
                put_customer(state, decode_row(bytes, "customer")?, &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<Customer>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: API_CLIENTS,
            rows: |s, f| s.accounts.api_clients.entries().iter().for_each(|(_, c)| f(&**c)),
            load: |state, bytes| {
                put_api_client(state, decode_row(bytes, "API client")?, &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<ApiClient>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: REFRESH_TOKENS,
            rows: |s, f| s.accounts.refresh_tokens.entries().iter().for_each(|(_, t)| f(&**t)),
            load: |state, bytes| {
                put_refresh_token(state, decode_row(bytes, "refresh token")?, &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<RefreshToken>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: SIGNING_KEYS,
            rows: |s, f| s.accounts.signing_keys.iter().for_each(|e| f(&**e.value())),
            load: |state, bytes| {
                put_signing_key(state, decode_row(bytes, "signing key")?, &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<SigningKey>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.accounts.customer_seq);
    },
    timers: Some(Timers {
        due: |state, now, _| {
            state.accounts.refresh_by_expiry.front().is_some_and(|e| e.value().0 <= now)
        },
        expire: purge_expired,
    }),
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The accounts' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum AccountEvent {
        CustomerRegistered(Box<Customer>),
        ApiClientCreated(Box<ApiClient>),
        RefreshTokenIssued(Box<RefreshToken>),
        /// The presented token is spent; its successor joins the family.
        RefreshTokenRotated {
            presented: String,
            successor: Box<RefreshToken>,
        },
        /// A spent token was presented again: every token of the family is revoked.
        RefreshFamilyRevoked {
            family: String,
        },
        RefreshTokensPurged {
            hashes: Vec<String>,
        },
        SigningKeyAdded(Box<SigningKey>),
    }
}
pub use event::AccountEvent;

pub(crate) fn apply(state: &State, event: &AccountEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        AccountEvent::CustomerRegistered(customer) => {
            state.accounts.customer_seq.bump();
            put_customer(state, (**customer).clone(), rows);
        }
        AccountEvent::ApiClientCreated(client) => put_api_client(state, (**client).clone(), rows),
        AccountEvent::RefreshTokenIssued(token) => {
            put_refresh_token(state, (**token).clone(), rows)
        }
        AccountEvent::RefreshTokenRotated { presented, successor } => {
            set_refresh_state(state, presented, RefreshState::Rotated, rows);
            put_refresh_token(state, (**successor).clone(), rows);
        }
        AccountEvent::RefreshFamilyRevoked { family } => revoke_family(state, family, rows),
        AccountEvent::RefreshTokensPurged { hashes } => purge_refresh_tokens(state, hashes, rows),
        AccountEvent::SigningKeyAdded(key) => put_signing_key(state, (**key).clone(), rows),
    }
}

fn put_customer(state: &State, customer: Customer, rows: &mut Vec<Row>) {
    let customer = Arc::new(customer);
    state.accounts.emails.insert(customer.email.clone(), customer.id);
    state.accounts.customers.insert(customer.id, customer.clone());
    rows.push(Row::put(customer));
}

/// Purges the refresh tokens past their expiry.
fn purge_expired(state: &State, ctx: &Ctx<'_>, events: &mut Vec<Event>) -> usize {
    let hashes = expired_refresh_tokens(state, ctx.now, EXPIRIES_PER_COMMAND_MAX);
    if !hashes.is_empty() {
        events.push(AccountEvent::RefreshTokensPurged { hashes }.into());
    }
    0
}

/// Purges up to `max` refresh tokens past their expiry.
fn expired_refresh_tokens(state: &State, now: TimestampMs, max: usize) -> Vec<String> {
    state
        .accounts
        .refresh_by_expiry
        .iter()
        .take_while(|e| e.value().0 <= now)
        .take(max)
        .map(|e| e.value().1.clone())
        .collect()
}

fn put_api_client(state: &State, client: ApiClient, rows: &mut Vec<Row>) {
    let client = Arc::new(client);
    state.accounts.api_clients.insert(client.id, client.clone());
    rows.push(Row::put(client));
}

fn put_refresh_token(state: &State, token: RefreshToken, rows: &mut Vec<Row>) {
    let accounts = &state.accounts;
    let token = Arc::new(token);
    accounts.refresh_by_expiry.insert((token.expires_at, token.hash.clone()));
    accounts.refresh_families.insert((token.family.clone(), token.hash.clone()));
    if token.state == RefreshState::Revoked {
        forget_family(state, &token.family);
    } else {
        // A family dates from its first token (at load, tokens come in any order).
        let known = accounts.family_keys.get(&token.family);
        if known.as_ref().is_none_or(|(_, created)| token.created_at < *created) {
            forget_family(state, &token.family);
            let key = (token.subject.clone(), token.created_at);
            accounts.live_families.insert((key.0.clone(), key.1, token.family.clone()));
            accounts.family_keys.insert(token.family.clone(), key);
        }
    }
    accounts.refresh_tokens.insert(token.hash.clone(), token.clone());
    rows.push(Row::put(token));
}

/// Takes a family off its subject's live list (revoked, or its tokens purged).
fn forget_family(state: &State, family: &str) {
    if let Some((subject, created)) = state.accounts.family_keys.remove(family) {
        state.accounts.live_families.remove(&(subject, created, family.to_string()));
    }
}

fn set_refresh_state(state: &State, hash: &str, to: RefreshState, rows: &mut Vec<Row>) {
    let mut token =
        (*state.accounts.refresh_tokens.get(hash).expect("decide found the token")).clone();
    token.state = to;
    put_refresh_token(state, token, rows);
}

fn revoke_family(state: &State, family: &str, rows: &mut Vec<Row>) {
    let hashes: Vec<String> = state
        .accounts
        .refresh_families
        .range((family.to_string(), String::new())..)
        .take_while(|e| e.value().0 == family)
        .map(|e| e.value().1.clone())
        .collect();
    for hash in hashes {
        set_refresh_state(state, &hash, RefreshState::Revoked, rows);
    }
    forget_family(state, family);
}

fn purge_refresh_tokens(state: &State, hashes: &[String], rows: &mut Vec<Row>) {
    for hash in hashes {
        if let Some(token) = state.accounts.refresh_tokens.remove(hash) {
            state.accounts.refresh_by_expiry.remove(&(token.expires_at, hash.clone()));
            state.accounts.refresh_families.remove(&(token.family.clone(), hash.clone()));
            let emptied = state
                .accounts
                .refresh_families
                .range((token.family.clone(), String::new())..)
                .next()
                .is_none_or(|e| e.value().0 != token.family);
            if emptied {
                forget_family(state, &token.family);
            }
            rows.push(Row::delete(REFRESH_TOKENS, hash.as_bytes()));
        }
    }
}

fn put_signing_key(state: &State, key: SigningKey, rows: &mut Vec<Row>) {
    let key = Arc::new(key);
    state.accounts.signing_keys.insert(key.kid.clone(), key.clone());
    rows.push(Row::put(key));
}

/// The most sessions (refresh-token families not revoked) one subject keeps: a new one
/// past it revokes the subject's oldest, so logging in again and again cannot grow the
/// table without bound.
pub const REFRESH_FAMILIES_PER_SUBJECT_MAX: usize = 32;

/// The families of `subject` not revoked, oldest first.
pub(crate) fn live_families(state: &State, subject: &str) -> Vec<String> {
    state
        .accounts
        .live_families
        .range((subject.to_string(), TimestampMs::MIN, String::new())..)
        .take_while(|e| e.value().0 == subject)
        .map(|e| e.value().2.clone())
        .collect()
}

/// The accounts' reads.
impl State {
    /// How many sessions (refresh-token families not revoked) `subject` holds.
    pub fn session_count(&self, subject: &str) -> usize {
        live_families(self, subject).len()
    }

    /// An account by id.
    pub fn customer(&self, id: &CustomerId) -> Option<Arc<Customer>> {
        self.accounts.customers.get(id)
    }

    /// An account by email (case-insensitive).
    pub fn customer_by_email(&self, email: &str) -> Option<Arc<Customer>> {
        self.accounts.emails.get(&email.to_lowercase()).and_then(|id| self.customer(&id))
    }

    /// An API client by id.
    pub fn api_client(&self, id: &ApiClientId) -> Option<Arc<ApiClient>> {
        self.accounts.api_clients.get(id)
    }

    /// A refresh token by the hash of its value.
    pub fn refresh_token(&self, hash: &str) -> Option<Arc<RefreshToken>> {
        self.accounts.refresh_tokens.get(hash)
    }

    /// Every token signing key, oldest first.
    pub fn signing_keys(&self) -> Vec<Arc<SigningKey>> {
        let mut keys: Vec<_> =
            self.accounts.signing_keys.iter().map(|e| e.value().clone()).collect();
        keys.sort_by_key(|k| k.created_at);
        keys
    }

    /// Accounts with `role`, in id order.
    pub fn customers_with_role(&self, role: Role) -> Vec<Arc<Customer>> {
        let mut found = Vec::new();
        self.accounts.customers.for_each_in_share(0, 1, |_, c| {
            if c.role == role {
                found.push(c.clone());
            }
        });
        found.sort_unstable_by_key(|c| c.id);
        found
    }
}
