//! Integration tests against the real OSCAR (Open-O BC) schema on MariaDB.
//!
//! `OSCARFLOW_TEST_MYSQL_URL` names a database that holds OSCAR's schema and the synthetic
//! clinic of `fixtures/sql/bc_clinic.sql` (`.ci/run` builds it as `oscarflow_ci` with
//! `../shared/oscar/load-open-o-bc.sh`). Each test clones the tables the import reads and
//! writes into its own fresh database `oscarflow_t_<ulid>`, so tests run in parallel and can be
//! re-run, and drops it at the end. Without the variable the tests print a notice and pass,
//! unless `OSCARFLOW_REQUIRE_MYSQL=1` (CI), where they fail.
//!
//! Expected outcomes come from `fixtures/hl7/README.md`, per message control id (MSH-10).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use md5::{Digest, Md5};
use sqlx::Row;

use oscarflow::ack::BatchStatus;
use oscarflow::cli::report::{InputReport, ReportCollector};
use oscarflow::dead_letter::{DeadLetterStore, Filter};
use oscarflow::sources::list::{ListItem, ListSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::telemetry::Observers;
use oscarflow::topology::{build, BuildOptions};

mod common;
mod matching_suite;

use common::mariadb::{quote_ident, with_test_db};

/// Tables a lab import writes (OSCAR's and oscarflow's own).
const WRITTEN_TABLES: &[&str] = &[
    "fileUploadCheck",
    "hl7TextMessage",
    "hl7TextInfo",
    "patientLabRouting",
    "providerLabRouting",
    "measurements",
    "measurementsExt",
    "measurementsDeleted",
    "recyclebin",
    "oscarflow_lab_import",
    "oscarflow_dead_letter",
];

// ---------------------------------------------------------------------------------------------
// Expected outcomes (fixtures/hl7/README.md)
// ---------------------------------------------------------------------------------------------

/// One fixture message as the README describes its import.
struct Expected {
    file: &'static str,
    msh10: &'static str,
    accession: &'static str,
    /// `patientLabRouting.demographic_no`; `None` = no row (unmatched).
    demographic: Option<i64>,
    /// `providerLabRouting.provider_no` rows.
    routed: &'static [&'static str],
    /// Open-O `hl7TextInfo.report_status`.
    report_status: &'static str,
    final_result_count: i64,
    /// `hl7TextInfo.result_status` (`None` = NULL).
    result_status: Option<&'static str>,
}

#[allow(clippy::too_many_arguments)]
const fn e(
    file: &'static str,
    msh10: &'static str,
    accession: &'static str,
    demographic: Option<i64>,
    routed: &'static [&'static str],
    report_status: &'static str,
    final_result_count: i64,
    result_status: Option<&'static str>,
) -> Expected {
    Expected {
        file,
        msh10,
        accession,
        demographic,
        routed,
        report_status,
        final_result_count,
        result_status,
    }
}

const A: Option<&str> = Some("A");
const NULL: Option<&str> = None;

#[rustfmt::skip]
const EXPECTED: &[Expected] = &[
    e("pathl7/matched_chem.hl7", "ZZ0101", "26-100000001", Some(1001), &["100001", "100002", "100003"], "complete", 107, A),
    e("pathl7/multi_message.hl7", "ZZ0201", "26-100000002", Some(1002), &["100004"], "complete", 104, NULL),
    e("pathl7/multi_message.hl7", "ZZ0202", "26-100000003", Some(1009), &["100005", "100003"], "complete", 101, A),
    e("pathl7/multi_message.hl7", "ZZ0203", "26-100000004", Some(1008), &["100003"], "complete", 101, NULL),
    e("pathl7/lf_terminators.hl7", "ZZ0301", "26-100000005", Some(1011), &["100001"], "complete", 103, A),
    e("pathl7/crlf_bom.hl7", "ZZ0401", "26-100000006", Some(1012), &["100002", "100003"], "complete", 101, NULL),
    e("pathl7/unmatched_patient.hl7", "ZZ0501", "26-100000007", None, &["0"], "complete", 103, NULL),
    e("pathl7/ambiguous_phn.hl7", "ZZ0601", "26-100000008", None, &["100004"], "complete", 101, NULL),
    e("pathl7/merged_patient.hl7", "ZZ0701", "26-100000009", Some(1007), &["100003"], "complete", 101, NULL),
    // README note 1: OSCAR routes a matched patient without MRP to provider '', oscarflow to '0'.
    e("pathl7/no_mrp_no_provider.hl7", "ZZ0801", "26-100000010", Some(1003), &["0"], "complete", 101, NULL),
    e("versions/accession_26-200000001_1_prelim.hl7", "ZZ0901", "26-200000001", Some(1002), &["100004", "100005"], "preliminary", 2, A),
    e("versions/accession_26-200000001_2_final.hl7", "ZZ0902", "26-200000001", Some(1002), &["100004", "100005"], "complete", 103, A),
    e("versions/accession_26-200000001_3_corrected.hl7", "ZZ0903", "26-200000001", Some(1002), &["100004", "100005"], "corrected", 153, NULL),
    e("batch/fhs_batch.hl7", "ZZ1001", "26-100000011", Some(1013), &["100003"], "complete", 102, NULL),
    e("batch/fhs_batch.hl7", "ZZ1002", "26-100000012", Some(1001), &["100005"], "complete", 101, A),
    e("excelleris/pull_two_messages.xml", "ZZ1101", "26-100000013", Some(1001), &["100002", "100003"], "complete", 101, A),
    e("excelleris/pull_two_messages.xml", "ZZ1102", "26-100000014", Some(1007), &["100003"], "complete", 101, NULL),
    e("escapes/escaped_text.hl7", "ZZ1201", "26-100000015", Some(1010), &["100002", "100003"], "complete", 102, A),
];

// ---------------------------------------------------------------------------------------------
// Running the pipeline
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn files_under(dir: &str) -> Vec<PathBuf> {
    let files = ListSource::expand(&[fixtures().join(dir)]).expect("list fixtures");
    assert!(!files.is_empty(), "no files under fixtures/{dir}");
    files
}

/// `fixtures/hl7/<rel>` → `<rel>` (the key used by [`EXPECTED`]).
fn rel_name(path: &Path) -> String {
    path.strip_prefix(fixtures().join("hl7"))
        .or_else(|_| path.strip_prefix(fixtures()))
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Runs `files` once through the built-in lab pipeline (parse → match → import), as
/// `oscarflow replay` does; returns the per-input reports.
async fn replay(store: &Store, files: &[PathBuf]) -> Vec<InputReport> {
    let cfg =
        oscarflow::config::load_str(Path::new("t.toml"), oscarflow::cli::DEFAULT_LAB_PIPELINE)
            .unwrap_or_else(|d| {
                panic!(
                    "built-in pipeline: {}",
                    d.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
    let collector = Arc::new(ReportCollector::new(None));
    let items = files.iter().cloned().map(ListItem::File).collect();
    let source: Box<dyn Source> = Box::new(ListSource::new(items, "test"));
    let opts = BuildOptions {
        one_shot: true,
        observers: Observers::none().with(collector.clone()),
        source_override: Some(Arc::new(Mutex::new(Some(source)))),
        ..Default::default()
    };
    let mut running = build(&cfg, store, opts).expect("build the pipeline");
    if let Err(f) = running.wait().await {
        panic!("the pipeline stopped: {f}");
    }
    let reports = collector.reports();
    assert_eq!(
        reports.len(),
        files.len(),
        "one report per input: {reports:#?}"
    );
    reports
}

fn report_for<'a>(reports: &'a [InputReport], file: &str) -> &'a InputReport {
    reports
        .iter()
        .find(|r| r.input.replace('\\', "/").ends_with(file))
        .unwrap_or_else(|| panic!("no report for {file}: {reports:#?}"))
}

// ---------------------------------------------------------------------------------------------
// Reading OSCAR's tables
// ---------------------------------------------------------------------------------------------

async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote_ident(table)))
        .fetch_one(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

async fn counts(store: &Store) -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for t in WRITTEN_TABLES {
        out.insert(*t, count(store, t).await);
    }
    out
}

/// One imported lab: hl7TextMessage joined to hl7TextInfo and its file.
#[derive(Debug)]
struct Lab {
    lab_no: i64,
    msh10: String,
    text: String,
    message_b64: String,
    msg_type: String,
    file_md5: String,
    accession: Option<String>,
    report_status: String,
    final_result_count: Option<i64>,
    result_status: Option<String>,
    info_rows: i64,
}

/// MSH-10 of an HL7 text (the first MSH segment).
fn msh10(text: &str) -> String {
    let start = text.find("MSH").unwrap_or_else(|| {
        panic!(
            "stored message has no MSH: {:?}",
            &text[..text.len().min(80)]
        )
    });
    let msh = &text[start..];
    let msh = &msh[..msh.find(['\r', '\n']).unwrap_or(msh.len())];
    let sep = msh[3..].chars().next().expect("MSH field separator");
    // Fields after splitting: [0] = "MSH", [1] = MSH-2, ... [n-1] = MSH-n.
    msh.split(sep).nth(9).unwrap_or_default().to_string()
}

async fn labs(store: &Store) -> Vec<Lab> {
    let rows = sqlx::query(
        "SELECT m.lab_id, CAST(m.message AS CHAR) AS message, CAST(m.type AS CHAR) AS type, CAST(f.md5sum AS CHAR) AS md5sum, \
         (SELECT COUNT(*) FROM hl7TextInfo c WHERE c.lab_no = m.lab_id) AS info_rows, \
         CAST(i.accessionNum AS CHAR) AS accessionNum, CAST(i.report_status AS CHAR) AS report_status, \
         i.final_result_count, CAST(i.result_status AS CHAR) AS result_status \
         FROM hl7TextMessage m JOIN fileUploadCheck f ON f.id = m.fileUploadCheck_id \
         LEFT JOIN hl7TextInfo i ON i.lab_no = m.lab_id ORDER BY m.lab_id",
    )
    .fetch_all(&store.pool)
    .await
    .expect("read hl7TextMessage/hl7TextInfo");
    rows.iter()
        .map(|r| {
            let message_b64 = text_col(r, "message").expect("hl7TextMessage.message");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(message_b64.as_bytes())
                .unwrap_or_else(|e| panic!("hl7TextMessage.message is not standard Base64: {e}"));
            let text = String::from_utf8(bytes).expect("stored message is UTF-8");
            Lab {
                lab_no: r.get("lab_id"),
                msh10: msh10(&text),
                text,
                message_b64,
                msg_type: r.get("type"),
                file_md5: r.get("md5sum"),
                accession: r.get("accessionNum"),
                report_status: r
                    .get::<Option<String>, _>("report_status")
                    .unwrap_or_default(),
                final_result_count: r.get("final_result_count"),
                result_status: r.get("result_status"),
                info_rows: r.get("info_rows"),
            }
        })
        .collect()
}

async fn patient_routes(store: &Store) -> BTreeMap<i64, Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT lab_no, demographic_no, CAST(lab_type AS CHAR) AS lab_type FROM patientLabRouting ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .expect("read patientLabRouting");
    let mut out: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get("lab_no"))
            .or_default()
            .push((r.get("demographic_no"), r.get("lab_type")));
    }
    out
}

/// lab_no → [(provider_no, status, lab_type)].
async fn provider_routes(store: &Store) -> BTreeMap<i64, Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT lab_no, CAST(provider_no AS CHAR) AS provider_no, CAST(status AS CHAR) AS status, CAST(lab_type AS CHAR) AS lab_type FROM providerLabRouting ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .expect("read providerLabRouting");
    let mut out: BTreeMap<i64, Vec<(String, String, String)>> = BTreeMap::new();
    for r in rows {
        let status: Option<String> = r.get("status");
        let lab_type: Option<String> = r.get("lab_type");
        out.entry(r.get("lab_no")).or_default().push((
            r.get("provider_no"),
            status.unwrap_or_default(),
            lab_type.unwrap_or_default(),
        ));
    }
    out
}

/// A text column. MariaDB sends TEXT-family values (also `CAST(text AS CHAR)` of a long
/// column) as BLOB on the wire, which sqlx's `Any` driver only decodes as bytes.
fn text_col(r: &sqlx::any::AnyRow, col: &str) -> Option<String> {
    match r.try_get::<Option<String>, _>(col) {
        Ok(s) => s,
        Err(_) => r
            .try_get::<Option<Vec<u8>>, _>(col)
            .unwrap_or_else(|e| panic!("column {col}: {e}"))
            .map(|b| String::from_utf8(b).unwrap_or_else(|e| panic!("column {col}: {e}"))),
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn is_standard_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len() % 4 == 0
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_fixture_labs_into_real_oscar_schema_like_oscar() {
    with_test_db(check_imports).await;
}

async fn check_imports(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let files = files_under("hl7");
    let reports = replay(&store, &files).await;

    // Every file delivered: no dead letters, every message imported.
    for r in &reports {
        assert_eq!(r.status, Some(BatchStatus::Delivered), "{r:#?}");
        assert_eq!(r.dead_lettered, 0, "{r:#?}");
        assert_eq!(r.imported, r.messages_found, "{r:#?}");
    }
    assert_eq!(count(&store, "oscarflow_dead_letter").await, 0);

    // One fileUploadCheck row per file, keyed by the MD5 of the file's bytes.
    let md5_of: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            (
                rel_name(f),
                md5_hex(&std::fs::read(f).expect("read fixture")),
            )
        })
        .collect();
    let stored_md5: Vec<String> =
        sqlx::query_scalar("SELECT CAST(md5sum AS CHAR) FROM fileUploadCheck ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .expect("read fileUploadCheck");
    assert_eq!(
        stored_md5.len(),
        files.len(),
        "one fileUploadCheck row per file"
    );
    assert_eq!(
        stored_md5.iter().cloned().collect::<BTreeSet<_>>(),
        md5_of.values().cloned().collect::<BTreeSet<_>>(),
        "fileUploadCheck.md5sum = MD5 of each file"
    );
    let fixture_files: BTreeSet<&str> = EXPECTED.iter().map(|x| x.file).collect();
    assert_eq!(
        md5_of.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        fixture_files,
        "the README lists every file under fixtures/hl7"
    );

    // One hl7TextMessage + one hl7TextInfo per message.
    let labs = labs(&store).await;
    assert_eq!(
        labs.len(),
        EXPECTED.len(),
        "hl7TextMessage rows = messages (18)"
    );
    assert_eq!(count(&store, "hl7TextInfo").await, EXPECTED.len() as i64);
    let patients = patient_routes(&store).await;
    let providers = provider_routes(&store).await;
    let mut seen = BTreeSet::new();
    for lab in &labs {
        let ctx = format!("lab_no {} (MSH-10 {})", lab.lab_no, lab.msh10);
        let want = EXPECTED
            .iter()
            .find(|x| x.msh10 == lab.msh10)
            .unwrap_or_else(|| panic!("{ctx}: not a fixture message"));
        assert!(seen.insert(lab.msh10.clone()), "{ctx}: imported twice");

        // hl7TextMessage: PATHL7, Base64 without line breaks, in the right file.
        assert_eq!(lab.msg_type, "PATHL7", "{ctx}: hl7TextMessage.type");
        assert!(
            is_standard_base64(&lab.message_b64),
            "{ctx}: hl7TextMessage.message must be standard Base64 without line breaks"
        );
        assert!(
            lab.text.starts_with("MSH|"),
            "{ctx}: stored text starts with MSH"
        );
        if !want.file.ends_with(".xml") {
            // Pipe files: every segment ends with CRLF (Utilities.separateMessages).
            assert!(lab.text.ends_with("\r\n"), "{ctx}: segments end with CRLF");
            assert_eq!(
                lab.text.matches('\r').count(),
                lab.text.matches("\r\n").count(),
                "{ctx}: no bare CR in the stored text"
            );
            assert_eq!(
                lab.text.matches('\n').count(),
                lab.text.matches("\r\n").count(),
                "{ctx}: no bare LF in the stored text"
            );
        }
        assert_eq!(
            Some(&lab.file_md5),
            md5_of.get(want.file),
            "{ctx}: stored under the fileUploadCheck row of {}",
            want.file
        );

        // hl7TextInfo.
        assert_eq!(lab.info_rows, 1, "{ctx}: one hl7TextInfo row");
        assert_eq!(
            lab.accession.as_deref(),
            Some(want.accession),
            "{ctx}: accessionNum"
        );
        assert_eq!(
            lab.report_status, want.report_status,
            "{ctx}: report_status"
        );
        assert_eq!(
            lab.final_result_count,
            Some(want.final_result_count),
            "{ctx}: final_result_count"
        );
        assert_eq!(
            lab.result_status.as_deref(),
            want.result_status,
            "{ctx}: result_status"
        );

        // patientLabRouting: the matched (head) chart, or no row at all.
        let got_patient = patients.get(&lab.lab_no).cloned().unwrap_or_default();
        match want.demographic {
            Some(d) => assert_eq!(
                got_patient,
                vec![(d, "HL7".to_string())],
                "{ctx}: patientLabRouting"
            ),
            None => assert!(
                got_patient.is_empty(),
                "{ctx}: unmatched, so no patientLabRouting row: {got_patient:?}"
            ),
        }

        // providerLabRouting: exactly the README's providers, status N, lab_type HL7.
        let got = providers.get(&lab.lab_no).cloned().unwrap_or_default();
        let got_set: BTreeSet<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            got.len(),
            got_set.len(),
            "{ctx}: one row per provider: {got:?}"
        );
        assert_eq!(
            got_set,
            want.routed.iter().copied().collect::<BTreeSet<_>>(),
            "{ctx}: providerLabRouting.provider_no"
        );
        for (p, status, lab_type) in &got {
            assert_eq!(status, "N", "{ctx}: status of provider {p}");
            assert_eq!(lab_type, "HL7", "{ctx}: lab_type of provider {p}");
        }
    }
    assert_eq!(seen.len(), EXPECTED.len(), "every fixture message imported");

    // Routing rows only for imported labs.
    let lab_nos: BTreeSet<i64> = labs.iter().map(|l| l.lab_no).collect();
    assert!(patients.keys().all(|k| lab_nos.contains(k)));
    assert!(providers.keys().all(|k| lab_nos.contains(k)));

    // UTF-8 survives: the accented name in the stored text and in hl7TextInfo.
    let escaped = labs.iter().find(|l| l.msh10 == "ZZ1201").expect("ZZ1201");
    assert!(
        escaped.text.contains("BÉLANGER-ZZTEST^ÉLODIE"),
        "UTF-8 name kept in the stored text"
    );
    let last_name: Option<String> =
        sqlx::query_scalar("SELECT CAST(last_name AS CHAR) FROM hl7TextInfo WHERE lab_no = ?")
            .bind(escaped.lab_no)
            .fetch_one(&store.pool)
            .await
            .expect("read hl7TextInfo.last_name");
    assert_eq!(last_name.as_deref(), Some("BÉLANGER-ZZTEST"));

    // The three versions: three lab_nos linked only by accessionNum; by OSCAR's version
    // order (final_result_count, obr_date) the corrected report is current.
    let msh10_of: BTreeMap<i64, &str> = labs.iter().map(|l| (l.lab_no, l.msh10.as_str())).collect();
    let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT lab_no FROM hl7TextInfo WHERE accessionNum = '26-200000001' ORDER BY final_result_count, obr_date",
        )
        .fetch_all(&store.pool)
        .await
        .expect("read the versions");
    let versions: Vec<&str> = versions.iter().map(|n| msh10_of[n]).collect();
    assert_eq!(versions, ["ZZ0901", "ZZ0902", "ZZ0903"]);

    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_same_files_adds_no_rows() {
    with_test_db(check_replay).await;
}

async fn check_replay(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let mut files = files_under("hl7");
    files.extend(files_under("bad"));

    let first = replay(&store, &files).await;
    let after_first = counts(&store).await;
    assert_eq!(
        after_first["hl7TextMessage"],
        EXPECTED.len() as i64 + 2,
        "18 fixture messages + 2 good ones of mixed_good_bad"
    );
    assert!(
        after_first["oscarflow_dead_letter"] > 0,
        "the bad inputs were dead-lettered"
    );
    for r in &first {
        assert_ne!(r.status, Some(BatchStatus::Failed), "{r:#?}");
    }

    let second = replay(&store, &files).await;
    let after_second = counts(&store).await;
    assert_eq!(
        after_second, after_first,
        "row counts after the second replay"
    );
    for f in files_under("hl7") {
        let r = report_for(&second, &rel_name(&f));
        assert_eq!(r.imported, 0, "{r:#?}");
        assert_eq!(
            r.duplicates, r.messages_found,
            "every message a duplicate: {r:#?}"
        );
        assert_eq!(r.status, Some(BatchStatus::Delivered), "{r:#?}");
    }

    // A third run on a new connection pool (a restarted daemon) changes nothing either.
    store.pool.close().await;
    let store = Store::open(&url).await.expect("reopen the store");
    replay(&store, &files).await;
    assert_eq!(
        counts(&store).await,
        after_first,
        "row counts after a replay on a reopened store"
    );
    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_labs_show_in_oscars_unmatched_inbox_query() {
    with_test_db(check_unmatched_inbox).await;
}

async fn check_unmatched_inbox(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    replay(&store, &files_under("hl7")).await;
    let labs = labs(&store).await;
    let msh10_of: BTreeMap<i64, &str> = labs.iter().map(|l| (l.lab_no, l.msh10.as_str())).collect();

    // Hl7TextInfoDao.findLabAndDocsViaMagic's unmatched filter (IMPORT-SPEC §2.6).
    let unmatched: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT info.lab_no FROM patientLabRouting plr2 \
             RIGHT JOIN providerLabRouting plr ON plr.lab_no = plr2.lab_no AND plr2.lab_type = 'HL7' \
             RIGHT JOIN hl7TextInfo info ON plr.lab_no = info.lab_no \
             WHERE plr.lab_type = 'HL7' AND (plr2.demographic_no IS NULL OR plr2.demographic_no = '0') \
             ORDER BY info.lab_no",
        )
        .fetch_all(&store.pool)
        .await
        .expect("OSCAR's unmatched-inbox query");
    let unmatched: BTreeSet<&str> = unmatched
        .iter()
        .map(|n| {
            *msh10_of
                .get(n)
                .unwrap_or_else(|| panic!("lab_no {n} has no hl7TextMessage"))
        })
        .collect();
    let expected_unmatched: BTreeSet<&str> = EXPECTED
        .iter()
        .filter(|x| x.demographic.is_none())
        .map(|x| x.msh10)
        .collect();
    assert_eq!(expected_unmatched, BTreeSet::from(["ZZ0501", "ZZ0601"]));
    assert_eq!(
        unmatched, expected_unmatched,
        "OSCAR's unmatched inbox shows exactly the unmatched labs"
    );

    // No lab is invisible: every hl7TextInfo row has a providerLabRouting row.
    let invisible: Vec<i64> = sqlx::query_scalar(
            "SELECT info.lab_no FROM hl7TextInfo info WHERE NOT EXISTS (SELECT 1 FROM providerLabRouting plr WHERE plr.lab_no = info.lab_no AND plr.lab_type = 'HL7')",
        )
        .fetch_all(&store.pool)
        .await
        .expect("labs without providerLabRouting");
    assert!(invisible.is_empty(), "labs in no inbox: {invisible:?}");

    // The unclaimed inbox ('0') holds the lab no provider claimed.
    let unclaimed: Vec<i64> = sqlx::query_scalar(
            "SELECT lab_no FROM providerLabRouting WHERE provider_no = '0' AND lab_type = 'HL7' ORDER BY lab_no",
        )
        .fetch_all(&store.pool)
        .await
        .expect("unclaimed labs");
    let unclaimed: BTreeSet<&str> = unclaimed.iter().map(|n| msh10_of[n]).collect();
    assert_eq!(unclaimed, BTreeSet::from(["ZZ0501", "ZZ0801"]));
    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_original_bytes_on_mariadb() {
    with_test_db(check_dead_letters).await;
}

async fn check_dead_letters(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let files = files_under("bad");
    let reports = replay(&store, &files).await;
    for r in &reports {
        assert_ne!(
            r.status,
            Some(BatchStatus::Failed),
            "nothing left undelivered: {r:#?}"
        );
    }

    let dls = DeadLetterStore::new(store.clone());
    let listed = dls
        .list(&Filter::default())
        .await
        .expect("list dead letters");
    let file_of = |d: &oscarflow::dead_letter::StoredDeadLetter| -> String {
        let path = d
            .origin
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or_default();
        Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let got: BTreeMap<String, Vec<(String, Option<i64>)>> =
        listed.iter().fold(BTreeMap::new(), |mut m, d| {
            m.entry(file_of(d))
                .or_insert_with(Vec::new)
                .push((d.reason.clone(), d.part));
            m
        });
    let reasons: BTreeSet<&str> = listed.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["empty_input", "not_hl7", "missing_segment", "malformed"]),
        "dead letters by file: {got:#?}"
    );
    assert_eq!(
        listed.len(),
        4,
        "one dead letter per rejected unit: {got:#?}"
    );
    let reason_of = |file: &str| -> Vec<&str> {
        listed
            .iter()
            .filter(|d| file_of(d) == file)
            .map(|d| d.reason.as_str())
            .collect()
    };
    assert_eq!(reason_of("empty.hl7"), ["empty_input"]);
    assert_eq!(reason_of("not_hl7.txt"), ["not_hl7"]);
    assert_eq!(reason_of("truncated.hl7").len(), 1, "{got:#?}");
    assert_eq!(
        reason_of("mixed_good_bad.hl7").len(),
        1,
        "only ZZ1402 is rejected: {got:#?}"
    );

    for d in &listed {
        assert_eq!(d.status, "open");
        assert_eq!(d.stage_kind, "parse_hl7", "{d:?}");
        let full = dls
            .get(&d.id)
            .await
            .expect("get dead letter")
            .expect("dead letter exists");
        assert_eq!(full.raw.len() as i64, full.raw_len);
        let file = file_of(d);
        let original = std::fs::read(fixtures().join("bad").join(&file)).expect("read fixture");
        match file.as_str() {
            // Whole-file rejects keep the file's exact bytes.
            "empty.hl7" | "not_hl7.txt" | "truncated.hl7" => {
                assert_eq!(full.raw, original, "{file}: raw bytes")
            }
            // A rejected message of a multi-message file keeps that message's bytes.
            _ => {
                assert!(d.part.is_some(), "{file}: a part of the file");
                let raw = String::from_utf8(full.raw.clone()).expect("utf-8");
                assert!(
                    raw.starts_with("MSH|") && msh10(&raw) == "ZZ1402",
                    "{file}: the bytes of ZZ1402"
                );
                assert!(
                    original
                        .windows(full.raw.len())
                        .any(|w| w == full.raw.as_slice()),
                    "{file}: the dead letter's bytes are a slice of the file"
                );
            }
        }
    }

    // The bad inputs wrote no OSCAR rows; the good messages of mixed_good_bad did.
    let labs = labs(&store).await;
    let mut got: Vec<&str> = labs.iter().map(|l| l.msh10.as_str()).collect();
    got.sort();
    assert_eq!(got, ["ZZ1401", "ZZ1403"]);
    let patients = patient_routes(&store).await;
    let providers = provider_routes(&store).await;
    for (msh, demo, prov, accession) in [
        ("ZZ1401", 1001, "100001", "26-100000016"),
        ("ZZ1403", 1002, "100004", "26-100000018"),
    ] {
        let lab = labs.iter().find(|l| l.msh10 == msh).expect("lab");
        assert_eq!(
            patients.get(&lab.lab_no).cloned().unwrap_or_default(),
            vec![(demo, "HL7".to_string())],
            "{msh}"
        );
        let p: Vec<&str> = providers
            .get(&lab.lab_no)
            .map(|v| v.iter().map(|(p, _, _)| p.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(p, [prov], "{msh}");
        assert_eq!(lab.accession.as_deref(), Some(accession), "{msh}");
        assert_eq!(lab.report_status, "complete", "{msh}");
        assert_eq!(lab.final_result_count, Some(101), "{msh}");
    }
    assert_eq!(
        count(&store, "fileUploadCheck").await,
        1,
        "only mixed_good_bad.hl7 was imported"
    );
    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_matching_cases_produce_no_wrong_patient_match_on_oscars_schema() {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        matching_suite::assert_no_wrong_patient_match(&store).await;
    })
    .await;
}

/// Found by `scripts/bench-e2e`: moving a previous version's measurements aside used
/// `DELETE … WHERE id IN (subquery)`, which MariaDB runs as a locking full scan of
/// `measurements`, so concurrent imports of other accessions deadlocked (error 1213) and the
/// statement grew with the table. It must lock only the measurements it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_previous_version_locks_only_its_own_measurements() {
    with_test_db(check_retire_locks).await;
}

async fn check_retire_locks(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let prelim = fixtures().join("hl7/versions/accession_26-200000001_1_prelim.hl7");
    replay(&store, &[prelim]).await;
    let (lab_no, accession): (i64, String) = {
        let r = sqlx::query("SELECT lab_no, accessionNum FROM hl7TextInfo")
            .fetch_one(&store.pool)
            .await
            .expect("the prelim lab");
        (r.get::<i64, _>(0), text_col(&r, "accessionNum").unwrap())
    };
    let before = count(&store, "measurements").await;
    assert!(before > 0, "the prelim lab wrote measurements");

    // Another import, still open, has written a measurement of another patient.
    let mut other = store.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO measurements (type, demographicNo, providerNo, dataField, measuringInstruction, comments, dateObserved, dateEntered, appointmentNo) VALUES ('', 1001, '0', '1', '', '', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)")
        .execute(&mut *other)
        .await
        .expect("the other import's measurement");

    // The next version of the accession moves the prelim's measurements aside without
    // waiting for the other import.
    let mut tx = store.pool.begin().await.expect("begin");
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 3")
        .execute(&mut *tx)
        .await
        .expect("lock wait timeout");
    let next = lab_no + 1000;
    sqlx::query("INSERT INTO hl7TextInfo (lab_no, final_result_count, obr_date, report_status, accessionNum) VALUES (?, 999, '2026-01-21 08:00:00', 'complete', ?)")
        .bind(next)
        .bind(&accession)
        .execute(&mut *tx)
        .await
        .expect("the next version's hl7TextInfo");
    let moved = oscarflow::oscar::measurements::retire_previous_version(
        &mut tx,
        next,
        &accession,
        "2026-01-22 00:00:00",
    )
    .await
    .expect("no lock wait on the other import's rows");
    assert_eq!(moved as i64, before, "every prelim measurement moved");
    let deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM measurementsDeleted")
        .fetch_one(&mut *tx)
        .await
        .expect("count measurementsDeleted");
    assert_eq!(deleted, before);
    tx.rollback().await.expect("rollback");
    other.rollback().await.expect("rollback");
    store.pool.close().await;
}

/// The `measurementsExt` rows are written in multi-row INSERTs of a bounded size: a lab with
/// more of them than one statement takes (here 30 results, 390 rows) still gets every row,
/// each measurement its own key/values in OSCAR's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_lab_gets_every_measurement_ext_row() {
    with_test_db(check_large_lab_ext_rows).await;
}

async fn check_large_lab_ext_rows(url: String) {
    // More than one multi-row INSERT of `measurements` (150 rows each) and of
    // `measurementsExt` (300 rows each).
    const RESULTS: usize = 200;
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let mut text = String::from("MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZCLINIC1|20260115093012||ORU^R01|ZZ9901|P|2.3|||ER|AL\rPID||9000000011|||TESTPATIENT^ALICE||19800115|F\rORC|RE||26-100009901-CHEM-1|||||||||91001^TESTDOC^ALPHA\rOBR|1||26-100009901-CHEM-1|CHEM^Chemistry||20260114081500|20260114081500|||||||20260114083000||91001^TESTDOC^ALPHA||||||20260115092900||CHEM4|F\r");
    for i in 1..=RESULTS {
        text.push_str(&format!(
            "OBX|{i}|NM|1000{i}-1^Synthetic analyte {i}||{i}.5|mmol/L|1.0-9.0|N|||F|||20260115092900\r"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("large.hl7");
    std::fs::write(&path, text).expect("write the lab");
    replay(&store, &[path]).await;
    assert_eq!(count(&store, "measurements").await, RESULTS as i64);
    assert_eq!(count(&store, "measurementsExt").await, RESULTS as i64 * 13);
    let rows = sqlx::query(
        "SELECT measurement_id, keyval, val FROM measurementsExt ORDER BY measurement_id, id",
    )
    .fetch_all(&store.pool)
    .await
    .expect("read measurementsExt");
    let mut per: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for r in &rows {
        per.entry(r.get::<i64, _>(0)).or_default().push((
            text_col(r, "keyval").unwrap(),
            text_col(r, "val").unwrap_or_default(),
        ));
    }
    assert_eq!(per.len(), RESULTS, "every measurement has key/values");
    // Each measurement row holds the value of the result its key/values name: the ids
    // returned by the multi-row INSERTs (two statements here) are matched to the right rows.
    let values: BTreeMap<i64, String> = sqlx::query("SELECT id, dataField FROM measurements")
        .fetch_all(&store.pool)
        .await
        .expect("read measurements")
        .iter()
        .map(|r| (r.get::<i64, _>(0), text_col(r, "dataField").unwrap()))
        .collect();
    let ids: Vec<i64> = per.keys().copied().collect();
    for (n, kv) in per.values().enumerate() {
        let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lab_no",
                "abnormal",
                "identifier",
                "name",
                "labname",
                "accession",
                "request_datetime",
                "datetime",
                "olis_status",
                "unit",
                "minimum",
                "maximum",
                "other_id"
            ]
        );
        assert_eq!(kv[2].1, format!("1000{}-1", n + 1), "identifier in order");
        assert_eq!(kv[12].1, format!("0-{n}"), "other_id in order");
        assert_eq!(
            values[&ids[n]],
            format!("{}.5", n + 1),
            "value of its own result"
        );
    }
    store.pool.close().await;
}

/// A file OSCAR already took through its own upload screen (its MD5 in `fileUploadCheck`)
/// is a duplicate: nothing is written, and a file with other bytes still imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_through_oscars_own_screen_is_not_imported_again() {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        let files = files_under("hl7");
        let (taken, other) = (&files[0], &files[1]);
        sqlx::query("INSERT INTO fileUploadCheck (provider_no, filename, md5sum, date_time) VALUES ('100001', 'LabUpload.by-oscar', ?, '2026-01-01 00:00:00')")
            .bind(md5_hex(&std::fs::read(taken).expect("read fixture")))
            .execute(&store.pool)
            .await
            .expect("record OSCAR's upload");
        let reports = replay(&store, std::slice::from_ref(taken)).await;
        assert_eq!(reports[0].duplicates, reports[0].messages_found, "{reports:#?}");
        assert_eq!(reports[0].imported, 0, "{reports:#?}");
        assert_eq!(count(&store, "hl7TextMessage").await, 0);
        assert_eq!(count(&store, "fileUploadCheck").await, 1);
        let reports = replay(&store, std::slice::from_ref(other)).await;
        assert!(reports[0].imported > 0, "{reports:#?}");
        assert_eq!(count(&store, "fileUploadCheck").await, 2);
        store.pool.close().await;
    })
    .await;
}

/// OSCAR ships `fileUploadCheck` without an index on `md5sum`, so the duplicate check of
/// every new file is a scan: the sink warns (see `has_index_on`). The embedded store has
/// the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_md5_lookup_is_indexed_in_the_embedded_store_and_seen_unindexed_in_oscars_schema() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sqlite = common::sqlite_store(tmp.path()).await;
    assert!(sqlite
        .has_index_on("fileUploadCheck", "md5sum")
        .await
        .unwrap());
    assert!(!sqlite
        .has_index_on("fileUploadCheck", "filename")
        .await
        .unwrap());
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        assert!(!store
            .has_index_on("fileUploadCheck", "md5sum")
            .await
            .unwrap());
        assert!(store
            .has_index_on("hl7TextInfo", "accessionNum")
            .await
            .unwrap());
        assert!(store
            .has_index_on("oscarflow_lab_import", "md5sum")
            .await
            .unwrap());
        store.pool.close().await;
    })
    .await;
}

/// The one-query-per-lab FLOWSHEET lookup gives, for every identifier OSCAR's
/// `measurementMap` knows (and its upper- and lower-case forms, and a few it does not), the
/// same `(type, measuringInstruction)` as OSCAR's per-result query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flowsheet_lookup_per_lab_maps_every_identifier_as_oscars_per_result_query() {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open the test database");
        let known: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT ident_code FROM measurementMap")
                .fetch_all(&store.pool)
                .await
                .expect("read measurementMap");
        assert!(known.len() > 500, "OSCAR's measurementMap is loaded");
        let mut all: Vec<String> = Vec::new();
        for k in &known {
            all.extend([k.clone(), k.to_uppercase(), k.to_lowercase()]);
        }
        all.extend(["ZZ-NOT-MAPPED".to_string(), String::new()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut tx = store.pool.begin().await.expect("begin");
        let got = oscarflow::oscar::measurements::flowsheet_types(&mut tx, store.backend, &refs)
            .await
            .expect("the per-lab lookup");
        let mut mapped = 0;
        for k in &all {
            let want: Option<(String, String)> = sqlx::query_as(
                "SELECT b.ident_code, t.measuringInstruction FROM measurementMap a, measurementMap b, measurementType t WHERE b.lab_type = 'FLOWSHEET' AND a.ident_code = ? AND a.loinc_code = b.loinc_code AND t.type = b.ident_code ORDER BY b.id, t.id LIMIT 1",
            )
            .bind(k)
            .fetch_optional(&mut *tx)
            .await
            .expect("OSCAR's query");
            mapped += usize::from(want.is_some());
            assert_eq!(got.get(k.as_str()).cloned(), want, "identifier {k:?}");
        }
        println!("flowsheet: {} identifiers, {mapped} mapped, all as OSCAR's query", all.len());
        assert!(mapped > 100, "a real share of identifiers maps");
        tx.rollback().await.expect("rollback");
        store.pool.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_too_large_for_max_allowed_packet_is_dead_lettered_once_with_its_bytes_never_retried()
{
    with_test_db(check_packet_size).await;
}

async fn check_packet_size(url: String) {
    let store = Store::open(&url)
        .await
        .expect("open the store on the test database");
    let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    // One lab whose Base64 in hl7TextMessage is over the packet while the message itself is
    // under the parse stage's 16 MiB message limit.
    let mut lab = std::fs::read(fixtures().join("hl7/pathl7/matched_chem.hl7")).unwrap();
    while (lab.len() as i64) * 4 / 3 <= packet + 1024 * 1024 {
        lab.extend_from_slice(b"NTE|1||synthetic comment line that makes this lab very large\r");
    }
    assert!(lab.len() < 16 * 1024 * 1024, "under the message limit");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.hl7");
    std::fs::write(&path, &lab).unwrap();
    let reports = replay(&store, std::slice::from_ref(&path)).await;
    assert_eq!(
        reports[0].status,
        Some(BatchStatus::DeadLettered),
        "{reports:#?}"
    );
    assert_eq!(count(&store, "hl7TextMessage").await, 0);
    let dls = DeadLetterStore::new(store.clone());
    let listed = dls.list(&Filter::default()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].reason, "too_large");
    assert_eq!(listed[0].stage_kind, "oscar_lab");
    assert_eq!(listed[0].attempts, 1, "refused as data, not retried");
    assert!(
        listed[0].detail.contains("max_allowed_packet"),
        "{}",
        listed[0].detail
    );
    let got = dls.get(&listed[0].id).await.unwrap().unwrap();
    assert!(got.raw == lab, "the dead letter holds the original bytes");
}

/// `OSCARFLOW_TEST_MYSQL_LEAST_URL`: an account with exactly the rights of
/// `deploy/oscarflow-grants.sql` on a database holding the OSCAR tables those name (`.ci/run`).
fn least_privilege_url() -> Option<String> {
    match std::env::var("OSCARFLOW_TEST_MYSQL_LEAST_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            assert!(
                std::env::var("OSCARFLOW_REQUIRE_MYSQL").map_or(true, |v| v.trim() != "1"),
                "OSCARFLOW_REQUIRE_MYSQL=1 but OSCARFLOW_TEST_MYSQL_LEAST_URL is not set (see .ci/run)"
            );
            eprintln!("note: OSCARFLOW_TEST_MYSQL_LEAST_URL is not set; skipping");
            None
        }
    }
}

/// The test account's URL (`OSCARFLOW_TEST_MYSQL_URL`) on the least-privilege account's
/// database.
fn admin_url_of(least: &str) -> String {
    let db = least.rsplit('/').next().unwrap_or_default();
    let admin = std::env::var("OSCARFLOW_TEST_MYSQL_URL").expect("the test account's URL");
    let (server, _) = admin.rsplit_once('/').expect("a database in the URL");
    format!("{server}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_are_enough_to_import_labs_keep_dead_letters_and_purge_them() {
    let Some(url) = least_privilege_url() else {
        return;
    };
    let run = |args: &[&str]| {
        let o = std::process::Command::new(common::bin())
            .args(args)
            .env("OSCARFLOW_T_LEAST_URL", &url)
            .env_remove("OSCARFLOW_DATABASE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "oscarflow {args:?}: {err}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let store = Store::open(&url)
        .await
        .expect("the account opens its store");
    let before = count(&store, "hl7TextMessage").await;
    // Labs this database has not seen (the account's database outlives a test run): a
    // matched lab, then its corrected version, which retires the first one's measurements.
    let run_id = ulid::Ulid::new().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in [
        "hl7/pathl7/matched_chem.hl7",
        "hl7/pathl7/unmatched_patient.hl7",
        "hl7/versions/accession_26-200000001_1_prelim.hl7",
        "hl7/versions/accession_26-200000001_2_final.hl7",
    ]
    .iter()
    .enumerate()
    {
        let text = common::variant(&format!("fixtures/{f}"), 0);
        let text = String::from_utf8(text)
            .unwrap()
            .replace("V0|", &format!("{run_id}|"));
        std::fs::write(dir.path().join(format!("{i}.hl7")), text).unwrap();
    }
    let good = dir.path().display().to_string();
    let bad = fixtures().join("bad").display().to_string();
    run(&["replay", "--database-env", "OSCARFLOW_T_LEAST_URL", &good]);
    assert_eq!(
        count(&store, "hl7TextMessage").await,
        before + 4,
        "every new lab was imported by the account"
    );
    run(&["replay", "--database-env", "OSCARFLOW_T_LEAST_URL", &bad]);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM oscarflow_dead_letter WHERE reason NOT IN ('empty_input', 'not_hl7', 'malformed', 'missing_segment')"
        )
        .fetch_one(&store.pool)
        .await
        .unwrap(),
        0,
        "nothing refused for want of a right"
    );
    let open = DeadLetterStore::new(store.clone())
        .list(&Filter::default())
        .await
        .unwrap();
    assert!(!open.is_empty(), "the bad inputs' dead letters were kept");
    run(&[
        "dlq",
        "purge",
        "--all",
        "--status",
        "all",
        "--yes",
        "--database-env",
        "OSCARFLOW_T_LEAST_URL",
    ]);
    assert_eq!(count(&store, "oscarflow_dead_letter").await, 0);
}

/// The documented grants suffice for a scheduling feed: book, reschedule, cancel and delete
/// (each archived first) with the account of `deploy/oscarflow-grants.sql`. The account's
/// database outlives a run: the filler id is new each run and the slot is freed at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_are_enough_to_book_move_cancel_and_delete_appointments() {
    let Some(url) = least_privilege_url() else {
        return;
    };
    let store = Store::open(&url)
        .await
        .expect("the account opens its store");
    // The account may not read appointmentArchive (INSERT only): the test account, which
    // holds every right on the test databases, counts its rows.
    let admin = Store::open(&admin_url_of(&url)).await.expect("admin store");
    let archived = count(&admin, "appointmentArchive").await;
    let filler = format!("G-{}", ulid::Ulid::new());
    let msg = |event: &str, n: u32, timing: &str| {
        format!(
            "MSH|^~\\&|ZZSCHED|ZZHOSP|OSCAR|ZZCLINIC|2031010108{n:02}00||SIU^{event}|ZZG{n}|P|2.5.1\rSCH|P-1|{filler}||||FU^Follow-up|||{timing}|||||||||||||||Booked\rPID|1||9000000011^^^BC^JHN||TESTPATIENT^ALICE||19800115|F\rRGS|1\rAIP|1||91001^TESTDOC^ALPHA\r"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grants.hl7");
    std::fs::write(
        &file,
        [
            msg("S12", 1, "15|MIN|^^^203101060900"),
            msg("S13", 2, "15|MIN|^^^203101060930"),
            msg("S15", 3, "|"),
            msg("S17", 4, "|"),
        ]
        .concat(),
    )
    .unwrap();
    let pipeline = common::repo().join("pipelines/siu_inbox.toml.example");
    let o = std::process::Command::new(common::bin())
        .args([
            "replay",
            "--json",
            "--database-env",
            "OSCARFLOW_T_LEAST_URL",
            "--pipeline",
        ])
        .arg(&pipeline)
        .arg(&file)
        .env("OSCARFLOW_T_LEAST_URL", &url)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    let outcomes: Vec<&str> = report["files"][0]["appointments"]
        .as_array()
        .expect("appointments in the report")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["booked", "rescheduled", "cancelled", "deleted"]);
    assert_eq!(
        count(&admin, "appointmentArchive").await,
        archived + 3,
        "each change archived the row first"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM other_id o JOIN appointment a ON a.appointment_no = o.table_id WHERE o.table_name = 2 AND o.other_id = ?",
    )
    .bind(&filler[..filler.len().min(30)])
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the deleted appointment is gone from the book");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_runs_once_and_dead_letter_times_carry_their_offset_on_mariadb() {
    with_test_db(|url| async move {
        let store = Store::open(&url).await.expect("open");
        let opt_outs = |store: Store| async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM oscarflow_sms_optout")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        let seed = "INSERT INTO oscarflow_sms_optout (demographic_no, reason, created_at) VALUES (99001, 'seed', '2026-01-01 00:00:00');\n";
        assert!(store.execute_script_once(seed).await.unwrap(), "first run");
        assert!(!store.execute_script_once(seed).await.unwrap(), "skipped");
        assert_eq!(opt_outs(store.clone()).await, 1);
        // A script that fails leaves neither its rows nor its mark: it runs again.
        let failing = format!("{seed}INSERT INTO no_such_table VALUES (1);\n")
            .replace("99001", "99002");
        assert!(store.execute_script_once(&failing).await.is_err());
        assert_eq!(opt_outs(store.clone()).await, 1);
        assert!(store.execute_script_once(&failing).await.is_err());

        replay(&store, &files_under("bad")).await;
        let dls = DeadLetterStore::new(store.clone());
        let listed = dls.list(&Filter::default()).await.unwrap();
        assert_eq!(listed.len(), 4);
        let open = Filter {
            status: Some("open".into()),
            ..Filter::default()
        };
        assert_eq!(dls.count(&open).await.unwrap(), 4);
        for d in &listed {
            for t in [&d.received_at, &d.first_failed_at, &d.last_failed_at] {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|e| panic!("{t}: {e}"));
            }
        }
    })
    .await;
}
