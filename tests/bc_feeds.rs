//! Real BC lab feeds end to end, through `oscarflow replay` as a new user runs it: Interior
//! Health's POI responses as Expedius received them (`../shared/corpus/public/expedius`), with
//! no pipeline file. Every message is IHAPOI, whichever IH application and facility sent it;
//! a golden file pins, for one message of each sending application, the health number (PID-4,
//! not the account number in PID-2), the accession and the routing by `provider.hso_no`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use oscarflow::hl7::{frame, Message};
use oscarflow::store::Store;

const RESPONSES: &[&str] = &["iha_poi_hl7_II.xml", "iha_poi_hl7_test.xml"];

fn replay(files: &[&Path], db: &str, seed: Option<&Path>) {
    let o = common::replay_command(files, db, seed)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0)),
        "replay: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn replay_of_expedius_poi_responses_without_a_pipeline_files_every_message_as_ihapoi() {
    let Some(dir) = common::shared_dir("corpus/public/expedius") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(tmp.path());
    let files: Vec<_> = RESPONSES.iter().map(|f| dir.join(f)).collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    replay(&refs, &db, None);
    let store = Store::open(&db).await.unwrap();
    let types = common::lab_types(&store).await;
    println!("types: {types:?}");
    assert_eq!(types.len(), 1, "{types:?}");
    assert_eq!(types[0].0, "IHAPOI");
    assert_eq!(
        types[0].1, 449,
        "every message of both responses but one truncated"
    );
}

/// Component 1 of every repetition of every field of the segments that name doctors.
fn doctor_ids(m: &Message<'_>) -> Vec<String> {
    let mut ids = Vec::new();
    for seg in m.segments() {
        let fields: &[usize] = match seg.name {
            "PV1" => &[7, 8, 9, 17, 52],
            "OBR" => &[16, 28],
            "ORC" => &[10, 12],
            "ZDR" => &[1, 2, 3, 4, 5, 6, 7, 8],
            _ => &[],
        };
        for &f in fields {
            for r in 1..=m.repetitions(seg, f).max(1) {
                for c in [1, 8] {
                    let v = m.value(seg, f, r, Some(c)).trim().to_string();
                    if !v.is_empty() && v.len() <= 10 && !ids.contains(&v) {
                        ids.push(v);
                    }
                }
            }
        }
    }
    ids
}

#[tokio::test]
async fn poi_messages_of_every_ih_application_keep_pid4_the_accession_and_hso_routing() {
    let Some(dir) = common::shared_dir("corpus/public/expedius") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // One message of each sending application (MSH-3 with its version).
    let mut picked: BTreeMap<String, (String, String)> = BTreeMap::new();
    for f in RESPONSES {
        let bytes = bytes::Bytes::from(std::fs::read(dir.join(f)).unwrap());
        for fr in frame(&bytes).messages {
            let text = String::from_utf8_lossy(&fr.joined(b"\r")).into_owned();
            let Ok(m) = Message::parse(&text) else {
                continue;
            };
            let app = m.get("MSH-3").trim().to_string();
            if !m.has("OBR") {
                continue;
            }
            // The first with a health number, else the first.
            let has_hin = !m.get("PID-4.1").trim().is_empty();
            let take = match picked.get(&app) {
                None => true,
                Some((_, t)) => {
                    has_hin && Message::parse(t).unwrap().get("PID-4.1").trim().is_empty()
                }
            };
            if take {
                picked.insert(app, (m.get("MSH-10").trim().to_string(), text.clone()));
            }
        }
    }
    let apps: Vec<&str> = picked.keys().map(String::as_str).collect();
    assert_eq!(
        apps,
        [
            "IHALAB^2.1",
            "IHAOE^2.1",
            "IHARAD^2.1",
            "LAB^2.0",
            "RAD^2.0"
        ],
        "the IH sending applications of the real responses"
    );
    // Providers known by their Interior Health number (hso_no) only: a lab routed on
    // ohip_no, as a generic HL7 lab is, would reach none of them.
    let mut ids: Vec<String> = Vec::new();
    for (_, text) in picked.values() {
        for id in doctor_ids(&Message::parse(text).unwrap()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut seed = String::new();
    for (i, id) in ids.iter().enumerate() {
        seed.push_str(&format!(
            "INSERT INTO provider (provider_no, last_name, first_name, provider_type, specialty, team, sex, address, phone, work_phone, ohip_no, hso_no, status, lastUpdateUser, lastUpdateDate) VALUES ('{}', 'ZZTEST', 'DOC{i}', 'doctor', 'GP', '', 'F', '', '', '', NULL, '{}', '1', '999998', '2025-01-02 09:00:00');\n",
            700000 + i,
            id.replace('\'', "''"),
        ));
    }
    let seed_path = tmp.path().join("providers.sql");
    std::fs::write(&seed_path, seed).unwrap();
    let mut files = Vec::new();
    for (app, (_, text)) in &picked {
        let p = tmp.path().join(format!("{}.hl7", app.replace('^', "_")));
        std::fs::write(&p, text.replace('\r', "\r\n")).unwrap();
        files.push(p);
    }
    let db = common::sqlite_url(tmp.path());
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    replay(&refs, &db, Some(&seed_path));
    let store = Store::open(&db).await.unwrap();
    let mut golden = serde_json::Map::new();
    for (app, (control, text)) in &picked {
        let m = Message::parse(text).unwrap();
        let row: (i64, String, Option<String>, Option<String>) = sqlx::query_as(
            "SELECT m.lab_id, m.type, i.health_no, i.accessionNum FROM hl7TextMessage m JOIN hl7TextInfo i ON i.lab_no = m.lab_id JOIN fileUploadCheck f ON f.id = m.fileUploadCheck_id WHERE f.filename LIKE ?",
        )
        .bind(format!("%{}.hl7%", app.replace('^', "_")))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let (lab_no, lab_type, health_no, accession) = row;
        assert_eq!(lab_type, "IHAPOI", "{app}");
        // The health number is PID-4, independently read here.
        assert_eq!(
            health_no.clone().unwrap_or_default(),
            m.get("PID-4.1").trim(),
            "{app}"
        );
        let routed: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT r.provider_no, p.hso_no FROM providerLabRouting r LEFT JOIN provider p ON p.provider_no = r.provider_no WHERE r.lab_no = ? ORDER BY r.provider_no",
        )
        .bind(lab_no)
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert!(
            routed.iter().all(|(p, _)| p != "0"),
            "{app}: routed to the unclaimed inbox: {routed:?}"
        );
        golden.insert(
            app.clone(),
            serde_json::json!({
                "control_id": control,
                "type": lab_type,
                "health_no": health_no,
                "accessionNum": accession,
                "routed_hso_no": routed.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>(),
            }),
        );
    }
    let path = common::repo().join("tests/golden/oscar/iha_poi_feed.json");
    let pretty = serde_json::to_string_pretty(&golden).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(pretty, expected, "differs from {}", path.display());
}

/// Every real lab sample of the corpus is typed as the feed it comes from, by the detection
/// rules alone: no feed OSCAR ships samples of falls through to the generic type, except
/// MEDITECH's, whose messages name no system (README, "Lab types").
#[test]
fn every_real_feed_sample_is_typed_as_its_feed_by_detection() {
    let Some(corpus) = common::shared_dir("corpus/public") else {
        return;
    };
    let families: &[(&str, &str)] = &[
        ("oscar/excelleris_test_lab_data", "PATHL7"),
        ("expedius/excelleris_qa.xml", "PATHL7"),
        ("oscar/IHAPOI_test_data", "IHAPOI"),
        ("expedius/iha_poi_hl7_II.xml", "IHAPOI"),
        ("expedius/iha_poi_hl7_test.xml", "IHAPOI"),
        ("oscar/HL7-CML", "CML"),
        ("oscar/HL7-CLS", "CLS"),
        ("oscar/HL7-Epsilon", "EPSILON"),
        // No marker of the system in MSH-3/MSH-4: the pipeline must say `MEDITECH`.
        ("oscar/MEDITECH_test_data", "HL7"),
    ];
    let mut counts = Vec::new();
    for (rel, want) in families {
        let p = corpus.join(rel);
        let files: Vec<_> = if p.is_dir() {
            std::fs::read_dir(&p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect()
        } else {
            vec![p]
        };
        let mut n = 0;
        for f in files {
            let bytes = bytes::Bytes::from(std::fs::read(&f).unwrap());
            for fr in frame(&bytes).messages {
                let text = String::from_utf8_lossy(&fr.joined(b"\r")).into_owned();
                let Ok(m) = Message::parse_framed(&text) else {
                    continue;
                };
                let (t, rule) = oscarflow::hl7::lab::LabType::detect_with_rule(&m);
                assert_eq!(
                    t.as_str(),
                    *want,
                    "{} #{}: typed by {rule:?}",
                    f.display(),
                    fr.index + 1
                );
                n += 1;
            }
        }
        assert!(n > 0, "{rel}: no messages");
        counts.push(format!("{rel} {n} {want}"));
    }
    println!("{}", counts.join("; "));
}
