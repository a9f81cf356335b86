//! An emulator of Interior Health's POI `interface.aspx` pull (CONTRACTS.md §11, from
//! Expedius), for tests: HTTPS on loopback (server certificate only), credentials in the
//! query string, `cmd=GETMESSAGE` answering with the not-yet-acknowledged messages of a real
//! response (e.g. `../shared/corpus/public/expedius/iha_poi_hl7_test.xml`, served byte for
//! byte while nothing is acknowledged), and `cmd=ACKNOWLEDGE&msgid=…` removing one message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use openssl::ssl::{SslAcceptor, SslMethod};
use tokio::net::TcpListener;

use super::excelleris_emulator::{ca, leaf};

pub const USER: &str = "poiclinic";
pub const PASSWORD: &str = "poi pass&1";

/// The emulator's state.
#[derive(Default)]
pub struct State {
    /// The original response and its message elements (id, element text).
    original: String,
    head: String,
    tail: String,
    messages: Vec<(String, String)>,
    pub acked: Vec<String>,
    pub fetches: usize,
    pub log: Vec<String>,
}

pub struct PoiEmulator {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub ca_pem: PathBuf,
}

/// Splits a POI response into (text before the first message, message elements with ids,
/// text after the last).
fn split(doc: &str) -> (String, Vec<(String, String)>, String) {
    let mut messages = Vec::new();
    let mut rest = doc;
    let mut head = None;
    let mut consumed = 0;
    while let Some(p) = rest.find("<message ") {
        let start = consumed + p;
        let end_rel = rest[p..].find("</message>").expect("closed") + p + "</message>".len();
        let element = &rest[p..end_rel];
        let id_at = element.find("msgId=\"").expect("msgId") + 7;
        let id = element[id_at..id_at + element[id_at..].find('"').unwrap()].to_string();
        if head.is_none() {
            head = Some(doc[..start].to_string());
        }
        messages.push((id, element.to_string()));
        consumed += end_rel;
        rest = &rest[end_rel..];
    }
    let head = head.unwrap_or_else(|| doc.to_string());
    let tail = if messages.is_empty() {
        String::new()
    } else {
        doc[consumed..].to_string()
    };
    (head, messages, tail)
}

impl PoiEmulator {
    pub fn url(&self) -> String {
        format!("https://localhost:{}/poi/interface.aspx", self.addr.port())
    }

    pub fn message_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|(i, _)| i.clone())
            .collect()
    }

    pub async fn start(dir: &Path, response: &str) -> PoiEmulator {
        let server_ca = ca("Test IHA CA");
        let server = leaf("localhost", &server_ca, true);
        let ca_pem = dir.join("poi-ca.pem");
        std::fs::write(&ca_pem, server_ca.cert.to_pem().unwrap()).unwrap();
        let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acc.set_private_key(&server.key).unwrap();
        acc.set_certificate(&server.cert).unwrap();
        let acceptor = Arc::new(acc.build());
        let (head, messages, tail) = split(response);
        let state = Arc::new(Mutex::new(State {
            original: response.to_string(),
            head,
            tail,
            messages,
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        super::http_emu::serve(listener, Some(acceptor), Arc::new(|| {}), move |req| {
            let st = st.clone();
            async move { handle(st, req) }
        });
        PoiEmulator {
            addr,
            state,
            ca_pem,
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap()
}

fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let q = super::http_emu::query_pairs(&req);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if req.uri().path() != "/poi/interface.aspx" {
        return reply(StatusCode::NOT_FOUND, "not found");
    }
    if get("usr").as_deref() != Some(USER) || get("pwd").as_deref() != Some(PASSWORD) {
        st.lock().unwrap().log.push("unauthorized".into());
        return reply(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut s = st.lock().unwrap();
    match get("cmd").as_deref() {
        Some("GETMESSAGE") => {
            s.fetches += 1;
            s.log.push("fetch".into());
            if s.acked.is_empty() {
                return reply(StatusCode::OK, s.original.clone());
            }
            let mut doc = s.head.clone();
            for (_, m) in &s.messages {
                doc.push_str(m);
            }
            doc.push_str(&s.tail);
            reply(StatusCode::OK, doc)
        }
        Some("ACKNOWLEDGE") => {
            let Some(id) = get("msgid") else {
                return reply(StatusCode::BAD_REQUEST, "msgid required");
            };
            let before = s.messages.len();
            s.messages.retain(|(i, _)| *i != id);
            let found = s.messages.len() < before;
            s.acked.push(id);
            s.log
                .push(format!("ack {}", if found { "ok" } else { "unknown" }));
            reply(StatusCode::OK, "<result><status>OK</status></result>")
        }
        _ => reply(StatusCode::BAD_REQUEST, "unknown cmd"),
    }
}
