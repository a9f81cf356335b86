//! Golden rows, per input file, for OSCAR's own sample labs and our fixtures — on the real
//! OSCAR schema in MariaDB and on the embedded SQLite store, against the same golden files.
//!
//! Families: the Excelleris (PATHL7), CML, Interior Health POI, MEDITECH and CLS samples in
//! `../shared/corpus/public/oscar/` (OSCAR's test resources), each imported with its lab type
//! set as an OSCAR upload configuration would set it, and `fixtures/hl7/` (types detected).
//! Each family goes into a fresh database seeded with `fixtures/sql/bc_clinic.sql` and
//! `fixtures/sql/corpus_clinic.sql` (charts and providers for some of the sample patients and
//! doctors) plus OSCAR's own `measurementMap`/`measurementType` data, one file at a time in
//! name order. Then, for every file, the rows it produced are read back:
//! `fileUploadCheck`, every `hl7TextMessage` (type, serviceName, the Base64 body decoded and
//! compared with the message), every `hl7TextInfo` column, `patientLabRouting`,
//! `providerLabRouting`, and each `measurements` row with its `measurementsExt` rows (or its
//! `measurementsDeleted` copy when a later version superseded it), and dead letters.
//!
//! Two checks:
//! 1. **Spec check**, independent of the importer's parser: the identifying `hl7TextInfo`
//!    columns are recomputed from the raw message with plain string splitting and the rules of
//!    IMPORT-SPEC §2.5 (health number, names, sex, accession, final result count, result
//!    status, report status, sending facility), and every matched lab's `patientLabRouting`
//!    must point at the chart whose health number, DOB and sex equal the message's.
//! 2. **Golden check**: the whole dump equals `tests/golden/oscar/<family>.json`, the same
//!    file for both backends. `UPDATE_GOLDEN=1` rewrites it (from SQLite); review the diff.
//!
//! Ids are normalised (labs numbered in import order within the family) and times the
//! importer takes from the clock become `"<now>"`, so the dump is stable across runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};
use sqlx::Row;

use oscarflow::sources::list::{ListItem, ListSource};
use oscarflow::store::{text_column, Store};

/// A family of input files.
struct Family {
    /// Golden file stem.
    name: &'static str,
    /// Folder: `shared:<rel>` under `../shared/corpus/public/oscar`, or a repo path.
    dir: &'static str,
    /// The pipeline's `lab_type` (`None`: detected).
    lab_type: Option<&'static str>,
}

const EXCELLERIS: Family = Family {
    name: "excelleris_pathl7",
    dir: "shared:excelleris_test_lab_data",
    lab_type: Some("PATHL7"),
};
const CML: Family = Family {
    name: "cml",
    dir: "shared:HL7-CML",
    lab_type: Some("CML"),
};
const IHAPOI: Family = Family {
    name: "iha_poi",
    dir: "shared:IHAPOI_test_data",
    lab_type: Some("IHAPOI"),
};
const MEDITECH: Family = Family {
    name: "meditech",
    dir: "shared:MEDITECH_test_data",
    lab_type: Some("MEDITECH"),
};
const CLS: Family = Family {
    name: "cls",
    dir: "shared:HL7-CLS",
    lab_type: Some("CLS"),
};
const FIXTURES: Family = Family {
    name: "fixtures_hl7",
    dir: "fixtures/hl7",
    lab_type: None,
};

// ---------------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------------

/// OSCAR's `measurementMap` and `measurementType` rows, from the same SQL files
/// `load-open-o-bc.sh` loads into MariaDB (so both backends map results identically).
fn oscar_measurement_data() -> Option<String> {
    let dir = common::shared_dir("oscar/open-o-bc")?;
    let map = std::fs::read_to_string(dir.join("measurementMapData.sql")).unwrap();
    // Every INSERT of the file (the dump's bulk VALUES line and the later single rows).
    let map_insert = map
        .lines()
        .filter(|l| {
            l.trim_start()
                .to_ascii_lowercase()
                .starts_with("insert into")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        map_insert.contains("FLOWSHEET"),
        "measurementMapData.sql maps FLOWSHEET codes"
    );
    let data = std::fs::read_to_string(dir.join("oscardata.sql")).unwrap();
    let start = data
        .find("INSERT INTO `measurementType`")
        .expect("oscardata.sql inserts measurementType");
    let end = start + data[start..].find(";\n").expect("statement end") + 1;
    // MySQL's NOW() is SQLite's CURRENT_TIMESTAMP (createDate is not read by the import).
    let types = data[start..end]
        .replace("now()", "CURRENT_TIMESTAMP")
        .replace("NOW()", "CURRENT_TIMESTAMP");
    Some(format!("{map_insert}\n{types}\n"))
}

fn seed_sql(name: &str) -> String {
    std::fs::read_to_string(common::repo().join("fixtures/sql").join(name)).expect("seed file")
}

/// Files of a family in name order, or `None` (skip) when the shared corpus is absent.
fn family_files(f: &Family) -> Option<Vec<PathBuf>> {
    let dir = match f.dir.strip_prefix("shared:") {
        Some(rel) => common::shared_dir(&format!("corpus/public/oscar/{rel}"))?,
        None => common::repo().join(f.dir),
    };
    let mut files = ListSource::expand(&[dir]).expect("list files");
    files.retain(|p| p.file_name().is_none_or(|n| n != "README.md"));
    files.sort();
    assert!(!files.is_empty(), "no files for {}", f.name);
    Some(files)
}

fn rel_name(f: &Family, path: &Path) -> String {
    let base = match f.dir.strip_prefix("shared:") {
        Some(rel) => common::repo()
            .join("../shared/corpus/public/oscar")
            .join(rel),
        None => common::repo().join(f.dir),
    };
    path.strip_prefix(&base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

const GROUPS: &str = "oscarflow_group_commit_files";

/// Imports every file of `family` into `store` (seeded) and returns the dump. `group` 1:
/// one pipeline run per file; more: every file in one run, in order (one sink task), the
/// import committing up to `group` waiting files per transaction.
async fn import_family(
    store: &Store,
    family: &Family,
    files: &[PathBuf],
    seed_maps: bool,
    group: usize,
) -> Value {
    let metrics = common::harness::metrics();
    store
        .execute_script(&seed_sql("corpus_clinic.sql"))
        .await
        .expect("corpus seed");
    if seed_maps {
        let maps = oscar_measurement_data().expect("OSCAR measurement data");
        store.execute_script(&maps).await.expect("measurement maps");
    }
    let lab_type = family.lab_type;
    let mut cfg = common::lab_pipeline_with(|c| {
        c.group_max_files = group;
        if group > 1 {
            c.concurrency = 1;
        }
    });
    for s in &mut cfg.stages {
        if let oscarflow::stages::StageConfig::ParseHl7(p) = &mut s.config {
            p.lab_type = lab_type.map(|t| {
                serde_json::from_value(json!(t)).unwrap_or_else(|e| panic!("lab type {t}: {e}"))
            });
        }
    }
    let started = oscarflow::store::now_sql();
    if group == 1 {
        for f in files {
            common::run_items(&cfg, store, vec![ListItem::File(f.clone())], None).await;
        }
    } else {
        cfg.name = format!("golden_{}_{}_{group}", family.name, seed_maps);
        let items = files.iter().cloned().map(ListItem::File).collect();
        common::run_items(&cfg, store, items, None).await;
        // Files that waited for the import committed together (the first one, which reads
        // the target's schema, gives the others time to queue up).
        let groups = metrics.sum(GROUPS, &[("pipeline", cfg.name.as_str())]);
        assert!(
            files.len() < 2 || groups > 0,
            "{}: no group commit happened in {} files",
            family.name,
            files.len()
        );
    }
    dump(store, family, files, &started).await
}

// ---------------------------------------------------------------------------------------------
// Reading the rows back
// ---------------------------------------------------------------------------------------------

/// All columns as text (NULL → null), in a stable order.
async fn rows(store: &Store, sql: &str, binds: &[&str]) -> Vec<BTreeMap<String, Option<String>>> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            use sqlx::Column;
            r.columns()
                .iter()
                .map(|c| {
                    let v = text_column(r, c.ordinal()).unwrap_or_else(|e| panic!("{sql}: {e}"));
                    (c.name().to_string(), v)
                })
                .collect()
        })
        .collect()
}

/// A timestamp the importer took from the clock (not from the message) → `"<now>"`.
fn stable_time(v: Option<String>, started: &str) -> Value {
    match v {
        Some(t) if t.as_str() >= started => json!("<now>"),
        Some(t) => json!(t),
        None => Value::Null,
    }
}

fn to_json(row: &BTreeMap<String, Option<String>>) -> Value {
    Value::Object(
        row.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.clone().map(Value::String).unwrap_or(Value::Null),
                )
            })
            .collect(),
    )
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(bytes))
}

async fn dump(store: &Store, family: &Family, files: &[PathBuf], started: &str) -> Value {
    // Labs numbered in import order within the family.
    let all_labs: Vec<i64> =
        sqlx::query_scalar("SELECT lab_id FROM hl7TextMessage ORDER BY lab_id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    let ordinal = |lab: &str| -> Value {
        let n: i64 = lab.parse().unwrap_or(-1);
        match all_labs.iter().position(|l| *l == n) {
            Some(i) => json!(format!("lab#{}", i + 1)),
            None => json!(format!("unknown lab {lab}")),
        }
    };
    let mut out = serde_json::Map::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap();
        let md5 = md5_hex(&bytes);
        let mut file = serde_json::Map::new();
        let fuc = rows(
            store,
            "SELECT CAST(id AS CHAR) AS id, provider_no, filename, md5sum FROM fileUploadCheck WHERE md5sum = ?",
            &[&md5],
        )
        .await;
        assert!(fuc.len() <= 1, "one fileUploadCheck row per file");
        let dead = rows(
            store,
            "SELECT reason, CAST(part AS CHAR) AS part FROM oscarflow_dead_letter WHERE content_sha256 = ? ORDER BY part",
            &[&hex::encode(oscarflow::envelope::sha256(&bytes))],
        )
        .await;
        file.insert(
            "dead_letters".into(),
            Value::Array(dead.iter().map(to_json).collect()),
        );
        let Some(fuc) = fuc.first() else {
            file.insert("imported".into(), json!(false));
            out.insert(rel_name(family, path), Value::Object(file));
            continue;
        };
        file.insert("imported".into(), json!(true));
        file.insert(
            "fileUploadCheck".into(),
            json!({"provider_no": fuc["provider_no"], "md5sum_is_file_md5": fuc["md5sum"].as_deref() == Some(md5.as_str())}),
        );
        let fuc_id = fuc["id"].clone().unwrap();
        let messages = rows(
            store,
            "SELECT CAST(lab_id AS CHAR) AS lab_id, message, type, serviceName FROM hl7TextMessage WHERE fileUploadCheck_id = ? ORDER BY lab_id",
            &[&fuc_id],
        )
        .await;
        let mut labs = Vec::new();
        for m in &messages {
            let lab = m["lab_id"].clone().unwrap();
            let body = m["message"].clone().unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .expect("hl7TextMessage.message is standard Base64 without line breaks");
            let text = String::from_utf8(decoded).expect("the stored message is UTF-8");
            let info = rows(store, "SELECT sex, health_no, result_status, CAST(final_result_count AS CHAR) AS final_result_count, obr_date, priority, requesting_client, discipline, last_name, first_name, report_status, accessionNum, filler_order_num, sending_facility, label FROM hl7TextInfo WHERE lab_no = ?", &[&lab]).await;
            assert_eq!(info.len(), 1, "one hl7TextInfo row per lab");
            let patient = rows(store, "SELECT CAST(demographic_no AS CHAR) AS demographic_no, lab_type FROM patientLabRouting WHERE lab_no = ? ORDER BY demographic_no", &[&lab]).await;
            let providers = rows(store, "SELECT provider_no, status, lab_type, comment FROM providerLabRouting WHERE lab_no = ? ORDER BY provider_no", &[&lab]).await;
            // Measurements of this lab: by their ext lab_no, live or moved aside.
            let ids: Vec<String> = rows(store, "SELECT CAST(measurement_id AS CHAR) AS id FROM measurementsExt WHERE keyval = 'lab_no' AND val = ? ORDER BY measurement_id", &[&lab]).await.into_iter().filter_map(|r| r["id"].clone()).collect();
            let mut measurements = Vec::new();
            for id in &ids {
                let live = rows(store, "SELECT type, CAST(demographicNo AS CHAR) AS demographicNo, providerNo, dataField, measuringInstruction, comments, CAST(dateObserved AS CHAR) AS dateObserved, CAST(appointmentNo AS CHAR) AS appointmentNo FROM measurements WHERE id = ?", &[id]).await;
                let deleted = rows(store, "SELECT type, CAST(demographicNo AS CHAR) AS demographicNo, providerNo, dataField, measuringInstruction, comments, CAST(dateObserved AS CHAR) AS dateObserved FROM measurementsDeleted WHERE originalId = ?", &[id]).await;
                let (state, row) = match (live.first(), deleted.first()) {
                    (Some(r), None) => ("live", r.clone()),
                    (None, Some(r)) => ("deleted", r.clone()),
                    _ => panic!("measurement {id} must be live or deleted, exactly once"),
                };
                let mut mj = to_json(&row);
                mj["dateObserved"] = stable_time(row["dateObserved"].clone(), started);
                mj["state"] = json!(state);
                let ext = rows(
                    store,
                    "SELECT keyval, val FROM measurementsExt WHERE measurement_id = ? ORDER BY id",
                    &[id],
                )
                .await;
                mj["ext"] = Value::Array(
                    ext.iter()
                        .map(|e| {
                            let k = e["keyval"].clone().unwrap_or_default();
                            let v = e["val"].clone().unwrap_or_default();
                            let v = if k == "lab_no" { ordinal(&v) } else { json!(v) };
                            json!([k, v])
                        })
                        .collect(),
                );
                measurements.push(mj);
            }
            labs.push(json!({
                "lab": ordinal(&lab),
                "hl7TextMessage": {"type": m["type"], "serviceName": m["serviceName"], "segments": text.split(['\r', '\n']).filter(|s| !s.is_empty()).count()},
                "hl7TextInfo": to_json(&info[0]),
                "patientLabRouting": patient.iter().map(to_json).collect::<Vec<_>>(),
                "providerLabRouting": providers.iter().map(to_json).collect::<Vec<_>>(),
                "measurements": measurements,
                "_message_text": text,
            }));
        }
        file.insert("labs".into(), Value::Array(labs));
        out.insert(rel_name(family, path), Value::Object(file));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// The spec check: values recomputed from the raw message by plain string splitting
// ---------------------------------------------------------------------------------------------

/// `SEG-field.component` of the first `seg` segment, by plain splitting (no unescaping).
fn naive(text: &str, seg: &str, field: usize, comp: usize) -> String {
    let Some(line) = text
        .split(['\r', '\n'])
        .find(|l| l.starts_with(seg) && l.as_bytes().get(3) == Some(&b'|'))
    else {
        return String::new();
    };
    let fields: Vec<&str> = line.split('|').collect();
    let idx = if seg == "MSH" { field - 1 } else { field };
    let f = fields.get(idx).copied().unwrap_or("");
    let f = f.split('~').next().unwrap_or("");
    f.split('^').nth(comp - 1).unwrap_or("").trim().to_string()
}

fn opt(s: String) -> Value {
    if s.trim().is_empty() {
        Value::Null
    } else {
        json!(s.trim())
    }
}

/// The health number as the lab type's parser reads it.
fn naive_hin(text: &str, lab_type: &str) -> String {
    let n = |seg, f, c| naive(text, seg, f, c);
    match lab_type {
        "IHAPOI" => n("PID", 4, 1),
        "CML" => {
            let p4 = n("PID", 4, 1);
            let p2 = n("PID", 2, 1);
            match p2.strip_prefix("MU") {
                Some(rest) if p4.is_empty() => rest.to_string(),
                _ => p4,
            }
        }
        _ => n("PID", 2, 1),
    }
}

/// A value cut to its OSCAR column (Open-O widths).
fn cut(v: String, width: usize) -> String {
    v.trim().chars().take(width).collect()
}

/// The `hl7TextInfo` values IMPORT-SPEC §2.5 (and OSCAR's parser for the type) defines for
/// the identifying columns.
fn spec_columns(text: &str, lab_type: &str) -> BTreeMap<&'static str, Value> {
    let n = |seg, f, c| naive(text, seg, f, c);
    let mut m = BTreeMap::new();
    let hin = cut(naive_hin(text, lab_type), 12);
    m.insert("health_no", opt(hin));
    let (last, first) = if lab_type == "CLS" {
        let full = n("PID", 5, 1);
        match full.split_once(',') {
            Some((l, rest)) => {
                let rest = rest.trim();
                let f = rest.rsplit_once(' ').map(|(a, _)| a).unwrap_or(rest);
                (l.trim().to_string(), f.trim().to_string())
            }
            None => (full, String::new()),
        }
    } else {
        (n("PID", 5, 1), n("PID", 5, 2))
    };
    m.insert("last_name", opt(cut(last, 30)));
    m.insert("first_name", opt(cut(first, 30)));
    m.insert("sex", opt(cut(n("PID", 8, 1), 1)));
    let accession = match lab_type {
        "CML" => {
            let (p, f) = (n("ORC", 2, 1), n("ORC", 3, 1));
            if f.is_empty() {
                p
            } else {
                format!("{p}, {f}")
            }
        }
        "MEDITECH" => n("OBR", 3, 1),
        "IHAPOI" => [n("OBR", 2, 1), n("ORC", 2, 1), n("ORC", 4, 1)]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default(),
        "CLS" => n("OBR", 20, 1),
        _ => {
            let src = if text.split(['\r', '\n']).any(|l| l.starts_with("ORC|")) {
                n("ORC", 3, 1)
            } else {
                n("OBR", 3, 1)
            };
            let parts: Vec<&str> = src.split('-').collect();
            match parts.len() {
                3 => parts[0].to_string(),
                5 => parts[..3].join("-"),
                k if k > 1 => parts[..2].join("-"),
                _ => String::new(),
            }
        }
    };
    m.insert("accessionNum", opt(accession));
    m.insert(
        "sending_facility",
        match lab_type {
            "MEDITECH" | "IHAPOI" => json!(format!("{} {}", n("PV1", 3, 1), n("PV1", 3, 4))),
            _ => json!(n("MSH", 4, 1)),
        },
    );
    m
}

/// Checks every lab of the dump against the spec and the seeded charts; strips the message
/// texts (they are not part of the golden files).
async fn spec_check(store: &Store, family: &Family, dump: &mut Value) {
    let mut problems = Vec::new();
    for (file, f) in dump.as_object_mut().unwrap() {
        let Some(labs) = f.get_mut("labs").and_then(Value::as_array_mut) else {
            continue;
        };
        for lab in labs {
            let text = lab["_message_text"].as_str().unwrap().to_string();
            lab.as_object_mut().unwrap().remove("_message_text");
            let lab_type = lab["hl7TextMessage"]["type"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Some(t) = family.lab_type {
                assert_eq!(
                    lab_type, t,
                    "{file}: hl7TextMessage.type is the configured type"
                );
            }
            let info = &lab["hl7TextInfo"];
            for (col, want) in spec_columns(&text, &lab_type) {
                if info[col] != want {
                    problems.push(format!(
                        "{file} {}: {col} is {} but the spec gives {want}",
                        lab["lab"], info[col]
                    ));
                }
            }
            // Routing: every lab is in some inbox; a matched lab is filed to the chart whose
            // health number, DOB and sex are the message's.
            if lab["providerLabRouting"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            {
                problems.push(format!("{file} {}: no providerLabRouting row", lab["lab"]));
            }
            let routed = lab["patientLabRouting"].as_array().unwrap().clone();
            assert!(routed.len() <= 1, "{file}: at most one patient");
            if let Some(p) = routed.first() {
                let demo = p["demographic_no"].as_str().unwrap();
                let dob = naive(&text, "PID", 7, 1);
                let hin = naive_hin(&text, &lab_type);
                // The charts that are the message's patient, and the heads they are merged to.
                let charts = rows(store, "SELECT CAST(d.demographic_no AS CHAR) AS d, CAST(m.merged_to AS CHAR) AS head FROM demographic d LEFT JOIN demographic_merged m ON m.demographic_no = d.demographic_no AND m.deleted = 0 WHERE d.hin = ? AND d.year_of_birth = ? AND d.month_of_birth = ? AND d.date_of_birth = ?", &[&hin, dob.get(..4).unwrap_or(""), dob.get(4..6).unwrap_or(""), dob.get(6..8).unwrap_or("")]).await;
                let theirs = charts
                    .iter()
                    .any(|c| c["head"].as_deref().or(c["d"].as_deref()) == Some(demo));
                if !theirs {
                    problems.push(format!("{file} {}: filed to chart {demo}, which is not the message's patient (nor its merge head)", lab["lab"]));
                }
            } else if lab["measurements"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
            {
                problems.push(format!(
                    "{file} {}: unmatched but has measurements",
                    lab["lab"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} spec problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The golden comparison
// ---------------------------------------------------------------------------------------------

fn golden_path(family: &Family) -> PathBuf {
    common::repo().join(format!("tests/golden/oscar/{}.json", family.name))
}

/// Where two JSON values differ: `path: want → got`, at most 12 lines.
fn json_diff(want: &Value, got: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= 12 || want == got {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for k in w.keys().chain(g.keys().filter(|k| !w.contains_key(*k))) {
                let (a, b) = (
                    w.get(k).unwrap_or(&Value::Null),
                    g.get(k).unwrap_or(&Value::Null),
                );
                json_diff(a, b, format!("{path}.{k}"), out);
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                json_diff(a, b, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(format!("{path}: want {want} got {got}")),
    }
}

fn compare_with_golden(family: &Family, backend: &str, got: &Value) {
    let path = golden_path(family);
    if backend == "sqlite" && std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display())),
    )
    .unwrap();
    let (want, got) = (want.as_object().unwrap(), got.as_object().unwrap());
    let mut differing = Vec::new();
    for file in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (w, g) = (
            want.get(file).unwrap_or(&Value::Null),
            got.get(file).unwrap_or(&Value::Null),
        );
        if w != g {
            let mut paths = Vec::new();
            json_diff(w, g, String::new(), &mut paths);
            differing.push(format!("--- {file}\n{}", paths.join("\n")));
        }
    }
    assert!(
        differing.is_empty(),
        "{backend}: {} of {} files differ from {}:\n{}",
        differing.len(),
        want.len(),
        path.display(),
        differing.join("\n")
    );
    let labs: usize = got
        .values()
        .map(|f| f["labs"].as_array().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "{backend} {}: {} files, {labs} labs match the golden rows",
        family.name,
        got.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

async fn check_sqlite(family: Family, group: usize) {
    let Some(files) = family_files(&family) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    assert!(
        store.insert_returning,
        "the bundled SQLite accepts INSERT … RETURNING"
    );
    let mut got = import_family(&store, &family, &files, true, group).await;
    spec_check(&store, &family, &mut got).await;
    compare_with_golden(&family, "sqlite", &got);
}

async fn check_mariadb(family: Family, group: usize) {
    check_mariadb_with(family, true, group).await;
}

/// `insert_returning: false` takes the path for servers without `INSERT … RETURNING`
/// (MySQL): one `measurements` INSERT per result. It must write the same golden rows.
async fn check_mariadb_with(family: Family, insert_returning: bool, group: usize) {
    let Some(files) = family_files(&family) else {
        return;
    };
    common::mariadb::with_test_db(|url| async move {
        let mut store = Store::open(&url).await.expect("open MariaDB store");
        assert!(
            store.insert_returning,
            "MariaDB 10.5+ accepts INSERT … RETURNING"
        );
        store.insert_returning = insert_returning;
        let mut got = import_family(&store, &family, &files, false, group).await;
        spec_check(&store, &family, &mut got).await;
        compare_with_golden(&family, "mariadb", &got);
    })
    .await;
}

/// Each family on each backend, one file per transaction and in group commits of up to 7
/// and 64 files: the same golden rows, byte for byte.
macro_rules! golden_tests {
    ($($family:ident => $sqlite:ident, $mariadb:ident, $group:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            check_sqlite($family, $group).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mariadb() {
            check_mariadb($family, $group).await;
        }
    )*};
}

golden_tests! {
    EXCELLERIS => excelleris_samples_write_the_golden_rows_on_sqlite, excelleris_samples_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    CML => cml_samples_write_the_golden_rows_on_sqlite, cml_samples_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    IHAPOI => iha_poi_samples_write_the_golden_rows_on_sqlite, iha_poi_samples_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    MEDITECH => meditech_samples_write_the_golden_rows_on_sqlite, meditech_samples_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    CLS => cls_samples_write_the_golden_rows_on_sqlite, cls_samples_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    FIXTURES => fixtures_write_the_golden_rows_on_sqlite, fixtures_write_the_golden_rows_on_oscars_mariadb_schema, 1;
    EXCELLERIS => excelleris_samples_write_the_golden_rows_on_sqlite_in_groups_of_7, excelleris_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    CML => cml_samples_write_the_golden_rows_on_sqlite_in_groups_of_7, cml_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    IHAPOI => iha_poi_samples_write_the_golden_rows_on_sqlite_in_groups_of_7, iha_poi_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    MEDITECH => meditech_samples_write_the_golden_rows_on_sqlite_in_groups_of_7, meditech_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    CLS => cls_samples_write_the_golden_rows_on_sqlite_in_groups_of_7, cls_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    FIXTURES => fixtures_write_the_golden_rows_on_sqlite_in_groups_of_7, fixtures_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_7, 7;
    EXCELLERIS => excelleris_samples_write_the_golden_rows_on_sqlite_in_groups_of_64, excelleris_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
    CML => cml_samples_write_the_golden_rows_on_sqlite_in_groups_of_64, cml_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
    IHAPOI => iha_poi_samples_write_the_golden_rows_on_sqlite_in_groups_of_64, iha_poi_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
    MEDITECH => meditech_samples_write_the_golden_rows_on_sqlite_in_groups_of_64, meditech_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
    CLS => cls_samples_write_the_golden_rows_on_sqlite_in_groups_of_64, cls_samples_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
    FIXTURES => fixtures_write_the_golden_rows_on_sqlite_in_groups_of_64, fixtures_write_the_golden_rows_on_oscars_mariadb_schema_in_groups_of_64, 64;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excelleris_samples_write_the_golden_rows_on_mariadb_without_insert_returning() {
    check_mariadb_with(EXCELLERIS, false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_write_the_golden_rows_on_mariadb_without_insert_returning() {
    check_mariadb_with(FIXTURES, false, 1).await;
}
