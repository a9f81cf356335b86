//! The RingCentral REST client (CONTRACTS.md §1, §2, §7): JWT bearer grant, one cached token
//! per client refreshed before it expires, the four usage-plan groups throttled on the client
//! side, `429 Retry-After` and `503` honoured, other 5xx and connection errors retried with
//! backoff, and every failure mapped to [`ErrorKind`] with a PHI-free text.
//!
//! **Auth.** `POST /restapi/oauth/token` with `Authorization: Basic base64(id:secret)` and
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`. The token is
//! shared by every request (single-flight behind one lock) and renewed proactively at
//! `expires_in` minus a margin, by re-running the JWT grant (RingCentral's guidance for JWT
//! apps: no refresh-token bookkeeping). A `401` on an API call re-authenticates once and
//! retries once. Logins are limited to 5 per minute (the Auth group): never one per request.
//! A `400` from the token endpoint is a credential error: fatal, never retried.
//!
//! **Rate limits.** Each group (Light 50/min, Medium 40/min, Heavy 10/min, Auth 5/min by
//! default; per app they can differ) has a sliding window on the client: a request waits
//! until its group has room. `X-Rate-Limit-Remaining: 0` blocks the group for
//! `X-Rate-Limit-Window`; a `429` blocks it for `Retry-After` (60 s when absent). Requests are
//! retried after those waits, so a 429 storm delays work but loses nothing.
//!
//! **Secrets** come from environment variables; tokens, secrets and the JWT never appear in
//! logs or errors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_spanned::Spanned;
use tokio::sync::Mutex;

use crate::error::ErrorKind;

/// RingCentral's usage-plan groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Light,
    Medium,
    Heavy,
    Auth,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Light, Group::Medium, Group::Heavy, Group::Auth];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Light => "light",
            Group::Medium => "medium",
            Group::Heavy => "heavy",
            Group::Auth => "auth",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests allowed per window, per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLimit {
    pub requests: u32,
    #[serde(deserialize_with = "crate::config::duration::deserialize_duration")]
    pub window: Duration,
}

/// The limits of the four groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub light: GroupLimit,
    pub medium: GroupLimit,
    pub heavy: GroupLimit,
    pub auth: GroupLimit,
}

impl Default for Limits {
    /// RingCentral's defaults (CONTRACTS.md §7.1).
    fn default() -> Self {
        let per_minute = |requests| GroupLimit {
            requests,
            window: Duration::from_secs(60),
        };
        Limits {
            light: per_minute(50),
            medium: per_minute(40),
            heavy: per_minute(10),
            auth: per_minute(5),
        }
    }
}

impl Limits {
    fn of(&self, g: Group) -> GroupLimit {
        match g {
            Group::Light => self.light,
            Group::Medium => self.medium,
            Group::Heavy => self.heavy,
            Group::Auth => self.auth,
        }
    }
}

/// Connection settings (part of the RingCentral components' configuration).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RcConfig {
    /// API base, `https://platform.ringcentral.com` (plain `http` only for loopback tests).
    #[serde(default = "default_server")]
    pub server: String,
    pub client_id_env: Spanned<String>,
    pub client_secret_env: Spanned<String>,
    /// Environment variable holding the JWT credential from the developer console.
    pub jwt_env: Spanned<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Renew the token this long before it expires.
    #[serde(
        default = "default_refresh_margin",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub refresh_margin: Duration,
    /// Timeout of each HTTP request.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub timeout: Duration,
    /// Attempts for one request through 5xx and connection errors (429 waits do not count).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff after a 5xx or connection error (doubles, capped at 60 s).
    #[serde(
        default = "default_backoff",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub initial_backoff: Duration,
    /// Wait after a 429 without `Retry-After`.
    #[serde(
        default = "default_retry_after",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub default_retry_after: Duration,
}

fn default_server() -> String {
    "https://platform.ringcentral.com".into()
}
fn default_refresh_margin() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(60)
}

impl RcConfig {
    /// [`RcConfig::validate`] as a component's diagnostics (`ringcentral: …`).
    pub fn diagnostics(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
            .into_iter()
            .map(|p| (format!("ringcentral: {p}"), None))
            .collect()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut v = Vec::new();
        match url::Url::parse(&self.server) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Ok(_) => v.push("server must be https (http only on loopback)".into()),
            Err(e) => v.push(format!("server is not a URL: {e}")),
        }
        for g in Group::ALL {
            if self.limits.of(g).requests == 0 || self.limits.of(g).window.is_zero() {
                v.push(format!(
                    "limits.{}: requests and window must be above zero",
                    g.as_str()
                ));
            }
        }
        v
    }

    pub fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        vec![
            ("client_id_env", &self.client_id_env),
            ("client_secret_env", &self.client_secret_env),
            ("jwt_env", &self.jwt_env),
        ]
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A failed call. `detail` is PHI-free: status, RingCentral error code, step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct RcError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// RingCentral's `errorCode` (`CMN-101`, `OAU-140`, …) when it sent one.
    pub code: Option<String>,
    pub detail: String,
    /// A non-idempotent request failed in transit: RingCentral may or may not have acted on
    /// it.
    pub ambiguous: bool,
}

impl RcError {
    fn new(kind: ErrorKind, status: Option<u16>, code: Option<String>, detail: String) -> Self {
        Self {
            kind,
            status,
            code,
            detail,
            ambiguous: false,
        }
    }
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct RcResponse {
    pub status: u16,
    pub body: bytes::Bytes,
    pub content_type: Option<String>,
}

impl RcResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, RcError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            RcError::new(
                ErrorKind::Transient,
                Some(self.status),
                None,
                format!("unexpected response body: {}", e.classify_name()),
            )
        })
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
    /// JSON for a request that must not be repeated blindly (sending an SMS): like
    /// [`Body::FaxMultipart`], a transport error after it may have arrived is returned as
    /// [`RcError::ambiguous`], not retried.
    JsonOnce(serde_json::Value),
    /// A fax (CONTRACTS.md §5.1, layout A): the JSON envelope as `request.json`, then one
    /// `attachment` part. Rebuilt for every attempt.
    ///
    /// Not idempotent: a transport error after the request may have reached RingCentral is
    /// **not** retried but returned with [`RcError::ambiguous`] set, so that the caller can
    /// look the fax up before sending it again.
    FaxMultipart {
        envelope: serde_json::Value,
        file_name: String,
        content_type: String,
        bytes: bytes::Bytes,
    },
}

impl Body {
    fn idempotent(&self) -> bool {
        !matches!(self, Body::FaxMultipart { .. } | Body::JsonOnce(_))
    }
}

#[derive(Debug)]
struct Token {
    access: String,
    renew_at: Instant,
}

#[derive(Debug, Default)]
struct Bucket {
    sent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

/// The client. Cheap to share behind an `Arc`.
pub struct RcClient {
    http: reqwest::Client,
    cfg: RcConfig,
    token: Mutex<Option<Token>>,
    buckets: [Mutex<Bucket>; 4],
    logins: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenInfo {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

fn error_code(body: &[u8]) -> Option<String> {
    let b: ErrorBody = serde_json::from_slice(body).ok()?;
    b.errors
        .into_iter()
        .find_map(|e| e.error_code)
        .or(b.error_code)
        .or(b.error)
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl RcClient {
    pub fn new(cfg: RcConfig) -> Result<RcClient, RcError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(RcError::new(
                ErrorKind::Fatal,
                None,
                None,
                problems.join("; "),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("oscarflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RcError::new(ErrorKind::Fatal, None, None, format!("HTTP client: {e}")))?;
        Ok(RcClient {
            http,
            cfg,
            token: Mutex::new(None),
            buckets: Default::default(),
            logins: Default::default(),
        })
    }

    /// JWT grants made so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn secret(var: &Spanned<String>) -> Result<String, RcError> {
        std::env::var(var.get_ref()).map_err(|_| {
            RcError::new(
                ErrorKind::Fatal,
                None,
                None,
                crate::secrets::unset(var.get_ref()),
            )
        })
    }

    /// Waits until `group` may send, then records the send.
    async fn acquire(&self, group: Group) {
        let limit = self.cfg.limits.of(group);
        loop {
            let wait = {
                let mut b = self.buckets[group.index()].lock().await;
                let now = Instant::now();
                while b
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= limit.window)
                {
                    b.sent.pop_front();
                }
                let blocked = b.blocked_until.filter(|u| *u > now);
                if let Some(u) = blocked {
                    Some(u - now)
                } else if b.sent.len() >= limit.requests as usize {
                    Some(limit.window - now.duration_since(*b.sent.front().expect("non-empty")))
                } else {
                    b.blocked_until = None;
                    b.sent.push_back(now);
                    None
                }
            };
            match wait {
                None => return,
                Some(d) => {
                    tracing::debug!(
                        group = group.as_str(),
                        wait_ms = d.as_millis() as u64,
                        "RingCentral rate limit: waiting."
                    );
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn block(&self, group: Group, d: Duration) {
        let mut b = self.buckets[group.index()].lock().await;
        let until = Instant::now() + d;
        if b.blocked_until.is_none_or(|u| u < until) {
            b.blocked_until = Some(until);
        }
    }

    /// The access token, renewed first when it is (about to be) expired.
    async fn access_token(&self, force: bool) -> Result<String, RcError> {
        let mut t = self.token.lock().await;
        if !force {
            if let Some(tok) = t.as_ref().filter(|tok| Instant::now() < tok.renew_at) {
                return Ok(tok.access.clone());
            }
        }
        let fresh = self.login().await?;
        let access = fresh.access.clone();
        *t = Some(fresh);
        Ok(access)
    }

    /// The JWT grant, with the Auth group's limits and retries.
    async fn login(&self) -> Result<Token, RcError> {
        let id = Self::secret(&self.cfg.client_id_env)?;
        let secret = Self::secret(&self.cfg.client_secret_env)?;
        let jwt = Self::secret(&self.cfg.jwt_env)?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let url = format!(
            "{}/restapi/oauth/token",
            self.cfg.server.trim_end_matches('/')
        );
        let mut backoff = self.cfg.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.acquire(Group::Auth).await;
            let sent = Instant::now();
            let r = self
                .http
                .post(&url)
                .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", jwt.as_str()),
                ])
                .send()
                .await;
            let resp = match r {
                Ok(r) => r,
                Err(e) if attempt < self.cfg.max_attempts => {
                    tracing::warn!(error = %describe(&e), attempt, "RingCentral login failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
                Err(e) => {
                    return Err(RcError::new(
                        ErrorKind::Transient,
                        None,
                        None,
                        format!("login: {}", describe(&e)),
                    ))
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            match status {
                200 => {
                    let info: TokenInfo = serde_json::from_slice(&body).map_err(|e| {
                        RcError::new(
                            ErrorKind::Transient,
                            Some(200),
                            None,
                            format!("login: unexpected token response: {}", e.classify_name()),
                        )
                    })?;
                    self.logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let life = Duration::from_secs(info.expires_in);
                    let margin = self.cfg.refresh_margin.min(life / 2);
                    tracing::info!(expires_in = info.expires_in, "RingCentral token obtained.");
                    return Ok(Token {
                        access: info.access_token,
                        renew_at: sent + life - margin,
                    });
                }
                429 | 503 => {
                    let d = retry_after(&headers).unwrap_or(self.cfg.default_retry_after);
                    tracing::warn!(status, wait_s = d.as_secs(), "RingCentral login throttled; waiting.");
                    self.block(Group::Auth, d).await;
                }
                400 | 401 | 403 => {
                    return Err(RcError::new(
                        ErrorKind::Fatal,
                        Some(status),
                        error_code(&body),
                        format!(
                            "login refused (HTTP {status}{}): check the client id, secret and JWT credential",
                            error_code(&body).map(|c| format!(" {c}")).unwrap_or_default()
                        ),
                    ))
                }
                s if s >= 500 && attempt < self.cfg.max_attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                s => {
                    return Err(RcError::new(
                        if s >= 500 { ErrorKind::Transient } else { ErrorKind::Fatal },
                        Some(s),
                        error_code(&body),
                        format!("login: HTTP {s}"),
                    ))
                }
            }
        }
    }

    /// One API call in `group`: `path` is relative to the server (`/restapi/v1.0/…`) or an
    /// absolute URL RingCentral gave us (attachment `uri`s on the media host).
    pub async fn call(
        &self,
        group: Group,
        method: reqwest::Method,
        path: &str,
        body: Body,
    ) -> Result<RcResponse, RcError> {
        let resp = self.send(group, method.clone(), path, body).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = resp.bytes().await.map_err(|e| {
            RcError::new(
                ErrorKind::Transient,
                Some(status),
                None,
                format!("{} {}: {}", method, route(path), describe(&e)),
            )
        })?;
        Ok(RcResponse {
            status,
            body,
            content_type,
        })
    }

    /// Streams a download (an attachment `uri`) to `dest`: written to `dest.part` chunk by
    /// chunk (never whole in memory), fsynced, then renamed. Returns the byte count. A broken
    /// transfer leaves no file behind.
    pub async fn download_to(
        &self,
        group: Group,
        uri: &str,
        dest: &std::path::Path,
    ) -> Result<u64, RcError> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| {
            RcError::new(
                ErrorKind::Transient,
                None,
                None,
                format!("writing the download: {e}"),
            )
        };
        let mut resp = self
            .send(group, reqwest::Method::GET, uri, Body::None)
            .await?;
        let expected = resp.content_length();
        let part = dest.with_extension("part");
        let mut f = crate::private_fs::create_file_async(&part)
            .await
            .map_err(io)?;
        let mut n = 0u64;
        let result: Result<(), RcError> = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                RcError::new(
                    ErrorKind::Transient,
                    None,
                    None,
                    format!("GET {}: {}", route(uri), describe(&e)),
                )
            })? {
                f.write_all(&chunk).await.map_err(io)?;
                n += chunk.len() as u64;
            }
            if expected.is_some_and(|e| e != n) {
                return Err(RcError::new(
                    ErrorKind::Transient,
                    None,
                    None,
                    format!("GET {}: the download broke off ({n} bytes)", route(uri)),
                ));
            }
            // tokio's `File` writes in the background: a failed write (a full disk) is only
            // reported by the next write or by `flush`, never by `sync_all`, which would
            // sync the truncated file and let it be filed as the fax.
            f.flush().await.map_err(io)?;
            f.sync_all().await.map_err(io)?;
            Ok(())
        }
        .await;
        drop(f);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, dest).await.map_err(io)?;
        Ok(n)
    }

    /// Sends with throttling, the token, and the retry rules; a 2xx response is returned with
    /// its body unread.
    async fn send(
        &self,
        group: Group,
        method: reqwest::Method,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, RcError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.cfg.server.trim_end_matches('/'), path)
        };
        let mut attempt = 0;
        let mut backoff = self.cfg.initial_backoff;
        let mut reauthed = false;
        loop {
            self.acquire(group).await;
            let token = self.access_token(false).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/json");
            req = match &body {
                Body::None => req,
                Body::Json(v) | Body::JsonOnce(v) => req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(v).unwrap_or_default()),
                Body::Form(f) => req.form(f),
                Body::FaxMultipart {
                    envelope,
                    file_name,
                    content_type,
                    bytes,
                } => {
                    let json = reqwest::multipart::Part::bytes(
                        serde_json::to_vec(envelope).unwrap_or_default(),
                    )
                    .file_name("request.json")
                    .mime_str("application/json")
                    .map_err(|_| {
                        RcError::new(ErrorKind::Fatal, None, None, "multipart: JSON part".into())
                    })?;
                    let doc = reqwest::multipart::Part::bytes(bytes.to_vec())
                        .file_name(file_name.clone())
                        .mime_str(content_type)
                        .map_err(|_| {
                            RcError::new(
                                ErrorKind::Data,
                                None,
                                None,
                                "the document's content type is not valid".into(),
                            )
                        })?;
                    req.multipart(
                        reqwest::multipart::Form::new()
                            .part("json", json)
                            .part("attachment", doc),
                    )
                }
            };
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if !body.idempotent() && !e.is_connect() => {
                    let mut err = RcError::new(
                        ErrorKind::Transient,
                        None,
                        None,
                        format!(
                            "{} {}: {} (outcome unknown)",
                            method,
                            route(path),
                            describe(&e)
                        ),
                    );
                    err.ambiguous = true;
                    return Err(err);
                }
                Err(e) => {
                    attempt += 1;
                    if attempt >= self.cfg.max_attempts {
                        return Err(RcError::new(
                            ErrorKind::Transient,
                            None,
                            None,
                            format!("{} {}: {}", method, route(path), describe(&e)),
                        ));
                    }
                    tracing::warn!(group = group.as_str(), error = %describe(&e), attempt, "RingCentral request failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if header_u64(&headers, "x-rate-limit-remaining") == Some(0) {
                let w = header_u64(&headers, "x-rate-limit-window").unwrap_or(60);
                self.block(group, Duration::from_secs(w)).await;
            }
            if (200..=299).contains(&status) {
                return Ok(resp);
            }
            let body_bytes = resp.bytes().await.unwrap_or_default();
            match status {
                401 if !reauthed => {
                    // Expired, revoked or rotated out: one fresh login, one retry.
                    reauthed = true;
                    tracing::info!(
                        group = group.as_str(),
                        "RingCentral answered 401; logging in again once."
                    );
                    self.access_token(true).await?;
                }
                429 | 503 => {
                    let d = retry_after(&headers).unwrap_or(self.cfg.default_retry_after);
                    tracing::warn!(
                        status,
                        group = group.as_str(),
                        wait_s = d.as_secs(),
                        "RingCentral throttled the request; waiting."
                    );
                    self.block(group, d).await;
                    if status == 503 {
                        attempt += 1;
                        if attempt >= self.cfg.max_attempts {
                            return Err(RcError::new(
                                ErrorKind::Transient,
                                Some(503),
                                error_code(&body_bytes),
                                format!("{} {}: HTTP 503", method, route(path)),
                            ));
                        }
                    }
                }
                s if s >= 500 || s == 408 => {
                    attempt += 1;
                    if attempt >= self.cfg.max_attempts {
                        return Err(RcError::new(
                            ErrorKind::Transient,
                            Some(s),
                            error_code(&body_bytes),
                            format!("{} {}: HTTP {s}", method, route(path)),
                        ));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                401 | 403 => {
                    return Err(RcError::new(
                        ErrorKind::Fatal,
                        Some(status),
                        error_code(&body_bytes),
                        format!(
                            "{} {}: HTTP {status}{} (permissions or credentials)",
                            method,
                            route(path),
                            error_code(&body_bytes)
                                .map(|c| format!(" {c}"))
                                .unwrap_or_default()
                        ),
                    ))
                }
                s => {
                    return Err(RcError::new(
                        ErrorKind::Data,
                        Some(s),
                        error_code(&body_bytes),
                        format!(
                            "{} {}: HTTP {s}{}",
                            method,
                            route(path),
                            error_code(&body_bytes)
                                .map(|c| format!(" {c}"))
                                .unwrap_or_default()
                        ),
                    ))
                }
            }
        }
    }
}

/// The path without its query (which may carry phone numbers or dates) and with numeric ids
/// kept: safe to log.
fn route(path: &str) -> String {
    let p = path.split('?').next().unwrap_or("");
    match url::Url::parse(p) {
        Ok(u) => u.path().to_string(),
        Err(_) => p.to_string(),
    }
}

/// A request error without the URL (which may carry query parameters).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the response broke off"
    } else {
        "request failed"
    };
    let mut chain = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        chain.push(c.to_string());
        cur = c.source();
    }
    let detail = chain.join(": ");
    let detail = detail.lines().next().unwrap_or("");
    format!("{kind} ({})", &detail[..detail.len().min(200)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_errors_first() {
        assert_eq!(
            error_code(br#"{"errorCode":"X","errors":[{"errorCode":"CMN-301","message":"m"}]}"#),
            Some("CMN-301".into())
        );
        assert_eq!(
            error_code(br#"{"errorCode":"OAU-213"}"#),
            Some("OAU-213".into())
        );
        assert_eq!(
            error_code(br#"{"error":"invalid_client"}"#),
            Some("invalid_client".into())
        );
        assert_eq!(error_code(b"<html>"), None);
    }

    #[test]
    fn routes_drop_the_query() {
        assert_eq!(
            route("/restapi/v1.0/account/~/extension/~/sms?to=+16045550100"),
            "/restapi/v1.0/account/~/extension/~/sms"
        );
        assert_eq!(
            route("https://media.example/restapi/v1.0/x/content/1?access_token=s"),
            "/restapi/v1.0/x/content/1"
        );
    }
}
