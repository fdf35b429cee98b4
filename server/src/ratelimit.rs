//! Token buckets per client key (IP, user or API client) and route class. Memory is
//! bounded: past `KEYS_MAX` keys per shard, buckets that have refilled are dropped
//! first, and a shard that is still full refuses new keys (fail closed).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::Rate;

const SHARDS: usize = 16;
const KEYS_MAX: usize = 8192;

/// The route classes that have their own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The token endpoint, registration and entering a discount code on a cart: strict,
    /// against guessing passwords or codes.
    Auth,
    /// Reads.
    Read,
    /// Writes.
    Write,
}

impl Class {
    /// The name used in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The outcome of taking a token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket size.
    pub limit: u32,
    /// Whole tokens left.
    pub remaining: u32,
    /// Seconds until a token is available (when refused) or the bucket is full.
    pub reset_s: u64,
}

/// Every bucket.
pub struct RateLimiter {
    rates: [Rate; 3],
    shards: Vec<Mutex<HashMap<(Class, String), Bucket>>>,
}

impl RateLimiter {
    /// Limits per class.
    pub fn new(auth: Rate, read: Rate, write: Rate) -> RateLimiter {
        RateLimiter {
            rates: [auth, read, write],
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn rate(&self, class: Class) -> Rate {
        self.rates[class as usize]
    }

    /// Takes one token from `key`'s bucket of `class`.
    pub fn take(&self, class: Class, key: &str, now: Instant) -> Decision {
        let rate = self.rate(class);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (class, key).hash(&mut hasher);
        let mut shard = self.shards[hasher.finish() as usize % SHARDS].lock();
        if shard.len() >= KEYS_MAX && !shard.contains_key(&(class, key.to_string())) {
            shard.retain(|(c, _), b| {
                refill(*b, self.rate(*c), now).tokens < f64::from(self.rate(*c).burst)
            });
            if shard.len() >= KEYS_MAX {
                return Decision { allowed: false, limit: rate.burst, remaining: 0, reset_s: 1 };
            }
        }
        let bucket = shard
            .entry((class, key.to_string()))
            .or_insert(Bucket { tokens: f64::from(rate.burst), at: now });
        *bucket = refill(*bucket, rate, now);
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing =
            if allowed { f64::from(rate.burst) - bucket.tokens } else { 1.0 - bucket.tokens };
        Decision {
            allowed,
            limit: rate.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_s: (missing / rate.per_second).ceil().max(if allowed { 0.0 } else { 1.0 }) as u64,
        }
    }
}

fn refill(bucket: Bucket, rate: Rate, now: Instant) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    Bucket {
        tokens: (bucket.tokens + elapsed * rate.per_second).min(f64::from(rate.burst)),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_allow_a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(
            Rate { burst: 3, per_second: 1.0 },
            Rate { burst: 100, per_second: 100.0 },
            Rate { burst: 100, per_second: 100.0 },
        );
        let t0 = Instant::now();
        let takes: Vec<bool> =
            (0..4).map(|_| limiter.take(Class::Auth, "1.2.3.4", t0).allowed).collect();
        assert_eq!(takes, [true, true, true, false]);
        let refused = limiter.take(Class::Auth, "1.2.3.4", t0);
        assert_eq!((refused.remaining, refused.reset_s), (0, 1));
        // Another key and another class have their own buckets.
        assert!(limiter.take(Class::Auth, "5.6.7.8", t0).allowed);
        assert!(limiter.take(Class::Read, "1.2.3.4", t0).allowed);
        // One second refills one token.
        assert!(limiter.take(Class::Auth, "1.2.3.4", t0 + Duration::from_secs(1)).allowed);
        assert!(!limiter.take(Class::Auth, "1.2.3.4", t0 + Duration::from_secs(1)).allowed);
    }

    /// Memory stays bounded under a flood of distinct keys (one client spraying source
    /// addresses): once a shard holds `KEYS_MAX` buckets that are still in use, a new key
    /// is refused rather than admitted; once those buckets have refilled they are
    /// dropped and new keys are admitted again.
    #[test]
    fn a_flood_of_keys_is_capped_then_forgotten() {
        let rate = Rate { burst: 1, per_second: 1.0 };
        let limiter = RateLimiter::new(rate, rate, rate);
        let t0 = Instant::now();
        let mut first_refused = None;
        for i in 0..SHARDS * KEYS_MAX + 1 {
            // Each key spends its only token, so its bucket is in use, not refilled.
            if !limiter.take(Class::Write, &format!("10.0.{i}"), t0).allowed {
                first_refused = Some(i);
                break;
            }
        }
        let refused = first_refused.expect("some shard filled up");
        assert!(refused >= KEYS_MAX, "refused after only {refused} keys");
        let held: usize = limiter.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= SHARDS * KEYS_MAX, "{held} buckets held");
        let newcomer = format!("10.0.{refused}");
        assert!(!limiter.take(Class::Write, &newcomer, t0).allowed);
        // A second later every bucket has refilled: the full shard drops them for the
        // newcomer.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.take(Class::Write, &newcomer, later).allowed);
        let held_after: usize = limiter.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held_after < held, "refilled buckets were dropped: {held_after} of {held}");
    }
}
