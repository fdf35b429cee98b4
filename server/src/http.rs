//! The request pipeline: request id, routing, authentication, rate limits, concurrency
//! limits, body limits and content types, the handler (with panics caught), caching
//! headers, problem answers and metrics. Handlers see a [`Call`] and return an [`Out`]
//! or a [`Problem`]; nothing else in the server touches hyper types.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::app::App;
use crate::auth::Principal;
use crate::problem::Problem;
use crate::ratelimit::Class;
use crate::routes::{self, BodyKind, Route};

/// What a handler is given.
pub struct Call {
    /// The application.
    pub app: Arc<App>,
    /// Who calls.
    pub principal: Principal,
    /// Path parameters, by name.
    pub params: crate::routes::Params,
    /// The request path.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body (already size-checked).
    pub body: Bytes,
    /// The request id.
    pub request_id: String,
    /// The client's address.
    pub peer: IpAddr,
    /// The route.
    pub route: &'static Route,
}

impl Call {
    /// A path parameter.
    pub fn param(&self, name: &str) -> &str {
        self.params.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| v.as_str())
    }

    /// The JSON body as `T`, with unknown fields refused and the failing field's path
    /// reported.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        parse_json(&self.body)
    }

    /// The query string as `T` (unknown parameters refused).
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_urlencoded::from_str(&self.query)
            .map_err(|e| Problem::malformed(format!("bad query parameters: {e}")))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The version named by `If-Match`, if the header is present, checked against
    /// `current` (the resource as a GET would answer it now, rendered only when the
    /// header carries a full ETag).
    ///
    /// An ETag is `"VERSION-HASH"`, the hash taken over the representation: a version
    /// alone could name two contents when a crash rolled back a write that a reader had
    /// already seen (reads may run one commit group ahead of durability) and another
    /// write then took its version. A full ETag must therefore equal the current one
    /// (else 412); a bare `"VERSION"` is still taken as a version. The version goes on to
    /// the engine, which checks it again when the change is applied.
    pub fn if_match(&self, current: impl FnOnce() -> Option<Out>) -> Result<Option<u64>, Problem> {
        let Some(value) = self.header("if-match") else { return Ok(None) };
        let tag = value.trim().trim_start_matches("W/");
        let inner = tag.trim_matches('"');
        let (version, hashed) = match inner.split_once('-') {
            Some((version, _)) => (version, true),
            None => (inner, false),
        };
        let version: u64 = version.parse().map_err(|_| {
            Problem::precondition_failed("If-Match does not name a version of this resource")
        })?;
        let current = if hashed { current().and_then(|c| c.etag) } else { None };
        if let Some(current) = current {
            if current != tag {
                return Err(Problem::precondition_failed(format!(
                    "If-Match names {tag}; the resource is now {current}"
                )));
            }
        }
        Ok(Some(version))
    }

    /// Fails with 403 unless the caller holds `permission`.
    pub fn require(&self, permission: &str) -> Result<(), Problem> {
        match (&self.principal, self.principal.can(permission)) {
            (_, true) => Ok(()),
            (Principal::Anonymous, false) => {
                Err(Problem::unauthenticated("this endpoint needs a bearer token"))
            }
            _ => Err(Problem::forbidden(format!("this needs the {permission} permission"))),
        }
    }
}

/// A hash of a body for its ETag: FNV-1a's multiply over eight bytes at a time (a byte
/// at a time was a visible share of a purchase's CPU), the length mixed in, and a
/// final avalanche. Stable across processes, as an ETag must be.
fn body_hash(body: Option<&[u8]>) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let body = body.unwrap_or_default();
    let mut words = body.chunks_exact(8);
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ body.len() as u64;
    for word in &mut words {
        h = (h ^ u64::from_le_bytes(word.try_into().expect("eight bytes"))).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
    }
    // murmur3's finaliser: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Parses a JSON body into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    // Most bodies are valid: they are read once, without tracking the path; only a
    // refused one is read again to name the field.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut deserializer);
    if parsed.is_ok() {
        if let Err(error) = deserializer.end() {
            return Err(Problem::malformed(format!("the body is not valid JSON: {error}")));
        }
    }
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(Problem::malformed(format!("the body is not valid JSON: {inner}")));
            }
            let message = inner.to_string();
            // serde names a missing field only in its message; the path is the parent.
            let missing =
                message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name.to_string(),
                (".", None) => String::new(),
                (parent, Some(name)) => format!("{parent}.{name}"),
                (path, None) => path.to_string(),
            };
            Err(Problem::invalid_field(&field, message))
        }
    }
}

/// A handler's answer.
#[derive(Debug)]
pub struct Out {
    /// The status.
    pub status: u16,
    /// The JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// An entity tag: the resource's version, or a hash of the body for lists.
    pub etag: Option<String>,
    /// `Location` of a created resource.
    pub location: Option<String>,
    /// `Cache-Control`.
    pub cache: Option<&'static str>,
    /// The body's media type.
    pub content_type: &'static str,
    /// Replayed for an idempotency key.
    pub replayed: bool,
    /// `WWW-Authenticate`, for a 401 that is not a problem (the token endpoint's).
    pub www_authenticate: Option<&'static str>,
    /// A streamed body (Server-Sent Events) instead of `body`.
    pub stream: Option<Body>,
}

impl Out {
    /// 200 with `value` as JSON.
    pub fn ok<T: Serialize>(value: &T) -> Out {
        Out::json(200, value)
    }

    /// `status` with `value` as JSON.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Out {
        let body = serde_json::to_vec(value).expect("response values serialize");
        Out { body: Some(body), ..Out::status(status) }
    }

    /// 201 with `value` at `location`.
    pub fn created<T: Serialize>(value: &T, location: String) -> Out {
        Out { location: Some(location), ..Out::json(201, value) }
    }

    /// 201 with a JSON body already written, at `location`.
    pub fn created_json(body: Vec<u8>, location: String) -> Out {
        Out { body: Some(body), location: Some(location), ..Out::status(201) }
    }

    /// 204.
    pub fn no_content() -> Out {
        Out::status(204)
    }

    /// `status` with no body.
    pub fn status(status: u16) -> Out {
        Out {
            status,
            body: None,
            etag: None,
            location: None,
            cache: None,
            content_type: "application/json",
            replayed: false,
            www_authenticate: None,
            stream: None,
        }
    }

    /// 200 with a streamed body of `content_type`, never cached.
    pub fn stream(content_type: &'static str, body: Body) -> Out {
        Out { content_type, stream: Some(body), ..Out::status(200) }
    }

    /// With the ETag of a resource at `version`: the version and a hash of the
    /// representation, so no two contents ever share an ETag (see [`Call::if_match`]).
    pub fn versioned(mut self, version: u64) -> Out {
        let hash = body_hash(self.body.as_deref()) as u32;
        let mut etag = String::with_capacity(32);
        etag.push('"');
        etag.push_str(itoa::Buffer::new().format(version));
        etag.push('-');
        crate::wire::push_hex(&mut etag, hash.into(), 8);
        etag.push('"');
        self.etag = Some(etag);
        self
    }

    /// With an ETag hashed from the body (for lists).
    pub fn hashed(mut self) -> Out {
        let hash = body_hash(self.body.as_deref());
        let mut etag = String::with_capacity(20);
        etag.push_str("\"h");
        crate::wire::push_hex(&mut etag, hash.into(), 16);
        etag.push('"');
        self.etag = Some(etag);
        self
    }

    /// Cacheable by anyone for a short while (public catalog reads).
    pub fn public(mut self) -> Out {
        self.cache = Some("public, max-age=30");
        self
    }
}

/// A response body: whole (every JSON answer) or streamed (Server-Sent Events).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// Handles one HTTP request; never fails.
pub async fn serve(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = request.method().clone();
    // With `EMPORIUM_LOG=debug`, every log line of the request carries its id. Only
    // then: an enabled span formats its fields on every request, a measurable share of
    // the cheapest answers; the warnings and errors a request can cause name its id
    // themselves, and a 500 is logged with it below (not a 503: under overload that
    // would add a log write to every refusal).
    let span = tracing::debug_span!("request", request_id = %request_id, method = %method, path = %request.uri().path());
    let (route, mut response) = match routes::find(request.method(), request.uri().path()) {
        Ok((route, params)) => {
            let dispatched = dispatch(app.clone(), route, params, request, &request_id, peer);
            (Some(route), dispatched.instrument(span.clone()).await)
        }
        Err(problem) => (None, problem_response(&problem, &request_id)),
    };
    let route_name = route.map_or("unmatched", |r| r.path);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    if status == 500 {
        tracing::error!(request_id = %request_id, route = route_name, "answered 500");
    }
    app.metrics.request(route, &method, status, started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(route = route_name, status, "answered"));
    Ok(response)
}

/// The client's request id if it is a sensible one, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    match headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id)
            if (1..=128).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => {
            let mut id = String::with_capacity(36);
            id.push_str("req_");
            crate::wire::push_hex(&mut id, rand::random::<u128>(), 32);
            id
        }
    }
}

async fn dispatch(
    app: Arc<App>,
    route: &'static Route,
    params: crate::routes::Params,
    request: Request<Incoming>,
    request_id: &str,
    peer: IpAddr,
) -> Response<Body> {
    // A standby serves reads; every write, the token endpoint's included, is refused
    // before anything else is done for it. Only a promotion is taken.
    if route.class != Class::Read
        && route.operation != "promote"
        && app.engine.role() == emporium_engine::NodeRole::Standby
    {
        return problem_response(&Problem::read_only_standby(), request_id);
    }
    let (parts, body) = request.into_parts();
    let principal = match authenticate(&app, route, &parts.headers) {
        Ok(principal) => principal,
        Err(problem) => return problem_response(&problem, request_id),
    };
    let class = route.class;
    let limited = app.config.rate_limits.then(|| {
        // Providers' callbacks are signed, not signed in: a bucket of their own per
        // address, apart from the other clients there (the built-in gateway calls from
        // loopback, where a reverse proxy's clients also come from).
        let key = match principal.key() {
            Some(key) => key,
            None if route.operation == "provider_callback" => format!("callback:{peer}"),
            None => peer.to_string(),
        };
        app.limiter.take(class, &key, Instant::now())
    });
    if let Some(decision) = limited.filter(|d| !d.allowed) {
        app.metrics.rate_limited(class.as_str());
        let mut problem = Problem::new(
            429,
            "rate_limited",
            "Too many requests",
            "slow down and retry after the given time",
        );
        problem.retry_after_s = Some(decision.reset_s.max(1));
        let mut response = problem_response(&problem, request_id);
        rate_headers(&mut response, decision);
        return response;
    }
    let semaphore = if class == Class::Read { &app.reads } else { &app.writes };
    let Ok(_permit) = semaphore.try_acquire() else {
        return problem_response(
            &Problem::overloaded("too many requests in flight; retry shortly"),
            request_id,
        );
    };
    let body = match read_body(&app, route, &parts, body).await {
        Ok(body) => body,
        Err(problem) => return problem_response(&problem, request_id),
    };
    let if_none_match = parts.headers.get(header::IF_NONE_MATCH).cloned();
    let call = Call {
        app: app.clone(),
        principal,
        params,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
        request_id: request_id.to_string(),
        peer,
        route,
    };
    let mut response = match run_handler(&app, call).await {
        Ok(out) => out_response(out, if_none_match.as_ref()),
        Err(problem) => problem_response(&problem, request_id),
    };
    if let Some(decision) = limited {
        rate_headers(&mut response, decision);
    }
    response
}

/// Runs the route's handler; a panic is caught, counted and answered 500, and the
/// server goes on.
pub async fn run_handler(app: &App, call: Call) -> Result<Out, Problem> {
    let route = call.route.path;
    match std::panic::AssertUnwindSafe(routes::handle(call)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            app.metrics.panic();
            tracing::error!(route, "a handler panicked");
            Err(Problem::internal("the server hit a bug handling this request"))
        }
    }
}

/// The principal a bearer token names. No header is anonymous; a bad token is 401.
fn authenticate(app: &App, route: &Route, headers: &HeaderMap) -> Result<Principal, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Principal::Anonymous) };
    let value = value
        .to_str()
        .map_err(|_| Problem::unauthenticated("the Authorization header is not text"))?;
    // The token endpoint takes API client credentials as HTTP Basic (RFC 6749 §2.3.1).
    if route.body == BodyKind::JsonOrForm && value.starts_with("Basic ") {
        return Ok(Principal::Anonymous);
    }
    let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))
    else {
        return Err(Problem::unauthenticated("use Authorization: Bearer <access token>"));
    };
    let verify = || app.tokens.verify(&app.keys, token.trim(), crate::app::now_s());
    let claims = match verify() {
        Ok(claims) => Ok(claims),
        // A key issued since start (a standby learns its primary's from the log).
        Err(_) if app.refresh_keys() => verify(),
        Err(e) => Err(e),
    }
    .map_err(|e| Problem::unauthenticated(e.to_string()))?;
    crate::handlers::accounts::principal_from_claims(app, &claims)
}

async fn read_body(
    app: &App,
    route: &Route,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Bytes, Problem> {
    let limit = app.config.body_bytes_max;
    let too_large = || {
        Problem::new(
            413,
            "payload_too_large",
            "Payload too large",
            format!("the body may have at most {limit} bytes"),
        )
    };
    if let Some(length) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit as u64 {
            return Err(too_large());
        }
    }
    let bytes = match whole_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyRead::TooLarge) => return Err(too_large()),
        Err(BodyRead::Failed(error)) => {
            return Err(Problem::malformed(format!("reading the body failed: {error}")))
        }
    };
    check_content_type(route.body, &parts.headers, &bytes)?;
    Ok(bytes)
}

/// Why a body could not be read whole.
#[derive(Debug)]
enum BodyRead {
    /// It has more than the limit's bytes.
    TooLarge,
    /// The connection failed or the framing was wrong: what went wrong.
    Failed(String),
}

/// The bytes of `body`, at most `limit` of them. A body that comes in one frame (a
/// small request's always does) is that frame's bytes, neither copied nor queued:
/// `http_body_util`'s `Collect` queued each frame in a growing `VecDeque` first (2% of
/// a worker's time answering sold-out purchases). A body of several frames is gathered
/// into one buffer. Trailers are not part of it.
async fn whole_body<B>(mut body: B, limit: usize) -> Result<Bytes, BodyRead>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut first = Bytes::new();
    let mut gathered: Option<Vec<u8>> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyRead::Failed(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(BodyRead::TooLarge);
        }
        match &mut gathered {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None if data.is_empty() => {}
            None => {
                let mut buffer = Vec::with_capacity(len);
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                gathered = Some(buffer);
            }
        }
    }
    Ok(gathered.map_or(first, Bytes::from))
}

fn check_content_type(kind: BodyKind, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    let is = |wanted: &str| media.is_some_and(|m| m.eq_ignore_ascii_case(wanted));
    let json = is("application/json");
    let form = is("application/x-www-form-urlencoded");
    let accepted = match kind {
        BodyKind::None => true,
        BodyKind::OptionalJson => body.is_empty() || json,
        BodyKind::Json => json,
        BodyKind::JsonOrForm => json || form,
    };
    if accepted {
        return Ok(());
    }
    let detail = match kind {
        BodyKind::JsonOrForm => "send application/json or application/x-www-form-urlencoded",
        _ => "send the body as application/json",
    };
    Err(Problem::new(415, "unsupported_media_type", "Unsupported media type", detail))
}

fn rate_headers(response: &mut Response<Body>, decision: crate::ratelimit::Decision) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", decision.limit.into());
    headers.insert("ratelimit-remaining", decision.remaining.into());
    headers.insert("ratelimit-reset", decision.reset_s.into());
}

/// Turns a handler's answer into a response, answering 304 to a matching
/// `If-None-Match`.
fn out_response(out: Out, if_none_match: Option<&HeaderValue>) -> Response<Body> {
    let not_modified = match (&out.etag, if_none_match.and_then(|v| v.to_str().ok())) {
        (Some(etag), Some(wanted)) => {
            out.status == 200
                && wanted
                    .split(',')
                    .any(|w| w.trim() == "*" || w.trim().trim_start_matches("W/") == etag)
        }
        _ => false,
    };
    let status = if not_modified { 304 } else { out.status };
    // The parts are set directly: `Response::builder` re-checks every header name and
    // value it is given, and these are this server's own.
    let mut headers = HeaderMap::with_capacity(6);
    if let Some(etag) = out.etag {
        headers.insert(header::ETAG, HeaderValue::try_from(etag).expect("entity tags are ASCII"));
    }
    if let Some(location) = out.location {
        let location = HeaderValue::try_from(location).expect("locations are ASCII paths");
        headers.insert(header::LOCATION, location);
    }
    headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(out.cache.unwrap_or("no-store")));
    if out.replayed {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    if let Some(challenge) = out.www_authenticate {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    let body = match (out.stream, not_modified, out.body) {
        (Some(stream), ..) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(out.content_type));
            stream
        }
        (None, false, Some(body)) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(out.content_type));
            full(Bytes::from(body))
        }
        _ => full(Bytes::new()),
    };
    response(status, headers, body)
}

/// A response of `status` with `headers` and `body`.
fn response(status: u16, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("handlers use valid statuses");
    *response.headers_mut() = headers;
    response
}

/// A problem+json response.
pub fn problem_response(problem: &Problem, request_id: &str) -> Response<Body> {
    let body = problem.body(request_id);
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(seconds) = problem.retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(allow) = &problem.allow {
        headers.insert(header::ALLOW, HeaderValue::try_from(allow).expect("methods are ASCII"));
    }
    if problem.status == 401 {
        let challenge = HeaderValue::from_static("Bearer realm=\"emporium\"");
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    response(problem.status, headers, full(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{BodyKind, HandlerFuture};

    #[test]
    fn a_body_hash_tells_apart_every_one_byte_change_and_every_length() {
        let body: Vec<u8> = (0..101u8).collect();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(body_hash(Some(&body))));
        for i in 0..body.len() {
            let mut changed = body.clone();
            changed[i] ^= 1;
            assert!(seen.insert(body_hash(Some(&changed))), "a flip at {i} collides");
        }
        for len in 0..body.len() {
            assert!(seen.insert(body_hash(Some(&body[..len]))), "the first {len} bytes collide");
        }
        // ETags outlive the process: the value is pinned (an independent computation of
        // the same function gave it), so a change of the hash is a deliberate one.
        assert_eq!(body_hash(Some(br#"{"id":"ord_1","version":1}"#)), 0x5cc5_782c_0f9e_e410);
        assert_eq!(body_hash(None), body_hash(Some(b"")));
    }

    /// A body of the given frames (data, or trailers where `None`), and a failure
    /// after them when `fails`.
    fn framed(
        frames: Vec<Option<&'static [u8]>>,
        fails: bool,
    ) -> impl hyper::body::Body<Data = Bytes, Error = String> + Unpin {
        let mut items: Vec<Result<hyper::body::Frame<Bytes>, String>> = frames
            .into_iter()
            .map(|frame| {
                Ok(match frame {
                    Some(data) => hyper::body::Frame::data(Bytes::from_static(data)),
                    None => hyper::body::Frame::trailers(HeaderMap::new()),
                })
            })
            .collect();
        if fails {
            items.push(Err("the connection was reset".into()));
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn a_whole_body_is_its_frames_in_order_within_the_limit() {
        let read = |frames, limit| whole_body(framed(frames, false), limit);
        // One frame: those very bytes, not a copy.
        let one: &'static [u8] = br#"{"quantity":1}"#;
        let bytes = read(vec![Some(one)], 64).await.unwrap();
        assert_eq!((bytes.as_ptr(), bytes.len()), (one.as_ptr(), one.len()));
        // Several frames, empty ones and trailers among them: gathered in order.
        let frames = vec![Some(&b""[..]), Some(b"ab"), Some(b""), Some(b"cde"), None, Some(b"f")];
        assert_eq!(&read(frames, 6).await.unwrap()[..], b"abcdef");
        assert!(read(vec![], 0).await.unwrap().is_empty());
        assert!(read(vec![Some(b""), None], 0).await.unwrap().is_empty());
        // One byte past the limit, in one frame or over several.
        assert!(matches!(read(vec![Some(b"abcdefg")], 6).await, Err(BodyRead::TooLarge)));
        let frames = vec![Some(&b"abc"[..]), Some(b"def"), Some(b"g")];
        assert!(matches!(read(frames, 6).await, Err(BodyRead::TooLarge)));
        // A failure mid-body is one, whatever came before it.
        let failed = whole_body(framed(vec![Some(b"ab")], true), 64).await;
        assert!(matches!(failed, Err(BodyRead::Failed(m)) if m == "the connection was reset"));
    }

    fn panicking(_call: Call) -> HandlerFuture {
        Box::pin(async { panic!("a bug in a handler") })
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config {
            data_dir: dir.path().join("data"),
            password_hash_kib: 64,
            ..Default::default()
        };
        let app = App::open(config).await.unwrap();
        let route: &'static Route = Box::leak(Box::new(Route {
            method: http::Method::GET,
            path: "/panic",
            operation: "panic",
            summary: "",
            handler: panicking,
            class: Class::Read,
            body: BodyKind::None,
            success: 200,
            access: "anyone",
            request_schema: None,
            response_schema: None,
            errors: &[],
            idempotency: None,
        }));
        for _ in 0..2 {
            let call = Call {
                app: app.clone(),
                principal: Principal::Anonymous,
                params: vec![],
                path: "/panic".into(),
                query: String::new(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                request_id: "req_1".into(),
                peer: IpAddr::from([127, 0, 0, 1]),
                route,
            };
            let problem = run_handler(&app, call).await.unwrap_err();
            assert_eq!((problem.status, problem.code), (500, "internal_error"));
        }
        assert!(app
            .metrics
            .render(&app.engine, &app.replication, &app.payments, &app.kpis)
            .contains("emporium_handler_panics_total 2"));
        app.engine.clone().close();
    }
}
