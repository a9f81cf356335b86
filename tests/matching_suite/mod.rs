//! The adversarial patient-matching suite, run on the embedded store (`tests/matching.rs`)
//! and on the real OSCAR schema in MariaDB (`tests/mariadb.rs`). Every case sets up its own
//! synthetic charts (demographic numbers and health numbers private to the case) and states
//! the only acceptable outcome. A match to any other chart is a wrong-patient match.

use oscarflow::hl7::lab::Patient;
use oscarflow::oscar::matching::{match_patient, MatchOutcome, MatchSettings};
use oscarflow::store::Store;

/// A synthetic chart.
#[derive(Clone, Copy)]
pub struct Chart {
    pub no: i64,
    pub last: &'static str,
    pub first: &'static str,
    pub dob: (&'static str, &'static str, &'static str),
    pub hin: Option<&'static str>,
    pub sex: &'static str,
    pub mrp: Option<&'static str>,
}

/// What the lab says about its patient.
#[derive(Clone, Copy)]
pub struct Lab {
    pub last: &'static str,
    pub first: &'static str,
    pub hin: &'static str,
    pub dob: &'static str,
    pub sex: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Chart(i64),
    /// No chart has the health number.
    NotFound,
    /// Charts have the health number; none has the birth date.
    BirthDateMismatch,
    /// Charts have the health number and birth date; none has the sex.
    SexMismatch,
    /// Charts pass every other predicate; none has the initials.
    NameMismatch,
    Ambiguous,
    NoHealthNumber,
    InvalidBirthDate,
}

pub struct Case {
    pub name: &'static str,
    pub charts: Vec<Chart>,
    /// (from, to, deleted)
    pub merges: Vec<(i64, i64, i64)>,
    pub lab: Lab,
    pub settings: MatchSettings,
    pub expect: Expect,
}

const fn chart(
    no: i64,
    last: &'static str,
    first: &'static str,
    hin: &'static str,
    sex: &'static str,
) -> Chart {
    Chart {
        no,
        last,
        first,
        dob: ("1980", "01", "15"),
        hin: Some(hin),
        sex,
        mrp: Some("100001"),
    }
}

const fn lab(hin: &'static str, dob: &'static str, sex: &'static str) -> Lab {
    Lab {
        last: "ZZCASE",
        first: "ALEX",
        hin,
        dob,
        sex,
    }
}

fn default() -> MatchSettings {
    MatchSettings::default()
}

fn names_required() -> MatchSettings {
    MatchSettings {
        nomatch_names: false,
        ..MatchSettings::default()
    }
}

/// The cases. Demographic numbers 7000–7999 and health numbers 97xxxxxxxx are reserved here.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name, charts: Vec<Chart>, merges, lab, settings, expect| {
        v.push(Case {
            name,
            charts,
            merges,
            lab,
            settings,
            expect,
        })
    };
    add(
        "exact health number, birth date and sex",
        vec![chart(7001, "ZZCASE", "ALEX", "9700000011", "F")],
        vec![],
        lab("9700000011", "19800115", "F"),
        default(),
        Expect::Chart(7001),
    );
    add(
        "same name and birth date, different health number",
        vec![chart(7011, "ZZCASE", "ALEX", "9700000021", "F")],
        vec![],
        lab("9700000022", "19800115", "F"),
        default(),
        Expect::NotFound,
    );
    add(
        "one-digit typo in the health number",
        vec![chart(7021, "ZZCASE", "ALEX", "9700000031", "F")],
        vec![],
        lab("9700000032", "19800115", "F"),
        default(),
        Expect::NotFound,
    );
    add(
        "transposed digits in the health number",
        vec![chart(7031, "ZZCASE", "ALEX", "9700000041", "F")],
        vec![],
        lab("9700000014", "19800115", "F"),
        default(),
        Expect::NotFound,
    );
    add(
        "missing health number, name and birth date match a chart",
        vec![chart(7041, "ZZCASE", "ALEX", "9700000051", "F")],
        vec![],
        lab("", "19800115", "F"),
        default(),
        Expect::NoHealthNumber,
    );
    add(
        "health number UNKNOWN",
        vec![chart(7051, "ZZCASE", "ALEX", "9700000061", "F")],
        vec![],
        lab("UNKNOWN", "19800115", "F"),
        default(),
        Expect::NoHealthNumber,
    );
    add(
        "chart without health number, lab without health number",
        vec![Chart {
            hin: None,
            ..chart(7061, "ZZCASE", "ALEX", "", "F")
        }],
        vec![],
        lab("", "19800115", "F"),
        default(),
        Expect::NoHealthNumber,
    );
    add(
        "chart with empty health number, lab health number of spaces",
        vec![chart(7071, "ZZCASE", "ALEX", "", "F")],
        vec![],
        lab("   ", "19800115", "F"),
        default(),
        Expect::NoHealthNumber,
    );
    add(
        "twins: same surname and birth date, each their own health number (A)",
        vec![
            chart(7081, "ZZTWIN", "ANNA", "9700000081", "F"),
            chart(7082, "ZZTWIN", "BETH", "9700000082", "F"),
        ],
        vec![],
        Lab {
            last: "ZZTWIN",
            first: "ANNA",
            ..lab("9700000081", "19800115", "F")
        },
        default(),
        Expect::Chart(7081),
    );
    add(
        "twins: the lab of twin B goes to twin B",
        vec![
            chart(7091, "ZZTWIN", "ANNA", "9700000091", "F"),
            chart(7092, "ZZTWIN", "BETH", "9700000092", "F"),
        ],
        vec![],
        Lab {
            last: "ZZTWIN",
            first: "BETH",
            ..lab("9700000092", "19800115", "F")
        },
        default(),
        Expect::Chart(7092),
    );
    add(
        "twins with the lab's name of one and the health number of the other",
        vec![
            chart(7101, "ZZTWIN", "ANNA", "9700000101", "F"),
            chart(7102, "ZZTWIN", "BETH", "9700000102", "F"),
        ],
        vec![],
        Lab {
            last: "ZZTWIN",
            first: "ANNA",
            ..lab("9700000102", "19800115", "F")
        },
        names_required(),
        Expect::NameMismatch,
    );
    add(
        "merged chart is followed to its head",
        vec![
            chart(7111, "ZZCASE", "ALEX", "9700000111", "M"),
            chart(7112, "ZZCASE", "ALEX", "9700000112", "M"),
        ],
        vec![(7111, 7112, 0)],
        lab("9700000111", "19800115", "M"),
        default(),
        Expect::Chart(7112),
    );
    add(
        "merge chain is followed to the last head",
        vec![
            chart(7121, "ZZCASE", "ALEX", "9700000121", "M"),
            chart(7122, "ZZCASE", "ALEX", "9700000122", "M"),
            chart(7123, "ZZCASE", "ALEX", "9700000123", "M"),
        ],
        vec![(7121, 7122, 0), (7122, 7123, 0)],
        lab("9700000121", "19800115", "M"),
        default(),
        Expect::Chart(7123),
    );
    add(
        "an undone merge (deleted = 1) is not followed",
        vec![
            chart(7131, "ZZCASE", "ALEX", "9700000131", "M"),
            chart(7132, "ZZCASE", "ALEX", "9700000132", "M"),
        ],
        vec![(7131, 7132, 1)],
        lab("9700000131", "19800115", "M"),
        default(),
        Expect::Chart(7131),
    );
    add(
        "two charts share the health number, birth date and sex",
        vec![
            chart(7141, "ZZCASE", "ALEX", "9700000141", "F"),
            chart(7142, "ZZCASE", "ALEXIS", "9700000141", "F"),
        ],
        vec![],
        lab("9700000141", "19800115", "F"),
        default(),
        Expect::Ambiguous,
    );
    add(
        "three charts share the health number",
        vec![
            chart(7151, "ZZCASE", "A", "9700000151", "F"),
            chart(7152, "ZZCASE", "B", "9700000151", "F"),
            chart(7153, "ZZCASE", "C", "9700000151", "F"),
        ],
        vec![],
        lab("9700000151", "19800115", "F"),
        default(),
        Expect::Ambiguous,
    );
    add(
        "two charts share the health number, only one has the lab's birth date",
        vec![
            chart(7161, "ZZCASE", "ALEX", "9700000161", "F"),
            Chart {
                dob: ("1990", "02", "02"),
                ..chart(7162, "ZZCASE", "ALEX", "9700000161", "F")
            },
        ],
        vec![],
        lab("9700000161", "19900202", "F"),
        default(),
        Expect::Chart(7162),
    );
    add(
        "non-binary chart, lab sex F, relaxation on",
        vec![chart(7171, "ZZCASE", "RIVER", "9700000171", "X")],
        vec![],
        lab("9700000171", "19800115", "F"),
        default(),
        Expect::Chart(7171),
    );
    add(
        "non-binary chart, lab sex F, relaxation off",
        vec![chart(7181, "ZZCASE", "RIVER", "9700000181", "X")],
        vec![],
        lab("9700000181", "19800115", "F"),
        MatchSettings {
            relax_sex_for_non_binary: false,
            ..MatchSettings::default()
        },
        Expect::SexMismatch,
    );
    add(
        "chart F, lab M",
        vec![chart(7191, "ZZCASE", "ALEX", "9700000191", "F")],
        vec![],
        lab("9700000191", "19800115", "M"),
        default(),
        Expect::SexMismatch,
    );
    add(
        "lab without sex matches on health number and birth date",
        vec![chart(7201, "ZZCASE", "ALEX", "9700000201", "F")],
        vec![],
        lab("9700000201", "19800115", ""),
        default(),
        Expect::Chart(7201),
    );
    add(
        "lower-case lab sex",
        vec![chart(7211, "ZZCASE", "ALEX", "9700000211", "F")],
        vec![],
        lab("9700000211", "19800115", "f"),
        default(),
        Expect::Chart(7211),
    );
    add(
        "apostrophe in the surname with names required (O'Brien)",
        vec![chart(7221, "O'ZZBRIEN", "SEAN", "9700000221", "M")],
        vec![],
        Lab {
            last: "O'ZZBRIEN",
            first: "SEAN",
            ..lab("9700000221", "19800115", "M")
        },
        names_required(),
        Expect::Chart(7221),
    );
    add(
        "accented surname with names required",
        vec![chart(7231, "ÉZZLANGER", "JOSÉE", "9700000231", "F")],
        vec![],
        Lab {
            last: "ÉZZLANGER",
            first: "JOSÉE",
            ..lab("9700000231", "19800115", "F")
        },
        names_required(),
        Expect::Chart(7231),
    );
    add(
        "names required and the initials differ",
        vec![chart(7241, "ZZCASE", "ALEX", "9700000241", "F")],
        vec![],
        Lab {
            last: "YYOTHER",
            first: "ALEX",
            ..lab("9700000241", "19800115", "F")
        },
        names_required(),
        Expect::NameMismatch,
    );
    add(
        "12-character Ontario number with version code",
        vec![chart(7251, "ZZCASE", "ALEX", "9700000251", "F")],
        vec![],
        lab("9700000251AB", "19800115", "F"),
        default(),
        Expect::Chart(7251),
    );
    add(
        "birth date missing: health number and sex decide",
        vec![chart(7261, "ZZCASE", "ALEX", "9700000261", "F")],
        vec![],
        lab("9700000261", "", "F"),
        default(),
        Expect::Chart(7261),
    );
    add(
        "birth date differs",
        vec![chart(7271, "ZZCASE", "ALEX", "9700000271", "F")],
        vec![],
        lab("9700000271", "19800116", "F"),
        default(),
        Expect::BirthDateMismatch,
    );
    add(
        "birth date present but not a date",
        vec![chart(7281, "ZZCASE", "ALEX", "9700000281", "F")],
        vec![],
        lab("9700000281", "1980-01-15", "F"),
        default(),
        Expect::InvalidBirthDate,
    );
    add(
        "birth date with a time",
        vec![chart(7291, "ZZCASE", "ALEX", "9700000291", "F")],
        vec![],
        lab("9700000291", "198001151230", "F"),
        default(),
        Expect::Chart(7291),
    );
    add(
        "a LIKE wildcard as health number",
        vec![chart(7301, "ZZCASE", "ALEX", "9700000301", "F")],
        vec![],
        lab("%", "19800115", "F"),
        default(),
        Expect::NotFound,
    );
    add(
        "a LIKE wildcard as sex does not widen the match",
        vec![chart(7311, "ZZCASE", "ALEX", "9700000311", "F")],
        vec![],
        lab("9700000311", "19800115", "%"),
        MatchSettings {
            relax_sex_for_non_binary: false,
            ..MatchSettings::default()
        },
        Expect::SexMismatch,
    );
    add(
        "SQL in the surname with names required",
        vec![chart(7321, "ZZCASE", "ALEX", "9700000321", "F")],
        vec![],
        Lab {
            last: "Z' OR '1'='1",
            first: "ALEX",
            ..lab("9700000321", "19800115", "F")
        },
        names_required(),
        Expect::Chart(7321),
    );
    add(
        "health number with surrounding spaces",
        vec![chart(7331, "ZZCASE", "ALEX", "9700000331", "F")],
        vec![],
        lab(" 9700000331 ", "19800115", "F"),
        default(),
        Expect::Chart(7331),
    );
    add(
        "health number with inner spaces is not normalised into another",
        vec![chart(7341, "ZZCASE", "ALEX", "9700000341", "F")],
        vec![],
        lab("9700 000 341", "19800115", "F"),
        default(),
        Expect::NotFound,
    );
    add(
        "merged chart whose head is ambiguous-free but has another health number",
        vec![
            chart(7351, "ZZCASE", "ALEX", "9700000351", "F"),
            chart(7352, "ZZCASE", "ALEXANDRA", "9700000352", "F"),
        ],
        vec![(7351, 7352, 0)],
        lab("9700000351", "19800115", "F"),
        default(),
        Expect::Chart(7352),
    );
    add(
        "a merge cycle stops instead of looping",
        vec![
            chart(7361, "ZZCASE", "ALEX", "9700000361", "F"),
            chart(7362, "ZZCASE", "ALEX", "9700000362", "F"),
        ],
        vec![(7361, 7362, 0), (7362, 7361, 0)],
        lab("9700000361", "19800115", "F"),
        default(),
        Expect::Chart(7362),
    );
    v
}

async fn setup(store: &Store, case: &Case) {
    for c in &case.charts {
        sqlx::query(
            "INSERT INTO demographic (demographic_no, last_name, first_name, year_of_birth, month_of_birth, date_of_birth, hin, sex, provider_no, lastUpdateDate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '2026-01-01 00:00:00')",
        )
        .bind(c.no)
        .bind(c.last)
        .bind(c.first)
        .bind(c.dob.0)
        .bind(c.dob.1)
        .bind(c.dob.2)
        .bind(c.hin)
        .bind(c.sex)
        .bind(c.mrp)
        .execute(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{}: insert chart: {e}", case.name));
    }
    for (from, to, deleted) in &case.merges {
        sqlx::query(
            "INSERT INTO demographic_merged (demographic_no, merged_to, deleted) VALUES (?, ?, ?)",
        )
        .bind(*from)
        .bind(*to)
        .bind(*deleted)
        .execute(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{}: insert merge: {e}", case.name));
    }
}

/// A PATHL7 lab for `case`'s patient, ordered by a practitioner no provider has.
fn lab_message(i: usize, c: &Case) -> String {
    let l = &c.lab;
    format!(
        "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101120000||ORU^R01|MATCH{i}|P|2.3\rPID||{}|||{}^{}||{}|{}\rORC|RE||26-9{i:07}-X-1\rOBR|1||26-9{i:07}-X-1|X^Test||20260101090000|20260101090000|||||||||99999^ZZNOBODY^DOC||||||||CHEM1|F\rOBX|1|NM|X1^Result||1|u|0-2|N|||F|||20260101100000\r",
        l.hin, l.last, l.first, l.dob, l.sex
    )
}

/// Imports `case`'s lab with the match outcome `got` (one transaction, as the sink does) and
/// checks where it landed: the matched chart only, or — unmatched — no `patientLabRouting`
/// row, in OSCAR's unmatched-inbox query, and in some provider's inbox (or `'0'`).
async fn import_and_check_inbox(
    store: &Store,
    i: usize,
    c: &Case,
    got: &MatchOutcome,
) -> Result<(), String> {
    use oscarflow::ack::AckToken;
    use oscarflow::envelope::{sha256, Envelope, Origin, Provenance, Raw};
    use oscarflow::oscar::import::{import_file, ImportOptions, ImportOutcome, Overflow};
    use oscarflow::stages::parse_hl7::{ParseHl7, ParseHl7Config};
    use oscarflow::stages::Emitter;
    use std::sync::Arc;

    let bytes = bytes::Bytes::from(lab_message(i, c));
    let prov = Arc::new(Provenance {
        pipeline: Arc::from("matching_suite"),
        source: Arc::from("cases"),
        source_kind: Arc::from("test"),
        origin: Origin::Memory {
            label: c.name.to_string(),
        },
        received_at: time::OffsetDateTime::now_utc(),
        attempt: 1,
        content_sha256: sha256(&bytes),
    });
    let env = Envelope::new(
        prov.clone(),
        Raw {
            bytes,
            name: format!("case{i}.hl7"),
            lab_type: None,
        },
        AckToken::detached(),
    );
    let stage = ParseHl7::new(
        ParseHl7Config::default(),
        Arc::from("parse"),
        oscarflow::telemetry::Observers::none(),
    );
    let mut out = Emitter::default();
    stage.parse(&env, &mut out);
    let mut file = match out.outputs.pop() {
        Some(o) if out.rejects.is_empty() => o.payload,
        _ => return Err("the case's lab did not parse".into()),
    };
    for m in &mut file.messages {
        m.matched = Some(got.clone());
    }
    let opts = ImportOptions {
        service_name: "matching_suite".into(),
        upload_provider_no: "0".into(),
        flavour: oscarflow::oscar::Flavour::OpenO,
        on_overflow: Overflow::Truncate,
        widths: Arc::default(),
        narrow: Arc::default(),
        max_statement_bytes: None,
    };
    let lab_no = match import_file(store, &file, &prov, &opts).await {
        Ok(ImportOutcome::Imported { labs }) if labs.len() == 1 => labs[0].lab_no,
        other => return Err(format!("import: {other:?}")),
    };
    // The outcome and its reason are recorded with the lab, in our own table.
    let recorded: (String, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT match_outcome, match_candidates, demographic_no FROM oscarflow_lab_message WHERE lab_no = ?",
    )
    .bind(lab_no)
    .fetch_one(&store.pool)
    .await
    .map_err(|e| format!("oscarflow_lab_message: {e}"))?;
    let want = (
        got.label().to_string(),
        got.candidates().map(|n| n as i64),
        got.demographic_no(),
    );
    if recorded != want {
        return Err(format!("recorded {recorded:?}, expected {want:?}"));
    }
    let patients: Vec<i64> =
        sqlx::query_scalar("SELECT demographic_no FROM patientLabRouting WHERE lab_no = ?")
            .bind(lab_no)
            .fetch_all(&store.pool)
            .await
            .map_err(|e| e.to_string())?;
    let inboxes: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM providerLabRouting WHERE lab_no = ? AND lab_type = 'HL7'",
    )
    .bind(lab_no)
    .fetch_one(&store.pool)
    .await
    .map_err(|e| e.to_string())?;
    if inboxes == 0 {
        return Err("the lab is in no provider's inbox".into());
    }
    match got {
        MatchOutcome::Matched { demographic_no, .. } => {
            if patients != vec![*demographic_no] {
                return Err(format!("patientLabRouting {patients:?}"));
            }
        }
        _ => {
            if !patients.is_empty() {
                return Err(format!("unmatched but filed to {patients:?}"));
            }
            // Hl7TextInfoDao.findLabAndDocsViaMagic's unmatched filter (IMPORT-SPEC §2.6).
            let listed: i64 = sqlx::query_scalar(
                "SELECT COUNT(DISTINCT info.lab_no) FROM patientLabRouting plr2 \
                 RIGHT JOIN providerLabRouting plr ON plr.lab_no = plr2.lab_no AND plr2.lab_type = 'HL7' \
                 RIGHT JOIN hl7TextInfo info ON plr.lab_no = info.lab_no \
                 WHERE plr.lab_type = 'HL7' AND (plr2.demographic_no IS NULL OR plr2.demographic_no = '0') \
                 AND info.lab_no = ?",
            )
            .bind(lab_no)
            .fetch_one(&store.pool)
            .await
            .map_err(|e| e.to_string())?;
            if listed != 1 {
                return Err("unmatched, but not in OSCAR's unmatched-inbox query".into());
            }
        }
    }
    Ok(())
}

/// Runs every case; returns (cases run, failures). A wrong-patient match is reported as such.
/// Each case's lab is also imported, and its inbox visibility checked.
pub async fn run(store: &Store) -> (usize, Vec<String>) {
    let cases = cases();
    for c in &cases {
        setup(store, c).await;
    }
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let patient = Patient {
            last_name: c.lab.last.into(),
            first_name: c.lab.first.into(),
            health_number: c.lab.hin.into(),
            dob: c.lab.dob.into(),
            sex: c.lab.sex.into(),
            ..Default::default()
        };
        let mut conn = store.pool.acquire().await.unwrap();
        let got = match match_patient(&mut conn, &patient, &c.settings).await {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: query failed: {e}", c.name));
                continue;
            }
        };
        // The embedded store has one connection: give it back before the import.
        drop(conn);
        let ok = match (&got, c.expect) {
            (MatchOutcome::Matched { demographic_no, .. }, Expect::Chart(n)) => {
                *demographic_no == n
            }
            (MatchOutcome::NotFound, Expect::NotFound) => true,
            (MatchOutcome::BirthDateMismatch { .. }, Expect::BirthDateMismatch) => true,
            (MatchOutcome::SexMismatch { .. }, Expect::SexMismatch) => true,
            (MatchOutcome::NameMismatch { .. }, Expect::NameMismatch) => true,
            (MatchOutcome::Ambiguous { .. }, Expect::Ambiguous) => true,
            (MatchOutcome::NoHealthNumber, Expect::NoHealthNumber) => true,
            (MatchOutcome::InvalidBirthDate, Expect::InvalidBirthDate) => true,
            _ => false,
        };
        if !ok {
            let wrong = matches!(got, MatchOutcome::Matched { .. });
            failures.push(format!(
                "{}{}: expected {:?}, got {:?}",
                if wrong { "WRONG PATIENT: " } else { "" },
                c.name,
                c.expect,
                got
            ));
        }
        if let Err(e) = import_and_check_inbox(store, i, c, &got).await {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    (cases.len(), failures)
}

/// Runs the suite and fails with every case that went wrong.
pub async fn assert_no_wrong_patient_match(store: &Store) {
    // Every match outcome, each unmatched reason included, has a case.
    let covered: Vec<&str> = cases()
        .iter()
        .map(|c| match c.expect {
            Expect::Chart(_) => "matched",
            Expect::NotFound => "not_found",
            Expect::BirthDateMismatch => "birth_date_mismatch",
            Expect::SexMismatch => "sex_mismatch",
            Expect::NameMismatch => "name_mismatch",
            Expect::Ambiguous => "ambiguous",
            Expect::NoHealthNumber => "no_health_number",
            Expect::InvalidBirthDate => "invalid_birth_date",
        })
        .collect();
    for label in oscarflow::oscar::matching::OUTCOME_LABELS {
        assert!(covered.contains(label), "no case expects `{label}`");
    }
    let (n, failures) = run(store).await;
    assert!(n >= 30, "only {n} cases");
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
