//! `excelleris`: the Excelleris / LifeLabs BC `hl7pull.aspx` lab pull (what Expedius does).
//!
//! **Wire contract** (CONTRACTS.md §11, read from Expedius): every call is an HTTPS `GET` with
//! mutual TLS — a client certificate issued by Excelleris (PKCS#12, or PEM with its key) and
//! a trust store holding only the CAs to trust — and one session cookie:
//! 1. handshake: `GET <url>` → 200;
//! 2. login: `?Page=Login&Mode=Silent&UserID=…&Password=…` → XML whose root text is
//!    `AccessGranted` (any other text: refused);
//! 3. fetch: `?Page=HL7&Query=NewRequests` → `<HL7Messages MessageCount="n">` with one
//!    `<Message MsgID="k"><![CDATA[MSH|…]]></Message>` per lab;
//! 4. acknowledge: `?Page=HL7&ACK=Positive` → root attribute `ReturnCode="0"`. The ack covers
//!    the **whole last batch**; an un-acked batch is delivered again on the next fetch;
//! 5. logout: `?Logout=Yes` (its body is not meaningful).
//!
//! **Nothing lost, nothing twice.** Each message of a batch becomes its own envelope, wrapped
//! back into a one-message `<HL7Messages>` document exactly as Excelleris sends it (so the
//! import stores it as OSCAR's PATHL7 upload would); all of them share one batch
//! acknowledgement. The positive ack is sent only when every message is committed or
//! dead-lettered and the batch held as many messages as it announced. Otherwise nothing is
//! acked and Excelleris re-delivers the batch; because each message's envelope depends only
//! on the message (never on its position in the batch), a re-delivered message has the same
//! MD5 and the import turns it into a duplicate — also when the re-delivered batch carries
//! new messages besides. `acknowledge = false` never acks (Expedius'
//! `ACKNOWLEDGE_DOWNLOADS=false`, for testing against the live service without consuming labs).
//!
//! **Schedule.** A poll at start, then every `poll_interval`, or — when `times_of_day` is set —
//! at those local times. A failed poll (network, TLS, login) is logged with a PHI-free reason,
//! counted, and retried at the next scheduled time; it never stops the pipeline. Credentials
//! come from environment variables and are URL-encoded; they never appear in logs or errors.
//!
//! Deliberate differences from Expedius: credentials are encoded (Expedius substitutes them
//! raw); a failed fetch is an error, not "no content"; a stale success never triggers an ack
//! (Expedius acks on a later empty run after one successful import).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Source, SourceContext, SourceError};
use crate::ack::BatchNotifier;
use crate::config::deserialize_duration;
use crate::envelope::{sha256, Envelope, Origin, Provenance, Raw};
use crate::error::ErrorKind;
use crate::telemetry::Event;

/// `[sources.<id>] type = "excelleris"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExcellerisConfig {
    /// The `hl7pull.aspx` address, e.g. `https://api.bc.excelleris.com/hl7pull.aspx`
    /// (test service: `https://api.bctest.excelleris.com/hl7pull.aspx`).
    pub url: String,
    /// Environment variable holding the Excelleris user id.
    pub user_env: Spanned<String>,
    /// Environment variable holding the password.
    pub password_env: Spanned<String>,
    /// The client certificate Excelleris issued: a PKCS#12 file (`.p12`/`.pfx`) or a PEM file
    /// with the certificate chain and its PKCS#8 private key.
    pub client_identity: PathBuf,
    /// Environment variable holding the PKCS#12 password (PKCS#12 only).
    #[serde(default)]
    pub client_identity_password_env: Option<Spanned<String>>,
    /// PEM file of the CA certificates that may sign the server's certificate. Only these are
    /// trusted (the system roots are not).
    pub trust_store: PathBuf,
    /// Time between polls (Expedius' default: 2 h).
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Fixed local times (`HH:MM`) to poll at instead of the interval.
    #[serde(default)]
    pub times_of_day: Vec<String>,
    /// Send the positive acknowledgement after a committed batch (`false`: never).
    #[serde(default = "yes")]
    pub acknowledge: bool,
    /// Timeout of each HTTP request.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(7200)
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn yes() -> bool {
    true
}

/// `HH:MM` → minutes after midnight.
pub(crate) fn parse_time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl ExcellerisConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(_) => v.push(("url must be https".into(), None)),
            Err(e) => v.push((format!("url is not valid: {e}"), None)),
        }
        if self.poll_interval < Duration::from_secs(1) {
            v.push(("poll_interval must be at least 1s".into(), None));
        }
        for t in &self.times_of_day {
            if parse_time_of_day(t).is_none() {
                v.push((format!("times_of_day: `{t}` is not HH:MM"), None));
            }
        }
        v
    }

    pub(crate) fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        let mut v = vec![
            ("user_env", &self.user_env),
            ("password_env", &self.password_env),
        ];
        if let Some(p) = &self.client_identity_password_env {
            v.push(("client_identity_password_env", p));
        }
        v
    }
}

/// Why a poll failed. The text is PHI-free (no bodies, no credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PollError(pub String);

/// The loaded TLS material (shared by the HTTPS pull sources).
#[derive(Clone)]
pub struct Tls {
    identity: Option<reqwest::Identity>,
    /// `None`: the system's roots.
    roots: Option<Vec<reqwest::Certificate>>,
}

fn load_tls(cfg: &ExcellerisConfig) -> Result<Tls, String> {
    load_tls_files(
        Some(&cfg.client_identity),
        cfg.client_identity_password_env.as_ref(),
        Some(&cfg.trust_store),
    )
}

/// Reads a client identity (PKCS#12 or PEM, optional) and a trust store (PEM bundle,
/// optional: the system roots otherwise).
pub(crate) fn load_tls_files(
    client_identity: Option<&std::path::Path>,
    password_env: Option<&Spanned<String>>,
    trust_store: Option<&std::path::Path>,
) -> Result<Tls, String> {
    let identity = match client_identity {
        Some(path) => Some(load_identity(path, password_env)?),
        None => None,
    };
    let roots = match trust_store {
        Some(path) => {
            let trust = std::fs::read(path)
                .map_err(|e| format!("cannot read trust_store {}: {e}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&trust)
                .map_err(|e| format!("trust_store is not a PEM bundle: {e}"))?;
            if roots.is_empty() {
                return Err("trust_store holds no certificate".into());
            }
            Some(roots)
        }
        None => None,
    };
    Ok(Tls { identity, roots })
}

fn load_identity(
    path: &std::path::Path,
    password_env: Option<&Spanned<String>>,
) -> Result<reqwest::Identity, String> {
    let id_bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read client_identity {}: {e}", path.display()))?;
    let identity = if id_bytes.starts_with(b"-----BEGIN")
        || id_bytes.windows(10).any(|w| w == b"-----BEGIN")
    {
        let text = String::from_utf8_lossy(&id_bytes);
        let (certs, key): (Vec<&str>, Vec<&str>) = split_pem(&text)
            .into_iter()
            .partition(|b| b.contains("CERTIFICATE"));
        let key = key
            .into_iter()
            .find(|b| b.contains("PRIVATE KEY"))
            .ok_or("client_identity (PEM) holds no private key")?;
        if certs.is_empty() {
            return Err("client_identity (PEM) holds no certificate".into());
        }
        reqwest::Identity::from_pkcs8_pem(certs.join("\n").as_bytes(), key.as_bytes())
            .map_err(|e| format!("client_identity (PEM) is not usable: {e}"))?
    } else {
        let password = match password_env {
            Some(v) => std::env::var(v.get_ref())
                .map_err(|_| format!("environment variable `{}` is not set", v.get_ref()))?,
            None => String::new(),
        };
        reqwest::Identity::from_pkcs12_der(&id_bytes, &password).map_err(|e| {
            format!("client_identity (PKCS#12) cannot be opened (wrong password or file?): {e}")
        })?
    };
    Ok(identity)
}

/// The `-----BEGIN …-----` … `-----END …-----` blocks of a PEM text.
fn split_pem(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find("-----BEGIN") {
        let after = &rest[b..];
        let Some(e) = after.find("-----END") else {
            break;
        };
        let end = after[e + 8..]
            .find("-----")
            .map(|i| e + 8 + i + 5)
            .unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

/// The text of the root element (login answer).
fn root_text(xml: &str) -> String {
    let mut s = xml.trim_start_matches('\u{feff}').trim();
    // Skip the declaration, comments and processing instructions.
    while s.starts_with("<?") || s.starts_with("<!--") {
        let end = if s.starts_with("<?") { "?>" } else { "-->" };
        match s.find(end) {
            Some(i) => s = s[i + end.len()..].trim_start(),
            None => return String::new(),
        }
    }
    let Some(open_end) = s.find('>') else {
        return String::new();
    };
    if s[..open_end].ends_with('/') {
        return String::new();
    }
    let body = &s[open_end + 1..];
    body[..body.find('<').unwrap_or(body.len())]
        .trim()
        .to_string()
}

/// An attribute of the root element (`MessageCount`, `ReturnCode`), case-insensitive.
fn root_attribute(xml: &str, name: &str) -> Option<String> {
    let s = xml.trim_start_matches('\u{feff}');
    let mut i = 0;
    let start = loop {
        let j = s[i..].find('<')? + i;
        let next = s[j + 1..].chars().next()?;
        if next != '?' && next != '!' {
            break j;
        }
        i = j + 1;
    };
    let end = s[start..].find('>')? + start;
    let tag = &s[start..end];
    let lower = tag.to_ascii_lowercase();
    let key = format!("{}=", name.to_ascii_lowercase());
    let mut from = 0;
    while let Some(p) = lower[from..].find(&key) {
        let p = from + p;
        let before = lower[..p].chars().last();
        if before.is_some_and(|c| c.is_whitespace()) {
            let v = &tag[p + key.len()..];
            let quote = v.chars().next()?;
            if quote == '"' || quote == '\'' {
                let v = &v[1..];
                return Some(v[..v.find(quote)?].to_string());
            }
        }
        from = p + key.len();
    }
    None
}

/// One message wrapped as a one-message Excelleris document (see the module docs).
pub fn wrap_message(msg: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(msg.len() + 160);
    out.extend_from_slice(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HL7Messages MessageFormat=\"ORUR01\" MessageCount=\"1\" Version=\"2.3\"><Message MsgID=\"1\"><![CDATA[",
    );
    // `]]>` cannot appear inside one CDATA section: split it across two.
    let mut rest = msg;
    while let Some(p) = rest.windows(3).position(|w| w == b"]]>") {
        out.extend_from_slice(&rest[..p + 2]);
        out.extend_from_slice(b"]]><![CDATA[");
        rest = &rest[p + 2..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"]]></Message></HL7Messages>");
    Bytes::from(out)
}

/// Fault injection for tests: called after the batch settled and before the ack is sent;
/// `true` ends the source right there, as a crash would.
pub type CrashHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// The source.
pub struct ExcellerisSource {
    cfg: ExcellerisConfig,
    crash_before_ack: Option<CrashHook>,
    /// Tests: stop after this many polls.
    max_polls: Option<u32>,
}

impl ExcellerisSource {
    pub fn new(cfg: ExcellerisConfig) -> Self {
        Self {
            cfg,
            crash_before_ack: None,
            max_polls: None,
        }
    }

    /// See [`CrashHook`].
    pub fn with_crash_before_ack(mut self, hook: CrashHook) -> Self {
        self.crash_before_ack = Some(hook);
        self
    }

    /// Ends the source after `n` polls (tests, one-shot runs).
    pub fn with_max_polls(mut self, n: u32) -> Self {
        self.max_polls = Some(n);
        self
    }
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Messages fetched, and whether the batch was acknowledged.
    Fetched { messages: u32, acked: bool },
    /// The crash hook fired before the ack.
    Crashed,
}

struct Session {
    client: reqwest::Client,
    base: url::Url,
}

impl Session {
    async fn get(&self, step: &str, query: &[(&str, &str)]) -> Result<Bytes, PollError> {
        let mut u = self.base.clone();
        if !query.is_empty() {
            u.query_pairs_mut().clear().extend_pairs(query);
        }
        let resp = self
            .client
            .get(u)
            .send()
            .await
            .map_err(|e| PollError(format!("{step}: {}", describe_reqwest(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(PollError(format!("{step}: HTTP {}", status.as_u16())));
        }
        resp.bytes().await.map_err(|e| {
            PollError(format!(
                "{step}: reading the answer: {}",
                describe_reqwest(&e)
            ))
        })
    }
}

/// A PHI-free description of a request failure, naming TLS problems plainly.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        chain.push(c.to_string());
        cur = c.source();
    }
    let all = chain.join(": ").to_ascii_lowercase();
    let hint = if all.contains("certificate verify failed")
        || all.contains("unable to get local issuer")
        || all.contains("self-signed")
        || all.contains("self signed")
    {
        "the server's certificate is not signed by a CA in trust_store"
    } else if all.contains("alert") || all.contains("handshake") || all.contains("certificate") {
        "TLS handshake failed: the server refused the client certificate (client_identity) or the connection"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The URL carries the credentials in its query string: never print it.
    let e = e.without_url_ref();
    format!("{hint} ({})", first_line(&e))
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut chain = Vec::new();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(c) = cur {
            chain.push(c.to_string());
            cur = c.source();
        }
        chain.join(": ")
    }
}

fn first_line(s: &str) -> &str {
    let s = s.lines().next().unwrap_or("");
    &s[..s.len().min(300)]
}

/// An HTTPS client with `tls`, a cookie store, no redirects.
pub(crate) fn https_client(tls: &Tls, timeout: Duration) -> Result<reqwest::Client, PollError> {
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("oscarflow/", env!("CARGO_PKG_VERSION")));
    if let Some(id) = &tls.identity {
        b = b.identity(id.clone());
    }
    if let Some(roots) = &tls.roots {
        b = b.tls_built_in_root_certs(false);
        for r in roots {
            b = b.add_root_certificate(r.clone());
        }
    }
    b.build()
        .map_err(|e| PollError(format!("TLS client setup: {e}")))
}

/// How long until the next poll: `interval`, or the next of `times_of_day` (local time).
pub(crate) fn next_delay(times_of_day: &[String], interval: Duration) -> Duration {
    let times: Vec<u32> = times_of_day
        .iter()
        .filter_map(|t| parse_time_of_day(t))
        .collect();
    if times.is_empty() {
        return interval;
    }
    use chrono::Timelike;
    let now = chrono::Local::now();
    let now_min = now.hour() * 60 + now.minute();
    let next = times
        .iter()
        .map(|t| {
            if *t > now_min {
                t - now_min
            } else {
                t + 24 * 60 - now_min
            }
        })
        .min()
        .unwrap_or(24 * 60);
    Duration::from_secs(u64::from(next) * 60)
        .saturating_sub(Duration::from_secs(u64::from(now.second())))
}

impl ExcellerisSource {
    fn client(&self, tls: &Tls) -> Result<reqwest::Client, PollError> {
        https_client(tls, self.cfg.timeout)
    }

    /// One session: handshake, login, fetch, hand the messages to the pipeline, ack, logout.
    async fn poll(&self, cx: &SourceContext, tls: &Tls) -> Result<PollOutcome, PollError> {
        let base = url::Url::parse(&self.cfg.url).map_err(|e| PollError(format!("url: {e}")))?;
        let host = base.host_str().unwrap_or("").to_string();
        let user = std::env::var(self.cfg.user_env.get_ref()).map_err(|_| {
            PollError(format!(
                "environment variable `{}` is not set",
                self.cfg.user_env.get_ref()
            ))
        })?;
        let password = std::env::var(self.cfg.password_env.get_ref()).map_err(|_| {
            PollError(format!(
                "environment variable `{}` is not set",
                self.cfg.password_env.get_ref()
            ))
        })?;
        let s = Session {
            client: self.client(tls)?,
            base,
        };
        s.get("handshake", &[]).await?;
        let login = s
            .get(
                "login",
                &[
                    ("Page", "Login"),
                    ("Mode", "Silent"),
                    ("UserID", &user),
                    ("Password", &password),
                ],
            )
            .await?;
        let answer = root_text(&String::from_utf8_lossy(&login));
        if !answer.eq_ignore_ascii_case("AccessGranted") {
            let word: String = answer
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(40)
                .collect();
            return Err(PollError(format!(
                "login refused by the server (`{word}`): check the user and password"
            )));
        }
        let result = self.fetch_and_deliver(cx, &s, &host).await;
        // Always log out, whatever happened.
        let _ = s.get("logout", &[("Logout", "Yes")]).await;
        result
    }

    async fn fetch_and_deliver(
        &self,
        cx: &SourceContext,
        s: &Session,
        host: &str,
    ) -> Result<PollOutcome, PollError> {
        let body = s
            .get("fetch", &[("Page", "HL7"), ("Query", "NewRequests")])
            .await?;
        let text = String::from_utf8_lossy(&body);
        let announced: Option<u32> =
            root_attribute(&text, "MessageCount").and_then(|c| c.trim().parse().ok());
        let framed = crate::hl7::framing::frame(&body);
        let messages: Vec<Bytes> = framed.messages.iter().map(|f| f.raw.clone()).collect();
        if messages.is_empty() && framed.rejected.is_empty() {
            if announced.unwrap_or(0) > 0 {
                return Err(PollError(format!(
                    "fetch: the batch announced {} messages but holds none",
                    announced.unwrap_or(0)
                )));
            }
            return Ok(PollOutcome::Fetched {
                messages: 0,
                acked: false,
            });
        }
        let batch = ulid::Ulid::new().to_string();
        let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
        let mut provs = Vec::new();
        // Every message, good or not, goes to the pipeline: a bad one is dead-lettered there
        // with its bytes (and the batch can still be acknowledged).
        let mut all: Vec<(u32, Bytes)> = framed
            .messages
            .iter()
            .map(|f| (f.index, f.raw.clone()))
            .chain(framed.rejected.iter().map(|r| (r.index, r.raw.clone())))
            .collect();
        all.sort_by_key(|(i, _)| *i);
        let total = all.len() as u32;
        for (index, raw) in all {
            let wrapped = wrap_message(&raw);
            let prov = Arc::new(Provenance {
                pipeline: cx.pipeline.clone(),
                source: cx.id.clone(),
                source_kind: Arc::from("excelleris"),
                origin: Origin::Pull {
                    host: host.to_string(),
                    batch: batch.clone(),
                    index,
                },
                received_at: time::OffsetDateTime::now_utc(),
                attempt: 1,
                content_sha256: sha256(&wrapped),
            });
            cx.observers.emit(Event::Received {
                prov: &prov,
                bytes: wrapped.len(),
            });
            let env = Envelope::new(
                prov.clone(),
                Raw {
                    name: format!("excelleris-{}.xml", &prov.sha256_hex()[..16]),
                    bytes: wrapped,
                },
                notifier.token(),
            );
            provs.push(prov);
            if cx.out.send(env).await.is_err() {
                drop(notifier);
                let _ = receiver.wait().await;
                return Err(PollError(
                    "the pipeline stopped before the batch was handed over".into(),
                ));
            }
        }
        drop(notifier);
        let status = receiver.wait().await;
        let complete = announced.is_none_or(|n| n == total);
        if !complete {
            tracing::error!(pipeline = %cx.pipeline, source = %cx.id, announced = ?announced, found = total, "The batch does not hold the messages it announced; not acknowledging it.");
        }
        let release = status.may_release() && complete;
        if release && self.crash_before_ack.as_ref().is_some_and(|h| h()) {
            return Ok(PollOutcome::Crashed);
        }
        let mut acked = false;
        if release && self.cfg.acknowledge {
            let ack = s
                .get("acknowledge", &[("Page", "HL7"), ("ACK", "Positive")])
                .await?;
            let code = root_attribute(&String::from_utf8_lossy(&ack), "ReturnCode");
            if code.as_deref().map(str::trim) != Some("0") {
                return Err(PollError(format!(
                    "acknowledge refused (ReturnCode {}): the batch will be delivered again and deduplicated",
                    code.unwrap_or_else(|| "missing".into())
                )));
            }
            acked = true;
        } else if release {
            tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, "Batch committed but not acknowledged (acknowledge = false): Excelleris will deliver it again.");
        }
        for prov in &provs {
            cx.observers.emit(Event::Settled {
                prov,
                status,
                released: acked,
            });
        }
        Ok(PollOutcome::Fetched {
            messages: total,
            acked,
        })
    }
}

#[async_trait]
impl Source for ExcellerisSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let tls = load_tls(&self.cfg).map_err(|detail| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("excelleris: {detail}"),
        })?;
        let mut shutdown = cx.shutdown.clone();
        let mut polls = 0u32;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            polls += 1;
            let started = std::time::Instant::now();
            match self.poll(&cx, &tls).await {
                Ok(PollOutcome::Crashed) => {
                    return Err(SourceError {
                        kind: ErrorKind::Fatal,
                        detail: "excelleris: fault injection: crashed before the acknowledgement"
                            .into(),
                    })
                }
                Ok(PollOutcome::Fetched { messages, acked }) => {
                    tracing::info!(pipeline = %cx.pipeline, source = %cx.id, messages, acked, ms = started.elapsed().as_millis() as u64, "Excelleris poll done.");
                    cx.observers.emit(Event::Polled {
                        pipeline: &cx.pipeline,
                        component: &cx.id,
                        messages,
                    });
                }
                Err(e) => {
                    tracing::error!(pipeline = %cx.pipeline, source = %cx.id, error = %e, "Excelleris poll failed; retrying at the next scheduled time.");
                    cx.observers.emit(Event::PollFailed {
                        pipeline: &cx.pipeline,
                        component: &cx.id,
                        error: &e.0,
                    });
                }
            }
            if self.max_polls.is_some_and(|m| polls >= m) {
                break;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(next_delay(&self.cfg.times_of_day, self.cfg.poll_interval)) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_login_answer_and_root_attributes() {
        assert_eq!(
            root_text("<?xml version=\"1.0\"?>\n<Result>AccessGranted</Result>"),
            "AccessGranted"
        );
        assert_eq!(root_text("<r/>"), "");
        let batch = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HL7Messages MessageFormat=\"ORUR01\" MessageCount=\"18\" Version=\"2.3\"><Message MsgID=\"1\">";
        assert_eq!(root_attribute(batch, "MessageCount").as_deref(), Some("18"));
        assert_eq!(root_attribute(batch, "messagecount").as_deref(), Some("18"));
        assert_eq!(root_attribute(batch, "Count"), None);
        assert_eq!(
            root_attribute("<Ack ReturnCode='0'/>", "ReturnCode").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn a_wrapped_message_frames_back_to_the_same_bytes() {
        let msg = b"MSH|^~\\&|PATHL7|BCB|HTTPCLIENT|X|20130927130551||ORU^R01|C1|P|2.3\nPID||9000000011|||ZZ^A\nOBX|1|TX|X||odd ]]> text";
        let wrapped = wrap_message(msg);
        let framed = crate::hl7::framing::frame(&wrapped);
        assert_eq!(framed.messages.len(), 1, "{:?}", framed.rejected);
        assert_eq!(&framed.messages[0].raw[..], &msg[..]);
        assert_eq!(
            wrap_message(msg),
            wrapped,
            "deterministic: re-deliveries deduplicate"
        );
    }

    #[test]
    fn the_next_poll_follows_the_interval_or_the_next_time_of_day() {
        assert_eq!(
            next_delay(&[], Duration::from_secs(7200)),
            Duration::from_secs(7200)
        );
        let d = next_delay(&["06:00".into(), "18:30".into()], Duration::from_secs(7200));
        assert!(
            d > Duration::ZERO && d <= Duration::from_secs(24 * 3600),
            "{d:?}"
        );
        // With every minute of the day listed, the next poll is within a minute.
        let all: Vec<String> = (0..24 * 60)
            .map(|m| format!("{:02}:{:02}", m / 60, m % 60))
            .collect();
        assert!(next_delay(&all, Duration::from_secs(7200)) <= Duration::from_secs(60));
    }

    #[test]
    fn times_of_day_parse() {
        assert_eq!(parse_time_of_day("06:30"), Some(390));
        assert_eq!(parse_time_of_day("24:00"), None);
        assert_eq!(parse_time_of_day("6"), None);
    }
}
