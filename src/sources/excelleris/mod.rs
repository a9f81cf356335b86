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

use async_trait::async_trait;
use bytes::Bytes;

use super::pull::{
    env_secret, get_bytes, https_client, load_tls_files, run_schedule, PollError, Round, Schedule,
    Tls,
};
use super::{SendError, Source, SourceContext, SourceError};
use crate::ack::BatchNotifier;
use crate::envelope::{Envelope, Origin, Raw};
use crate::error::ErrorKind;
use crate::telemetry::Event;

mod config;
pub use config::*;

fn load_tls(cfg: &ExcellerisConfig) -> Result<Tls, String> {
    load_tls_files(
        Some(&cfg.client_identity),
        cfg.client_identity_password_env.as_ref(),
        Some(&cfg.trust_store),
    )
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

pub use super::CrashHook;

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

struct Session {
    client: reqwest::Client,
    base: url::Url,
    /// The largest answer read (`max_input_bytes`).
    limit: usize,
}

impl Session {
    async fn get(&self, step: &str, query: &[(&str, &str)]) -> Result<Bytes, PollError> {
        let mut u = self.base.clone();
        if !query.is_empty() {
            u.query_pairs_mut().clear().extend_pairs(query);
        }
        get_bytes(&self.client, u, step, self.limit).await
    }
}

impl ExcellerisSource {
    fn client(&self, tls: &Tls) -> Result<reqwest::Client, PollError> {
        https_client(tls, self.cfg.timeout)
    }

    /// One session: handshake, login, fetch, hand the messages to the pipeline, ack, logout.
    async fn poll(&self, cx: &SourceContext, tls: &Tls) -> Result<Round, PollError> {
        let base = url::Url::parse(&self.cfg.url).map_err(|e| PollError(format!("url: {e}")))?;
        let host = base.host_str().unwrap_or("").to_string();
        let user = env_secret(&self.cfg.user_env)?;
        let password = env_secret(&self.cfg.password_env)?;
        let s = Session {
            client: self.client(tls)?,
            base,
            limit: self.cfg.max_input_bytes,
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
    ) -> Result<Round, PollError> {
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
            return Ok(Round::Done {
                messages: 0,
                acked: 0,
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
            let prov = cx.stamp("excelleris").received(
                Origin::Pull {
                    host: host.to_string(),
                    batch: batch.clone(),
                    index,
                },
                &wrapped,
                wrapped.len(),
            );
            let env = Envelope::new(
                prov.clone(),
                Raw {
                    name: format!("excelleris-{}.xml", &prov.sha256_hex()[..16]),
                    bytes: wrapped,
                    lab_type: Some(self.cfg.lab_type),
                },
                notifier.token(),
            );
            provs.push(prov);
            if let Err(e) = cx.out.send(env).await {
                drop(notifier);
                let _ = receiver.wait().await;
                return Err(PollError(match e {
                    SendError::Closed => {
                        "the pipeline stopped before the batch was handed over".into()
                    }
                    SendError::Archive(e) => format!(
                        "{e}; the batch is not acknowledged and comes again at the next poll"
                    ),
                }));
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
            return Ok(Round::Crashed);
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
        Ok(Round::Done {
            messages: total,
            acked: if acked { total } else { 0 },
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
        let schedule = Schedule {
            times_of_day: &self.cfg.times_of_day,
            interval: self.cfg.poll_interval,
            max_polls: self.max_polls,
        };
        run_schedule(&cx, "excelleris", schedule, || self.poll(&cx, &tls)).await
    }
}

impl super::Polling for ExcellerisSource {
    fn with_max_polls(self, n: u32) -> Self {
        ExcellerisSource::with_max_polls(self, n)
    }
}

impl super::SourceComponent for ExcellerisConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Raw
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.env_refs()
    }
    fn fixed_lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        Some(self.lab_type)
    }
    fn build(
        &self,
        cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        Ok(super::polling::<crate::envelope::Raw, _>(
            ExcellerisSource::new(self.clone()),
            cx,
        ))
    }
    fn consumes(&self) -> (&'static str, String) {
        super::account("Excelleris account", &self.url, &self.user_env)
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
}
