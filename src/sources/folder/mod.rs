//! `folder`: files in a local directory (a drop folder, or `replay`'s one-shot scan).
//!
//! **Completeness.** A file is taken only when it is complete: its size and modification time
//! have not changed for `min_age` (a writer still copying it changes one of them). Hidden
//! files (`.name`) and the `processed` directory are skipped. In `watch` mode the folder is
//! watched with `notify` and rescanned every `poll_interval` as a safety net (network file
//! systems do not always deliver events); in `once` mode it is scanned once and the source
//! ends when every file has settled.
//!
//! **Release.** After every message of a file is committed or dead-lettered, the file is moved
//! to `processed_dir` (relative path kept, fsynced), deleted, or kept, as configured. A file
//! whose batch failed stays in place and is offered again after `retry_after`; the sink's
//! duplicate check makes the re-delivery harmless.
//!
//! **Order.** In `watch` mode files are offered oldest first (modification time, then name):
//! versions of one result arrive in order. In `once` mode, in path order (reproducible
//! replays).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use tokio::task::JoinSet;
use ulid::Ulid;

use super::oversize::FileRead;
use super::{SendError, Source, SourceContext, SourceError};
use crate::ack::{BatchNotifier, BatchStatus};
use crate::envelope::{Envelope, Origin, Raw};
use crate::error::ErrorKind;
use crate::telemetry::Event;

mod config;
pub use config::*;

/// Called just before a file is released; fault-injection tests use it to "crash" there.
pub use super::ReleaseHook;

/// The source.
pub struct FolderSource {
    cfg: FolderConfig,
    glob: glob::Pattern,
    release_hook: Option<ReleaseHook>,
}

#[derive(Default)]
struct State {
    /// Files sent and not yet settled.
    in_progress: HashSet<PathBuf>,
    /// Files whose batch failed, with the earliest time to offer them again.
    retry_at: HashMap<PathBuf, Instant>,
    /// `keep` mode: files already settled, with the (size, mtime) they had.
    done: HashMap<PathBuf, (u64, SystemTime)>,
}

impl FolderSource {
    pub fn new(cfg: FolderConfig, release_hook: Option<ReleaseHook>) -> Result<Self, SourceError> {
        let glob = glob::Pattern::new(&cfg.pattern).map_err(|e| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("invalid pattern: {e}"),
        })?;
        Ok(Self {
            cfg,
            glob,
            release_hook,
        })
    }

    /// Lists complete candidate files in offer order.
    fn scan(&self, state: &State, seen: &mut HashMap<PathBuf, (u64, SystemTime)>) -> Vec<PathBuf> {
        let processed = self.cfg.processed_dir();
        let mut found: Vec<(SystemTime, PathBuf, u64)> = Vec::new();
        let mut stack = vec![self.cfg.path.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                if md.is_dir() {
                    if self.cfg.recursive && p != processed {
                        stack.push(p);
                    }
                    continue;
                }
                if !md.is_file() || !self.glob.matches(&name) {
                    continue;
                }
                let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, p, md.len()));
            }
        }
        let now = SystemTime::now();
        let mut out = Vec::new();
        let mut next_seen = HashMap::new();
        for (mtime, p, len) in found {
            next_seen.insert(p.clone(), (len, mtime));
            if state.in_progress.contains(&p) {
                continue;
            }
            if state.retry_at.get(&p).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            if state.done.get(&p) == Some(&(len, mtime)) {
                continue;
            }
            if self.cfg.mode == FolderMode::Watch && !self.cfg.min_age.is_zero() {
                let old_enough = now.duration_since(mtime).unwrap_or_default() >= self.cfg.min_age;
                let unchanged = seen.get(&p) == Some(&(len, mtime));
                if !(old_enough && unchanged) {
                    continue;
                }
            }
            out.push((mtime, p));
        }
        *seen = next_seen;
        match self.cfg.mode {
            FolderMode::Once => out.sort_by(|a, b| a.1.cmp(&b.1)),
            FolderMode::Watch => out.sort(),
        }
        out.into_iter().map(|(_, p)| p).collect()
    }
}

/// Moves `file` to `dest_root`, keeping its path relative to `base`; durable.
fn move_to(base: &Path, file: &Path, dest_root: &Path) -> std::io::Result<PathBuf> {
    let rel = file.strip_prefix(base).unwrap_or(file);
    let rel = if rel.is_absolute() {
        PathBuf::from(rel.file_name().unwrap_or_default())
    } else {
        rel.to_path_buf()
    };
    let mut dest = dest_root.join(&rel);
    if let Some(parent) = dest.parent() {
        // `processed/` keeps PHI: owner-only, whatever the umask.
        crate::private_fs::create_dir_all(parent)?;
    }
    if dest.exists() {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}", Ulid::new()));
        dest.set_file_name(name);
    }
    match std::fs::rename(file, &dest) {
        Ok(()) => {}
        Err(_) => {
            // Another file system: copy, sync, then remove the original.
            std::fs::copy(file, &dest)?;
            std::fs::File::open(&dest)?.sync_all()?;
            std::fs::remove_file(file)?;
        }
    }
    for dir in [dest.parent(), file.parent()].into_iter().flatten() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(dest)
}

async fn release(cfg: &FolderConfig, path: &Path) -> std::io::Result<bool> {
    let cfg = cfg.clone();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || match cfg.after {
        AfterCommit::Keep => Ok(false),
        AfterCommit::Delete => {
            std::fs::remove_file(&path)?;
            if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        AfterCommit::Move => move_to(&cfg.path, &path, &cfg.processed_dir()).map(|_| true),
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait]
impl Source for FolderSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let provenance = cx.stamp("folder");
        let SourceContext {
            pipeline: _,
            id,
            out,
            mut shutdown,
            in_flight,
            observers,
            store,
        } = cx;
        let refuser = super::oversize::Refuser {
            store: &store,
            observers: &observers,
            component: &id,
            kind: "folder",
            limit: self.cfg.max_input_bytes,
        };
        let mut poll_requests = out.control().poll_requests();
        // A drop folder that does not exist yet is created (watch mode); a replay of a
        // missing folder is an error.
        if self.cfg.mode == FolderMode::Watch && !self.cfg.path.exists() {
            if let Err(e) = std::fs::create_dir_all(&self.cfg.path) {
                return Err(SourceError {
                    kind: ErrorKind::Fatal,
                    detail: format!(
                        "cannot create folder {}: {}",
                        self.cfg.path.display(),
                        e.kind()
                    ),
                });
            }
        }
        if !self.cfg.path.is_dir() {
            return Err(SourceError {
                kind: ErrorKind::Fatal,
                detail: format!(
                    "folder {} does not exist or is not a directory",
                    self.cfg.path.display()
                ),
            });
        }
        let state = Arc::new(Mutex::new(State::default()));
        let mut acks: JoinSet<()> = JoinSet::new();
        let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();

        // File-system events only wake the loop; a full scan decides what to take.
        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
        let _watcher = if self.cfg.mode == FolderMode::Watch {
            use notify::Watcher;
            let tx = wake_tx.clone();
            let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
                let _ = tx.try_send(());
            })
            .map_err(|e| SourceError {
                kind: ErrorKind::Fatal,
                detail: format!("cannot watch folder: {e}"),
            })?;
            let mode = if self.cfg.recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            if let Err(e) = w.watch(&self.cfg.path, mode) {
                tracing::warn!(source = %id, error = %e, "Cannot watch folder; polling only.");
            }
            Some(w)
        } else {
            None
        };
        drop(wake_tx);

        'outer: loop {
            // Paused: take nothing — no scan, no read, no batch — until resumed.
            if !out.ready().await {
                break 'outer;
            }
            let files = {
                let st = state.lock().map_err(|_| poisoned())?;
                self.scan(&st, &mut seen)
            };
            for path in files {
                if shutdown.is_triggered() {
                    break 'outer;
                }
                if out.control().intake_stopped() {
                    // Paused mid-scan: the rest stays in the folder; scanned again on resume.
                    continue 'outer;
                }
                let before = stamp(&path);
                let read = match super::oversize::read_file(&path, self.cfg.max_input_bytes).await {
                    Ok(r) => r,
                    Err(e) => {
                        // Vanished or unreadable: look again on the next scan.
                        tracing::warn!(source = %id, error = %e.kind(), "Cannot read a file; will retry.");
                        if let Ok(mut st) = state.lock() {
                            st.retry_at
                                .insert(path.clone(), Instant::now() + self.cfg.retry_after);
                        }
                        continue;
                    }
                };
                // A file still being written (it changed while we read it) is read again
                // later, whatever `min_age` says.
                let read_stamp = stamp(&path);
                if read_stamp.is_none()
                    || read_stamp != before
                    || read_stamp.map(|s| s.0) != Some(read.len())
                {
                    if let Ok(mut st) = state.lock() {
                        st.retry_at.insert(
                            path.clone(),
                            Instant::now() + self.cfg.retry_after.min(self.cfg.poll_interval),
                        );
                    }
                    continue;
                }
                let origin = Origin::File { path: path.clone() };
                let prov = match &read {
                    FileRead::Whole(bytes) => provenance.received(origin, bytes, bytes.len()),
                    FileRead::TooLarge { len, sha256 } => {
                        provenance.received_hashed(origin, *sha256, *len as usize)
                    }
                };
                let (notifier, receiver) = BatchNotifier::new(Some(in_flight.clone()));
                let token = notifier.token();
                drop(notifier);
                let sent = prov.clone();
                if let Ok(mut st) = state.lock() {
                    st.in_progress.insert(path.clone());
                    st.retry_at.remove(&path);
                }
                // Settle the batch in the background: release, or keep for re-delivery.
                let cfg = self.cfg.clone();
                let st = state.clone();
                let obs = observers.clone();
                let hook = self.release_hook.clone();
                let p = path.clone();
                acks.spawn(async move {
                    let status = receiver.wait().await;
                    let mut released = false;
                    if status.may_release() {
                        if let Some(h) = &hook {
                            h(&p).await;
                        }
                        if stamp(&p) != read_stamp {
                            // Written to after we read it: what was committed (or
                            // dead-lettered) is not what the file holds now. Keep it; it is
                            // read again and its new content imported.
                            tracing::warn!(source = %prov.source, sha = %prov.short_hash(), "The file changed after it was read; not released, it will be read again.");
                        } else {
                            match release(&cfg, &p).await {
                                Ok(r) => released = r,
                                Err(e) => {
                                    let msg = e.kind().to_string();
                                    obs.emit(Event::ReleaseFailed {
                                        prov: &prov,
                                        error: &msg,
                                    });
                                }
                            }
                        }
                    }
                    obs.emit(Event::Settled {
                        prov: &prov,
                        status,
                        released,
                    });
                    if let Ok(mut s) = st.lock() {
                        s.in_progress.remove(&p);
                        if status == BatchStatus::Failed
                            || (status.may_release() && !released && cfg.after != AfterCommit::Keep)
                        {
                            s.retry_at
                                .insert(p.clone(), Instant::now() + cfg.retry_after);
                        } else if cfg.after == AfterCommit::Keep {
                            // Done as it was read: a file changed since is new input.
                            if let Some(read) = read_stamp {
                                s.done.insert(p.clone(), read);
                            }
                        }
                    }
                });
                let bytes = match read {
                    FileRead::Whole(bytes) => bytes,
                    FileRead::TooLarge { len, .. } => {
                        // Dead-lettered from the file; the settle above releases it.
                        refuser.dead_letter_file(&sent, &path, len, token).await;
                        while acks.try_join_next().is_some() {}
                        continue;
                    }
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let env = Envelope::new(sent, Raw::new(bytes, name), token);
                tokio::select! {
                    r = out.send(env) => {
                        if r.as_ref().is_err_and(SendError::is_closed) {
                            // The pipeline is gone; the envelope's token failed the batch.
                            break 'outer;
                        }
                        // Not archived: the batch failed, the file stays and is retried
                        // after `retry_after`; the next files go on.
                    }
                    _ = shutdown.wait() => {
                        // Stop intake: the unsent envelope is dropped, its file stays.
                        break 'outer;
                    }
                }
                while acks.try_join_next().is_some() {}
            }
            if self.cfg.mode == FolderMode::Once {
                break;
            }
            let tick = if self.cfg.min_age.is_zero() {
                self.cfg.poll_interval
            } else {
                self.cfg.poll_interval.min(self.cfg.min_age)
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(tick) => {}
                _ = poll_requests.changed() => {}
                w = wake_rx.recv() => {
                    if w.is_none() {
                        tokio::time::sleep(tick).await;
                    }
                }
            }
            while acks.try_join_next().is_some() {}
        }
        // Stop sending; let what was sent drain and settle.
        drop(out);
        while acks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Size and modification time: what tells that a file changed.
fn stamp(p: &Path) -> Option<(u64, SystemTime)> {
    let md = std::fs::metadata(p).ok()?;
    Some((md.len(), md.modified().ok()?))
}

fn poisoned() -> SourceError {
    SourceError {
        kind: ErrorKind::Fatal,
        detail: "folder state lock poisoned".into(),
    }
}

impl super::SourceComponent for FolderConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Raw
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(
        &self,
        cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        let mut c = self.clone();
        if cx.one_shot {
            c.mode = FolderMode::Once;
        }
        Ok(super::BuiltSource::new::<crate::envelope::Raw>(Box::new(
            FolderSource::new(c, cx.release_hook.clone())?,
        )))
    }
    fn consumes(&self) -> (&'static str, String) {
        ("folder", super::normalised_path(&self.path))
    }
}
