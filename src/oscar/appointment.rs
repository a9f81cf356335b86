//! OSCAR's appointment book, written as OSCAR writes it, from scheduling messages (HL7 SIU).
//!
//! **What OSCAR does** (Open-O's `PhsStarHandler`, the SIU handler OSCAR ships, and its
//! appointment screens):
//! - S12 persists one `appointment`: `appointment_date` and `start_time` from the message's
//!   start, `end_time` the **last minute** of the slot (start + duration − 1 minute, as
//!   every OSCAR screen stores it: a 15-minute visit at 09:30 ends at 09:44), `name` the
//!   chart's `LAST,FIRST`, `program_id` 0, `notes`/`remarks`/`resources` empty, `status`
//!   `t` (To Do), `reason` from SCH, `type` SCH-8, `location` from AIL. The filler's
//!   appointment id goes into `other_id` (`table_name` 2 = appointment, key
//!   `patbooking_id` by default, as `PhsStarHandler` keeps it).
//! - Before every change OSCAR's screens copy the row into `appointmentArchive`
//!   (`AppointmentArchiveDao.archiveAppointment`: every column, `appointment_no` the row's
//!   id); a cancel sets `status` to `C` keeping the second letter (OSCAR's status modifier,
//!   e.g. the billed `B`), a no-show `N`; a delete archives the row and removes it
//!   (`appointmentdeletearecord.jsp`). `PhsStarHandler` itself skips the archive and the
//!   modifier — oscarflow follows the screens, so OSCAR's "appointment history" shows every
//!   version.
//! - OSCAR's `log` gets `add`/`update`/`delete`, content `appointment`, `contentId`
//!   `appointment_no=<n>`, the chart, as OSCAR's appointment screens write it.
//!
//! **Where oscarflow is stricter than OSCAR:**
//! - The patient is matched with the lab path's rules ([`super::matching`]: health number,
//!   birth date and sex; never a name-only match). `PhsStarHandler` *creates* a chart when
//!   none matches; oscarflow never does — an unmatched or ambiguous patient is a dead letter
//!   (`patient_unmatched`) with the match's reason. A change (S13–S26) must name the chart
//!   the appointment was booked for.
//! - **Conflicts.** OSCAR's own check (`OscarAppointmentDao.checkForConflict`, commented
//!   out in `PhsStarHandler`) finds only appointments lying entirely inside the new slot.
//!   Here: the same provider, the same day, overlapping time — `start < other_end AND end >
//!   other_start`, with OSCAR's stored last minute turned back into the slot's end, so
//!   adjacent slots (one ends at 09:45, the next starts at 09:45) never conflict — and the
//!   other appointment neither cancelled (`C…`) nor a no-show (`N…`). The check runs in the
//!   transaction that books, after locking the provider's row of `oscarflow_provider_lock`:
//!   two writers of one provider's book (two connections, two daemons) check one after the
//!   other, and never both book one slot.
//! - **Idempotent and ordered.** Every applied message is kept by its SHA-256
//!   (`oscarflow_appointment_message`): a re-delivered one changes nothing. A second S12 for
//!   a filler id already booked changes nothing. A change whose MSH-7 is older than the
//!   version already applied changes nothing (`superseded`). A change for a filler id not
//!   booked yet (an S13 before its S12), or deleted, is a dead letter
//!   (`appointment_unknown`): `dlq retry` applies it once its S12 has arrived. So is a new
//!   S12 for a filler id that was booked and deleted (a re-delivered one changes nothing).
//! - A change (S13/S14) that names no provider keeps the appointment's; one that names
//!   another provider moves it, checked against the new provider's book under its lock.
//!
//! Times: a message time with an offset (`…+0200`) is converted to the clinic's local time
//! (the server's time zone, as OSCAR's own server reads times); one without is taken as
//! the clinic's wall-clock time. A slot that would cross midnight cannot be kept in OSCAR's
//! `appointment_date` + `end_time` and is refused (`malformed`).
//!
//! Every write — OSCAR's rows, our state, the journal row, the audit row, the event the
//! confirmation text is made from — is one transaction.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use serde::Deserialize;
use sqlx::{Any, Row as _, Transaction};

use super::generated_id;
use super::matching::MatchOutcome;
use crate::appointment::Appointment;
use crate::component::ProcessError;
use crate::dead_letter::ReasonCode;
use crate::envelope::Provenance;
use crate::hl7::siu::{SiuEvent, Stamp};
use crate::store::{is_unique_violation, now_sql, text_column, Backend, Store};

/// `other_id.table_name` of an appointment and of a provider (OSCAR's `OtherIdManager`).
pub const OTHER_ID_APPOINTMENT: i64 = 2;
pub const OTHER_ID_PROVIDER: i64 = 3;

/// How AIP-3.1 names an OSCAR provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderBy {
    /// `provider.provider_no` itself.
    ProviderNo,
    /// `provider.ohip_no`: in British Columbia, the MSP billing (practitioner) number.
    #[default]
    OhipNo,
    /// `provider.practitionerNo` (the college licence number).
    PractitionerNo,
    /// An `other_id` row of the provider (`table_name` 3) under `provider_other_key`, as
    /// Open-O's `PhsStarHandler` links its `STAR` ids.
    OtherId,
}

/// What happens to a slot that overlaps another appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// A dead letter (`conflict`), and an MLLP `AR` naming the reason.
    #[default]
    Refuse,
    /// Booked anyway, with a note naming the appointments it overlaps.
    BookAndFlag,
}

/// The sink's settings.
#[derive(Debug, Clone)]
pub struct BookOptions {
    pub provider_by: ProviderBy,
    pub provider_other_key: String,
    /// Used when a message names no provider (no AIP-3.1); `None`: such a message is a dead
    /// letter (`provider_unknown`).
    pub default_provider_no: Option<String>,
    /// The `other_id` key the filler id is kept under.
    pub other_key: String,
    pub on_conflict: OnConflict,
    /// OSCAR's status of a new appointment (`t`, To Do).
    pub booked_status: String,
    /// `appointment.creator`.
    pub creator: String,
    /// Record what the patient should be texted about (`oscarflow_appointment_event`).
    pub confirmations: bool,
}

/// What a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub appointment_no: Option<i64>,
    /// `booked`, `rescheduled`, `modified`, `cancelled`, `deleted`, `no_show`, `unchanged`,
    /// `superseded`.
    pub outcome: &'static str,
    /// Booked over other appointments (`book_and_flag`): their numbers.
    pub overlaps: Vec<i64>,
}

impl Applied {
    fn nothing(appointment_no: Option<i64>, outcome: &'static str) -> Applied {
        Applied {
            appointment_no,
            outcome,
            overlaps: Vec::new(),
        }
    }
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> ProcessError {
    move |e| ProcessError::from_sqlx(context, &e)
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A slot in the clinic's local time: date, start, and OSCAR's stored end (last minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub date: NaiveDate,
    pub start: NaiveTime,
    /// OSCAR's `end_time`: the slot's last minute.
    pub end_stored: NaiveTime,
}

impl Slot {
    /// The slot of a message's start and end (see the module docs on times).
    pub fn of(start: &Stamp, end: &Stamp) -> Result<Slot, ProcessError> {
        let (s, e) = (local(start), local(end));
        let last = e - chrono::Duration::minutes(1);
        if last < s || last.date() != s.date() {
            return Err(ProcessError::data(
                ReasonCode::Malformed,
                "the appointment crosses midnight or is shorter than a minute: OSCAR keeps one day's times",
            ));
        }
        Ok(Slot {
            date: s.date(),
            start: s.time(),
            end_stored: last.time(),
        })
    }

    /// The slot's end, exclusive, as minutes of the day.
    fn end_minute(&self) -> i64 {
        minute_of(self.end_stored) + 1
    }
}

fn minute_of(t: NaiveTime) -> i64 {
    use chrono::Timelike;
    i64::from(t.hour()) * 60 + i64::from(t.minute())
}

/// A message time in the clinic's local time.
fn local(s: &Stamp) -> NaiveDateTime {
    match s.offset_minutes {
        None => s.at,
        Some(m) => match chrono::FixedOffset::east_opt(m * 60)
            .and_then(|o| o.from_local_datetime(&s.at).single())
        {
            Some(t) => t.with_timezone(&chrono::Local).naive_local(),
            None => s.at,
        },
    }
}

/// Whether an existing appointment (`start`, OSCAR's stored `end`) overlaps the slot
/// `[start, end)` in minutes of the day: `start < other_end AND end > other_start`, the
/// other's end being its stored last minute + 1.
pub fn overlaps(slot_start: i64, slot_end: i64, other_start: i64, other_end_stored: i64) -> bool {
    let other_end = other_end_stored.max(other_start) + 1;
    slot_start < other_end && slot_end > other_start
}

/// Whether an OSCAR status frees its slot: cancelled (`C…`) or a no-show (`N…`).
pub fn frees_slot(status: &str) -> bool {
    matches!(status.trim().chars().next(), Some('C') | Some('N'))
}

/// OSCAR's status `code` keeping the old status's modifier (its second letter).
fn with_modifier(code: char, old: &str) -> String {
    let mut s = code.to_string();
    if let Some(m) = old.chars().nth(1) {
        s.push(m);
    }
    s
}

/// MSH-7 as comparable digits (`YYYYMMDDHHMMSS`, padded), for the order of versions.
fn version_key(msh7: &str) -> String {
    let digits: String = msh7
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    if digits.is_empty() {
        return String::new();
    }
    format!("{digits:0<14}")
}

/// Our state of one booked appointment.
struct Booked {
    appointment_no: i64,
    demographic_no: i64,
    state: String,
    message_time: String,
}

/// OSCAR's row, the parts a message sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    provider_no: String,
    date: String,
    start: String,
    end: String,
    location: String,
    kind: String,
    reason: String,
    status: String,
}

fn time_text(t: NaiveTime) -> String {
    t.format("%H:%M:%S").to_string()
}

/// Makes the lock rows `apply` takes (in statements of their own, like the audit chain's
/// head: creating them inside two transactions at once could deadlock them).
async fn ensure_locks(store: &Store, providers: &[String]) -> Result<(), ProcessError> {
    for p in providers {
        let r =
            sqlx::query("INSERT INTO oscarflow_provider_lock (provider_no, taken) VALUES (?, 0)")
                .bind(p)
                .execute(&store.pool)
                .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(db("create the provider's lock row")(e)),
        }
    }
    Ok(())
}

async fn lock_provider(
    tx: &mut Transaction<'static, Any>,
    provider_no: &str,
) -> Result<(), ProcessError> {
    sqlx::query("UPDATE oscarflow_provider_lock SET taken = taken + 1 WHERE provider_no = ?")
        .bind(provider_no)
        .execute(&mut **tx)
        .await
        .map_err(db("lock the provider's book"))?;
    Ok(())
}

/// The OSCAR provider AIP-3.1 names (or the default), by `opts.provider_by`.
async fn resolve_provider(
    store: &Store,
    appt: &Appointment,
    opts: &BookOptions,
) -> Result<Option<String>, ProcessError> {
    let Some(id) = appt
        .siu
        .providers
        .iter()
        .map(|p| p.id.trim())
        .find(|s| !s.is_empty())
    else {
        return Ok(opts.default_provider_no.clone());
    };
    let rows: Vec<String> = match opts.provider_by {
        ProviderBy::ProviderNo => sqlx::query_scalar(
            "SELECT provider_no FROM provider WHERE provider_no = ? AND status = '1'",
        )
        .bind(id)
        .fetch_all(&store.pool)
        .await,
        ProviderBy::OhipNo => {
            sqlx::query_scalar("SELECT provider_no FROM provider WHERE ohip_no = ? AND status = '1'")
                .bind(id)
                .fetch_all(&store.pool)
                .await
        }
        ProviderBy::PractitionerNo => sqlx::query_scalar(
            "SELECT provider_no FROM provider WHERE practitionerNo = ? AND status = '1'",
        )
        .bind(id)
        .fetch_all(&store.pool)
        .await,
        ProviderBy::OtherId => sqlx::query_scalar(
            "SELECT p.provider_no FROM other_id o JOIN provider p ON p.provider_no = o.table_id WHERE o.table_name = ? AND o.other_key = ? AND o.other_id = ? AND o.deleted = 0 AND p.status = '1'",
        )
        .bind(OTHER_ID_PROVIDER)
        .bind(&opts.provider_other_key)
        .bind(id)
        .fetch_all(&store.pool)
        .await,
    }
    .map_err(db("find the provider"))?;
    let how = match opts.provider_by {
        ProviderBy::ProviderNo => "provider_no",
        ProviderBy::OhipNo => "ohip_no (billing number)",
        ProviderBy::PractitionerNo => "practitionerNo",
        ProviderBy::OtherId => "other_id",
    };
    match rows.as_slice() {
        [one] => Ok(Some(one.clone())),
        [] => Err(ProcessError::data(
            ReasonCode::ProviderUnknown,
            format!("no active OSCAR provider has AIP-3.1 as its {how}"),
        )),
        many => Err(ProcessError::data(
            ReasonCode::ProviderUnknown,
            format!(
                "{} active OSCAR providers have AIP-3.1 as their {how}",
                many.len()
            ),
        )),
    }
}

/// Whether the message names a provider (AIP-3.1).
fn names_provider(appt: &Appointment) -> bool {
    appt.siu.providers.iter().any(|p| !p.id.trim().is_empty())
}

/// The chart the message's patient matched, or why it must not be used.
fn matched_chart(appt: &Appointment) -> Result<i64, ProcessError> {
    match &appt.matched {
        Some(MatchOutcome::Matched { demographic_no, .. }) => Ok(*demographic_no),
        Some(other) => Err(ProcessError::data(
            ReasonCode::PatientUnmatched,
            match other.candidates() {
                Some(n) => format!("the patient was not matched: {} ({n} chart(s))", other.label()),
                None => format!("the patient was not matched: {}", other.label()),
            },
        )),
        None => Err(ProcessError::data(
            ReasonCode::PatientUnmatched,
            "the patient was not matched: the pipeline has no match_patient stage with payload = \"appointment\"",
        )),
    }
}

/// Appointments of `provider_no` on the slot's day that overlap it and hold their slot.
async fn conflicts(
    tx: &mut Transaction<'static, Any>,
    provider_no: &str,
    slot: &Slot,
    except: Option<i64>,
) -> Result<Vec<i64>, ProcessError> {
    let rows = sqlx::query(
        "SELECT appointment_no, CAST(start_time AS CHAR) AS s, CAST(end_time AS CHAR) AS e, status FROM appointment WHERE provider_no = ? AND appointment_date = ? AND appointment_no <> ? ORDER BY appointment_no",
    )
    .bind(provider_no)
    .bind(slot.date.format("%Y-%m-%d").to_string())
    .bind(except.unwrap_or(-1))
    .fetch_all(&mut **tx)
    .await
    .map_err(db("read the provider's day"))?;
    let (s, e) = (minute_of(slot.start), slot.end_minute());
    let mut out = Vec::new();
    for r in rows {
        let no: i64 = r
            .try_get("appointment_no")
            .map_err(db("read an appointment"))?;
        let t = |c: &str| -> Option<i64> {
            let v = text_column(&r, c).ok().flatten()?;
            NaiveTime::parse_from_str(v.trim(), "%H:%M:%S")
                .ok()
                .map(minute_of)
        };
        let status = text_column(&r, "status").ok().flatten().unwrap_or_default();
        let (Some(os), Some(oe)) = (t("s"), t("e")) else {
            continue;
        };
        if !frees_slot(&status) && overlaps(s, e, os, oe) {
            out.push(no);
        }
    }
    Ok(out)
}

async fn read_booked(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    other_key: &str,
    filler_id: &str,
) -> Result<Option<Booked>, ProcessError> {
    let lock = if backend == Backend::MySql {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sqlx::query(&format!("SELECT appointment_no, demographic_no, state, message_time FROM oscarflow_appointment WHERE other_key = ? AND filler_id = ?{lock}"))
        .bind(other_key)
        .bind(filler_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read the booked appointment"))?;
    let Some(r) = row else { return Ok(None) };
    let read = || -> Result<Booked, sqlx::Error> {
        Ok(Booked {
            appointment_no: r.try_get::<i64, _>("appointment_no")?,
            demographic_no: r.try_get::<i64, _>("demographic_no")?,
            state: text_column(&r, "state")?.unwrap_or_default(),
            message_time: text_column(&r, "message_time")?.unwrap_or_default(),
        })
    };
    read().map(Some).map_err(db("read the booked appointment"))
}

/// The appointment's row, read with a lock on MariaDB: a plain read would fix the
/// transaction's view of the data (InnoDB's repeatable read) before the provider's book is
/// locked, and the conflict check after the lock would miss a booking committed meanwhile.
/// No plain read may run in the transaction before the provider lock.
async fn read_row(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    appointment_no: i64,
) -> Result<Option<Row>, ProcessError> {
    let lock = if backend == Backend::MySql {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sqlx::query(&format!("SELECT provider_no, CAST(appointment_date AS CHAR) AS d, CAST(start_time AS CHAR) AS s, CAST(end_time AS CHAR) AS e, location, type, reason, status FROM appointment WHERE appointment_no = ?{lock}"))
        .bind(appointment_no)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read the appointment"))?;
    let Some(r) = row else { return Ok(None) };
    let s = |c: &str| text_column(&r, c).map(|v| v.unwrap_or_default());
    let read = || -> Result<Row, sqlx::Error> {
        Ok(Row {
            provider_no: s("provider_no")?,
            date: s("d")?,
            start: s("s")?,
            end: s("e")?,
            location: s("location")?,
            kind: s("type")?,
            reason: s("reason")?,
            status: s("status")?,
        })
    };
    read().map(Some).map_err(db("read the appointment"))
}

/// `appointmentArchive` ← the row as it is now; returns the archive row's id.
async fn archive(
    tx: &mut Transaction<'static, Any>,
    appointment_no: i64,
) -> Result<i64, ProcessError> {
    const COLS: &str = "appointment_no, provider_no, appointment_date, start_time, end_time, name, demographic_no, program_id, notes, reason, location, resources, type, style, billing, status, imported_status, createdatetime, updatedatetime, creator, lastupdateuser, remarks, urgency, creatorSecurityId, bookingSource";
    let r = sqlx::query(&format!(
        "INSERT INTO appointmentArchive ({COLS}) SELECT {COLS} FROM appointment WHERE appointment_no = ?"
    ))
    .bind(appointment_no)
    .execute(&mut **tx)
    .await
    .map_err(db("insert appointmentArchive"))?;
    generated_id(tx, r.last_insert_id(), "appointmentArchive").await
}

/// Everything one applied message writes besides OSCAR's appointment rows.
struct Record<'a> {
    appt: &'a Appointment,
    prov: &'a Provenance,
    demographic_no: i64,
    appointment_no: i64,
    outcome: &'static str,
    log_action: &'static str,
    written: crate::audit::Written,
    detail: String,
    event: Option<(&'static str, Option<NaiveDateTime>)>,
}

fn slot_start(slot: &Slot) -> NaiveDateTime {
    slot.date.and_time(slot.start)
}

/// Applies one scheduling message. See the module docs.
pub async fn apply(
    store: &Store,
    appt: &Appointment,
    prov: &Provenance,
    opts: &BookOptions,
) -> Result<Applied, ProcessError> {
    let siu = &appt.siu;
    // A message applied before changes nothing, whatever came since.
    let seen: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT appointment_no FROM oscarflow_appointment_message WHERE sha256 = ?",
    )
    .bind(&appt.sha256)
    .fetch_optional(&store.pool)
    .await
    .map_err(db("read applied messages"))?;
    if let Some(no) = seen {
        return no_change(
            store,
            appt,
            prov,
            no,
            "unchanged",
            "this message was applied before",
        )
        .await;
    }
    let slot = match (siu.event.carries_slot(), &siu.start, &siu.end) {
        (true, Some(s), Some(e)) => Some(Slot::of(s, e)?),
        (true, _, _) => {
            return Err(ProcessError::data(
                ReasonCode::Malformed,
                "the message has no slot (start and end)",
            ))
        }
        _ => None,
    };
    let chart = matched_chart(appt)?;
    // A change that names no provider keeps the appointment's (the default provider is for
    // new bookings only).
    let provider = match siu.event {
        SiuEvent::S12 => resolve_provider(store, appt, opts).await?,
        SiuEvent::S13 | SiuEvent::S14 if names_provider(appt) => {
            resolve_provider(store, appt, opts).await?
        }
        _ => None,
    };
    if siu.event == SiuEvent::S12 && provider.is_none() {
        return Err(ProcessError::data(
            ReasonCode::ProviderUnknown,
            "the message names no provider (AIP-3.1) and the sink has no default_provider_no",
        ));
    }
    ensure_locks(store, provider.as_slice()).await?;
    let chain = crate::audit::pipeline_chain(&prov.pipeline);
    crate::audit::ensure_chain(store, &chain)
        .await
        .map_err(db("create the audit chain"))?;

    let mut tx = store.pool.begin().await.map_err(db("begin transaction"))?;
    if let Some(p) = &provider {
        lock_provider(&mut tx, p).await?;
    }
    let booked = read_booked(&mut tx, store.backend, &opts.other_key, &siu.filler_id).await?;
    let now = now_sql();
    let result = match (siu.event, booked) {
        (SiuEvent::S12, Some(b)) if b.state == "deleted" => {
            return Err(ProcessError::data(
                ReasonCode::AppointmentUnknown,
                "S12: an appointment with this filler id was booked and deleted; a new booking needs a new filler id",
            ));
        }
        (SiuEvent::S12, Some(b)) => {
            drop(tx);
            return no_change(
                store,
                appt,
                prov,
                Some(b.appointment_no),
                "unchanged",
                "an appointment with this filler id is booked already: a second S12 changes nothing",
            )
            .await;
        }
        (SiuEvent::S12, None) => {
            let (Some(slot), Some(provider)) = (slot, provider) else {
                return unreachable_slot();
            };
            book(
                &mut tx, store, appt, prov, opts, chart, &provider, &slot, &now,
            )
            .await?
        }
        (_, None) => {
            return Err(ProcessError::data(
                ReasonCode::AppointmentUnknown,
                format!(
                    "{}: no appointment with this filler id has been booked (its S12 has not arrived); `dlq retry` applies it once it has",
                    siu.event.as_str()
                ),
            ));
        }
        (_, Some(b)) if b.state == "deleted" => {
            return Err(ProcessError::data(
                ReasonCode::AppointmentUnknown,
                format!(
                    "{}: the appointment with this filler id was deleted",
                    siu.event.as_str()
                ),
            ));
        }
        (_, Some(b)) if b.demographic_no != chart => {
            return Err(ProcessError::data(
                ReasonCode::PatientUnmatched,
                "the message's patient matched another chart than the one the appointment is booked for",
            ));
        }
        (_, Some(b))
            if !version_key(&siu.message_time).is_empty()
                && version_key(&siu.message_time) < version_key(&b.message_time) =>
        {
            drop(tx);
            return no_change(
                store,
                appt,
                prov,
                Some(b.appointment_no),
                "superseded",
                "a later version of this appointment (by MSH-7) was applied already",
            )
            .await;
        }
        (event, Some(b)) => {
            let Some(row) = read_row(&mut tx, store.backend, b.appointment_no).await? else {
                return Err(ProcessError::data(
                    ReasonCode::AppointmentUnknown,
                    "the appointment was removed from OSCAR's book",
                ));
            };
            match event {
                SiuEvent::S13 | SiuEvent::S14 => {
                    let Some(slot) = slot else {
                        return unreachable_slot();
                    };
                    // A provider the message names was locked first thing (its lock row made
                    // before the transaction). Without one the appointment stays with its
                    // provider, whose book is locked now (its row was made by the S12). The
                    // book an appointment leaves needs no lock: leaving frees a slot.
                    let provider = match provider {
                        Some(p) => p,
                        None => {
                            lock_provider(&mut tx, &row.provider_no).await?;
                            row.provider_no.clone()
                        }
                    };
                    match change(
                        &mut tx, store, appt, prov, opts, &b, &row, &provider, &slot, &now,
                    )
                    .await?
                    {
                        Some(o) => o,
                        None => {
                            drop(tx);
                            return no_change(
                                store,
                                appt,
                                prov,
                                Some(b.appointment_no),
                                "unchanged",
                                "the message changes nothing in the appointment",
                            )
                            .await;
                        }
                    }
                }
                SiuEvent::S15 | SiuEvent::S26 => {
                    let (code, outcome, state) = if event == SiuEvent::S15 {
                        ('C', "cancelled", "cancelled")
                    } else {
                        ('N', "no_show", "no_show")
                    };
                    if row.status.starts_with(code) {
                        drop(tx);
                        return no_change(
                            store,
                            appt,
                            prov,
                            Some(b.appointment_no),
                            "unchanged",
                            "the appointment has this status already",
                        )
                        .await;
                    }
                    let archived = archive(&mut tx, b.appointment_no).await?;
                    let status = with_modifier(code, &row.status);
                    sqlx::query("UPDATE appointment SET status = ?, updatedatetime = ? WHERE appointment_no = ?")
                        .bind(&status)
                        .bind(&now)
                        .bind(b.appointment_no)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("update appointment status"))?;
                    set_state(&mut tx, opts, siu, state, &now).await?;
                    let mut written = crate::audit::Written::default();
                    written.add("appointmentArchive", archived);
                    written.add("appointment", b.appointment_no);
                    let starts = parse_row_start(&row);
                    Record {
                        appt,
                        prov,
                        demographic_no: chart,
                        appointment_no: b.appointment_no,
                        outcome,
                        log_action: super::log::log_const::UPDATE,
                        written,
                        detail: format!("{} status {status}", siu.event.as_str()),
                        event: (event == SiuEvent::S15 && !frees_slot(&row.status))
                            .then_some(("cancelled", starts)),
                    }
                    .into()
                }
                SiuEvent::S17 => {
                    let archived = archive(&mut tx, b.appointment_no).await?;
                    sqlx::query("DELETE FROM appointment WHERE appointment_no = ?")
                        .bind(b.appointment_no)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("delete appointment"))?;
                    set_state(&mut tx, opts, siu, "deleted", &now).await?;
                    let mut written = crate::audit::Written::default();
                    written.add("appointmentArchive", archived);
                    written.add("appointment", format!("{} deleted", b.appointment_no));
                    let starts = parse_row_start(&row);
                    Record {
                        appt,
                        prov,
                        demographic_no: chart,
                        appointment_no: b.appointment_no,
                        outcome: "deleted",
                        log_action: super::log::log_const::DELETE,
                        written,
                        detail: "S17 removed from the book (archived first)".into(),
                        event: (!frees_slot(&row.status)).then_some(("cancelled", starts)),
                    }
                    .into()
                }
                SiuEvent::S12 => unreachable_slot()?,
            }
        }
    };
    finish(tx, store, opts, result, &now).await
}

/// A state no valid path reaches, as an error rather than a panic.
fn unreachable_slot<T>() -> Result<T, ProcessError> {
    Err(ProcessError::fatal(
        "appointment: a slot or provider checked above is missing",
    ))
}

fn parse_row_start(row: &Row) -> Option<NaiveDateTime> {
    let d = NaiveDate::parse_from_str(row.date.trim(), "%Y-%m-%d").ok()?;
    let t = NaiveTime::parse_from_str(row.start.trim(), "%H:%M:%S").ok()?;
    Some(d.and_time(t))
}

async fn set_state(
    tx: &mut Transaction<'static, Any>,
    opts: &BookOptions,
    siu: &crate::hl7::siu::SiuMessage,
    state: &str,
    now: &str,
) -> Result<(), ProcessError> {
    sqlx::query("UPDATE oscarflow_appointment SET state = ?, message_time = ?, updated_at = ? WHERE other_key = ? AND filler_id = ?")
        .bind(state)
        .bind(cut(&siu.message_time, 40))
        .bind(now)
        .bind(&opts.other_key)
        .bind(&siu.filler_id)
        .execute(&mut **tx)
        .await
        .map_err(db("update oscarflow_appointment"))?;
    Ok(())
}

fn refuse_or_flag(opts: &BookOptions, overlaps: &[i64]) -> Result<(), ProcessError> {
    if !overlaps.is_empty() && opts.on_conflict == OnConflict::Refuse {
        let list = overlaps
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ProcessError::data(
            ReasonCode::Conflict,
            format!("the slot overlaps the provider's appointment(s) {list}"),
        ));
    }
    Ok(())
}

fn flag_note(overlaps: &[i64]) -> String {
    if overlaps.is_empty() {
        return String::new();
    }
    let list = overlaps
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    cut(&format!("oscarflow: overlaps appointment(s) {list}"), 255)
}

/// The chart's name as OSCAR's appointment keeps it: `LAST,FIRST`.
async fn chart_name(
    tx: &mut Transaction<'static, Any>,
    demographic_no: i64,
) -> Result<String, ProcessError> {
    let row = sqlx::query("SELECT last_name, first_name FROM demographic WHERE demographic_no = ?")
        .bind(demographic_no)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read the chart's name"))?;
    Ok(row
        .map(|r| {
            let s = |c: &str| text_column(&r, c).ok().flatten().unwrap_or_default();
            format!("{},{}", s("last_name"), s("first_name"))
        })
        .map(|n| cut(&n, 50))
        .unwrap_or_default())
}

fn location(appt: &Appointment) -> String {
    cut(
        appt.siu
            .locations
            .first()
            .map(|l| l.name.as_str())
            .unwrap_or(""),
        30,
    )
}

#[allow(clippy::too_many_arguments)]
async fn book<'a>(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    appt: &'a Appointment,
    prov: &'a Provenance,
    opts: &BookOptions,
    chart: i64,
    provider: &str,
    slot: &Slot,
    now: &str,
) -> Result<Outcome<'a>, ProcessError> {
    let siu = &appt.siu;
    let overlaps = conflicts(tx, provider, slot, None).await?;
    refuse_or_flag(opts, &overlaps)?;
    let name = chart_name(tx, chart).await?;
    let r = sqlx::query("INSERT INTO appointment (provider_no, appointment_date, start_time, end_time, name, demographic_no, program_id, notes, reason, location, resources, type, status, createdatetime, updatedatetime, creator, remarks) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, '', ?, ?, ?, ?, ?, '')")
        .bind(provider)
        .bind(slot.date.format("%Y-%m-%d").to_string())
        .bind(time_text(slot.start))
        .bind(time_text(slot.end_stored))
        .bind(&name)
        .bind(chart)
        .bind(flag_note(&overlaps))
        .bind(cut(&siu.reason, 80))
        .bind(location(appt))
        .bind(cut(&siu.appointment_type, 50))
        .bind(&opts.booked_status)
        .bind(now)
        .bind(now)
        .bind(cut(&opts.creator, 50))
        .execute(&mut **tx)
        .await
        .map_err(db("insert appointment"))?;
    let appointment_no = generated_id(tx, r.last_insert_id(), "appointment").await?;
    let r = sqlx::query("INSERT INTO other_id (table_name, table_id, other_key, other_id, deleted) VALUES (?, ?, ?, ?, 0)")
        .bind(OTHER_ID_APPOINTMENT)
        .bind(appointment_no.to_string())
        .bind(cut(&opts.other_key, 30))
        .bind(cut(&siu.filler_id, 30))
        .execute(&mut **tx)
        .await
        .map_err(db("insert other_id"))?;
    let other_id = generated_id(tx, r.last_insert_id(), "other_id").await?;
    let r = sqlx::query("INSERT INTO oscarflow_appointment (other_key, filler_id, appointment_no, demographic_no, state, message_time, pipeline, created_at, updated_at) VALUES (?, ?, ?, ?, 'booked', ?, ?, ?, ?)")
        .bind(&opts.other_key)
        .bind(cut(&siu.filler_id, 100))
        .bind(appointment_no)
        .bind(chart)
        .bind(cut(&siu.message_time, 40))
        .bind(cut(&prov.pipeline, 100))
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await;
    if let Err(e) = r {
        // Another writer booked this filler id first: nothing of ours may commit.
        if is_unique_violation(&e) {
            return Err(ProcessError::transient(
                "another writer booked this filler id at the same time; retried",
            ));
        }
        return Err(db("insert oscarflow_appointment")(e));
    }
    let _ = store;
    let mut written = crate::audit::Written::default();
    written.add("appointment", appointment_no);
    written.add("other_id", other_id);
    Ok(Outcome(
        Record {
            appt,
            prov,
            demographic_no: chart,
            appointment_no,
            outcome: "booked",
            log_action: super::log::log_const::ADD,
            written,
            detail: format!(
                "S12 booked {} {}-{} with provider {provider}",
                slot.date,
                time_text(slot.start),
                time_text(slot.end_stored)
            ),
            event: Some(("booked", Some(slot_start(slot)))),
        },
        overlaps,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn change<'a>(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    appt: &'a Appointment,
    prov: &'a Provenance,
    opts: &BookOptions,
    b: &Booked,
    row: &Row,
    provider: &str,
    slot: &Slot,
    now: &str,
) -> Result<Option<Outcome<'a>>, ProcessError> {
    let siu = &appt.siu;
    let new = Row {
        provider_no: provider.to_string(),
        date: slot.date.format("%Y-%m-%d").to_string(),
        start: time_text(slot.start),
        end: time_text(slot.end_stored),
        location: location(appt),
        kind: cut(&siu.appointment_type, 50),
        reason: cut(&siu.reason, 80),
        status: row.status.clone(),
    };
    if &new == row {
        return Ok(None);
    }
    let moved = (
        new.provider_no.as_str(),
        new.date.as_str(),
        new.start.as_str(),
        new.end.as_str(),
    ) != (
        row.provider_no.as_str(),
        row.date.as_str(),
        row.start.as_str(),
        row.end.as_str(),
    );
    let overlaps = if moved && !frees_slot(&row.status) {
        let o = conflicts(tx, provider, slot, Some(b.appointment_no)).await?;
        refuse_or_flag(opts, &o)?;
        o
    } else {
        Vec::new()
    };
    let archived = archive(tx, b.appointment_no).await?;
    let mut q = String::from("UPDATE appointment SET provider_no = ?, appointment_date = ?, start_time = ?, end_time = ?, location = ?, type = ?, reason = ?, updatedatetime = ?");
    if !overlaps.is_empty() {
        q.push_str(", notes = ?");
    }
    q.push_str(" WHERE appointment_no = ?");
    let mut query = sqlx::query(&q)
        .bind(&new.provider_no)
        .bind(&new.date)
        .bind(&new.start)
        .bind(&new.end)
        .bind(&new.location)
        .bind(&new.kind)
        .bind(&new.reason)
        .bind(now);
    if !overlaps.is_empty() {
        query = query.bind(flag_note(&overlaps));
    }
    query
        .bind(b.appointment_no)
        .execute(&mut **tx)
        .await
        .map_err(db("update appointment"))?;
    set_state(tx, opts, siu, &b.state, now).await?;
    let _ = store;
    let mut written = crate::audit::Written::default();
    written.add("appointmentArchive", archived);
    written.add("appointment", b.appointment_no);
    let outcome = if siu.event == SiuEvent::S13 {
        "rescheduled"
    } else {
        "modified"
    };
    Ok(Some(Outcome(
        Record {
            appt,
            prov,
            demographic_no: b.demographic_no,
            appointment_no: b.appointment_no,
            outcome,
            log_action: super::log::log_const::UPDATE,
            written,
            detail: format!(
                "{} now {} {}-{} with provider {provider}",
                siu.event.as_str(),
                new.date,
                new.start,
                new.end
            ),
            // The patient hears of a new time or provider, not of a changed note.
            event: (moved && !frees_slot(&row.status))
                .then_some(("rescheduled", Some(slot_start(slot)))),
        },
        overlaps,
    )))
}

/// Writes what every applied message leaves: the message's key, OSCAR's `log` row, the
/// confirmation event, the journal row and the audit row; then commits.
async fn finish(
    mut tx: Transaction<'static, Any>,
    store: &Store,
    opts: &BookOptions,
    result: Outcome<'_>,
    now: &str,
) -> Result<Applied, ProcessError> {
    let Outcome(rec, overlaps) = result;
    let (appt, prov) = (rec.appt, rec.prov);
    sqlx::query("INSERT INTO oscarflow_appointment_message (sha256, appointment_no, event, outcome, applied_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&appt.sha256)
        .bind(rec.appointment_no)
        .bind(appt.siu.event.as_str())
        .bind(rec.outcome)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("insert oscarflow_appointment_message"))?;
    if let (true, Some((event, starts))) = (opts.confirmations, rec.event) {
        sqlx::query("INSERT INTO oscarflow_appointment_event (appointment_no, demographic_no, event, starts_at, texted, created_at) VALUES (?, ?, ?, ?, 0, ?)")
            .bind(rec.appointment_no)
            .bind(rec.demographic_no)
            .bind(event)
            .bind(starts.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("insert oscarflow_appointment_event"))?;
    }
    let entry = crate::journal::Entry {
        kind: Some(crate::journal::Kind::Appointment),
        part: Some(appt.index),
        message_type: Some(format!("SIU^{}", appt.siu.event.as_str())),
        control_id: Some(appt.siu.control_id.clone()).filter(|s| !s.is_empty()),
        accession: Some(appt.siu.filler_id.clone()),
        outcome: crate::journal::outcome::IMPORTED,
        match_outcome: Some("matched"),
        detail: Some(if overlaps.is_empty() {
            format!("{}: {}", rec.outcome, rec.detail)
        } else {
            format!(
                "{}: {} (overlaps {overlaps:?}: flagged)",
                rec.outcome, rec.detail
            )
        }),
        demographic_no: Some(rec.demographic_no),
        appointment_no: Some(rec.appointment_no),
        ..Default::default()
    };
    let journal_id = crate::journal::record_files_ids(
        &mut tx,
        (store.backend, store.insert_returning),
        &[(prov, &[entry])],
    )
    .await
    .map_err(db("insert oscarflow_journal"))?
    .first()
    .copied();
    let data = format!(
        "oscarflow pipeline={} journal={} SIU^{} status={}",
        prov.pipeline,
        journal_id.unwrap_or_default(),
        appt.siu.event.as_str(),
        rec.outcome
    );
    let log = super::log::LogRow {
        date_time: now.to_string(),
        provider_no: "-1".to_string(),
        action: rec.log_action,
        content: Some(super::log::log_const::CON_APPT),
        content_id: Some(format!("appointment_no={}", rec.appointment_no)),
        demographic_no: Some(rec.demographic_no),
        data,
    };
    let keys = super::log::write(&mut tx, store.backend, &[log])
        .await
        .map_err(db("insert log"))?;
    let mut written = rec.written;
    for k in keys {
        written.add("log", k);
    }
    let record = crate::audit::Record {
        action: crate::audit::action::WRITE,
        actor: crate::audit::pipeline_actor(&prov.pipeline),
        about: crate::audit::About {
            pipeline: Some(prov.pipeline.to_string()),
            journal_id,
            content_sha256: Some(prov.sha256_hex()),
            part: Some(i64::from(appt.index)),
            demographic_no: Some(rec.demographic_no),
            appointment_no: Some(rec.appointment_no),
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
    Ok(Applied {
        appointment_no: Some(rec.appointment_no),
        outcome: rec.outcome,
        overlaps,
    })
}

/// A record and the appointments it was booked over.
struct Outcome<'a>(Record<'a>, Vec<i64>);

impl<'a> From<Record<'a>> for Outcome<'a> {
    fn from(r: Record<'a>) -> Self {
        Outcome(r, Vec::new())
    }
}

/// A message that changes nothing: its key and its journal row (nothing of OSCAR's).
async fn no_change(
    store: &Store,
    appt: &Appointment,
    prov: &Provenance,
    appointment_no: Option<i64>,
    outcome: &'static str,
    why: &str,
) -> Result<Applied, ProcessError> {
    let mut tx = store.pool.begin().await.map_err(db("begin transaction"))?;
    let r = sqlx::query("INSERT INTO oscarflow_appointment_message (sha256, appointment_no, event, outcome, applied_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&appt.sha256)
        .bind(appointment_no)
        .bind(appt.siu.event.as_str())
        .bind(outcome)
        .bind(now_sql())
        .execute(&mut *tx)
        .await;
    match r {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {} // known already: a re-delivery
        Err(e) => return Err(db("insert oscarflow_appointment_message")(e)),
    }
    let entry = crate::journal::Entry {
        kind: Some(crate::journal::Kind::Appointment),
        part: Some(appt.index),
        message_type: Some(format!("SIU^{}", appt.siu.event.as_str())),
        control_id: Some(appt.siu.control_id.clone()).filter(|s| !s.is_empty()),
        accession: Some(appt.siu.filler_id.clone()),
        outcome: crate::journal::outcome::DUPLICATE,
        detail: Some(format!("{outcome}: {why}")),
        appointment_no,
        ..Default::default()
    };
    crate::journal::record(&mut tx, prov, &[entry])
        .await
        .map_err(db("insert oscarflow_journal"))?;
    tx.commit().await.map_err(db("commit"))?;
    Ok(Applied::nothing(appointment_no, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_slots_do_not_overlap_and_one_shared_minute_does() {
        // The other: 09:00-09:14 stored (09:00-09:15).
        let (os, oe) = (9 * 60, 9 * 60 + 14);
        assert!(
            !overlaps(9 * 60 + 15, 9 * 60 + 30, os, oe),
            "starts at its end"
        );
        assert!(!overlaps(8 * 60 + 45, 9 * 60, os, oe), "ends at its start");
        assert!(overlaps(9 * 60 + 14, 9 * 60 + 30, os, oe), "one minute");
        assert!(
            overlaps(8 * 60 + 45, 9 * 60 + 1, os, oe),
            "one minute before"
        );
        assert!(overlaps(9 * 60 + 5, 9 * 60 + 10, os, oe), "inside");
        assert!(overlaps(8 * 60, 10 * 60, os, oe), "around");
        assert!(overlaps(9 * 60, 9 * 60 + 15, os, oe), "identical");
    }

    #[test]
    fn cancelled_and_no_show_statuses_free_their_slot_and_keep_their_modifier() {
        for s in ["C", "CB", "N", "NS"] {
            assert!(frees_slot(s), "{s}");
        }
        for s in ["t", "T", "H", "HS", "B", "", "h"] {
            assert!(!frees_slot(s), "{s}");
        }
        assert_eq!(with_modifier('C', "tB"), "CB");
        assert_eq!(with_modifier('N', "t"), "N");
    }

    #[test]
    fn oscar_stores_the_last_minute_and_refuses_a_slot_over_midnight() {
        let st = |s: &str| Stamp::parse(s).unwrap();
        let slot = Slot::of(&st("20261215093000"), &st("20261215094500")).unwrap();
        assert_eq!(slot.start.to_string(), "09:30:00");
        assert_eq!(slot.end_stored.to_string(), "09:44:00");
        assert_eq!(slot.end_minute(), 9 * 60 + 45);
        let late = Slot::of(&st("20261215233000"), &st("20261216000000")).unwrap();
        assert_eq!(late.end_stored.to_string(), "23:59:00");
        assert!(Slot::of(&st("20261215233000"), &st("20261216003000")).is_err());
    }

    #[test]
    fn message_times_order_by_their_digits() {
        assert!(version_key("20261201083000") < version_key("202612010831"));
        assert_eq!(version_key("2026120108"), "20261201080000");
        assert_eq!(version_key(""), "");
        assert_eq!(version_key("20261201083000+0200"), "20261201083000");
    }
}
