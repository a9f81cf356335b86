//! The audit trail (`oscarflow_audit`): every OSCAR row an import writes is named by an
//! audit row of the same transaction, table by table; OSCAR's `log` gets the rows OSCAR's
//! upload writes; `audit verify` finds edited, deleted and inserted rows; a kill -9 in the
//! middle of an import leaves no write without its audit row and no audit row without its
//! write; every read of patient data through the command line is recorded with the OS user.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

use oscarflow::audit::{self, action, Filter};
use oscarflow::store::{text_column, Store};

mod common;

use common::mariadb::with_test_db;
use common::{bin, clinic_seed, replay_command, repo, sqlite_url};

/// Every OSCAR row a lab import writes, by table, as the audit names them.
const TABLES: &[(&str, &str)] = &[
    ("fileUploadCheck", "SELECT CAST(id AS CHAR) FROM fileUploadCheck"),
    ("hl7TextMessage", "SELECT CAST(lab_id AS CHAR) FROM hl7TextMessage"),
    ("hl7TextInfo", "SELECT CAST(lab_no AS CHAR) FROM hl7TextInfo"),
    (
        // Written, and still there or moved aside by a later version.
        "measurements",
        "SELECT CAST(id AS CHAR) FROM measurements UNION SELECT CAST(originalId AS CHAR) FROM measurementsDeleted",
    ),
    (
        "measurementsExt",
        "SELECT DISTINCT CAST(measurement_id AS CHAR) FROM measurementsExt",
    ),
    (
        "measurementsDeleted",
        "SELECT CAST(originalId AS CHAR) FROM measurementsDeleted",
    ),
    (
        "patientLabRouting",
        "SELECT CAST(lab_no AS CHAR), CAST(demographic_no AS CHAR) FROM patientLabRouting WHERE lab_type = 'HL7'",
    ),
    (
        "providerLabRouting",
        "SELECT CAST(lab_no AS CHAR), CAST(provider_no AS CHAR) FROM providerLabRouting WHERE lab_type = 'HL7'",
    ),
    (
        "log",
        // Named by what identifies them (oscarflow may not read OSCAR's log back).
        "SELECT action, COALESCE(content, data), contentId FROM log WHERE action = 'LabUploadWs.importLab' OR (action = 'add' AND content = 'lab')",
    ),
];

/// The keys of `sql`'s rows (columns that are not NULL, joined by `/`).
async fn keys(store: &Store, sql: &str) -> BTreeSet<String> {
    sqlx::query(sql)
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .filter_map(|i| text_column(r, i).unwrap())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

/// The rows of each table, now.
async fn oscar_rows(store: &Store) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (table, sql) in TABLES {
        out.insert(*table, keys(store, sql).await);
    }
    out
}

/// The rows the audit trail names as written, by table.
async fn audited_rows(store: &Store) -> BTreeMap<&'static str, BTreeSet<String>> {
    let rows = common::audit_rows(store, action::WRITE).await;
    let mut out: BTreeMap<&'static str, BTreeSet<String>> =
        TABLES.iter().map(|(t, _)| (*t, BTreeSet::new())).collect();
    for r in &rows {
        for (table, key) in r.written_rows().pairs() {
            let slot = out
                .iter_mut()
                .find(|(t, _)| **t == table)
                .unwrap_or_else(|| panic!("audit row {} names table {table}", r.id));
            assert!(slot.1.insert(key.clone()), "{table} {key} audited twice");
        }
    }
    out
}

/// Table by table, the rows written since `before` are exactly the rows the audit names.
async fn assert_audit_equals_rows(
    store: &Store,
    before: &BTreeMap<&'static str, BTreeSet<String>>,
) -> usize {
    let now = oscar_rows(store).await;
    let audited = audited_rows(store).await;
    let mut total = 0;
    for (table, _) in TABLES {
        let written: BTreeSet<&String> = now[table].difference(&before[table]).collect();
        let named: BTreeSet<&String> = audited[table].iter().collect();
        assert_eq!(
            written, named,
            "{table}: rows written (left) and rows audited (right) differ"
        );
        total += written.len();
    }
    total
}

/// The labs' audit rows name the chart each lab was filed to, and their journal rows.
async fn assert_audit_names_charts_and_journal_rows(store: &Store) {
    let charts: BTreeMap<String, String> = keys(
        store,
        "SELECT CAST(lab_no AS CHAR), CAST(demographic_no AS CHAR) FROM patientLabRouting WHERE lab_type = 'HL7'",
    )
    .await
    .into_iter()
    .filter_map(|k| k.split_once('/').map(|(a, b)| (a.to_string(), b.to_string())))
    .collect();
    let journal: BTreeMap<String, String> = keys(
        store,
        "SELECT CAST(id AS CHAR), CAST(lab_no AS CHAR) FROM oscarflow_journal WHERE lab_no IS NOT NULL",
    )
    .await
    .into_iter()
    .filter_map(|k| k.split_once('/').map(|(a, b)| (a.to_string(), b.to_string())))
    .collect();
    let rows = common::audit_rows(store, action::WRITE).await;
    for r in rows {
        let lab = r
            .about
            .lab_no
            .expect("a lab's audit row names the lab")
            .to_string();
        assert_eq!(
            r.about.demographic_no.map(|d| d.to_string()),
            charts.get(&lab).cloned(),
            "audit row {} names the chart lab {lab} was filed to",
            r.id
        );
        let j = r.about.journal_id.expect("a journal row").to_string();
        assert_eq!(
            journal.get(&j),
            Some(&lab),
            "journal row {j} is lab {lab}'s"
        );
        assert!(r.actor.starts_with("oscarflow pipeline "));
        assert!(r.process.starts_with("oscarflow ") && r.process.contains(" pid "));
        assert!(!r.host.is_empty());
    }
}

/// OSCAR's `log` holds, for each uploaded file, the row OSCAR's lab upload service writes
/// (`LabUploadWs.importLab`, `fileUploadCheckId=<id>`, the uploading provider), and for each
/// lab the `add`/`lab` row OSCAR's screens show, with its chart.
async fn assert_oscar_log_rows(store: &Store) {
    let uploads = keys(
        store,
        "SELECT CAST(id AS CHAR), provider_no FROM fileUploadCheck",
    )
    .await;
    let upload_logs = keys(
        store,
        "SELECT data, provider_no FROM log WHERE action = 'LabUploadWs.importLab' AND content IS NULL AND contentId IS NULL",
    )
    .await;
    let expected: BTreeSet<String> = uploads
        .iter()
        .map(|k| {
            let (id, provider) = k.split_once('/').unwrap();
            format!("fileUploadCheckId={id}/{provider}")
        })
        .collect();
    assert_eq!(
        upload_logs, expected,
        "one LabUploadWs.importLab row per file"
    );
    let labs = keys(
        store,
        "SELECT CAST(m.lab_id AS CHAR), COALESCE(CAST(p.demographic_no AS CHAR), '-') FROM hl7TextMessage m LEFT JOIN patientLabRouting p ON p.lab_no = m.lab_id AND p.lab_type = 'HL7'",
    )
    .await;
    let lab_logs = keys(
        store,
        "SELECT contentId, COALESCE(CAST(demographic_no AS CHAR), '-') FROM log WHERE action = 'add' AND content = 'lab'",
    )
    .await;
    assert_eq!(lab_logs, labs, "one add/lab row per lab, with its chart");
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM log WHERE action = 'add' AND content = 'lab'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(n as usize, labs.len(), "no lab logged twice");
}

fn verify_cli(url: &str) -> (i32, String) {
    let out = Command::new(bin())
        .args(["audit", "verify", "--database", url])
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_into_mariadb_audits_every_oscar_row_table_by_table_and_verify_names_an_edited_deleted_or_inserted_row(
) {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open MariaDB");
        let before = oscar_rows(&store).await;
        let out = replay_command(&[repo().join("fixtures/hl7")], &url, None)
            .output()
            .unwrap();
        assert!(
            out.status.code() == Some(0),
            "replay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = assert_audit_equals_rows(&store, &before).await;
        assert_audit_names_charts_and_journal_rows(&store).await;
        assert_oscar_log_rows(&store).await;
        let audit_rows = audit::list(&store, &Filter { limit: 100_000, ..Default::default() })
            .await
            .unwrap();
        println!(
            "audit: {rows} OSCAR rows written by the fixture replay, each named by one of {} audit rows",
            audit_rows.len()
        );

        // `audit list` by chart and by pipeline.
        let chart = audit_rows
            .iter()
            .find_map(|r| r.about.demographic_no)
            .expect("a matched lab");
        let listed = Command::new(bin())
            .args(["audit", "list", "--demographic", &chart.to_string(), "--pipeline", "lab_replay", "--json", "--database", &url])
            .env_remove("OSCARFLOW_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(listed.status.code(), Some(0));
        let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            listed.len(),
            audit_rows.iter().filter(|r| r.about.demographic_no == Some(chart)).count()
        );
        assert!(listed.iter().all(|j| j["demographic_no"] == chart && j["pipeline"] == "lab_replay"));

        // Untouched: intact.
        let (code, text) = verify_cli(&url);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("intact"), "{text}");

        // A row in the middle of the chain: edited, then put back.
        let mut chain: Vec<_> = audit_rows
            .iter()
            .filter(|r| r.chain == audit::pipeline_chain("lab_replay"))
            .collect();
        chain.sort_by_key(|r| r.seq);
        assert!(chain.len() >= 5, "a chain to tamper with");
        let mid = chain[chain.len() / 2];
        let before_mid = chain[chain.len() / 2 - 1];
        exec(&store, &format!("UPDATE oscarflow_audit SET demographic_no = 4242 WHERE id = {}", mid.id)).await;
        let (code, text) = verify_cli(&url);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains(&format!("row {} (seq {}) was changed", mid.id, mid.seq)),
            "{text}"
        );
        println!("audit verify after an edit: {}", text.lines().find(|l| l.contains("BROKEN")).unwrap_or(""));
        let restore = match mid.about.demographic_no {
            Some(d) => d.to_string(),
            None => "NULL".into(),
        };
        exec(&store, &format!("UPDATE oscarflow_audit SET demographic_no = {restore} WHERE id = {}", mid.id)).await;
        assert_eq!(verify_cli(&url).0, 0, "put back: intact again");

        // Deleted, then put back.
        exec(&store, &format!("CREATE TABLE audit_keep AS SELECT * FROM oscarflow_audit WHERE id = {}", mid.id)).await;
        exec(&store, &format!("DELETE FROM oscarflow_audit WHERE id = {}", mid.id)).await;
        let (code, text) = verify_cli(&url);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains(&format!("row seq {} was removed (it came after row {})", mid.seq, before_mid.id)),
            "{text}"
        );
        println!("audit verify after a delete: {}", text.lines().find(|l| l.contains("BROKEN")).unwrap_or(""));
        exec(&store, "INSERT INTO oscarflow_audit SELECT * FROM audit_keep").await;
        assert_eq!(verify_cli(&url).0, 0, "put back: intact again");

        // Inserted: a copy of the last row after it, then taken out.
        let last = chain[chain.len() - 1];
        exec(&store, &format!(
            "INSERT INTO oscarflow_audit (chain, seq, at, action, actor, host, process, pipeline, journal_id, content_sha256, part, demographic_no, lab_no, document_no, fax_id, appointment_no, written, why, prev_hash, hash) \
             SELECT chain, seq + 1, at, action, actor, host, process, pipeline, journal_id, content_sha256, part, demographic_no, lab_no, document_no, fax_id, appointment_no, written, why, hash, hash FROM oscarflow_audit WHERE id = {}",
            last.id
        )).await;
        let inserted = keys(&store, "SELECT CAST(MAX(id) AS CHAR) FROM oscarflow_audit WHERE chain = 'pipeline:lab_replay'").await;
        let inserted = inserted.into_iter().next().unwrap();
        let (code, text) = verify_cli(&url);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains(&format!("row {inserted} (seq {}) was inserted", last.seq + 1)),
            "{text}"
        );
        println!("audit verify after an insert: {}", text.lines().find(|l| l.contains("BROKEN")).unwrap_or(""));
        exec(&store, &format!("DELETE FROM oscarflow_audit WHERE id = {inserted}")).await;
        assert_eq!(verify_cli(&url).0, 0, "taken out: intact again");
    })
    .await;
}

/// `count` files, each a distinct copy of a multi-message fixture.
fn many_files(dir: &Path, count: usize) {
    for i in 0..count {
        std::fs::write(
            dir.join(format!("lab{i:05}.hl7")),
            common::variant("fixtures/hl7/pathl7/multi_message.hl7", i),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_an_import_leaves_no_write_without_its_audit_row_and_no_audit_row_without_its_write(
) {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open MariaDB");
        let before = oscar_rows(&store).await;
        let tmp = tempfile::tempdir().unwrap();
        let files = 1500;
        many_files(tmp.path(), files);
        let mut child = replay_command(&[tmp.path()], &url, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let labs_at_kill = loop {
            assert!(child.try_wait().unwrap().is_none(), "the replay ended before it was killed: use more files");
            let n = common::count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
            if n >= 30 {
                child.kill().unwrap(); // SIGKILL
                break n;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no lab imported");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed");
        let labs = common::count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
        assert!(labs < (files * 3) as i64, "killed in the middle: {labs} labs");
        let rows = assert_audit_equals_rows(&store, &before).await;
        assert_audit_names_charts_and_journal_rows(&store).await;
        let reports = audit::verify(&store).await.unwrap();
        assert!(reports.iter().all(|r| r.problem.is_none()), "{reports:?}");
        println!("audit after kill -9: {labs} labs ({labs_at_kill} seen before the kill), {rows} OSCAR rows, each audited; chains intact");

        // The rest goes in on a second run: still every row audited once.
        let out = replay_command(&[tmp.path()], &url, None).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let rows = assert_audit_equals_rows(&store, &before).await;
        let reports = audit::verify(&store).await.unwrap();
        assert!(reports.iter().all(|r| r.problem.is_none()), "{reports:?}");
        println!("audit after the second run: {rows} OSCAR rows, each audited; chains intact");
    })
    .await;
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_show_raw_show_origin_and_inspect_of_a_stored_message_add_an_audit_row_naming_the_os_user_and_refuse_when_it_cannot_be_recorded(
) {
    let tmp = tempfile::tempdir().unwrap();
    let url = sqlite_url(tmp.path());
    let fixture = repo().join("fixtures/bad/mixed_good_bad.hl7");
    let out = replay_command(&[&fixture], &url, clinic_seed(&url).as_deref())
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "replay ran");
    let store = Store::open(&url).await.unwrap();
    let dl = keys(&store, "SELECT id FROM oscarflow_dead_letter").await;
    let dl = dl.into_iter().next().expect("a dead letter");
    let lab = keys(
        &store,
        "SELECT CAST(MIN(lab_id) AS CHAR) FROM hl7TextMessage",
    )
    .await;
    let lab = lab.into_iter().next().expect("a lab");
    let reads = || common::audit_rows(&store, action::READ);
    assert!(reads().await.is_empty());

    let shown = run_cli(&["dlq", "show", "--raw", &dl, "--database", &url]);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(!shown.stdout.is_empty(), "the bytes are shown");
    let inspected = run_cli(&["inspect", "--lab", &lab, "--database", &url, "--json"]);
    assert_eq!(
        inspected.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected_dl = run_cli(&["inspect", "--dead-letter", &dl, "--database", &url]);
    assert_eq!(
        inspected_dl.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&inspected_dl.stderr)
    );

    // Where a dead letter came from (file names can carry patient names) is a read too.
    let origin = run_cli(&["dlq", "show", &dl, "--show-origin", "--database", &url]);
    assert_eq!(origin.status.code(), Some(0));
    let hidden = run_cli(&["dlq", "show", &dl, "--database", &url]);
    assert_eq!(hidden.status.code(), Some(0));

    let mut rows = reads().await;
    rows.reverse();
    assert_eq!(
        rows.len(),
        4,
        "one read row each, none for the summary without origins: {rows:#?}"
    );
    let me = audit::os_user();
    for r in &rows {
        assert_eq!(r.actor, me, "the OS user is named");
        assert_eq!(r.chain, audit::ACCESS_CHAIN);
    }
    assert!(rows[0].why.as_deref().unwrap().contains("dlq show --raw"));
    assert!(rows[0].why.as_deref().unwrap().contains(&dl));
    assert!(rows[1]
        .why
        .as_deref()
        .unwrap()
        .contains(&format!("inspect --lab {lab}")));
    assert_eq!(
        rows[1].about.lab_no.map(|n| n.to_string()),
        Some(lab.clone())
    );
    assert!(rows[2]
        .why
        .as_deref()
        .unwrap()
        .contains("inspect --dead-letter"));
    assert!(rows[3]
        .why
        .as_deref()
        .unwrap()
        .contains("dlq show --show-origin"));
    println!("audit reads: {} rows, actor {me:?}", rows.len());

    // No patient data in the audit trail.
    let mut tokens = BTreeSet::new();
    common::phi::patient_tokens(&std::fs::read(&fixture).unwrap(), &mut tokens);
    let all = audit::list(
        &store,
        &Filter {
            limit: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = serde_json::to_string(&all).unwrap();
    for t in &tokens {
        assert!(
            !text.contains(t.as_str()),
            "the audit trail carries patient data"
        );
    }
    assert!(audit::verify(&store)
        .await
        .unwrap()
        .iter()
        .all(|r| r.problem.is_none()));

    // A read that cannot be recorded shows nothing.
    exec(
        &store,
        "ALTER TABLE oscarflow_audit RENAME TO oscarflow_audit_away",
    )
    .await;
    let refused = run_cli(&["dlq", "show", "--raw", &dl, "--database", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty(), "nothing shown");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("audit trail"));
    let refused = run_cli(&["inspect", "--lab", &lab, "--database", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty(), "nothing shown");
}

/// Regression (the two-daemon fax test sent a fax twice): two writers appending to a chain
/// that has no head yet both failed or deadlocked on creating it inside their transactions,
/// failing the commit of a fax RingCentral had already accepted. With the head made first,
/// in a statement of its own, concurrent writers on separate connections all commit, in one
/// intact chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_writers_of_a_new_chain_all_commit_in_one_intact_chain() {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open MariaDB");
        let writers = 8;
        let mut tasks = Vec::new();
        for i in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                audit::ensure_chain(&store, "race").await?;
                let mut tx = store.pool.begin().await?;
                let record = audit::Record {
                    action: action::STATUS,
                    actor: format!("writer {i}"),
                    ..Default::default()
                };
                audit::append(&mut tx, "race", &[record]).await?;
                tx.commit().await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("every writer commits");
        }
        let reports = audit::verify(&store).await.unwrap();
        let race = reports.iter().find(|r| r.chain == "race").unwrap();
        assert_eq!(
            (race.rows, race.head_seq, &race.problem),
            (writers, writers as i64, &None)
        );
    })
    .await;
}
