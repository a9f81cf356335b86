//! [`LabFile`]: the payload between the parse stage and the import sink.
//!
//! One input file (or pull batch) after framing and parsing: the file's original bytes and
//! MD5 (OSCAR's duplicate key), and every message that parsed as a lab, each with its own
//! original bytes, the text OSCAR will store, the typed model and — after the match stage —
//! the patient match. Messages that did not parse are not here: the parse stage has already
//! sent them to the dead-letter store.

use bytes::Bytes;
use serde::Serialize;

use crate::envelope::RawBytes;
use crate::hl7::framing::Container;
use crate::hl7::lab::LabMessage;
use crate::hl7::text::Encoding;
use crate::oscar::matching::MatchOutcome;

/// One lab message of a file.
#[derive(Debug, Clone, Serialize)]
pub struct LabEntry {
    /// 0-based position of the message in its file.
    pub index: u32,
    /// The message's original bytes.
    #[serde(skip)]
    pub raw: Bytes,
    /// The message text as OSCAR stores it in `hl7TextMessage.message` (before Base64).
    #[serde(skip)]
    pub stored_text: String,
    pub encoding: Encoding,
    pub segment_count: usize,
    #[serde(skip)]
    pub lab: LabMessage,
    /// Set by the match stage.
    pub matched: Option<MatchOutcome>,
}

/// A parsed lab file.
#[derive(Debug, Clone)]
pub struct LabFile {
    /// File-like name of the input (for `fileUploadCheck.filename`).
    pub name: String,
    /// The whole input's bytes.
    pub raw: Bytes,
    /// Lower-case hex MD5 of `raw`: OSCAR's `fileUploadCheck.md5sum`.
    pub md5: String,
    pub container: Container,
    /// Messages found in the input, including those rejected by the parse stage.
    pub messages_found: u32,
    pub messages: Vec<LabEntry>,
}

impl RawBytes for LabFile {
    fn raw_bytes(&self) -> Bytes {
        self.raw.clone()
    }
}

pub use crate::payload::capabilities::{Keyed, OrderKey};

impl crate::payload::capabilities::Archivable for LabFile {
    fn archive_body(&self) -> crate::payload::capabilities::ArchiveBody {
        crate::payload::capabilities::ArchiveBody::Bytes(self.raw.clone())
    }
}

impl Keyed for LabFile {
    fn keys(&self, key: OrderKey) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.messages {
            let k = match key {
                OrderKey::Accession => crate::oscar::handlers::accession(&m.lab),
                OrderKey::HealthNumber => m.lab.patient.health_number.trim().to_string(),
                OrderKey::None => String::new(),
            };
            if !k.is_empty() && !out.contains(&k) {
                out.push(k);
            }
        }
        // Identical files must never race each other past the duplicate check.
        if key != OrderKey::None {
            out.push(format!("md5:{}", self.md5));
        }
        out
    }
}

impl Keyed for crate::envelope::Raw {
    /// Raw bytes carry no ordering key: any parallelism.
    fn keys(&self, _key: OrderKey) -> Vec<String> {
        Vec::new()
    }
}
