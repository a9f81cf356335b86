//! A faithful emulator of the Excelleris `hl7pull.aspx` service (CONTRACTS.md §11, from
//! Expedius), for tests: HTTPS with **mutual TLS** on loopback (test certificates made here
//! with OpenSSL: a server CA, a client CA, and a stranger CA for wrong certificates), a
//! session cookie, silent login, `NewRequests` serving real pull responses (e.g.
//! `../shared/corpus/public/expedius/excelleris_qa.xml`) byte for byte, `ACK=Positive`
//! removing the last delivered batch (an un-acked batch is delivered again), logout, request
//! recording, and faults on demand.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use tokio::net::TcpListener;

pub const USER: &str = "clinic1";
pub const PASSWORD: &str = "p@ss word&=?";

/// A certificate and its key.
pub struct Cert {
    pub cert: X509,
    pub key: PKey<Private>,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.append_entry_by_text("O", "oscarflow test").unwrap();
    n.build()
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

/// A self-signed CA.
pub fn ca(cn: &str) -> Cert {
    let key = key();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_issuer_name(&name(cn)).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Cert {
        cert: b.build(),
        key,
    }
}

/// A leaf certificate signed by `issuer`: a server (localhost, 127.0.0.1) or a client.
pub fn leaf(cn: &str, issuer: &Cert, server: bool) -> Cert {
    let key = key();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()
            .unwrap(),
    )
    .unwrap();
    if server {
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&issuer.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
    } else {
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
    }
    b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
    Cert {
        cert: b.build(),
        key,
    }
}

/// Writes `cert` (+ chain) and key as one PEM file (PKCS#8 key).
pub fn write_pem_identity(path: &Path, c: &Cert, chain: &[&X509]) {
    let mut out = c.cert.to_pem().unwrap();
    for x in chain {
        out.extend(x.to_pem().unwrap());
    }
    out.extend(c.key.private_key_to_pem_pkcs8().unwrap());
    std::fs::write(path, out).unwrap();
}

/// Writes a PKCS#12 file protected by `password`.
pub fn write_p12_identity(path: &Path, c: &Cert, chain: &[&X509], password: &str) {
    let mut stack = openssl::stack::Stack::new().unwrap();
    for x in chain {
        stack.push((*x).clone()).unwrap();
    }
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name("excelleris-client")
        .pkey(&c.key)
        .cert(&c.cert)
        .ca(stack)
        .build2(password)
        .unwrap();
    std::fs::write(path, p12.to_der().unwrap()).unwrap();
}

/// What the emulator saw and what it will do next.
#[derive(Default)]
pub struct State {
    /// Batches to deliver; the front one is delivered until acknowledged.
    pub batches: VecDeque<Bytes>,
    /// Sessions with a cookie; those that logged in.
    sessions: HashSet<String>,
    logged_in: HashSet<String>,
    /// Session that fetched the front batch (only it may acknowledge it).
    delivered_to: Option<String>,
    /// Every request: (page, outcome), without credentials.
    pub log: Vec<String>,
    pub fetches: usize,
    pub acks: usize,
    pub logins: usize,
    /// Faults: the next fetch answers HTTP 500; the next ack answers ReturnCode 1.
    pub fail_next_fetch: bool,
    pub refuse_next_ack: bool,
}

/// Called when an ack arrives, before it is answered (tests check the database there).
pub type AckGate = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A running emulator.
pub struct Emulator {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub dir: PathBuf,
    /// PEM of the CA that signed the server certificate (the client's trust store).
    pub server_ca_pem: PathBuf,
    /// A good client identity, as PEM and as PKCS#12 (password [`P12_PASSWORD`]).
    pub client_pem: PathBuf,
    pub client_p12: PathBuf,
    /// A client identity signed by a CA the server does not trust.
    pub stranger_pem: PathBuf,
    /// A trust store that does not hold the server's CA.
    pub wrong_trust_pem: PathBuf,
    pub ack_gate: Arc<Mutex<Option<AckGate>>>,
}

pub const P12_PASSWORD: &str = "test-p12";

const EMPTY_BATCH: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HL7Messages MessageFormat=\"ORUR01\" MessageCount=\"0\" Version=\"2.3\"></HL7Messages>";

impl Emulator {
    pub fn url(&self) -> String {
        format!("https://localhost:{}/hl7pull.aspx", self.addr.port())
    }

    pub fn push_batch(&self, body: impl Into<Bytes>) {
        self.state.lock().unwrap().batches.push_back(body.into());
    }

    pub fn snapshot(&self) -> (usize, usize, usize, Vec<String>) {
        let s = self.state.lock().unwrap();
        (s.fetches, s.acks, s.logins, s.log.clone())
    }

    /// Starts the emulator with fresh certificates under `dir`.
    pub async fn start(dir: &Path) -> Emulator {
        let server_ca = ca("Test Excelleris Server CA");
        let client_ca = ca("Test Excelleris Client CA");
        let stranger_ca = ca("Stranger CA");
        let server = leaf("localhost", &server_ca, true);
        let client = leaf("clinic1", &client_ca, false);
        let stranger = leaf("clinic1", &stranger_ca, false);
        let p = |n: &str| dir.join(n);
        std::fs::write(p("server-ca.pem"), server_ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(p("wrong-trust.pem"), stranger_ca.cert.to_pem().unwrap()).unwrap();
        write_pem_identity(&p("client.pem"), &client, &[&client_ca.cert]);
        write_p12_identity(&p("client.p12"), &client, &[&client_ca.cert], P12_PASSWORD);
        write_pem_identity(&p("stranger.pem"), &stranger, &[&stranger_ca.cert]);

        let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acc.set_private_key(&server.key).unwrap();
        acc.set_certificate(&server.cert).unwrap();
        acc.add_extra_chain_cert(server_ca.cert.clone()).unwrap();
        acc.cert_store_mut()
            .add_cert(client_ca.cert.clone())
            .unwrap();
        acc.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = Arc::new(acc.build());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let ack_gate: Arc<Mutex<Option<AckGate>>> = Arc::new(Mutex::new(None));
        let (st, gate) = (state.clone(), ack_gate.clone());
        let log = st.clone();
        super::http_emu::serve(
            listener,
            Some(acceptor),
            Arc::new(move || log.lock().unwrap().log.push("tls handshake refused".into())),
            move |req| handle(st.clone(), gate.clone(), req),
        );
        Emulator {
            addr,
            state,
            dir: dir.to_path_buf(),
            server_ca_pem: p("server-ca.pem"),
            client_pem: p("client.pem"),
            client_p12: p("client.p12"),
            stranger_pem: p("stranger.pem"),
            wrong_trust_pem: p("wrong-trust.pem"),
            ack_gate,
        }
    }
}

fn reply(
    status: StatusCode,
    body: impl Into<Bytes>,
    cookie: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(status)
        .header("Content-Type", "text/xml; charset=utf-8");
    if let Some(c) = cookie {
        r = r.header(
            "Set-Cookie",
            format!("ASP.NET_SessionId={c}; path=/; HttpOnly"),
        );
    }
    r.body(Full::new(body.into())).unwrap()
}

async fn handle(
    st: Arc<Mutex<State>>,
    gate: Arc<Mutex<Option<AckGate>>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let q = super::http_emu::query_pairs(&req);
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let session = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("ASP.NET_SessionId="))
        .map(String::from)
        .next();
    if req.method() != hyper::Method::GET || !req.uri().path().eq_ignore_ascii_case("/hl7pull.aspx")
    {
        return reply(StatusCode::NOT_FOUND, "not found", None);
    }
    // Handshake: no query → a new session.
    if q.is_empty() {
        let id = ulid::Ulid::new().to_string();
        let mut s = st.lock().unwrap();
        s.sessions.insert(id.clone());
        s.log.push("handshake".into());
        return reply(
            StatusCode::OK,
            "<html><body>hl7pull</body></html>",
            Some(&id),
        );
    }
    let known = session
        .as_ref()
        .is_some_and(|c| st.lock().unwrap().sessions.contains(c));
    if get("Logout").is_some() {
        let mut s = st.lock().unwrap();
        if let Some(c) = &session {
            s.logged_in.remove(c);
        }
        s.log.push("logout".into());
        // Expedius: "Excelleris returns an invalid response" here.
        return reply(StatusCode::OK, "<html>Logged out", None);
    }
    match get("Page").as_deref() {
        Some(p) if p.eq_ignore_ascii_case("Login") => {
            let mut s = st.lock().unwrap();
            s.logins += 1;
            let ok = known
                && get("Mode").as_deref() == Some("Silent")
                && get("UserID").as_deref() == Some(USER)
                && get("Password").as_deref() == Some(PASSWORD);
            s.log
                .push(format!("login {}", if ok { "granted" } else { "denied" }));
            if ok {
                s.logged_in.insert(session.clone().unwrap());
                reply(
                    StatusCode::OK,
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Result>AccessGranted</Result>",
                    None,
                )
            } else {
                reply(
                    StatusCode::OK,
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Result>AccessDenied</Result>",
                    None,
                )
            }
        }
        Some(p) if p.eq_ignore_ascii_case("HL7") => {
            let logged_in = session
                .as_ref()
                .is_some_and(|c| st.lock().unwrap().logged_in.contains(c));
            if !logged_in {
                st.lock().unwrap().log.push("hl7 without login".into());
                return reply(StatusCode::UNAUTHORIZED, "not logged in", None);
            }
            if get("Query").is_some_and(|v| v.eq_ignore_ascii_case("NewRequests")) {
                let mut s = st.lock().unwrap();
                s.fetches += 1;
                if std::mem::take(&mut s.fail_next_fetch) {
                    s.log.push("fetch failed (fault)".into());
                    return reply(StatusCode::INTERNAL_SERVER_ERROR, "server error", None);
                }
                let body = s.batches.front().cloned();
                s.delivered_to = body.as_ref().and(session.clone());
                s.log.push(format!(
                    "fetch {}",
                    if body.is_some() { "batch" } else { "empty" }
                ));
                return reply(
                    StatusCode::OK,
                    body.unwrap_or_else(|| Bytes::from_static(EMPTY_BATCH.as_bytes())),
                    None,
                );
            }
            if get("ACK").is_some_and(|v| v.eq_ignore_ascii_case("Positive")) {
                let g = gate.lock().unwrap().clone();
                if let Some(g) = g {
                    g().await;
                }
                let mut s = st.lock().unwrap();
                if std::mem::take(&mut s.refuse_next_ack) {
                    s.log.push("ack refused (fault)".into());
                    return reply(StatusCode::OK, "<?xml version=\"1.0\"?>\n<Acknowledgement ReturnCode=\"1\">Error</Acknowledgement>", None);
                }
                if s.delivered_to.is_some() && s.delivered_to == session {
                    s.batches.pop_front();
                    s.delivered_to = None;
                }
                s.acks += 1;
                s.log.push("ack".into());
                return reply(StatusCode::OK, "<?xml version=\"1.0\"?>\n<Acknowledgement ReturnCode=\"0\">All Labs Acknowledged</Acknowledgement>", None);
            }
            reply(StatusCode::BAD_REQUEST, "bad request", None)
        }
        _ => reply(StatusCode::BAD_REQUEST, "bad request", None),
    }
}
