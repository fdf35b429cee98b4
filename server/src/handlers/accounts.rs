//! Accounts and the OAuth 2.0 token endpoint (RFC 6749): password, client_credentials
//! and refresh_token grants. Passwords and client secrets are checked with argon2id off
//! the async threads; refresh tokens rotate on every use and a reused one revokes its
//! family.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use emporium_engine::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::idempotent_send;
use crate::app::{now_ms, now_s, App};
use crate::auth::{perm, random_token, token_hash, Claims, Principal};
use crate::http::{parse_json, Call, Out};
use crate::problem::Problem;
use crate::wire::*;

/// Longest password accepted (argon2 takes any length; this bounds the work).
const PASSWORD_CHARS_MAX: usize = 1024;

/// The principal a verified token stands for, as the engine knows it now: a role or
/// scope change applies at once, and a token of an unknown account is refused.
pub fn principal_from_claims(app: &App, claims: &Claims) -> Result<Principal, Problem> {
    let gone = || Problem::unauthenticated("the token names an account that does not exist");
    match claims.typ.as_str() {
        "user" => {
            let id = CustomerId::parse(&claims.sub).ok_or_else(gone)?;
            let customer = app.engine.state().customer(&id).ok_or_else(gone)?;
            Ok(Principal::User { id, role: customer.role })
        }
        "client" => {
            let id = ApiClientId::parse(&claims.sub).ok_or_else(gone)?;
            let client = app.engine.state().api_client(&id).ok_or_else(gone)?;
            Ok(Principal::Client {
                id: client.id.to_string(),
                scopes: client.scopes.iter().cloned().collect(),
            })
        }
        _ => Err(Problem::unauthenticated("the token is of an unknown kind")),
    }
}

/// The calling account's id; API clients and anonymous callers have none.
pub fn me_id(call: &Call) -> Result<CustomerId, Problem> {
    match &call.principal {
        Principal::User { id, .. } => Ok(*id),
        Principal::Anonymous => Err(Problem::unauthenticated("sign in to see your account")),
        Principal::Client { .. } => {
            Err(Problem::forbidden("an API client has no customer account"))
        }
    }
}

/// `GET /v1/customers/me`.
pub async fn me(call: Call) -> Result<Out, Problem> {
    let id = me_id(&call)?;
    let customer = call
        .app
        .engine
        .state()
        .customer(&id)
        .ok_or_else(|| Problem::not_found("the account is gone"))?;
    Ok(Out::ok(&CustomerView::from(&*customer)))
}

#[derive(Serialize)]
struct Session<'a> {
    customer: CustomerView<'a>,
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
}

fn check_password(password: &str) -> Result<(), Problem> {
    let chars = password.chars().count();
    if !(8..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(Problem::invalid_field(
            "password",
            format!("must be 8 to {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

/// What a request gets when every password-hashing slot stayed busy.
fn hashing_busy(_: crate::auth::Busy) -> Problem {
    Problem::overloaded("too many logins in progress; retry shortly")
}

async fn hash(app: &Arc<App>, secret: String) -> Result<String, Problem> {
    app.passwords.hash(secret).await.map_err(hashing_busy)
}

/// An unknown account still costs one verification of the configured cost, so timing
/// does not tell which emails exist.
async fn verify(app: &Arc<App>, secret: String, hash: Option<String>) -> Result<bool, Problem> {
    app.passwords.verify(secret, hash).await.map_err(hashing_busy)
}

async fn issue_refresh(app: &App, subject: &CustomerId) -> Result<String, Problem> {
    let token = random_token();
    let expires_at = now_ms() + (app.config.refresh_token_ttl_s as i64).saturating_mul(1000);
    app.engine
        .send(IssueRefreshToken {
            subject: subject.to_string(),
            token_hash: token_hash(&token),
            expires_at,
        })
        .await?;
    Ok(token)
}

/// `POST /v1/auth/register`.
pub async fn register(call: Call) -> Result<Out, Problem> {
    let body: Registration = call.json()?;
    check_password(&body.password)?;
    if call.app.engine.state().customer_by_email(body.email.trim()).is_some() {
        return Err(Problem::new(409, "conflict", "Conflict", "an account with this email exists"));
    }
    let credential = hash(&call.app, body.password).await?;
    let command = RegisterCustomer {
        email: body.email,
        name: body.name.unwrap_or_default(),
        role: Role::Customer,
        credential,
    };
    let customer = call.app.engine.send(command).await?;
    let principal = Principal::User { id: customer.id, role: customer.role };
    let access_token =
        call.app.keys.read().issue(&principal, now_s(), call.app.config.access_token_ttl_s);
    let refresh_token = issue_refresh(&call.app, &customer.id).await?;
    let session = Session {
        customer: CustomerView::from(&*customer),
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: call.app.config.access_token_ttl_s,
    };
    Ok(Out::created(&session, "/v1/customers/me".into()))
}

/// `POST /v1/admin/users`.
pub async fn create_user(call: Call) -> Result<Out, Problem> {
    call.require(perm::USERS_ADMIN)?;
    let body: NewUser = call.json()?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| Problem::invalid_field("role", "must be customer, staff or admin"))?;
    check_password(&body.password)?;
    let register = async {
        let credential = hash(&call.app, body.password).await?;
        Ok(RegisterCustomer {
            email: body.email,
            name: body.name.unwrap_or_default(),
            role,
            credential,
        })
    };
    idempotent_send(&call, register, |_, customer| {
        Out::created(&CustomerView::from(&**customer), format!("/v1/admin/users/{}", customer.id))
    })
    .await
}

/// `POST /v1/admin/api-clients`: the secret is in this answer only.
pub async fn create_api_client(call: Call) -> Result<Out, Problem> {
    call.require(perm::USERS_ADMIN)?;
    let body: NewApiClient = call.json()?;
    for (i, scope) in body.scopes.iter().enumerate() {
        if !perm::ALL.contains(&scope.as_str()) {
            return Err(Problem::invalid_field(
                &format!("scopes[{i}]"),
                format!("must be one of {}", perm::ALL.join(", ")),
            ));
        }
    }
    // Not idempotent by key: a replay would mean keeping the secret, shown only once.
    let secret = random_token();
    let secret_hash = hash(&call.app, secret.clone()).await?;
    let client = call
        .app
        .engine
        .send(CreateApiClient { name: body.name, secret_hash, scopes: body.scopes })
        .await?;
    let body = json!({
        "client_id": client.id.text(),
        "client_secret": secret,
        "name": client.name,
        "scopes": client.scopes,
        "created_at": rfc3339(client.created_at),
    });
    Ok(Out::created(&body, format!("/v1/admin/api-clients/{}", client.id)))
}

/// The token endpoint's parameters (form or JSON); unknown ones are ignored, as RFC 6749
/// asks.
#[derive(Deserialize, Default, Debug)]
struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

/// An RFC 6749 §5.2 error.
fn oauth_error(status: u16, error: &str, description: &str) -> Out {
    Out::json(status, &json!({"error": error, "error_description": description}))
}

fn token_answer(app: &App, principal: &Principal, refresh_token: Option<String>) -> Out {
    let access_token = app.keys.read().issue(principal, now_s(), app.config.access_token_ttl_s);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": app.config.access_token_ttl_s,
    });
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    if let Principal::Client { scopes, .. } = principal {
        body["scope"] = json!(scopes.iter().cloned().collect::<Vec<_>>().join(" "));
    }
    Out::ok(&body)
}

/// `POST /v1/auth/token`.
pub async fn token(call: Call) -> Result<Out, Problem> {
    let form = call
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let request: TokenRequest = if form {
        match serde_urlencoded::from_bytes(&call.body) {
            Ok(request) => request,
            Err(_) => return Ok(oauth_error(400, "invalid_request", "the form body is malformed")),
        }
    } else {
        match parse_json::<serde_json::Value>(&call.body)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
        {
            Some(request) => request,
            None => return Ok(oauth_error(400, "invalid_request", "the JSON body is malformed")),
        }
    };
    match request.grant_type.as_deref() {
        Some("password") => password_grant(&call, request).await,
        Some("client_credentials") => client_grant(&call, request).await,
        Some("refresh_token") => refresh_grant(&call, request).await,
        Some(_) => Ok(oauth_error(
            400,
            "unsupported_grant_type",
            "use password, client_credentials or refresh_token",
        )),
        None => Ok(oauth_error(400, "invalid_request", "grant_type is required")),
    }
}

async fn password_grant(call: &Call, request: TokenRequest) -> Result<Out, Problem> {
    let (Some(username), Some(password)) = (request.username, request.password) else {
        return Ok(oauth_error(400, "invalid_request", "username and password are required"));
    };
    let account = call.app.engine.state().customer_by_email(username.trim());
    let ok = verify(&call.app, password, account.as_ref().map(|a| a.credential.clone())).await?;
    match account {
        Some(account) if ok => {
            let refresh = issue_refresh(&call.app, &account.id).await?;
            let principal = Principal::User { id: account.id, role: account.role };
            Ok(token_answer(&call.app, &principal, Some(refresh)))
        }
        _ => {
            call.app.metrics.failed_login();
            tracing::warn!(request_id = %call.request_id, peer = %call.peer, username = %username.chars().take(80).collect::<String>(), "failed login");
            Ok(oauth_error(400, "invalid_grant", "the email or password is wrong"))
        }
    }
}

/// The client's id and secret, from HTTP Basic auth or the body.
fn client_credentials(call: &Call, request: &TokenRequest) -> Option<(String, String, bool)> {
    if let Some(basic) = call.header("authorization").and_then(|h| h.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        return Some((id.to_string(), secret.to_string(), true));
    }
    Some((request.client_id.clone()?, request.client_secret.clone()?, false))
}

async fn client_grant(call: &Call, request: TokenRequest) -> Result<Out, Problem> {
    let Some((id, secret, basic)) = client_credentials(call, &request) else {
        return Ok(oauth_error(400, "invalid_request", "client_id and client_secret are required"));
    };
    let client = ApiClientId::parse(&id).and_then(|id| call.app.engine.state().api_client(&id));
    let ok = verify(&call.app, secret, client.as_ref().map(|c| c.secret_hash.clone())).await?;
    match client {
        Some(client) if ok => {
            let scopes: BTreeSet<String> = client.scopes.iter().cloned().collect();
            let principal = Principal::Client { id: client.id.to_string(), scopes };
            Ok(token_answer(&call.app, &principal, None))
        }
        _ => {
            call.app.metrics.failed_login();
            tracing::warn!(request_id = %call.request_id, peer = %call.peer, "failed client authentication");
            let out = oauth_error(401, "invalid_client", "the client id or secret is wrong");
            // RFC 6749 §5.2: a client that authenticated with Basic gets the challenge.
            Ok(Out { www_authenticate: basic.then_some("Basic realm=\"emporium\""), ..out })
        }
    }
}

async fn refresh_grant(call: &Call, request: TokenRequest) -> Result<Out, Problem> {
    let Some(presented) = request.refresh_token else {
        return Ok(oauth_error(400, "invalid_request", "refresh_token is required"));
    };
    let successor = random_token();
    let expires_at = now_ms() + (call.app.config.refresh_token_ttl_s as i64).saturating_mul(1000);
    let rotation = call
        .app
        .engine
        .send(RotateRefreshToken {
            presented_hash: token_hash(&presented),
            new_hash: token_hash(&successor),
            expires_at,
        })
        .await?;
    match rotation {
        Rotation::Rotated(token) => {
            let Some(account) = CustomerId::parse(&token.subject)
                .and_then(|id| call.app.engine.state().customer(&id))
            else {
                return Ok(oauth_error(400, "invalid_grant", "the account is gone"));
            };
            let principal = Principal::User { id: account.id, role: account.role };
            Ok(token_answer(&call.app, &principal, Some(successor)))
        }
        Rotation::Reused => {
            tracing::warn!(request_id = %call.request_id, peer = %call.peer, "a spent refresh token was presented: its family is revoked");
            Ok(oauth_error(
                400,
                "invalid_grant",
                "the refresh token was already used; sign in again",
            ))
        }
        Rotation::Invalid => Ok(oauth_error(
            400,
            "invalid_grant",
            "the refresh token is unknown, expired or revoked",
        )),
    }
}
