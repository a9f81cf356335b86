//! The fault suite: real processes die, a real database server stops, a disk fills up, the
//! RingCentral and SFTP servers go away — and every input still ends up in OSCAR exactly once.
//!
//! - `kill -9` of `oscarflow run` at 20 random moments of a 10,000-message import into a
//!   clone of the OSCAR database, each time restarted;
//! - a private MariaDB server stopped for 20 s while labs keep arriving (`/readyz` says 503
//!   meanwhile);
//! - the fax spool's file system full (a tmpfs the test mounts);
//! - the RingCentral emulator down mid-poll, and the SSH server killed mid-transfer.
//!
//! Each test prints `fault <name>: <N> inputs, lost: <L>, duplicated: <D>, …` from counts it
//! computed, before it asserts them, so CI logs show the figures.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use oscarflow::sources::list::ListItem;
use oscarflow::store::Store;

use common::rc_emulator::{pdf, RcEmulator};
use common::sources::SourceEvents;
use common::{bin, count, free_port, http_request, repo};

// ---------------------------------------------------------------------------------------------
// Synthetic labs: every message its own accession
// ---------------------------------------------------------------------------------------------

/// Fixtures whose messages serve as templates: matched patients with measurements, matched
/// patients of other labs, and a patient OSCAR does not know.
const TEMPLATE_FILES: &[&str] = &[
    "fixtures/hl7/pathl7/matched_chem.hl7",
    "fixtures/hl7/pathl7/multi_message.hl7",
    "fixtures/hl7/pathl7/unmatched_patient.hl7",
];

/// The single messages of [`TEMPLATE_FILES`], each ending in `\r`.
fn templates() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in TEMPLATE_FILES {
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        for seg in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
            if seg.starts_with("MSH|") {
                out.push(String::new());
            }
            let m = out.last_mut().expect("a fixture starts with MSH");
            m.push_str(seg);
            m.push('\r');
        }
    }
    out
}

/// Message `k`: template `k % n` with its own control id (`MSH-10 = FLTk`) and its own
/// accession (`27-<k>`, in place of the template's `26-<n>` everywhere).
fn message(templates: &[String], k: usize) -> String {
    let t = &templates[k % templates.len()];
    let orc = t.split('\r').find(|s| s.starts_with("ORC|")).unwrap();
    let accession = orc.split('|').nth(3).unwrap();
    let base: String = accession
        .splitn(3, '-')
        .take(2)
        .collect::<Vec<_>>()
        .join("-");
    let mut m = t.replace(&base, &format!("27-{k:09}"));
    let msh = m.split('\r').next().unwrap().to_string();
    let mut f: Vec<&str> = msh.split('|').collect();
    let control = format!("FLT{k:06}");
    f[9] = &control;
    m = m.replacen(&msh, &f.join("|"), 1);
    m
}

/// The messages `range` as one lab file.
fn lab_file(templates: &[String], range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .map(|k| message(templates, k))
        .collect::<String>()
        .into_bytes()
}

/// What one message of each template writes in OSCAR, measured by importing one of each
/// into a fresh embedded store: `(patientLabRouting, providerLabRouting, measurements)`.
async fn per_template_rows(templates: &[String]) -> Vec<(i64, i64, i64)> {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let mut out = Vec::new();
    let tables = ["patientLabRouting", "providerLabRouting", "measurements"];
    for (t, _) in templates.iter().enumerate() {
        let mut before = Vec::new();
        for table in tables {
            before.push(count(&store, &format!("SELECT COUNT(*) FROM {table}")).await);
        }
        // Message numbers far from any test's, with template `t`.
        let k = 900_000 * templates.len() + t;
        let path = tmp.path().join(format!("t{t}.hl7"));
        std::fs::write(&path, lab_file(templates, k..k + 1)).unwrap();
        common::run_items(
            &common::lab_pipeline(),
            &store,
            vec![ListItem::File(path)],
            None,
        )
        .await;
        let mut after = Vec::new();
        for table in tables {
            after.push(count(&store, &format!("SELECT COUNT(*) FROM {table}")).await);
        }
        out.push((
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
        ));
    }
    assert!(
        out.iter().any(|r| r.0 == 1 && r.2 > 0),
        "some templates match a patient and write measurements: {out:?}"
    );
    assert!(out.iter().any(|r| r.0 == 0), "some do not match: {out:?}");
    out
}

/// Labs in OSCAR and their faults, from the database: the figures a fault test prints.
#[derive(Debug, Default)]
struct LabFigures {
    expected_messages: i64,
    /// Distinct synthetic accessions in `hl7TextInfo`.
    imported: i64,
    /// `hl7TextMessage` rows.
    text_messages: i64,
    /// Rows beyond one per accession, per file MD5 and per routing key, plus measurements
    /// beyond the expected count.
    duplicated: i64,
    /// Expected messages missing, and labs without any provider routing (invisible).
    lost: i64,
    upload_checks: i64,
    provider_routing: i64,
    patient_routing: i64,
    measurements: i64,
    expected_measurements: i64,
    dead_letters: i64,
}

impl LabFigures {
    /// Reads the figures for messages `0..messages` of the synthetic set from `store`.
    async fn read(store: &Store, templates: &[String], messages: usize) -> LabFigures {
        let rows = per_template_rows(templates).await;
        let expect = |f: fn(&(i64, i64, i64)) -> i64| -> i64 {
            (0..messages).map(|k| f(&rows[k % rows.len()])).sum()
        };
        let q = |sql: &'static str| async move { count(store, sql).await };
        let imported = q(
            "SELECT COUNT(DISTINCT accessionNum) FROM hl7TextInfo WHERE accessionNum LIKE '27-%'",
        )
        .await;
        let info_rows = q("SELECT COUNT(*) FROM hl7TextInfo WHERE accessionNum LIKE '27-%'").await;
        let text_messages = q("SELECT COUNT(*) FROM hl7TextMessage").await;
        let upload_checks = q("SELECT COUNT(*) FROM fileUploadCheck").await;
        let upload_dups =
            upload_checks - q("SELECT COUNT(DISTINCT md5sum) FROM fileUploadCheck").await;
        let provider_routing =
            q("SELECT COUNT(*) FROM providerLabRouting WHERE lab_type = 'HL7'").await;
        let provider_dups = q("SELECT COUNT(*) FROM (SELECT lab_no, provider_no FROM providerLabRouting WHERE lab_type = 'HL7' GROUP BY lab_no, provider_no HAVING COUNT(*) > 1) d").await;
        let patient_routing =
            q("SELECT COUNT(*) FROM patientLabRouting WHERE lab_type = 'HL7'").await;
        let patient_dups = q("SELECT COUNT(*) FROM (SELECT lab_no FROM patientLabRouting WHERE lab_type = 'HL7' GROUP BY lab_no HAVING COUNT(*) > 1) d").await;
        let unrouted = q("SELECT COUNT(*) FROM hl7TextInfo i WHERE NOT EXISTS (SELECT 1 FROM providerLabRouting p WHERE p.lab_no = i.lab_no AND p.lab_type = 'HL7')").await;
        let measurements = q("SELECT COUNT(*) FROM measurements").await;
        let dead_letters = q("SELECT COUNT(*) FROM oscarflow_dead_letter").await;
        let expected_measurements = expect(|r| r.2);
        let expected_messages = messages as i64;
        LabFigures {
            expected_messages,
            imported,
            text_messages,
            duplicated: (info_rows - imported)
                + (text_messages - expected_messages).max(0)
                + upload_dups
                + provider_dups
                + patient_dups
                + (patient_routing - expect(|r| r.0)).max(0)
                + (provider_routing - expect(|r| r.1)).max(0)
                + (measurements - expected_measurements).max(0),
            lost: (expected_messages - imported)
                + unrouted
                + (expect(|r| r.0) - patient_routing).max(0)
                + (expected_measurements - measurements).max(0),
            upload_checks,
            provider_routing,
            patient_routing,
            measurements,
            expected_measurements,
            dead_letters,
        }
    }

    fn line(&self) -> String {
        format!(
            "{} messages, lost: {}, duplicated: {}; imported {}, hl7TextMessage {}, fileUploadCheck {}, providerLabRouting {}, patientLabRouting {}, measurements {} (expected {}), dead letters {}",
            self.expected_messages,
            self.lost,
            self.duplicated,
            self.imported,
            self.text_messages,
            self.upload_checks,
            self.provider_routing,
            self.patient_routing,
            self.measurements,
            self.expected_measurements,
            self.dead_letters
        )
    }

    fn assert_exactly_once(&self) {
        assert_eq!(self.lost, 0, "{self:?}");
        assert_eq!(self.duplicated, 0, "{self:?}");
        assert_eq!(self.imported, self.expected_messages, "{self:?}");
        assert_eq!(self.text_messages, self.expected_messages, "{self:?}");
        assert_eq!(self.measurements, self.expected_measurements, "{self:?}");
        assert_eq!(self.dead_letters, 0, "nothing dead-lettered: {self:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon as a child process
// ---------------------------------------------------------------------------------------------

/// A folder lab pipeline (parse → match → oscar_lab) moving committed files to `processed`.
fn folder_lab_pipeline(inbox: &Path, processed: &Path, retry_after: &str) -> String {
    format!(
        "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nprocessed_dir = \"{}\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\nretry_after = \"{retry_after}\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\n",
        inbox.display(),
        processed.display()
    )
}

/// `<dir>/inbox` (created) and `<dir>/processed`, with `<dir>/pipelines/labs.toml` reading
/// the one into the other ([`folder_lab_pipeline`]).
fn lab_pipeline_dir(dir: &Path, retry_after: &str) -> (PathBuf, PathBuf) {
    let (inbox, processed) = (dir.join("inbox"), dir.join("processed"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("pipelines/labs.toml"),
        folder_lab_pipeline(&inbox, &processed, retry_after),
    )
    .unwrap();
    (inbox, processed)
}

/// `oscarflow run` on the pipelines of `dir/pipelines` and `db_url` (passed in the
/// environment, not on the command line), its log appended to `dir/daemon.log`. Killed with
/// SIGKILL when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(dir: &Path, db_url: &str, listen: &str) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["run", "--pipelines"])
            .arg(dir.join("pipelines"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--grace-period", "10s", "--listen", listen])
            .env("OSCARFLOW_DATABASE_URL", db_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oscarflow run");
        Daemon(child)
    }

    /// `kill -9`.
    fn kill_nine(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        signal(self.0.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints one line of the fault report and appends it to `<target>/tmp/fault-suite.txt`,
/// which `.ci/run` prints after the test run (cargo hides a passing test's output).
fn report(line: String) {
    use std::io::Write;
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-suite.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most `secs`) until `done` holds; panics with `what` and the log tail otherwise.
fn wait_until(secs: u64, what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!("timed out after {secs} s waiting for {what}; log tail:\n{tail:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No patient name or health number of the templates in the daemon's log.
fn assert_no_phi(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for phi in [
        "TESTPATIENT",
        "ZZNOMATCH",
        "9000000011",
        "9000000029",
        "9000000995",
    ] {
        assert!(!text.contains(phi), "the daemon's log holds PHI ({phi})");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 × 20 during a 10,000-message import
// ---------------------------------------------------------------------------------------------

const MESSAGES: usize = 10_000;
const KILLS: usize = 20;

#[test]
fn twenty_kill_nines_during_a_ten_thousand_message_import_lose_and_duplicate_nothing_and_the_journal_and_audit_always_equal_oscars_labs(
) {
    let Some(source) = common::mariadb::server_url() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(common::mariadb::TestDb::create(&source));
    let result = std::panic::catch_unwind(|| kill_nine_import(&rt, &db.url));
    rt.block_on(db.drop_database());
    if let Err(p) = result {
        eprintln!("test database was {}", db.name);
        std::panic::resume_unwind(p);
    }
}

/// The journal's imported labs and the audit trail's labs against OSCAR's: (journal rows,
/// `hl7TextMessage` rows, audited labs, labs missing from any of the three).
async fn journal_against_oscar(store: &Store) -> (i64, i64, i64, i64) {
    let journal = count(
        store,
        "SELECT COUNT(*) FROM oscarflow_journal WHERE kind = 'lab' AND outcome = 'imported'",
    )
    .await;
    let oscar = count(store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    let only_journal = count(store, "SELECT COUNT(*) FROM oscarflow_journal j WHERE j.kind = 'lab' AND j.outcome = 'imported' AND NOT EXISTS (SELECT 1 FROM hl7TextMessage m WHERE m.lab_id = j.lab_no)").await;
    let only_oscar = count(store, "SELECT COUNT(*) FROM hl7TextMessage m WHERE NOT EXISTS (SELECT 1 FROM oscarflow_journal j WHERE j.lab_no = m.lab_id AND j.outcome = 'imported')").await;
    // The audit trail's row of each lab, written in the same transaction.
    let audited = count(
        store,
        "SELECT COUNT(*) FROM oscarflow_audit WHERE action = 'write' AND lab_no IS NOT NULL",
    )
    .await;
    let only_audit = count(store, "SELECT COUNT(*) FROM oscarflow_audit a WHERE a.action = 'write' AND a.lab_no IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hl7TextMessage m WHERE m.lab_id = a.lab_no)").await;
    let unaudited = count(store, "SELECT COUNT(*) FROM hl7TextMessage m WHERE NOT EXISTS (SELECT 1 FROM oscarflow_audit a WHERE a.lab_no = m.lab_id AND a.action = 'write')").await;
    (
        journal,
        oscar,
        audited,
        only_journal + only_oscar + only_audit + unaudited,
    )
}

fn kill_nine_import(rt: &tokio::runtime::Runtime, url: &str) {
    let seed = std::env::var("OSCARFLOW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, processed) = lab_pipeline_dir(tmp.path(), "2s");

    // 10,000 messages in files of 1–10, then byte-identical copies of some files under
    // other names: OSCAR's MD5 check makes those duplicates by design (nothing written).
    let templates = templates();
    let mut names = Vec::new();
    let mut k = 0;
    while k < MESSAGES {
        let n = rng.gen_range(1..=10).min(MESSAGES - k);
        let name = format!("lab{:05}.hl7", names.len());
        std::fs::write(inbox.join(&name), lab_file(&templates, k..k + n)).unwrap();
        names.push(name);
        k += n;
    }
    let distinct_files = names.len();
    for d in 0..40 {
        let of = &names[rng.gen_range(0..distinct_files)];
        let copy = format!("zdup{d:02}-{of}");
        std::fs::copy(inbox.join(of), inbox.join(&copy)).unwrap();
        names.push(copy);
    }
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let total = all.len();

    // The kills: at 20 random points of the import (by files released, within its first
    // 90 %), each a random 0–300 ms later still.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| rng.gen_range(1..total * 9 / 10))
        .collect();
    points.sort();
    let log = tmp.path().join("daemon.log");
    let started = Instant::now();
    let mut at_kill = Vec::new();
    // The journal commits with the OSCAR rows: after every kill they are the same labs.
    let store = rt.block_on(Store::open(url)).unwrap();
    let mut journal_at_kill = Vec::new();
    for point in &points {
        let mut daemon = Daemon::start(tmp.path(), url, "off");
        wait_until(180, "the import to progress", &log, || {
            if let Some(s) = daemon.exited() {
                panic!("the daemon exited on its own: {s}");
            }
            files_in(&processed).len() >= *point
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        daemon.kill_nine();
        at_kill.push(files_in(&processed).len());
        journal_at_kill.push(rt.block_on(journal_against_oscar(&store)));
    }
    // The last start runs to the end (and is stopped with SIGTERM once it answers).
    let port = free_port();
    let daemon = Daemon::start(tmp.path(), url, &format!("127.0.0.1:{port}"));
    wait_until(60, "/healthz", &log, || {
        http_request("GET", port, "/healthz", None).is_some()
    });
    wait_until(300, "every file to be released", &log, || {
        files_in(&processed).len() >= total
    });
    let code = daemon.stop();
    let secs = started.elapsed().as_secs_f64();

    let released = files_in(&processed);
    let left = files_in(&inbox);
    let journal_at_end = rt.block_on(journal_against_oscar(&store));
    let figures = rt.block_on(LabFigures::read(&store, &templates, MESSAGES));
    let files_lost = all
        .difference(&released)
        .filter(|n| !left.contains(*n))
        .count() as i64;
    let stray = released.difference(&all).count();
    let in_lab_import = rt.block_on(count(&store, "SELECT COUNT(*) FROM oscarflow_lab_import"));
    report(format!(
        "fault kill_nine: {KILLS} SIGKILLs (seed {seed}) at files released {at_kill:?}, {total} input files ({distinct_files} distinct + {} byte-identical copies) in {secs:.1} s; files released {}, left {}, lost {files_lost}; {}",
        total - distinct_files,
        released.len(),
        left.len(),
        figures.line()
    ));
    let journal_mismatches: i64 =
        journal_at_kill.iter().map(|j| j.3).sum::<i64>() + journal_at_end.3;
    report(format!(
        "fault kill_nine: journal and audit against OSCAR (journal labs, hl7TextMessage rows, audited labs, labs not in all three) after each kill {journal_at_kill:?}, at the end {journal_at_end:?}"
    ));
    report(format!(
        "fault kill_nine: lost: {}, duplicated: {}",
        figures.lost + files_lost,
        figures.duplicated
    ));
    assert_eq!(code, Some(0), "the last run drains and exits 0");
    assert!(
        at_kill.iter().all(|n| *n < total),
        "every kill landed mid-import: {at_kill:?}"
    );
    assert_eq!(files_lost, 0);
    assert!(left.is_empty(), "nothing left in the inbox: {left:?}");
    assert_eq!(released, all, "every input released, under its own name");
    assert_eq!(stray, 0);
    assert_eq!(
        figures.upload_checks, distinct_files as i64,
        "one fileUploadCheck per distinct file"
    );
    assert_eq!(in_lab_import, distinct_files as i64);
    figures.assert_exactly_once();
    for (i, (journal, oscar, audited, differ)) in journal_at_kill.iter().enumerate() {
        assert_eq!(
            (journal, audited, differ),
            (oscar, oscar, &0),
            "after kill {i}: the journal's labs and the audited labs are OSCAR's labs"
        );
    }
    assert_eq!(
        journal_at_end,
        (MESSAGES as i64, MESSAGES as i64, MESSAGES as i64, 0),
        "at the end the journal and the audit trail have every lab OSCAR has, once"
    );
    assert_eq!(journal_mismatches, 0);
    assert_no_phi(&log);
}

// ---------------------------------------------------------------------------------------------
// 2. MariaDB stopped for 20 seconds
// ---------------------------------------------------------------------------------------------

/// A MariaDB server of the test's own (its data directory, port and socket under a temporary
/// directory), so that stopping it disturbs no other test. Killed when dropped.
struct PrivateMariadb {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `None` outside CI when the MariaDB server programs are not installed.
fn private_mariadb(dir: &Path) -> Option<PrivateMariadb> {
    let found = ["mariadbd", "mariadb-install-db", "mariadb-dump", "mariadb"]
        .iter()
        .all(|p| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p} || test -x /usr/sbin/{p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "the MariaDB server programs are missing: .ci/run installs mariadb-server"
        );
        eprintln!("skipping: mariadbd / mariadb-install-db not installed");
        return None;
    }
    let dir = dir.join("mariadb");
    std::fs::create_dir_all(&dir).unwrap();
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if as_root() {
        install.arg("--user=root");
    }
    let out = install.output().expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db = PrivateMariadb {
        dir,
        port: free_port(),
        child: None,
    };
    db.start();
    Some(db)
}

impl PrivateMariadb {
    fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args(["--no-defaults", "-h127.0.0.1", "-uroot"])
            .arg(format!("-P{}", self.port));
        c
    }

    /// Starts the server on its data directory and port; returns once it answers.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(if Path::new("/usr/sbin/mariadbd").exists() {
            "/usr/sbin/mariadbd"
        } else {
            "mariadbd"
        });
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-strict-mode=0",
                "--sql-mode=NO_ENGINE_SUBSTITUTION",
                "--character-set-server=utf8mb4",
            ]);
        if as_root() {
            cmd.arg("--user=root");
        }
        self.child = Some(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mariadbd starts"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .client()
            .args(["-e", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "the private mariadbd did not answer: see {}",
                self.dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server the way an operator or a crash-free restart does (SIGTERM), and
    /// waits until the process is gone.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "mariadbd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Copies OSCAR's tables (schema and the synthetic clinic) from the shared test
    /// database into database `name` here.
    fn load_oscar(&self, source_url: &str, name: &str) {
        let u = url::Url::parse(source_url).unwrap();
        let source_db = u.path().trim_start_matches('/');
        let st = self
            .client()
            .args([
                "-e",
                &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let mut dump = Command::new("mariadb-dump")
            .args(["--no-defaults", "--single-transaction"])
            .arg(format!("-h{}", u.host_str().unwrap()))
            .arg(format!("-P{}", u.port().unwrap_or(3306)))
            .arg(format!("-u{}", u.username()))
            .env("MYSQL_PWD", u.password().unwrap_or(""))
            .arg(source_db)
            .args(common::mariadb::CLONED_TABLES)
            .stdout(Stdio::piped())
            .spawn()
            .expect("mariadb-dump");
        let load = self
            .client()
            .arg(name)
            .stdin(dump.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(
            dump.wait().unwrap().success() && load.success(),
            "copy OSCAR's tables"
        );
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn readyz(port: u16) -> Option<u16> {
    http_request("GET", port, "/readyz", None).map(|(s, _)| s)
}

#[test]
fn mariadb_stopped_for_twenty_seconds_makes_the_daemon_unready_and_it_resumes_losing_nothing() {
    mariadb_outage(
        "mariadb_stopped",
        Duration::from_secs(20),
        Duration::from_millis(250),
    );
}

/// Longer than the retry budget (about 65 s), which used to dead-letter every lab that
/// arrived meanwhile: the pipeline holds its intake instead, the labs wait in the folder,
/// and all of them are imported within a minute of the restart. `OSCARFLOW_FAULT_OUTAGE_SECS`
/// shortens it for a local run.
#[test]
fn mariadb_stopped_for_five_minutes_under_a_steady_stream_dead_letters_nothing_and_catches_up_within_a_minute(
) {
    let secs = std::env::var("OSCARFLOW_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    mariadb_outage(
        "mariadb_outage_5min",
        Duration::from_secs(secs),
        Duration::from_secs(1),
    );
}

/// A private MariaDB stopped for `outage` while a lab file arrives every `every`, before,
/// during and after; `/readyz` polled throughout.
fn mariadb_outage(name: &str, outage: Duration, every: Duration) {
    let Some(source) = common::mariadb::server_url() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut db) = private_mariadb(tmp.path()) else {
        return;
    };
    db.load_oscar(&source, "oscar_private");
    let url = db.url("oscar_private");
    let (inbox, processed) = lab_pipeline_dir(tmp.path(), "5s");
    let templates = templates();
    let per_file = 3;
    let mut files = 0;
    let drop_lab = |files: &mut usize| {
        let k = *files * per_file;
        let name = format!("lab{:04}.hl7", *files);
        common::drop_file(&inbox, &name, lab_file(&templates, k..k + per_file));
        *files += 1;
    };
    let port = free_port();
    let log = tmp.path().join("daemon.log");
    let daemon = Daemon::start(tmp.path(), &url, &format!("127.0.0.1:{port}"));
    wait_until(60, "/readyz 200", &log, || readyz(port) == Some(200));

    // Labs arrive steadily, before, during and after the outage.
    for _ in 0..20 {
        drop_lab(&mut files);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until(60, "the first labs to be imported", &log, || {
        files_in(&processed).len() >= 10
    });
    db.stop();
    let down_at = Instant::now();
    // `/readyz` polled every 500 ms from another thread while labs keep arriving.
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let polling = polling.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while polling.load(std::sync::atomic::Ordering::SeqCst) {
                let s = readyz(port);
                seen.push((down_at.elapsed(), s));
                std::thread::sleep(Duration::from_millis(500));
            }
            seen
        })
    };
    while down_at.elapsed() < outage {
        drop_lab(&mut files);
        std::thread::sleep(every);
    }
    polling.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = poller.join().unwrap();
    let statuses: Vec<Option<u16>> = seen.iter().map(|(_, s)| *s).collect();
    let first_503 = seen
        .iter()
        .find(|(_, s)| *s == Some(503))
        .map(|(at, _)| *at);
    let during_outage = files_in(&processed).len();
    let waiting = files - during_outage;
    db.start();
    let up_at = Instant::now();
    // Everything that arrived meanwhile is imported within a minute of the restart.
    let dropped = files;
    wait_until(60, "the labs that waited to be imported", &log, || {
        files_in(&processed).len() >= dropped
    });
    let caught_up = up_at.elapsed();
    wait_until(60, "/readyz 200 again", &log, || readyz(port) == Some(200));
    let ready_again = up_at.elapsed();
    for _ in 0..20 {
        drop_lab(&mut files);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until(120, "every lab to be released", &log, || {
        files_in(&processed).len() >= files
    });
    let code = daemon.stop();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(Store::open(&url)).unwrap();
    let figures = rt.block_on(LabFigures::read(&store, &templates, files * per_file));
    let n503 = statuses.iter().filter(|s| **s == Some(503)).count();
    let n200 = statuses.iter().filter(|s| **s == Some(200)).count();
    report(format!(
        "fault {name}: {files} input files, MariaDB down {} s: /readyz 503 {n503} times of {} (first after {:.1} s, 200 {n200} times), released by the end of the outage {during_outage}, {waiting} waiting in the folder, all imported {:.1} s and /readyz 200 {:.1} s after the restart; {}",
        outage.as_secs(),
        statuses.len(),
        first_503.map_or(f64::NAN, |d| d.as_secs_f64()),
        caught_up.as_secs_f64(),
        ready_again.as_secs_f64(),
        figures.line()
    ));
    report(format!(
        "fault {name}: lost: {}, duplicated: {}",
        figures.lost, figures.duplicated
    ));
    assert_eq!(code, Some(0));
    assert!(
        first_503.is_some_and(|d| d < Duration::from_secs(10)),
        "unready while the database is down: {statuses:?}"
    );
    assert!(files_in(&inbox).is_empty());
    assert!(waiting > 0, "labs waited in the folder during the outage");
    figures.assert_exactly_once();
    assert_no_phi(&log);
}

// ---------------------------------------------------------------------------------------------
// 3. The spool's disk full
// ---------------------------------------------------------------------------------------------

/// A small tmpfs mounted on a directory (root only), unmounted when dropped: a file system
/// that really fills up.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (after a notice) when the test cannot mount, outside CI; in CI (root) a failure.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = as_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(path.to_path_buf()));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs on {} (CI runs as root)",
            path.display()
        );
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        None
    }

    /// Fills the file system with one file until the kernel says no space is left.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.0.join(".filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", self.0.display()),
            }
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A fax pipeline running (polling every second) until `stop` is called.
struct FaxPipeline {
    running: oscarflow::topology::RunningPipeline,
    events: Arc<SourceEvents>,
}

impl FaxPipeline {
    fn start(toml: &str, store: &Store) -> FaxPipeline {
        let cfg = oscarflow::config::load_str(Path::new("fax_inbox.toml"), toml).unwrap();
        let events = Arc::new(SourceEvents::default());
        let running = oscarflow::topology::build(
            &cfg,
            store,
            oscarflow::topology::BuildOptions {
                observers: oscarflow::telemetry::Observers::none().with(events.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        FaxPipeline { running, events }
    }

    async fn stop(self) {
        self.running.stop_intake();
        common::sources::wait(self.running, 60).await.unwrap();
    }
}

async fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Faxes filed: (documents, distinct RingCentral message ids filed, dead letters).
async fn fax_figures(store: &Store) -> (i64, i64, i64) {
    (
        count(store, "SELECT COUNT(*) FROM document").await,
        count(store, "SELECT COUNT(DISTINCT message_id) FROM oscarflow_fax_inbound WHERE outcome = 'imported'").await,
        count(store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
    )
}

/// Files in `dir` that are not the filler; their total size.
fn payload_files(dir: &Path) -> (usize, u64) {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name() != ".filler" && e.path().is_file())
                .fold((0, 0), |(n, b), e| {
                    (n + 1, b + e.metadata().map_or(0, |m| m.len()))
                })
        })
        .unwrap_or_default()
}

/// Documents in `docs` whose bytes differ from the fax RingCentral sent (by the
/// `fax-<id>.pdf` suffix of the file name): faxes lost although filed.
fn corrupted_documents(docs: &Path) -> usize {
    files_in(docs)
        .iter()
        .filter(|name| {
            let id: i64 = name
                .rsplit_once("fax-")
                .and_then(|(_, rest)| rest.strip_suffix(".pdf"))
                .and_then(|id| id.parse().ok())
                .expect("an OSCAR fax document name");
            std::fs::read(docs.join(name.as_str())).unwrap() != pdf(id, FAX_BYTES)
        })
        .count()
}

const FAXES: i64 = 12;
const FAX_BYTES: usize = 100_000;

/// RingCentral with `FAXES` inbound faxes of 100 kB each.
async fn emulator_with_faxes(first_id: i64) -> RcEmulator {
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    for i in 0..FAXES {
        emu.add_fax(
            first_id + i,
            start + time::Duration::minutes(i),
            3,
            pdf(first_id + i, FAX_BYTES),
        );
    }
    emu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_gives_a_clear_error_and_loses_nothing() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    // The file system holding the spool fills up (with something else than the spool).
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "1m") else {
        return;
    };
    let spool = disk.0.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let filler = disk.fill();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = emulator_with_faxes(7_000).await;
    let toml = common::rc_emulator::fax_pipeline_toml(&emu, tmp.path(), "SPOOLFULL", &spool, "1s");
    let fax = FaxPipeline::start(&toml, &store);
    let events = fax.events.clone();
    wait_for(60, "three failed polls", || {
        events.failed.lock().unwrap().len() >= 3
    })
    .await;
    let errors = events.failed.lock().unwrap().clone();
    let while_full = fax_figures(&store).await;
    let read_while_full = emu.read_ids().len();
    let (spooled, _) = payload_files(&spool);
    let docs_while_full = payload_files(&tmp.path().join("document")).0;
    // The clear error: each fax not taken, with the reason the kernel gave.
    let logs = common::logs::text();
    let no_space = logs
        .lines()
        .filter(|l| l.contains("Fax not taken") && l.contains("No space left on device"))
        .count();
    let example = logs
        .lines()
        .find(|l| l.contains("Fax not taken"))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"]["error"].to_string())
        .unwrap_or_default();

    std::fs::remove_file(&filler).unwrap();
    wait_for(60, "every fax to be filed", || {
        emu.read_ids().len() as i64 >= FAXES
    })
    .await;
    fax.stop().await;
    let (docs, filed, dead) = fax_figures(&store).await;
    let corrupted = corrupted_documents(&tmp.path().join("document")) as i64;
    let lost = FAXES - filed + corrupted;
    let duplicated = docs - filed;
    report(format!(
        "fault spool_full: {FAXES} faxes, {corrupted} filed with other bytes than sent, spool disk full: {} failed polls (\"{}\"), {no_space} \"Fax not taken\" warnings naming the full disk ({example}), {} filed, {} marked read, {spooled} left in the spool, {docs_while_full} in DOCUMENT_DIR; space freed: {docs} documents, {filed} distinct faxes filed, {} marked read, {dead} dead letters, lost: {lost}, duplicated: {duplicated}",
        errors.len(),
        errors.first().map(String::as_str).unwrap_or(""),
        while_full.0,
        read_while_full,
        emu.read_ids().len()
    ));
    assert!(no_space >= 1, "a warning names the full disk");
    assert_eq!(
        while_full,
        (0, 0, 0),
        "nothing filed or dead-lettered while full"
    );
    assert_eq!(read_while_full, 0, "nothing marked read while full");
    assert_eq!(docs_while_full, 0, "no partial document");
    assert_eq!((lost, duplicated, dead), (0, 0, 0));
    assert_eq!(payload_files(&spool).0, 0, "the spool is emptied");
    common::logs::assert_absent(&["6045550199", "16045550199"], "a sender's fax number");
}

// ---------------------------------------------------------------------------------------------
// 4. RingCentral and SFTP outages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcentral_down_mid_poll_and_back_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = emulator_with_faxes(8_000).await;
    // RingCentral goes away after the 5th download, in the middle of a poll.
    emu.state.lock().unwrap().down_after_downloads = Some(5);
    let toml = common::rc_emulator::fax_pipeline_toml(
        &emu,
        tmp.path(),
        "RCDOWN",
        &tmp.path().join("spool"),
        "1s",
    );
    let fax = FaxPipeline::start(&toml, &store);
    let events = fax.events.clone();
    wait_for(60, "failed polls while down", || {
        events.failed.lock().unwrap().len() >= 3
    })
    .await;
    let while_down = fax_figures(&store).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    emu.state.lock().unwrap().down = false;
    wait_for(60, "every fax to be filed", || {
        emu.read_ids().len() as i64 >= FAXES
    })
    .await;
    fax.stop().await;
    let (docs, filed, dead) = fax_figures(&store).await;
    let failed = events.failed.lock().unwrap().len();
    let corrupted = corrupted_documents(&tmp.path().join("document")) as i64;
    let (lost, duplicated) = (FAXES - filed + corrupted, docs - filed);
    report(format!(
        "fault ringcentral_down: {FAXES} faxes, down after 5 downloads: {} filed while down, {failed} failed polls; back: {docs} documents, {filed} distinct faxes filed, {} marked read, {dead} dead letters, lost: {lost}, duplicated: {duplicated}",
        while_down.0,
        emu.read_ids().len()
    ));
    assert!(while_down.0 <= 5, "{while_down:?}");
    assert_eq!((lost, duplicated, dead), (0, 0, 0));
    let mut read = emu.read_ids();
    read.dedup();
    assert_eq!(read.len() as i64, FAXES, "each fax marked read once filed");
}

/// An SSH server whose drop folder holds `files` lab files of `PER_SFTP_FILE` synthetic
/// messages each, and a seeded embedded store.
struct SftpCase {
    tmp: tempfile::TempDir,
    sshd: common::sshd::Sshd,
    store: Store,
    remote: PathBuf,
    templates: Vec<String>,
    files: usize,
}

const PER_SFTP_FILE: usize = 5;

impl SftpCase {
    /// `None` (the test returns) outside CI when OpenSSH is not installed.
    async fn new(files: usize) -> Option<SftpCase> {
        let tmp = tempfile::tempdir().unwrap();
        let sshd = common::sshd::Sshd::start(tmp.path())?;
        let store = common::seeded_store(tmp.path()).await;
        let remote = tmp.path().join("outbox");
        std::fs::create_dir_all(&remote).unwrap();
        let templates = templates();
        for i in 0..files {
            let k = i * PER_SFTP_FILE;
            std::fs::write(
                remote.join(format!("lab{i:04}.hl7")),
                lab_file(&templates, k..k + PER_SFTP_FILE),
            )
            .unwrap();
        }
        Some(SftpCase {
            tmp,
            sshd,
            store,
            remote,
            templates,
            files,
        })
    }

    /// The lab pipeline with the SFTP source spooling to `spool`, running.
    fn start(
        &self,
        spool: &Path,
        tag: &str,
    ) -> (oscarflow::topology::RunningPipeline, Arc<SourceEvents>) {
        let source = oscarflow::sources::sftp::SftpSource::new(self.sshd.sftp_config(
            self.sshd.port,
            &self.remote,
            spool,
            tag,
        ))
        .unwrap();
        let events = Arc::new(SourceEvents::default());
        let running = common::sources::start(
            &common::lab_pipeline(),
            &self.store,
            Box::new(source),
            Some(events.clone()),
        );
        (running, events)
    }

    /// Files still on the server.
    fn left(&self) -> usize {
        files_in(&self.remote).len()
    }

    /// Waits until the server's folder is empty, stops the pipeline and reads the figures.
    async fn finish(&self, running: oscarflow::topology::RunningPipeline) -> LabFigures {
        wait_for(120, "every file to be released", || self.left() == 0).await;
        running.stop_intake();
        common::sources::wait(running, 60).await.unwrap();
        LabFigures::read(&self.store, &self.templates, self.files * PER_SFTP_FILE).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_server_killed_mid_transfer_and_restarted_loses_and_duplicates_nothing() {
    let Some(mut case) = SftpCase::new(200).await else {
        return;
    };
    let spool = case.tmp.path().join("spool");
    let (running, events) = case.start(&spool, "FAULTKILL");
    // Killed while files are in transfer: a quarter released, the rest still coming.
    wait_for(60, "a quarter of the files", || case.left() <= 150).await;
    case.sshd.kill();
    let at_kill = case.files - case.left();
    // Down until the source has met the outage (its next poll fails), however busy the
    // pipeline is with what it had already downloaded.
    wait_for(60, "a poll to fail while the server is down", || {
        !events.failed.lock().unwrap().is_empty()
    })
    .await;
    let while_down = events.failed.lock().unwrap().len();
    case.sshd.restart();
    let figures = case.finish(running).await;
    report(format!(
        "fault sftp_killed: {} files, sshd killed (SIGKILL, sessions too) after {at_kill} released, {while_down} failed polls while down, restarted: {}",
        case.files,
        figures.line()
    ));
    report(format!(
        "fault sftp_killed: lost: {}, duplicated: {}",
        figures.lost, figures.duplicated
    ));
    assert!(at_kill < case.files, "killed mid-run");
    assert!(while_down >= 1, "the outage was seen");
    figures.assert_exactly_once();
    assert_eq!(figures.upload_checks, case.files as i64);
    assert!(files_in(&spool).is_empty(), "no partial download left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sftp_spool_disk_gives_a_clear_error_and_loses_nothing() {
    let Some(case) = SftpCase::new(20).await else {
        return;
    };
    let Some(disk) = Tmpfs::mount(&case.tmp.path().join("disk"), "1m") else {
        return;
    };
    let spool = disk.0.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let filler = disk.fill();
    let (running, events) = case.start(&spool, "SPOOLFULL");
    wait_for(60, "three failed polls", || {
        events.failed.lock().unwrap().len() >= 3
    })
    .await;
    let errors = events.failed.lock().unwrap().clone();
    let imported_while_full = count(&case.store, "SELECT COUNT(*) FROM hl7TextInfo").await;
    let left_while_full = case.left();
    std::fs::remove_file(&filler).unwrap();
    let figures = case.finish(running).await;
    report(format!(
        "fault sftp_spool_full: {} files, spool disk full: {} failed polls (\"{}\"), {imported_while_full} messages imported and {} of {} files released while full; space freed: {}",
        case.files,
        errors.len(),
        errors.first().map(String::as_str).unwrap_or(""),
        case.files - left_while_full,
        case.files,
        figures.line()
    ));
    report(format!(
        "fault sftp_spool_full: lost: {}, duplicated: {}",
        figures.lost, figures.duplicated
    ));
    assert!(
        errors.iter().all(|e| e.contains("No space left on device")),
        "the poll errors name the full disk: {errors:?}"
    );
    assert_eq!(imported_while_full, 0, "nothing imported while full");
    assert_eq!(left_while_full, case.files, "nothing released while full");
    figures.assert_exactly_once();
    assert!(files_in(&spool).is_empty(), "the spool is emptied");
}

/// DOCUMENT_DIR full: the fax sink's write fails as a transient error, is retried, and the
/// fax is then kept in the dead-letter store with its bytes and left unread in RingCentral
/// (where the clinic still sees it). Nothing partial is filed or left in DOCUMENT_DIR.
/// Once space is back, `oscarflow dlq retry --all` files every one of them through the
/// pipeline's fax sink, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_document_dir_files_nothing_partially_and_keeps_every_fax_with_its_bytes() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    // DOCUMENT_DIR (`<disk>/document`) on a file system that fills up.
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "4m") else {
        return;
    };
    let store = common::sqlite_store(tmp.path()).await;
    let emu = emulator_with_faxes(9_000).await;
    let toml = common::rc_emulator::fax_pipeline_toml(
        &emu,
        &disk.0,
        "DOCFULL",
        &tmp.path().join("spool"),
        "1s",
    );
    let docs = disk.0.join("document");
    let filler = disk.fill();
    let fax = FaxPipeline::start(&toml, &store);
    let events = fax.events.clone();
    wait_for(60, "every fax to settle", || {
        events.settled.lock().unwrap().len() as i64 >= FAXES
    })
    .await;
    let (docs_n, filed, dead) = fax_figures(&store).await;
    let read = emu.read_ids().len();
    let leftovers = files_in(&docs);
    // Each dead letter holds the fax's bytes exactly.
    let kept: Vec<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM oscarflow_dead_letter")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    let intact = (0..FAXES)
        .filter(|i| kept.iter().any(|raw| *raw == pdf(9_000 + i, FAX_BYTES)))
        .count() as i64;
    std::fs::remove_file(&filler).unwrap();
    fax.stop().await;
    // The re-drive an operator would try once space is back.
    let pipelines = tmp.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join("fax_inbox.toml"), &toml).unwrap();
    let retry = Command::new(bin())
        .args(["dlq", "retry", "--all", "--pipelines"])
        .arg(&pipelines)
        .arg("--database")
        .arg(common::sqlite_url(tmp.path()))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let (docs_after, redriven, _) = fax_figures(&store).await;
    let open: i64 = common::count(
        &store,
        "SELECT COUNT(*) FROM oscarflow_dead_letter WHERE status = 'open'",
    )
    .await;
    let (lost, duplicated) = (FAXES - filed - intact, docs_n - filed);
    report(format!(
        "fault document_dir_full: {FAXES} faxes, DOCUMENT_DIR full: {docs_n} documents, {filed} filed, {dead} dead letters ({intact} with the fax's exact bytes), {read} marked read, {} files left in DOCUMENT_DIR, lost: {lost}, duplicated: {duplicated}; space back, `dlq retry --all`: exit {:?}, {redriven} filed, {docs_after} documents, {open} dead letters open, lost: {}, duplicated: {}",
        leftovers.len(),
        retry.status.code(),
        FAXES - redriven,
        docs_after - redriven
    ));
    assert!(
        leftovers.is_empty(),
        "no partial file in DOCUMENT_DIR: {leftovers:?}"
    );
    assert_eq!(
        (docs_n, filed, read),
        (0, 0, 0),
        "nothing filed or marked read"
    );
    assert_eq!(
        (dead, intact),
        (FAXES, FAXES),
        "every fax kept with its bytes"
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(
        retry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    assert_eq!(
        (redriven, docs_after, open),
        (FAXES, FAXES, 0),
        "the re-drive files every kept fax once and resolves its dead letter"
    );
}
