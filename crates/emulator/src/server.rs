//! The connection loop and the per-request pipeline around the router: trailing slashes,
//! request counters, the rate limiter, faults, error bodies with request ids, ETags and 304s,
//! persistence after writes.

use crate::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::clock::EmulatorClock;
use crate::error::{ApiError, EmulatorError};
use crate::faults::Faults;
use crate::logic::ratelimit::{Bucket, Buckets, Decision};
use crate::store::Store;
use crate::webhook::{Delivery, Dispatcher};
use crate::{ApiVersion, EmulatorConfig, RunningEmulator, persist};

/// Everything the handlers share.
pub(crate) struct App {
    pub store: Mutex<Store>,
    pub clock: EmulatorClock,
    pub faults: Faults,
    pub api_version: ApiVersion,
    pub admin_token: String,
    pub counters: Mutex<BTreeMap<(String, String), u64>>,
    /// Of those requests, the ones answered 304 (no body sent), by the same key.
    pub not_modified: Mutex<BTreeMap<(String, String), u64>>,
    pub logins: Mutex<HashMap<String, Vec<Value>>>,
    pub rate_limiter: Mutex<Option<Buckets>>,
    pub deliveries: Mutex<Vec<Delivery>>,
    pub dispatcher: Dispatcher,
    pub data_file: Option<std::path::PathBuf>,
    pub rng: Mutex<StdRng>,
    /// `http://HOST:PORT`: the allowed CORS origin.
    pub site_url: String,
}

impl App {
    pub(crate) fn request_count(&self, method: &str, route: &str) -> u64 {
        let key = (method.to_ascii_uppercase(), route.to_owned());
        self.counters.locked().get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn not_modified_count(&self, method: &str, route: &str) -> u64 {
        let key = (method.to_ascii_uppercase(), route.to_owned());
        self.not_modified.locked().get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn login_requests(&self, method: &str) -> Vec<Value> {
        let method =
            if method.ends_with("-auth") { method.to_owned() } else { format!("{method}-auth") };
        self.logins.locked().get(&method).cloned().unwrap_or_default()
    }

    pub(crate) fn record_login(&self, method: &str, body: Value) {
        self.logins.locked().entry(method.to_owned()).or_default().push(body);
    }

    pub(crate) fn set_rate_limit_mode(&self, on: bool) {
        *self.rate_limiter.locked() = on.then(Buckets::default);
    }

    pub(crate) fn persist(&self) {
        let Some(path) = &self.data_file else { return };
        let store = self.store.locked();
        if let Err(e) = persist::save(path, &store) {
            tracing::error!(error = %e, "failed to save emulator state");
        }
    }

    fn req_id(&self) -> String {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = self.rng.locked();
        let id: String =
            (0..14).map(|_| char::from(ALNUM[rng.gen_range(0..ALNUM.len())])).collect();
        format!("req-{id}")
    }
}

pub(crate) async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let clock = config.clock.clone().unwrap_or_else(EmulatorClock::system);
    let mut rng = match config.rng_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    };
    let loaded = match &config.data_file {
        Some(path) => persist::load(path)?,
        None => None,
    };
    let store = match loaded {
        Some(store) => store,
        None => {
            let secret: [u8; 32] = rng.r#gen();
            Store::from_seed(&config.seed, clock.now_ms(), hex::encode(secret))?
        }
    };
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| EmulatorError::Bind { addr: config.addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind { addr: config.addr, source })?;
    let app = Arc::new(App {
        store: Mutex::new(store),
        faults: Faults::new(clock.clone()),
        clock,
        api_version: config.api_version,
        admin_token: config.admin_token,
        counters: Mutex::default(),
        not_modified: Mutex::default(),
        logins: Mutex::default(),
        rate_limiter: Mutex::new(config.rate_limit_mode.then(Buckets::default)),
        deliveries: Mutex::default(),
        dispatcher: Dispatcher::new(config.webhook_coalesce)?,
        data_file: config.data_file,
        rng: Mutex::new(rng),
        site_url: format!("http://{addr}"),
    });
    app.persist();
    let router = crate::routes::router(app.clone());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, app.clone(), router, stop_rx));
    tracing::info!(%addr, "emulator listening");
    Ok(RunningEmulator { app, addr, stop, task })
}

/// Per-connection context handed to the pipeline.
#[derive(Clone)]
struct Conn {
    remote: SocketAddr,
    abort: Arc<Notify>,
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let conn = Conn { remote, abort: Arc::new(Notify::new()) };
        let (app, router, mut stop) = (app.clone(), router.clone(), stop.clone());
        connections.spawn(async move {
            let abort = conn.abort.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, router, conn) = (app.clone(), router.clone(), conn.clone());
                async move { Ok::<_, Infallible>(pipeline(app, router, conn, req.map(Body::new)).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection future closes the socket without an answer.
            tokio::select! {
                _ = served => {}
                _ = abort.notified() => {}
                _ = stop.changed() => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn strip_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let pq = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    Uri::builder().path_and_query(pq).build().ok()
}

/// The URI as the client sent it, for Fastify's route-not-found message.
#[derive(Clone)]
pub(crate) struct OriginalUri(pub Uri);

/// Every Infisical answer, faults and rate-limit refusals included, carries the CORS headers.
async fn pipeline(app: Arc<App>, router: Router, conn: Conn, req: Request<Body>) -> Response {
    let path = req.uri().path();
    let is_admin = path == "/__emulator" || path.starts_with("/__emulator/");
    let mut response = handle(app.clone(), router, conn, req).await;
    if !is_admin {
        cors(&app, response.headers_mut());
    }
    response
}

async fn handle(app: Arc<App>, router: Router, conn: Conn, mut req: Request<Body>) -> Response {
    let original = req.uri().clone();
    req.extensions_mut().insert(OriginalUri(original.clone()));
    if let Some(uri) = strip_trailing_slash(&original) {
        *req.uri_mut() = uri;
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let is_admin = path == "/__emulator" || path.starts_with("/__emulator/");
    let req_id = app.req_id();
    let mut limit_headers = None;
    if !is_admin {
        *app.counters
            .lock()
            .expect("counters lock")
            .entry((method.clone(), path.clone()))
            .or_insert(0) += 1;
        match rate_limit(&app, req.headers(), conn.remote.ip(), &method, &path) {
            Ok(decision) => limit_headers = decision,
            Err(decision) => {
                let response = too_many_requests(decision.reset_secs, decision.limit);
                return finish(&app, response, &req_id, None).await;
            }
        }
        let outcome = {
            let mut rng = app.rng.locked();
            app.faults.evaluate(&method, &path, &mut *rng)
        };
        if !outcome.latency.is_zero() {
            tokio::time::sleep(outcome.latency).await;
        }
        if outcome.drop_connection {
            conn.abort.notify_one();
            return std::future::pending().await;
        }
        if let Some((status, retry_after)) = outcome.status {
            let response = fault_response(status, retry_after);
            return finish(&app, response, &req_id, None).await;
        }
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    if method == "OPTIONS" && !is_admin {
        return preflight(&app, req.headers());
    }
    let req = match read_body(&app, req).await {
        Ok(req) => req,
        Err(refusal) => return finish(&app, refusal.into_response(), &req_id, None).await,
    };
    let response = match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let wrote = !is_admin && method != "GET" && response.status().is_success();
    let mut response = finish(&app, response, &req_id, if_none_match).await;
    if !is_admin && response.status() == StatusCode::NOT_MODIFIED {
        *app.not_modified.locked().entry((method, path)).or_insert(0) += 1;
    }
    if let Some(d) = limit_headers {
        add_limit_headers(response.headers_mut(), &d);
    }
    if wrote {
        app.persist();
    }
    response
}

/// Fastify's JSON body limit (1 MiB, spec 4.3).
pub(crate) const BODY_LIMIT: usize = 1 << 20;

/// Reads the whole body up to [`BODY_LIMIT`]. A larger body is refused the way the emulated
/// server does (2024: the error handler masks Fastify's 413 as a 500; 2026: 413). A
/// `text/plain` body reaches the routes as the JSON string Fastify's text parser makes of it,
/// so the schema check reports "Expected object, received string".
async fn read_body(app: &App, req: Request<Body>) -> Result<Request<Body>, ApiError> {
    let too_large = || match app.api_version {
        ApiVersion::V2024 => ApiError::internal(),
        ApiVersion::V2026 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            "Request body is too large",
        ),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let text = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"));
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| too_large())?;
    let bytes = if text && !bytes.is_empty() {
        let as_json = serde_json::to_vec(&String::from_utf8_lossy(&bytes))
            .map_err(|_| ApiError::internal())?;
        axum::body::Bytes::from(as_json)
    } else {
        bytes
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The CORS headers `@fastify/cors` adds with `credentials: true` and the site URL as the
/// allowed origin (the emulator is its own site).
fn cors(app: &App, headers: &mut HeaderMap) {
    if let Ok(origin) = HeaderValue::from_str(&app.site_url) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// `OPTIONS` as `@fastify/cors` answers it: a preflight (with `Origin` and
/// `Access-Control-Request-Method`) gets 204 with the allowed methods and the requested
/// headers echoed; anything else is 400 "Invalid Preflight Request".
fn preflight(app: &App, request: &HeaderMap) -> Response {
    if !request.contains_key(header::ORIGIN)
        || !request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = (StatusCode::BAD_REQUEST, "Invalid Preflight Request").into_response();
        cors(app, response.headers_mut());
        return response;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    cors(app, headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

fn client_ip(headers: &HeaderMap, remote: IpAddr) -> String {
    // trustProxy: the first address of x-forwarded-for is the client.
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| remote.to_string())
}

fn rate_limit(
    app: &App,
    headers: &HeaderMap,
    remote: IpAddr,
    method: &str,
    path: &str,
) -> Result<Option<Decision>, Decision> {
    let mut guard = app.rate_limiter.locked();
    let Some(buckets) = guard.as_mut() else { return Ok(None) };
    let Some(bucket) = Bucket::for_route(method, path) else { return Ok(None) };
    let ip = client_ip(headers, remote);
    let now = app.clock.now_ms();
    let global = buckets.hit(&ip, Bucket::Global, now);
    if !global.allowed {
        return Err(global);
    }
    let route = buckets.hit(&ip, bucket, now);
    if route.allowed { Ok(Some(route)) } else { Err(route) }
}

fn add_limit_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs));
}

/// The rate limiter's answer (spec 4.2).
fn too_many_requests(retry_after: u64, limit: u32) -> Response {
    let error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimitExceeded",
        format!("Rate limit exceeded. Please try again in {retry_after} seconds"),
    );
    let mut response = error.into_response();
    let headers = response.headers_mut();
    add_limit_headers(
        headers,
        &Decision { allowed: false, limit, remaining: 0, reset_secs: retry_after },
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    match status {
        429 => too_many_requests(retry_after.unwrap_or(1), 60),
        503 => {
            let body = json!({"status": "unavailable", "message": "Server is starting up, migrations in progress..."});
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        other => {
            let status = StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (name, message) = match status.as_u16() {
                400 => ("BadRequest", "Bad request"),
                401 => ("UnauthorizedError", "You are not allowed to access this resource"),
                403 => ("ForbiddenError", "You are not allowed to access this resource"),
                404 => ("NotFound", "Not found"),
                504 => ("GatewayTimeoutError", "Gateway timeout"),
                _ => ("InternalServerError", "Something went wrong"),
            };
            ApiError::new(status, name, message).into_response()
        }
    }
}

/// Renders error bodies, adds an ETag to every answer with a body and turns a matching
/// `If-None-Match` into 304, whatever the method or status (`@fastify/etag` runs on send).
async fn finish(
    app: &App,
    mut response: Response,
    req_id: &str,
    if_none_match: Option<HeaderValue>,
) -> Response {
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        // The 2024 server put no request id in any error body.
        let legacy = app.api_version == ApiVersion::V2024;
        let body = error.body(if legacy { None } else { Some(req_id) });
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let bytes = serde_json::to_vec(&body).expect("json values always serialise");
        response = Response::from_parts(parts, Body::from(bytes));
    }
    // Fastify names the charset on JSON answers.
    if response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/json") {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal().into_response();
    };
    if bytes.is_empty() {
        return Response::from_parts(parts, Body::empty());
    }
    let digest = Sha256::digest(&bytes);
    let etag = format!("\"{}\"", &hex::encode(digest)[..32]);
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let matched = if_none_match.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|candidate| {
            let c = candidate.trim();
            c == "*" || c == etag || c.strip_prefix("W/") == Some(etag.as_str())
        })
    });
    parts.headers.insert(header::ETAG, etag_value);
    if matched {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_stripped_keeping_the_query() {
        let uri: Uri = "/api/v4/secrets/?a=1&b=/x/".parse().unwrap();
        assert_eq!(strip_trailing_slash(&uri).unwrap().to_string(), "/api/v4/secrets?a=1&b=/x/");
        assert_eq!(strip_trailing_slash(&"/a//".parse().unwrap()).unwrap().to_string(), "/a");
        assert!(strip_trailing_slash(&"/".parse().unwrap()).is_none());
        assert!(strip_trailing_slash(&"/a?x=/".parse().unwrap()).is_none());
    }

    #[test]
    fn the_client_ip_comes_from_the_proxy_header_first() {
        let remote: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_ip(&headers, remote), "127.0.0.1");
        headers.insert("x-forwarded-for", HeaderValue::from_static(" 10.0.0.7 , 10.0.0.1"));
        assert_eq!(client_ip(&headers, remote), "10.0.0.7");
    }
}
