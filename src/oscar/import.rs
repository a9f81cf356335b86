//! [`import_file`]: one lab file = one transaction, written as OSCAR's own uploader writes it;
//! [`import_group`]: several files in one transaction (group commit), each written the same
//! way, in order, with each table's rows for all of them in one multi-row statement
//! ([`super::rows`]). One path writes both: a file alone is a group of one.
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

use std::collections::{HashMap, HashSet};

use base64::Engine;
use sqlx::{Any, Transaction};

use super::charset::NarrowColumns;
use super::info::{doc_nums, ColumnWidths, Hl7TextInfo};
use super::matching::{match_patient, MatchOutcome, MatchSettings};
use super::measurements::{
    flowsheet_types, identifiers, move_to_deleted, previous_version, versions_of, Measurements,
};
use super::routing::{routes_for, RouteQuery};
use super::Flavour;
use crate::component::ProcessError;
use crate::envelope::Provenance;
use crate::lab_file::{LabEntry, LabFile};
use crate::store::rows::{insert_all, insert_ids, Limit, Row, Q};
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

/// Which of `md5s` were imported before: ours (the unique key) or OSCAR's (an upload
/// through its own screens), in one query per [`MD5_CHUNK`] files.
async fn seen_before(
    tx: &mut Transaction<'static, Any>,
    md5s: &[&str],
) -> Result<HashSet<String>, ProcessError> {
    let mut seen = HashSet::new();
    for chunk in md5s.chunks(MD5_CHUNK) {
        let list = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT md5sum FROM oscarflow_lab_import WHERE md5sum IN ({list}) UNION SELECT md5sum FROM fileUploadCheck WHERE md5sum IN ({list})"
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for _ in 0..2 {
            for m in chunk {
                q = q.bind(*m);
            }
        }
        for m in q
            .fetch_all(&mut **tx)
            .await
            .map_err(db("duplicate check"))?
        {
            seen.insert(m.to_ascii_lowercase());
        }
    }
    Ok(seen)
}

/// Files per duplicate-check query.
const MD5_CHUNK: usize = 200;

/// Imports `file` in one transaction. See the module docs.
pub async fn import_file(
    store: &Store,
    file: &LabFile,
    prov: &Provenance,
    opts: &ImportOptions,
) -> Result<ImportOutcome, ProcessError> {
    match import_files(store, &[(file, prov)], opts).await {
        Ok(mut outcomes) => Ok(outcomes.pop().unwrap_or(ImportOutcome::Duplicate)),
        // Another writer committed the same file first.
        Err(Failure::Raced) => Ok(ImportOutcome::Duplicate),
        Err(Failure::File(_, e) | Failure::Group(e)) => Err(e),
    }
}

/// Imports several files in **one transaction** (a group commit), in the given order, with
/// the same rows as [`import_file`] would write for each in turn: a file seen before —
/// committed earlier, or earlier in this very group — writes nothing, and versions of one
/// accession retire each other's measurements in order. Each table's rows for the whole
/// group go in one multi-row statement (or a few, under the parameter and packet limits).
///
/// All or nothing: on an error the transaction is rolled back. The error names the file
/// it belongs to when that is known (a message too large, values over OSCAR's columns with
/// `on_overflow = "reject"`); an error of a statement shared by several files names none
/// (`None`), and the caller finds the culprit by splitting the group. Another writer
/// committing one of these files meanwhile is a transient error of the group (a retry finds
/// it a duplicate).
pub async fn import_group(
    store: &Store,
    files: &[(&LabFile, &Provenance)],
    opts: &ImportOptions,
) -> Result<Vec<ImportOutcome>, (Option<usize>, ProcessError)> {
    import_files(store, files, opts).await.map_err(|f| match f {
        Failure::File(i, e) => (Some(i), e),
        Failure::Group(e) => (None, e),
        Failure::Raced => (
            None,
            ProcessError::transient(
                "another writer committed one of the group's files during the group commit",
            ),
        ),
    })
}

/// Why [`import_files`] wrote nothing.
enum Failure {
    /// An error of this file alone.
    File(usize, ProcessError),
    /// An error of the group's statements.
    Group(ProcessError),
    /// Another writer committed one of the files first.
    Raced,
}

impl From<ProcessError> for Failure {
    fn from(e: ProcessError) -> Self {
        Failure::Group(e)
    }
}

async fn import_files(
    store: &Store,
    files: &[(&LabFile, &Provenance)],
    opts: &ImportOptions,
) -> Result<Vec<ImportOutcome>, Failure> {
    for (i, (file, _)) in files.iter().enumerate() {
        check_statement_size(file, opts.max_statement_bytes).map_err(|e| Failure::File(i, e))?;
    }
    // The heads of the audit chains these files append to (see `audit::ensure_chain`).
    let mut pipelines: Vec<&str> = files.iter().map(|(_, p)| &*p.pipeline).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    for p in pipelines {
        crate::audit::ensure_chain(store, &crate::audit::pipeline_chain(p))
            .await
            .map_err(db("create the audit chain"))?;
    }
    let mut tx = store.pool.begin().await.map_err(db("begin transaction"))?;
    match write_files(&mut tx, store, files, opts).await {
        Ok(Some(outcomes)) => {
            tx.commit().await.map_err(db("commit"))?;
            Ok(outcomes)
        }
        // Every file seen before: nothing written.
        Ok(None) => {
            let _ = tx.rollback().await;
            Ok(vec![ImportOutcome::Duplicate; files.len()])
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// One message of a file being written.
struct Msg<'a> {
    /// Index of its file in the group.
    file: usize,
    /// Index of its file among those written (its `fileUploadCheck` row).
    upload: usize,
    entry: &'a LabEntry,
    info: Hl7TextInfo,
    accession: String,
    lab_no: i64,
    matched: Option<MatchOutcome>,
    /// Columns where characters were replaced (names only), logged once per message.
    replaced: Vec<String>,
    /// Its `measurements` ids, and those of its previous version it moved to
    /// `measurementsDeleted` (for the audit trail).
    measured: Vec<i64>,
    retired: Vec<i64>,
}

/// The rows of `files` written into `tx` (see [`import_group`]); `None` when every file
/// was seen before and nothing was written.
async fn write_files(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    files: &[(&LabFile, &Provenance)],
    opts: &ImportOptions,
) -> Result<Option<Vec<ImportOutcome>>, Failure> {
    let md5s: Vec<&str> = files.iter().map(|(f, _)| f.md5.as_str()).collect();
    let mut seen = seen_before(tx, &md5s).await?;
    // The files to write: not seen before, and the first copy of any repeated in the group.
    let fresh: Vec<usize> = (0..files.len())
        .filter(|&i| seen.insert(files[i].0.md5.to_ascii_lowercase()))
        .collect();
    if fresh.is_empty() {
        return Ok(None);
    }
    let now = now_sql();
    let limit = Limit::for_backend(store.backend);

    // What each message's rows are, before any is written: a file whose values do not fit
    // and are to be refused fails here, alone.
    let mut msgs: Vec<Msg> = Vec::new();
    for (upload, &i) in fresh.iter().enumerate() {
        for entry in &files[i].0.messages {
            let mut replaced = Vec::new();
            let mut info = Hl7TextInfo::from_lab_with(&entry.lab, opts.flavour, &opts.widths);
            info.fit_charset(&opts.narrow, &mut replaced);
            if !info.truncated.is_empty() && opts.on_overflow == Overflow::Reject {
                return Err(Failure::File(
                    i,
                    ProcessError::data(
                        crate::dead_letter::ReasonCode::ImportRejected,
                        format!(
                            "message {}: values longer than OSCAR's hl7TextInfo columns: {}",
                            entry.index + 1,
                            info.truncated.join(", ")
                        ),
                    ),
                ));
            }
            msgs.push(Msg {
                file: i,
                upload,
                entry,
                accession: info.accession_num.clone().unwrap_or_default(),
                info,
                lab_no: 0,
                matched: entry.matched.clone(),
                replaced,
                measured: Vec::new(),
                retired: Vec::new(),
            });
        }
    }

    // fileUploadCheck, one row per file.
    let uploads: Vec<UploadRow> = fresh
        .iter()
        .map(|&i| {
            let (file, prov) = files[i];
            let mut replaced = Vec::new();
            let filename = opts
                .narrow
                .fit(
                    "fileUploadCheck",
                    "filename",
                    &upload_filename(&file.name),
                    &mut replaced,
                )
                .into_owned();
            warn_replaced(prov, None, None, &mut replaced);
            UploadRow {
                provider_no: &opts.upload_provider_no,
                filename,
                md5: &file.md5,
                now: &now,
            }
        })
        .collect();
    let upload_ids = insert_ids(
        tx,
        store.insert_returning,
        (UPLOAD_COLUMNS, "id"),
        &uploads,
        limit,
    )
    .await
    .map_err(db("insert fileUploadCheck"))?;

    // hl7TextMessage: all the group's messages, their lab numbers in order.
    let mut service_replaced = Vec::new();
    let service_name = opts
        .narrow
        .fit(
            "hl7TextMessage",
            "serviceName",
            &cut(&opts.service_name, 100),
            &mut service_replaced,
        )
        .into_owned();
    let texts: Vec<MessageRow> = msgs
        .iter()
        .map(|m| MessageRow {
            upload_id: upload_ids[m.upload],
            message: base64::engine::general_purpose::STANDARD
                .encode(m.entry.stored_text.as_bytes()),
            lab_type: m.entry.lab.lab_type.as_str(),
            service_name: &service_name,
            now: &now,
        })
        .collect();
    let message_limit = limit.with_bytes(
        opts.max_statement_bytes
            .map(|max| max.saturating_sub(STATEMENT_OVERHEAD))
            .unwrap_or(MESSAGE_BYTES_PER_STATEMENT)
            .min(MESSAGE_BYTES_PER_STATEMENT) as usize,
    );
    let lab_nos = insert_ids(
        tx,
        store.insert_returning,
        (MESSAGE_COLUMNS, "lab_id"),
        &texts,
        message_limit,
    )
    .await
    .map_err(db("insert hl7TextMessage"))?;
    drop(texts);
    for (m, lab_no) in msgs.iter_mut().zip(&lab_nos) {
        m.lab_no = *lab_no;
        m.replaced.append(&mut service_replaced.clone());
        if !m.info.truncated.is_empty() {
            let prov = files[m.file].1;
            tracing::warn!(pipeline = %prov.pipeline, sha = %prov.short_hash(), part = m.entry.index, lab_no = m.lab_no, columns = ?m.info.truncated, "Values longer than OSCAR's hl7TextInfo columns were truncated.");
        }
    }

    // hl7TextInfo.
    let infos: Vec<InfoRow> = msgs
        .iter()
        .map(|m| InfoRow {
            lab_no: m.lab_no,
            info: &m.info,
        })
        .collect();
    insert_all(tx, INFO_COLUMNS, &infos, limit)
        .await
        .map_err(db("insert hl7TextInfo"))?;
    drop(infos);

    // A pipeline without a match stage still never guesses: OSCAR's default rules.
    for m in &mut msgs {
        if m.matched.is_none() {
            m.matched = Some(
                match_patient(tx, &m.entry.lab.patient, &MatchSettings::default())
                    .await
                    .map_err(db("patient match"))?,
            );
        }
    }

    write_measurements_of(tx, store, &mut msgs, &now, &opts.narrow).await?;

    // patientLabRouting for the matched labs.
    let patients: Vec<PatientRoute> = msgs
        .iter()
        .filter_map(|m| {
            Some(PatientRoute {
                demographic_no: m.matched.as_ref()?.demographic_no()?,
                lab_no: m.lab_no,
                now: &now,
            })
        })
        .collect();
    insert_all(tx, PATIENT_ROUTE_COLUMNS, &patients, limit)
        .await
        .map_err(db("insert patientLabRouting"))?;

    // providerLabRouting: every route of every lab (`routes_for` gives each at least one).
    let doc_nums: Vec<Vec<String>> = msgs.iter().map(|m| doc_nums(&m.entry.lab)).collect();
    let queries: Vec<RouteQuery> = msgs
        .iter()
        .zip(&doc_nums)
        .map(|(m, nums)| RouteQuery {
            lab_type: m.entry.lab.lab_type,
            doc_nums: nums,
            mrp: m.matched.as_ref().and_then(|o| o.mrp()),
        })
        .collect();
    let routed = routes_for(tx, &queries)
        .await
        .map_err(db("provider routing"))?;
    let providers: Vec<ProviderRoute> = msgs
        .iter()
        .zip(routed)
        .flat_map(|(m, routes)| {
            routes.into_iter().map(|r| ProviderRoute {
                provider_no: r.provider_no,
                lab_no: m.lab_no,
                status: r.status,
                now: &now,
            })
        })
        .collect();
    insert_all(tx, PROVIDER_ROUTE_COLUMNS, &providers, limit)
        .await
        .map_err(db("insert providerLabRouting"))?;

    for m in &mut msgs {
        warn_replaced(
            files[m.file].1,
            Some(m.entry.index),
            Some(m.lab_no),
            &mut m.replaced,
        );
    }
    let labs: Vec<ImportedLab> = msgs
        .iter()
        .map(|m| ImportedLab {
            part: m.entry.index,
            lab_no: m.lab_no,
            lab_type: m.entry.lab.lab_type,
            matched: m.matched.clone().unwrap_or(MatchOutcome::NotFound),
        })
        .collect();

    // Each lab's record (type, match outcome and reason), in the same transaction.
    let records: Vec<LabRecord> = msgs
        .iter()
        .zip(&labs)
        .map(|(m, lab)| LabRecord {
            msg: m,
            lab,
            md5: &files[m.file].0.md5,
            pipeline: &files[m.file].1.pipeline,
            now: &now,
        })
        .collect();
    insert_all(tx, LAB_MESSAGE_COLUMNS, &records, limit)
        .await
        .map_err(db("insert oscarflow_lab_message"))?;
    drop(records);

    // The journal's rows for these labs, in the same transaction.
    let entries: Vec<crate::journal::Entry> = msgs
        .iter()
        .zip(&labs)
        .map(|(m, lab)| crate::journal::Entry {
            kind: Some(crate::journal::Kind::Lab),
            part: Some(m.entry.index),
            message_type: Some(m.entry.lab.message_type.clone()).filter(|s| !s.is_empty()),
            control_id: Some(m.entry.lab.control_id.clone()).filter(|s| !s.is_empty()),
            accession: Some(m.accession.clone()).filter(|s| !s.is_empty()),
            lab_type: Some(lab.lab_type.as_str()),
            outcome: crate::journal::outcome::IMPORTED,
            match_outcome: Some(lab.matched.label()),
            match_candidates: lab.matched.candidates(),
            lab_no: Some(lab.lab_no),
            demographic_no: lab.matched.demographic_no(),
            ..Default::default()
        })
        .collect();
    let mut journal: Vec<(&Provenance, &[crate::journal::Entry])> = Vec::new();
    let mut outcomes: Vec<ImportOutcome> = vec![ImportOutcome::Duplicate; files.len()];
    let mut imports: Vec<ImportRow> = Vec::new();
    let mut start = 0;
    for (k, &i) in fresh.iter().enumerate() {
        let n = files[i].0.messages.len();
        let file_labs = labs[start..start + n].to_vec();
        journal.push((files[i].1, &entries[start..start + n]));
        imports.push(ImportRow {
            file: files[i].0,
            prov: files[i].1,
            upload_id: upload_ids[k],
            lab_nos: file_labs
                .iter()
                .map(|l| l.lab_no.to_string())
                .collect::<Vec<_>>()
                .join(","),
            now: &now,
        });
        outcomes[i] = ImportOutcome::Imported { labs: file_labs };
        start += n;
    }
    let journal_ids =
        crate::journal::record_files_ids(tx, (store.backend, store.insert_returning), &journal)
            .await
            .map_err(db("insert oscarflow_journal"))?;

    match insert_all(tx, IMPORT_COLUMNS, &imports, limit).await {
        Ok(_) => {}
        // Another writer committed one of these files first.
        Err(e) if crate::store::is_unique_violation(&e) => return Err(Failure::Raced),
        Err(e) => return Err(ProcessError::from_sqlx("insert oscarflow_lab_import", &e).into()),
    }

    // OSCAR's `log` rows and the audit trail, last: the audit chain's head is locked only
    // for the commit.
    let audit = AuditInput {
        files,
        fresh: &fresh,
        upload_ids: &upload_ids,
        journal_ids: &journal_ids,
        patients: &patients,
        providers: &providers,
        now: &now,
    };
    audit.write(tx, store, opts, &msgs).await?;
    Ok(Some(outcomes))
}

/// What the audit rows of a group commit name.
struct AuditInput<'a> {
    files: &'a [(&'a LabFile, &'a Provenance)],
    fresh: &'a [usize],
    upload_ids: &'a [i64],
    journal_ids: &'a [i64],
    patients: &'a [PatientRoute<'a>],
    providers: &'a [ProviderRoute<'a>],
    now: &'a str,
}

impl AuditInput<'_> {
    /// OSCAR's `log` rows for the group (one per file as OSCAR's upload writes it, one per
    /// lab that OSCAR's screens show) and one audit row per lab naming every row it wrote,
    /// in the pipeline's chain ([`crate::audit`]).
    async fn write(
        &self,
        tx: &mut Transaction<'static, Any>,
        store: &Store,
        opts: &ImportOptions,
        msgs: &[Msg<'_>],
    ) -> Result<(), Failure> {
        use crate::audit::{action, pipeline_actor, pipeline_chain, About, Record, Written};
        use crate::oscar::log;
        let mut log_rows: Vec<log::LogRow> = self
            .upload_ids
            .iter()
            .map(|&id| log::lab_upload(&opts.upload_provider_no, id, self.now))
            .collect();
        for (m, journal_id) in msgs.iter().zip(self.journal_ids) {
            log_rows.push(log::lab_added(
                &opts.upload_provider_no,
                m.lab_no,
                m.matched.as_ref().and_then(|o| o.demographic_no()),
                format!(
                    "oscarflow pipeline={} journal={journal_id}",
                    self.files[m.file].1.pipeline
                ),
                self.now,
            ));
        }
        let log_ids = log::write(tx, store.backend, &log_rows)
            .await
            .map_err(db("insert log"))?;
        let (upload_logs, lab_logs) = log_ids.split_at(self.upload_ids.len());
        let mut routes: HashMap<i64, Vec<&str>> = HashMap::new();
        for r in self.providers {
            routes.entry(r.lab_no).or_default().push(&r.provider_no);
        }
        let charts: HashMap<i64, i64> = self
            .patients
            .iter()
            .map(|p| (p.lab_no, p.demographic_no))
            .collect();
        let mut chains: std::collections::BTreeMap<String, Vec<Record>> = Default::default();
        for (k, m) in msgs.iter().enumerate() {
            let prov = self.files[m.file].1;
            let mut w = Written::default();
            // The file's own rows go with its first message.
            if m.entry.index == self.files[m.file].0.messages[0].index {
                w.add("fileUploadCheck", self.upload_ids[m.upload]);
                w.add("log", &upload_logs[m.upload]);
            }
            w.add("hl7TextMessage", m.lab_no);
            w.add("hl7TextInfo", m.lab_no);
            w.ids("measurements", m.measured.iter().copied());
            w.ids("measurementsExt", m.measured.iter().copied());
            w.ids("measurementsDeleted", m.retired.iter().copied());
            let chart = charts.get(&m.lab_no).copied();
            if let Some(d) = chart {
                w.add("patientLabRouting", format!("{}/{d}", m.lab_no));
            }
            for p in routes.get(&m.lab_no).into_iter().flatten() {
                w.add("providerLabRouting", format!("{}/{p}", m.lab_no));
            }
            w.add("log", &lab_logs[k]);
            debug_assert!(self.fresh.contains(&m.file));
            chains
                .entry(pipeline_chain(&prov.pipeline))
                .or_default()
                .push(Record {
                    action: action::WRITE,
                    actor: pipeline_actor(&prov.pipeline),
                    about: About {
                        pipeline: Some(prov.pipeline.to_string()),
                        journal_id: self.journal_ids.get(k).copied(),
                        content_sha256: Some(prov.sha256_hex()),
                        part: Some(i64::from(m.entry.index)),
                        demographic_no: chart,
                        lab_no: Some(m.lab_no),
                        ..Default::default()
                    },
                    written: w,
                    ..Default::default()
                });
        }
        // Chains in name order: two groups never wait on each other's heads crosswise.
        for (chain, records) in chains {
            crate::audit::append(tx, &chain, &records)
                .await
                .map_err(db("insert oscarflow_audit"))?;
        }
        Ok(())
    }
}

/// The measurements of the matched labs, as OSCAR's `populateMeasurementsTable` writes
/// them one lab after another: the previous version's measurements move aside, then this
/// lab's are written. Labs are taken in runs with no accession twice, so that a version
/// finds the measurements of an earlier version of the same group already written; each
/// run's rows go in a few statements. A version never sees a later file of its group as
/// its previous version (that file is not written yet when one file at a time).
async fn write_measurements_of(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    msgs: &mut [Msg<'_>],
    now: &str,
    narrow: &NarrowColumns,
) -> Result<(), Failure> {
    let matched: Vec<usize> = (0..msgs.len())
        .filter(|&k| {
            msgs[k]
                .matched
                .as_ref()
                .is_some_and(|o| o.demographic_no().is_some())
        })
        .collect();
    if matched.is_empty() {
        return Ok(());
    }
    let identifiers: Vec<&str> = matched
        .iter()
        .flat_map(|&k| identifiers(&msgs[k].entry.lab))
        .collect();
    let mapped = flowsheet_types(tx, store.backend, &identifiers)
        .await
        .map_err(db("insert measurements"))?;
    let position: HashMap<i64, usize> = msgs
        .iter()
        .enumerate()
        .map(|(k, m)| (m.lab_no, k))
        .collect();
    let mut start = 0;
    while start < matched.len() {
        let mut accessions: HashSet<&str> = HashSet::new();
        let mut end = start;
        while end < matched.len() {
            let a = msgs[matched[end]].accession.as_str();
            if !a.is_empty() && !accessions.insert(a) {
                break;
            }
            end += 1;
        }
        let run = &matched[start..end];
        let wanted: Vec<&str> = accessions.into_iter().collect();
        let versions = versions_of(tx, &wanted)
            .await
            .map_err(db("retire previous measurements"))?;
        let previous: Vec<(usize, i64)> = run
            .iter()
            .filter_map(|&k| {
                let m = &msgs[k];
                let later = |lab_no: i64| position.get(&lab_no).is_some_and(|&p| p > k);
                let prev = previous_version(versions.get(m.accession.as_str())?, m.lab_no, later)?;
                Some((k, prev))
            })
            .collect();
        let labs: Vec<i64> = previous.iter().map(|&(_, lab)| lab).collect();
        let moved = move_to_deleted(tx, &labs, now)
            .await
            .map_err(db("retire previous measurements"))?;
        for (lab, id) in moved {
            if let Some(&(k, _)) = previous.iter().find(|&&(_, p)| p == lab) {
                msgs[k].retired.push(id);
            }
        }
        let mut rows = Measurements::default();
        for &k in run {
            let m = &mut msgs[k];
            let demographic_no = m
                .matched
                .as_ref()
                .and_then(|o| o.demographic_no())
                .unwrap_or_default();
            rows.add(
                &m.entry.lab,
                (m.lab_no, demographic_no),
                &mapped,
                now,
                (narrow, &mut m.replaced),
            );
        }
        let written = rows
            .write(tx, store)
            .await
            .map_err(db("insert measurements"))?;
        for (lab_no, id) in written {
            if let Some(&k) = position.get(&lab_no) {
                msgs[k].measured.push(id);
            }
        }
        start = end;
    }
    Ok(())
}

/// Bytes of Base64 messages per `hl7TextMessage` statement, whatever the server takes: a
/// group of large files goes in several statements rather than one huge one.
const MESSAGE_BYTES_PER_STATEMENT: u64 = 8 * 1024 * 1024;

const UPLOAD_COLUMNS: &str =
    "INSERT INTO fileUploadCheck (provider_no, filename, md5sum, date_time)";
struct UploadRow<'a> {
    provider_no: &'a str,
    filename: String,
    md5: &'a str,
    now: &'a str,
}
impl Row for UploadRow<'_> {
    const PARAMS: usize = 4;
    const VALUES: &'static str = "(?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.provider_no)
            .bind(self.filename.as_str())
            .bind(self.md5)
            .bind(self.now)
    }
}

const MESSAGE_COLUMNS: &str =
    "INSERT INTO hl7TextMessage (fileUploadCheck_id, message, type, serviceName, created)";
/// An `hl7TextMessage` row: the message as Base64 of its UTF-8 text, no line breaks.
struct MessageRow<'a> {
    upload_id: i64,
    message: String,
    lab_type: &'static str,
    service_name: &'a str,
    now: &'a str,
}
impl Row for MessageRow<'_> {
    const PARAMS: usize = 5;
    const VALUES: &'static str = "(?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.upload_id)
            .bind(self.message.as_str())
            .bind(self.lab_type)
            .bind(self.service_name)
            .bind(self.now)
    }
    fn bytes(&self) -> usize {
        self.message.len()
    }
}

const INFO_COLUMNS: &str = "INSERT INTO hl7TextInfo (lab_no, sex, health_no, result_status, final_result_count, obr_date, priority, requesting_client, discipline, last_name, first_name, report_status, accessionNum, filler_order_num, sending_facility, label)";
struct InfoRow<'a> {
    lab_no: i64,
    info: &'a Hl7TextInfo,
}
impl Row for InfoRow<'_> {
    const PARAMS: usize = 16;
    const VALUES: &'static str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        let i = self.info;
        q.bind(self.lab_no)
            .bind(i.sex.as_deref())
            .bind(i.health_no.as_deref())
            .bind(i.result_status.as_deref())
            .bind(i.final_result_count)
            .bind(i.obr_date.as_deref())
            .bind(i.priority.as_deref())
            .bind(i.requesting_client.as_deref())
            .bind(i.discipline.as_deref())
            .bind(i.last_name.as_deref())
            .bind(i.first_name.as_deref())
            .bind(i.report_status.as_str())
            .bind(i.accession_num.as_deref())
            .bind(i.filler_order_num.as_str())
            .bind(i.sending_facility.as_deref())
            .bind(i.label.as_deref())
    }
}

const PATIENT_ROUTE_COLUMNS: &str =
    "INSERT INTO patientLabRouting (demographic_no, lab_no, lab_type, created, dateModified)";
struct PatientRoute<'a> {
    demographic_no: i64,
    lab_no: i64,
    now: &'a str,
}
impl Row for PatientRoute<'_> {
    const PARAMS: usize = 4;
    const VALUES: &'static str = "(?, ?, 'HL7', ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.demographic_no)
            .bind(self.lab_no)
            .bind(self.now)
            .bind(self.now)
    }
}

const PROVIDER_ROUTE_COLUMNS: &str =
    "INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type)";
struct ProviderRoute<'a> {
    provider_no: String,
    lab_no: i64,
    status: String,
    now: &'a str,
}
impl Row for ProviderRoute<'_> {
    const PARAMS: usize = 4;
    const VALUES: &'static str = "(?, ?, ?, NULL, ?, 'HL7')";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.provider_no.as_str())
            .bind(self.lab_no)
            .bind(self.status.as_str())
            .bind(self.now)
    }
}

const LAB_MESSAGE_COLUMNS: &str = "INSERT INTO oscarflow_lab_message (lab_no, md5sum, part, pipeline, lab_type, typed_by, control_id, accession, match_outcome, match_candidates, demographic_no, imported_at)";
/// Each lab's record: type, match outcome and reason.
struct LabRecord<'a> {
    msg: &'a Msg<'a>,
    lab: &'a ImportedLab,
    md5: &'a str,
    pipeline: &'a str,
    now: &'a str,
}
impl Row for LabRecord<'_> {
    const PARAMS: usize = 12;
    const VALUES: &'static str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        let (m, lab) = (self.msg, self.lab);
        q.bind(lab.lab_no)
            .bind(self.md5)
            .bind(i64::from(m.entry.index))
            .bind(self.pipeline)
            .bind(lab.lab_type.as_str())
            .bind(m.entry.lab.typed_by.code())
            .bind(cut(&m.entry.lab.control_id, 100))
            .bind(cut(&m.accession, 255))
            .bind(lab.matched.label())
            .bind(lab.matched.candidates().map(|n| n as i64))
            .bind(lab.matched.demographic_no())
            .bind(self.now)
    }
}

const IMPORT_COLUMNS: &str = "INSERT INTO oscarflow_lab_import (md5sum, file_upload_check_id, pipeline, source, origin, content_sha256, messages, lab_nos, imported_at)";
/// A file's import record: its unique `md5sum` is what makes a concurrent writer of the
/// same file lose.
struct ImportRow<'a> {
    file: &'a LabFile,
    prov: &'a Provenance,
    upload_id: i64,
    lab_nos: String,
    now: &'a str,
}
impl Row for ImportRow<'_> {
    const PARAMS: usize = 9;
    const VALUES: &'static str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        let origin = serde_json::to_string(&self.prov.origin).unwrap_or_else(|_| "{}".into());
        q.bind(self.file.md5.as_str())
            .bind(self.upload_id)
            .bind(&*self.prov.pipeline)
            .bind(&*self.prov.source)
            .bind(origin)
            .bind(self.prov.sha256_hex())
            .bind(self.file.messages.len() as i64)
            .bind(self.lab_nos.as_str())
            .bind(self.now)
    }
}
