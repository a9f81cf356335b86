//! The operator's console in a real headless Chromium, driven over WebDriver, against
//! `oscarflow run` on loopback with a MariaDB clone of OSCAR's database (the synthetic clinic):
//! logging in, finding each lab by its accession and reading its journey and reason, the
//! unmatched labs of the day, re-driving a dead letter once its cause is fixed (imported once,
//! never twice), revealing its bytes (journaled), and the refusals (a forged form token, no
//! session). Each page asserted on is saved as a PNG under `<target>/browser/`.
//!
//! Skips without Chromium or MariaDB, except under `CI=true` (and `OSCARFLOW_REQUIRE_MYSQL=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mariadb::with_test_db;
use common::webdriver::{Driver, Session};
use common::{bin, count, free_port, repo};
use oscarflow::store::Store;
use serde_json::json;

const TOKEN: &str = "console-browser-token-8c2e";
/// How long a page may take to show what it should.
const PAGE: Duration = Duration::from_secs(15);

/// Where screenshots go: `<target>/browser/<name>`.
fn shot(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("browser")
        .join(name)
}

/// The lab pipeline's file: a watched folder, parse, match, import (`on_overflow` as given).
fn pipeline_toml(inbox: &Path, on_overflow: &str) -> String {
    format!(
        "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nmode = \"watch\"\nafter = \"delete\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\non_overflow = \"{on_overflow}\"\n",
        inbox.display()
    )
}

/// `oscarflow run` on a watched folder and the MariaDB test database, the console on a free
/// loopback port; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
    inbox: PathBuf,
    pipeline_file: PathBuf,
}

impl Daemon {
    async fn start(dir: &Path, db_url: &str, on_overflow: &str) -> Daemon {
        let inbox = dir.join("inbox");
        let pipelines = dir.join("pipelines");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&pipelines).unwrap();
        let pipeline_file = pipelines.join("labs.toml");
        std::fs::write(&pipeline_file, pipeline_toml(&inbox, on_overflow)).unwrap();
        let port = free_port();
        let cfg = dir.join("oscarflow.toml");
        std::fs::write(
            &cfg,
            format!(
                "pipelines_dir = \"{}\"\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nhttp_token_env = \"CONSOLE_BROWSER_TOKEN\"\n",
                pipelines.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .args(["--database-env", "CONSOLE_BROWSER_DB"])
            .env("CONSOLE_BROWSER_DB", db_url)
            .env("CONSOLE_BROWSER_TOKEN", TOKEN)
            .env_remove("OSCARFLOW_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            port,
            inbox,
            pipeline_file,
        };
        wait_until(30, "the daemon's endpoint", || async {
            common::http_request("GET", port, "/healthz", None).is_some()
        })
        .await;
        d
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn drop_lab(&self, name: &str, bytes: &[u8]) {
        common::drop_file(&self.inbox, name, bytes);
    }

    async fn wait_inbox_empty(&self) {
        wait_until(60, "the inbox to empty", || async {
            std::fs::read_dir(&self.inbox).unwrap().count() == 0
        })
        .await;
    }

    /// The `/pipelines` JSON (bearer token).
    fn pipelines_json(&self) -> String {
        let (status, body) = common::http_request("GET", self.port, "/pipelines", Some(TOKEN))
            .expect("/pipelines answered");
        assert_eq!(status, 200);
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `secs` seconds.
async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap()
}

fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

/// A message of a kind oscarflow does not file (an ADT update) with a lab's patient and
/// orders, accession 26-999000001: dead-lettered as `unsupported_message`.
fn message_of_another_kind() -> Vec<u8> {
    fixture_text("fixtures/hl7/pathl7/matched_chem.hl7")
        .replace("|ORU^R01|ZZ0101|", "|ADT^A08|ZZBROKEN1|")
        .replace("26-100000001", "26-999000001")
        .into_bytes()
}

/// The matched lab under accession 26-300000001 with an order name (OBR-4.2, OSCAR's
/// `hl7TextInfo.label`, 255 characters) of 320: too long for its column.
fn lab_with_an_overlong_label() -> Vec<u8> {
    let long = "Creatinine/eGFR ".repeat(20);
    fixture_text("fixtures/hl7/pathl7/matched_chem.hl7")
        .replace("|ORU^R01|ZZ0101|", "|ORU^R01|ZZ3001|")
        .replace("26-100000001", "26-300000001")
        .replace("CREA^Creatinine/eGFR", &format!("CREA^{}", long.trim_end()))
        .into_bytes()
}

async fn scalar_string(store: &Store, sql: &str) -> Option<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_optional(&store.pool)
        .await
        .expect(sql)
}

async fn scalar_i64(store: &Store, sql: &str) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_optional(&store.pool)
        .await
        .expect(sql)
}

/// Logs in through the login page (the console sends a visitor without a session there).
async fn log_in(b: &Session<'_>, d: &Daemon, screenshot: Option<&str>) {
    b.goto(&d.url("/console/")).await;
    b.wait_for("#token", PAGE).await;
    assert_eq!(
        b.url().await,
        d.url("/console/login"),
        "without a session the console sends to its login page"
    );
    if let Some(name) = screenshot {
        b.screenshot(&shot(name)).await;
    }
    b.find("#token").await.send_keys(TOKEN).await;
    b.find("#login").await.click().await;
    let deadline = Instant::now() + PAGE;
    while b
        .try_find("#overview tr[data-pipeline=\"labs\"]")
        .await
        .is_none()
    {
        if let Some(refusal) = b.try_find("p.error").await {
            // Seen with `Referrer-Policy: no-referrer`: Chromium then sends `Origin: null`
            // with every form, which the console takes for another site's page.
            panic!(
                "the console refused its own login form in Chromium: {:?}",
                refusal.text().await
            );
        }
        assert!(
            Instant::now() < deadline,
            "no overview within {PAGE:?} of logging in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.url().await, d.url("/console/"));
}

/// On the Messages page: types `id` into the search, runs it, expects exactly one row with
/// `row_css`, opens its journey, and returns the journey's text.
async fn journey_of(b: &Session<'_>, d: &Daemon, id: &str, row_css: &str) -> String {
    b.goto(&d.url("/console/messages")).await;
    let field = b.wait_for("#id", PAGE).await;
    field.clear().await;
    field.send_keys(id).await;
    b.find("#search").await.click().await;
    wait_until(15, "the search's page", || async {
        b.url().await.contains("id=")
    })
    .await;
    b.wait_for(row_css, PAGE).await;
    assert_eq!(
        b.find_all("#messages tbody tr").await.len(),
        1,
        "one journal row for {id}"
    );
    b.find(&format!("{row_css} a[href^=\"/console/messages/\"]"))
        .await
        .click()
        .await;
    b.wait_for("#journey", PAGE).await.text().await
}

/// Waits until every lab's journal row is written and every input released.
async fn wait_journaled(store: &Store, rows: i64) {
    wait_until(30, "the journal rows and releases", || async {
        let lab = count(
            store,
            "SELECT COUNT(*) FROM oscarflow_journal WHERE kind = 'lab' AND outcome <> 'revealed'",
        )
        .await;
        let unreleased = count(
            store,
            "SELECT COUNT(*) FROM oscarflow_journal WHERE released_at IS NULL AND outcome <> 'revealed'",
        )
        .await;
        lab >= rows && unreleased == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_finds_each_lab_by_accession_and_sees_its_journey_and_reason() {
    let started = Instant::now();
    // chromedriver; without it (outside CI) the test is skipped.
    let Some(driver) = Driver::start().await else {
        return;
    };
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        let tmp = tempfile::tempdir().unwrap();
        let d = Daemon::start(tmp.path(), &url, "truncate").await;
        let b = driver.session().await;

        log_in(&b, &d, Some("login.png")).await;
        b.find("#ready").await;

        for (i, lab) in [
            fixture("fixtures/hl7/pathl7/matched_chem.hl7"),
            fixture("fixtures/hl7/pathl7/unmatched_patient.hl7"),
            fixture("fixtures/bad/mixed_good_bad.hl7"),
            message_of_another_kind(),
        ]
        .iter()
        .enumerate()
        {
            d.drop_lab(&format!("lab{i}.hl7"), lab);
        }
        d.wait_inbox_empty().await;
        // matched, unmatched, the mixed file's two good messages and its bad one, the ADT.
        wait_journaled(&store, 6).await;

        // The overview counts them: today's received, imported, matched, unmatched and
        // dead-lettered, from the journal.
        b.goto(&d.url("/console/")).await;
        let row = "#overview tr[data-pipeline=\"labs\"]";
        b.wait_for(row, PAGE).await;
        let mut cells = Vec::new();
        for c in b.find_all(&format!("{row} td")).await {
            cells.push(c.text().await);
        }
        b.screenshot(&shot("overview.png")).await;
        assert_eq!(cells[..2], ["labs", "running"], "{cells:?}");
        assert_eq!(
            cells[2..7],
            ["6", "4", "3", "1", "2"],
            "received, imported, matched, unmatched, dead-lettered today: {cells:?}"
        );
        b.find("p.banner.warn a[href=\"/console/dead-letters\"]").await;

        // Matched: filed to chart 1001 in MariaDB, and the journey says so with its lab number.
        let lab_no = scalar_i64(
            &store,
            "SELECT CAST(lab_no AS SIGNED) FROM oscarflow_journal WHERE accession = '26-100000001' AND outcome = 'imported'",
        )
        .await
        .expect("the matched lab is journaled as imported");
        let chart = scalar_i64(
            &store,
            &format!("SELECT CAST(demographic_no AS SIGNED) FROM patientLabRouting WHERE lab_no = {lab_no}"),
        )
        .await;
        assert_eq!(chart, Some(1001), "matched_chem.hl7 is on chart 1001 in OSCAR");
        let matched = journey_of(&b, &d, "26-100000001", "#messages tr[data-accession=\"26-100000001\"]").await;
        b.find("p.reason[data-match=\"matched\"]").await;
        b.screenshot(&shot("journey-matched.png")).await;
        assert!(matched.contains("Received by inbox (folder)"), "{matched}");
        assert!(matched.contains("Filed into OSCAR"), "{matched}");
        assert!(
            matched.contains(&format!("as lab {lab_no}.")),
            "the journey names OSCAR's lab_no {lab_no}"
        );
        assert!(matched.contains("Filed to the patient's chart"), "{matched}");
        assert!(matched.contains("Chart #1001."), "{matched}");
        assert!(
            matched.contains("The source let go of the input"),
            "{matched}"
        );
        assert_eq!(b.text("#accession").await, "26-100000001");

        // Unmatched: in OSCAR's unmatched inbox, and why.
        let unmatched = journey_of(&b, &d, "26-100000007", "#messages tr[data-accession=\"26-100000007\"]").await;
        let reason = b.find("p.reason[data-match]").await;
        let code = reason.attr("data-match").await.unwrap();
        b.screenshot(&shot("journey-unmatched.png")).await;
        assert_eq!(code, "not_found", "unmatched_patient.hl7's health number is in no chart");
        assert!(unmatched.contains("Filed into OSCAR"), "{unmatched}");
        assert!(unmatched.contains(" as lab "), "{unmatched}");
        assert!(unmatched.contains("Not filed to a chart"), "{unmatched}");
        assert!(
            unmatched.contains("no chart in OSCAR has this health number"),
            "{unmatched}"
        );
        assert!(!unmatched.contains("Chart #"), "{unmatched}");
        assert_eq!(
            scalar_i64(&store, "SELECT COUNT(*) FROM patientLabRouting r JOIN oscarflow_journal j ON j.lab_no = r.lab_no WHERE j.accession = '26-100000007'").await,
            Some(0),
            "no chart routing for the unmatched lab"
        );

        // Broken (a message of another kind): a dead letter, and why.
        let broken = journey_of(&b, &d, "26-999000001", "#messages tr[data-accession=\"26-999000001\"]").await;
        b.find("p.reason[data-reason=\"unsupported_message\"]").await;
        b.find("#journey a[href^=\"/console/dead-letters/\"]").await;
        b.screenshot(&shot("journey-broken.png")).await;
        assert!(broken.contains("Kept as a dead letter (not in OSCAR)"), "{broken}");
        assert!(
            broken.contains("This kind of message is not a lab result oscarflow files."),
            "{broken}"
        );
        assert!(broken.contains("(unsupported_message)"), "{broken}");
        assert!(broken.contains("Dead letter "), "{broken}");

        // The bad message of the mixed file, by its control id: the second of its file.
        let bad_part = journey_of(&b, &d, "ZZ1402", "#messages tbody tr").await;
        assert!(bad_part.contains("Kept as a dead letter"), "{bad_part}");
        assert!(bad_part.contains("(message 2 of its file)"), "{bad_part}");
        assert!(bad_part.contains("Filed into OSCAR"), "its good neighbours: {bad_part}");

        // The Messages page with every row (screenshot).
        b.goto(&d.url("/console/messages")).await;
        b.wait_for("#messages tr[data-accession=\"26-100000001\"]", PAGE).await;
        assert!(b.find_all("#messages tbody tr").await.len() >= 6);
        b.screenshot(&shot("messages.png")).await;

        // The unmatched lab of today, through the navigation.
        b.find("nav a[href=\"/console/unmatched\"]").await.click().await;
        let row = b
            .wait_for("#unmatched tr[data-accession=\"26-100000007\"]", PAGE)
            .await
            .text()
            .await;
        b.screenshot(&shot("unmatched.png")).await;
        assert!(row.contains("no chart in OSCAR has this health number"), "{row}");
        assert!(
            b.try_find("#unmatched tr[data-accession=\"26-100000001\"]").await.is_none(),
            "the matched lab is not in the unmatched list"
        );
        b.close().await;
    })
    .await;
    eprintln!(
        "logs in and finds labs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_redriven_after_its_cause_is_fixed_is_imported_once_and_its_reveal_is_recorded(
) {
    let started = Instant::now();
    // chromedriver; without it (outside CI) the test is skipped.
    let Some(driver) = Driver::start().await else {
        return;
    };
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        let tmp = tempfile::tempdir().unwrap();
        let d = Daemon::start(tmp.path(), &url, "reject").await;
        let b = driver.session().await;
        log_in(&b, &d, None).await;

        // A value too long for OSCAR's column, with on_overflow = "reject": a dead letter.
        let labs_before = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
        d.drop_lab("long.hl7", &lab_with_an_overlong_label());
        d.wait_inbox_empty().await;
        wait_journaled(&store, 1).await;
        let id = scalar_string(
            &store,
            "SELECT id FROM oscarflow_dead_letter WHERE reason = 'import_rejected' AND status = 'open'",
        )
        .await
        .expect("the over-long lab is an open dead letter (import_rejected)");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await, labs_before);
        let in_oscar = "SELECT COUNT(*) FROM hl7TextInfo WHERE accessionNum = '26-300000001'";
        assert_eq!(count(&store, in_oscar).await, 0, "nothing of it is in OSCAR");

        // The cause is fixed: the pipeline now truncates over-long values.
        std::fs::write(&d.pipeline_file, pipeline_toml(&d.inbox, "truncate")).unwrap();

        b.find("nav a[href=\"/console/dead-letters\"]").await.click().await;
        let row = format!("#dead-letters tr[data-id=\"{id}\"]");
        let text = b.wait_for(&row, PAGE).await.text().await;
        assert!(text.contains("import_rejected"), "{text}");
        assert!(text.contains("open"), "{text}");
        let words = b.find(&format!("{row} td[title]")).await.attr("title").await;
        assert_eq!(
            words.as_deref(),
            Some("OSCAR's tables refused a value of this message (too long for its column).")
        );
        b.screenshot(&shot("dead-letters.png")).await;
        b.find(&format!("{row} input[type=checkbox]")).await.click().await;
        b.find("#redrive").await.click().await;
        let result = b.wait_for("#redrive-result", Duration::from_secs(30)).await.text().await;
        b.screenshot(&shot("redrive.png")).await;
        assert!(
            result.contains(&format!("{id}: Resolved: filed into OSCAR.")),
            "{result}"
        );
        assert!(result.contains("imported 1"), "{result}");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
            labs_before + 1,
            "exactly one new hl7TextMessage row"
        );
        assert_eq!(count(&store, in_oscar).await, 1);
        assert_eq!(
            scalar_string(&store, &format!("SELECT status FROM oscarflow_dead_letter WHERE id = '{id}'")).await.as_deref(),
            Some("resolved")
        );
        // Open dead letters only, by default: it is gone from the list.
        assert!(b.try_find(&row).await.is_none(), "a resolved dead letter is not listed as open");

        // It cannot be re-driven again: no checkbox, no button, and a forged selection is
        // answered "not open any more".
        b.goto(&d.url("/console/dead-letters?status=all")).await;
        let text = b.wait_for(&row, PAGE).await.text().await;
        assert!(text.contains("resolved"), "{text}");
        assert!(b.try_find(&format!("{row} input[type=checkbox]")).await.is_none());
        b.execute(
            "const f = document.querySelector('form[action$=\"/dead-letters/redrive\"]'); \
             const i = document.createElement('input'); i.type = 'hidden'; i.name = 'id'; \
             i.value = arguments[0]; f.appendChild(i); f.submit(); return true;",
            vec![json!(format!("0:{id}"))],
        )
        .await;
        let again = b.wait_for("#redrive-result", PAGE).await.text().await;
        assert!(again.contains(&format!("{id}: not open any more")), "{again}");
        assert_eq!(count(&store, in_oscar).await, 1, "imported once, never twice");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
            labs_before + 1
        );

        // Its details, then its bytes: shown once asked, and the reveal journaled.
        b.goto(&d.url(&format!("/console/dead-letters/0/{id}"))).await;
        assert_eq!(b.wait_for("#status", PAGE).await.text().await, "resolved");
        assert!(b.try_find("#redrive-one").await.is_none());
        assert!(b.try_find("#raw").await.is_none(), "no bytes before the reveal");
        let revealed = format!(
            "SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'revealed' AND dead_letter_id = '{id}'"
        );
        assert_eq!(count(&store, &revealed).await, 0);
        b.find("#reveal").await.click().await;
        let raw = b.wait_for("#raw", PAGE).await.text().await;
        b.screenshot(&shot("reveal.png")).await;
        assert!(raw.starts_with("MSH|^~\\&|PATHL7|"), "the original bytes are shown");
        assert!(raw.contains("|ORU^R01|ZZ3001|"));
        assert!(raw.contains("26-300000001"));
        assert_eq!(count(&store, &revealed).await, 1, "the reveal is journaled");

        // The audit trail page: the labs written, the reveal with who did it, chains intact.
        b.goto(&d.url("/console/audit?verify=1")).await;
        b.wait_for("#audit", PAGE).await;
        let verified = b.text("#verify").await;
        assert!(verified.contains("intact") && !verified.contains("BROKEN"), "{verified}");
        let reads = b.find_all("tr[data-action=\"read\"]").await;
        assert_eq!(reads.len(), 1, "one read: the reveal");
        assert!(reads[0].text().await.contains("console token operator, session "));
        assert!(!b.find_all("tr[data-action=\"write\"]").await.is_empty());
        b.screenshot(&shot("audit.png")).await;
        b.close().await;
    })
    .await;
    eprintln!(
        "re-drive and reveal: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_a_request_without_the_session_or_with_a_forged_form_token() {
    let started = Instant::now();
    // chromedriver; without it (outside CI) the test is skipped.
    let Some(driver) = Driver::start().await else {
        return;
    };
    with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let d = Daemon::start(tmp.path(), &url, "truncate").await;
        let b = driver.session().await;
        log_in(&b, &d, None).await;

        // The session cookie: Secure, HttpOnly, SameSite=Strict, for the console only, and
        // hidden from scripts.
        let cookies = b.cookies().await;
        let c = cookies
            .iter()
            .find(|c| c.name == "oscarflow_console")
            .expect("the session cookie is kept");
        assert!(c.secure, "Secure");
        assert!(c.http_only, "HttpOnly");
        assert_eq!(c.same_site.as_deref(), Some("Strict"));
        assert_eq!(c.path.as_deref(), Some("/console"));
        assert_eq!(b.execute("return document.cookie", vec![]).await, json!(""));

        // A forged form token on the pause form: refused, nothing paused.
        b.find("nav a[href=\"/console/pipelines\"]")
            .await
            .click()
            .await;
        b.wait_for("#pause-labs", PAGE).await;
        let forged = b
            .execute(
                "const f = document.querySelector('form[action$=\"/labs/pause\"]'); \
                 f.querySelector('input[name=csrf]').value = '0'.repeat(64); \
                 return f.querySelector('input[name=csrf]').value;",
                vec![],
            )
            .await;
        assert_eq!(forged, json!("0".repeat(64)));
        b.find("#pause-labs").await.click().await;
        let refused = b.wait_for("p.error", PAGE).await.text().await;
        assert_eq!(b.text("h1").await, "Refused");
        assert!(refused.contains("This form's token is wrong"), "{refused}");
        b.screenshot(&shot("refused.png")).await;
        let state = d.pipelines_json();
        assert!(
            state.contains("\"paused\":false"),
            "nothing was paused: {state}"
        );

        // The same form with its own token: done (the session is still good).
        b.goto(&d.url("/console/pipelines")).await;
        b.wait_for("#pause-labs", PAGE).await.click().await;
        let done = b.wait_for("#control-result", PAGE).await.text().await;
        assert!(done.starts_with("labs: paused"), "{done}");
        assert!(d.pipelines_json().contains("\"paused\":true"));
        b.find("#resume-labs").await.click().await;
        wait_until(15, "the resume's answer", || async {
            b.source().await.contains("labs: resumed.")
        })
        .await;
        assert!(d.pipelines_json().contains("\"paused\":false"));

        // No session: pages send to the login page, forms are refused.
        b.delete_cookies().await;
        b.goto(&d.url("/console/pipelines")).await;
        b.wait_for("#token", PAGE).await;
        assert_eq!(b.url().await, d.url("/console/login"));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let a = http
            .post(d.url("/console/pipelines/labs/pause"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={}", "0".repeat(64)))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status().as_u16(), 403);
        assert!(a.text().await.unwrap().contains("Your session has ended"));
        assert!(d.pipelines_json().contains("\"paused\":false"));
        b.close().await;
    })
    .await;
    eprintln!("refusals: {:.1} s", started.elapsed().as_secs_f64());
}
