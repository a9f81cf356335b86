//! The operator's console: web pages under `/console/` on the daemon's own HTTP listener,
//! answering "what happened to this lab?" from the journal ([`crate::journal`]) and the
//! dead-letter store, and driving the pipelines (pause, resume, poll now, restart).
//!
//! **Access.** The console needs the endpoint's bearer token (`http_token_env`); without one
//! configured it only says so. `GET /console/login` takes the token in a form; a right token
//! opens a session: a random 256-bit id in a cookie that is `Secure` (browsers keep it on
//! `http://localhost` and `127.0.0.1`; elsewhere serve the console through a TLS proxy),
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it) and
//! scoped to `/console`, for 12 hours. Sessions live in memory: a restart logs everyone out.
//! Every form carries the session's own random CSRF token, checked in constant time, and a
//! `POST` whose `Origin` is not its own `Host` is refused as well. A wrong token costs half a
//! second and is logged (never the token). Answers carry `Cache-Control: no-store`, a
//! Content-Security-Policy that allows nothing but this server (no script at all: the pages
//! are plain HTML forms), `X-Frame-Options: DENY` and `Referrer-Policy: same-origin` (not
//! `no-referrer`: under it browsers send `Origin: null` with a page's own forms, which the
//! origin check would refuse; other sites still get no referrer).
//!
//! **No PHI on a page** unless the operator asks: pages show ids (accession and control
//! ids, hashes, OSCAR row numbers, chart numbers), codes and counts, never names, health
//! numbers, birth dates, file names or message text. A dead letter's bytes are shown only
//! after "reveal" (a `POST`), which is journaled (`outcome = revealed`) and logged with the
//! dead letter's id and the session's tag.
//!
//! Everything the pages need is embedded in the binary (one stylesheet; the chart is SVG
//! drawn here): the console works with no internet access.

mod audit_page;
mod chart;
mod pages;
mod words;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{Body, HttpState};

const COOKIE: &str = "oscarflow_console";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 64;
/// The largest form body taken.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Backlog samples kept: one a minute for 24 hours.
const SAMPLES: usize = 24 * 60;

struct Session {
    csrf: String,
    created: Instant,
    /// A short tag for logs and the journal (not the session id).
    tag: String,
}

/// The console's state: sessions and the backlog samples of the overview chart.
#[derive(Default)]
pub struct Console {
    sessions: Mutex<HashMap<String, Session>>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Console {
    pub fn new() -> Arc<Console> {
        Arc::new(Console::default())
    }

    /// A session for the holder of token `name`; its tag (for logs and the audit trail) is
    /// `name:<8 hex digits>`.
    fn open_session(&self, name: &str) -> (String, String) {
        let sid = random_hex();
        let csrf = random_hex();
        let tag = format!(
            "{name}:{}",
            hex::encode(&crate::envelope::sha256(sid.as_bytes())[..4])
        );
        if let Ok(mut m) = self.sessions.lock() {
            m.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
                {
                    m.remove(&oldest);
                }
            }
            m.insert(
                sid.clone(),
                Session {
                    csrf,
                    created: Instant::now(),
                    tag: tag.clone(),
                },
            );
        }
        (sid, tag)
    }

    /// The session's (csrf, tag), if `sid` is a live session.
    fn session(&self, sid: &str) -> Option<(String, String)> {
        let m = self.sessions.lock().ok()?;
        let s = m.get(sid)?;
        (s.created.elapsed() < SESSION_LIFETIME).then(|| (s.csrf.clone(), s.tag.clone()))
    }

    fn close_session(&self, sid: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(sid);
        }
    }

    /// Records the backlog (inputs in flight over every pipeline) now.
    pub fn sample(&self, backlog: u64) {
        if let Ok(mut v) = self.samples.lock() {
            if v.len() >= SAMPLES {
                v.pop_front();
            }
            v.push_back((Instant::now(), backlog));
        }
    }

    /// (seconds ago, backlog), oldest first.
    fn backlog(&self) -> Vec<(u64, u64)> {
        self.samples
            .lock()
            .map(|v| v.iter().map(|(t, b)| (t.elapsed().as_secs(), *b)).collect())
            .unwrap_or_default()
    }
}

/// Samples the backlog each minute until the endpoint stops.
pub async fn sample_backlog(state: Arc<HttpState>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        let backlog: u64 = state
            .registry
            .pipelines()
            .iter()
            .map(|p| p.in_flight.current() as u64)
            .sum();
        state.console.sample(backlog);
    }
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A response with the console's security headers.
fn page(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    r
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = page(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = to.parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, c);
    }
    r
}

fn cookie_of(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A `POST` from another site's page: its `Origin` is not its own `Host`.
fn cross_site(req: &Request<Incoming>) -> bool {
    let host = super::header(req, hyper::header::HOST).unwrap_or_default();
    match super::header(req, hyper::header::ORIGIN) {
        Some(origin) => {
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            authority.trim_end_matches('/') != host.trim()
        }
        None => false,
    }
}

/// The form fields of a `POST` body (at most [`MAX_FORM_BYTES`]).
async fn form(req: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let body = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(
        url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

/// The query string's fields.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Who is asking: the session's CSRF token and tag.
pub(super) struct Who {
    pub csrf: String,
    pub tag: String,
}

impl Who {
    /// The audit trail's name for this session's person: the token's holder and the
    /// session's tag.
    pub fn actor(&self) -> String {
        match self.tag.split_once(':') {
            Some((name, session)) => format!("console token {name}, session {session}"),
            None => format!("console session {}", self.tag),
        }
    }
}

/// Answers every request under `/console`.
pub async fn handle(state: Arc<HttpState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/console/style.css" {
        let mut r = page(StatusCode::OK, include_str!("console.css").to_string());
        if let Ok(v) = "text/css; charset=utf-8".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        return r;
    }
    if path == "/console" {
        return redirect("/console/", None);
    }
    if path == "/console/login" {
        return login(&state, req).await;
    }
    let session = cookie_of(&req).and_then(|sid| state.console.session(&sid).map(|s| (sid, s)));
    let Some((sid, (csrf, tag))) = session else {
        if method == hyper::Method::GET {
            return redirect("/console/login", None);
        }
        return page(
            StatusCode::FORBIDDEN,
            pages::refused("Your session has ended or this request did not come from the console. Log in again."),
        );
    };
    let who = Who { csrf, tag };
    if method == hyper::Method::POST {
        if cross_site(&req) {
            tracing::warn!(session = %who.tag, "Console form refused: it came from another site's page.");
            return page(
                StatusCode::FORBIDDEN,
                pages::refused("This form came from another site and was refused."),
            );
        }
        let Some(fields) = form(req).await else {
            return page(
                StatusCode::BAD_REQUEST,
                pages::refused("The form could not be read."),
            );
        };
        let given = field(&fields, "csrf").unwrap_or_default();
        if !super::same_secret(given.as_bytes(), who.csrf.as_bytes()) {
            tracing::warn!(session = %who.tag, "Console form refused: its form token is missing or wrong.");
            return page(
                StatusCode::FORBIDDEN,
                pages::refused("This form's token is wrong (a forged or stale form). Reload the page and try again."),
            );
        }
        if path == "/console/logout" {
            state.console.close_session(&sid);
            return redirect(
                "/console/login",
                Some(format!(
                    "{COOKIE}=; Path=/console; Max-Age=0; Secure; HttpOnly; SameSite=Strict"
                )),
            );
        }
        return pages::post(&state, &who, &path, &fields).await;
    }
    if method != hyper::Method::GET {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::refused("GET or POST only."),
        );
    }
    let q = query(&req);
    pages::get(&state, &who, &path, &q).await
}

async fn login(state: &HttpState, req: Request<Incoming>) -> Response<Body> {
    if state.tokens.is_empty() {
        return page(StatusCode::SERVICE_UNAVAILABLE, pages::no_token());
    }
    if req.method() == hyper::Method::GET {
        return page(StatusCode::OK, pages::login(None));
    }
    if req.method() != hyper::Method::POST {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::refused("GET or POST only."),
        );
    }
    if cross_site(&req) {
        return page(
            StatusCode::FORBIDDEN,
            pages::refused("This form came from another site and was refused."),
        );
    }
    let given = form(req).await.unwrap_or_default();
    let given = field(&given, "token")
        .unwrap_or_default()
        .trim()
        .to_string();
    let Some(name) = state.tokens.who(&given).map(str::to_string) else {
        tracing::warn!("Console login refused: wrong token.");
        tokio::time::sleep(Duration::from_millis(500)).await;
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That is not the token. It is the value of the variable http_token_env names, on the daemon's machine.")),
        );
    };
    let (sid, tag) = state.console.open_session(&name);
    tracing::info!(session = %tag, "Console login.");
    redirect(
        "/console/",
        Some(format!(
            "{COOKIE}={sid}; Path=/console; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
            SESSION_LIFETIME.as_secs()
        )),
    )
}
