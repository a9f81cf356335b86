//! The message journal (`oscarflow_journal`): what happened to every message and input, by
//! identifiers only, kept `journal_retention` (400 days by default).
//!
//! **One row per event of a message**: imported into OSCAR (with the rows it became and the
//! patient match with its reason), found to be a duplicate, dead-lettered (with the reason
//! and the dead letter's id), or acted on by an outbound sink (a fax or text sent, its
//! status). The row that records a commit is written **in the same transaction** as the
//! commit — the OSCAR rows of an import ([`crate::oscar::import`]), the dead letter
//! ([`crate::dead_letter`]), the document of a received fax ([`crate::oscar::fax`]) — so the
//! journal never says a lab arrived that OSCAR does not have, nor misses one it has,
//! whatever crashes when. An import adds one multi-row `INSERT` per file, not a round trip
//! per message.
//!
//! Rows that record no commit of their own — a duplicate (nothing was written), the time the
//! source released the input (after the commit: a deleted file, an acknowledged batch) —
//! and what an outbound sink did to a queued fax or text (`sent`, `completed`, …; the queue
//! row and OSCAR's `faxes` row hold the state, committed by the sink) come from the
//! pipeline's events through [`Recorder`], written just after, off the message path. A crash
//! in between can lose such a row (an input is then re-delivered and recorded as a
//! duplicate; a fax's state is still in OSCAR's `faxes`), never the row of an import, a
//! filed document or a dead letter.
//!
//! The journal is what the console reads ([`crate::http::console`]): counts per day that
//! survive restarts, search by accession, control id, hash, pipeline, outcome, reason and
//! time, and a message's journey (every row with its content hash, in order). Values are
//! identifiers and codes: accession and control ids, hashes, OSCAR row numbers, reason
//! codes. Never a name, health number, birth date or message text.
//!
//! Why a table of its own rather than `oscarflow_lab_message`: that table has one row per
//! lab in OSCAR; the journal also has the labs that never reached OSCAR (dead letters,
//! duplicates), faxes and texts, and the release of each input.

use std::sync::Arc;

use sqlx::{Any, Row as _, Transaction};

use crate::envelope::Provenance;
use crate::store::rows::{insert_all, insert_ids, Limit, Row, Q};
use crate::store::{now_sql, text_column, Backend, Store};
use crate::telemetry::{Event, Observer};

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lab,
    FaxIn,
    FaxOut,
    Sms,
    /// A scheduling message (SIU) applied to OSCAR's appointment book.
    Appointment,
}

impl Kind {
    /// What the inputs of a source type are.
    pub fn of_source(source_kind: &str) -> Kind {
        match source_kind {
            "ringcentral_fax" => Kind::FaxIn,
            "oscar_fax_queue" => Kind::FaxOut,
            "oscar_appointments" | "oscar_lab_ready" | "oscar_appointment_confirmations" => {
                Kind::Sms
            }
            _ => Kind::Lab,
        }
    }

    /// What a dead-lettered input of `source_kind` is, its message type (`peek`) telling a
    /// scheduling message from a lab on the sources that carry both (folders, MLLP).
    pub fn of_input(source_kind: &str, message_type: Option<&str>) -> Kind {
        match Kind::of_source(source_kind) {
            Kind::Lab if message_type.is_some_and(|t| t.starts_with("SIU")) => Kind::Appointment,
            k => k,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lab => "lab",
            Kind::FaxIn => "fax_in",
            Kind::FaxOut => "fax_out",
            Kind::Sms => "sms",
            Kind::Appointment => "appointment",
        }
    }
}

/// Outcome values written by oscarflow itself (outbound sinks add theirs: `sent`, …).
pub mod outcome {
    pub const IMPORTED: &str = "imported";
    pub const DUPLICATE: &str = "duplicate";
    pub const DEAD_LETTERED: &str = "dead_lettered";
}

/// One row to write; the provenance gives the rest.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub kind: Option<Kind>,
    pub part: Option<u32>,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub accession: Option<String>,
    pub lab_type: Option<&'static str>,
    pub outcome: &'static str,
    pub match_outcome: Option<&'static str>,
    pub match_candidates: Option<usize>,
    pub reason: Option<&'static str>,
    pub detail: Option<String>,
    pub lab_no: Option<i64>,
    pub document_no: Option<i64>,
    pub fax_id: Option<i64>,
    pub demographic_no: Option<i64>,
    pub dead_letter_id: Option<String>,
    pub appointment_no: Option<i64>,
}

const COLUMNS: &str = "INSERT INTO oscarflow_journal (at, kind, pipeline, source, source_kind, origin, received_at, attempt, content_sha256, part, message_type, control_id, accession, lab_type, outcome, match_outcome, match_candidates, reason, detail, lab_no, document_no, fax_id, demographic_no, dead_letter_id, appointment_no)";

pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `received_at` as the database keeps times: local, `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn local_time(t: time::OffsetDateTime) -> String {
    let offset =
        time::UtcOffset::from_whole_seconds(chrono::Local::now().offset().local_minus_utc())
            .unwrap_or(time::UtcOffset::UTC);
    t.to_offset(offset)
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_else(|_| now_sql())
}

/// Writes `entries` about the input of `prov` in `tx` (the transaction of the commit they
/// record).
pub async fn record(
    tx: &mut Transaction<'static, Any>,
    prov: &Provenance,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    record_files(tx, &[(prov, entries)]).await
}

/// [`record`] for the entries of several inputs (a group commit's files), in order, in as
/// few statements as the rows allow.
pub async fn record_files(
    tx: &mut Transaction<'static, Any>,
    files: &[(&Provenance, &[Entry])],
) -> Result<(), sqlx::Error> {
    let (now, of) = (now_sql(), of_files(files));
    let rows = insert_rows(&now, &of, files);
    insert_all(tx, COLUMNS, &rows, Limit::for_backend(Backend::Sqlite))
        .await
        .map(|_| ())
}

/// [`record_files`], returning each entry's row id in order (`returning`: the server takes
/// `INSERT … RETURNING`, see [`crate::store::rows`]): the audit trail names them.
pub async fn record_files_ids(
    tx: &mut Transaction<'static, Any>,
    (backend, returning): (Backend, bool),
    files: &[(&Provenance, &[Entry])],
) -> Result<Vec<i64>, sqlx::Error> {
    let (now, of) = (now_sql(), of_files(files));
    let rows = insert_rows(&now, &of, files);
    insert_ids(
        tx,
        returning,
        (COLUMNS, "id"),
        &rows,
        Limit::for_backend(backend),
    )
    .await
}

/// What a provenance gives every row of its input.
struct Of {
    received: String,
    origin: String,
    sha: String,
}

fn of_files(files: &[(&Provenance, &[Entry])]) -> Vec<Of> {
    files
        .iter()
        .map(|(prov, _)| Of {
            received: local_time(prov.received_at),
            origin: cut(&prov.origin.label(), 500),
            sha: prov.sha256_hex(),
        })
        .collect()
}

/// A journal row ready to insert.
struct Insert<'a> {
    at: &'a str,
    prov: &'a Provenance,
    of: &'a Of,
    e: &'a Entry,
}

fn insert_rows<'a>(
    now: &'a str,
    of: &'a [Of],
    files: &'a [(&'a Provenance, &'a [Entry])],
) -> Vec<Insert<'a>> {
    files
        .iter()
        .zip(of)
        .flat_map(|((prov, entries), of)| {
            entries.iter().map(move |e| Insert {
                at: now,
                prov,
                of,
                e,
            })
        })
        .collect()
}

impl Row for Insert<'_> {
    const PARAMS: usize = 25;
    const VALUES: &'static str =
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        let (prov, o, e) = (self.prov, self.of, self.e);
        q.bind(self.at)
            .bind(e.kind.unwrap_or(Kind::Lab).as_str())
            .bind(cut(&prov.pipeline, 100))
            .bind(cut(&prov.source, 100))
            .bind(cut(&prov.source_kind, 30))
            .bind(o.origin.as_str())
            .bind(o.received.as_str())
            .bind(i64::from(prov.attempt))
            .bind(o.sha.as_str())
            .bind(e.part.map(i64::from))
            .bind(e.message_type.as_deref().map(|s| cut(s, 20)))
            .bind(e.control_id.as_deref().map(|s| cut(s, 100)))
            .bind(e.accession.as_deref().map(|s| cut(s, 255)))
            .bind(e.lab_type)
            .bind(e.outcome)
            .bind(e.match_outcome)
            .bind(e.match_candidates.map(|n| n as i64))
            .bind(e.reason)
            .bind(e.detail.as_deref().map(|s| cut(s, 500)))
            .bind(e.lab_no)
            .bind(e.document_no)
            .bind(e.fax_id)
            .bind(e.demographic_no)
            .bind(e.dead_letter_id.as_deref())
            .bind(e.appointment_no)
    }
}

/// Writes `entries` in a transaction of their own (rows that record no other commit).
pub async fn record_alone(
    store: &Store,
    prov: &Provenance,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    record(&mut tx, prov, entries).await?;
    tx.commit().await
}

/// What can be read of a message that may not parse: its type, control id and accession,
/// for the journal row of a dead letter (so that a broken lab is found by its accession).
/// Identifiers only; empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peek {
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub accession: Option<String>,
}

/// Reads the identifiers of the first message in `raw`, as far as it goes.
pub fn peek(raw: &[u8]) -> Peek {
    let head = &raw[..raw.len().min(256 * 1024)];
    let text = String::from_utf8_lossy(head);
    let Some(start) = text.find("MSH") else {
        return Peek::default();
    };
    let text = &text[start..];
    let non_empty = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let Ok(m) = crate::hl7::message::Message::parse(text) else {
        return peek_plain(text);
    };
    let mut p = Peek {
        message_type: non_empty(format!("{}^{}", m.get("MSH-9.1"), m.get("MSH-9.2")))
            .filter(|s| s != "^"),
        control_id: non_empty(m.get("MSH-10").into_owned()),
        accession: None,
    };
    if p.message_type
        .as_deref()
        .is_some_and(|t| t.starts_with("SIU"))
    {
        // A scheduling message is found by its appointment's filler id (SCH-2.1).
        p.accession = non_empty(m.get("SCH-2.1").into_owned());
        return p;
    }
    p.accession = match crate::hl7::lab::LabMessage::from_message(&m) {
        Ok(lab) => non_empty(crate::oscar::handlers::accession(&lab)),
        Err(_) => None,
    }
    .or_else(|| {
        // PATHL7's rule on ORC-3.1, else OBR-3.1, else the order numbers as they are.
        let filler = [m.get("ORC-3.1"), m.get("OBR-3.1")]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(|s| s.into_owned())
            .unwrap_or_default();
        non_empty(pathl7_accession(&filler)).or_else(|| non_empty(m.get("OBR-2.1").into_owned()))
    });
    p
}

/// [`peek`] of a message the parser refuses: MSH-9 and MSH-10 of its first line, split on
/// the field separator, and the PATHL7 accession rule on the first ORC-3 or OBR-3.
fn peek_plain(text: &str) -> Peek {
    let mut segments = text.split(['\r', '\n']).filter(|l| !l.is_empty());
    let Some(msh) = segments.next() else {
        return Peek::default();
    };
    let Some(sep) = msh.chars().nth(3) else {
        return Peek::default();
    };
    let fields: Vec<&str> = msh.split(sep).collect();
    let field = |f: &[&str], n: usize| {
        f.get(n)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let component =
        |v: Option<String>| v.map(|s| s.split('^').take(2).collect::<Vec<_>>().join("^"));
    let filler = segments
        .filter(|l| l.starts_with("ORC") || l.starts_with("OBR"))
        .find_map(|l| {
            let f: Vec<&str> = l.split(sep).collect();
            field(&f, 3).map(|v| v.split('^').next().unwrap_or("").to_string())
        });
    Peek {
        message_type: component(field(&fields, 8)),
        control_id: field(&fields, 9),
        accession: filler
            .map(|f| pathl7_accession(&f))
            .filter(|s| !s.is_empty()),
    }
}

/// PATHL7's accession: of `a-b-c` the first part, of five parts the first three, of two or
/// four the first two; anything else as it is.
fn pathl7_accession(filler: &str) -> String {
    let parts: Vec<&str> = filler.split('-').collect();
    match parts.len() {
        3 => parts[0].to_string(),
        5 => parts[..3].join("-"),
        n if n > 1 => parts[..2].join("-"),
        _ => filler.to_string(),
    }
}

/// A journal row as read back.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JournalRow {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub pipeline: String,
    pub source: String,
    pub source_kind: String,
    pub origin: String,
    pub received_at: String,
    pub attempt: i64,
    pub content_sha256: String,
    pub part: Option<i64>,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub accession: Option<String>,
    pub lab_type: Option<String>,
    pub outcome: String,
    pub match_outcome: Option<String>,
    pub match_candidates: Option<i64>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub lab_no: Option<i64>,
    pub document_no: Option<i64>,
    pub fax_id: Option<i64>,
    pub demographic_no: Option<i64>,
    pub dead_letter_id: Option<String>,
    pub appointment_no: Option<i64>,
    pub released_at: Option<String>,
}

const SELECT: &str = "SELECT id, CAST(at AS CHAR) AS at, kind, pipeline, source, source_kind, origin, CAST(received_at AS CHAR) AS received_at, attempt, content_sha256, part, message_type, control_id, accession, lab_type, outcome, match_outcome, match_candidates, reason, detail, lab_no, document_no, fax_id, demographic_no, dead_letter_id, appointment_no, CAST(released_at AS CHAR) AS released_at FROM oscarflow_journal";

fn read_row(r: &sqlx::any::AnyRow) -> Result<JournalRow, sqlx::Error> {
    let s = |c: &str| text_column(r, c).map(Option::unwrap_or_default);
    let o = |c: &str| text_column(r, c);
    let i = |c: &str| r.try_get::<Option<i64>, _>(c);
    Ok(JournalRow {
        id: r.try_get("id")?,
        at: s("at")?,
        kind: s("kind")?,
        pipeline: s("pipeline")?,
        source: s("source")?,
        source_kind: s("source_kind")?,
        origin: s("origin")?,
        received_at: s("received_at")?,
        attempt: i("attempt")?.unwrap_or(1),
        content_sha256: s("content_sha256")?,
        part: i("part")?,
        message_type: o("message_type")?,
        control_id: o("control_id")?,
        accession: o("accession")?,
        lab_type: o("lab_type")?,
        outcome: s("outcome")?,
        match_outcome: o("match_outcome")?,
        match_candidates: i("match_candidates")?,
        reason: o("reason")?,
        detail: o("detail")?,
        lab_no: i("lab_no")?,
        document_no: i("document_no")?,
        fax_id: i("fax_id")?,
        demographic_no: i("demographic_no")?,
        dead_letter_id: o("dead_letter_id")?,
        appointment_no: i("appointment_no")?,
        released_at: o("released_at")?,
    })
}

/// A search of the journal; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// An accession or control id (exact), or a content hash (a prefix of 8 or more hex
    /// digits).
    pub id: Option<String>,
    pub pipeline: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    /// A dead-letter reason code or a match outcome.
    pub reason: Option<String>,
    /// From this time on (`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`, local).
    pub from: Option<String>,
    /// Before this time.
    pub to: Option<String>,
    pub limit: i64,
}

/// The rows matching `q`, newest first.
pub async fn search(store: &Store, q: &Query) -> Result<Vec<JournalRow>, sqlx::Error> {
    let mut sql = format!("{SELECT} WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let hex = id.len() >= 8 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            sql.push_str(" AND (accession = ? OR control_id = ? OR content_sha256 LIKE ?)");
            binds.extend([
                id.into(),
                id.into(),
                format!("{}%", id.to_ascii_lowercase()),
            ]);
        } else {
            sql.push_str(" AND (accession = ? OR control_id = ?)");
            binds.extend([id.into(), id.into()]);
        }
    }
    let mut eq = |col: &str, v: &Option<String>| {
        if let Some(v) = v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            sql.push_str(&format!(" AND {col} = ?"));
            binds.push(v.to_string());
        }
    };
    eq("pipeline", &q.pipeline);
    eq("kind", &q.kind);
    eq("outcome", &q.outcome);
    if let Some(r) = q.reason.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        sql.push_str(" AND (reason = ? OR match_outcome = ?)");
        binds.extend([r.to_string(), r.to_string()]);
    }
    if let Some(f) = q.from.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        sql.push_str(" AND at >= ?");
        binds.push(f.to_string());
    }
    if let Some(t) = q.to.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        sql.push_str(" AND at < ?");
        binds.push(t.to_string());
    }
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT {}",
        q.limit.clamp(1, 1000)
    ));
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    query
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(read_row)
        .collect()
}

/// One row by id.
pub async fn get(store: &Store, id: i64) -> Result<Option<JournalRow>, sqlx::Error> {
    let r = sqlx::query(&format!("{SELECT} WHERE id = ?"))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    r.as_ref().map(read_row).transpose()
}

/// A message's journey: every row of its input (same content hash and pipeline), oldest
/// first — received, dead-lettered, re-driven, imported, released.
pub async fn journey(store: &Store, row: &JournalRow) -> Result<Vec<JournalRow>, sqlx::Error> {
    sqlx::query(&format!(
        "{SELECT} WHERE content_sha256 = ? AND pipeline = ? ORDER BY id LIMIT 200"
    ))
    .bind(&row.content_sha256)
    .bind(&row.pipeline)
    .fetch_all(&store.pool)
    .await?
    .iter()
    .map(read_row)
    .collect()
}

/// Counts of one pipeline over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Messages the journal has a row for (every outcome).
    pub received: i64,
    pub imported: i64,
    pub matched: i64,
    pub unmatched: i64,
    pub duplicate: i64,
    pub dead_lettered: i64,
    /// Outbound actions (faxes and texts sent or tracked).
    pub outbound: i64,
}

/// Per pipeline, the counts of rows at or after `since`.
pub async fn counts(
    store: &Store,
    since: &str,
) -> Result<std::collections::BTreeMap<String, Counts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pipeline, kind, outcome, CASE WHEN match_outcome = 'matched' THEN 1 WHEN match_outcome IS NULL THEN 0 ELSE 2 END AS m, COUNT(*) AS n FROM oscarflow_journal WHERE at >= ? GROUP BY pipeline, kind, outcome, CASE WHEN match_outcome = 'matched' THEN 1 WHEN match_outcome IS NULL THEN 0 ELSE 2 END",
    )
    .bind(since)
    .fetch_all(&store.pool)
    .await?;
    let mut out = std::collections::BTreeMap::<String, Counts>::new();
    for r in rows {
        let pipeline = text_column(&r, "pipeline")?.unwrap_or_default();
        let kind = text_column(&r, "kind")?.unwrap_or_default();
        let outcome = text_column(&r, "outcome")?.unwrap_or_default();
        let m: i64 = r.try_get("m")?;
        let n: i64 = r.try_get("n")?;
        let c = out.entry(pipeline).or_default();
        let inbound = kind == Kind::Lab.as_str() || kind == Kind::FaxIn.as_str();
        if !inbound {
            c.outbound += n;
            continue;
        }
        c.received += n;
        match outcome.as_str() {
            outcome::IMPORTED => {
                c.imported += n;
                match m {
                    1 => c.matched += n,
                    2 => c.unmatched += n,
                    _ => {}
                }
            }
            outcome::DUPLICATE => c.duplicate += n,
            outcome::DEAD_LETTERED => c.dead_lettered += n,
            _ => {}
        }
    }
    Ok(out)
}

/// Rows per hour at or after `since`: (`YYYY-MM-DD HH`, pipeline, rows).
pub async fn hourly(store: &Store, since: &str) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT SUBSTR(CAST(at AS CHAR), 1, 13) AS hour, pipeline, COUNT(*) AS n FROM oscarflow_journal WHERE at >= ? GROUP BY SUBSTR(CAST(at AS CHAR), 1, 13), pipeline ORDER BY hour",
    )
    .bind(since)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                text_column(r, "hour")?.unwrap_or_default(),
                text_column(r, "pipeline")?.unwrap_or_default(),
                r.try_get("n")?,
            ))
        })
        .collect()
}

/// Deletes rows older than `before` (local `YYYY-MM-DD HH:MM:SS`), 10,000 at a time so that
/// no statement holds locks long. Returns how many went.
pub async fn prune(store: &Store, before: &str) -> Result<u64, sqlx::Error> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(id) FROM oscarflow_journal WHERE at < ?")
            .bind(before)
            .fetch_one(&store.pool)
            .await?;
    let Some(newest) = newest else { return Ok(0) };
    let oldest: i64 = sqlx::query_scalar("SELECT COALESCE(MIN(id), 0) FROM oscarflow_journal")
        .fetch_one(&store.pool)
        .await?;
    let mut gone = 0;
    let mut lo = oldest;
    while lo <= newest {
        let hi = (lo + 10_000).min(newest + 1);
        gone += sqlx::query("DELETE FROM oscarflow_journal WHERE id >= ? AND id < ? AND at < ?")
            .bind(lo)
            .bind(hi)
            .bind(before)
            .execute(&store.pool)
            .await?
            .rows_affected();
        lo = hi;
    }
    Ok(gone)
}

/// What [`Recorder`] writes off the message path.
enum Note {
    Duplicate {
        prov: Arc<Provenance>,
        messages: u32,
        component: String,
    },
    Outbound {
        prov: Arc<Provenance>,
        row: i64,
        outcome: &'static str,
    },
    Released {
        pipeline: Arc<str>,
        sha: String,
        at: String,
    },
    /// Answered once every note before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The pipeline observer that journals duplicates and the release of inputs (see the
/// module docs), writing in the background so that events never wait on the database.
pub struct Recorder {
    tx: tokio::sync::mpsc::UnboundedSender<Note>,
}

impl Recorder {
    /// Starts the writer on `store`; it ends when the last clone of the observer is gone.
    /// Needs a Tokio runtime.
    pub fn start(store: Store) -> Arc<Recorder> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(n) => batch.push(n),
                        Err(_) => break,
                    }
                }
                for note in batch {
                    if let Note::Flush(done) = note {
                        let _ = done.send(());
                        continue;
                    }
                    if let Err(e) = write_note(&store, &note).await {
                        tracing::warn!(error = %crate::error::describe_sqlx(&e), "Could not write a journal row (a duplicate or a release); the commits are journaled.");
                    }
                }
            }
        });
        Arc::new(Recorder { tx })
    }

    /// Waits until every row noted so far is written (a pipeline that ends, so that a
    /// one-shot run such as `replay` journals its duplicates and releases before the
    /// process exits).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Note::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), wait).await;
        }
    }
}

async fn write_note(store: &Store, note: &Note) -> Result<(), sqlx::Error> {
    match note {
        Note::Duplicate {
            prov,
            messages,
            component,
        } => {
            let entry = Entry {
                kind: Some(Kind::Lab),
                outcome: outcome::DUPLICATE,
                detail: Some(format!(
                    "{messages} message(s) already in OSCAR (same file), seen by {component}"
                )),
                ..Entry::default()
            };
            record_alone(store, prov, &[entry]).await
        }
        Note::Outbound { prov, row, outcome } => {
            let kind = Kind::of_source(&prov.source_kind);
            let entry = Entry {
                kind: Some(kind),
                outcome,
                fax_id: (kind == Kind::FaxOut).then_some(*row),
                control_id: Some(row.to_string()),
                detail: Some(format!("queue row {row}")),
                ..Entry::default()
            };
            record_alone(store, prov, &[entry]).await
        }
        Note::Flush(_) => Ok(()),
        Note::Released { pipeline, sha, at } => sqlx::query(
            "UPDATE oscarflow_journal SET released_at = ? WHERE content_sha256 = ? AND pipeline = ? AND released_at IS NULL",
        )
        .bind(at)
        .bind(sha)
        .bind(&**pipeline)
        .execute(&store.pool)
        .await
        .map(|_| ()),
    }
}

impl Observer for Recorder {
    fn observe(&self, e: &Event<'_>) {
        let note = match e {
            Event::Duplicate {
                prov,
                component,
                messages,
            } => Note::Duplicate {
                prov: Arc::new((*prov).clone()),
                messages: *messages,
                component: component.to_string(),
            },
            Event::Settled {
                prov,
                released: true,
                ..
            } => Note::Released {
                pipeline: prov.pipeline.clone(),
                sha: prov.sha256_hex(),
                at: now_sql(),
            },
            // What an outbound sink did to a queued fax or text (its queue row's own state
            // is committed by the sink; this row follows it). Waiting rounds are not
            // journaled.
            Event::Outbound {
                prov, row, outcome, ..
            } if *outcome != "waiting" => Note::Outbound {
                prov: Arc::new((*prov).clone()),
                row: *row,
                outcome,
            },
            _ => return,
        };
        let _ = self.tx.send(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifiers_of_a_message_that_is_no_lab_are_still_read() {
        let raw = b"MSH|^~\\&|PATHL7|VIHA|OSCAR|CLINIC|20260101120000||ORU^R01|CTRL-42|P|2.3\rORC|RE||24-123-456789\rOBR|1||24-123-456789|GLU\r";
        let p = peek(raw);
        assert_eq!(p.control_id.as_deref(), Some("CTRL-42"));
        assert_eq!(p.message_type.as_deref(), Some("ORU^R01"));
        assert_eq!(p.accession.as_deref(), Some("24"));
    }

    #[test]
    fn a_message_the_parser_refuses_still_gives_its_control_id_and_accession() {
        let raw = b"MSH|^~\\&|PATHL7|LIFELABS|A|B|20260101||ORU^R01|ZZ9|P|2.3\rPID||1\rORC|RE||26-1-CREA-1\r\x01bad segment\r";
        let p = peek_plain(&String::from_utf8_lossy(raw));
        assert_eq!(p.control_id.as_deref(), Some("ZZ9"));
        assert_eq!(p.message_type.as_deref(), Some("ORU^R01"));
        assert_eq!(p.accession.as_deref(), Some("26-1"));
    }

    proptest::proptest! {
        #[test]
        fn peek_never_panics_and_reads_only_what_is_there(
            head in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            body in "[A-Z0-9|^~\\\\&\r\n-]{0,300}",
        ) {
            let mut raw = head;
            raw.extend_from_slice(b"MSH|");
            raw.extend_from_slice(body.as_bytes());
            let p = peek(&raw);
            for v in [p.message_type, p.control_id, p.accession].into_iter().flatten() {
                proptest::prop_assert!(!v.is_empty());
                proptest::prop_assert!(!v.contains('\r') && !v.contains('\n'));
            }
        }
    }

    #[test]
    fn bytes_that_are_not_hl7_peek_nothing() {
        assert_eq!(peek(b"%PDF-1.4 not a message"), Peek::default());
        assert_eq!(peek(b""), Peek::default());
    }
}
