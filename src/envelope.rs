//! The unit that flows through a pipeline: [`Envelope<T>`].
//!
//! An envelope carries a ULID [`MessageId`], immutable [`Provenance`] (shared, never mutated
//! after the source made it), the typed payload, and the [`AckToken`] that ties it to the
//! source's input. Provenance and payload serialize losslessly (serde) so that a pipeline can
//! later be split across processes at a stage boundary; the ack token is process-local.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use ulid::Ulid;

use crate::ack::AckToken;

/// A message id: a ULID assigned where the envelope was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub Ulid);

impl MessageId {
    pub fn new() -> Self {
        MessageId(Ulid::new())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the input came from. Values here are identifiers (paths, ids), never message content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A local file (folder source, replay).
    File { path: PathBuf },
    /// A file on an SFTP server.
    Sftp { host: String, path: String },
    /// A RingCentral message.
    Fax { message_id: String },
    /// A row of a database queue table.
    QueueRow { table: String, id: i64 },
    /// An MLLP peer and the message control id (MSH-10).
    Mllp { peer: String, control_id: String },
    /// One message of a pull batch (Excelleris `hl7pull`, Interior Health POI).
    Pull {
        host: String,
        batch: String,
        index: u32,
    },
    /// A re-drive of a dead letter.
    DeadLetter { id: String },
    /// Bytes handed in directly (tests, tools).
    Memory { label: String },
}

impl Origin {
    /// A short, PHI-free label used in reports and logs.
    pub fn label(&self) -> String {
        match self {
            Origin::File { path } => path.display().to_string(),
            Origin::Sftp { host, path } => format!("sftp://{host}{path}"),
            Origin::Fax { message_id } => format!("fax:{message_id}"),
            Origin::QueueRow { table, id } => format!("{table}#{id}"),
            Origin::Mllp { peer, control_id } => format!("mllp:{peer}/{control_id}"),
            Origin::Pull { host, batch, index } => format!("pull:{host}/{batch}#{index}"),
            Origin::DeadLetter { id } => format!("dead-letter:{id}"),
            Origin::Memory { label } => format!("memory:{label}"),
        }
    }
}

/// Immutable facts about an input, fixed by the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Pipeline name (the pipeline file's stem or its `[pipeline] name`).
    pub pipeline: Arc<str>,
    /// Component id of the source in the pipeline file.
    pub source: Arc<str>,
    /// Component type of the source (`folder`, `sftp`, …).
    pub source_kind: Arc<str>,
    pub origin: Origin,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// 1 for the first delivery; a re-drive from the dead-letter store counts up.
    pub attempt: u32,
    /// SHA-256 of the input's bytes: safe to log, used for dedupe and correlation.
    #[serde(with = "hex_bytes")]
    pub content_sha256: [u8; 32],
}

impl Provenance {
    /// A provenance for unit tests: pipeline `p`, folder source `s`, an in-memory origin.
    #[cfg(test)]
    pub(crate) fn for_test(content: &[u8]) -> Arc<Provenance> {
        Arc::new(Provenance {
            pipeline: Arc::from("p"),
            source: Arc::from("s"),
            source_kind: Arc::from("folder"),
            origin: Origin::Memory { label: "x".into() },
            received_at: OffsetDateTime::now_utc(),
            attempt: 1,
            content_sha256: sha256(content),
        })
    }

    /// The content hash as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.content_sha256)
    }
    /// The first 12 hex digits of the content hash, for log lines.
    pub fn short_hash(&self) -> String {
        hex::encode(&self.content_sha256[..6])
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The raw input as a source hands it to the first stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Raw {
    /// The input's bytes, exactly as received.
    #[serde(with = "serde_bytes_b64")]
    pub bytes: Bytes,
    /// A file-like name for the input (used for OSCAR's `fileUploadCheck.filename`).
    pub name: String,
    /// The lab type of the feed, when the source serves exactly one (`excelleris`: PATHL7,
    /// `iha_poi`: IHAPOI); `None` where messages of any sender arrive (folders, SFTP, MLLP)
    /// and the parse stage detects the type per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_type: Option<crate::hl7::lab::LabType>,
}

mod serde_bytes_b64 {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

pub use crate::payload::capabilities::RawBytes;

impl Raw {
    /// Bytes from a source that serves any sender (the parse stage detects the lab type).
    pub fn new(bytes: Bytes, name: String) -> Raw {
        Raw {
            bytes,
            name,
            lab_type: None,
        }
    }
}

impl RawBytes for Raw {
    fn raw_bytes(&self) -> Bytes {
        self.bytes.clone()
    }
}

impl crate::payload::capabilities::Archivable for Raw {
    fn archive_body(&self) -> crate::payload::capabilities::ArchiveBody {
        crate::payload::capabilities::ArchiveBody::Bytes(self.bytes.clone())
    }
}

/// A payload with its id, provenance and acknowledgement token.
#[derive(Debug)]
pub struct Envelope<T> {
    pub id: MessageId,
    pub provenance: Arc<Provenance>,
    pub payload: T,
    pub ack: AckToken,
}

impl<T> Envelope<T> {
    pub fn new(provenance: Arc<Provenance>, payload: T, ack: AckToken) -> Self {
        Self {
            id: MessageId::new(),
            provenance,
            payload,
            ack,
        }
    }

    /// A new envelope for a stage's output: same provenance, same batch, new payload.
    /// The id stays when one input becomes one output, so logs correlate across stages.
    pub fn derive<U>(&self, payload: U) -> Envelope<U> {
        Envelope {
            id: self.id,
            provenance: self.provenance.clone(),
            payload,
            ack: self.ack.derive(),
        }
    }

    /// Splits off the payload, keeping the envelope's metadata for a new payload.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            id: self.id,
            provenance: self.provenance,
            payload: f(self.payload),
            ack: self.ack,
        }
    }
}
