//! [`import_file`]: one lab file = one transaction, written as OSCAR's own uploader writes it;
//! [`import_group`]: several files in one transaction (group commit), each written the same
//! way, in order.
//!
//! Order (IMPORT-SPEC §2.1–§2.8, §6): duplicate check by the file's MD5 (our unique
//! `oscarflow_lab_import` key, then OSCAR's `fileUploadCheck.md5sum`, which also catches files
//! uploaded through OSCAR's own screens) → `fileUploadCheck` → per message `hl7TextMessage`
//! (Base64 of the UTF-8 text, no line breaks), `hl7TextInfo`, `patientLabRouting` only for a
//! unique match, `providerLabRouting` (at least one row, so the lab is never invisible) →
//! `oscarflow_lab_import` → commit. Any error rolls everything back: OSCAR's `clean()` emulates
//! this with deletes, we get it from the transaction. A concurrent writer of the same file
//! loses on the unique key and reports a duplicate.
//!
//! Matched labs also get `measurements`/`measurementsExt` rows, and a new version moves the
//! previous version's measurements to `measurementsDeleted` ([`super::measurements`]).

use base64::Engine;
use sqlx::{Any, Transaction};

use super::charset::NarrowColumns;
use super::generated_id;
use super::info::{doc_nums, ColumnWidths, Hl7TextInfo};
use super::matching::{match_patient, MatchOutcome, MatchSettings};
use super::measurements::{retire_previous_version, write_measurements};
use super::routing::routes;
use super::Flavour;
use crate::component::ProcessError;
use crate::envelope::Provenance;
use crate::lab_file::LabFile;
use crate::store::{now_sql, Store};

/// Sink settings the import needs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub service_name: String,
    pub upload_provider_no: String,
    pub flavour: Flavour,
    pub on_overflow: Overflow,
    /// `hl7TextInfo` column widths of the target schema.
    pub widths: std::sync::Arc<ColumnWidths>,
    /// The target's `utf8mb3` columns ([`super::charset`]).
    pub narrow: std::sync::Arc<NarrowColumns>,
    /// The server's `max_allowed_packet` (None: no such limit, SQLite). A message whose
    /// `hl7TextMessage` row would not fit is refused as data (`too_large`), never retried.
    pub max_statement_bytes: Option<u64>,
}

/// What a statement carries besides the message (the SQL, the other values, the packet
/// header): kept free under `max_allowed_packet`.
const STATEMENT_OVERHEAD: u64 = 64 * 1024;

/// Refuses a file with a message whose Base64 text in `hl7TextMessage` would exceed the
/// server's largest statement: inserting it would fail with error 1153 and a dropped
/// connection on every retry.
fn check_statement_size(file: &LabFile, max: Option<u64>) -> Result<(), ProcessError> {
    let Some(max) = max else { return Ok(()) };
    for (i, entry) in file.messages.iter().enumerate() {
        let encoded = (entry.stored_text.len() as u64).div_ceil(3) * 4;
        if encoded + STATEMENT_OVERHEAD > max {
            return Err(ProcessError::data(
                crate::dead_letter::ReasonCode::TooLarge,
                format!(
                    "message {} is {} bytes of Base64 in hl7TextMessage, over what the database takes in one statement (max_allowed_packet {max} bytes, less {STATEMENT_OVERHEAD} for the statement); raise max_allowed_packet on the server and re-drive it",
                    i + 1,
                    encoded
                ),
            ));
        }
    }
    Ok(())
}

/// What to do with a value longer than its OSCAR column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Cut it at a character boundary and log the column name (never the value).
    #[default]
    Truncate,
    /// Refuse the file: it goes to the dead-letter store, nothing is written.
    Reject,
}

/// What the import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The file was imported before; nothing was written.
    Duplicate,
    /// Every message was written.
    Imported { labs: Vec<ImportedLab> },
}

/// One lab written by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLab {
    /// Position of the message in its file.
    pub part: u32,
    /// `hl7TextMessage.lab_id`.
    pub lab_no: i64,
    pub lab_type: crate::hl7::lab::LabType,
    /// The patient match, with its reason when unmatched.
    pub matched: MatchOutcome,
}

/// `oscarflow_lab_message` rows per INSERT (11 parameters each, under SQLite's old limit).
const LAB_MESSAGE_CHUNK: usize = 80;

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> ProcessError {
    move |e| ProcessError::from_sqlx(context, &e)
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// OSCAR's saved-file name: `LabUpload.<name without .enc>.<epoch millis>`.
fn upload_filename(name: &str) -> String {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .replace(".enc", "");
    let millis = chrono::Utc::now().timestamp_millis();
    let suffix = format!(".{millis}");
    format!(
        "LabUpload.{}{suffix}",
        cut(&base, 255 - "LabUpload.".len() - suffix.len())
    )
}

/// Logs the columns where characters were replaced (names only) and clears the list.
fn warn_replaced(
    prov: &Provenance,
    part: Option<u32>,
    lab_no: Option<i64>,
    replaced: &mut Vec<String>,
) {
    if !replaced.is_empty() {
        tracing::warn!(pipeline = %prov.pipeline, sha = %prov.short_hash(), part, lab_no, columns = ?replaced, "Characters OSCAR's utf8mb3 columns cannot hold (4-byte UTF-8) were replaced with U+FFFD in these columns; hl7TextMessage keeps the original message.");
        replaced.clear();
    }
}

async fn is_duplicate(tx: &mut Transaction<'static, Any>, md5: &str) -> Result<bool, ProcessError> {
    // Ours (the unique key) or OSCAR's (an upload through its own screens), in one round trip.
    let seen: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM oscarflow_lab_import WHERE md5sum = ?) OR EXISTS (SELECT 1 FROM fileUploadCheck WHERE md5sum = ?) THEN 1 ELSE 0 END",
    )
    .bind(md5)
    .bind(md5)
    .fetch_one(&mut **tx)
    .await
    .map_err(db("duplicate check"))?;
    Ok(seen != 0)
}

/// Imports `file` in one transaction. See the module docs.
pub async fn import_file(
    store: &Store,
    file: &LabFile,
    prov: &Provenance,
    opts: &ImportOptions,
) -> Result<ImportOutcome, ProcessError> {
    check_statement_size(file, opts.max_statement_bytes)?;
    let mut tx = store.pool.begin().await.map_err(db("begin transaction"))?;
    match import_into(&mut tx, store, file, prov, opts).await? {
        Written::Imported(labs) => {
            tx.commit().await.map_err(db("commit"))?;
            Ok(ImportOutcome::Imported { labs })
        }
        Written::Duplicate => {
            tx.rollback().await.map_err(db("rollback"))?;
            Ok(ImportOutcome::Duplicate)
        }
        // Another writer committed the same file first.
        Written::Raced => {
            let _ = tx.rollback().await;
            Ok(ImportOutcome::Duplicate)
        }
    }
}

/// Imports several files in **one transaction** (a group commit), in the given order, each
/// exactly as [`import_file`] would: a file seen before — committed earlier, or earlier in
/// this very group — writes nothing, and versions of one accession retire each other's
/// measurements in order. All or nothing: on an error the transaction is rolled back and
/// the error names the file it belongs to, so the caller can commit the rest without it.
/// Another writer committing one of these files meanwhile is reported as a transient error
/// of that file (a retry finds it a duplicate).
pub async fn import_group(
    store: &Store,
    files: &[(&LabFile, &Provenance)],
    opts: &ImportOptions,
) -> Result<Vec<ImportOutcome>, (usize, ProcessError)> {
    for (i, (file, _)) in files.iter().enumerate() {
        check_statement_size(file, opts.max_statement_bytes).map_err(|e| (i, e))?;
    }
    let mut tx = store
        .pool
        .begin()
        .await
        .map_err(|e| (0, ProcessError::from_sqlx("begin transaction", &e)))?;
    let mut outcomes = Vec::with_capacity(files.len());
    for (i, (file, prov)) in files.iter().enumerate() {
        match import_into(&mut tx, store, file, prov, opts).await {
            Ok(Written::Imported(labs)) => outcomes.push(ImportOutcome::Imported { labs }),
            Ok(Written::Duplicate) => outcomes.push(ImportOutcome::Duplicate),
            Ok(Written::Raced) => {
                let _ = tx.rollback().await;
                return Err((
                    i,
                    ProcessError::transient(
                        "another writer committed the same file during the group commit",
                    ),
                ));
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err((i, e));
            }
        }
    }
    tx.commit()
        .await
        .map_err(|e| (0, ProcessError::from_sqlx("commit", &e)))?;
    Ok(outcomes)
}

/// What [`import_into`] did inside the caller's transaction.
enum Written {
    Imported(Vec<ImportedLab>),
    /// Seen before: nothing written.
    Duplicate,
    /// Another writer committed the same file first: this file's rows are in the
    /// transaction and must be rolled back.
    Raced,
}

/// One file's rows, written into `tx` (which the caller commits or rolls back).
async fn import_into(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    file: &LabFile,
    prov: &Provenance,
    opts: &ImportOptions,
) -> Result<Written, ProcessError> {
    if is_duplicate(tx, &file.md5).await? {
        return Ok(Written::Duplicate);
    }
    let now = now_sql();
    let mut replaced = Vec::new();
    let filename = upload_filename(&file.name);
    let filename = opts
        .narrow
        .fit("fileUploadCheck", "filename", &filename, &mut replaced)
        .into_owned();
    warn_replaced(prov, None, None, &mut replaced);
    let fuc = sqlx::query("INSERT INTO fileUploadCheck (provider_no, filename, md5sum, date_time) VALUES (?, ?, ?, ?)")
        .bind(&opts.upload_provider_no)
        .bind(filename)
        .bind(&file.md5)
        .bind(&now)
        .execute(&mut **tx)
        .await
        .map_err(db("insert fileUploadCheck"))?;
    let file_id = generated_id(tx, fuc.last_insert_id(), "fileUploadCheck").await?;

    let mut labs = Vec::with_capacity(file.messages.len());
    let mut records = Vec::with_capacity(file.messages.len());
    for entry in &file.messages {
        let lab = &entry.lab;
        let message =
            base64::engine::general_purpose::STANDARD.encode(entry.stored_text.as_bytes());
        let r = sqlx::query(
            "INSERT INTO hl7TextMessage (fileUploadCheck_id, message, type, serviceName, created) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(file_id)
        .bind(message)
        .bind(lab.lab_type.as_str())
        .bind(
            opts.narrow
                .fit("hl7TextMessage", "serviceName", &cut(&opts.service_name, 100), &mut replaced)
                .into_owned(),
        )
        .bind(&now)
        .execute(&mut **tx)
        .await
        .map_err(db("insert hl7TextMessage"))?;
        let lab_no = generated_id(tx, r.last_insert_id(), "hl7TextMessage").await?;

        let mut info = Hl7TextInfo::from_lab_with(lab, opts.flavour, &opts.widths);
        info.fit_charset(&opts.narrow, &mut replaced);
        let info_accession = info.accession_num.clone().unwrap_or_default();
        if !info.truncated.is_empty() && opts.on_overflow == Overflow::Reject {
            return Err(ProcessError::data(
                crate::dead_letter::ReasonCode::ImportRejected,
                format!(
                    "message {}: values longer than OSCAR's hl7TextInfo columns: {}",
                    entry.index + 1,
                    info.truncated.join(", ")
                ),
            ));
        }
        if !info.truncated.is_empty() {
            tracing::warn!(pipeline = %prov.pipeline, sha = %prov.short_hash(), part = entry.index, lab_no, columns = ?info.truncated, "Values longer than OSCAR's hl7TextInfo columns were truncated.");
        }
        sqlx::query(
            "INSERT INTO hl7TextInfo (lab_no, sex, health_no, result_status, final_result_count, obr_date, priority, requesting_client, discipline, last_name, first_name, report_status, accessionNum, filler_order_num, sending_facility, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(lab_no)
        .bind(info.sex)
        .bind(info.health_no)
        .bind(info.result_status)
        .bind(info.final_result_count)
        .bind(info.obr_date)
        .bind(info.priority)
        .bind(info.requesting_client)
        .bind(info.discipline)
        .bind(info.last_name)
        .bind(info.first_name)
        .bind(info.report_status)
        .bind(info.accession_num)
        .bind(info.filler_order_num)
        .bind(info.sending_facility)
        .bind(info.label)
        .execute(&mut **tx)
        .await
        .map_err(db("insert hl7TextInfo"))?;

        let matched = match &entry.matched {
            Some(m) => m.clone(),
            // A pipeline without a match stage still never guesses: OSCAR's default rules.
            None => match_patient(tx, &lab.patient, &MatchSettings::default())
                .await
                .map_err(db("patient match"))?,
        };
        // As OSCAR's populateMeasurementsTable, for matched labs only: the previous
        // version's measurements move aside, then this lab's are written.
        if let MatchOutcome::Matched { demographic_no, .. } = &matched {
            retire_previous_version(tx, lab_no, &info_accession, &now)
                .await
                .map_err(db("retire previous measurements"))?;
            write_measurements(
                tx,
                lab,
                (lab_no, *demographic_no),
                &now,
                store,
                (&opts.narrow, &mut replaced),
            )
            .await
            .map_err(db("insert measurements"))?;
            sqlx::query(
                "INSERT INTO patientLabRouting (demographic_no, lab_no, lab_type, created, dateModified) VALUES (?, ?, 'HL7', ?, ?)",
            )
            .bind(*demographic_no)
            .bind(lab_no)
            .bind(&now)
            .bind(&now)
            .execute(&mut **tx)
            .await
            .map_err(db("insert patientLabRouting"))?;
        }
        let routed = routes(tx, lab.lab_type, &doc_nums(lab), matched.mrp())
            .await
            .map_err(db("provider routing"))?;
        // Every route of the lab in one INSERT (`routes` gives at least one).
        if !routed.is_empty() {
            let sql = format!(
                "INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type) VALUES {}",
                vec!["(?, ?, ?, NULL, ?, 'HL7')"; routed.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for route in routed {
                q = q
                    .bind(route.provider_no)
                    .bind(lab_no)
                    .bind(route.status)
                    .bind(&now);
            }
            q.execute(&mut **tx)
                .await
                .map_err(db("insert providerLabRouting"))?;
        }
        warn_replaced(prov, Some(entry.index), Some(lab_no), &mut replaced);
        records.push((lab_no, entry, info_accession));
        labs.push(ImportedLab {
            part: entry.index,
            lab_no,
            lab_type: lab.lab_type,
            matched,
        });
    }

    // Each lab's record (type, match outcome and reason), in the same transaction.
    for chunk in records
        .iter()
        .zip(&labs)
        .collect::<Vec<_>>()
        .chunks(LAB_MESSAGE_CHUNK)
    {
        let sql = format!(
            "INSERT INTO oscarflow_lab_message (lab_no, md5sum, part, pipeline, lab_type, typed_by, control_id, accession, match_outcome, match_candidates, demographic_no, imported_at) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for ((lab_no, entry, accession), lab) in chunk {
            q = q
                .bind(*lab_no)
                .bind(&file.md5)
                .bind(i64::from(entry.index))
                .bind(&*prov.pipeline)
                .bind(lab.lab_type.as_str())
                .bind(entry.lab.typed_by.code())
                .bind(cut(&entry.lab.control_id, 100))
                .bind(cut(accession, 255))
                .bind(lab.matched.label())
                .bind(lab.matched.candidates().map(|n| n as i64))
                .bind(lab.matched.demographic_no())
                .bind(&now);
        }
        q.execute(&mut **tx)
            .await
            .map_err(db("insert oscarflow_lab_message"))?;
    }

    // The journal's rows for these labs, in the same transaction (one INSERT per file).
    let entries: Vec<crate::journal::Entry> = records
        .iter()
        .zip(&labs)
        .map(|((lab_no, entry, accession), lab)| crate::journal::Entry {
            kind: Some(crate::journal::Kind::Lab),
            part: Some(entry.index),
            message_type: Some(entry.lab.message_type.clone()).filter(|s| !s.is_empty()),
            control_id: Some(entry.lab.control_id.clone()).filter(|s| !s.is_empty()),
            accession: Some(accession.clone()).filter(|s| !s.is_empty()),
            lab_type: Some(lab.lab_type.as_str()),
            outcome: crate::journal::outcome::IMPORTED,
            match_outcome: Some(lab.matched.label()),
            match_candidates: lab.matched.candidates(),
            lab_no: Some(*lab_no),
            demographic_no: lab.matched.demographic_no(),
            ..Default::default()
        })
        .collect();
    crate::journal::record(tx, prov, &entries)
        .await
        .map_err(db("insert oscarflow_journal"))?;

    let lab_nos = labs
        .iter()
        .map(|l| l.lab_no.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let origin = serde_json::to_string(&prov.origin).unwrap_or_else(|_| "{}".into());
    let r = sqlx::query(
        "INSERT INTO oscarflow_lab_import (md5sum, file_upload_check_id, pipeline, source, origin, content_sha256, messages, lab_nos, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&file.md5)
    .bind(file_id)
    .bind(&*prov.pipeline)
    .bind(&*prov.source)
    .bind(origin)
    .bind(prov.sha256_hex())
    .bind(labs.len() as i64)
    .bind(lab_nos)
    .bind(&now)
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => Ok(Written::Imported(labs)),
        // Another writer committed the same file first.
        Err(e) if crate::store::is_unique_violation(&e) => Ok(Written::Raced),
        Err(e) => Err(ProcessError::from_sqlx("insert oscarflow_lab_import", &e)),
    }
}
