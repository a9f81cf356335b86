//! Why a lab is unmatched, as a clinic sees it: `oscarflow replay` of one lab per reason
//! against the synthetic clinic, on the embedded store and on the real OSCAR schema in
//! MariaDB. The text report lists every unmatched lab with its reason, `--json` carries the
//! outcome of every message, and the README's one query over `oscarflow_lab_message` answers
//! "which labs went unmatched today, and why".

mod common;

use std::path::Path;
use std::process::Output;

/// (health number, birth date, sex, last name, first name, expected outcome, candidates)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<u64>,
);

/// The cases, against `fixtures/sql/bc_clinic.sql`: chart 1001 is TESTPATIENT ALICE, 9000000011,
/// 1980-01-15, F; charts 1004 and 1005 share 9000000045.
const CASES: &[Case] = &[
    (
        "9000000011",
        "19800115",
        "F",
        "TESTPATIENT",
        "ALICE",
        "matched",
        None,
    ),
    (
        "9999999999",
        "19800115",
        "F",
        "TESTPATIENT",
        "ALICE",
        "not_found",
        None,
    ),
    (
        "9000000011",
        "19800116",
        "F",
        "TESTPATIENT",
        "ALICE",
        "birth_date_mismatch",
        Some(1),
    ),
    (
        "9000000011",
        "19800115",
        "M",
        "TESTPATIENT",
        "ALICE",
        "sex_mismatch",
        Some(1),
    ),
    (
        "9000000011",
        "19800115",
        "F",
        "ZZOTHER",
        "QUINN",
        "name_mismatch",
        Some(1),
    ),
    (
        "",
        "19800115",
        "F",
        "TESTPATIENT",
        "ALICE",
        "no_health_number",
        None,
    ),
    (
        "9000000011",
        "19801399",
        "F",
        "TESTPATIENT",
        "ALICE",
        "invalid_birth_date",
        None,
    ),
    (
        "9000000045",
        "19850505",
        "F",
        "ZZTEST",
        "DANA",
        "ambiguous",
        Some(2),
    ),
];

/// One PATHL7 file holding a lab per case (distinct control ids and accessions).
fn labs() -> String {
    let mut out = String::new();
    for (i, (hin, dob, sex, last, first, _, _)) in CASES.iter().enumerate() {
        out.push_str(&format!(
            "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ACC|20260301120000||ORU^R01|RSN{i}|P|2.3\r\n\
             PID||{hin}|||{last}^{first}||{dob}|{sex}\r\n\
             ORC|RE||26-7700000{i}-HP-1\r\n\
             OBR|1||26-7700000{i}-HP-1|HP^Haem Profile|||20260301090000|||||||||91001^TESTDOC^ALPHA||||||||HAEM1|F\r\n\
             OBX|1|NM|718-7^Hemoglobin||135|g/L|120-160|N|||F|||20260301100000\r\n"
        ));
    }
    out
}

/// The built-in pipeline with OSCAR's `LAB_NOMATCH_NAMES=no`, so names count too.
fn pipeline() -> String {
    let p = oscarflow::cli::DEFAULT_LAB_PIPELINE.replace(
        "type = \"match_patient\"",
        "type = \"match_patient\"\nnomatch_names = false",
    );
    assert!(p.contains("nomatch_names = false"));
    p
}

fn replay(dir: &Path, db: &str, json: bool) -> Output {
    let seed = common::clinic_seed(db);
    let mut c = common::replay_command(&[dir.join("reasons.hl7")], db, seed.as_deref());
    c.arg("--pipeline").arg(dir.join("reasons.toml"));
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

async fn check(db: String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("reasons.hl7"), labs()).unwrap();
    std::fs::write(tmp.path().join("reasons.toml"), pipeline()).unwrap();
    let o = replay(tmp.path(), &db, true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let messages = report["files"][0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), CASES.len(), "{report}");
    for (i, case) in CASES.iter().enumerate() {
        let m = &messages[i];
        assert_eq!(m["message"], i as u64 + 1, "{m}");
        assert_eq!(m["outcome"], case.5, "case {i}: {m}");
        assert_eq!(m["candidates"].as_u64(), case.6, "case {i}: {m}");
        assert_eq!(m["lab_type"], "PATHL7");
    }

    // The same file again on a fresh copy of the data, as text: every unmatched lab is
    // listed with its reason.
    let store = oscarflow::store::Store::open(&db).await.unwrap();
    // The README's query: which labs went unmatched today, and why.
    let rows: Vec<(i64, String, Option<i64>, String, String)> = sqlx::query_as(
        "SELECT lab_no, match_outcome, match_candidates, lab_type, control_id FROM oscarflow_lab_message WHERE match_outcome <> 'matched' AND imported_at >= CURRENT_DATE ORDER BY imported_at, lab_no",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let got: Vec<(String, Option<i64>, String)> = rows
        .iter()
        .map(|r| (r.1.clone(), r.2, r.4.clone()))
        .collect();
    let want: Vec<(String, Option<i64>, String)> = CASES
        .iter()
        .enumerate()
        .filter(|(_, c)| c.5 != "matched")
        .map(|(i, c)| (c.5.to_string(), c.6.map(|n| n as i64), format!("RSN{i}")))
        .collect();
    assert_eq!(got, want);
    // Each row is the lab OSCAR shows in its unmatched list.
    for (lab_no, ..) in &rows {
        let filed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM patientLabRouting WHERE lab_no = ?")
                .bind(lab_no)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(filed, 0, "lab {lab_no} is unmatched but filed to a chart");
    }
    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_the_reason_of_every_unmatched_lab_on_the_embedded_store() {
    let tmp = tempfile::tempdir().unwrap();
    check(common::sqlite_url(tmp.path())).await;
    // The text report names each unmatched lab with its reason and chart count.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reasons.hl7"), labs()).unwrap();
    std::fs::write(dir.path().join("reasons.toml"), pipeline()).unwrap();
    let o = replay(dir.path(), &common::sqlite_url(dir.path()), false);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("{text}");
    assert!(text.contains("unmatched labs"), "{text}");
    for (i, case) in CASES.iter().enumerate().filter(|(_, c)| c.5 != "matched") {
        let line = text
            .lines()
            .find(|l| l.contains(&format!(" #{} lab_no", i + 1)))
            .unwrap_or_else(|| panic!("no line for message {}: {text}", i + 1));
        assert!(line.contains(&format!("PATHL7 {}", case.5)), "{line}");
        if let Some(n) = case.6 {
            assert!(line.contains(&format!("({n} chart")), "{line}");
        }
    }
    assert!(
        !text.contains(" #1 lab_no"),
        "a matched lab is not listed: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_the_reason_of_every_unmatched_lab_on_oscars_schema_in_mariadb() {
    common::mariadb::with_test_db(check).await;
}
