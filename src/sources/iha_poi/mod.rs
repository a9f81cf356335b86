//! `iha_poi`: Interior Health's POI lab pull (`poi/interface.aspx`, what Expedius does for IHA).
//!
//! **Wire contract** (CONTRACTS.md §11, read from Expedius): HTTPS `GET`s with the credentials
//! in the query string — `?usr=…&pwd=…&cmd=GETMESSAGE` answers
//! `<result><messages><message format="HL7" msgId="…" version="2.3"><![CDATA[MSH|…]]></message>…`
//! (an empty batch is an empty `<messages>`), and `?usr=…&pwd=…&cmd=ACKNOWLEDGE&msgid=…`
//! acknowledges **one message**. No client certificate is required; `trust_store` can pin the
//! server's CA (the system roots otherwise).
//!
//! **Nothing lost, nothing twice.** Every message is its own envelope with its own
//! acknowledgement: it is acknowledged to IHA only after it is committed or dead-lettered,
//! with its own `msgId`. An unacknowledged message is delivered again by IHA; the envelope is
//! the message's own bytes, so the import's MD5 check turns the re-delivery into a duplicate.
//! (Expedius' IHA parsing finds no message in IHA's real responses and re-uses the first id
//! for every ack; we parse the `message` elements themselves.)

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

/// One `<message>` of a POI response: its id and its HL7 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoiMessage {
    pub id: String,
    pub body: Bytes,
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The `<message msgId="…">` elements of a POI response. Content in CDATA sections is taken
/// as is; other text is entity-decoded.
pub fn parse_messages(xml: &str) -> Result<Vec<PoiMessage>, String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(p) = rest.find("<message") {
        let after = &rest[p + "<message".len()..];
        // `<messages>` is the container, not a message.
        if !after.starts_with([' ', '>', '\t', '\r', '\n', '/']) {
            rest = after;
            continue;
        }
        let tag_end = after.find('>').ok_or("unterminated <message> tag")?;
        let tag = &after[..tag_end];
        let id = attribute(tag, "msgId").ok_or("a <message> without msgId")?;
        if tag.ends_with('/') {
            out.push(PoiMessage {
                id,
                body: Bytes::new(),
            });
            rest = &after[tag_end + 1..];
            continue;
        }
        let content_start = &after[tag_end + 1..];
        let close = content_start
            .find("</message>")
            .ok_or("unterminated <message> element")?;
        let content = &content_start[..close];
        let mut body = String::new();
        let mut c = content;
        while !c.is_empty() {
            match c.find("<![CDATA[") {
                Some(i) => {
                    body.push_str(&unescape_xml(&c[..i]));
                    let inner = &c[i + 9..];
                    let end = inner.find("]]>").ok_or("unterminated CDATA")?;
                    body.push_str(&inner[..end]);
                    c = &inner[end + 3..];
                }
                None => {
                    body.push_str(&unescape_xml(c));
                    c = "";
                }
            }
        }
        let body = body.trim_matches(|ch: char| ch.is_whitespace()).to_string();
        out.push(PoiMessage {
            id,
            body: Bytes::from(body),
        });
        rest = &content_start[close + "</message>".len()..];
    }
    Ok(out)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(p) = tag[from..].find(&key) {
        let p = from + p;
        if tag[..p].ends_with(char::is_whitespace) {
            let v = &tag[p + key.len()..];
            let q = v.chars().next()?;
            if q == '"' || q == '\'' {
                let v = &v[1..];
                return Some(unescape_xml(&v[..v.find(q)?]));
            }
        }
        from = p + key.len();
    }
    None
}

pub use super::CrashHook;

/// The source.
pub struct IhaPoiSource {
    cfg: IhaPoiConfig,
    crash_before_ack: Option<CrashHook>,
    max_polls: Option<u32>,
}

impl IhaPoiSource {
    pub fn new(cfg: IhaPoiConfig) -> Self {
        Self {
            cfg,
            crash_before_ack: None,
            max_polls: None,
        }
    }
    pub fn with_crash_before_ack(mut self, hook: CrashHook) -> Self {
        self.crash_before_ack = Some(hook);
        self
    }
    pub fn with_max_polls(mut self, n: u32) -> Self {
        self.max_polls = Some(n);
        self
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        step: &str,
        cmd: &[(&str, &str)],
    ) -> Result<Bytes, PollError> {
        let user = env_secret(&self.cfg.user_env)?;
        let pass = env_secret(&self.cfg.password_env)?;
        let mut u = url::Url::parse(&self.cfg.url).map_err(|e| PollError(format!("url: {e}")))?;
        u.query_pairs_mut()
            .clear()
            .append_pair("usr", &user)
            .append_pair("pwd", &pass)
            .extend_pairs(cmd);
        get_bytes(client, u, step, self.cfg.max_input_bytes).await
    }

    /// One poll: fetch, hand every message over, acknowledge each settled one.
    async fn poll(&self, cx: &SourceContext, tls: &Tls) -> Result<Round, PollError> {
        let client = https_client(tls, self.cfg.timeout)?;
        let host = url::Url::parse(&self.cfg.url)
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_default();
        let body = self.get(&client, "fetch", &[("cmd", "GETMESSAGE")]).await?;
        let messages = parse_messages(&String::from_utf8_lossy(&body))
            .map_err(|e| PollError(format!("fetch: the answer is not a POI message list: {e}")))?;
        let batch = ulid::Ulid::new().to_string();
        let mut waits = Vec::new();
        for (index, m) in messages.iter().enumerate() {
            let prov = cx.stamp("iha_poi").received(
                Origin::Pull {
                    host: host.clone(),
                    batch: batch.clone(),
                    index: index as u32,
                },
                &m.body,
                m.body.len(),
            );
            let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
            let env = Envelope::new(
                prov.clone(),
                Raw {
                    name: format!("iha-poi-{}.hl7", &prov.sha256_hex()[..16]),
                    bytes: m.body.clone(),
                    lab_type: Some(self.cfg.lab_type),
                },
                notifier.token(),
            );
            drop(notifier);
            if let Err(e) = cx.out.send(env).await {
                // Nothing of this poll is acknowledged; it all comes again at the next poll.
                return Err(PollError(match e {
                    SendError::Closed => "the pipeline stopped".into(),
                    SendError::Archive(e) => format!("{e}; kept for the next poll"),
                }));
            }
            waits.push((m.id.clone(), prov, receiver));
        }
        let total = waits.len() as u32;
        let mut acked = 0u32;
        let mut crashed = false;
        for (id, prov, receiver) in waits {
            let status = receiver.wait().await;
            let mut released = false;
            if status.may_release() && !crashed {
                if self.crash_before_ack.as_ref().is_some_and(|h| h()) {
                    crashed = true;
                } else if self.cfg.acknowledge {
                    match self
                        .get(
                            &client,
                            "acknowledge",
                            &[("cmd", "ACKNOWLEDGE"), ("msgid", &id)],
                        )
                        .await
                    {
                        Ok(_) => {
                            released = true;
                            acked += 1;
                        }
                        Err(e) => {
                            cx.observers.emit(Event::ReleaseFailed {
                                prov: &prov,
                                error: &e.0,
                            });
                        }
                    }
                }
            }
            cx.observers.emit(Event::Settled {
                prov: &prov,
                status,
                released,
            });
        }
        Ok(if crashed {
            Round::Crashed
        } else {
            Round::Done {
                messages: total,
                acked,
            }
        })
    }
}

#[async_trait]
impl Source for IhaPoiSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let tls =
            load_tls_files(None, None, self.cfg.trust_store.as_deref()).map_err(|detail| {
                SourceError {
                    kind: ErrorKind::Fatal,
                    detail: format!("iha_poi: {detail}"),
                }
            })?;
        let schedule = Schedule {
            times_of_day: &self.cfg.times_of_day,
            interval: self.cfg.poll_interval,
            max_polls: self.max_polls,
        };
        run_schedule(&cx, "iha_poi", schedule, || self.poll(&cx, &tls)).await
    }
}

impl super::Polling for IhaPoiSource {
    fn with_max_polls(self, n: u32) -> Self {
        IhaPoiSource::with_max_polls(self, n)
    }
}

impl super::SourceComponent for IhaPoiConfig {
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
            IhaPoiSource::new(self.clone()),
            cx,
        ))
    }
    fn consumes(&self) -> (&'static str, String) {
        super::account("POI account", &self.url, &self.user_env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_message_elements_with_ids_and_cdata() {
        let xml = "<?xml version=\"1.0\"?>\n<result xmlns:xsd=\"x\"><messages><message format=\"HL7\" msgId=\"LAB1.hl7\" version=\"2.3\"><![CDATA[MSH|^~\\&|A\nPID|1]]></message>\n<message format=\"HL7\" msgId=\"LAB2.hl7\">MSH|^~\\&amp;|B</message></messages></result>";
        let m = parse_messages(xml).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, "LAB1.hl7");
        assert_eq!(&m[0].body[..], b"MSH|^~\\&|A\nPID|1");
        assert_eq!(&m[1].body[..], b"MSH|^~\\&|B");
        assert!(
            parse_messages("<result><messages>\n \n</messages></result>")
                .unwrap()
                .is_empty()
        );
        assert!(parse_messages("<result><messages><message format=\"HL7\">x</message>").is_err());
    }
}
