//! A RingCentral emulator built from CONTRACTS.md §1, §2 and §7, for tests: the OAuth token
//! endpoint (Basic client authentication, JWT bearer grant, opaque random tokens with a
//! configurable lifetime, at most 5 sessions per user — the oldest is dropped), Bearer checks
//! on API calls (401 `OAU-128` expired / `OAU-213` unknown), the four usage-plan groups with
//! sliding windows, `X-Rate-Limit-*` headers, 429 `CMN-301` with `Retry-After` and the
//! penalty that restarts on every request during it, and fault injection (forced statuses,
//! expired tokens). Every request is recorded (method, route, group, status, time).
//! Plain HTTP on loopback: the client's TLS is exercised by the lab pull emulators.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "emu-client-id";
pub const CLIENT_SECRET: &str = "emu-client-secret-0123";
pub const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.emulator-jwt-credential.sig";

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Instant,
    pub method: String,
    pub route: String,
    pub group: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct GroupLimit {
    pub requests: usize,
    pub window: Duration,
    pub penalty: Duration,
}

#[derive(Default)]
struct Bucket {
    sent: VecDeque<Instant>,
    penalty_until: Option<Instant>,
}

/// A fax in the emulator's message store.
#[derive(Debug, Clone)]
pub struct Fax {
    pub id: i64,
    /// RFC 3339 UTC with milliseconds.
    pub creation_time: String,
    pub read: bool,
    pub pages: u32,
    pub from: String,
    pub pdf: Bytes,
}

/// One part of a multipart request, as received.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: Option<String>,
    pub filename: Option<String>,
    pub content_type: String,
    pub body: Bytes,
}

/// A fax sent through the emulator (`POST …/fax`).
#[derive(Debug, Clone)]
pub struct SentFax {
    pub id: i64,
    pub to: String,
    /// `to[0].name` (oscarflow's reference).
    pub name: String,
    pub parts: Vec<Part>,
    /// `Queued`, `Sent` or `SendingFailed`.
    pub status: String,
    pub error_code: Option<String>,
    pub created: time::OffsetDateTime,
    /// Status reads so far (the status advances after `advance_after_reads`).
    pub reads: u32,
}

/// A text sent through the emulator (`POST …/sms`).
#[derive(Debug, Clone)]
pub struct SentSms {
    pub id: i64,
    pub from: String,
    pub to: String,
    pub text: String,
    /// `Queued`, `Sent`, `Delivered`, `DeliveryFailed`.
    pub status: String,
    pub error_code: Option<String>,
    pub created: time::OffsetDateTime,
    pub reads: u32,
}

pub struct State {
    pub token_ttl_secs: u64,
    /// Texts sent to the emulator, in arrival order.
    pub sms: Vec<SentSms>,
    /// The extension's SMS-capable numbers (`from` must be one of them).
    pub sms_numbers: Vec<String>,
    /// Numbers whose texts end `DeliveryFailed` (`SMS-RC-410`, a landline).
    pub sms_fail_numbers: Vec<String>,
    /// Numbers that replied STOP: their texts end `DeliveryFailed` with `SMS-RC-413`.
    pub sms_stopped_numbers: Vec<String>,
    /// Faxes sent to the emulator, in arrival order.
    pub sent: Vec<SentFax>,
    /// Numbers whose faxes end `SendingFailed` with `NoAnswer`.
    pub fail_numbers: Vec<String>,
    /// A sent fax turns final on this status read.
    pub advance_after_reads: u32,
    /// Accept the next N faxes but drop the connection instead of answering.
    pub drop_after_accept: usize,
    /// Inbound faxes, any order (listings sort newest first).
    pub faxes: Vec<Fax>,
    /// Base URL rendered into `uri`s (the emulator's own address).
    pub base: String,
    /// access token → expiry
    tokens: HashMap<String, Instant>,
    sessions: VecDeque<String>,
    pub limits: HashMap<&'static str, GroupLimit>,
    buckets: HashMap<&'static str, Bucket>,
    /// Statuses forced on the next API calls (not the token endpoint).
    pub forced: VecDeque<u16>,
    /// `Retry-After` sent with forced 429/503.
    pub forced_retry_after: u64,
    pub records: Vec<Record>,
    pub logins: usize,
    /// An outage: every connection is closed without an answer while set.
    pub down: bool,
    /// Go down right after serving this many attachment downloads.
    pub down_after_downloads: Option<usize>,
    /// Attachment downloads served.
    pub downloads: usize,
    /// Latency added to every answer.
    pub delay: Duration,
    /// The next N answers come `slow_delay` late.
    pub slow_next: usize,
    pub slow_delay: Duration,
}

impl State {
    fn new() -> Self {
        let per = |requests| GroupLimit {
            requests,
            window: Duration::from_secs(60),
            penalty: Duration::from_secs(60),
        };
        State {
            token_ttl_secs: 3600,
            sms: Vec::new(),
            sms_numbers: vec!["+16045550100".into()],
            sms_fail_numbers: Vec::new(),
            sms_stopped_numbers: Vec::new(),
            sent: Vec::new(),
            fail_numbers: Vec::new(),
            advance_after_reads: 1,
            drop_after_accept: 0,
            faxes: Vec::new(),
            base: String::new(),
            tokens: HashMap::new(),
            sessions: VecDeque::new(),
            limits: HashMap::from([
                ("light", per(50)),
                ("medium", per(40)),
                ("heavy", per(10)),
                ("auth", per(5)),
            ]),
            buckets: HashMap::new(),
            forced: VecDeque::new(),
            forced_retry_after: 1,
            records: Vec::new(),
            logins: 0,
            down: false,
            down_after_downloads: None,
            downloads: 0,
            delay: Duration::ZERO,
            slow_next: 0,
            slow_delay: Duration::ZERO,
        }
    }
}

pub struct RcEmulator {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl RcEmulator {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Every issued access token expires now.
    pub fn expire_all_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        for v in s.tokens.values_mut() {
            *v = past;
        }
    }

    /// Lifts the Light, Medium and Heavy limits (tests making hundreds of calls).
    pub fn lift_limits(&self) {
        let mut s = self.state.lock().unwrap();
        for g in ["light", "medium", "heavy"] {
            s.limits.insert(
                g,
                GroupLimit {
                    requests: 100_000,
                    window: Duration::from_secs(60),
                    penalty: Duration::from_secs(60),
                },
            );
        }
    }

    /// The keys of a `ringcentral` settings table pointing at this emulator, with the
    /// credentials in the variables `OSCARFLOW_T_<tag>_{ID,SECRET,JWT}` (set here) and the
    /// client's Light and Medium limits lifted; `heavy` is the Heavy limit
    /// (`requests`, `window`). The caller writes the table header and its own keys first.
    pub fn ringcentral_toml(&self, tag: &str, heavy: (u32, &str)) -> String {
        let v = |n: &str| format!("OSCARFLOW_T_{tag}_{n}");
        std::env::set_var(v("ID"), CLIENT_ID);
        std::env::set_var(v("SECRET"), CLIENT_SECRET);
        std::env::set_var(v("JWT"), JWT);
        format!(
            "server = \"{}\"\nclient_id_env = \"{}\"\nclient_secret_env = \"{}\"\njwt_env = \"{}\"\nlimits.light = {{ requests = 100000, window = \"1m\" }}\nlimits.medium = {{ requests = 100000, window = \"1m\" }}\nlimits.heavy = {{ requests = {}, window = \"{}\" }}\n",
            self.url(),
            v("ID"),
            v("SECRET"),
            v("JWT"),
            heavy.0,
            heavy.1
        )
    }

    /// Adds an inbound fax to the message store.
    pub fn add_fax(&self, id: i64, creation_time: time::OffsetDateTime, pages: u32, pdf: Bytes) {
        let creation_time = creation_time
            .replace_millisecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        self.state.lock().unwrap().faxes.push(Fax {
            id,
            creation_time,
            read: false,
            pages,
            from: "+16045550199".into(),
            pdf,
        });
    }

    /// Ids of the faxes marked read.
    pub fn read_ids(&self) -> Vec<i64> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<i64> = s.faxes.iter().filter(|f| f.read).map(|f| f.id).collect();
        v.sort();
        v
    }

    pub fn records(&self) -> Vec<Record> {
        self.state.lock().unwrap().records.clone()
    }

    pub async fn start() -> RcEmulator {
        Self::start_on(0).await
    }

    /// Serves on loopback port `port` (0: any free port).
    pub async fn start_on(port: u16) -> RcEmulator {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::new()));
        state.lock().unwrap().base = format!("http://127.0.0.1:{}", addr.port());
        let st = state.clone();
        super::http_emu::serve(listener, None, Arc::new(|| {}), move |req| {
            handle(st.clone(), req)
        });
        RcEmulator { addr, state }
    }
}

/// The test-control API (not RingCentral's; CONTRACTS.md §9), for integrators driving the
/// emulator from outside: `POST /__emu/fax?pages=&bytes=` adds an inbound fax,
/// `POST /__emu/fault?status=&count=&retry_after=` forces answers, `POST /__emu/down?on=`
/// starts or ends an outage, `POST /__emu/slow?ms=&count=` delays answers,
/// `POST /__emu/expire-tokens`, `GET /__emu/sent` lists sent faxes and texts (no bodies).
fn control(st: &Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let q: HashMap<String, String> = super::http_emu::query_pairs(req).into_iter().collect();
    let num = |k: &str, d: u64| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut s = st.lock().unwrap();
    let body = match req.uri().path() {
        "/__emu/fax" => {
            let id = 6_000_000_000 + s.faxes.len() as i64;
            let size = num("bytes", 50_000) as usize;
            let mut pdf = format!("%PDF-1.4\n% emulator fax {id}\n").into_bytes();
            pdf.resize(size.max(32), b' ');
            pdf.extend_from_slice(b"\n%%EOF");
            s.faxes.push(Fax {
                id,
                creation_time: time::OffsetDateTime::now_utc()
                    .replace_millisecond(0)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
                read: false,
                pages: num("pages", 1) as u32,
                from: "+16045550199".into(),
                pdf: Bytes::from(pdf),
            });
            serde_json::json!({"id": id})
        }
        "/__emu/fault" => {
            let status = num("status", 429) as u16;
            let count = num("count", 1) as usize;
            s.forced.extend(std::iter::repeat_n(status, count));
            s.forced_retry_after = num("retry_after", 1);
            serde_json::json!({"forced": s.forced.len()})
        }
        "/__emu/down" => {
            s.down = q.get("on").is_none_or(|v| v == "1" || v == "true");
            serde_json::json!({"down": s.down})
        }
        "/__emu/slow" => {
            s.slow_delay = Duration::from_millis(num("ms", 1000));
            s.slow_next = num("count", 1) as usize;
            serde_json::json!({"slow_next": s.slow_next})
        }
        "/__emu/expire-tokens" => {
            let past = Instant::now() - Duration::from_secs(1);
            for v in s.tokens.values_mut() {
                *v = past;
            }
            serde_json::json!({"expired": s.tokens.len()})
        }
        "/__emu/sent" => serde_json::json!({
            "faxes": s.sent.iter().map(|f| serde_json::json!({"id": f.id, "to": f.to, "name": f.name, "status": f.status})).collect::<Vec<_>>(),
            "sms": s.sms.iter().map(|m| serde_json::json!({"id": m.id, "to": m.to, "status": m.status})).collect::<Vec<_>>(),
            "inbound_read": s.faxes.iter().filter(|f| f.read).count(),
        }),
        _ => serde_json::json!({"error": "unknown control route"}),
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn group_of(method: &str, path: &str) -> &'static str {
    if path.starts_with("/restapi/oauth/") {
        "auth"
    } else if method == "POST" && path.ends_with("/fax") {
        "heavy"
    } else if (method == "POST" && path.ends_with("/sms"))
        || (path.contains("/message-store/") && method != "GET")
        || path.contains("/content/")
    {
        "medium"
    } else {
        "light"
    }
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"errorCode": code, "message": message, "errors": [{"errorCode": code, "message": message}]}).to_string()
}

fn respond(
    status: u16,
    body: String,
    group: &'static str,
    limit: GroupLimit,
    remaining: usize,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=UTF-8")
        .header("X-Rate-Limit-Group", group)
        .header("X-Rate-Limit-Limit", limit.requests.to_string())
        .header("X-Rate-Limit-Remaining", remaining.to_string())
        .header(
            "X-Rate-Limit-Window",
            limit.window.as_secs().max(1).to_string(),
        )
        .header("RCRequestId", ulid::Ulid::new().to_string());
    if let Some(s) = retry_after {
        r = r.header("Retry-After", s.to_string());
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/__emu/") {
        return control(&st, &req);
    }
    let (down, delay) = {
        let mut s = st.lock().unwrap();
        let slow = if s.slow_next > 0 {
            s.slow_next -= 1;
            s.slow_delay
        } else {
            Duration::ZERO
        };
        (s.down, s.delay + slow)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if down {
        let mut r = Response::new(Full::new(Bytes::new()));
        r.headers_mut()
            .insert(super::http_emu::DROP_CONNECTION, "1".parse().unwrap());
        return r;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = super::http_emu::query_pairs(&req);
    let group = group_of(&method, &path);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let now = Instant::now();
    let mut s = st.lock().unwrap();
    let limit = s.limits[group];
    // Rate limiting, with the penalty that restarts on every request during it.
    let (over, remaining) = {
        let b = s.buckets.entry(group).or_default();
        while b
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.window)
        {
            b.sent.pop_front();
        }
        if b.penalty_until.is_some_and(|u| u > now) {
            b.penalty_until = Some(now + limit.penalty);
            (true, 0)
        } else {
            b.sent.push_back(now);
            if b.sent.len() > limit.requests {
                b.penalty_until = Some(now + limit.penalty);
                (true, 0)
            } else {
                (false, limit.requests - b.sent.len())
            }
        }
    };
    let (status, out, retry) = if over {
        (
            429,
            error_json("CMN-301", "Request rate exceeded"),
            Some(limit.penalty.as_secs().max(1)),
        )
    } else if group == "auth" && path == "/restapi/oauth/token" {
        token(&mut s, auth.as_deref(), &body)
    } else {
        api(
            &mut s,
            auth.as_deref(),
            &method,
            &path,
            &query,
            now,
            (&content_type, &body),
        )
    };
    if status == 200 && out == DROP {
        let mut r = Response::new(Full::new(Bytes::new()));
        r.headers_mut()
            .insert(super::http_emu::DROP_CONNECTION, "1".parse().unwrap());
        return r;
    }
    s.records.push(Record {
        at: now,
        method,
        route: path.clone(),
        group,
        status,
    });
    if status == 200 && out.starts_with("\u{0}PDF:") {
        let id: i64 = path
            .rsplit('/')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        let pdf = s
            .faxes
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.pdf.clone())
            .unwrap_or_default();
        s.downloads += 1;
        if s.down_after_downloads == Some(s.downloads) {
            s.down = true;
        }
        let mut r = respond(200, String::new(), group, limit, remaining, None);
        r.headers_mut()
            .insert("content-type", "application/pdf".parse().unwrap());
        *r.body_mut() = Full::new(pdf);
        return r;
    }
    respond(status, out, group, limit, remaining, retry)
}

fn token(s: &mut State, auth: Option<&str>, body: &[u8]) -> (u16, String, Option<u64>) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let oauth_err = |error: &str, code: &str, msg: &str| {
        serde_json::json!({"error": error, "error_description": msg, "errors": [{"errorCode": code, "message": msg}]}).to_string()
    };
    if auth != Some(expected.as_str()) {
        return (
            400,
            oauth_err(
                "invalid_client",
                "OAU-123",
                "Client authentication is required",
            ),
            None,
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            400,
            oauth_err(
                "unsupported_grant_type",
                "OAU-250",
                "Unsupported grant type",
            ),
            None,
        );
    }
    if form.get("assertion").map(String::as_str) != Some(JWT) {
        return (
            400,
            oauth_err(
                "invalid_grant",
                "OAU-140",
                "Invalid resource owner credentials",
            ),
            None,
        );
    }
    let access = format!("emu-at-{}", ulid::Ulid::new());
    s.tokens.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(s.token_ttl_secs),
    );
    s.sessions.push_back(access.clone());
    if s.sessions.len() > 5 {
        if let Some(old) = s.sessions.pop_front() {
            s.tokens.remove(&old);
        }
    }
    s.logins += 1;
    let body = serde_json::json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": s.token_ttl_secs,
        "scope": "ReadMessages EditMessages Faxes SMS ReadAccounts",
        "owner_id": "230919004",
        "endpoint_id": "emu",
        "session_id": ulid::Ulid::new().to_string(),
    });
    (200, body.to_string(), None)
}

/// The answer body that makes `handle` drop the connection instead.
const DROP: &str = "\u{0}DROP";

fn api(
    s: &mut State,
    auth: Option<&str>,
    method: &str,
    path: &str,
    query: &[(String, String)],
    now: Instant,
    (content_type, body): (&str, &[u8]),
) -> (u16, String, Option<u64>) {
    let token = auth.and_then(|a| {
        let (scheme, t) = a.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| t.trim().to_string())
    });
    let Some(token) = token else {
        return (
            401,
            error_json("OAU-123", "Authorization header is not specified"),
            None,
        );
    };
    match s.tokens.get(&token) {
        None => return (401, error_json("OAU-213", "Token not found"), None),
        Some(exp) if *exp <= now => {
            return (401, error_json("OAU-128", "Access token is expired"), None)
        }
        Some(_) => {}
    }
    if let Some(forced) = s.forced.pop_front() {
        let retry = matches!(forced, 429 | 503).then_some(s.forced_retry_after);
        let body = match forced {
            429 => error_json("CMN-301", "Request rate exceeded"),
            400 => error_json("CMN-101", "Parameter [to] value is invalid."),
            _ => error_json("CMN-201", "Service temporary unavailable"),
        };
        return (forced, body, retry);
    }
    match (method, path) {
        ("GET", "/restapi/v1.0/account/~/extension/~") => (
            200,
            serde_json::json!({"id": 230919004i64, "extensionNumber": "101", "uri": "/restapi/v1.0/account/230919004/extension/230919004"}).to_string(),
            None,
        ),
        ("POST", p) if p.ends_with("/fax") => send_fax(s, content_type, body),
        ("POST", p) if p.ends_with("/sms") => send_sms(s, body),
        ("GET", p) if p.ends_with("/message-store")
            && query.iter().any(|(k, v)| k == "messageType" && v == "SMS") =>
        {
            sms_list(s, query)
        }
        ("GET", p)
            if p.contains("/message-store/")
                && s.sms.iter().any(|m| p.ends_with(&format!("/{}", m.id))) =>
        {
            let id: i64 = p.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            let fail = s.sms_fail_numbers.clone();
            let stopped = s.sms_stopped_numbers.clone();
            let m = s.sms.iter_mut().find(|m| m.id == id).unwrap();
            m.reads += 1;
            let code = if stopped.contains(&m.to) {
                Some("SMS-RC-413")
            } else if fail.contains(&m.to) {
                Some("SMS-RC-410")
            } else {
                None
            };
            m.status = match (m.status.as_str(), code) {
                ("Queued", _) => "Sent".into(),
                ("Sent", None) => "Delivered".into(),
                ("Sent", Some(c)) => {
                    m.error_code = Some(c.into());
                    "DeliveryFailed".into()
                }
                (other, _) => other.to_string(),
            };
            (200, sms_json(&s.base, m).to_string(), None)
        }
        ("GET", p) if p.ends_with("/message-store") => {
            if query.iter().any(|(k, v)| k == "direction" && v == "Outbound") {
                sent_list(s, query)
            } else {
                message_list(s, query)
            }
        }
        ("GET", p)
            if p.contains("/message-store/")
                && s.sent.iter().any(|f| p.ends_with(&format!("/{}", f.id))) =>
        {
            let id: i64 = p.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            let after = s.advance_after_reads;
            let fail = s.fail_numbers.clone();
            let f = s.sent.iter_mut().find(|f| f.id == id).unwrap();
            f.reads += 1;
            if f.status == "Queued" && f.reads >= after {
                if fail.contains(&f.to) {
                    f.status = "SendingFailed".into();
                    f.error_code = Some("NoAnswer".into());
                } else {
                    f.status = "Sent".into();
                }
            }
            (200, sent_json(&s.base, f).to_string(), None)
        }
        ("GET", p) if p.contains("/message-store/") && p.contains("/content/") => {
            let id: i64 = p.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            match s.faxes.iter().find(|f| f.id == id) {
                Some(f) => (200, format!("\u{0}PDF:{}", f.pdf.len()), None),
                None => (404, error_json("CMN-102", "Resource for parameter [attachmentId] is not found"), None),
            }
        }
        ("PUT", p) if p.contains("/message-store/") => {
            let id: i64 = p.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            match s.faxes.iter_mut().find(|f| f.id == id) {
                Some(f) => {
                    f.read = true;
                    (200, serde_json::json!({"id": f.id, "readStatus": "Read"}).to_string(), None)
                }
                None => (404, error_json("CMN-102", "Resource for parameter [messageId] is not found"), None),
            }
        }
        _ => (404, error_json("CMN-102", "Resource for parameter [path] is not found"), None),
    }
}

/// `GET …/message-store`: inbound faxes filtered by `messageType`, `direction`, `readStatus`
/// and `dateFrom` (default: the last 24 h, as RingCentral), newest first, paged.
fn message_list(s: &State, query: &[(String, String)]) -> (u16, String, Option<u64>) {
    let all = |k: &str| -> Vec<&str> {
        query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |k: &str| all(k).first().map(|v| v.to_string());
    if !all("messageType").is_empty() && !all("messageType").contains(&"Fax") {
        return (
            200,
            serde_json::json!({"records": [], "paging": {}, "navigation": {}}).to_string(),
            None,
        );
    }
    let date_from = match one("dateFrom") {
        Some(d) => {
            match time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339) {
                Ok(t) => t,
                Err(_) => {
                    return (
                        400,
                        error_json("CMN-101", "Parameter [dateFrom] value is invalid."),
                        None,
                    )
                }
            }
        }
        None => time::OffsetDateTime::now_utc() - time::Duration::hours(24),
    };
    let read_filter = all("readStatus");
    let per_page: usize = one("perPage")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let page: usize = one("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let mut faxes: Vec<&Fax> = s
        .faxes
        .iter()
        .filter(|f| {
            time::OffsetDateTime::parse(
                &f.creation_time,
                &time::format_description::well_known::Rfc3339,
            )
            .is_ok_and(|t| t >= date_from)
        })
        .filter(|f| {
            read_filter.is_empty() || read_filter.contains(&if f.read { "Read" } else { "Unread" })
        })
        .collect();
    faxes.sort_by(|a, b| (&b.creation_time, b.id).cmp(&(&a.creation_time, a.id)));
    let total = faxes.len();
    let pages = total.div_ceil(per_page).max(1);
    let ext = "/restapi/v1.0/account/230919004/extension/230919004/message-store";
    let records: Vec<serde_json::Value> = faxes
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|f| {
            serde_json::json!({
                "uri": format!("{}{ext}/{}", s.base, f.id),
                "id": f.id,
                "type": "Fax",
                "from": {"phoneNumber": f.from},
                "creationTime": f.creation_time,
                "lastModifiedTime": f.creation_time,
                "readStatus": if f.read { "Read" } else { "Unread" },
                "direction": "Inbound",
                "availability": "Alive",
                "messageStatus": "Received",
                "faxResolution": "High",
                "faxPageCount": f.pages,
                "attachments": [{
                    "id": f.id,
                    "uri": format!("{}{ext}/{}/content/{}", s.base, f.id, f.id),
                    "type": "RenderedDocument",
                    "contentType": "application/pdf",
                    "size": f.pdf.len()
                }]
            })
        })
        .collect();
    let link = |p: usize| {
        let mut q: Vec<(String, String)> =
            query.iter().filter(|(k, _)| k != "page").cloned().collect();
        q.push(("page".into(), p.to_string()));
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        serde_json::json!({"uri": format!("{}{ext}?{qs}", s.base)})
    };
    let mut navigation = serde_json::json!({"firstPage": link(1), "lastPage": link(pages)});
    if page < pages {
        navigation["nextPage"] = link(page + 1);
    }
    if page > 1 {
        navigation["previousPage"] = link(page - 1);
    }
    let body = serde_json::json!({
        "uri": format!("{}{ext}", s.base),
        "records": records,
        "paging": {"page": page, "perPage": per_page, "totalPages": pages, "totalElements": total},
        "navigation": navigation,
    });
    (200, body.to_string(), None)
}

/// Splits a `multipart/*` body (CONTRACTS.md §5.1).
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"')
        .to_string();
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut rest = text;
    // Skip the preamble.
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, format!("\r\n{delim}").as_bytes())?;
        let part = &rest[..end];
        rest = &rest[end + 2 + delim.len()..];
        let split = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]).into_owned();
        let body = Bytes::copy_from_slice(&part[split + 4..]);
        let mut p = Part {
            name: None,
            filename: None,
            content_type: String::new(),
            body,
        };
        for line in head.lines() {
            let (k, v) = line.split_once(':')?;
            if k.eq_ignore_ascii_case("content-type") {
                p.content_type = v.trim().to_string();
            } else if k.eq_ignore_ascii_case("content-disposition") {
                for attr in v.split(';').skip(1) {
                    if let Some((ak, av)) = attr.trim().split_once('=') {
                        let av = av.trim_matches('"').to_string();
                        match ak {
                            "name" => p.name = Some(av),
                            "filename" => p.filename = Some(av),
                            _ => {}
                        }
                    }
                }
            }
        }
        parts.push(p);
    }
    Some(parts)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `POST …/fax` with the emulator's parsing rule (CONTRACTS.md §5.1).
fn send_fax(s: &mut State, content_type: &str, body: &[u8]) -> (u16, String, Option<u64>) {
    if !content_type.starts_with("multipart/") {
        return (415, error_json("CMN-104", "Unsupported media type"), None);
    }
    let Some(parts) = parse_multipart(content_type, body) else {
        return (
            400,
            error_json("MSG-349", "Unable to parse fax envelope"),
            None,
        );
    };
    let Some(envelope) = parts
        .iter()
        .find(|p| p.content_type.starts_with("application/json"))
    else {
        return (
            400,
            error_json("MSG-349", "Unable to parse fax envelope"),
            None,
        );
    };
    let Ok(env) = serde_json::from_slice::<serde_json::Value>(&envelope.body) else {
        return (
            400,
            error_json("MSG-349", "Unable to parse fax envelope"),
            None,
        );
    };
    let docs: Vec<&Part> = parts
        .iter()
        .filter(|p| !p.content_type.starts_with("application/json"))
        .collect();
    if docs.is_empty() {
        return (400, error_json("MSG-350", "No content disposition"), None);
    }
    for d in &docs {
        if d.filename.is_none() {
            return (
                400,
                error_json("MSG-351", "No file name in content disposition"),
                None,
            );
        }
        if d.body.is_empty() {
            return (400, error_json("MSG-347", "Attachment body is empty"), None);
        }
        if !(d.content_type == "application/pdf" || d.content_type == "image/tiff") {
            return (
                415,
                error_json("MSG-348", "Unsupported attachment media type"),
                None,
            );
        }
    }
    let to = env["to"][0]["phoneNumber"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let valid =
        to.len() == 12 && to.starts_with("+1") && to[1..].bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return (
            400,
            error_json("CMN-101", "Parameter [to] value is invalid."),
            None,
        );
    }
    let fax = SentFax {
        id: 3_349_579_000 + s.sent.len() as i64,
        to,
        name: env["to"][0]["name"].as_str().unwrap_or("").to_string(),
        parts,
        status: "Queued".into(),
        error_code: None,
        created: time::OffsetDateTime::now_utc(),
        reads: 0,
    };
    let out = sent_json(&s.base, &fax).to_string();
    s.sent.push(fax);
    if s.drop_after_accept > 0 {
        s.drop_after_accept -= 1;
        return (200, DROP.into(), None);
    }
    (200, out, None)
}

fn sent_json(base: &str, f: &SentFax) -> serde_json::Value {
    let uri = format!(
        "{base}/restapi/v1.0/account/230919004/extension/230919004/message-store/{}",
        f.id
    );
    let mut to =
        serde_json::json!({"phoneNumber": f.to, "name": f.name, "messageStatus": f.status});
    if let Some(c) = &f.error_code {
        to["faxErrorCode"] = serde_json::json!(c);
    }
    serde_json::json!({
        "uri": uri,
        "id": f.id,
        "to": [to],
        "type": "Fax",
        "creationTime": f.created.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "readStatus": "Read",
        "direction": "Outbound",
        "availability": "Alive",
        "messageStatus": f.status,
        "faxResolution": "High",
        "faxPageCount": if f.status == "Sent" { 2 } else { 0 },
        "coverIndex": 0,
    })
}

/// Outbound faxes from `dateFrom`, newest first, one page.
fn sent_list(s: &State, query: &[(String, String)]) -> (u16, String, Option<u64>) {
    let records = s.sent.iter().map(|f| (f.created, sent_json(&s.base, f)));
    outbound_page(query, records)
}

/// `(creation time, record)` pairs from `dateFrom` (default: the last 24 h), newest first,
/// as one message-store page.
fn outbound_page(
    query: &[(String, String)],
    records: impl Iterator<Item = (time::OffsetDateTime, serde_json::Value)>,
) -> (u16, String, Option<u64>) {
    let from = query
        .iter()
        .find(|(k, _)| k == "dateFrom")
        .and_then(|(_, v)| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(|| time::OffsetDateTime::now_utc() - time::Duration::hours(24));
    let mut records: Vec<serde_json::Value> = records
        .filter(|(created, _)| *created >= from)
        .map(|(_, r)| r)
        .collect();
    records.reverse();
    let body = serde_json::json!({"records": records, "paging": {"page": 1}, "navigation": {}});
    (200, body.to_string(), None)
}

/// `POST …/sms` (CONTRACTS.md §6.1): `from` must be one of the extension's SMS numbers,
/// `to` one E.164 number, `text` at most 1000 UTF-16 units.
fn send_sms(s: &mut State, body: &[u8]) -> (u16, String, Option<u64>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            400,
            error_json("CMN-101", "Parameter [body] value is invalid."),
            None,
        );
    };
    let from = v["from"]["phoneNumber"].as_str().unwrap_or("");
    if !s.sms_numbers.iter().any(|n| n == from) {
        return (
            400,
            error_json("MSG-245", "Parameter [from] value is invalid [Cannot find the phone number which belongs to user]"),
            None,
        );
    }
    let to = v["to"][0]["phoneNumber"].as_str().unwrap_or("").to_string();
    let valid =
        to.len() == 12 && to.starts_with("+1") && to[1..].bytes().all(|b| b.is_ascii_digit());
    if !valid || v["to"].as_array().map_or(0, Vec::len) != 1 {
        return (
            400,
            error_json("CMN-101", "Parameter [to] value is invalid."),
            None,
        );
    }
    let text = v["text"].as_str().unwrap_or("").to_string();
    if text.is_empty() || text.encode_utf16().count() > 1000 {
        return (
            400,
            error_json("CMN-101", "Parameter [text] value is invalid."),
            None,
        );
    }
    let m = SentSms {
        id: 315_450_330_000 + s.sms.len() as i64,
        from: from.to_string(),
        to,
        text,
        status: "Queued".into(),
        error_code: None,
        created: time::OffsetDateTime::now_utc(),
        reads: 0,
    };
    let out = sms_json(&s.base, &m).to_string();
    s.sms.push(m);
    if s.drop_after_accept > 0 {
        s.drop_after_accept -= 1;
        return (200, DROP.into(), None);
    }
    (200, out, None)
}

fn sms_json(base: &str, m: &SentSms) -> serde_json::Value {
    let mut v = serde_json::json!({
        "uri": format!("{base}/restapi/v1.0/account/230919004/extension/230919004/message-store/{}", m.id),
        "id": m.id,
        "to": [{"phoneNumber": m.to}],
        "from": {"phoneNumber": m.from},
        "type": "SMS",
        "creationTime": m.created.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "readStatus": "Read",
        "priority": "Normal",
        "direction": "Outbound",
        "availability": "Alive",
        "subject": m.text,
        "messageStatus": m.status,
        "smsSendingAttemptsCount": 1,
    });
    if let Some(c) = &m.error_code {
        v["deliveryErrorCode"] = serde_json::json!(c);
    }
    v
}

/// Outbound texts from `dateFrom`, newest first, one page.
fn sms_list(s: &State, query: &[(String, String)]) -> (u16, String, Option<u64>) {
    let records = s.sms.iter().map(|m| (m.created, sms_json(&s.base, m)));
    outbound_page(query, records)
}

/// A synthetic PDF of about `size` bytes, distinct per id.
pub fn pdf(id: i64, size: usize) -> Bytes {
    let mut v = format!("%PDF-1.4\n% synthetic fax {id}\n").into_bytes();
    let mut x = id as u64 ^ 0x9E37_79B9_7F4A_7C15;
    while v.len() < size.saturating_sub(6) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b' ' + (x % 90) as u8);
    }
    v.extend_from_slice(b"\n%%EOF");
    Bytes::from(v)
}

/// The fax inbox pipeline file (`ringcentral_fax` → `oscar_fax`, documents in
/// `dir/document`) against `emu`, with per-test secret variables.
pub fn fax_pipeline_toml(
    emu: &RcEmulator,
    dir: &Path,
    tag: &str,
    spool: &Path,
    poll_interval: &str,
) -> String {
    std::fs::create_dir_all(dir.join("document")).unwrap();
    format!(
        r#"
[pipeline]
name = "fax_inbox"
channel_capacity = 4

[pipeline.retry]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "200ms"

[sources.fax]
type = "ringcentral_fax"
spool_dir = "{spool}"
poll_interval = "{poll_interval}"
per_page = 50

[sources.fax.ringcentral]
max_attempts = 2
initial_backoff = "50ms"
timeout = "20s"
{ringcentral}
[sinks.oscar]
type = "oscar_fax"
inputs = ["fax"]
document_dir = "{docs}"
queue_id = 1
fax_line = "6045550100"
"#,
        spool = spool.display(),
        ringcentral = emu.ringcentral_toml(&format!("FAX_{tag}"), (100_000, "1m")),
        docs = dir.join("document").display(),
    )
}
