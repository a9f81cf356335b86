//! Alerts end to end: the daemon (`oscarflow run`) with an `[alerts]` table sends its
//! notices to a real SMTP server (aiosmtpd from PyPI, with a login), to a webhook receiver
//! and, as texts, to the RingCentral emulator — all on loopback, started here.
//!
//! - a source failing past `unready_after` sends exactly one alert and, once it polls
//!   again, exactly one recovery notice, by every notifier;
//! - 50 dead letters in a minute are one digest, counted by pipeline and reason;
//! - a client certificate expiring in 10 days makes `check` warn and sends one alert; a
//!   webhook that fails is retried, named by `/readyz` and counted until it delivers;
//! - nothing sent holds a fixture patient's name, health number or birth date.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::excelleris_emulator::{Emulator, PASSWORD, USER};
use common::rc_emulator::RcEmulator;
use common::{bin, free_port, http_request, pypi_program, repo};

/// The SMTP server: aiosmtpd with a login (over plain SMTP on loopback), writing each
/// message it takes to `<dir>/NNNN.eml`.
const SMTP_SERVER: &str = r#"
import itertools, os, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
numbers = itertools.count()

class Handler:
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(out, "%04d.eml" % next(numbers))
        with open(path + ".part", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".part", path)
        return "250 OK"

def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok)

c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticate,
               auth_required=True, auth_require_tls=False)
c.start()
print("ready", flush=True)
threading.Event().wait()
"#;

const SMTP_USER: &str = "alerts@clinic.test";
const SMTP_PASSWORD: &str = "smtp-test-secret-41";

/// A running SMTP server and the folder of what it received.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    /// `None` outside CI when aiosmtpd cannot be installed.
    fn start() -> Option<Smtp> {
        let program = pypi_program("aiosmtpd-venv", "aiosmtpd==1.4.6", "aiosmtpd")?;
        let python = program.with_file_name("python");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SMTP_SERVER).unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        let port = free_port();
        let mut child = Command::new(python)
            .args(["-W", "ignore"])
            .arg(&script)
            .arg(&mail)
            .arg(port.to_string())
            .args([SMTP_USER, SMTP_PASSWORD])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Some(Smtp { child, port, dir })
    }

    /// Every message received so far, headers unfolded.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                String::from_utf8_lossy(&std::fs::read(p).unwrap())
                    .replace("\r\n", "\n")
                    .replace("\n ", " ")
                    .replace("\n\t", " ")
            })
            .collect()
    }

    /// The `[alerts.email]` table for this server (the login in the daemon's environment).
    fn toml(&self) -> String {
        format!(
            "[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername_env = \"OSCARFLOW_T_AL_SMTP_USER\"\npassword_env = \"OSCARFLOW_T_AL_SMTP_PASSWORD\"\nfrom = \"oscarflow <oscarflow@clinic.test>\"\nto = [\"oncall@clinic.test\"]\n",
            self.port
        )
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SMTP_ENV: [(&str, &str); 2] = [
    ("OSCARFLOW_T_AL_SMTP_USER", SMTP_USER),
    ("OSCARFLOW_T_AL_SMTP_PASSWORD", SMTP_PASSWORD),
];

/// A webhook receiver: keeps each POSTed JSON body; answers 503 while `failing`.
#[derive(Clone)]
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    refused: Arc<Mutex<usize>>,
    failing: Arc<AtomicBool>,
}

impl Hook {
    fn start() -> Hook {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hook = Hook {
            port: listener.local_addr().unwrap().port(),
            bodies: Arc::default(),
            refused: Arc::default(),
            failing: Arc::default(),
        };
        let h = hook.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                h.answer(conn);
            }
        });
        hook
    }

    fn answer(&self, conn: std::net::TcpStream) {
        let mut r = BufReader::new(conn);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let status = if self.failing.load(Ordering::SeqCst) {
            *self.refused.lock().unwrap() += 1;
            "503 Service Unavailable"
        } else {
            let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            self.bodies.lock().unwrap().push(v);
            "200 OK"
        };
        let mut conn = r.into_inner();
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    fn toml(&self) -> String {
        format!(
            "[alerts.webhook]\nurl = \"http://127.0.0.1:{}/hooks/oscarflow\"\n",
            self.port
        )
    }
}

/// `oscarflow run` with `pipelines` (file name, text) and `config`, the endpoint on `port`.
fn daemon(
    dir: &Path,
    port: u16,
    pipelines: &[(&str, String)],
    config: &str,
    env: &[(&str, &str)],
) -> Child {
    let p = dir.join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    for (name, text) in pipelines {
        std::fs::write(p.join(name), text).unwrap();
    }
    let cfg = dir.join("oscarflow.toml");
    std::fs::write(&cfg, config).unwrap();
    Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--pipelines")
        .arg(&p)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("OSCARFLOW_DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit code and the logs.
fn stop(mut child: Child) -> (Option<i32>, String) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// Polls `f` every 100 ms for up to 90 s.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The webhook bodies of `state` for alert `key`.
fn hooked(hook: &Hook, key: &str, state: &str) -> usize {
    hook.bodies()
        .iter()
        .filter(|b| b["oscarflow"]["key"] == key && b["oscarflow"]["state"] == state)
        .count()
}

/// Mails whose subject is tagged `tag` (`ALERT`, `RECOVERED`, `DIGEST`) and whose text
/// holds `about`.
fn mailed(smtp: &Smtp, tag: &str, about: &str) -> usize {
    smtp.messages()
        .iter()
        .filter(|m| m.contains(&format!("Subject: [oscarflow {tag}]")) && m.contains(about))
        .count()
}

fn excelleris_pipeline(url: &str, identity: &Path, trust: &Path, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"labs\"\n{extra}[sources.pull]\ntype = \"excelleris\"\nurl = \"{url}\"\nuser_env = \"OSCARFLOW_T_AL_XL_USER\"\npassword_env = \"OSCARFLOW_T_AL_XL_PASSWORD\"\nclient_identity = \"{}\"\ntrust_store = \"{}\"\npoll_interval = \"1s\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"pull\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
        identity.display(),
        trust.display()
    )
}

const XL_ENV: [(&str, &str); 2] = [
    ("OSCARFLOW_T_AL_XL_USER", USER),
    ("OSCARFLOW_T_AL_XL_PASSWORD", PASSWORD),
];

/// Names, health numbers and birth dates of every fixture lab's patients.
fn fixture_phi() -> BTreeSet<String> {
    let mut tokens = BTreeSet::new();
    for f in glob::glob(&format!("{}/fixtures/hl7/*/*.hl7", repo().display())).unwrap() {
        common::phi::patient_tokens(&std::fs::read(f.unwrap()).unwrap(), &mut tokens);
    }
    assert!(tokens.len() > 10, "the fixtures have patients: {tokens:?}");
    tokens
}

/// Nothing sent by any notifier holds a fixture patient's data.
fn assert_no_phi(smtp: &Smtp, hook: &Hook, texts: &[String]) {
    let phi = fixture_phi();
    let mut sent: Vec<String> = smtp.messages();
    sent.extend(hook.bodies().iter().map(|b| b.to_string()));
    sent.extend(texts.iter().cloned());
    assert!(!sent.is_empty());
    for s in &sent {
        for t in &phi {
            assert!(
                !s.contains(t.as_str()),
                "a notice holds patient data `{t}`: {s}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_past_unready_after_sends_one_alert_and_one_recovery_notice() {
    let Some(smtp) = Smtp::start() else { return };
    let hook = Hook::start();
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(tmp.path()).await;
    let gate = common::gate::Gate::start(emu.addr, false).await;
    let rc = RcEmulator::start().await;
    let rc_toml = rc.ringcentral_toml("ALSMS", (10, "1m"));
    let port = free_port();
    let pipeline = excelleris_pipeline(
        &format!("https://localhost:{}/hl7pull.aspx", gate.port),
        &emu.client_pem,
        &emu.server_ca_pem,
        "unready_after = \"1s\"\n",
    );
    let config = format!(
        "[alerts]\nevaluate_every = \"200ms\"\nresolve_after = \"1s\"\ncertificate_warning = \"1d\"\n[alerts.rules]\ndisk = false\n{}{}[alerts.sms]\nfrom = \"+16045550100\"\nto = [\"+16045550199\"]\n[alerts.sms.ringcentral]\n{rc_toml}",
        smtp.toml(),
        hook.toml()
    );
    let env: Vec<(&str, &str)> = SMTP_ENV.iter().chain(XL_ENV.iter()).copied().collect();
    let child = daemon(tmp.path(), port, &[("labs.toml", pipeline)], &config, &env);
    let key = "source_failing:labs/pull";

    // The gate is closed: every poll fails; past unready_after, the alert.
    wait_for("the alert by webhook", || {
        (hooked(&hook, key, "firing") > 0).then_some(())
    })
    .await;
    wait_for("the alert by e-mail", || {
        (mailed(&smtp, "ALERT", "source pull") > 0).then_some(())
    })
    .await;
    wait_for("the alert by text", || {
        (!rc.state.lock().unwrap().sms.is_empty()).then_some(())
    })
    .await;
    let readyz = http_request("GET", port, "/readyz", None).unwrap();
    assert!(readyz.1.contains("source pull failing"), "{readyz:?}");

    // The source polls again: one recovery notice.
    gate.open.send(true).unwrap();
    wait_for("the recovery by webhook", || {
        (hooked(&hook, key, "resolved") > 0).then_some(())
    })
    .await;
    wait_for("the recovery by e-mail", || {
        (mailed(&smtp, "RECOVERED", "source pull") > 0).then_some(())
    })
    .await;
    wait_for("the recovery by text", || {
        (rc.state.lock().unwrap().sms.len() >= 2).then_some(())
    })
    .await;
    // A few more rounds: nothing else about it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooked(&hook, key, "firing"), 1, "{:?}", hook.bodies());
    assert_eq!(hooked(&hook, key, "resolved"), 1, "{:?}", hook.bodies());
    assert_eq!(mailed(&smtp, "ALERT", "source pull"), 1);
    assert_eq!(mailed(&smtp, "RECOVERED", "source pull"), 1);
    let texts: Vec<(String, String)> = rc
        .state
        .lock()
        .unwrap()
        .sms
        .iter()
        .map(|m| (m.to.clone(), m.text.clone()))
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts.iter().all(|(to, _)| to == "+16045550199"),
        "{texts:?}"
    );
    assert!(
        texts[0].1.contains("ALERT") && texts[1].1.contains("RECOVERED"),
        "{texts:?}"
    );

    // The notice says what, where, and links to the console.
    let alert = hook
        .bodies()
        .into_iter()
        .find(|b| b["oscarflow"]["key"] == key)
        .unwrap();
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("pipeline labs: source pull has failed its polls"),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/console/pipelines")),
        "{text}"
    );
    assert_eq!(alert["oscarflow"]["details"]["source"], "pull");
    let mail = smtp.messages().join("\n");
    assert!(
        mail.contains("From: oscarflow <oscarflow@clinic.test>"),
        "{mail}"
    );
    assert!(mail.contains("To: oncall@clinic.test"), "{mail}");

    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        !logs.contains(SMTP_PASSWORD),
        "the SMTP password is never logged"
    );
    let texts: Vec<String> = texts.into_iter().map(|(_, t)| t).collect();
    assert_no_phi(&smtp, &hook, &texts);
    println!(
        "alerts: source failing past unready_after: webhook firing 1, resolved 1; e-mail ALERT 1, RECOVERED 1; texts 2; patient data in them: none"
    );
}

/// A fixture lab whose MSH is broken: the parse stage dead-letters it whole (its bytes hold
/// the patient's PID).
fn broken_lab(i: usize) -> Vec<u8> {
    let fixtures: Vec<PathBuf> = glob::glob(&format!("{}/fixtures/hl7/*/*.hl7", repo().display()))
        .unwrap()
        .map(|p| p.unwrap())
        .collect();
    let f = &fixtures[i % fixtures.len()];
    let rel = f
        .strip_prefix(repo())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let text = String::from_utf8(common::variant(&rel, i)).unwrap();
    text.replace("MSH|", "MSX|").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_dead_letters_in_a_minute_send_one_digest_without_a_message_body() {
    let Some(smtp) = Smtp::start() else { return };
    let hook = Hook::start();
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let pipeline = format!(
        "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nmode = \"watch\"\nafter = \"delete\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
        inbox.display()
    );
    let port = free_port();
    let config = format!(
        "[alerts]\nevaluate_every = \"200ms\"\ndead_letter_digest = \"30s\"\n{}{}",
        smtp.toml(),
        hook.toml()
    );
    let child = daemon(
        tmp.path(),
        port,
        &[("labs.toml", pipeline)],
        &config,
        &SMTP_ENV,
    );
    wait_for("the daemon", || {
        http_request("GET", port, "/healthz", None).filter(|(s, _)| *s == 200)
    })
    .await;
    for i in 0..50 {
        common::drop_file(&inbox, &format!("lab{i:02}.hl7"), broken_lab(i));
    }
    let digest = wait_for("the digest", || {
        hook.bodies()
            .into_iter()
            .find(|b| b["oscarflow"]["state"] == "digest")
    })
    .await;
    wait_for("the digest by e-mail", || {
        (mailed(&smtp, "DIGEST", "dead letter") > 0).then_some(())
    })
    .await;
    // Longer than a round, shorter than the next digest: still one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let digests = hook
        .bodies()
        .into_iter()
        .filter(|b| b["oscarflow"]["state"] == "digest")
        .count();
    assert_eq!(digests, 1, "{:?}", hook.bodies());
    assert_eq!(mailed(&smtp, "DIGEST", "dead letter"), 1);
    assert_eq!(
        digest["oscarflow"]["summary"], "50 new dead letter(s)",
        "{digest}"
    );
    let details = digest["oscarflow"]["details"].as_object().unwrap();
    let counted: u64 = details
        .values()
        .map(|v| v.as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 50, "{digest}");
    assert!(
        details
            .keys()
            .all(|k| k.starts_with("pipeline labs, reason ")),
        "{digest}"
    );
    assert!(
        digest["text"]
            .as_str()
            .unwrap()
            .contains(&format!("http://127.0.0.1:{port}/console/dead-letters")),
        "{digest}"
    );
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
    assert_no_phi(&smtp, &hook, &[]);
    println!(
        "alerts: 50 dead letters: {digests} digest by webhook, 1 by e-mail, counts {details:?}; patient data in them: none"
    );
    // The dead letters themselves did hold patient data: the check above means something.
    let phi = fixture_phi();
    assert!((0..50).any(|i| {
        let b = String::from_utf8_lossy(&broken_lab(i)).into_owned();
        phi.iter().any(|t| b.contains(t.as_str()))
    }));
}

/// A client certificate (with its key, PEM) valid for `days`, signed by a fresh CA valid
/// for a year; returns (identity, CA) paths.
fn client_identity(dir: &Path, days: u32) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509};
    let key = || {
        let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
    };
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    };
    let cert = |subject: &str, issuer: &str, pubkey: &PKey<_>, signer: &PKey<_>, days: u32| {
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name(subject)).unwrap();
        b.set_issuer_name(&name(issuer)).unwrap();
        b.set_pubkey(pubkey).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
            .unwrap();
        b.sign(signer, MessageDigest::sha256()).unwrap();
        b.build()
    };
    let (ca_key, client_key) = (key(), key());
    let ca = cert("Test CA", "Test CA", &ca_key, &ca_key, 365);
    let client = cert("clinic1", "Test CA", &client_key, &ca_key, days);
    let identity = dir.join("client.pem");
    let mut pem = client.to_pem().unwrap();
    pem.extend(client_key.private_key_to_pem_pkcs8().unwrap());
    std::fs::write(&identity, pem).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.to_pem().unwrap()).unwrap();
    (identity, ca_path)
}

fn metric(port: u16, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, body) = http_request("GET", port, "/metrics", None)?;
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_expiring_in_ten_days_makes_check_warn_and_sends_one_alert() {
    let Some(smtp) = Smtp::start() else { return };
    let hook = Hook::start();
    hook.failing.store(true, Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let (identity, ca) = client_identity(tmp.path(), 10);
    // Nothing listens there; the default unready_after (15 min) is far away.
    let pipeline = excelleris_pipeline(
        &format!("https://localhost:{}/hl7pull.aspx", free_port()),
        &identity,
        &ca,
        "",
    );
    let file = tmp.path().join("labs.toml");
    std::fs::write(&file, &pipeline).unwrap();

    // `check` warns, and passes.
    let o = Command::new(bin())
        .arg("check")
        .arg(&file)
        .envs(XL_ENV)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(
            "warning: certificate (pipeline labs, source pull: client_identity) expires on"
        ),
        "{out}"
    );
    assert!(
        out.contains("in 9 day(s)") || out.contains("in 10 day(s)"),
        "{out}"
    );
    assert!(!out.contains("ca.pem"), "the CA is valid for a year: {out}");
    assert!(out.contains("1 pipeline file(s) OK"), "{out}");

    let port = free_port();
    let config = format!(
        "[alerts]\nevaluate_every = \"200ms\"\n{}{}",
        smtp.toml(),
        hook.toml()
    );
    let env: Vec<(&str, &str)> = SMTP_ENV.iter().chain(XL_ENV.iter()).copied().collect();
    let child = daemon(tmp.path(), port, &[("labs.toml", pipeline)], &config, &env);
    let key = format!("certificates:{}", identity.display());
    wait_for("the alert by e-mail", || {
        (mailed(&smtp, "ALERT", "certificate expiring") > 0).then_some(())
    })
    .await;

    // The webhook refuses: the notice is retried, and /readyz and the metrics say so.
    let readyz = wait_for("/readyz to name the webhook", || {
        http_request("GET", port, "/readyz", None)
            .filter(|(s, b)| *s == 503 && b.contains("alert notifier webhook failing"))
    })
    .await;
    assert!(readyz.1.contains("webhook: HTTP 503"), "{readyz:?}");
    wait_for("a failed attempt counted", || {
        metric(
            port,
            "oscarflow_alert_notifications_total",
            &["notifier=\"webhook\"", "outcome=\"failed\""],
        )
        .filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(
        metric(
            port,
            "oscarflow_alert_notifier_failing_info",
            &["notifier=\"webhook\""]
        ),
        Some(1.0)
    );
    assert!(*hook.refused.lock().unwrap() >= 1);
    hook.failing.store(false, Ordering::SeqCst);
    wait_for("the alert by webhook", || {
        (hooked(&hook, &key, "firing") > 0).then_some(())
    })
    .await;
    wait_for("/readyz to stop naming the webhook", || {
        http_request("GET", port, "/readyz", None).filter(|(_, b)| !b.contains("alert notifier"))
    })
    .await;
    assert_eq!(
        metric(
            port,
            "oscarflow_alert_notifier_failing_info",
            &["notifier=\"webhook\""]
        ),
        Some(0.0)
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooked(&hook, &key, "firing"), 1, "{:?}", hook.bodies());
    assert_eq!(mailed(&smtp, "ALERT", "certificate expiring"), 1);
    let alert = hook
        .bodies()
        .into_iter()
        .find(|b| b["oscarflow"]["key"] == key.as_str())
        .unwrap();
    let days: i64 = alert["oscarflow"]["details"]["days left"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((9..=10).contains(&days), "{alert}");
    assert!(
        !alert.to_string().contains("clinic1"),
        "no certificate subject: {alert}"
    );
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
    assert_no_phi(&smtp, &hook, &[]);
    println!(
        "alerts: a client certificate with {days} days left: 1 alert by webhook (after the webhook's refusals were retried), 1 by e-mail; patient data in them: none"
    );
}

#[test]
fn the_daemon_refuses_to_start_when_an_alert_secret_is_unset_or_a_key_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let pipeline = format!(
        "[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
        inbox.display()
    );
    let config = "[alerts.webhook]\nurl_env = \"OSCARFLOW_T_AL_UNSET_HOOK\"\n";
    let child = daemon(
        tmp.path(),
        free_port(),
        &[("labs.toml", pipeline.clone())],
        config,
        &[],
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("environment variable `OSCARFLOW_T_AL_UNSET_HOOK` is not set"),
        "{err}"
    );

    let cfg = tmp.path().join("oscarflow.toml");
    std::fs::write(
        &cfg,
        "state_dir = \"x\"\n[alerts]\nevaluate_every = \"5s\"\ndigest = \"1m\"\n",
    )
    .unwrap();
    let o = Command::new(bin()).arg("check").arg(&cfg).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(":4:1:") && out.contains("unknown field `digest`"),
        "{out}"
    );
}
