//! The payment provider trait, and the built-in test provider behind it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::PaymentCall;

/// What a provider call returns: a boxed future, so providers can be chosen at run
/// time (`Arc<dyn PaymentProvider>`).
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Why a provider call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused (a declined card, an expired authorization): its final
    /// word, not retried.
    #[error("declined: {0}")]
    Declined(String),
    /// The provider failed, could not be reached, or did not answer within its
    /// timeout: retried with backoff.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider's circuit breaker is open: it is not called until it cools down.
    #[error("the provider's circuit breaker is open")]
    CircuitOpen,
}

/// A provider's answer to an authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// Authorized at once.
    Authorized {
        /// The provider's reference.
        reference: String,
        /// The card's brand.
        card_brand: String,
    },
    /// Taken; the provider will call back with its answer
    /// ([`crate::AdvanceCall`] from the callback's handler).
    Pending {
        /// The provider's reference, which the callback will name.
        reference: String,
    },
}

/// A payment provider: authorize, capture, void and refund a [`PaymentCall`]. Every method is
/// given the call, whose id is the idempotency key the provider must honour: the
/// processor asks again after a crash or a timeout, and a second authorization of the
/// same call must not hold the money twice. A decline is
/// `Err(ProviderError::Declined)`; any other error is retried.
pub trait PaymentProvider: Send + Sync + 'static {
    /// The name payments choose it by (`test`).
    fn name(&self) -> &str;

    /// How long one call may take before it counts as failed (and is retried).
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Authorizes the call's amount on its token.
    fn authorize<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, Authorization>;

    /// Captures an authorized call (its `reference` is the authorization's).
    fn capture<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, ()>;

    /// Releases whatever the call may hold (an authorization, or a request the
    /// provider may still be working on). Voiding what does not exist succeeds.
    fn void<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, ()>;

    /// Refunds a refund call's amount of the charge it names (`charge_reference`);
    /// answers the provider's reference of the refund.
    fn refund<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, String>;
}

/// The card brand a test token stands for: approved (`Ok`), or declined with why.
pub(crate) fn test_token(token: &str) -> Result<&'static str, &'static str> {
    match token {
        "tok_visa" => Ok("visa"),
        "tok_mastercard" => Ok("mastercard"),
        "tok_declined" => Err("the test card was declined"),
        _ => Err("the test provider takes tok_visa, tok_mastercard or tok_declined"),
    }
}

/// The built-in test provider: answers at once, approves `tok_visa` and
/// `tok_mastercard`, declines `tok_declined` (and any other token). Its reference is
/// `test_` and the call's id, so asking twice gives the same answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestProvider;

impl PaymentProvider for TestProvider {
    fn name(&self) -> &str {
        "test"
    }

    fn authorize<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, Authorization> {
        let answer = match test_token(&call.token) {
            Ok(brand) => Ok(Authorization::Authorized {
                reference: format!("test_{}", call.id),
                card_brand: brand.to_string(),
            }),
            Err(why) => Err(ProviderError::Declined(why.to_string())),
        };
        Box::pin(std::future::ready(answer))
    }

    fn capture<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn void<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn refund<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, String> {
        Box::pin(std::future::ready(Ok(format!("test_{}", call.id))))
    }
}
