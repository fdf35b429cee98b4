//! Who is calling and what they may do: signed JWT access tokens with key ids,
//! argon2id password and secret hashing, opaque refresh tokens, roles and permissions.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use emporium_engine::{CustomerId, Role};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Every permission the server checks.
pub mod perm {
    /// Create and change products and categories.
    pub const CATALOG_WRITE: &str = "catalog:write";
    /// Read stock levels.
    pub const INVENTORY_READ: &str = "inventory:read";
    /// Set and adjust stock.
    pub const INVENTORY_WRITE: &str = "inventory:write";
    /// Read any order (and any cart).
    pub const ORDERS_READ: &str = "orders:read";
    /// Change any order (cancel, fulfil) and any cart.
    pub const ORDERS_WRITE: &str = "orders:write";
    /// Refund payments.
    pub const PAYMENTS_REFUND: &str = "payments:refund";
    /// Create staff accounts and API clients.
    pub const USERS_ADMIN: &str = "users:admin";
    /// Checkpoints, replication, operations.
    pub const OPS_ADMIN: &str = "ops:admin";
    /// Read the event feed (`GET /v1/events`): for an API client that consumes it and
    /// should do nothing else; ops:admin reads it too.
    pub const EVENTS_READ: &str = "events:read";

    /// Every permission, for validating API client scopes.
    pub const ALL: [&str; 9] = [
        CATALOG_WRITE,
        INVENTORY_READ,
        INVENTORY_WRITE,
        ORDERS_READ,
        ORDERS_WRITE,
        PAYMENTS_REFUND,
        USERS_ADMIN,
        OPS_ADMIN,
        EVENTS_READ,
    ];
}

/// The permissions a role grants.
pub fn role_permissions(role: Role) -> &'static [&'static str] {
    use perm::*;
    match role {
        Role::Customer => &[],
        Role::Staff => &[CATALOG_WRITE, INVENTORY_READ, INVENTORY_WRITE, ORDERS_READ, ORDERS_WRITE],
        Role::Admin => &ALL,
    }
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No token.
    Anonymous,
    /// A customer, staff member or admin.
    User {
        /// The account.
        id: CustomerId,
        /// Its role.
        role: Role,
    },
    /// An API client.
    Client {
        /// The client id.
        id: String,
        /// Its scopes.
        scopes: BTreeSet<String>,
    },
}

impl Principal {
    /// Whether the caller holds `permission`.
    pub fn can(&self, permission: &str) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::User { role, .. } => role_permissions(*role).contains(&permission),
            Principal::Client { scopes, .. } => scopes.contains(permission),
        }
    }

    /// The customer account behind the caller, if it is one.
    pub fn customer_id(&self) -> Option<&CustomerId> {
        match self {
            Principal::User { id, .. } => Some(id),
            _ => None,
        }
    }

    /// A stable name for rate limits and idempotency scopes.
    pub fn key(&self) -> Option<String> {
        let mut key = String::new();
        self.push_key(&mut key).then_some(key)
    }

    /// Appends [`Principal::key`] to `out` without a string of its own; false, and
    /// nothing appended, for an anonymous caller, which has no name.
    pub fn push_key(&self, out: &mut String) -> bool {
        match self {
            Principal::Anonymous => return false,
            Principal::User { id, .. } => out.push_str(&id.text()),
            Principal::Client { id, .. } => out.push_str(id),
        }
        true
    }
}

/// The claims of an access token.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Claims {
    /// The account or client id.
    pub sub: String,
    /// `user` or `client`.
    pub typ: String,
    /// The role, for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Space-separated scopes, for clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expires at (seconds).
    pub exp: u64,
    /// The issuer.
    pub iss: String,
}

const ISSUER: &str = "emporium";

/// The keys that sign and verify access tokens. The first signs; all verify, so keys
/// can be rotated without logging anyone out.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("TokenKeys").field("kids", &kids).finish()
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

impl TokenKeys {
    /// Keys in order of preference (the first signs). Never empty.
    pub fn new(keys: Vec<(String, Vec<u8>)>) -> TokenKeys {
        assert!(!keys.is_empty(), "at least one signing key");
        TokenKeys { keys }
    }

    /// Parses `kid:base64secret`.
    pub fn parse_key(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
        let (kid, secret) = text
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a signing key is kid:base64secret"))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| anyhow::anyhow!("signing key {kid}: {e}"))?;
        anyhow::ensure!(secret.len() >= 32, "signing key {kid} must have at least 32 bytes");
        Ok((kid.trim().to_string(), secret))
    }

    /// Signs an access token for `principal`, valid `ttl_s` seconds from `now_s`.
    pub fn issue(&self, principal: &Principal, now_s: u64, ttl_s: u64) -> String {
        let (kid, secret) = &self.keys[0];
        let (sub, typ, role, scope) = match principal {
            Principal::User { id, role } => {
                (id.to_string(), "user", Some(role.as_str().to_string()), None)
            }
            Principal::Client { id, scopes } => (
                id.clone(),
                "client",
                None,
                Some(scopes.iter().cloned().collect::<Vec<_>>().join(" ")),
            ),
            Principal::Anonymous => unreachable!("anonymous callers get no token"),
        };
        let claims = Claims {
            sub,
            typ: typ.into(),
            role,
            scope,
            iat: now_s,
            exp: now_s + ttl_s,
            iss: ISSUER.into(),
        };
        let mut header = Header::new(JwtAlgorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
            .expect("HS256 signing cannot fail")
    }

    /// Verifies a token's signature, key id, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError(format!("malformed token: {e}")))?;
        if header.alg != JwtAlgorithm::HS256 {
            return Err(TokenError("the token's algorithm is not accepted".into()));
        }
        let kid = header.kid.ok_or_else(|| TokenError("the token has no key id".into()))?;
        let (_, secret) = self
            .keys
            .iter()
            .find(|(k, _)| *k == kid)
            .ok_or_else(|| TokenError("the token's key id is unknown".into()))?;
        let mut validation = Validation::new(JwtAlgorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError(format!("the token is not valid: {e}")))
    }
}

/// Access tokens already verified, with their claims, so a token is checked (base64,
/// JSON, HMAC) once rather than on every request. An entry lives until its token
/// expires; the principal is still derived from the account on every request, so an
/// account's next change (its role, its removal) applies at once. Only tokens that
/// passed verification are kept, so a client cannot fill the cache with forgeries; the
/// signing keys are fixed for the life of the process. Bounded: past
/// [`VERIFIED_TOKENS_MAX`] a shard first drops its expired entries, then everything.
///
/// A token is hashed once, with foldhash, and entries are found by that hash and then
/// compared in full: SipHash over a 200-byte token, twice (shard, then map), was the
/// largest hashing cost of an authenticated request. A fast hash is safe here because
/// only verified tokens, which this server issued, are ever inserted: a client cannot
/// choose keys to crowd a bucket, and two tokens of one hash only cost a verification.
pub struct VerifiedTokens {
    shards: Vec<Mutex<TokenShard>>,
    hasher: foldhash::fast::RandomState,
}

/// Verified tokens by their hash: the token itself (to compare) and its claims.
type TokenShard = HashMap<u64, (Box<str>, Arc<Claims>), foldhash::fast::FixedState>;

/// Tokens kept at most (over all shards).
pub const VERIFIED_TOKENS_MAX: usize = 65_536;
const TOKEN_SHARDS: usize = 16;

impl Default for VerifiedTokens {
    fn default() -> VerifiedTokens {
        VerifiedTokens {
            shards: (0..TOKEN_SHARDS).map(|_| Mutex::new(TokenShard::default())).collect(),
            hasher: Default::default(),
        }
    }
}

impl VerifiedTokens {
    /// The token's hash and its shard.
    fn shard(&self, token: &str) -> (u64, &Mutex<TokenShard>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(token);
        (hash, &self.shards[hash as usize % TOKEN_SHARDS])
    }

    /// The claims of `token` if it was verified and has not expired at `now_s`.
    pub fn get(&self, token: &str, now_s: u64) -> Option<Arc<Claims>> {
        let (hash, shard) = self.shard(token);
        let claims = match shard.lock().get(&hash) {
            Some((kept, claims)) if **kept == *token => claims.clone(),
            _ => return None,
        };
        (claims.exp > now_s).then_some(claims)
    }

    /// Keeps the claims of a token that passed verification.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, now_s: u64) {
        let (hash, shard) = self.shard(token);
        let mut shard = shard.lock();
        if shard.len() >= VERIFIED_TOKENS_MAX / TOKEN_SHARDS {
            shard.retain(|_, (_, c)| c.exp > now_s);
            if shard.len() >= VERIFIED_TOKENS_MAX / TOKEN_SHARDS {
                shard.clear();
            }
        }
        shard.insert(hash, (token.into(), claims));
    }

    /// The claims of `token`: from the cache, or verified by `keys` and kept. The keys'
    /// lock, which every worker would take, is taken only for a token not kept.
    pub fn verify(
        &self,
        keys: &RwLock<TokenKeys>,
        token: &str,
        now_s: u64,
    ) -> Result<Arc<Claims>, TokenError> {
        if let Some(claims) = self.get(token, now_s) {
            return Ok(claims);
        }
        let claims = Arc::new(keys.read().verify(token)?);
        self.insert(token, claims.clone(), now_s);
        Ok(claims)
    }
}

/// Hashes passwords and client secrets with argon2id.
#[derive(Clone, Debug)]
pub struct Hasher {
    params: Params,
}

/// Memory all password hashes in progress may use at once, in KiB; the number of
/// hashes that run together follows from it and the cost of one.
pub const HASHING_MEMORY_KIB: u32 = 256 * 1024;
/// How long a login waits for a hashing slot before it is refused (503).
pub const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The password hasher behind its own concurrency bound: argon2id costs
/// `memory_kib` per hash, and it runs for unauthenticated requests, so without a bound
/// of its own a flood of logins could take the memory (and the blocking threads) that
/// everything else needs. Past the bound a request waits briefly, then is refused.
#[derive(Debug)]
pub struct Passwords {
    hasher: Hasher,
    slots: tokio::sync::Semaphore,
    wait: std::time::Duration,
    /// A hash of a random secret with the configured cost: verifying an unknown
    /// account against it costs what verifying a known one does.
    dummy: String,
}

/// No hashing slot freed in time.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl Passwords {
    /// A hasher of `memory_kib` per hash, running as many at once as
    /// [`HASHING_MEMORY_KIB`] allows (at least one), waiting `wait` for a slot.
    pub fn new(memory_kib: u32, wait: std::time::Duration) -> Passwords {
        let hasher = Hasher::new(memory_kib);
        let slots = (HASHING_MEMORY_KIB / memory_kib.max(1)).max(1) as usize;
        let dummy = hasher.hash(&random_token());
        Passwords { hasher, slots: tokio::sync::Semaphore::new(slots), wait, dummy }
    }

    /// How many hashes may run at once.
    pub fn slots(&self) -> usize {
        self.slots.available_permits()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(Hasher) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit =
            tokio::time::timeout(self.wait, self.slots.acquire()).await.map_err(|_| Busy)?;
        let hasher = self.hasher.clone();
        let done = tokio::task::spawn_blocking(move || work(hasher)).await.map_err(|_| Busy);
        drop(permit);
        done
    }

    /// A PHC-format hash of `secret`.
    pub async fn hash(&self, secret: String) -> Result<String, Busy> {
        self.run(move |hasher| hasher.hash(&secret)).await
    }

    /// Whether `secret` matches `hash`; an unknown account (`None`) is checked against
    /// a hash of the same cost, so the answer takes as long either way.
    pub async fn verify(&self, secret: String, hash: Option<String>) -> Result<bool, Busy> {
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        self.run(move |hasher| hasher.verify(&secret, &hash)).await
    }
}

impl Hasher {
    /// argon2id with `memory_kib` of memory, 2 passes, 1 lane.
    pub fn new(memory_kib: u32) -> Hasher {
        Hasher { params: Params::new(memory_kib, 2, 1, None).expect("valid argon2 parameters") }
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC-format hash of `secret` with a random salt.
    pub fn hash(&self, secret: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        self.argon()
            .hash_password(secret.as_bytes(), &salt)
            .expect("argon2 hashing cannot fail")
            .to_string()
    }

    /// Whether `secret` matches `hash` (the parameters come from the hash itself).
    pub fn verify(&self, secret: &str, hash: &str) -> bool {
        PasswordHash::new(hash)
            .is_ok_and(|parsed| self.argon().verify_password(secret.as_bytes(), &parsed).is_ok())
    }
}

/// A new opaque token: 256 random bits, base64url.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token, hex: what the engine keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(vec![("k2".into(), vec![2; 32]), ("k1".into(), vec![1; 32])])
    }

    #[test]
    fn a_verified_token_is_kept_until_it_expires_and_a_bad_one_never() {
        let keys = RwLock::new(keys());
        let cache = VerifiedTokens::default();
        let user = Principal::User { id: CustomerId::from_seq(1), role: Role::Customer };
        let now = 1_800_000_000;
        let token = keys.read().issue(&user, now, 60);
        // Verified against the current clock (which is before `now`): still valid.
        let first = cache.verify(&keys, &token, now).unwrap();
        // A hit takes no lock of the keys': it answers while a key is being written.
        let writing = keys.write();
        let hit = std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::channel();
            let (cache, keys, token) = (&cache, &keys, &token);
            scope.spawn(move || sender.send(cache.verify(keys, token, now + 59)));
            let hit = receiver.recv_timeout(std::time::Duration::from_secs(10));
            drop(writing);
            hit
        });
        assert!(Arc::ptr_eq(&first, &hit.expect("answered without the keys").unwrap()), "a hit");
        // At its expiry the cached entry no longer answers, and verification refuses it.
        assert!(cache.get(&token, now + 60).is_none());
        // A forged token is refused every time and never kept.
        let forged = TokenKeys::new(vec![("k1".into(), vec![9; 32])]).issue(&user, now, 60);
        assert!(cache.verify(&keys, &forged, now).is_err());
        assert!(cache.get(&forged, now).is_none());
        // Bounded: past the most kept, a shard drops what expired, then everything.
        let claims = Arc::new(keys.read().verify(&token).unwrap());
        for n in 0..(VERIFIED_TOKENS_MAX as u64 + 100) {
            cache.insert(&format!("t{n}"), claims.clone(), now);
        }
        let kept: usize = cache.shards.iter().map(|s| s.lock().len()).sum();
        assert!(kept <= VERIFIED_TOKENS_MAX, "{kept} kept");
    }

    #[test]
    fn a_token_that_shares_a_hash_with_a_kept_one_is_verified_not_confused() {
        let keys = keys();
        let cache = VerifiedTokens::default();
        let now = 1_800_000_000;
        let staff = Principal::User { id: CustomerId::from_seq(2), role: Role::Staff };
        let customer = Principal::User { id: CustomerId::from_seq(3), role: Role::Customer };
        let token = keys.issue(&customer, now, 60);
        // Another token's claims kept under this token's hash, as a collision would.
        let (hash, shard) = cache.shard(&token);
        let other = keys.issue(&staff, now, 60);
        shard.lock().insert(hash, (other.as_str().into(), Arc::new(keys.verify(&other).unwrap())));
        assert!(cache.get(&token, now).is_none(), "the kept entry is another token's");
        let claims = cache.verify(&RwLock::new(keys), &token, now).unwrap();
        assert_eq!(claims.sub, CustomerId::from_seq(3).to_string());
        assert!(Arc::ptr_eq(&claims, &cache.get(&token, now).unwrap()));
    }

    #[test]
    fn tokens_round_trip_and_attacks_fail() {
        let keys = keys();
        let user = Principal::User { id: CustomerId::from_seq(1), role: Role::Staff };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let token = keys.issue(&user, now, 60);
        assert_eq!(keys.verify(&token).unwrap().role.as_deref(), Some("staff"));
        // A flipped signature byte.
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(keys.verify(std::str::from_utf8(&flipped).unwrap()).is_err());
        // Expired.
        assert!(keys.verify(&keys.issue(&user, now - 120, 60)).is_err());
        // Signed by a key this server does not hold.
        let stranger = TokenKeys::new(vec![("k9".into(), vec![9; 32])]);
        assert!(keys.verify(&stranger.issue(&user, now, 60)).is_err());
        // The right kid with the wrong secret.
        let forged = TokenKeys::new(vec![("k1".into(), vec![9; 32])]);
        assert!(keys.verify(&forged.issue(&user, now, 60)).is_err());
        // alg: none.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let body = b64(&format!(
            r#"{{"sub":"cus_1","typ":"user","role":"admin","iat":{now},"exp":{},"iss":"emporium"}}"#,
            now + 60
        ));
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#), body);
        assert!(keys.verify(&none).is_err());
        // An older key still verifies after rotation.
        let old = TokenKeys::new(vec![("k1".into(), vec![1; 32])]);
        assert!(keys.verify(&old.issue(&user, now, 60)).is_ok());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hasher = Hasher::new(64);
        let hash = hasher.hash("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse", &hash));
        assert!(!hasher.verify("wrong horse", &hash));
        assert!(!hasher.verify("correct horse", "not a hash"));
    }

    /// Logins have their own bound: with every slot taken, the next waits its time,
    /// then is refused, instead of piling argon2 work (and memory) up behind it.
    #[tokio::test]
    async fn hashing_past_its_slots_is_refused_after_a_short_wait() {
        let passwords = Passwords::new(HASHING_MEMORY_KIB, std::time::Duration::from_millis(50));
        assert_eq!(passwords.slots(), 1);
        let held = passwords.slots.acquire().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(passwords.verify("secret".into(), None).await, Err(Busy));
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        drop(held);
        let small = Passwords::new(64, std::time::Duration::from_secs(1));
        assert_eq!(small.slots(), (HASHING_MEMORY_KIB / 64) as usize);
        let hash = small.hash("correct horse".into()).await.unwrap();
        assert_eq!(small.verify("correct horse".into(), Some(hash.clone())).await, Ok(true));
        assert_eq!(small.verify("wrong".into(), Some(hash)).await, Ok(false));
    }

    /// An unknown account is verified against a hash of the configured cost, whatever
    /// it is, so its timing matches a known account's.
    #[test]
    fn the_unknown_account_hash_has_the_configured_cost() {
        for memory_kib in [64, 1024] {
            let passwords = Passwords::new(memory_kib, std::time::Duration::from_secs(1));
            let parsed = PasswordHash::new(&passwords.dummy).unwrap();
            let m = parsed.params.get_decimal("m").unwrap();
            assert_eq!(m, memory_kib);
        }
    }
}
