//! [`Appointment`]: the payload between the SIU parse stage and the appointment sink — one
//! scheduling message, with its original bytes, its SHA-256 (the key that makes a
//! re-delivered message change nothing), the typed model and, after the match stage, the
//! patient match.
//!
//! Its ordering key is the appointment's **filler id** (SCH-2.1), whatever key the sink is
//! configured with (`accession` and `health_number` both map to it, besides the health
//! number itself for the latter): versions of one appointment never race each other.

use bytes::Bytes;

use crate::hl7::siu::SiuMessage;
use crate::oscar::matching::MatchOutcome;
use crate::payload::capabilities::{Archivable, ArchiveBody, Keyed, OrderKey, RawBytes};

/// One scheduling message.
#[derive(Debug, Clone)]
pub struct Appointment {
    /// File-like name of the input it came from.
    pub name: String,
    /// 0-based position of the message in its input.
    pub index: u32,
    /// The message's original bytes (what a dead letter keeps).
    pub raw: Bytes,
    /// Lower-case hex SHA-256 of `raw`.
    pub sha256: String,
    pub siu: SiuMessage,
    /// Set by the match stage.
    pub matched: Option<MatchOutcome>,
}

impl RawBytes for Appointment {
    fn raw_bytes(&self) -> Bytes {
        self.raw.clone()
    }
    fn part(&self) -> Option<u32> {
        Some(self.index)
    }
}

impl Archivable for Appointment {
    fn archive_body(&self) -> ArchiveBody {
        ArchiveBody::Bytes(self.raw.clone())
    }
}

impl Keyed for Appointment {
    fn keys(&self, key: OrderKey) -> Vec<String> {
        match key {
            OrderKey::None => Vec::new(),
            OrderKey::Accession => vec![format!("appt:{}", self.siu.filler_id)],
            OrderKey::HealthNumber => {
                let mut v = vec![format!("appt:{}", self.siu.filler_id)];
                let hn = self.siu.patient.health_number.trim();
                if !hn.is_empty() {
                    v.push(hn.to_string());
                }
                v
            }
        }
    }
}
