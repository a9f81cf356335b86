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
    let rows = sqlx::query(
        "SELECT lab_no, COALESCE(final_result_count, 0), CAST(COALESCE(obr_date, '') AS CHAR) FROM hl7TextInfo WHERE accessionNum = ?",
    )
    .bind(accession)
    .fetch_all(&mut **tx)
    .await?;
    let parse = |d: &str| chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S").ok();
    let mut versions: Vec<(i64, i64, String)> = Vec::new();
    for r in &rows {
        let date = crate::store::text_column(r, 2)?.unwrap_or_default();
        versions.push((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, date));
    }
    let Some(this_date) = versions.iter().find(|v| v.0 == lab_no).map(|v| v.2.clone()) else {
        return Ok(0);
    };
    // OSCAR's getMatchingLabs: versions within four months of this lab.
    let this = parse(&this_date);
    versions.retain(|v| match (this, parse(&v.2)) {
        (Some(a), Some(b)) => (a - b).num_days().abs() <= 122,
        _ => true,
    });
    versions.sort_by(|a, b| (a.1, &a.2, a.0).cmp(&(b.1, &b.2, b.0)));
    let Some(pos) = versions.iter().position(|v| v.0 == lab_no) else {
        return Ok(0);
    };
    if pos == 0 {
        return Ok(0);
    }
    let previous = versions[pos - 1].0.to_string();
    // The ids first, then one primary-key statement per row: MariaDB runs `DELETE … WHERE
    // id IN (subquery)` (and, on small tables, `id IN (list)`) as a full scan of
    // `measurements` that locks every row, which deadlocks concurrent imports of other
    // accessions and grows with the table. `id = ?` locks only the row it moves.
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT measurement_id FROM measurementsExt WHERE keyval = 'lab_no' AND val = ?",
    )
    .bind(&previous)
    .fetch_all(&mut **tx)
    .await?;
    ids.sort_unstable();
    ids.dedup();
    let mut moved = 0;
    for id in ids {
        sqlx::query(
            "INSERT INTO measurementsDeleted (type, demographicNo, providerNo, dataField, measuringInstruction, comments, dateObserved, dateEntered, dateDeleted, originalId) \
             SELECT SUBSTR(m.type, 1, 4), m.demographicNo, m.providerNo, m.dataField, m.measuringInstruction, COALESCE(m.comments, ''), COALESCE(m.dateObserved, m.dateEntered), m.dateEntered, ?, m.id \
             FROM measurements m WHERE m.id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        moved += sqlx::query("DELETE FROM measurements WHERE id = ?")
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(moved)
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
        let keys = vec!["SELECT ? AS k"; chunk.len()].join(" UNION ALL ");
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
    data: String,
    instruction: String,
    observed: String,
}

impl MeasurementRow {
    /// Binds the row's values, in [`MEASUREMENT_VALUES`] order.
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        demographic_no: i64,
        now: &'q str,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.mtype.as_str())
            .bind(demographic_no)
            .bind(self.data.as_str())
            .bind(self.instruction.as_str())
            .bind(self.observed.as_str())
            .bind(now)
    }
}

/// Writes the measurements of a matched lab; returns how many.
///
/// With [`Store::insert_returning`] the rows go in multi-row
/// `INSERT … RETURNING id` statements: auto-increment values grow with each row a statement
/// inserts, so the returned ids, sorted, belong to the rows in `VALUES` order, whatever the
/// server's `innodb_autoinc_lock_mode` (interleaved mode can leave gaps, never reorder).
/// Without it (MySQL), one `INSERT` per row and its reported id, as before. Same rows, same
/// order, same `measurementsExt` either way: the golden tests run both backends, and
/// `tests/mariadb.rs` compares the two paths.
pub async fn write_measurements(
    tx: &mut Transaction<'static, Any>,
    lab: &LabMessage,
    (lab_no, demographic_no): (i64, i64),
    now: &str,
    store: &Store,
    (narrow, replaced): (&NarrowColumns, &mut Vec<String>),
) -> Result<u64, sqlx::Error> {
    let accession = super::handlers::accession(lab);
    let identifiers: Vec<&str> = lab
        .orders
        .iter()
        .flat_map(|o| &o.observations)
        .filter(|x| keep(x))
        .map(|x| x.identifier.as_str())
        .collect();
    let mapped = flowsheet_types(tx, store.backend, &identifiers).await?;
    let mut rows: Vec<MeasurementRow> = Vec::new();
    // (index into `rows`, key, value)
    let mut ext_rows: Vec<(usize, &'static str, String)> = Vec::new();
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
            rows.push(MeasurementRow {
                mtype: fit("type", cut(&mtype, 50)),
                data: fit("dataField", cut(&x.value, 255)),
                instruction: fit("measuringInstruction", cut(&instruction, 255)),
                observed: format_hl7_ts(&x.observed_at).unwrap_or_else(|| now.to_string()),
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
            let row = rows.len() - 1;
            ext_rows.extend(ext.into_iter().map(|(k, v)| {
                (
                    row,
                    k,
                    narrow
                        .fit("measurementsExt", "val", &v, replaced)
                        .into_owned(),
                )
            }));
        }
    }
    let ids = if store.insert_returning {
        insert_returning_ids(tx, &rows, demographic_no, now).await?
    } else {
        insert_one_by_one(tx, &rows, demographic_no, now).await?
    };
    // The key/values of every measurement in a few multi-row INSERTs (same rows, same
    // order): one round trip per row was most of an import's time.
    for chunk in ext_rows.chunks(EXT_CHUNK) {
        let sql = format!(
            "INSERT INTO measurementsExt (measurement_id, keyval, val) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (row, k, v) in chunk {
            q = q.bind(ids[*row]).bind(*k).bind(v.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(rows.len() as u64)
}

const MEASUREMENT_COLUMNS: &str = "INSERT INTO measurements (type, demographicNo, providerNo, dataField, measuringInstruction, comments, dateObserved, dateEntered, appointmentNo) VALUES ";
const MEASUREMENT_VALUES: &str = "(?, ?, '0', ?, ?, '', ?, ?, 0)";

/// The rows in multi-row `INSERT … RETURNING id` statements; their ids in row order.
async fn insert_returning_ids(
    tx: &mut Transaction<'static, Any>,
    rows: &[MeasurementRow],
    demographic_no: i64,
    now: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(MEASUREMENT_CHUNK) {
        let sql = format!(
            "{MEASUREMENT_COLUMNS}{} RETURNING id",
            vec![MEASUREMENT_VALUES; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = r.bind(q, demographic_no, now);
        }
        let mut got = Vec::with_capacity(chunk.len());
        for row in q.fetch_all(&mut **tx).await? {
            got.push(id_column(&row)?);
        }
        if got.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(format!(
                "INSERT INTO measurements returned {} ids for {} rows",
                got.len(),
                chunk.len()
            )));
        }
        got.sort_unstable();
        ids.extend(got);
    }
    Ok(ids)
}

/// The rows one `INSERT` at a time, each with its reported id.
async fn insert_one_by_one(
    tx: &mut Transaction<'static, Any>,
    rows: &[MeasurementRow],
    demographic_no: i64,
    now: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let sql = format!("{MEASUREMENT_COLUMNS}{MEASUREMENT_VALUES}");
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let res = r
            .bind(sqlx::query(&sql), demographic_no, now)
            .execute(&mut **tx)
            .await?;
        ids.push(crate::store::last_insert_id(tx, res.last_insert_id()).await?);
    }
    Ok(ids)
}

/// An id column: `measurements.id` is `int unsigned` in OSCAR's schema.
fn id_column(row: &sqlx::any::AnyRow) -> Result<i64, sqlx::Error> {
    match row.try_get::<i64, _>(0) {
        Ok(v) => Ok(v),
        Err(_) => row.try_get::<i32, _>(0).map(i64::from),
    }
}

/// `measurements` rows per INSERT (six parameters each, under SQLite's old limit of 999).
const MEASUREMENT_CHUNK: usize = 150;

/// `measurementsExt` rows per INSERT (three parameters each; SQLite builds before 3.32
/// allow 999 parameters per statement).
const EXT_CHUNK: usize = 300;

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
