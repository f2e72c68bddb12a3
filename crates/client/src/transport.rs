//! One HTTP exchange with Infisical, with the reliability rules around it: request budget,
//! circuit breaker, retries with full-jitter backoff on network errors, 429, 502, 503 and 504
//! (only when the request is safe to repeat), `Retry-After` honoured, errors classified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::Method;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_NONE_MATCH, RETRY_AFTER,
};
use url::Url;
use zeroize::Zeroizing;

use crate::auth::AuthMethod;
use crate::clock::{Clock, Sleeper};
use crate::config::ClientConfig;
use crate::error::{ClientError, ErrorClass, classify, proves_not_processed};
use crate::retry::{CircuitBreaker, RetryPolicy, TokenBucket, parse_retry_after};
use crate::token::AccessToken;
use crate::wire::ErrorBody;

/// Histogram of each wait, in fractional seconds, caused by a server rate limit (`Retry-After`)
/// or the client budget; its sum is the total time spent waiting.
pub const METRIC_RATE_LIMIT_WAIT: &str = "infisical_rate_limit_wait_seconds";

/// The server's rate-limit headers (`@fastify/rate-limit`).
const RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
const RATELIMIT_RESET: &str = "x-ratelimit-reset";

/// A request, described independently of the wire. No `Debug`: the body may hold a secret.
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path segments under the API base, e.g. `["v4", "secrets", "KEY"]`; encoded on use.
    pub(crate) segments: Vec<String>,
    pub(crate) query: Vec<(&'static str, String)>,
    /// JSON text.
    pub(crate) body: Option<Zeroizing<String>>,
    /// Safe to send twice (GET, an update that sets a value, a delete, an upsert).
    pub(crate) idempotent: bool,
    /// Sent as `If-None-Match`; a 304 then comes back as [`Reply::not_modified`].
    pub(crate) if_none_match: Option<String>,
}

/// A successful exchange. No `Debug`: the body may hold secrets.
pub(crate) struct Reply {
    pub(crate) body: Zeroizing<Vec<u8>>,
    pub(crate) etag: Option<String>,
    /// The server answered 304 to `If-None-Match`; the body is empty.
    pub(crate) not_modified: bool,
}

impl Call {
    pub(crate) fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            idempotent: false,
            if_none_match: None,
        }
    }

    /// The route family a server rate limit applies to: the version and resource
    /// (`v4/secrets`, `v1/auth`, `v2/folders`).
    pub(crate) fn family(&self) -> String {
        self.segments.iter().take(2).map(String::as_str).collect::<Vec<_>>().join("/")
    }

    /// The route for logs: the path without query, secret names included (they are not values).
    pub(crate) fn route(&self) -> String {
        format!("/api/{}", self.segments.join("/"))
    }
}

/// A server rate-limit window as its headers described it (`x-ratelimit-remaining`,
/// `x-ratelimit-reset`), counted down locally for requests sent since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateWindow {
    pub(crate) remaining: u64,
    pub(crate) reset_at: SystemTime,
}

impl RateWindow {
    pub(crate) fn announced(remaining: u64, reset_in: Duration, now: SystemTime) -> Self {
        Self { remaining, reset_at: now + reset_in }
    }

    /// The window has reset: the server has not described the next one yet.
    pub(crate) fn is_over(&self, now: SystemTime) -> bool {
        now >= self.reset_at
    }

    /// Takes one request from the window: `None` to go now, or the wait until the window
    /// resets when it is used up (every caller waits for that reset).
    pub(crate) fn take(&mut self, now: SystemTime) -> Option<Duration> {
        if self.is_over(now) {
            return None;
        }
        if self.remaining > 0 {
            self.remaining -= 1;
            return None;
        }
        Some(self.reset_at.duration_since(now).unwrap_or_default())
    }

    /// A newer answer: a later reset means a new window; within the same window the lower
    /// count wins, since answers to concurrent requests arrive out of order. An answer about a
    /// window already over changes nothing. `unanswered` is how many other requests are still
    /// out: see [`RateWindow::learned`].
    pub(crate) fn update(&mut self, announced: RateWindow, unanswered: u64, now: SystemTime) {
        if announced.is_over(now) {
            return;
        }
        if announced.reset_at > self.reset_at + Duration::from_secs(1) {
            *self = announced.learned(unanswered);
        } else {
            self.remaining = self.remaining.min(announced.remaining);
        }
    }

    /// A window first learned while `unanswered` other requests are still out. They were sent
    /// under the window before, but the server counts each where it arrives, so any of them may
    /// yet land in this one: they are taken from it, or the window runs out early and 429s
    /// follow. (One that landed before the answer is counted twice: a request lost, never a
    /// refusal.)
    pub(crate) fn learned(mut self, unanswered: u64) -> Self {
        self.remaining = self.remaining.saturating_sub(unanswered);
        self
    }
}

/// What the client knows of a route family's server-side limit.
enum Pace {
    /// The first request is out (of all, or since the last window reset); the others wait for
    /// its answer to learn the window (a burst would otherwise overrun it before any answer
    /// came back).
    Probing(Arc<tokio::sync::Notify>),
    /// The last answer carried no rate-limit headers.
    Unlimited,
    Window(RateWindow),
}

/// A route family's pace and its requests out (admitted and not yet answered).
struct Family {
    pace: Pace,
    in_flight: u64,
}

/// One admitted request of a family, until it ends however it ends (answered, failed or
/// cancelled): no longer counted in flight; and if it was the probe, the family is no longer
/// `Probing` unless an answer made it a window, and the waiters are woken.
struct Departure<'a> {
    transport: &'a Transport,
    family: &'a str,
    probe: Option<Arc<tokio::sync::Notify>>,
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        let mut windows = lock(&self.transport.windows);
        if let Some(family) = windows.get_mut(self.family) {
            family.in_flight = family.in_flight.saturating_sub(1);
            if let (Pace::Probing(n), Some(probe)) = (&family.pace, &self.probe)
                && Arc::ptr_eq(n, probe)
            {
                family.pace = Pace::Unlimited;
            }
        }
        drop(windows);
        if let Some(probe) = &self.probe {
            probe.notify_waiters();
        }
    }
}

fn probe_start() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

/// How an exchange failed, as far as the layer above needs to know.
pub(crate) enum Failure {
    /// 401 or 403 `TokenError`.
    ReAuth(String),
    /// The server has no such route.
    RouteNotFound,
    Error(ClientError),
}

pub(crate) struct Transport {
    http: reqwest::Client,
    pub(crate) base: Url,
    custom_headers: Vec<(HeaderName, HeaderValue)>,
    retry: RetryPolicy,
    bucket: Option<Mutex<TokenBucket>>,
    /// What the server's rate-limit headers said, per route family.
    windows: Mutex<HashMap<String, Family>>,
    breaker: Mutex<CircuitBreaker>,
    rng: Mutex<StdRng>,
    pub(crate) clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
}

/// Whether the client may open a TLS connection: to an `https` Infisical, or to a cloud
/// endpoint a login reaches through the same client (AWS STS, a configured metadata URL).
fn may_use_tls(config: &ClientConfig) -> bool {
    config.api_url.scheme() != "http"
        || !matches!(
            config.auth,
            AuthMethod::AccessToken(_)
                | AuthMethod::ServiceToken(_)
                | AuthMethod::UniversalAuth { .. }
                | AuthMethod::Kubernetes { .. }
                | AuthMethod::Oidc { .. }
                | AuthMethod::Jwt { .. }
        )
}

/// The extra trusted roots of the configuration: the PEM bundle at `ca_file` (read once, here)
/// and any PEM given directly. A file that cannot be read or holds no certificate is an error,
/// never silently ignored: the connection would then fail later with a vaguer message.
fn extra_roots(config: &ClientConfig) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let mut bundles: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!("cannot read ca file {}: {e}", path.display()))
        })?;
        bundles.push((format!("ca file {}", path.display()), pem));
    }
    if let Some(pem) = &config.root_certificates_pem {
        bundles.push(("root certificates".to_owned(), pem.clone()));
    }
    let mut out = Vec::new();
    for (what, pem) in bundles {
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::Config(format!("{what} is not a pem bundle: {e}")))?;
        if certificates.is_empty() {
            return Err(ClientError::Config(format!("{what} holds no pem certificate")));
        }
        out.extend(certificates);
    }
    Ok(out)
}

/// A redirect to another origin, refused.
#[derive(Debug)]
struct CrossOriginRedirect {
    to: String,
}

impl std::fmt::Display for CrossOriginRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cross-origin redirect to {}", self.to)
    }
}

impl std::error::Error for CrossOriginRedirect {}

/// `scheme://host:port` of a URL: no credentials, path or query.
pub(crate) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The URL for messages: origin and path, without credentials or query.
pub(crate) fn display_url(url: &Url) -> String {
    format!("{}{}", origin_of(url), url.path())
}

/// Every request carries a credential (a bearer token, custom headers such as an access proxy's
/// client secret, or a login body), and a 307/308 would send all of it again to wherever the
/// `Location` points. Redirects are followed within the origin of the request only; a redirect
/// to another scheme, host or port is refused.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(Url::origin);
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if first.is_some_and(|origin| origin == attempt.url().origin()) {
            attempt.follow()
        } else {
            let to = origin_of(attempt.url());
            attempt.error(CrossOriginRedirect { to })
        }
    })
}

/// The causes of a transport error, outermost first, each once: "client error (Connect): tcp
/// connect error: Connection refused (os error 111)".
fn error_causes(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

fn cross_origin_redirect(e: &reqwest::Error) -> Option<&CrossOriginRedirect> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<CrossOriginRedirect>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// A server error or outage answer: the status, then the server's message when it has one (a
/// bare "Something went wrong" says nothing without its 500).
fn unavailable(status: u16, message: String) -> Failure {
    let reason = if message.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}: {message}")
    };
    Failure::Error(ClientError::Unavailable { status: Some(status), reason })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one attempt produced.
enum Attempt {
    Done(Reply),
    Fail { failure: Failure, retry: Option<Option<Duration>>, breaker_failure: bool },
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        if let Some(budget) = &config.budget {
            budget.validate().map_err(ClientError::Config)?;
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(crate::config::USER_AGENT)
            .redirect(same_origin_redirects());
        for certificate in extra_roots(config)? {
            builder = builder.add_root_certificate(certificate);
        }
        if !may_use_tls(config) {
            // Loading the system's roots reads a hundred-odd files at every start; a client that
            // only ever speaks plain http has no use for them.
            builder = builder.tls_built_in_native_certs(false);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build http client: {e}")))?;
        let now = config.clock.now();
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Ok(Self {
            http,
            base: config.api_url.clone(),
            custom_headers: config.custom_headers.clone(),
            retry: config.retry,
            bucket: config.budget.map(|b| Mutex::new(TokenBucket::new(b, now))),
            windows: Mutex::new(HashMap::new()),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker)),
            rng: Mutex::new(rng),
            clock: config.clock.clone(),
            sleeper: config.sleeper.clone(),
        })
    }

    /// The plain HTTP client, for cloud metadata services (no Infisical headers).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn breaker_open(&self) -> bool {
        lock(&self.breaker).refuses_at(self.clock.now())
    }

    fn url(&self, call: &Call) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(call.segments.iter());
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Refuses at once while the circuit is open, then waits for the budget. The breaker is asked
    /// once per attempt: a second `allow` after a budget wait would refuse the very trial the
    /// first one admitted.
    async fn admit<'a>(&'a self, family: &'a str) -> Result<Departure<'a>, ClientError> {
        if let Err(retry_in) = lock(&self.breaker).allow(self.clock.now()) {
            return Err(ClientError::CircuitOpen { retry_in });
        }
        // The server's own budget first: when the window it announced is used up, wait for
        // its reset instead of collecting a 429.
        let departure = self.pace(family).await?;
        let Some(bucket) = &self.bucket else { return Ok(departure) };
        loop {
            let wait = match lock(bucket).try_take(self.clock.now()) {
                Ok(()) => return Ok(departure),
                Err(wait) => wait,
            };
            if wait > self.retry.max_retry_after {
                return Err(ClientError::RateLimited { retry_after: Some(wait) });
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "request budget exhausted, waiting");
            metrics::histogram!(METRIC_RATE_LIMIT_WAIT).record(wait.as_secs_f64());
            self.sleeper.sleep(wait).await;
        }
    }

    /// Waits until the server's window for `family` admits one more request; the first
    /// request of a family (or after a window reset) goes at once as its probe, while others
    /// wait for its answer.
    async fn pace<'a>(&'a self, family: &'a str) -> Result<Departure<'a>, ClientError> {
        enum Next {
            Go(Option<Arc<tokio::sync::Notify>>),
            AwaitProbe(Arc<tokio::sync::Notify>),
            Wait(Duration),
        }
        loop {
            let next = {
                let mut windows = lock(&self.windows);
                if !windows.contains_key(family) {
                    let pace = Pace::Probing(probe_start());
                    windows.insert(family.to_owned(), Family { pace, in_flight: 0 });
                }
                let Some(state) = windows.get_mut(family) else { continue };
                let next = match &mut state.pace {
                    // A new family: the first request is its probe.
                    Pace::Probing(notify) if state.in_flight == 0 => Next::Go(Some(notify.clone())),
                    Pace::Probing(notify) => Next::AwaitProbe(notify.clone()),
                    Pace::Unlimited => Next::Go(None),
                    Pace::Window(window) if window.is_over(self.clock.now()) => {
                        let notify = probe_start();
                        state.pace = Pace::Probing(notify.clone());
                        Next::Go(Some(notify))
                    }
                    Pace::Window(window) => match window.take(self.clock.now()) {
                        None => Next::Go(None),
                        Some(wait) => Next::Wait(wait),
                    },
                };
                if matches!(next, Next::Go(_)) {
                    state.in_flight += 1;
                }
                next
            };
            match next {
                Next::Go(probe) => return Ok(Departure { transport: self, family, probe }),
                Next::Wait(wait) => self.wait_for_window(family, wait).await?,
                Next::AwaitProbe(notify) => {
                    let answered = notify.notified();
                    tokio::pin!(answered);
                    answered.as_mut().enable();
                    // The probe may have ended between the unlock and `enable`.
                    let probing = matches!(
                        lock(&self.windows).get(family),
                        Some(Family { pace: Pace::Probing(n), .. }) if Arc::ptr_eq(n, &notify)
                    );
                    if probing {
                        answered.await;
                    }
                }
            }
        }
    }

    async fn wait_for_window(&self, family: &str, wait: Duration) -> Result<(), ClientError> {
        if wait > self.retry.max_retry_after {
            return Err(ClientError::RateLimited { retry_after: Some(wait) });
        }
        tracing::debug!(
            wait_ms = wait.as_millis() as u64,
            family,
            "server rate limit window used up, waiting for its reset"
        );
        metrics::histogram!(METRIC_RATE_LIMIT_WAIT).record(wait.as_secs_f64());
        self.sleeper.sleep(wait).await;
        Ok(())
    }

    /// Sends a call, retrying where safe.
    pub(crate) async fn send(
        &self,
        call: &Call,
        bearer: Option<&AccessToken>,
    ) -> Result<Reply, Failure> {
        // Computed once per call, not per attempt and lookup: it keys the server's windows.
        let family = call.family();
        let mut attempt: u32 = 0;
        loop {
            let departure = self.admit(&family).await.map_err(Failure::Error)?;
            let outcome = self.attempt(call, bearer, &family).await;
            drop(departure);
            let (failure, retry) = match outcome {
                Attempt::Done(reply) => {
                    lock(&self.breaker).on_success();
                    return Ok(reply);
                }
                Attempt::Fail { failure, retry, breaker_failure } => {
                    if breaker_failure {
                        lock(&self.breaker).on_failure(self.clock.now());
                    } else {
                        lock(&self.breaker).on_success();
                    }
                    (failure, retry)
                }
            };
            attempt += 1;
            let Some(retry_after) = retry else { return Err(failure) };
            if attempt >= self.retry.max_attempts {
                tracing::warn!(method = %call.method, route = call.route(), attempts = attempt, "giving up after retries");
                return Err(failure);
            }
            let delay = match retry_after {
                Some(wait) if wait > self.retry.max_retry_after => return Err(failure),
                Some(wait) => {
                    if matches!(failure, Failure::Error(ClientError::RateLimited { .. })) {
                        metrics::histogram!(METRIC_RATE_LIMIT_WAIT).record(wait.as_secs_f64());
                    }
                    wait
                }
                None => self.retry.backoff(attempt - 1, &mut *lock(&self.rng)),
            };
            tracing::debug!(
                method = %call.method, route = call.route(), attempt,
                delay_ms = delay.as_millis() as u64, "retrying infisical request"
            );
            self.sleeper.sleep(delay).await;
        }
    }

    async fn attempt(&self, call: &Call, bearer: Option<&AccessToken>, family: &str) -> Attempt {
        let url = self.url(call);
        let mut request = self.http.request(call.method.clone(), url.clone());
        for (name, value) in &self.custom_headers {
            request = request.header(name, value);
        }
        if let Some(token) = bearer {
            let header = Zeroizing::new(format!("Bearer {}", token.expose()));
            match HeaderValue::from_str(&header) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request = request.header(AUTHORIZATION, value);
                }
                Err(_) => {
                    return Attempt::Fail {
                        failure: Failure::Error(ClientError::Auth {
                            message: "access token is not a valid header value".into(),
                        }),
                        retry: None,
                        breaker_failure: false,
                    };
                }
            }
        }
        if let Some(etag) = &call.if_none_match {
            request = request.header(IF_NONE_MATCH, etag.as_str());
        }
        if let Some(body) = &call.body {
            request =
                request.header(CONTENT_TYPE, "application/json").body(Vec::from(body.as_bytes()));
        }
        tracing::trace!(method = %call.method, route = call.route(), "sending infisical request");
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.network_failure(call, &url, &e, true),
        };
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after_header = header(RETRY_AFTER);
        let number = |name: &'static str| {
            response.headers().get(name)?.to_str().ok()?.trim().parse::<u64>().ok()
        };
        let now = self.clock.now();
        let announced = match (number(RATELIMIT_REMAINING), number(RATELIMIT_RESET)) {
            (Some(remaining), Some(reset)) => {
                Some(RateWindow::announced(remaining, Duration::from_secs(reset), now))
            }
            _ => None,
        };
        {
            let mut windows = lock(&self.windows);
            // Admitted, so the family is known; this request is still counted in flight.
            if let Some(state) = windows.get_mut(family) {
                let unanswered = state.in_flight.saturating_sub(1);
                match (&mut state.pace, announced) {
                    (Pace::Window(w), Some(announced)) => w.update(announced, unanswered, now),
                    (Pace::Unlimited, None) => {}
                    (pace, Some(announced)) => *pace = Pace::Window(announced.learned(unanswered)),
                    // An answer without the headers: no server limit to pace by.
                    (pace, None) => *pace = Pace::Unlimited,
                }
            }
        }
        let etag = header(ETAG);
        let body = match response.bytes().await {
            Ok(b) => Zeroizing::new(Vec::from(b)),
            Err(e) => return self.network_failure(call, &url, &e, false),
        };
        tracing::debug!(method = %call.method, route = call.route(), status, "infisical response");
        if (200..300).contains(&status) || (status == 304 && call.if_none_match.is_some()) {
            return Attempt::Done(Reply { body, etag, not_modified: status == 304 });
        }
        let error = ErrorBody::decode(&body);
        let message = error.message_text();
        let class = classify(status, &error);
        let repeatable = call.idempotent || proves_not_processed(status, &error);
        match class {
            ErrorClass::RateLimited => {
                let wait = parse_retry_after(
                    retry_after_header.as_deref(),
                    Some(&message),
                    self.clock.now(),
                );
                tracing::info!(
                    route = call.route(),
                    retry_after_ms = wait.map(|w| w.as_millis() as u64),
                    "rate limited by infisical"
                );
                Attempt::Fail {
                    failure: Failure::Error(ClientError::RateLimited { retry_after: wait }),
                    // With no hint, fall back to backoff.
                    retry: repeatable.then_some(wait),
                    breaker_failure: false,
                }
            }
            ErrorClass::Unavailable => {
                let wait = retry_after_header
                    .as_deref()
                    .and_then(|h| parse_retry_after(Some(h), None, self.clock.now()));
                Attempt::Fail {
                    failure: unavailable(status, message),
                    retry: repeatable.then_some(wait),
                    breaker_failure: true,
                }
            }
            ErrorClass::ServerError => Attempt::Fail {
                failure: unavailable(status, message),
                retry: None,
                breaker_failure: true,
            },
            other => {
                let failure = match other {
                    ErrorClass::ReAuth => Failure::ReAuth(message),
                    ErrorClass::RouteNotFound => Failure::RouteNotFound,
                    ErrorClass::NotFound => Failure::Error(ClientError::not_found(message)),
                    ErrorClass::PermissionDenied => {
                        Failure::Error(ClientError::permission_denied(message))
                    }
                    ErrorClass::InvalidInput => {
                        Failure::Error(ClientError::InvalidInput { message })
                    }
                    _ => Failure::Error(ClientError::Api {
                        status,
                        error: error.error.clone().unwrap_or_default(),
                        message,
                    }),
                };
                Attempt::Fail { failure, retry: None, breaker_failure: false }
            }
        }
    }

    /// A transport error. A refused connection proves the request never reached the server, so
    /// even a create may be sent again; anything later only for repeatable requests.
    fn network_failure(
        &self,
        call: &Call,
        url: &Url,
        e: &reqwest::Error,
        before_response: bool,
    ) -> Attempt {
        if let Some(redirect) = cross_origin_redirect(e) {
            return Attempt::Fail {
                failure: Failure::Error(ClientError::Redirect {
                    from: origin_of(url),
                    to: redirect.to.clone(),
                }),
                retry: None,
                breaker_failure: false,
            };
        }
        let never_sent = before_response && e.is_connect();
        let what = if e.is_timeout() {
            "request timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "connection error"
        };
        let causes = error_causes(e);
        let mut reason = format!("{what}: {} {}: {causes}", call.method, display_url(url));
        if let Some(hint) = crate::config::network_hint(url, &causes) {
            reason = format!("{reason} ({hint})");
        }
        tracing::debug!(method = %call.method, route = call.route(), reason, "infisical request failed");
        Attempt::Fail {
            failure: Failure::Error(ClientError::Unavailable { status: None, reason }),
            retry: (call.idempotent || never_sent).then_some(None),
            breaker_failure: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_rate_window_lets_its_remaining_requests_go_then_every_caller_waits_for_the_reset() {
        let mut w = RateWindow::announced(2, Duration::from_secs(30), t(0));
        assert_eq!(w.take(t(0)), None);
        assert_eq!(w.take(t(1)), None);
        // Used up: every caller waits for the reset, not only the first.
        assert_eq!(w.take(t(10)), Some(Duration::from_secs(20)));
        assert_eq!(w.take(t(10)), Some(Duration::from_secs(20)));
        // Past the reset the window is over (the transport then sends one probe).
        assert!(!w.is_over(t(29)) && w.is_over(t(30)));
        w.update(RateWindow::announced(59, Duration::from_secs(30), t(31)), 0, t(31));
        assert_eq!((w.remaining, w.reset_at), (59, t(61)));
        // Out-of-order answers within one window: the lower count wins.
        w.update(RateWindow::announced(40, Duration::from_secs(29), t(32)), 3, t(32));
        w.update(RateWindow::announced(45, Duration::from_secs(29), t(32)), 0, t(32));
        assert_eq!(w.remaining, 40);
        // A late answer about a window already over changes nothing.
        let before = w;
        w.update(RateWindow::announced(0, Duration::ZERO, t(33)), 0, t(33));
        assert_eq!(w, before);
    }

    #[test]
    fn requests_still_out_when_a_window_is_learned_are_taken_from_it() {
        // Five requests sent under the old window are unanswered when the new one is announced
        // with 59 left: they may land in it, so only 54 more go before its reset.
        let mut w = RateWindow::announced(0, Duration::from_secs(5), t(0));
        w.update(RateWindow::announced(59, Duration::from_secs(60), t(6)), 5, t(6));
        assert_eq!((w.remaining, w.reset_at), (54, t(66)));
        let fresh = RateWindow::announced(3, Duration::from_secs(60), t(0)).learned(10);
        assert_eq!(fresh.remaining, 0, "never below zero");
        // Within a window, answers only ever lower the count: nothing subtracted twice.
        w.update(RateWindow::announced(50, Duration::from_secs(59), t(7)), 5, t(7));
        assert_eq!(w.remaining, 50);
    }

    #[test]
    fn a_call_family_is_version_and_resource() {
        let call = Call::new(Method::GET, &["v4", "secrets", "KEY"]);
        assert_eq!(call.family(), "v4/secrets");
        assert_eq!(
            Call::new(Method::POST, &["v1", "auth", "universal-auth", "login"]).family(),
            "v1/auth"
        );
    }
}
