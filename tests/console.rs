//! The message journal and the console over plain HTTP, against `oscarflow run` on the
//! embedded store seeded with the synthetic clinic: every lab journaled with its OSCAR row,
//! match reason, dead letter and release; no page carrying a patient's name, health number
//! or birth date until a dead letter is revealed (and the reveal journaled); the console's
//! refusals (no session, forged form token, another site's origin, wrong token). The
//! browser itself is driven in `tests/console_browser.rs`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, count, free_port, repo};
use oscarflow::store::Store;

const TOKEN: &str = "console-test-token-5d1f";

/// `oscarflow run` on a watched folder, the seeded clinic, the console on a free port.
struct Daemon {
    child: Child,
    port: u16,
    inbox: PathBuf,
    db: PathBuf,
    log: PathBuf,
}

impl Daemon {
    async fn start(dir: &Path, with_token: bool) -> (Daemon, Store) {
        let store = common::seeded_store(dir).await;
        let inbox = dir.join("inbox");
        let pipelines = dir.join("pipelines");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::write(
            pipelines.join("labs.toml"),
            format!(
                "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nmode = \"watch\"\nafter = \"delete\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\n",
                inbox.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let cfg = dir.join("oscarflow.toml");
        let token_line = if with_token {
            "http_token_env = \"CONSOLE_TEST_TOKEN\"\nhttp_token_name = \"dr-test\"\n"
        } else {
            ""
        };
        std::fs::write(
            &cfg,
            format!(
                "pipelines_dir = \"{}\"\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n{token_line}",
                pipelines.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let log = dir.join("daemon.log");
        let child = Command::new(bin())
            .args([
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--database-env",
                "CONSOLE_TEST_DB",
            ])
            .env("CONSOLE_TEST_DB", common::sqlite_url(dir))
            .env("CONSOLE_TEST_TOKEN", TOKEN)
            .env_remove("OSCARFLOW_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            port,
            inbox,
            db: dir.join("oscarflow.db"),
            log,
        };
        wait(30, "the endpoint", || {
            request(d.port, "GET", "/healthz", &[], "").is_some()
        });
        (d, store)
    }

    fn drop_lab(&self, name: &str, bytes: &[u8]) {
        let tmp = self.inbox.join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.inbox.join(name)).unwrap();
    }

    fn wait_inbox_empty(&self) {
        wait(60, "the inbox to empty", || {
            std::fs::read_dir(&self.inbox).unwrap().count() == 0
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.db;
    }
}

fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on loopback (`Host: 127.0.0.1:<port>`), the connection closed after.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Answer> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    write!(s, "{head}\r\n{body}").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Logs in; returns the session cookie (`name=value`) and the Set-Cookie line.
fn login(port: u16) -> (String, String) {
    let a = request(
        port,
        "POST",
        "/console/login",
        &[],
        &form(&[("token", TOKEN)]),
    )
    .expect("login answered");
    assert_eq!(a.status, 303, "a right token logs in");
    let set = a
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    let cookie = set.split(';').next().unwrap().trim().to_string();
    (cookie, set)
}

fn get(port: u16, path: &str, cookie: &str) -> Answer {
    request(port, "GET", path, &[("Cookie", cookie)], "").expect("answered")
}

/// The page's CSRF token (from any of its forms).
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// Every `href` of a console page that points into the console.
fn links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.starts_with("/console/") && !h.ends_with(".css"))
        .map(|h| h.replace("&amp;", "&"))
        .collect()
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap()
}

/// A message of a kind oscarflow does not file (an ADT update), with a lab's patient and
/// orders: dead-lettered (`unsupported_message`), found by its accession and control id,
/// with the patient's data in its bytes.
fn message_of_another_kind() -> Vec<u8> {
    String::from_utf8(fixture("fixtures/hl7/pathl7/matched_chem.hl7"))
        .unwrap()
        .replace("|ORU^R01|ZZ0101|", "|ADT^A08|ZZBROKEN1|")
        .replace("26-100000001", "26-999000001")
        .into_bytes()
}

/// The labs every test drops: matched, unmatched, a file with good messages and a bad one,
/// a message of another kind.
fn drop_the_labs(d: &Daemon) -> Vec<Vec<u8>> {
    let labs = vec![
        fixture("fixtures/hl7/pathl7/matched_chem.hl7"),
        fixture("fixtures/hl7/pathl7/unmatched_patient.hl7"),
        fixture("fixtures/bad/mixed_good_bad.hl7"),
        message_of_another_kind(),
    ];
    for (i, l) in labs.iter().enumerate() {
        d.drop_lab(&format!("lab{i}.hl7"), l);
    }
    d.wait_inbox_empty();
    labs
}

async fn journal_rows_released(store: &Store) -> i64 {
    count(
        store,
        "SELECT COUNT(*) FROM oscarflow_journal WHERE released_at IS NULL AND outcome <> 'revealed'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lab_is_journaled_with_its_oscar_row_match_reason_dead_letter_and_release() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, store) = Daemon::start(tmp.path(), true).await;
    drop_the_labs(&d);
    let start = Instant::now();
    while journal_rows_released(&store).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "every input's release is journaled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The journal's labs are OSCAR's labs, with the same match outcome and chart.
    let imported = count(
        &store,
        "SELECT COUNT(*) FROM oscarflow_journal WHERE kind = 'lab' AND outcome = 'imported'",
    )
    .await;
    let in_oscar = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    assert!(in_oscar >= 3, "the good labs were imported");
    assert_eq!(imported, in_oscar);
    let differ = count(&store, "SELECT COUNT(*) FROM oscarflow_journal j LEFT JOIN oscarflow_lab_message m ON m.lab_no = j.lab_no LEFT JOIN patientLabRouting r ON r.lab_no = j.lab_no WHERE j.outcome = 'imported' AND (m.lab_no IS NULL OR m.match_outcome <> j.match_outcome OR COALESCE(r.demographic_no, -1) <> COALESCE(j.demographic_no, -1) OR m.accession <> COALESCE(j.accession, ''))").await;
    assert_eq!(
        differ, 0,
        "each imported row names its lab, match and chart"
    );
    let matched = count(&store, "SELECT COUNT(*) FROM oscarflow_journal WHERE match_outcome = 'matched' AND demographic_no IS NOT NULL").await;
    let unmatched = count(&store, "SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'imported' AND match_outcome <> 'matched' AND demographic_no IS NULL").await;
    assert!(
        matched >= 1 && unmatched >= 1,
        "matched {matched}, unmatched {unmatched}"
    );

    // Each dead letter is journaled with its reason and id, and the broken labs are found by
    // the accession and control id read from their bytes.
    let dead = count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
    let journaled_dead = count(&store, "SELECT COUNT(*) FROM oscarflow_journal j JOIN oscarflow_dead_letter d ON d.id = j.dead_letter_id AND d.reason = j.reason WHERE j.outcome = 'dead_lettered'").await;
    assert_eq!(dead, 2);
    assert_eq!(journaled_dead, dead);
    let q = |id: &str| oscarflow::journal::Query {
        id: Some(id.into()),
        limit: 10,
        ..Default::default()
    };
    let broken = oscarflow::journal::search(&store, &q("ZZBROKEN1"))
        .await
        .unwrap();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].outcome, "dead_lettered");
    assert_eq!(broken[0].reason.as_deref(), Some("unsupported_message"));
    let by_accession = oscarflow::journal::search(&store, &q("26-999000001"))
        .await
        .unwrap();
    assert_eq!(
        by_accession.iter().map(|r| r.id).collect::<Vec<_>>(),
        [broken[0].id],
        "the message of another kind, by its accession"
    );
    let bad_part = oscarflow::journal::search(&store, &q("ZZ1402"))
        .await
        .unwrap();
    assert_eq!(
        bad_part
            .iter()
            .map(|r| (r.outcome.as_str(), r.part))
            .collect::<Vec<_>>(),
        [("dead_lettered", Some(1))],
        "the bad message of the mixed file, by its control id, as its second message"
    );
    let by_hash = oscarflow::journal::search(&store, &q(&broken[0].content_sha256[..12]))
        .await
        .unwrap();
    assert_eq!(by_hash.len(), 1, "found by a prefix of its hash");

    // The same file again: journaled as a duplicate, nothing imported.
    d.drop_lab(
        "again.hl7",
        &fixture("fixtures/hl7/pathl7/matched_chem.hl7"),
    );
    d.wait_inbox_empty();
    let start = Instant::now();
    while count(
        &store,
        "SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'duplicate'",
    )
    .await
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the duplicate is journaled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        in_oscar
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM oscarflow_journal WHERE kind = 'lab' AND outcome = 'imported'"
        )
        .await,
        imported
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_carry_no_patient_name_health_number_or_birth_date_until_a_dead_letter_is_revealed(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (d, store) = Daemon::start(tmp.path(), true).await;
    let labs = drop_the_labs(&d);
    let mut tokens = BTreeSet::new();
    for l in &labs {
        common::phi::patient_tokens(l, &mut tokens);
    }
    // The seeded charts of the clinic these labs match (names, numbers, birth dates).
    assert!(tokens.len() >= 8, "the labs carry patient data to look for");
    let (cookie, _) = login(d.port);

    // Every page reachable from the console's pages, two links deep, with a search.
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = [
        "/console/",
        "/console/messages",
        "/console/messages?outcome=dead_lettered",
        "/console/unmatched",
        "/console/dead-letters?status=all",
        "/console/pipelines",
        "/console/dead-letters/purge",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut pages = Vec::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) || seen.len() > 200 {
            continue;
        }
        let a = get(d.port, &path, &cookie);
        assert_eq!(a.status, 200, "{path}");
        for l in links(&a.body) {
            if !seen.contains(&l) {
                queue.push(l);
            }
        }
        pages.push((path, a.body));
    }
    let journeys = pages
        .iter()
        .filter(|(p, _)| p.starts_with("/console/messages/"))
        .count();
    let dead_letters = pages
        .iter()
        .filter(|(p, _)| p.starts_with("/console/dead-letters/0/"))
        .count();
    assert!(
        journeys >= 4 && dead_letters == 2,
        "{journeys} journeys, {dead_letters} dead letters"
    );
    let leaks: Vec<&String> = pages
        .iter()
        .filter(|(path, body)| {
            tokens
                .iter()
                .any(|t| body.contains(t.as_str()) || path.contains(t.as_str()))
        })
        .map(|(p, _)| p)
        .collect();
    println!(
        "console phi: {} pages and their URLs read, {} patient tokens looked for, {} pages with one",
        pages.len(),
        tokens.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "pages with patient data: {leaks:?}");
    let log = d.log();
    assert!(
        !tokens.iter().any(|t| log.contains(t.as_str())),
        "the daemon's log carries no patient data"
    );

    // Revealing the message of another kind shows its bytes (so the search above can find them)
    // and journals the reveal.
    let broken = oscarflow::journal::search(
        &store,
        &oscarflow::journal::Query {
            id: Some("ZZBROKEN1".into()),
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let id = broken[0].dead_letter_id.clone().unwrap();
    let page = get(d.port, &format!("/console/dead-letters/0/{id}"), &cookie).body;
    let a = request(
        d.port,
        "POST",
        &format!("/console/dead-letters/0/{id}/reveal"),
        &[("Cookie", &cookie)],
        &form(&[("csrf", &csrf(&page))]),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    assert!(a.body.contains("id=\"raw\""));
    assert!(
        tokens.iter().any(|t| a.body.contains(t.as_str())),
        "the revealed bytes hold the patient's data"
    );
    assert_eq!(
        count(&store, &format!("SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'revealed' AND dead_letter_id = '{id}'")).await,
        1,
        "the reveal is journaled"
    );
    assert!(d.log().contains("Dead letter bytes revealed"));
    // And records it in the audit trail under the token's holder.
    let reads = common::audit_rows(&store, "read").await;
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert!(
        reads[0]
            .actor
            .starts_with("console token dr-test, session "),
        "{}",
        reads[0].actor
    );
    assert!(reads[0].why.as_deref().unwrap().contains(&id));
    // The audit page lists the labs written and the reveal, and verifies the chains.
    let audit = get(d.port, "/console/audit?verify=1", &cookie).body;
    assert!(audit.contains(r#"data-action="write""#), "{audit}");
    assert!(audit.contains(r#"data-action="read""#));
    assert!(audit.contains("console token dr-test, session "));
    assert!(audit.contains("intact") && !audit.contains("BROKEN"));
    assert!(
        !tokens.iter().any(|t| audit.contains(t.as_str())),
        "no patient data on the audit page"
    );
    let reads_only = get(d.port, "/console/audit?action=read", &cookie).body;
    assert!(
        !reads_only.contains(r#"data-action="write""#)
            && reads_only.contains(r#"data-action="read""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_no_session_a_wrong_token_a_forged_form_token_and_another_sites_form() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, _store) = Daemon::start(tmp.path(), true).await;
    let port = d.port;

    // No session: pages send to the login, forms are refused.
    let a = request(port, "GET", "/console/", &[], "").unwrap();
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/console/login"))
    );
    let a = request(
        port,
        "POST",
        "/console/pipelines/labs/pause",
        &[],
        &form(&[("csrf", "x")]),
    )
    .unwrap();
    assert_eq!(a.status, 403);

    // A wrong token: no session.
    let a = request(
        port,
        "POST",
        "/console/login",
        &[],
        &form(&[("token", "guess")]),
    )
    .unwrap();
    assert_eq!(a.status, 401);
    assert!(a.header("set-cookie").is_none());

    // The session cookie: Secure, HttpOnly, SameSite=Strict, for the console only.
    let (cookie, set) = login(port);
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let page = get(port, "/console/pipelines", &cookie);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    let token = csrf(&page.body);

    // A forged form token, a missing one, another site's page: refused, nothing done.
    for (fields, origin) in [
        (form(&[("csrf", "0".repeat(64).as_str())]), None),
        (String::new(), None),
        (
            form(&[("csrf", token.as_str())]),
            Some("http://clinic-news.example"),
        ),
    ] {
        let mut headers = vec![("Cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let a = request(
            port,
            "POST",
            "/console/pipelines/labs/pause",
            &headers,
            &fields,
        )
        .unwrap();
        assert_eq!(a.status, 403, "{fields} from {origin:?}");
    }
    let state = common::http_request("GET", port, "/pipelines", Some(TOKEN))
        .unwrap()
        .1;
    assert!(
        state.contains("\"paused\":false"),
        "nothing was paused: {state}"
    );

    // The right token from the console's own page: done.
    let own = format!("http://127.0.0.1:{port}");
    let a = request(
        port,
        "POST",
        "/console/pipelines/labs/pause",
        &[("Cookie", &cookie), ("Origin", &own)],
        &form(&[("csrf", &token)]),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    assert!(a.body.contains("id=\"control-result\""));
    let state = common::http_request("GET", port, "/pipelines", Some(TOKEN))
        .unwrap()
        .1;
    assert!(state.contains("\"paused\":true"), "{state}");

    // Logging out ends the session.
    let a = request(
        port,
        "POST",
        "/console/logout",
        &[("Cookie", &cookie)],
        &form(&[("csrf", &token)]),
    )
    .unwrap();
    assert_eq!(a.status, 303);
    let a = get(port, "/console/", &cookie);
    assert_eq!(a.status, 303, "the old cookie opens nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_from_the_console_needs_the_confirmation_and_deletes_only_resolved_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, store) = Daemon::start(tmp.path(), true).await;
    drop_the_labs(&d);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        2
    );
    // One of the two was re-driven and imported meanwhile (as `dlq retry` leaves it).
    sqlx::query("UPDATE oscarflow_dead_letter SET status = 'resolved', resolved_at = last_failed_at WHERE reason = 'malformed'")
        .execute(&store.pool)
        .await
        .unwrap();
    let (cookie, _) = login(d.port);
    let page = get(d.port, "/console/dead-letters/purge", &cookie);
    assert!(page.body.contains("<strong id=\"purge-count\">1</strong>"));
    let token = csrf(&page.body);
    let purge = |fields: String| {
        request(
            d.port,
            "POST",
            "/console/dead-letters/purge",
            &[("Cookie", cookie.as_str())],
            &fields,
        )
        .unwrap()
    };
    let a = purge(form(&[("csrf", &token)]));
    assert_eq!(a.status, 200);
    assert!(a.body.contains("Nothing was deleted"));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        2
    );
    let a = purge(form(&[("csrf", &token), ("confirm", "yes")]));
    assert!(
        a.body.contains("1 resolved dead letter(s) deleted"),
        "purged"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM oscarflow_dead_letter WHERE status = 'open'"
        )
        .await,
        1,
        "the open one, the only copy of its input, stays"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipelines_page_shows_a_rejected_reload_with_its_place_and_the_running_version_goes_on()
{
    let tmp = tempfile::tempdir().unwrap();
    let (d, _store) = Daemon::start(tmp.path(), true).await;
    let (cookie, _) = login(d.port);
    let file = tmp.path().join("pipelines/labs.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replace("type = \"oscar_lab\"", "type = \"oscar_labs\""),
    )
    .unwrap();
    let mut body = String::new();
    wait(30, "the rejected reload on the pipelines page", || {
        body = get(d.port, "/console/pipelines", &cookie).body;
        body.contains("id=\"rejected\"")
    });
    let place = format!("{}:", file.display());
    let at = body.find(&place).expect("the problem names the file");
    let after: String = body[at + place.len()..].chars().take(12).collect();
    let mut nums = after.split(':');
    assert!(
        nums.next().is_some_and(|l| l.parse::<u32>().is_ok())
            && nums
                .next()
                .is_some_and(|c| c.chars().take_while(char::is_ascii_digit).count() > 0),
        "file:line:col, got {after}"
    );
    assert!(
        body.contains("oscar_labs"),
        "the problem says what is wrong"
    );
    assert!(
        body.contains("labs <span class=\"state running\">running</span>"),
        "the running version goes on"
    );
    assert!(body.contains("the file on disk was rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_the_console_only_says_how_to_set_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, _store) = Daemon::start(tmp.path(), false).await;
    let a = request(d.port, "GET", "/console/login", &[], "").unwrap();
    assert_eq!(a.status, 503);
    assert!(a.body.contains("http_token_env"));
    let a = request(
        d.port,
        "POST",
        "/console/login",
        &[],
        &form(&[("token", "")]),
    )
    .unwrap();
    assert_eq!(a.status, 503);
    assert!(a.header("set-cookie").is_none());
}

#[tokio::test]
async fn journal_rows_older_than_the_retention_are_pruned_and_newer_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let prov = oscarflow::envelope::Provenance {
        pipeline: "labs".into(),
        source: "inbox".into(),
        source_kind: "folder".into(),
        origin: oscarflow::envelope::Origin::Memory { label: "t".into() },
        received_at: time::OffsetDateTime::now_utc(),
        attempt: 1,
        content_sha256: oscarflow::envelope::sha256(b"x"),
    };
    let entry = oscarflow::journal::Entry {
        outcome: oscarflow::journal::outcome::DUPLICATE,
        ..Default::default()
    };
    for _ in 0..5 {
        oscarflow::journal::record_alone(&store, &prov, std::slice::from_ref(&entry))
            .await
            .unwrap();
    }
    sqlx::query("UPDATE oscarflow_journal SET at = '2025-01-01 10:00:00' WHERE id <= 3")
        .execute(&store.pool)
        .await
        .unwrap();
    let gone = oscarflow::journal::prune(&store, "2025-06-01 00:00:00")
        .await
        .unwrap();
    assert_eq!(gone, 3);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_journal").await,
        2
    );
    assert_eq!(
        oscarflow::journal::prune(&store, "2025-06-01 00:00:00")
            .await
            .unwrap(),
        0
    );
}
