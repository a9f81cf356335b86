//! Error classification shared by every runtime component.
//!
//! The principal type is [`ErrorKind`]. Every runtime error in oscarflow implements
//! [`Classify`], and the topology decides from `kind()` alone — never from message text —
//! whether to dead-letter (`Data`), retry with backoff (`Transient`) or stop the component
//! (`Fatal`). Error texts name positions, ids and hashes, never PHI.

use std::fmt;

/// How the topology must react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The message itself is bad: reject it to the dead-letter store, never retry.
    Data,
    /// The world is temporarily unhappy (database down, lock timeout): retry with backoff,
    /// then dead-letter when the retry budget is spent.
    Transient,
    /// The component cannot go on (misconfiguration, schema missing): stop it and report.
    Fatal,
}

impl ErrorKind {
    /// Stable lower-case name, safe as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Data => "data",
            ErrorKind::Transient => "transient",
            ErrorKind::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every runtime error type.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// Classifies a database error. Connection-level problems and lock conflicts are transient;
/// constraint violations and bad data are data errors; a missing table or column is fatal
/// (the schema is wrong and no retry will fix it).
pub fn classify_sqlx(err: &sqlx::Error) -> ErrorKind {
    use sqlx::Error as E;
    match err {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => {
            ErrorKind::Transient
        }
        E::Protocol(_) => ErrorKind::Transient,
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // MySQL/MariaDB error numbers (as SQLSTATE is too coarse) and SQLite result codes.
            let mysql_errno = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            if let Some(n) = mysql_errno {
                return match n {
                    // lock wait timeout, deadlock, too many connections, server gone/lost,
                    // read-only (failover), query interrupted
                    1205 | 1213 | 1040 | 2006 | 2013 | 1290 | 1317 | 1927 | 1053 => {
                        ErrorKind::Transient
                    }
                    // no such table / column / database, access denied
                    1146 | 1054 | 1049 | 1044 | 1045 | 1142 => ErrorKind::Fatal,
                    // data too long, incorrect value, constraint violation
                    _ => ErrorKind::Data,
                };
            }
            match code.as_str() {
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL (disk full is waited out)
                "5" | "6" | "10" | "13" | "517" | "261" => ErrorKind::Transient,
                _ if db.message().contains("no such table")
                    || db.message().contains("no such column") =>
                {
                    ErrorKind::Fatal
                }
                _ => ErrorKind::Data,
            }
        }
        E::Configuration(_) | E::Migrate(_) => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    }
}

/// Whether `err` says the database itself is unavailable — unreachable, restarting, out of
/// connections, read-only (a failover), or holding a lock past its wait — rather than that
/// one statement failed. Such an outage is waited out with the pipeline's intake held, never
/// turned into dead letters ([`crate::topology::run`]).
pub fn is_database_outage(err: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match err {
        E::Io(_) | E::PoolTimedOut | E::WorkerCrashed | E::Tls(_) => true,
        E::Database(db) => {
            match db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number())
            {
                // too many connections, server gone/lost, read-only, connection killed,
                // shutdown in progress, lock wait timeout
                Some(n) => matches!(n, 1040 | 2006 | 2013 | 1290 | 1927 | 1053 | 1205),
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL
                None => matches!(db.code().as_deref(), Some("5" | "6" | "13" | "517" | "261")),
            }
        }
        _ => false,
    }
}

/// A PHI-free one-line description of a database error: the driver's error code and a
/// coarse category. Database messages can echo bound values (e.g. "Duplicate entry '…'"),
/// so the server's message text is never carried into our errors or logs.
pub fn describe_sqlx(err: &sqlx::Error) -> String {
    use sqlx::Error as E;
    match err {
        E::Database(db) => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number().to_string());
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            format!(
                "database error (code {}{})",
                number.unwrap_or(code),
                match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => ", unique violation",
                    sqlx::error::ErrorKind::ForeignKeyViolation => ", foreign key violation",
                    sqlx::error::ErrorKind::NotNullViolation => ", not-null violation",
                    sqlx::error::ErrorKind::CheckViolation => ", check violation",
                    _ => "",
                }
            )
        }
        E::Io(e) => format!("database i/o error ({:?})", e.kind()),
        E::PoolTimedOut => "database pool timed out".into(),
        E::PoolClosed => "database pool closed".into(),
        E::RowNotFound => "row not found".into(),
        E::ColumnNotFound(c) => format!("column not found: {c}"),
        E::ColumnDecode { index, .. } => format!("column decode failed at {index}"),
        E::Tls(_) => "database tls error".into(),
        E::Protocol(_) => "database protocol error".into(),
        E::Configuration(_) => "database configuration error".into(),
        E::Migrate(m) => format!("migration error: {m}"),
        other => format!("database error ({})", std::any::type_name_of_val(other)),
    }
}

/// Why a message was rejected. A closed set: it is a metric label and a CLI filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReasonCode {
    /// The input had no bytes.
    EmptyInput,
    /// The input holds no HL7 message (no `MSH` segment).
    NotHl7,
    /// The bytes do not form a readable HL7 message (bad MSH, bad separators).
    Malformed,
    /// A segment the lab import needs (PID, OBR) is missing: typically a truncated message.
    MissingSegment,
    /// Over the configured size limit.
    TooLarge,
    /// A message type this pipeline does not import.
    UnsupportedMessage,
    /// The import was refused by the database for this message's data.
    ImportRejected,
    /// A transient failure persisted through every retry.
    RetriesExhausted,
    /// A text message's phone number (or a fax's destination) is not a usable North
    /// American number.
    InvalidPhone,
    /// An outbound fax's document is missing, empty or unreadable.
    DocumentUnavailable,
    /// RingCentral refused the request for this message's data.
    Refused,
    /// RingCentral accepted the message but could not deliver it.
    DeliveryFailed,
    /// A message that must name one chart (an appointment) matched none or several: the
    /// match outcome says why. Never filed by a guess.
    PatientUnmatched,
    /// The appointment's provider is not one OSCAR knows by the configured identifier.
    ProviderUnknown,
    /// The slot overlaps another appointment of the provider that is not cancelled or a
    /// no-show.
    Conflict,
    /// The message changes an appointment oscarflow has not booked (an S13 before its S12)
    /// or one that was deleted.
    AppointmentUnknown,
}

impl ReasonCode {
    pub const ALL: &'static [ReasonCode] = &[
        ReasonCode::EmptyInput,
        ReasonCode::NotHl7,
        ReasonCode::Malformed,
        ReasonCode::MissingSegment,
        ReasonCode::TooLarge,
        ReasonCode::UnsupportedMessage,
        ReasonCode::ImportRejected,
        ReasonCode::RetriesExhausted,
        ReasonCode::InvalidPhone,
        ReasonCode::DocumentUnavailable,
        ReasonCode::Refused,
        ReasonCode::DeliveryFailed,
        ReasonCode::PatientUnmatched,
        ReasonCode::ProviderUnknown,
        ReasonCode::Conflict,
        ReasonCode::AppointmentUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::EmptyInput => "empty_input",
            ReasonCode::NotHl7 => "not_hl7",
            ReasonCode::Malformed => "malformed",
            ReasonCode::MissingSegment => "missing_segment",
            ReasonCode::TooLarge => "too_large",
            ReasonCode::UnsupportedMessage => "unsupported_message",
            ReasonCode::ImportRejected => "import_rejected",
            ReasonCode::RetriesExhausted => "retries_exhausted",
            ReasonCode::InvalidPhone => "invalid_phone",
            ReasonCode::DocumentUnavailable => "document_unavailable",
            ReasonCode::Refused => "refused",
            ReasonCode::DeliveryFailed => "delivery_failed",
            ReasonCode::PatientUnmatched => "patient_unmatched",
            ReasonCode::ProviderUnknown => "provider_unknown",
            ReasonCode::Conflict => "conflict",
            ReasonCode::AppointmentUnknown => "appointment_unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_or_exhausted_database_is_an_outage_and_a_statement_error_is_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_database_outage(&io));
        assert!(is_database_outage(&sqlx::Error::PoolTimedOut));
        assert!(is_database_outage(&sqlx::Error::WorkerCrashed));
        assert!(!is_database_outage(&sqlx::Error::RowNotFound));
        assert!(!is_database_outage(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
        assert!(!is_database_outage(&sqlx::Error::PoolClosed));
    }
}
