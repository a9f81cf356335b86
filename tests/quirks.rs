//! Real-world message quirks that must not keep a lab from a chart: a lone LF inside a field
//! of a CR-terminated message (read as python-hl7 reads it), characters OSCAR's utf8mb3
//! columns cannot hold (replaced in those columns with a warning, the original bytes kept in
//! `hl7TextMessage`), and an ORU with no results at all (stored as Open-O stores it).

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use oscarflow::hl7::text::{decode, Fallback};
use oscarflow::hl7::{frame, Message};
use oscarflow::store::Store;

/// A CR-terminated PATHL7 lab for chart 1001 with a lone LF inside PID-16 (and inside
/// PID-11's street line): what a sender that joins a multi-line field with LF produces.
const STRAY_LF: &[u8] = b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ACC|20260301120000||ORU^R01|LF1|P|2.3\rPID||9000000011|A100||TESTPATIENT^ALICE||19800115|F|||1 ZZTEST AVENUE\nUNIT 2^^TESTVILLE^BC|||||M\nS||ZZ1001\rORC|RE||26-770000091-HP-1\rOBR|1||26-770000091-HP-1|HP^Haem Profile|||20260301090000|||||||||91001^TESTDOC^ALPHA||||||||HAEM1|F\rOBX|1|NM|718-7^Hemoglobin||135|g/L|120-160|N|||F|||20260301100000\rNTE|||a note\r";

/// The fields compared with python-hl7.
const FIELDS: &[(&str, usize, usize)] = &[
    ("PID", 2, 0),
    ("PID", 3, 0),
    ("PID", 5, 1),
    ("PID", 5, 2),
    ("PID", 7, 0),
    ("PID", 8, 0),
    ("PID", 11, 0),
    ("PID", 16, 0),
    ("PID", 18, 0),
    ("OBR", 3, 0),
    ("OBR", 16, 1),
    ("OBX", 5, 0),
    ("NTE", 3, 0),
];

/// `oscarflow replay FILES --json` into `db`, seeded with the synthetic clinic: the report.
fn replay_seeded(files: &[std::path::PathBuf], db: &str) -> serde_json::Value {
    let o = common::replay_command(files, db, common::clinic_seed(db).as_deref())
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// What python-hl7 (the reader the Python importers of this field use) reads in `file`.
fn python_hl7_values(file: &Path) -> Option<Vec<String>> {
    let mllp_send = common::pypi_program("py-hl7-venv", "hl7==0.4.5", "mllp_send")?;
    let python = mllp_send.with_file_name("python3");
    let script = "import hl7, json, sys\nm = hl7.parse(open(sys.argv[1], 'rb').read().decode('utf-8'))\nout = []\nfor (s, f, c) in json.loads(sys.argv[2]):\n    v = m.segment(s)[f]\n    out.append(str(v[0][c - 1] if c else v))\nprint(json.dumps(out))\n";
    let fields = serde_json::to_string(FIELDS).unwrap();
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(file)
        .arg(fields)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python-hl7: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_lf_inside_pid16_of_a_cr_terminated_lab_imports_with_python_hl7s_values() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("stray_lf.hl7");
    std::fs::write(&file, STRAY_LF).unwrap();
    // Our reading of every compared field.
    let framed = frame(&bytes::Bytes::from_static(STRAY_LF));
    assert!(framed.rejected.is_empty(), "{:?}", framed.rejected);
    let joined = framed.messages[0].joined(b"\r");
    let (text, _) = decode(&joined, Fallback::Windows1252, None);
    let m = Message::parse_framed(&text).unwrap();
    let ours: Vec<String> = FIELDS
        .iter()
        .map(|(s, f, c)| {
            let path = if *c > 0 {
                format!("{s}-{f}.{c}")
            } else {
                format!("{s}-{f}")
            };
            m.get(&path).into_owned()
        })
        .collect();
    assert!(ours[7].contains('\n'), "PID-16 keeps its LF: {:?}", ours[7]);
    if let Some(theirs) = python_hl7_values(&file) {
        assert_eq!(ours, theirs, "values as python-hl7 reads them");
        println!("python-hl7 agrees on {} fields", theirs.len());
    }
    // And the lab imports, matched to its chart, with one result.
    let db = common::sqlite_url(tmp.path());
    let report = replay_seeded(&[file], &db);
    assert_eq!(report["totals"]["dead_lettered"], 0, "{report}");
    assert_eq!(report["files"][0]["messages"][0]["outcome"], "matched");
    let store = Store::open(&db).await.unwrap();
    let (demo, data): (i64, String) = sqlx::query_as(
        "SELECT p.demographic_no, m.dataField FROM patientLabRouting p JOIN measurements m ON m.demographicNo = p.demographic_no",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!((demo, data.as_str()), (1001, ours[11].as_str()));
}

/// A lab for chart 1001 with 4-byte characters in the patient's names, a result's name and
/// value, and a result comment.
const EMOJI: &str = "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ACC|20260301120000||ORU^R01|EMO1|P|2.3\rPID||9000000011|||TESTPATIENT\u{1F600}^ALICE\u{1F33C}||19800115|F\rORC|RE||26-770000092-HP-1\rOBR|1||26-770000092-HP-1|HP^Haem Profile|||20260301090000|||||||||91001^TESTDOC^ALPHA||||||||HAEM1|F\rOBX|1|ST|718-7^Hemoglobin \u{1F9EA}||135 \u{1F44D}|g/L|120-160|N|||F|||20260301100000\rNTE|||Comment with an emoji \u{1F642} in it\r";

async fn emoji_lab_reaches_the_chart(db: String) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("lab\u{1F600}.hl7");
    std::fs::write(&file, EMOJI).unwrap();
    let o = common::replay_command(&[&file], &db, common::clinic_seed(&db).as_deref())
        .arg("--json")
        .env("RUST_LOG", "oscarflow=info")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{logs}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["totals"]["dead_lettered"], 0, "{report}");
    assert_eq!(
        report["files"][0]["messages"][0]["outcome"], "matched",
        "{report}"
    );
    let store = Store::open(&db).await.unwrap();
    // The stored message is the original, byte for byte (CRLF after each segment, as
    // OSCAR stores pipe files).
    let row = sqlx::query(
        "SELECT m.message, i.last_name, i.first_name FROM hl7TextMessage m JOIN hl7TextInfo i ON i.lab_no = m.lab_id",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap();
    let text = |c: usize| oscarflow::store::text_column(&row, c).unwrap();
    let (message, last, first) = (text(0).unwrap(), text(1), text(2));
    let stored = base64::engine::general_purpose::STANDARD
        .decode(message)
        .unwrap();
    assert_eq!(stored, EMOJI.replace('\r', "\r\n").into_bytes());
    let filed: i64 = sqlx::query_scalar("SELECT demographic_no FROM patientLabRouting")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(filed, 1001);
    let data: String = sqlx::query_scalar("SELECT dataField FROM measurements")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let filename: String = sqlx::query_scalar("SELECT filename FROM fileUploadCheck")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    if store.backend == oscarflow::store::Backend::MySql {
        // OSCAR's utf8mb3 columns: replaced, one character for one, with a warning naming
        // the columns (and nothing of the values).
        assert_eq!(
            (last.as_deref(), first.as_deref()),
            (Some("TESTPATIENT\u{FFFD}"), Some("ALICE\u{FFFD}"))
        );
        assert_eq!(data, "135 \u{FFFD}");
        assert!(filename.contains("lab\u{FFFD}.hl7"), "{filename}");
        for column in [
            "fileUploadCheck.filename",
            "hl7TextInfo.last_name",
            "hl7TextInfo.first_name",
            "measurements.dataField",
            "measurementsExt.val",
        ] {
            assert!(logs.contains(column), "no warning names {column}: {logs}");
        }
        assert!(logs.contains("utf8mb3"), "{logs}");
        assert!(!logs.contains("TESTPATIENT"), "PHI in the logs: {logs}");
    } else {
        // The embedded store holds every character.
        assert_eq!(last.as_deref(), Some("TESTPATIENT\u{1F600}"));
        assert_eq!(data, "135 \u{1F44D}");
    }
    store.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_with_emoji_in_names_results_and_comments_reaches_the_chart_in_mariadb_with_a_warning(
) {
    common::mariadb::with_test_db(emoji_lab_reaches_the_chart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_with_emoji_is_stored_unchanged_in_the_embedded_store() {
    let tmp = tempfile::tempdir().unwrap();
    emoji_lab_reaches_the_chart(common::sqlite_url(tmp.path())).await;
}

/// An ORU with MSH, PID, ORC and OBR but no OBX and no NTE, as each feed type sends it.
fn no_results(msh3_4: &str, pid: &str, n: usize) -> String {
    format!(
        "MSH|^~\\&|{msh3_4}|HTTPCLIENT|ACC|20260301120000||ORU^R01|NORES{n}|P|2.3\r{pid}\rORC|RE|PT-{n}|26-77000010{n}-HP-1\rOBR|1|PT-{n}|26-77000010{n}-HP-1|HP^Haem Profile|||20260301090000|||||||||91001^TESTDOC^ALPHA||||||||HAEM1|F\r"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oru_without_results_or_notes_is_filed_to_the_chart_and_inbox_with_no_measurements() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "PATHL7|LIFELABS",
            "PID||9000000011|||TESTPATIENT^ALICE||19800115|F",
        ),
        (
            "IHALAB^2.1|IHKGH",
            "PID|1|A00001|KG0001|9000000011|TESTPATIENT^ALICE||19800115|F",
        ),
        (
            "ACMELAB|ACME",
            "PID|1|9000000011|||TESTPATIENT^ALICE||19800115|F",
        ),
    ];
    let mut files = Vec::new();
    for (n, (msh, pid)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("nores{n}.hl7"));
        std::fs::write(&f, no_results(msh, pid, n)).unwrap();
        files.push(f);
    }
    let db = common::sqlite_url(tmp.path());
    let report = replay_seeded(&files, &db);
    assert_eq!(report["totals"]["imported"], 3, "{report}");
    assert_eq!(report["totals"]["matched"], 3, "{report}");
    assert_eq!(report["totals"]["dead_lettered"], 0, "{report}");
    let store = Store::open(&db).await.unwrap();
    let rows: Vec<(String, Option<String>, i64, String)> = sqlx::query_as(
        "SELECT m.type, i.obr_date, i.final_result_count, (SELECT GROUP_CONCAT(r.provider_no) FROM providerLabRouting r WHERE r.lab_no = m.lab_id) FROM hl7TextMessage m JOIN hl7TextInfo i ON i.lab_no = m.lab_id ORDER BY m.lab_id",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let mut types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["HL7", "IHAPOI", "PATHL7"]);
    for (t, obr_date, _, routed) in &rows {
        // Dated as Open-O dates it: OBR-7, or MSH-7 for the generic handler; in the
        // ordering provider's inbox or, for a feed routed on other numbers, the chart's
        // MRP's.
        let want = if t == "HL7" {
            "2026-03-01 12:00:00"
        } else {
            "2026-03-01 09:00:00"
        };
        assert_eq!(obr_date.as_deref(), Some(want), "{t}");
        assert!(!routed.is_empty() && routed != "0", "{t}: {routed}");
    }
    let measurements: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM measurements")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(measurements, 0);
    let filed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM patientLabRouting WHERE demographic_no = 1001")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(filed, 3);
}
