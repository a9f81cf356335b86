//! What every payload kind can do, each implemented next to its type: [`RawBytes`] (the
//! bytes its dead letter keeps), [`Keyed`] (its ordering keys) and [`Archivable`] (what the
//! raw archive keeps). Below the payload types and [`super::PortType`], so that neither
//! imports the other.

use std::path::PathBuf;

use bytes::Bytes;

/// Payloads that can be dead-lettered keep their original bytes.
pub trait RawBytes {
    /// The bytes to keep in the dead-letter store if this payload is rejected as a whole.
    fn raw_bytes(&self) -> Bytes;
    /// Which message of its input the payload is, when it is one message of several (a
    /// scheduling message of a multi-message file): its dead letter says so.
    fn part(&self) -> Option<u32> {
        None
    }
}

/// Keys for same-key ordering (a sink's `order_by`): what [`Keyed::keys`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKey {
    /// OSCAR's accession number: versions of one result stay in order.
    #[default]
    Accession,
    /// The patient's health number.
    HealthNumber,
    /// No ordering: any parallelism.
    None,
}

/// Payloads that know their ordering keys.
pub trait Keyed {
    /// The keys of this payload; envelopes sharing a key are processed in arrival order.
    fn keys(&self, key: OrderKey) -> Vec<String>;
}

/// What is archived for one input: its bytes, or the file it was spooled to.
#[derive(Debug, Clone)]
pub enum ArchiveBody {
    Bytes(Bytes),
    /// Streamed from disk.
    File {
        path: PathBuf,
        size: u64,
    },
}

impl ArchiveBody {
    pub fn len(&self) -> u64 {
        match self {
            ArchiveBody::Bytes(b) => b.len() as u64,
            ArchiveBody::File { size, .. } => *size,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Payloads whose raw input can be archived.
pub trait Archivable {
    fn archive_body(&self) -> ArchiveBody;
}
