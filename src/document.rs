//! The payload between a document source (the RingCentral fax inbox) and a document sink
//! (`oscar_fax`): [`InboundDocument`], a file **spooled on disk** plus what the import needs
//! to know about it.
//!
//! Why a file and not bytes: a fax is up to 50 MB (CONTRACTS.md §5.1), and OSCAR stores it as
//! a file anyway. The source streams the attachment to its spool directory, the sink copies
//! the spooled file into OSCAR's document directory; the process never holds a whole fax in
//! memory, so its peak memory does not grow with fax size. The spooled file is removed when
//! the last envelope holding it is dropped (after the sink committed, or the source gave up
//! on the fax), so a crash leaves at most one orphan per in-flight fax in the spool, which
//! the source clears at start.
//!
//! The only place that reads the file whole is [`RawBytes::raw_bytes`], used when a document
//! is dead-lettered (the dead-letter store keeps original bytes); that path is rare and its
//! size is bounded by the source's `max_bytes`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::RawBytes;
use crate::payload::capabilities::{Archivable, ArchiveBody, Keyed, OrderKey};

/// A spooled file, deleted when dropped.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    /// Takes ownership of `path` (deleted on drop).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An inbound document waiting to be filed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundDocument {
    /// The spooled bytes.
    pub file: Arc<SpoolFile>,
    /// The file's size in bytes.
    pub size: u64,
    /// A file-like name (ASCII, no path; OSCAR prefixes it with a timestamp).
    pub name: String,
    /// `application/pdf`, `image/tiff`.
    pub content_type: String,
    /// Pages, as the sender reported them (0 when unknown).
    pub pages: u32,
    /// When the document was received upstream (the fax's `creationTime`).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The upstream id (RingCentral message id): the import's idempotency key.
    pub external_id: i64,
    /// The sending fax number, digits only (OSCAR's `faxes.destination` is 11 characters).
    /// Stored in OSCAR's fax log; never logged.
    pub sender: Option<String>,
}

impl RawBytes for InboundDocument {
    fn raw_bytes(&self) -> Bytes {
        std::fs::read(self.file.path())
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

impl Archivable for InboundDocument {
    fn archive_body(&self) -> ArchiveBody {
        ArchiveBody::File {
            path: self.file.path().to_path_buf(),
            size: self.size,
        }
    }
}

impl Keyed for InboundDocument {
    /// Documents are independent: no ordering key.
    fn keys(&self, _key: OrderKey) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_file_is_removed_when_the_last_holder_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.pdf");
        std::fs::write(&p, b"%PDF-1.4").unwrap();
        let f = Arc::new(SpoolFile::new(p.clone()));
        let doc = InboundDocument {
            file: f.clone(),
            size: 8,
            name: "f.pdf".into(),
            content_type: "application/pdf".into(),
            pages: 1,
            received_at: OffsetDateTime::UNIX_EPOCH,
            external_id: 1,
            sender: None,
        };
        assert_eq!(&doc.raw_bytes()[..], b"%PDF-1.4");
        drop(f);
        assert!(p.exists(), "the envelope still holds it");
        drop(doc);
        assert!(!p.exists());
    }
}
