//! Inbound faxes filed as OSCAR's own `FaxImporter` files them (IMPORT-SPEC §3.2–§3.3): the
//! PDF in `DOCUMENT_DIR` under OSCAR's `yyyyMMddHHmmss<name>` naming, then in **one
//! transaction** `document`, `ctl_document('demographic', -1, doc, 'A')`,
//! `queue_document_link(queue, doc, 'A')`, `providerLabRouting('0', doc, 'N', NULL, now,
//! 'DOC')` — which makes the fax an unclaimed inbox item (§3.4) — a `faxes` log row, and our
//! own `oscarflow_fax_inbound` row keyed by the RingCentral message id.
//!
//! **Order of effects.** The file is written (to a temporary name, synced, renamed) before
//! the rows are committed, so a committed document always has its file; a failure before the
//! commit removes the file again. A crash between the two leaves an unreferenced file in the
//! document directory (harmless to OSCAR) and no rows; the fax is delivered again and filed.
//!
//! **Idempotent.** The message id is checked first and is the primary key of
//! `oscarflow_fax_inbound`: a re-delivered fax writes nothing, also when two writers race.
//!
//! Deliberate differences from `FaxImporter`: the saved name is `fax-<message id>.pdf`
//! (OSCAR's own code appends `.pdf` to every name, giving `x.pdf.pdf`); `faxes.jobId` stays
//! NULL because RingCentral ids do not fit OSCAR's 32-bit column (the id is in our table).

use std::path::{Path, PathBuf};

use super::{generated_id, Flavour};
use crate::component::ProcessError;
use crate::document::InboundDocument;
use crate::envelope::Provenance;
use crate::store::{is_unique_violation, now_sql, Store};

/// How faxes are filed.
#[derive(Debug, Clone)]
pub struct FaxImportOptions {
    /// OSCAR's `DOCUMENT_DIR`.
    pub document_dir: PathBuf,
    /// `queue_document_link.queue_id` (OSCAR's `fax_config.queue`; 1 = `default`).
    pub queue_id: i64,
    /// The receiving fax line, digits (`faxes.faxline`).
    pub fax_line: Option<String>,
    pub flavour: Flavour,
}

/// What filing one fax did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaxOutcome {
    Imported {
        document_no: i64,
    },
    /// This message id was filed (or dead-lettered) before: nothing written.
    Duplicate,
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> ProcessError {
    move |e| ProcessError::from_sqlx(context, &e)
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A fax line as OSCAR's `faxes.faxline` holds it: 1 to 11 digits.
pub fn is_fax_line(s: &str) -> bool {
    !s.is_empty() && s.len() <= 11 && s.bytes().all(|b| b.is_ascii_digit())
}

/// OSCAR's document type for received faxes: Open-O fixed the spelling, OSCAR 19 did not.
pub fn received_fax_doctype(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::OpenO => "Received Fax",
        Flavour::Oscar19 => "Recieved Fax",
    }
}

/// `EDoc.preliminaryProcessing`: `yyyyMMddHHmmss` (local time) + the name.
pub fn oscar_file_name(now: chrono::DateTime<chrono::Local>, name: &str) -> String {
    cut(&format!("{}{}", now.format("%Y%m%d%H%M%S"), name), 255)
}

/// A received time as OSCAR's local `datetime` and `date`.
fn local(t: time::OffsetDateTime) -> chrono::DateTime<chrono::Local> {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t.unix_timestamp(), 0)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
}

/// Whether this message id was taken before (filed or dead-lettered).
pub async fn already_taken(store: &Store, message_id: i64) -> Result<bool, ProcessError> {
    Ok(taken_as(store, message_id).await?.is_some())
}

/// How this message id was taken before: `imported` or `dead_lettered`, or `None`.
pub async fn taken_as(store: &Store, message_id: i64) -> Result<Option<String>, ProcessError> {
    sqlx::query_scalar("SELECT outcome FROM oscarflow_fax_inbound WHERE message_id = ?")
        .bind(message_id)
        .fetch_optional(&store.pool)
        .await
        .map_err(db("fax duplicate check"))
}

/// A re-drive of a dead letter (`oscarflow dlq retry`), as opposed to a delivery from
/// RingCentral.
fn is_redrive(prov: &Provenance) -> bool {
    &*prov.source_kind == crate::sources::list::DEAD_LETTER_KIND
}

/// Records a fax that was dead-lettered (so it is not fetched again; the dead letter holds
/// its bytes). A second record of the same id is ignored.
pub async fn record_dead_lettered(
    store: &Store,
    message_id: i64,
    sha256: &str,
    pipeline: &str,
) -> Result<(), ProcessError> {
    let r = sqlx::query("INSERT INTO oscarflow_fax_inbound (message_id, document_no, content_sha256, pipeline, outcome, taken_at) VALUES (?, NULL, ?, ?, 'dead_lettered', ?)")
        .bind(message_id)
        .bind(sha256)
        .bind(pipeline)
        .bind(now_sql())
        .execute(&store.pool)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(ProcessError::from_sqlx("record dead-lettered fax", &e)),
    }
}

/// Copies `from` to `dir/name` through a temporary name, synced before the rename. On
/// failure (a full disk) the temporary file is removed: nothing partial stays in the
/// document directory, taking the space it lacks.
async fn place_file(from: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.oscarflow-tmp"));
    let placed = async {
        tokio::fs::copy(from, &tmp).await?;
        let f = tokio::fs::OpenOptions::new().write(true).open(&tmp).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &dest).await
    }
    .await;
    if let Err(e) = placed {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(dest)
}

/// Files one fax. See the module docs.
pub async fn import_fax(
    store: &Store,
    doc: &InboundDocument,
    prov: &Provenance,
    opts: &FaxImportOptions,
) -> Result<FaxOutcome, ProcessError> {
    // A fax kept as a dead letter may be filed by its re-drive (`oscarflow dlq retry`);
    // anything else taken before is a duplicate.
    let redrive = is_redrive(prov);
    match taken_as(store, doc.external_id).await?.as_deref() {
        None => {}
        Some("dead_lettered") if redrive => {}
        Some(_) => return Ok(FaxOutcome::Duplicate),
    }
    let now_local = chrono::Local::now();
    let file_name = oscar_file_name(now_local, &doc.name);
    let placed = place_file(doc.file.path(), &opts.document_dir, &file_name)
        .await
        .map_err(|e| {
            // The directory missing or full is an operational problem: retried, then kept
            // as a dead letter with its bytes, never dropped.
            ProcessError::transient(format!(
                "writing the fax into the document directory: {}",
                e.kind()
            ))
        })?;
    let result = insert_rows(store, doc, prov, opts, &file_name, now_local).await;
    match &result {
        Ok(FaxOutcome::Imported { .. }) => {}
        // Nothing committed: the file must not stay behind.
        Ok(FaxOutcome::Duplicate) | Err(_) => {
            let _ = tokio::fs::remove_file(&placed).await;
        }
    }
    result
}

async fn insert_rows(
    store: &Store,
    doc: &InboundDocument,
    prov: &Provenance,
    opts: &FaxImportOptions,
    file_name: &str,
    now_local: chrono::DateTime<chrono::Local>,
) -> Result<FaxOutcome, ProcessError> {
    crate::audit::ensure_chain(store, &crate::audit::pipeline_chain(&prov.pipeline))
        .await
        .map_err(db("create the audit chain"))?;
    let mut tx = store.pool.begin().await.map_err(db("begin transaction"))?;
    let now = now_local.format("%Y-%m-%d %H:%M:%S").to_string();
    let received = local(doc.received_at);
    let doctype = received_fax_doctype(opts.flavour);
    let r = sqlx::query(
        "INSERT INTO document (doctype, docClass, docSubClass, docdesc, docxml, docfilename, doccreator, responsible, source, sourceFacility, program_id, updatedatetime, status, contenttype, contentdatetime, public1, observationdate, reviewer, reviewdatetime, number_of_pages, appointment_no, restrictToProgram, abnormal, receivedDate) \
         VALUES (?, '', '', ?, '', ?, '-1', '-1', '', '', -1, ?, 'A', ?, ?, 0, ?, NULL, NULL, ?, -1, 0, 0, NULL)",
    )
    .bind(doctype)
    .bind(doctype)
    .bind(file_name)
    .bind(&now)
    .bind(cut(&doc.content_type, 255))
    .bind(&now)
    .bind(received.format("%Y-%m-%d").to_string())
    .bind(i64::from(doc.pages))
    .execute(&mut *tx)
    .await
    .map_err(db("insert document"))?;
    let document_no = generated_id(&mut tx, r.last_insert_id(), "document").await?;
    sqlx::query("INSERT INTO ctl_document (module, module_id, document_no, status) VALUES ('demographic', -1, ?, 'A')")
        .bind(document_no)
        .execute(&mut *tx)
        .await
        .map_err(db("insert ctl_document"))?;
    sqlx::query(
        "INSERT INTO queue_document_link (queue_id, document_id, status) VALUES (?, ?, 'A')",
    )
    .bind(opts.queue_id)
    .bind(document_no)
    .execute(&mut *tx)
    .await
    .map_err(db("insert queue_document_link"))?;
    sqlx::query("INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type) VALUES ('0', ?, 'N', NULL, ?, 'DOC')")
        .bind(document_no)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(db("insert providerLabRouting"))?;
    let r = sqlx::query("INSERT INTO faxes (filename, faxline, destination, status, statusString, document, numPages, stamp, user, jobId, oscarUser, demographicNo) VALUES (?, ?, ?, 'RECEIVED', 'received by oscarflow', NULL, ?, ?, '-1', NULL, NULL, NULL)")
        .bind(file_name)
        .bind(opts.fax_line.as_deref().map(|l| cut(l, 11)))
        .bind(doc.sender.as_deref().map(|s| cut(s, 11)))
        .bind(i64::from(doc.pages))
        .bind(received.format("%Y-%m-%d %H:%M:%S").to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("insert faxes"))?;
    let fax_id = generated_id(&mut tx, r.last_insert_id(), "faxes").await?;
    if is_redrive(prov) {
        sqlx::query(
            "DELETE FROM oscarflow_fax_inbound WHERE message_id = ? AND outcome = 'dead_lettered'",
        )
        .bind(doc.external_id)
        .execute(&mut *tx)
        .await
        .map_err(db("replace the dead-lettered record"))?;
    }
    let r = sqlx::query("INSERT INTO oscarflow_fax_inbound (message_id, document_no, content_sha256, pipeline, outcome, taken_at) VALUES (?, ?, ?, ?, 'imported', ?)")
        .bind(doc.external_id)
        .bind(document_no)
        .bind(prov.sha256_hex())
        .bind(&*prov.pipeline)
        .bind(&now)
        .execute(&mut *tx)
        .await;
    if let Err(e) = r {
        let unique = is_unique_violation(&e);
        let _ = tx.rollback().await;
        if unique {
            return Ok(FaxOutcome::Duplicate); // another writer filed it first
        }
        return Err(ProcessError::from_sqlx("insert oscarflow_fax_inbound", &e));
    }
    // The journal's row, committed with the document (the RingCentral message id is the
    // fax's control id there).
    let entry = crate::journal::Entry {
        kind: Some(crate::journal::Kind::FaxIn),
        message_type: Some(cut(&doc.content_type, 20)),
        control_id: Some(doc.external_id.to_string()),
        outcome: crate::journal::outcome::IMPORTED,
        document_no: Some(document_no),
        detail: Some(format!(
            "{} page(s), unclaimed in OSCAR's incoming documents",
            doc.pages
        )),
        ..Default::default()
    };
    let journal_id = crate::journal::record_files_ids(
        &mut tx,
        (store.backend, store.insert_returning),
        &[(prov, &[entry])],
    )
    .await
    .map_err(db("insert oscarflow_journal"))?;
    let journal_id = journal_id.first().copied();
    // OSCAR's `log` row of a new document and the audit row naming every row written.
    let data = format!(
        "oscarflow pipeline={} journal={}",
        prov.pipeline,
        journal_id.unwrap_or_default()
    );
    let log_ids = super::log::write(
        &mut tx,
        store.backend,
        &[super::log::document_added(document_no, data, &now)],
    )
    .await
    .map_err(db("insert log"))?;
    let mut written = crate::audit::Written::default();
    written.add("document", document_no);
    written.add("ctl_document", format!("demographic/-1/{document_no}"));
    written.add(
        "queue_document_link",
        format!("{}/{document_no}", opts.queue_id),
    );
    written.add("providerLabRouting", format!("{document_no}/0"));
    written.add("faxes", fax_id);
    for k in log_ids {
        written.add("log", k);
    }
    written.add("DOCUMENT_DIR", file_name);
    let record = crate::audit::Record {
        action: crate::audit::action::WRITE,
        actor: crate::audit::pipeline_actor(&prov.pipeline),
        about: crate::audit::About {
            pipeline: Some(prov.pipeline.to_string()),
            journal_id,
            content_sha256: Some(prov.sha256_hex()),
            part: Some(0),
            document_no: Some(document_no),
            fax_id: Some(fax_id),
            ..Default::default()
        },
        written,
        ..Default::default()
    };
    crate::audit::append(
        &mut tx,
        &crate::audit::pipeline_chain(&prov.pipeline),
        &[record],
    )
    .await
    .map_err(db("insert oscarflow_audit"))?;
    tx.commit().await.map_err(db("commit"))?;
    Ok(FaxOutcome::Imported { document_no })
}

/// Records, in `tx` (the transaction that sets it), that `actor` set OSCAR's `faxes.status`
/// of fax `fax_id` to `status`: OSCAR's `log` row (`update`, `fax`) and an audit row
/// (`action = status`) in the [`crate::audit::STATUS_CHAIN`] chain. Call
/// [`crate::audit::ensure_chain`] for that chain before the transaction begins.
pub async fn audit_fax_status(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    store: &Store,
    actor: &str,
    fax_id: i64,
    status: &str,
) -> Result<(), sqlx::Error> {
    let now = now_sql();
    let log_ids = super::log::write(
        tx,
        store.backend,
        &[super::log::fax_status(
            fax_id,
            None,
            format!("oscarflow {actor}: status {status}"),
            &now,
        )],
    )
    .await?;
    let mut written = crate::audit::Written::default();
    written.add("faxes", fax_id);
    for k in log_ids {
        written.add("log", k);
    }
    let record = crate::audit::Record {
        action: crate::audit::action::STATUS,
        actor: format!("oscarflow {actor}"),
        about: crate::audit::About {
            fax_id: Some(fax_id),
            ..Default::default()
        },
        written,
        why: Some(format!("faxes.status = {status}")),
    };
    crate::audit::append(tx, crate::audit::STATUS_CHAIN, &[record]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_saved_name_carries_oscars_timestamp_prefix() {
        let t = chrono::Local
            .with_ymd_and_hms(2024, 5, 20, 14, 25, 1)
            .unwrap();
        assert_eq!(oscar_file_name(t, "fax-42.pdf"), "20240520142501fax-42.pdf");
        assert_eq!(oscar_file_name(t, &"x".repeat(400)).chars().count(), 255);
    }

    #[test]
    fn the_doctype_follows_the_flavours_spelling() {
        assert_eq!(received_fax_doctype(Flavour::OpenO), "Received Fax");
        assert_eq!(received_fax_doctype(Flavour::Oscar19), "Recieved Fax");
    }
}
