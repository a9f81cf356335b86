//! Measurements for matched labs (IMPORT-SPEC §2.7), written inside the import transaction.
//!
//! For each OBX with a result (not empty, not `DNR`, a name, OBX-11 not `DNS`): one
//! `measurements` row (type from OSCAR's `measurementMap` FLOWSHEET mapping, or `''` when
//! unmapped, provider `'0'`, observed at OBX-14 or now) and its `measurementsExt` rows in
//! OSCAR's order: `lab_no`, `abnormal`, `identifier`, `name`, `labname`, `accession`,
//! `request_datetime`, `datetime`, `olis_status`, `unit`, `range` or `minimum`/`maximum`,
//! `other_id`. Before that, when the new lab is not the first version of its accession
//! (versions ordered by `final_result_count` then `obr_date`, within four months), the
//! measurements of the version just before it move to `measurementsDeleted`, as OSCAR does;
//! their `measurementsExt` rows stay.
//!
//! Values longer than OSCAR's columns (`dataField` 255, `type` 50) are cut deliberately.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::charset::NarrowColumns;
use super::info::format_hl7_ts;
use crate::hl7::lab::{LabMessage, Observation};
use crate::store::rows::{insert_all, insert_ids, Limit, Row as InsertRow, Q};
use crate::store::{Backend, Store};

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `abnormal` ext value: `A` for OBX-8 `A` or starting with `H`, `L` starting with `L`, else `N`.
fn abnormal(flag: &str) -> &'static str {
    let f = flag
        .split('~')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    if f == "A" || f.starts_with('H') {
        "A"
    } else if f.starts_with('L') {
        "L"
    } else {
        "N"
    }
}

/// Reference range as OSCAR stores it: `lo-hi` → minimum/maximum, `>x` → minimum,
/// `<x` → maximum, anything else → range text.
fn range(r: &str) -> Vec<(&'static str, String)> {
    let t = r.trim();
    if t.is_empty() {
        return Vec::new();
    }
    let num = |s: &str| s.trim().parse::<f64>().ok().map(|_| s.trim().to_string());
    if let Some(rest) = t.strip_prefix('>') {
        if let Some(v) = num(rest.trim_start_matches('=')) {
            return vec![("minimum", v)];
        }
    }
    if let Some(rest) = t.strip_prefix('<') {
        if let Some(v) = num(rest.trim_start_matches('=')) {
            return vec![("maximum", v)];
        }
    }
    if let Some((lo, hi)) = t.split_once('-') {
        if let (Some(lo), Some(hi)) = (num(lo), num(hi)) {
            return vec![("minimum", lo), ("maximum", hi)];
        }
    }
    vec![("range", t.to_string())]
}

fn keep(x: &Observation) -> bool {
    let v = x.value.trim();
    !v.is_empty()
        && !v.eq_ignore_ascii_case("DNR")
        && !x.name.trim().is_empty()
        && !x.status.eq_ignore_ascii_case("DNS")
}

/// One version of an accession, as `hl7TextInfo` holds it.
#[derive(Debug, Clone)]
pub struct Version {
    pub lab_no: i64,
    pub final_result_count: i64,
    pub obr_date: String,
}

/// The versions of each accession in `accessions` (every `hl7TextInfo` row whose
/// `accessionNum` equals it under the column's collation, as `accessionNum = ?` finds them),
/// in one query per [`ACCESSION_CHUNK`] accessions.
pub async fn versions_of(
    tx: &mut Transaction<'static, Any>,
    accessions: &[&str],
) -> Result<HashMap<String, Vec<Version>>, sqlx::Error> {
    let mut out: HashMap<String, Vec<Version>> = HashMap::new();
    for chunk in accessions.chunks(ACCESSION_CHUNK) {
        let sql = format!(
            "SELECT x.n, h.lab_no, COALESCE(h.final_result_count, 0), CAST(COALESCE(h.obr_date, '') AS CHAR) FROM ({}) x JOIN hl7TextInfo h ON h.accessionNum = x.k",
            crate::store::rows::keys_table(chunk.len(), true)
        );
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q.bind(*a);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let n: i64 = r.try_get(0)?;
            let Some(key) = usize::try_from(n).ok().and_then(|n| chunk.get(n)) else {
                continue;
            };
            out.entry(key.to_string()).or_default().push(Version {
                lab_no: r.try_get(1)?,
                final_result_count: r.try_get(2)?,
                obr_date: crate::store::text_column(&r, 3)?.unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Accessions per [`versions_of`] query.
const ACCESSION_CHUNK: usize = 200;

/// The version just before `lab_no` among `versions` (OSCAR's `getMatchingLabs`: versions
/// within four months of this lab, ordered by `final_result_count` then `obr_date`),
/// ignoring those `hidden` says are not there yet (later files of the same group commit).
pub fn previous_version(
    versions: &[Version],
    lab_no: i64,
    hidden: impl Fn(i64) -> bool,
) -> Option<i64> {
    let parse = |d: &str| chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S").ok();
    let this = parse(&versions.iter().find(|v| v.lab_no == lab_no)?.obr_date);
    let mut near: Vec<&Version> = versions
        .iter()
        .filter(|v| v.lab_no == lab_no || !hidden(v.lab_no))
        .filter(|v| match (this, parse(&v.obr_date)) {
            (Some(a), Some(b)) => (a - b).num_days().abs() <= 122,
            _ => true,
        })
        .collect();
    near.sort_by(|a, b| {
        (a.final_result_count, &a.obr_date, a.lab_no).cmp(&(
            b.final_result_count,
            &b.obr_date,
            b.lab_no,
        ))
    });
    let pos = near.iter().position(|v| v.lab_no == lab_no)?;
    (pos > 0).then(|| near[pos - 1].lab_no)
}

/// Moves the measurements of each lab in `previous` (in that order) to
/// `measurementsDeleted`; returns the ids moved, each with its lab. Their `measurementsExt`
/// rows stay.
pub async fn move_to_deleted(
    tx: &mut Transaction<'static, Any>,
    previous: &[i64],
    now: &str,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let mut of: HashMap<i64, Vec<i64>> = HashMap::new();
    let wanted: Vec<String> = previous.iter().map(|l| l.to_string()).collect();
    for chunk in wanted.chunks(ACCESSION_CHUNK) {
        let sql = format!(
            "SELECT measurement_id, val FROM measurementsExt WHERE keyval = 'lab_no' AND val IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for v in chunk {
            q = q.bind(v.as_str());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let id = match r.try_get::<i64, _>(0) {
                Ok(v) => v,
                Err(_) => i64::from(r.try_get::<i32, _>(0)?),
            };
            let val = crate::store::text_column(&r, 1)?.unwrap_or_default();
            if let Ok(lab) = val.trim().parse::<i64>() {
                of.entry(lab).or_default().push(id);
            }
        }
    }
    // Every row to move, lab by lab in `previous` order, each lab's by id.
    let mut ids: Vec<i64> = Vec::new();
    let mut lab_of: HashMap<i64, i64> = HashMap::new();
    for lab in previous {
        let mut of_lab = of.remove(lab).unwrap_or_default();
        of_lab.sort_unstable();
        of_lab.dedup();
        lab_of.extend(of_lab.iter().map(|&id| (id, *lab)));
        ids.extend(of_lab);
    }
    let mysql = tx.backend_name().eq_ignore_ascii_case("mysql");
    let mut moved: Vec<(i64, i64)> = Vec::new();
    for chunk in ids.chunks(MOVE_CHUNK) {
        // The ids drive the join (`STRAIGHT_JOIN` and the primary key forced on MariaDB,
        // which otherwise scans a small table): one primary-key lookup per row, so only the
        // rows moved are locked. Left to itself MariaDB runs `id IN (…)`
        // (or a subquery) on a small table as a full scan that locks every row, which
        // deadlocks concurrent imports of other accessions (`tests/mariadb.rs` pins this).
        // Rows are copied in the order given, as one statement per row would.
        let keys = crate::store::rows::keys_table(chunk.len(), true);
        let join = if mysql {
            "STRAIGHT_JOIN measurements m FORCE INDEX (PRIMARY)"
        } else {
            "JOIN measurements m"
        };
        let copy = format!(
            "INSERT INTO measurementsDeleted (type, demographicNo, providerNo, dataField, measuringInstruction, comments, dateObserved, dateEntered, dateDeleted, originalId) \
             SELECT SUBSTR(m.type, 1, 4), m.demographicNo, m.providerNo, m.dataField, m.measuringInstruction, COALESCE(m.comments, ''), COALESCE(m.dateObserved, m.dateEntered), m.dateEntered, ?, m.id \
             FROM ({keys}) x {join} ON m.id = x.k ORDER BY x.n"
        );
        let mut q = sqlx::query(&copy).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        let copied = q.execute(&mut **tx).await?.rows_affected();
        // The ids moved: all of them, unless a `measurementsExt` row named a measurement
        // that is gone (then those copied are looked up).
        let chunk_moved: Vec<i64> = if copied == chunk.len() as u64 {
            chunk.to_vec()
        } else {
            let sql = format!(
                "SELECT originalId FROM measurementsDeleted WHERE dateDeleted = ? AND originalId IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            let mut found = Vec::new();
            for r in q.fetch_all(&mut **tx).await? {
                found.push(match r.try_get::<i64, _>(0) {
                    Ok(v) => v,
                    Err(_) => i64::from(r.try_get::<i32, _>(0)?),
                });
            }
            chunk
                .iter()
                .copied()
                .filter(|id| found.contains(id))
                .collect()
        };
        moved.extend(
            chunk_moved
                .into_iter()
                .map(|id| (lab_of.get(&id).copied().unwrap_or_default(), id)),
        );
        let delete = if mysql {
            format!("DELETE m FROM ({keys}) x {join} ON m.id = x.k")
        } else {
            format!(
                "DELETE FROM measurements WHERE id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            )
        };
        let mut q = sqlx::query(&delete);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(moved)
}

/// Measurements moved per pair of statements.
const MOVE_CHUNK: usize = 300;

/// Moves the previous version's measurements aside (see module docs). `lab_no` is the new
/// lab, already in `hl7TextInfo`.
pub async fn retire_previous_version(
    tx: &mut Transaction<'static, Any>,
    lab_no: i64,
    accession: &str,
    now: &str,
) -> Result<u64, sqlx::Error> {
    if accession.is_empty() {
        return Ok(0);
    }
    let versions = versions_of(tx, &[accession]).await?;
    let Some(previous) = versions
        .get(accession)
        .and_then(|v| previous_version(v, lab_no, |_| false))
    else {
        return Ok(0);
    };
    Ok(move_to_deleted(tx, &[previous], now).await?.len() as u64)
}

/// OSCAR's FLOWSHEET mapping (`measurementMap` → `measurementType`) of each identifier:
/// `(type, measuringInstruction)` of the mapping with the lowest `b.id`, as OSCAR's
/// per-result query `… a.ident_code = ? … ORDER BY b.id LIMIT 1` gives it (ties, from
/// duplicate `measurementType.type` rows, broken by the lowest `t.id`), in one query per
/// lab. The identifiers are joined as bound values, so the database compares them with
/// `a.ident_code` under the column's collation, exactly as the per-result query did.
///
/// On MySQL/MariaDB the join order is forced (`STRAIGHT_JOIN`): identifiers → `a` by its
/// `ident_code` index → `b` by `loinc_code` (one pass over `measurementMap`, which has no
/// index there) → `t` by its `type` index. Left to itself the optimizer joined every `a`
/// row with every `measurementType` row and looked `b` up for each pair: ~6,000 index reads
/// per lab, most of the server's work per import (Handler_read_key per message in the
/// benchmark: 1,923 → see BENCHMARKS.md).
pub async fn flowsheet_types(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    identifiers: &[&str],
) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
    let mut wanted: Vec<&str> = identifiers.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = HashMap::new();
    for chunk in wanted.chunks(MAP_CHUNK) {
        let keys = crate::store::rows::keys_table(chunk.len(), false);
        let sql = match backend {
            Backend::MySql => format!(
                "SELECT STRAIGHT_JOIN x.k, b.ident_code, t.measuringInstruction FROM ({keys}) x JOIN measurementMap a ON a.ident_code = x.k JOIN measurementMap b ON b.loinc_code = a.loinc_code JOIN measurementType t ON t.type = b.ident_code WHERE b.lab_type = 'FLOWSHEET' ORDER BY b.id, t.id"
            ),
            Backend::Sqlite => format!(
                "SELECT x.k, b.ident_code, t.measuringInstruction FROM ({keys}) x, measurementMap a, measurementMap b, measurementType t WHERE b.lab_type = 'FLOWSHEET' AND a.ident_code = x.k AND a.loinc_code = b.loinc_code AND t.type = b.ident_code ORDER BY b.id, t.id"
            ),
        };
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(*k);
        }
        for r in q.fetch_all(&mut **tx).await? {
            let k: String = r.try_get(0)?;
            if let Entry::Vacant(e) = out.entry(k) {
                e.insert((r.try_get::<String, _>(1)?, r.try_get::<String, _>(2)?));
            }
        }
    }
    Ok(out)
}

/// Identifiers per mapping query.
const MAP_CHUNK: usize = 200;

/// One `measurements` row, before its id is known.
struct MeasurementRow {
    mtype: String,
    demographic_no: i64,
    data: String,
    instruction: String,
    observed: String,
    entered: String,
}

impl InsertRow for MeasurementRow {
    const PARAMS: usize = 6;
    const VALUES: &'static str = "(?, ?, '0', ?, ?, '', ?, ?, 0)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.mtype.as_str())
            .bind(self.demographic_no)
            .bind(self.data.as_str())
            .bind(self.instruction.as_str())
            .bind(self.observed.as_str())
            .bind(self.entered.as_str())
    }
}

/// One `measurementsExt` row: the index of its measurement among the rows written
/// together, key and value.
struct ExtRow {
    measurement: usize,
    key: &'static str,
    val: String,
    /// The measurement's id, once known.
    id: i64,
}

impl InsertRow for ExtRow {
    const PARAMS: usize = 3;
    const VALUES: &'static str = "(?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.id).bind(self.key).bind(self.val.as_str())
    }
}

/// The measurements of matched labs, computed before their ids are known, to be written
/// together by [`Measurements::write`].
#[derive(Default)]
pub struct Measurements {
    rows: Vec<MeasurementRow>,
    /// The lab of each row.
    labs: Vec<i64>,
    ext: Vec<ExtRow>,
}

/// The identifiers of the results of `lab` that become measurements (for
/// [`flowsheet_types`]).
pub fn identifiers(lab: &LabMessage) -> impl Iterator<Item = &str> {
    lab.orders
        .iter()
        .flat_map(|o| &o.observations)
        .filter(|x| keep(x))
        .map(|x| x.identifier.as_str())
}

impl Measurements {
    /// Adds the measurements of the matched lab `lab` (`lab_no`, for chart
    /// `demographic_no`), typed by `mapped` ([`flowsheet_types`] of its identifiers).
    pub fn add(
        &mut self,
        lab: &LabMessage,
        (lab_no, demographic_no): (i64, i64),
        mapped: &HashMap<String, (String, String)>,
        now: &str,
        (narrow, replaced): (&NarrowColumns, &mut Vec<String>),
    ) {
        let accession = super::handlers::accession(lab);
        for (i, order) in lab.orders.iter().enumerate() {
            for (j, x) in order.observations.iter().enumerate() {
                if !keep(x) {
                    continue;
                }
                let (mtype, instruction) = mapped
                    .get(x.identifier.as_str())
                    .cloned()
                    .unwrap_or_default();
                let mut fit = |column: &str, v: String| {
                    narrow
                        .fit("measurements", column, &v, replaced)
                        .into_owned()
                };
                self.rows.push(MeasurementRow {
                    mtype: fit("type", cut(&mtype, 50)),
                    demographic_no,
                    data: fit("dataField", cut(&x.value, 255)),
                    instruction: fit("measuringInstruction", cut(&instruction, 255)),
                    observed: format_hl7_ts(&x.observed_at).unwrap_or_else(|| now.to_string()),
                    entered: now.to_string(),
                });
                let mut ext: Vec<(&str, String)> = vec![
                    ("lab_no", lab_no.to_string()),
                    ("abnormal", abnormal(&x.abnormal_flag).to_string()),
                    ("identifier", x.identifier.clone()),
                    ("name", x.name.clone()),
                    ("labname", lab.sending_facility.clone()),
                    ("accession", accession.clone()),
                    (
                        "request_datetime",
                        format_hl7_ts(&order.requested_at).unwrap_or_default(),
                    ),
                    (
                        "datetime",
                        format_hl7_ts(&x.observed_at).unwrap_or_default(),
                    ),
                ];
                if !x.status.is_empty() {
                    ext.push(("olis_status", x.status.clone()));
                }
                if !x.units.is_empty() {
                    ext.push(("unit", x.units.clone()));
                }
                ext.extend(range(&x.reference_range));
                ext.push(("other_id", format!("{i}-{j}")));
                self.labs.push(lab_no);
                let measurement = self.rows.len() - 1;
                self.ext.extend(ext.into_iter().map(|(key, v)| {
                    ExtRow {
                        measurement,
                        key,
                        val: narrow
                            .fit("measurementsExt", "val", &v, replaced)
                            .into_owned(),
                        id: 0,
                    }
                }));
            }
        }
    }

    /// Writes every measurement added, in order, then their key/values: a few multi-row
    /// statements for all the labs of a group ([`crate::store::rows`]). Returns each
    /// measurement's (lab, id), in order.
    pub async fn write(
        mut self,
        tx: &mut Transaction<'static, Any>,
        store: &Store,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let limit = Limit::for_backend(store.backend);
        let ids = insert_ids(
            tx,
            store.insert_returning,
            (MEASUREMENT_COLUMNS, "id"),
            &self.rows,
            limit,
        )
        .await?;
        for e in &mut self.ext {
            e.id = ids[e.measurement];
        }
        insert_all(tx, EXT_COLUMNS, &self.ext, limit).await?;
        Ok(self.labs.into_iter().zip(ids).collect())
    }
}

const MEASUREMENT_COLUMNS: &str = "INSERT INTO measurements (type, demographicNo, providerNo, dataField, measuringInstruction, comments, dateObserved, dateEntered, appointmentNo)";
const EXT_COLUMNS: &str = "INSERT INTO measurementsExt (measurement_id, keyval, val)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_flags_follow_oscar() {
        assert_eq!(
            range("3.5-5.0"),
            vec![
                ("minimum", "3.5".to_string()),
                ("maximum", "5.0".to_string())
            ]
        );
        assert_eq!(range(">60"), vec![("minimum", "60".to_string())]);
        assert_eq!(range("<5.2"), vec![("maximum", "5.2".to_string())]);
        assert_eq!(range("Negative"), vec![("range", "Negative".to_string())]);
        assert!(range("").is_empty());
        assert_eq!(abnormal("H"), "A");
        assert_eq!(abnormal("HH"), "A");
        assert_eq!(abnormal("A"), "A");
        assert_eq!(abnormal("L"), "L");
        assert_eq!(abnormal("N"), "N");
        assert_eq!(abnormal(""), "N");
    }
}
