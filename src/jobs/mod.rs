//! Payloads of the outbound queues: a row of one of OSCAR's queue tables, claimed by a queue
//! source ([`crate::sources::queue`]), for a sink to act on.
//!
//! A job carries ids and the step to take, never the document, the number or a text: the
//! sink reads those from OSCAR's row when it acts (so a re-driven job sends what the row says
//! now), and a job is safe to show in a tap, a log line or a dead letter.

pub mod claim;
mod error;

pub use error::{release_reason, ringcentral_fatal, OutboundError, OutboundReason};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::envelope::RawBytes;
use crate::payload::capabilities::{Archivable, ArchiveBody};
use crate::payload::capabilities::{Keyed, OrderKey};

/// One fax of OSCAR's outbound `faxes` queue, claimed for a send (or a look-up or status
/// poll of one already sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaxJob {
    /// OSCAR's `faxes.id`.
    pub fax_id: i64,
    /// The claim's owner (the queue source that claimed it): the sink keeps the claim alive
    /// while it sends and sends nothing once the claim is lost.
    pub owner: String,
    /// The reference RingCentral keeps with the fax (`OSCAR fax <queue>#<id>`).
    pub ref_name: String,
    /// The claim's lease in seconds: the sink refreshes the claim every quarter of it while
    /// it sends.
    pub lease_secs: u64,
    pub step: Step,
}

/// What the sink is to do with a queue job ([`FaxJob`], [`SmsJob`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Send it.
    Send,
    /// A send broke off in transit: look the message up among those sent since
    /// `since_unix`; adopt it when found, else (once settled) send it again.
    LookUp { since_unix: i64, settled: bool },
    /// RingCentral accepted the message as `message_id`: read its delivery status.
    Track { message_id: i64 },
}

impl FaxJob {
    /// The job as JSON (ids only): what its dead letter keeps and its archive holds.
    pub fn to_json(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl RawBytes for FaxJob {
    fn raw_bytes(&self) -> Bytes {
        self.to_json()
    }
}

impl Keyed for FaxJob {
    /// One fax's steps stay in order.
    fn keys(&self, key: OrderKey) -> Vec<String> {
        match key {
            OrderKey::None => Vec::new(),
            _ => vec![format!("fax:{}", self.fax_id)],
        }
    }
}

impl Archivable for FaxJob {
    fn archive_body(&self) -> ArchiveBody {
        ArchiveBody::Bytes(self.to_json())
    }
}

/// One text message of our outbox (`oscarflow_sms_outbox`), produced from OSCAR's tables (an
/// appointment reminder, a lab-ready notice) and claimed for a send, look-up or status poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsJob {
    /// The outbox row.
    pub outbox_id: i64,
    /// `reminder`, `lab_ready`.
    pub kind: String,
    /// The chart it is for (its opt-out is checked again right before sending).
    pub demographic_no: i64,
    /// The claim's owner (see [`FaxJob::owner`]).
    pub owner: String,
    pub lease_secs: u64,
    pub step: Step,
}

impl SmsJob {
    pub fn to_json(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl RawBytes for SmsJob {
    fn raw_bytes(&self) -> Bytes {
        self.to_json()
    }
}

impl Keyed for SmsJob {
    /// One text's steps stay in order.
    fn keys(&self, key: OrderKey) -> Vec<String> {
        match key {
            OrderKey::None => Vec::new(),
            _ => vec![format!("sms:{}", self.outbox_id)],
        }
    }
}

impl Archivable for SmsJob {
    fn archive_body(&self) -> ArchiveBody {
        ArchiveBody::Bytes(self.to_json())
    }
}
