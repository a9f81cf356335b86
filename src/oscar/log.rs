//! OSCAR's own audit log (`log`): the rows OSCAR writes for what oscarflow does, so that
//! OSCAR's Security Log screen (`admin/logReport.jsp`) and a chart's audit page
//! (`demographicAudit.jsp`) show oscarflow's work beside everyone else's.
//!
//! What OSCAR writes, from its source (Open-O and OSCAR 19):
//! - a lab uploaded through OSCAR's lab upload web service (`LabUploadWs`, the path lab
//!   clients such as Expedius use): `LogAction.addLogSynchronous(loggedInInfo,
//!   "LabUploadWs.importLab", "fileUploadCheckId=" + id)` — the uploading provider, the
//!   action, the data, and nothing in `content`/`contentId`. One row per uploaded **file**
//!   ([`lab_upload`]). OSCAR's own upload screens write no row at all.
//! - that row is invisible on OSCAR's screens: the Security Log lists `content LIKE '%'`,
//!   which no NULL matches, and the chart's audit skips rows with neither `content` nor
//!   `contentId`. So each **lab** also gets the row OSCAR writes when it adds a record of a
//!   kind (`LogConst.ADD = "add"`, `LogConst.CON_HL7_LAB = "lab"`, `contentId` the lab
//!   number, the chart): [`lab_added`]. Its `data` names oscarflow, the pipeline and the
//!   journal row, never patient data.
//! - a document filed by OSCAR's document upload (`PDFHandler`/`AddEditDocumentAction`):
//!   `provider_no` of the uploader (`-1` for the system), `action = "add"`,
//!   `content = "document"`, `contentId` the document number: [`document_added`].
//!
//! `dateTime` is the database's local time (`now_sql`), as OSCAR's `new Date()` is the
//! server's; `ip` stays NULL (no request), `securityId` NULL (no OSCAR login).
//!
//! oscarflow only inserts into `log` (its grant is `INSERT`: OSCAR's log of everyone else's
//! work stays unreadable to it), so the audit trail names a `log` row by what identifies
//! it ([`LogRow::key`]) rather than by its id, which MariaDB would return only to an
//! account allowed to read the table.

use sqlx::{Any, Transaction};

use crate::store::rows::{insert_all, Limit, Row, Q};
use crate::store::Backend;

/// One `log` row.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub date_time: String,
    pub provider_no: String,
    pub action: &'static str,
    pub content: Option<&'static str>,
    pub content_id: Option<String>,
    pub demographic_no: Option<i64>,
    pub data: String,
}

/// OSCAR's `LogConst` values used here.
pub mod log_const {
    pub const ADD: &str = "add";
    pub const CON_HL7_LAB: &str = "lab";
    pub const CON_DOCUMENT: &str = "document";
    pub const CON_FAX: &str = "fax";
    pub const UPDATE: &str = "update";
    pub const DELETE: &str = "delete";
    pub const CON_APPT: &str = "appointment";
    /// `LabUploadWs.importLab`'s action.
    pub const LAB_UPLOAD_WS: &str = "LabUploadWs.importLab";
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The row OSCAR's lab upload web service writes for an uploaded file.
pub fn lab_upload(provider_no: &str, upload_id: i64, now: &str) -> LogRow {
    LogRow {
        date_time: now.to_string(),
        provider_no: cut(provider_no, 10),
        action: log_const::LAB_UPLOAD_WS,
        content: None,
        content_id: None,
        demographic_no: None,
        data: format!("fileUploadCheckId={upload_id}"),
    }
}

/// The row that shows a lab on OSCAR's Security Log and on its chart's audit.
pub fn lab_added(
    provider_no: &str,
    lab_no: i64,
    demographic_no: Option<i64>,
    data: String,
    now: &str,
) -> LogRow {
    LogRow {
        date_time: now.to_string(),
        provider_no: cut(provider_no, 10),
        action: log_const::ADD,
        content: Some(log_const::CON_HL7_LAB),
        content_id: Some(lab_no.to_string()),
        demographic_no,
        data,
    }
}

/// The row OSCAR's document upload writes for a new document (system provider `-1`).
pub fn document_added(document_no: i64, data: String, now: &str) -> LogRow {
    LogRow {
        date_time: now.to_string(),
        provider_no: "-1".to_string(),
        action: log_const::ADD,
        content: Some(log_const::CON_DOCUMENT),
        content_id: Some(document_no.to_string()),
        demographic_no: None,
        data,
    }
}

/// A change of a fax's status in OSCAR's `faxes` (sent, completed, failed).
pub fn fax_status(fax_id: i64, demographic_no: Option<i64>, data: String, now: &str) -> LogRow {
    LogRow {
        date_time: now.to_string(),
        provider_no: "-1".to_string(),
        action: log_const::UPDATE,
        content: Some(log_const::CON_FAX),
        content_id: Some(fax_id.to_string()),
        demographic_no,
        data,
    }
}

const COLUMNS: &str =
    "INSERT INTO log (dateTime, provider_no, action, content, contentId, demographic_no, data)";

impl Row for LogRow {
    const PARAMS: usize = 7;
    const VALUES: &'static str = "(?, ?, ?, ?, ?, ?, ?)";
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.date_time.as_str())
            .bind(self.provider_no.as_str())
            .bind(self.action)
            .bind(self.content)
            .bind(self.content_id.as_deref())
            .bind(self.demographic_no)
            .bind(self.data.as_str())
    }
}

impl LogRow {
    /// What identifies the row among oscarflow's (the audit trail's key for it):
    /// `action/content/contentId` (`add/lab/42`), or `action/data` for a row without
    /// content (`LabUploadWs.importLab/fileUploadCheckId=17`); a status row adds the status
    /// its `data` ends with (`update/fax/7/SENT`).
    pub fn key(&self) -> String {
        match (self.content, &self.content_id) {
            (Some(c), Some(id)) if self.action == log_const::UPDATE => {
                let status = self.data.rsplit(' ').next().unwrap_or("");
                format!("{}/{c}/{id}/{status}", self.action)
            }
            (Some(c), Some(id)) => format!("{}/{c}/{id}", self.action),
            _ => format!("{}/{}", self.action, self.data.replace([' ', ';'], "_")),
        }
    }
}

/// Writes `rows` in `tx`; returns their keys ([`LogRow::key`]) in order.
pub async fn write(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    rows: &[LogRow],
) -> Result<Vec<String>, sqlx::Error> {
    insert_all(tx, COLUMNS, rows, Limit::for_backend(backend)).await?;
    Ok(rows.iter().map(LogRow::key).collect())
}
