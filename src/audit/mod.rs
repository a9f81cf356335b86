//! The audit trail (`oscarflow_audit`): who wrote what into which chart, and who was shown
//! patient data, provably.
//!
//! **What is recorded.** One row per message filed into OSCAR, naming every OSCAR row it
//! wrote, table by table, with its keys ([`Written`]): `fileUploadCheck`, `hl7TextMessage`,
//! `hl7TextInfo`, `measurements`/`measurementsExt` (and the earlier version's measurements
//! moved to `measurementsDeleted`), `patientLabRouting`, `providerLabRouting`, OSCAR's own
//! `log` rows; for a received fax its `document`, `ctl_document`, `queue_document_link`,
//! `providerLabRouting`, `faxes` rows and its file in `DOCUMENT_DIR`. One row per status
//! changed in OSCAR's queues (`faxes.status` of a fax sent). Each row says for which chart
//! (`demographic_no`, never a name), from which message (the journal row's id, the input's
//! content hash and part), by which pipeline, process and host, and when. It is written **in
//! the same transaction** as the rows it names: no audited write without its rows, no rows
//! without their audit, whatever crashes when.
//!
//! Reads of patient data through oscarflow — `dlq show --raw`, `tap --bodies`, `inspect` of
//! a stored message, the console's "reveal" — add a row (`action = read`) naming the person
//! (the console token's name and session tag, or the operating-system user of the command
//! line) and why the data was shown, in the database the data came from, before the data is
//! shown: a read that cannot be recorded is refused.
//!
//! **Tamper-evident.** Rows form hash chains: one per pipeline (its writes) and
//! [`ACCESS_CHAIN`] for reads. A row's `hash` is SHA-256 over every field of the row (each
//! length-prefixed, so no two rows serialize alike) and the previous row's hash; `seq`
//! numbers a chain's rows from 1 without gaps (unique with the chain), and
//! `oscarflow_audit_head` holds each chain's last `seq` and `hash`. The head row is the
//! serialization point: a writer locks it (`SELECT … FOR UPDATE` on MariaDB; SQLite's
//! single writer is taken with an `UPDATE` first) at the end of its transaction, so the lock
//! is held only for the commit, and one chain per pipeline keeps pipelines from waiting on
//! each other. [`verify`] walks every chain and names the first row of each that was
//! changed (its content no longer gives its hash), removed (a gap in `seq`, or the head
//! ahead of the last row) or inserted (beyond the head, a repeated `seq`, or a row that does
//! not follow its predecessor's hash).
//!
//! What the chain does not stop: someone with write access to the database who recomputes
//! every hash after the change *and* moves the head. Against that, keep the head hash that
//! `oscarflow audit verify` prints somewhere else (a ticket, a log shipped off the machine)
//! and compare; and grant oscarflow's account only `SELECT, INSERT` on `oscarflow_audit`
//! (`deploy/oscarflow-grants.sql`), so that oscarflow itself can never rewrite it.
//!
//! OSCAR's own audit log (`log`) gets the rows OSCAR's upload writes ([`crate::oscar::log`]),
//! in the same transaction, so OSCAR's Security Log screen shows oscarflow's work too.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use sqlx::{Any, Row as _, Transaction};

use crate::store::rows::{insert_all, Limit, Row, Q};
use crate::store::{now_sql, text_column, Backend, Store};

/// The chain of reads of patient data.
pub const ACCESS_CHAIN: &str = "access";

/// The chain of statuses set in OSCAR's queues (`faxes.status`).
pub const STATUS_CHAIN: &str = "status";

/// The `prev_hash` of a chain's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a row records.
pub mod action {
    /// Rows written into OSCAR.
    pub const WRITE: &str = "write";
    /// A status changed in one of OSCAR's queues.
    pub const STATUS: &str = "status";
    /// Patient data shown to a person.
    pub const READ: &str = "read";
}

/// The chain of a pipeline's writes.
pub fn pipeline_chain(pipeline: &str) -> String {
    cut(&format!("pipeline:{pipeline}"), 100)
}

/// The OSCAR rows one message wrote: table by table, each row's key (an id, or the columns
/// that identify it joined by `/`), in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written(Vec<(String, Vec<String>)>);

impl Written {
    /// Adds one row of `table`.
    pub fn add(&mut self, table: &str, key: impl ToString) {
        let key = key.to_string();
        match self.0.iter_mut().find(|(t, _)| t == table) {
            Some((_, keys)) => keys.push(key),
            None => self.0.push((table.to_string(), vec![key])),
        }
    }

    /// Adds rows of `table` by id.
    pub fn ids(&mut self, table: &str, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            self.add(table, id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, k)| k.is_empty())
    }

    /// Every (table, key), ranges expanded.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |k| (t.clone(), k.clone())))
            .collect()
    }

    /// `table key key; table key`, with runs of consecutive ids as `first-last`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        for (table, keys) in &self.0 {
            if keys.is_empty() {
                continue;
            }
            out.push(format!("{table} {}", compress(keys).join(" ")));
        }
        out.join("; ")
    }

    /// The inverse of [`Written::render`].
    pub fn parse(s: &str) -> Written {
        let mut w = Written::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let mut words = part.split_whitespace();
            let Some(table) = words.next() else { continue };
            for k in words {
                match k.split_once('-').and_then(|(a, b)| {
                    Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?))
                        .filter(|(a, b)| a <= b && b - a < 10_000_000)
                }) {
                    Some((a, b)) => w.ids(table, a..=b),
                    None => w.add(table, k),
                }
            }
        }
        w
    }
}

/// Runs of consecutive numeric keys as `first-last`; other keys as they are.
fn compress(keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    let flush = |run: &mut Option<(i64, i64)>, out: &mut Vec<String>| {
        if let Some((a, b)) = run.take() {
            out.push(if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            });
        }
    };
    for k in keys {
        // Only canonical numbers join a run (`007` stays as written).
        match k
            .parse::<i64>()
            .ok()
            .filter(|n| n.to_string() == *k && *n >= 0)
        {
            Some(n) => match run {
                Some((a, b)) if n == b + 1 => run = Some((a, n)),
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((n, n));
                }
            },
            None => {
                flush(&mut run, &mut out);
                out.push(k.clone());
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// What a row is about: the pipeline, the message (journal row, content hash, part), the
/// chart and OSCAR's record numbers. Identifiers only.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct About {
    pub pipeline: Option<String>,
    pub journal_id: Option<i64>,
    pub content_sha256: Option<String>,
    pub part: Option<i64>,
    pub demographic_no: Option<i64>,
    pub lab_no: Option<i64>,
    pub document_no: Option<i64>,
    pub fax_id: Option<i64>,
    pub appointment_no: Option<i64>,
}

impl About {
    /// OSCAR's records and the chart, in words: `lab 12`, `document 3`, `fax 7`,
    /// `chart #1001`.
    pub fn records(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.lab_no {
            out.push(format!("lab {n}"));
        }
        if let Some(n) = self.document_no {
            out.push(format!("document {n}"));
        }
        if let Some(n) = self.fax_id {
            out.push(format!("fax {n}"));
        }
        if let Some(n) = self.appointment_no {
            out.push(format!("appointment {n}"));
        }
        if let Some(n) = self.demographic_no {
            out.push(format!("chart #{n}"));
        }
        out
    }
}

/// One row to record; the chain, time, host and process are added by [`append`].
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub action: &'static str,
    /// Who: `oscarflow pipeline <name>` for writes; a console token or an OS user for reads.
    pub actor: String,
    pub about: About,
    pub written: Written,
    /// For a read: what was shown and why.
    pub why: Option<String>,
}

/// The actor of a pipeline's writes.
pub fn pipeline_actor(pipeline: &str) -> String {
    format!("oscarflow pipeline {pipeline}")
}

/// The operating-system user running this process (the actor of a command-line read): the
/// name the system gives the real uid, not `$USER`, which anyone can set.
pub fn os_user() -> String {
    // SAFETY: getuid never fails; getpwuid_r writes only into the buffers given.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    let name = if rc == 0 && !out.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned()
    } else {
        "unknown".to_string()
    };
    format!("os user {name} (uid {uid})")
}

/// This machine's name and this process, for every row.
fn origin() -> &'static (String, String) {
    static ORIGIN: OnceLock<(String, String)> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let host = if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown".to_string()
        };
        (
            cut(&host, 100),
            format!(
                "oscarflow {} pid {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ),
        )
    })
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A row of `oscarflow_audit` as stored (and hashed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub chain: String,
    pub seq: i64,
    pub at: String,
    pub action: String,
    pub actor: String,
    pub host: String,
    pub process: String,
    #[serde(flatten)]
    pub about: About,
    pub written: Option<String>,
    pub why: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// The row's hash: SHA-256 over every field but `id` and `hash` (each tagged and
    /// length-prefixed) and the previous row's hash.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |v: Option<&str>| match v {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        };
        let num = |n: Option<i64>| n.map(|n| n.to_string());
        field(Some("oscarflow-audit-v1"));
        field(Some(&self.chain));
        field(Some(&self.seq.to_string()));
        field(Some(&self.at));
        field(Some(&self.action));
        field(Some(&self.actor));
        field(Some(&self.host));
        field(Some(&self.process));
        let a = &self.about;
        field(a.pipeline.as_deref());
        field(num(a.journal_id).as_deref());
        field(a.content_sha256.as_deref());
        field(num(a.part).as_deref());
        field(num(a.demographic_no).as_deref());
        field(num(a.lab_no).as_deref());
        field(num(a.document_no).as_deref());
        field(num(a.fax_id).as_deref());
        field(num(a.appointment_no).as_deref());
        field(self.written.as_deref());
        field(self.why.as_deref());
        field(Some(&self.prev_hash));
        hex::encode(h.finalize())
    }

    /// The rows this row names as written.
    pub fn written_rows(&self) -> Written {
        Written::parse(self.written.as_deref().unwrap_or(""))
    }
}

const COLUMNS: &str = "INSERT INTO oscarflow_audit (chain, seq, at, action, actor, host, process, pipeline, journal_id, content_sha256, part, demographic_no, lab_no, document_no, fax_id, appointment_no, written, why, prev_hash, hash)";

impl Row for AuditRow {
    const PARAMS: usize = 20;
    const VALUES: &'static str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.chain.as_str())
            .bind(self.seq)
            .bind(self.at.as_str())
            .bind(self.action.as_str())
            .bind(self.actor.as_str())
            .bind(self.host.as_str())
            .bind(self.process.as_str())
            .bind(self.about.pipeline.as_deref())
            .bind(self.about.journal_id)
            .bind(self.about.content_sha256.as_deref())
            .bind(self.about.part)
            .bind(self.about.demographic_no)
            .bind(self.about.lab_no)
            .bind(self.about.document_no)
            .bind(self.about.fax_id)
            .bind(self.about.appointment_no)
            .bind(self.written.as_deref())
            .bind(self.why.as_deref())
            .bind(self.prev_hash.as_str())
            .bind(self.hash.as_str())
    }
    fn bytes(&self) -> usize {
        self.written.as_ref().map_or(0, String::len)
    }
}

fn backend_of(tx: &Transaction<'static, Any>) -> Backend {
    if tx.backend_name().eq_ignore_ascii_case("mysql") {
        Backend::MySql
    } else {
        Backend::Sqlite
    }
}

/// Locks `chain`'s head for the rest of `tx` and returns its (seq, hash); creates it.
async fn lock_head(
    tx: &mut Transaction<'static, Any>,
    chain: &str,
) -> Result<(i64, String), sqlx::Error> {
    let backend = backend_of(tx);
    let select = match backend {
        Backend::MySql => "SELECT seq, hash FROM oscarflow_audit_head WHERE chain = ? FOR UPDATE",
        Backend::Sqlite => {
            // SQLite has one writer: take the write lock before reading, so that no other
            // connection appends between the read and the write.
            sqlx::query("UPDATE oscarflow_audit_head SET seq = seq WHERE chain = ?")
                .bind(chain)
                .execute(&mut **tx)
                .await?;
            "SELECT seq, hash FROM oscarflow_audit_head WHERE chain = ?"
        }
    };
    if let Some(r) = sqlx::query(select)
        .bind(chain)
        .fetch_optional(&mut **tx)
        .await?
    {
        let seq: i64 = r.try_get(0)?;
        let hash = text_column(&r, 1)?.unwrap_or_default();
        return Ok((seq, hash));
    }
    // A new chain. Two writers starting one at once: the second fails on the primary key
    // (a transient error; its retry finds the head).
    sqlx::query("INSERT INTO oscarflow_audit_head (chain, seq, hash) VALUES (?, 0, ?)")
        .bind(chain)
        .bind(GENESIS)
        .execute(&mut **tx)
        .await?;
    Ok((0, GENESIS.to_string()))
}

/// Makes sure `chain` has its head row, in a statement of its own: call it before the
/// transaction that appends to the chain. Creating the head inside that transaction would
/// let two writers of a new chain (two daemons' first fax statuses) take the same gap lock
/// and deadlock, failing a transaction that records a fax RingCentral already accepted.
/// Remembered per database and chain, so it costs one statement per chain per process.
pub async fn ensure_chain(store: &Store, chain: &str) -> Result<(), sqlx::Error> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static READY: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let chain = cut(chain, 100);
    let key = format!("{}\u{0}{chain}", store.pool.connect_options().database_url);
    let ready = READY.get_or_init(Default::default);
    if ready.lock().is_ok_and(|s| s.contains(&key)) {
        return Ok(());
    }
    let sql = match store.backend {
        Backend::MySql => {
            "INSERT IGNORE INTO oscarflow_audit_head (chain, seq, hash) VALUES (?, 0, ?)"
        }
        Backend::Sqlite => {
            "INSERT OR IGNORE INTO oscarflow_audit_head (chain, seq, hash) VALUES (?, 0, ?)"
        }
    };
    sqlx::query(sql)
        .bind(chain.as_str())
        .bind(GENESIS)
        .execute(&store.pool)
        .await?;
    if let Ok(mut s) = ready.lock() {
        s.insert(key);
    }
    Ok(())
}

/// Appends `records` to `chain` in `tx`, the transaction of the writes they record (the
/// chain's head made beforehand by [`ensure_chain`]).
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    chain: &str,
    records: &[Record],
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let chain = cut(chain, 100);
    let (mut seq, mut prev) = lock_head(tx, &chain).await?;
    let (host, process) = origin();
    let at = now_sql();
    let mut rows = Vec::with_capacity(records.len());
    for r in records {
        seq += 1;
        let mut row = AuditRow {
            id: 0,
            chain: chain.clone(),
            seq,
            at: at.clone(),
            action: r.action.to_string(),
            actor: cut(&r.actor, 200),
            host: host.clone(),
            process: process.clone(),
            about: About {
                pipeline: r.about.pipeline.as_deref().map(|p| cut(p, 100)),
                content_sha256: r.about.content_sha256.as_deref().map(|s| cut(s, 64)),
                ..r.about.clone()
            },
            written: Some(r.written.render()).filter(|s| !s.is_empty()),
            why: r.why.as_deref().map(|s| cut(s, 500)),
            prev_hash: prev,
            hash: String::new(),
        };
        row.hash = row.digest();
        prev = row.hash.clone();
        rows.push(row);
    }
    // Rows of many ids stay under MariaDB's packet limit.
    let limit = Limit::for_backend(backend_of(tx)).with_bytes(4 * 1024 * 1024);
    insert_all(tx, COLUMNS, &rows, limit).await?;
    sqlx::query("UPDATE oscarflow_audit_head SET seq = ?, hash = ? WHERE chain = ?")
        .bind(seq)
        .bind(prev.as_str())
        .bind(chain.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a read of patient data in a transaction of its own, before the data is shown.
pub async fn record_read(store: &Store, record: Record) -> Result<(), sqlx::Error> {
    ensure_chain(store, ACCESS_CHAIN).await?;
    let mut tx = store.pool.begin().await?;
    append(&mut tx, ACCESS_CHAIN, &[record]).await?;
    tx.commit().await
}

/// A read of patient data by `actor`, about `what`, because `why`.
pub fn read(actor: String, why: String) -> Record {
    Record {
        action: action::READ,
        actor,
        why: Some(why),
        ..Default::default()
    }
}

const SELECT: &str = "SELECT id, chain, seq, at, action, actor, host, process, pipeline, journal_id, content_sha256, part, demographic_no, lab_no, document_no, fax_id, appointment_no, written, why, prev_hash, hash FROM oscarflow_audit";

fn read_row(r: &sqlx::any::AnyRow) -> Result<AuditRow, sqlx::Error> {
    let s = |c: &str| text_column(r, c).map(Option::unwrap_or_default);
    let o = |c: &str| text_column(r, c);
    let i = |c: &str| r.try_get::<Option<i64>, _>(c);
    Ok(AuditRow {
        id: r.try_get("id")?,
        chain: s("chain")?,
        seq: r.try_get("seq")?,
        at: s("at")?,
        action: s("action")?,
        actor: s("actor")?,
        host: s("host")?,
        process: s("process")?,
        about: About {
            pipeline: o("pipeline")?,
            journal_id: i("journal_id")?,
            content_sha256: o("content_sha256")?,
            part: i("part")?,
            demographic_no: i("demographic_no")?,
            lab_no: i("lab_no")?,
            document_no: i("document_no")?,
            fax_id: i("fax_id")?,
            appointment_no: i("appointment_no")?,
        },
        written: o("written")?,
        why: o("why")?,
        prev_hash: s("prev_hash")?,
        hash: s("hash")?,
    })
}

/// What `audit list` shows; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// From this local time on (`YYYY-MM-DD[ HH:MM:SS]`).
    pub since: Option<String>,
    pub demographic_no: Option<i64>,
    pub pipeline: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
}

/// The rows matching `f`, newest first.
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut sql = format!("{SELECT} WHERE 1 = 1");
    if f.since.is_some() {
        sql.push_str(" AND at >= ?");
    }
    if f.demographic_no.is_some() {
        sql.push_str(" AND demographic_no = ?");
    }
    if f.pipeline.is_some() {
        sql.push_str(" AND pipeline = ?");
    }
    if f.action.is_some() {
        sql.push_str(" AND action = ?");
    }
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT {}",
        f.limit.clamp(1, 100_000)
    ));
    let mut q = sqlx::query(&sql);
    if let Some(s) = &f.since {
        q = q.bind(s.trim().to_string());
    }
    if let Some(d) = f.demographic_no {
        q = q.bind(d);
    }
    if let Some(p) = &f.pipeline {
        q = q.bind(p.clone());
    }
    if let Some(a) = &f.action {
        q = q.bind(a.clone());
    }
    q.fetch_all(&store.pool)
        .await?
        .iter()
        .map(read_row)
        .collect()
}

/// Every row of `chain` in `seq` order, a page at a time into `each`.
async fn walk(
    store: &Store,
    chain: &str,
    mut each: impl FnMut(AuditRow) -> bool,
) -> Result<(), sqlx::Error> {
    const PAGE: i64 = 5_000;
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE chain = ? AND seq > ? ORDER BY seq, id LIMIT {PAGE}"
        ))
        .bind(chain)
        .bind(after)
        .fetch_all(&store.pool)
        .await?;
        let n = rows.len() as i64;
        for r in &rows {
            let row = read_row(r)?;
            after = row.seq;
            if !each(row) {
                return Ok(());
            }
        }
        if n < PAGE {
            return Ok(());
        }
    }
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The row's content no longer gives its hash.
    Changed { id: i64, seq: i64 },
    /// Row `seq` is missing (`after`: the id of the row before the gap).
    Removed { seq: i64, after: Option<i64> },
    /// The row does not belong where it is.
    Inserted { id: i64, seq: i64, why: String },
    /// The rows are whole but the head names another last row: the head was moved, or the
    /// chain's rows were rewritten from some row on.
    Head { seq: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed { id, seq } => write!(
                f,
                "row {id} (seq {seq}) was changed: its content no longer gives its hash"
            ),
            Problem::Removed { seq, after: Some(a) } => {
                write!(f, "row seq {seq} was removed (it came after row {a})")
            }
            Problem::Removed { seq, after: None } => {
                write!(f, "row seq {seq} was removed (the chain's first)")
            }
            Problem::Inserted { id, seq, why } => {
                write!(f, "row {id} (seq {seq}) was inserted: {why}")
            }
            Problem::Head { seq } => write!(
                f,
                "the head does not hold the hash of the last row (seq {seq}): the head was changed or the rows were rewritten"
            ),
        }
    }
}

/// What [`verify`] found in one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub rows: u64,
    /// The head's seq and hash (keep the hash elsewhere to compare later).
    pub head_seq: i64,
    pub head_hash: String,
    pub problem: Option<Problem>,
}

/// Walks every chain (see the module docs).
pub async fn verify(store: &Store) -> Result<Vec<ChainReport>, sqlx::Error> {
    let mut heads: Vec<(String, i64, String)> = Vec::new();
    for r in sqlx::query("SELECT chain, seq, hash FROM oscarflow_audit_head ORDER BY chain")
        .fetch_all(&store.pool)
        .await?
    {
        heads.push((
            text_column(&r, 0)?.unwrap_or_default(),
            r.try_get(1)?,
            text_column(&r, 2)?.unwrap_or_default(),
        ));
    }
    // Chains that have rows but no head: every row of them was inserted.
    for r in sqlx::query("SELECT DISTINCT chain FROM oscarflow_audit ORDER BY chain")
        .fetch_all(&store.pool)
        .await?
    {
        let chain = text_column(&r, 0)?.unwrap_or_default();
        if !heads.iter().any(|(c, _, _)| *c == chain) {
            heads.push((chain, 0, GENESIS.to_string()));
        }
    }
    let mut reports = Vec::new();
    for (chain, head_seq, head_hash) in heads {
        let mut expected = 1i64;
        let mut prev = GENESIS.to_string();
        let mut prev_id: Option<i64> = None;
        let mut rows = 0u64;
        let mut problem: Option<Problem> = None;
        walk(store, &chain, |row| {
            rows += 1;
            problem = if row.seq > expected {
                Some(Problem::Removed {
                    seq: expected,
                    after: prev_id,
                })
            } else if row.seq < expected {
                Some(Problem::Inserted {
                    id: row.id,
                    seq: row.seq,
                    why: "its seq repeats an earlier row's".into(),
                })
            } else if row.seq > head_seq {
                Some(Problem::Inserted {
                    id: row.id,
                    seq: row.seq,
                    why: format!("it is beyond the chain's head (seq {head_seq})"),
                })
            } else if row.digest() != row.hash {
                Some(Problem::Changed {
                    id: row.id,
                    seq: row.seq,
                })
            } else if row.prev_hash != prev {
                Some(Problem::Inserted {
                    id: row.id,
                    seq: row.seq,
                    why: "it does not follow the row before it (or that row was replaced)".into(),
                })
            } else {
                None
            };
            expected = row.seq + 1;
            prev = row.hash;
            prev_id = Some(row.id);
            problem.is_none()
        })
        .await?;
        if problem.is_none() && expected - 1 < head_seq {
            problem = Some(Problem::Removed {
                seq: expected,
                after: prev_id,
            });
        } else if problem.is_none() && head_seq > 0 && prev != head_hash {
            problem = Some(Problem::Head { seq: expected - 1 });
        }
        reports.push(ChainReport {
            chain,
            rows,
            head_seq,
            head_hash,
            problem,
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_rows_render_runs_of_ids_and_parse_back_to_every_key() {
        let mut w = Written::default();
        w.ids("measurements", [501, 502, 503, 507]);
        w.add("providerLabRouting", "42/999998");
        w.add("hl7TextInfo", 42);
        w.ids("measurements", [508]);
        w.add("log", "007");
        let s = w.render();
        assert_eq!(
            s,
            "measurements 501-503 507-508; providerLabRouting 42/999998; hl7TextInfo 42; log 007"
        );
        let back = Written::parse(&s);
        assert_eq!(back.pairs(), w.pairs());
    }

    fn row(seq: i64, prev: &str) -> AuditRow {
        let mut r = AuditRow {
            id: seq,
            chain: "pipeline:labs".into(),
            seq,
            at: "2026-12-07 10:00:00".into(),
            action: action::WRITE.into(),
            actor: pipeline_actor("labs"),
            host: "h".into(),
            process: "p".into(),
            about: About {
                pipeline: Some("labs".into()),
                journal_id: Some(seq),
                part: Some(0),
                demographic_no: Some(1001),
                lab_no: Some(seq),
                ..Default::default()
            },
            written: Some(format!("hl7TextMessage {seq}")),
            why: None,
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = r.digest();
        r
    }

    #[test]
    fn every_field_and_the_previous_hash_change_the_digest() {
        let base = row(1, GENESIS);
        let mut variants = vec![];
        let mut r = base.clone();
        r.about.demographic_no = Some(1002);
        variants.push(r);
        let mut r = base.clone();
        r.about.demographic_no = None;
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = "1".repeat(64);
        variants.push(r);
        let mut r = base.clone();
        r.written = Some("hl7TextMessage 2".into());
        variants.push(r);
        let mut r = base.clone();
        r.seq = 2;
        variants.push(r);
        // Moving text between adjacent fields changes it too (length prefixes).
        let mut r = base.clone();
        r.host = "hp".into();
        r.process = String::new();
        variants.push(r);
        for v in variants {
            assert_ne!(v.digest(), base.hash, "{v:?}");
        }
        assert_eq!(base.digest(), base.hash);
    }
}
