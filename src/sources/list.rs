//! [`ListSource`]: a fixed list of inputs, sent once (the `replay` command and dead-letter
//! re-drives). Not a pipeline-file type: the CLI puts it in place of a pipeline's sources.
//!
//! Files are read one at a time just before they are sent, so memory stays bounded by the
//! pipeline's channels, not by the number of files. The source ends when every input has
//! settled; it releases nothing (replays leave their files alone).

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

use super::oversize::{read_file, FileRead, Refuser, DEFAULT_MAX_INPUT_BYTES};
use super::{Source, SourceContext, SourceError};
use crate::ack::BatchNotifier;
use crate::envelope::{sha256, Envelope, Origin, Raw};
use crate::telemetry::Event;

/// The `source_kind` of a dead letter's re-drive (`oscarflow dlq retry`).
pub const DEAD_LETTER_KIND: &str = "dead_letter";

/// One input of a [`ListSource`].
#[derive(Debug, Clone)]
pub enum ListItem {
    /// A file, read when its turn comes.
    File(PathBuf),
    /// Bytes already in memory (a dead letter's original bytes).
    Bytes {
        origin: Origin,
        name: String,
        bytes: Bytes,
        attempt: u32,
    },
}

/// The source.
pub struct ListSource {
    items: Vec<ListItem>,
    kind: &'static str,
}

impl ListSource {
    pub fn new(items: Vec<ListItem>, kind: &'static str) -> Self {
        Self { items, kind }
    }

    /// Expands files and directories (recursively, hidden entries skipped) in path order.
    pub fn expand(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut stack = vec![p.clone()];
                let mut found = Vec::new();
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d)? {
                        let e = e?;
                        if e.file_name().to_string_lossy().starts_with('.') {
                            continue;
                        }
                        let ft = e.file_type()?;
                        if ft.is_dir() {
                            stack.push(e.path());
                        } else if ft.is_file() && e.file_name() != "README.md" {
                            found.push(e.path());
                        }
                    }
                }
                found.sort();
                out.extend(found);
            } else if p.exists() {
                out.push(p.clone());
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} does not exist", p.display()),
                ));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Source for ListSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let mut waits = Vec::new();
        for item in self.items {
            if cx.shutdown.is_triggered() {
                break;
            }
            let (origin, name, bytes, attempt) = match item {
                ListItem::File(path) => {
                    let read = match read_file(&path, DEFAULT_MAX_INPUT_BYTES).await {
                        Ok(r) => r,
                        Err(e) => {
                            return Err(SourceError {
                                kind: crate::error::ErrorKind::Fatal,
                                detail: format!("cannot read {}: {}", path.display(), e.kind()),
                            })
                        }
                    };
                    let bytes = match read {
                        FileRead::Whole(b) => b,
                        FileRead::TooLarge { len, sha256 } => {
                            // Not read into memory: dead-lettered from the file.
                            let prov = cx.stamp(self.kind).received_hashed(
                                Origin::File { path: path.clone() },
                                sha256,
                                len as usize,
                            );
                            let (notifier, receiver) =
                                BatchNotifier::new(Some(cx.in_flight.clone()));
                            let refuser = Refuser {
                                store: &cx.store,
                                observers: &cx.observers,
                                component: &cx.id,
                                kind: self.kind,
                                limit: DEFAULT_MAX_INPUT_BYTES,
                            };
                            refuser
                                .dead_letter_file(&prov, &path, len, notifier.token())
                                .await;
                            drop(notifier);
                            let status = receiver.wait().await;
                            cx.observers.emit(Event::Settled {
                                prov: &prov,
                                status,
                                released: false,
                            });
                            continue;
                        }
                    };
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (Origin::File { path }, name, bytes, 1)
                }
                ListItem::Bytes {
                    origin,
                    name,
                    bytes,
                    attempt,
                } => (origin, name, bytes, attempt),
            };
            let prov = cx
                .stamp(self.kind)
                .delivered(origin, sha256(&bytes), bytes.len(), attempt);
            let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
            let env = Envelope::new(prov.clone(), Raw::new(bytes, name), notifier.token());
            drop(notifier);
            let obs = cx.observers.clone();
            waits.push(tokio::spawn(async move {
                let status = receiver.wait().await;
                obs.emit(Event::Settled {
                    prov: &prov,
                    status,
                    released: false,
                });
            }));
            if let Err(e) = cx.out.send(env).await {
                if e.is_closed() {
                    break;
                }
                // Not archived: this item's batch failed (reported as settled, not
                // delivered); the next items go on.
            }
        }
        drop(cx.out);
        for w in waits {
            let _ = w.await;
        }
        Ok(())
    }
}
