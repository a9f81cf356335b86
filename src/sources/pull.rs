//! What the HTTPS pull sources (`excelleris`, `iha_poi`) share: TLS material (a client
//! identity as PKCS#12 or PEM, a trust store or the system roots), the HTTP client, PHI- and
//! credential-free error texts, secrets from the environment, and the poll schedule (an
//! interval or fixed local times of day) with its `Polled` / `PollFailed` events.

use std::future::Future;
use std::time::Duration;

use serde_spanned::Spanned;

use super::{SourceContext, SourceError};
use crate::error::ErrorKind;
use crate::telemetry::Event;

/// `HH:MM` → minutes after midnight.
pub(crate) fn parse_time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
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
            Some(v) => {
                std::env::var(v.get_ref()).map_err(|_| crate::secrets::unset(v.get_ref()))?
            }
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

/// `GET url` on `client`; a non-2xx status or a broken answer is a [`PollError`] naming the
/// `step` (never the URL, whose query string can carry credentials). An answer over `limit`
/// bytes (by its `Content-Length`, or while it is read) is refused without being held: the
/// round fails, nothing is acknowledged, and the feed keeps the messages for the next poll.
pub(crate) async fn get_bytes(
    client: &reqwest::Client,
    url: url::Url,
    step: &str,
    limit: usize,
) -> Result<bytes::Bytes, PollError> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| PollError(format!("{step}: {}", describe_reqwest(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(PollError(format!("{step}: HTTP {}", status.as_u16())));
    }
    let too_large = || {
        PollError(format!(
            "{step}: the answer is over max_input_bytes ({limit} bytes); not read further, nothing acknowledged"
        ))
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut resp = resp;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        PollError(format!(
            "{step}: reading the answer: {}",
            describe_reqwest(&e)
        ))
    })? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The checks every pull source's settings need: an `https` URL and `HH:MM` times of day.
pub(crate) fn validate_pull(
    url: &str,
    poll_interval: Duration,
    times_of_day: &[String],
) -> Vec<(String, Option<std::ops::Range<usize>>)> {
    let mut v = Vec::new();
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => {}
        Ok(_) => v.push(("url must be https".into(), None)),
        Err(e) => v.push((format!("url is not valid: {e}"), None)),
    }
    if poll_interval < Duration::from_secs(1) {
        v.push(("poll_interval must be at least 1s".into(), None));
    }
    for t in times_of_day {
        if parse_time_of_day(t).is_none() {
            v.push((format!("times_of_day: `{t}` is not HH:MM"), None));
        }
    }
    v
}

/// Default time between polls (Expedius' default: 2 h).
pub(crate) fn default_poll_interval() -> Duration {
    Duration::from_secs(7200)
}
/// Default timeout of each HTTP request.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
/// Default of the `acknowledge` switches.
pub(crate) fn yes() -> bool {
    true
}

/// A secret from the environment variable `var` (never logged).
pub(crate) fn env_secret(var: &Spanned<String>) -> Result<String, PollError> {
    std::env::var(var.get_ref()).map_err(|_| PollError(crate::secrets::unset(var.get_ref())))
}

/// What one poll round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// `messages` fetched, `acked` of them (or their batch) acknowledged upstream.
    Done { messages: u32, acked: u32 },
    /// A fault-injection hook ended the round before the acknowledgement, as a crash would.
    Crashed,
}

/// When to poll.
pub(crate) struct Schedule<'a> {
    pub times_of_day: &'a [String],
    pub interval: Duration,
    /// Stop after this many rounds (tests, one-shot runs).
    pub max_polls: Option<u32>,
}

/// Runs `poll` at start and then on `schedule` until shutdown (or `max_polls`). A failed round
/// is logged and reported (`PollFailed`) and tried again at the next scheduled time; it never
/// stops the source. A crashed round ends the source with a fatal error.
pub(crate) async fn run_schedule<T, F, Fut>(
    cx: &SourceContext<T>,
    kind: &'static str,
    schedule: Schedule<'_>,
    mut poll: F,
) -> Result<(), SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Round, PollError>>,
{
    let mut shutdown = cx.shutdown.clone();
    let mut poll_requests = cx.out.control().poll_requests();
    let mut polls = 0u32;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        // The first poll, too, waits while the pipeline is paused.
        if !cx.out.ready().await {
            break;
        }
        polls += 1;
        let started = std::time::Instant::now();
        match poll().await {
            Ok(Round::Crashed) => {
                return Err(SourceError {
                    kind: ErrorKind::Fatal,
                    detail: format!("{kind}: fault injection: crashed before the acknowledgements"),
                })
            }
            Ok(Round::Done { messages, acked }) => {
                tracing::info!(pipeline = %cx.pipeline, source = %cx.id, kind, messages, acked, ms = started.elapsed().as_millis() as u64, "Poll done.");
                cx.observers.emit(Event::Polled {
                    pipeline: &cx.pipeline,
                    component: &cx.id,
                    messages,
                });
            }
            Err(e) => {
                tracing::error!(pipeline = %cx.pipeline, source = %cx.id, kind, error = %e, "Poll failed; retrying at the next scheduled time.");
                cx.observers.emit(Event::PollFailed {
                    pipeline: &cx.pipeline,
                    component: &cx.id,
                    error: &e.0,
                });
            }
        }
        if schedule.max_polls.is_some_and(|m| polls >= m) {
            break;
        }
        let delay = next_delay(schedule.times_of_day, schedule.interval);
        if !super::wait_next_poll(delay, cx.out.control(), &mut poll_requests, &mut shutdown).await
        {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
