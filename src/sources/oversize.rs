//! Inputs over a source's size limit: refused while reading, never held whole in memory.
//!
//! A file source (a drop folder, the SFTP spool, `replay`) reads a file only up to its
//! `max_input_bytes`. A larger file is hashed a chunk at a time and dead-lettered straight
//! from the file (`too_large`; its bytes go into the dead-letter store in chunks, so
//! `dlq show --raw` gives them back), and the source then releases it like any other
//! dead-lettered input. It is never read into memory, never retried and never imported; what
//! stays in memory is one chunk ([`crate::dead_letter::CHUNK_BYTES`]).
//!
//! The parse stage's own `max_input_bytes` still guards inputs that arrive in memory (an MLLP
//! frame has `max_frame_bytes`, a pull response its own limit).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use crate::ack::AckToken;
use crate::dead_letter::{DeadLetter, DeadLetterStore, ReasonCode};
use crate::envelope::{MessageId, Provenance};
use crate::error::ErrorKind;
use crate::telemetry::{Event, Observers};

/// The default `max_input_bytes` of a file source (the parse stage's default too).
pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// The serde default of a source's `max_input_bytes`.
pub fn default_max_input_bytes() -> usize {
    DEFAULT_MAX_INPUT_BYTES
}

/// What reading a file under a limit gave.
#[derive(Debug)]
pub enum FileRead {
    /// The whole file, at most the limit.
    Whole(Bytes),
    /// Over the limit: its length and hash, read a chunk at a time.
    TooLarge { len: u64, sha256: [u8; 32] },
}

impl FileRead {
    /// The length read (or found).
    pub fn len(&self) -> u64 {
        match self {
            FileRead::Whole(b) => b.len() as u64,
            FileRead::TooLarge { len, .. } => *len,
        }
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads `path` whole if it holds at most `limit` bytes; a larger file (also one that grows
/// past the limit while it is read) is only hashed.
pub async fn read_file(path: &Path, limit: usize) -> std::io::Result<FileRead> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    if len <= limit as u64 {
        let mut buf = Vec::with_capacity(len as usize);
        (&mut f)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        if buf.len() <= limit {
            return Ok(FileRead::Whole(Bytes::from(buf)));
        }
    }
    drop(f);
    let (len, sha256) = hash_file(path).await?;
    Ok(FileRead::TooLarge { len, sha256 })
}

/// Length and SHA-256 of a file, read a chunk at a time.
async fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; crate::dead_letter::CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

/// Who dead-letters an oversized input: the source.
pub struct Refuser<'a> {
    pub store: &'a crate::store::Store,
    pub observers: &'a Observers,
    /// The source's id in its pipeline.
    pub component: &'a str,
    /// The source's type (`folder`, `sftp`, …).
    pub kind: &'static str,
    pub limit: usize,
}

impl Refuser<'_> {
    /// Dead-letters the file at `path` (already found over the limit) from disk and resolves
    /// `ack`: dead-lettered once stored, so that the source releases the file; when the
    /// store cannot take it the batch fails and the file stays for the next round.
    pub async fn dead_letter_file(
        &self,
        prov: &Arc<Provenance>,
        path: &Path,
        len: u64,
        ack: AckToken,
    ) {
        let dl = DeadLetter {
            id: MessageId::new(),
            provenance: prov.clone(),
            part: None,
            raw: Bytes::new(),
            stage: Arc::from(self.component),
            stage_kind: self.kind,
            reason: ReasonCode::TooLarge,
            error_kind: ErrorKind::Data,
            detail: format!(
                "input is {} bytes, over the source's max_input_bytes of {}; not read into memory",
                len, self.limit
            ),
            attempts: 1,
        };
        let store = DeadLetterStore::new(self.store.clone());
        match store.put_file(&dl, path, &prov.sha256_hex()).await {
            Ok(id) => {
                self.observers.emit(Event::DeadLettered {
                    prov,
                    component: self.component,
                    part: None,
                    reason: ReasonCode::TooLarge,
                    dead_letter_id: &id,
                });
                ack.dead_lettered(ReasonCode::TooLarge);
            }
            Err(e) => {
                self.observers.emit(Event::NotDelivered {
                    prov,
                    component: self.component,
                    error: &format!("dead-letter store unavailable: {e}"),
                });
                drop(ack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_over_the_limit_is_hashed_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 1000]).unwrap();
        match read_file(&p, 999).await.unwrap() {
            FileRead::TooLarge { len, sha256 } => {
                assert_eq!(len, 1000);
                assert_eq!(sha256, crate::envelope::sha256(&[b'x'; 1000]));
            }
            FileRead::Whole(_) => panic!("a file over the limit was read whole"),
        }
        match read_file(&p, 1000).await.unwrap() {
            FileRead::Whole(b) => assert_eq!(b.len(), 1000),
            other => panic!("a file at the limit was refused: {other:?}"),
        }
    }
}
