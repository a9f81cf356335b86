//! `sftp`: files in a remote SFTP drop folder (libssh2 through `ssh2`, on blocking threads).
//!
//! **Trust.** The server's host key is checked against a `known_hosts` file (OpenSSH format,
//! `[host]:port` entries for other ports) right after the key exchange and before
//! authentication: an unknown or changed key refuses the connection, and no byte of any file
//! is read. Authentication by private key file or password; secrets come from environment
//! variables.
//!
//! **Completeness.** A remote file is taken only when it is stable: the same size and
//! modification time in two consecutive listings, and at least `min_age` old. It is
//! downloaded to `<spool_dir>/<name>.part`, fsynced, renamed, and only then read and handed to
//! the pipeline. A connection lost mid-transfer discards the partial copy; the file stays on
//! the server and is taken again on a later poll.
//!
//! **Release.** When every message of a file is committed or dead-lettered, the remote file is
//! deleted or moved to `archive_dir` (a name that exists there gets a unique suffix), then the
//! spool copy is removed. A file whose batch failed stays on the server and is offered again
//! after `retry_after`. A crash between commit and release re-delivers the file after the
//! restart; the import's MD5 check makes it a duplicate and it is then released.
//!
//! **Connection.** One SSH session, reused across polls; on any error it is dropped and
//! re-established with exponential backoff (up to `max_backoff`). Failures are reported as
//! `PollFailed` events with PHI-free texts.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_spanned::Spanned;
use tokio::sync::mpsc;

use super::oversize::{read_file, FileRead, Refuser};
use super::{SendError, Source, SourceContext, SourceError};
use crate::ack::{BatchNotifier, BatchStatus};
use crate::envelope::{sha256, Envelope, Origin, Provenance, Raw};
use crate::error::ErrorKind;
use crate::telemetry::Event;

mod config;
pub use config::*;

/// A PHI-free failure text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SftpError(pub String);

fn ssh_err(step: &str, e: ssh2::Error) -> SftpError {
    SftpError(format!("{step}: {}", e.message()))
}

/// One authenticated SFTP session.
struct Remote {
    _sess: ssh2::Session,
    sftp: ssh2::Sftp,
}

fn env(var: &Spanned<String>) -> Result<String, SftpError> {
    std::env::var(var.get_ref()).map_err(|_| SftpError(crate::secrets::unset(var.get_ref())))
}

/// Connects, checks the host key, authenticates, opens SFTP. Blocking.
fn connect(cfg: &SftpConfig) -> Result<Remote, SftpError> {
    let addr: SocketAddr = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| SftpError(format!("cannot resolve {}: {e}", cfg.host)))?
        .next()
        .ok_or_else(|| SftpError(format!("cannot resolve {}", cfg.host)))?;
    let tcp = TcpStream::connect_timeout(&addr, cfg.timeout)
        .map_err(|e| SftpError(format!("cannot connect to {}:{}: {e}", cfg.host, cfg.port)))?;
    let _ = tcp.set_read_timeout(Some(cfg.timeout));
    let _ = tcp.set_write_timeout(Some(cfg.timeout));
    let mut sess = ssh2::Session::new().map_err(|e| ssh_err("ssh session", e))?;
    sess.set_tcp_stream(tcp);
    sess.set_timeout(cfg.timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    sess.handshake().map_err(|e| ssh_err("ssh handshake", e))?;
    check_host_key(&sess, cfg)?;
    let user = env(&cfg.user_env)?;
    match &cfg.private_key {
        Some(key) => {
            let pass = cfg
                .private_key_passphrase_env
                .as_ref()
                .map(env)
                .transpose()?;
            sess.userauth_pubkey_file(&user, None, key, pass.as_deref())
                .map_err(|e| ssh_err("authentication with the private key was refused", e))?;
        }
        None => {
            let pass = env(cfg.password_env.as_ref().expect("validated"))?;
            sess.userauth_password(&user, &pass)
                .map_err(|e| ssh_err("authentication with the password was refused", e))?;
        }
    }
    if !sess.authenticated() {
        return Err(SftpError("authentication failed".into()));
    }
    let sftp = sess.sftp().map_err(|e| ssh_err("opening SFTP", e))?;
    Ok(Remote { _sess: sess, sftp })
}

/// Refuses unknown and changed host keys.
fn check_host_key(sess: &ssh2::Session, cfg: &SftpConfig) -> Result<(), SftpError> {
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| SftpError("the server sent no host key".into()))?;
    let mut kh = sess.known_hosts().map_err(|e| ssh_err("known_hosts", e))?;
    kh.read_file(&cfg.known_hosts, ssh2::KnownHostFileKind::OpenSSH)
        .map_err(|e| {
            SftpError(format!(
                "cannot read known_hosts {}: {}",
                cfg.known_hosts.display(),
                e.message()
            ))
        })?;
    let fp = sess
        .host_key_hash(ssh2::HashType::Sha256)
        .map(base64_std)
        .unwrap_or_default();
    match kh.check_port(&cfg.host, cfg.port, key) {
        ssh2::CheckResult::Match => Ok(()),
        ssh2::CheckResult::Mismatch => Err(SftpError(format!(
            "host key mismatch: the key of {}:{} (SHA256:{fp}) differs from the one in {}; refusing to connect (the server may have been replaced, or its key changed: verify it, then update known_hosts)",
            cfg.host,
            cfg.port,
            cfg.known_hosts.display()
        ))),
        ssh2::CheckResult::NotFound => Err(SftpError(format!(
            "unknown host key: {}:{} (SHA256:{fp}) is not in {}; refusing to connect (add its verified key to known_hosts)",
            cfg.host,
            cfg.port,
            cfg.known_hosts.display()
        ))),
        ssh2::CheckResult::Failure => Err(SftpError("host key check failed".into())),
    }
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

/// A remote file seen in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    path: String,
    size: u64,
    mtime: u64,
}

fn list(remote: &Remote, cfg: &SftpConfig, glob: &glob::Pattern) -> Result<Vec<Listed>, SftpError> {
    let entries = remote
        .sftp
        .readdir(Path::new(&cfg.remote_dir))
        .map_err(|e| ssh_err("listing the remote directory", e))?;
    let mut out = Vec::new();
    for (p, st) in entries {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !st.is_file() || !glob.matches(name) {
            continue;
        }
        out.push(Listed {
            path: p.to_string_lossy().into_owned(),
            size: st.size.unwrap_or(0),
            mtime: st.mtime.unwrap_or(0),
        });
    }
    out.sort_by(|a, b| (a.mtime, &a.path).cmp(&(b.mtime, &b.path)));
    Ok(out)
}

/// Downloads `f` into the spool (fsynced, renamed into place). Blocking.
fn download(remote: &Remote, f: &Listed, spool: &Path) -> Result<PathBuf, SftpError> {
    let key = hex::encode(&sha256(f.path.as_bytes())[..12]);
    let part = spool.join(format!("{key}.part"));
    let done = spool.join(format!("{key}.dl"));
    let result = (|| {
        let mut src = remote
            .sftp
            .open(Path::new(&f.path))
            .map_err(|e| ssh_err("opening the remote file", e))?;
        let mut dst =
            crate::private_fs::create_file(&part).map_err(|e| SftpError(format!("spool: {e}")))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .map_err(|e| SftpError(format!("reading the remote file: {e}")))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])
                .map_err(|e| SftpError(format!("spool: {e}")))?;
            total += n as u64;
        }
        if total != f.size {
            return Err(SftpError(format!(
                "the remote file changed during the download ({total} of {} bytes)",
                f.size
            )));
        }
        dst.sync_all()
            .map_err(|e| SftpError(format!("spool: {e}")))?;
        std::fs::rename(&part, &done).map_err(|e| SftpError(format!("spool: {e}")))?;
        if let Ok(d) = std::fs::File::open(spool) {
            let _ = d.sync_all();
        }
        Ok(done.clone())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Deletes or archives a released file. Blocking.
fn release_remote(remote: &Remote, cfg: &SftpConfig, path: &str) -> Result<(), SftpError> {
    match cfg.after {
        RemoteAfter::Delete => remote
            .sftp
            .unlink(Path::new(path))
            .map_err(|e| ssh_err("deleting the remote file", e)),
        RemoteAfter::Move => {
            let dir = cfg.archive_dir.as_deref().unwrap_or("archive");
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut dest = format!("{}/{}", dir.trim_end_matches('/'), name);
            if remote.sftp.stat(Path::new(&dest)).is_ok() {
                dest = format!("{dest}.{}", ulid::Ulid::new());
            }
            remote
                .sftp
                .rename(Path::new(path), Path::new(&dest), None)
                .map_err(|e| ssh_err("moving the remote file to the archive", e))
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking SFTP task panicked")
}

/// The source.
pub struct SftpSource {
    cfg: SftpConfig,
    glob: glob::Pattern,
    /// Tests: stop once this many files were released.
    stop_after_released: Option<usize>,
}

impl SftpSource {
    pub fn new(cfg: SftpConfig) -> Result<Self, SourceError> {
        let glob = glob::Pattern::new(&cfg.pattern).map_err(|e| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("invalid pattern: {e}"),
        })?;
        Ok(Self {
            cfg,
            glob,
            stop_after_released: None,
        })
    }

    /// Ends the source once `n` files were released (tests, one-shot runs).
    pub fn stop_after_released(mut self, n: usize) -> Self {
        self.stop_after_released = Some(n);
        self
    }
}

/// A file handed to the pipeline, waiting for its outcome or its release.
struct Pending {
    spool: PathBuf,
    prov: Arc<Provenance>,
}

#[async_trait]
impl Source for SftpSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let cfg = Arc::new(self.cfg.clone());
        crate::private_fs::create_dir_all(&cfg.spool_dir).map_err(|e| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!(
                "sftp: cannot create spool_dir {}: {e}",
                cfg.spool_dir.display()
            ),
        })?;
        // Leftovers of an earlier run: the files are still on the server.
        if let Ok(rd) = std::fs::read_dir(&cfg.spool_dir) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let mut shutdown = cx.shutdown.clone();
        let mut poll_requests = cx.out.control().poll_requests();
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<(String, BatchStatus)>();
        let mut remote: Option<Arc<Remote>> = None;
        let mut backoff = Duration::from_millis(200);
        let mut previous: HashMap<String, (u64, u64)> = HashMap::new();
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut to_release: Vec<(String, BatchStatus)> = Vec::new();
        let mut retry_at: HashMap<String, Instant> = HashMap::new();
        let mut released = 0usize;
        let mut next_poll = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            // Outcomes that arrived meanwhile.
            while let Ok(s) = settled_rx.try_recv() {
                to_release.push(s);
            }
            // Release what settled (needs a connection).
            if !to_release.is_empty() {
                if remote.is_none() {
                    remote = self.reconnect(&cx, &cfg, &mut backoff).await;
                }
                if let Some(r) = remote.clone() {
                    let mut keep = Vec::new();
                    for (path, status) in std::mem::take(&mut to_release) {
                        let Some(p) = pending.get(&path) else {
                            continue;
                        };
                        if !status.may_release() {
                            retry_at.insert(path.clone(), Instant::now() + cfg.retry_after);
                            let p = pending.remove(&path).expect("present");
                            let _ = std::fs::remove_file(&p.spool);
                            cx.observers.emit(Event::Settled {
                                prov: &p.prov,
                                status,
                                released: false,
                            });
                            continue;
                        }
                        let (r2, c2, p2) = (r.clone(), cfg.clone(), path.clone());
                        match blocking(move || release_remote(&r2, &c2, &p2)).await {
                            Ok(()) => {
                                let _ = std::fs::remove_file(&p.spool);
                                cx.observers.emit(Event::Settled {
                                    prov: &p.prov,
                                    status,
                                    released: true,
                                });
                                pending.remove(&path);
                                released += 1;
                            }
                            Err(e) => {
                                cx.observers.emit(Event::ReleaseFailed {
                                    prov: &p.prov,
                                    error: &e.0,
                                });
                                keep.push((path, status));
                                remote = None;
                            }
                        }
                    }
                    to_release.extend(keep);
                }
            }
            if self.stop_after_released.is_some_and(|n| released >= n) && pending.is_empty() {
                break;
            }
            if shutdown.is_triggered() {
                if pending.is_empty() && to_release.is_empty() {
                    break;
                }
                // Drain: wait for what is in the pipeline, then release it. Past the deadline
                // (server unreachable) the files stay on the server and come again later.
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + cfg.timeout);
                if Instant::now() >= deadline {
                    tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, files = pending.len(), "Stopping with unreleased SFTP files; they stay on the server.");
                    break;
                }
                if let Ok(Some(s)) =
                    tokio::time::timeout(Duration::from_millis(200), settled_rx.recv()).await
                {
                    to_release.push(s);
                }
                continue;
            }
            let paused = cx.out.control().intake_stopped();
            if !paused && Instant::now() >= next_poll {
                next_poll = Instant::now() + cfg.poll_interval;
                if remote.is_none() {
                    remote = self.reconnect(&cx, &cfg, &mut backoff).await;
                }
                if let Some(r) = remote.clone() {
                    match self
                        .poll_once(
                            &cx,
                            &cfg,
                            &r,
                            &mut previous,
                            &mut pending,
                            &retry_at,
                            &settled_tx,
                        )
                        .await
                    {
                        Ok(n) => {
                            backoff = Duration::from_millis(200);
                            cx.observers.emit(Event::Polled {
                                pipeline: &cx.pipeline,
                                component: &cx.id,
                                messages: n,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, error = %e, "SFTP poll failed; reconnecting.");
                            cx.observers.emit(Event::PollFailed {
                                pipeline: &cx.pipeline,
                                component: &cx.id,
                                error: &e.0,
                            });
                            remote = None;
                            next_poll = Instant::now() + backoff;
                        }
                    }
                } else {
                    next_poll = Instant::now() + backoff;
                }
                retry_at.retain(|_, t| Instant::now() < *t);
            }
            // Paused: no poll (what is in flight still settles and is released) until
            // resumed, then one at once.
            let wait = if paused {
                Duration::from_secs(3600)
            } else {
                next_poll.saturating_duration_since(Instant::now())
            };
            let control = cx.out.control().clone();
            tokio::select! {
                _ = shutdown.wait() => {}
                s = settled_rx.recv() => if let Some(s) = s { to_release.push(s) },
                _ = tokio::time::sleep(wait) => {}
                _ = poll_requests.changed() => next_poll = Instant::now(),
                _ = control.wait_resumed(), if paused => next_poll = Instant::now(),
            }
        }
        Ok(())
    }
}

impl SftpSource {
    /// Connects (blocking thread); on failure reports it and grows the backoff.
    async fn reconnect(
        &self,
        cx: &SourceContext,
        cfg: &Arc<SftpConfig>,
        backoff: &mut Duration,
    ) -> Option<Arc<Remote>> {
        let c = cfg.clone();
        match blocking(move || connect(&c)).await {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, error = %e, "SFTP connection failed.");
                cx.observers.emit(Event::PollFailed {
                    pipeline: &cx.pipeline,
                    component: &cx.id,
                    error: &e.0,
                });
                *backoff = (*backoff * 2).min(cfg.max_backoff);
                None
            }
        }
    }

    /// Lists the remote directory and hands every stable, new file to the pipeline.
    #[allow(clippy::too_many_arguments)]
    async fn poll_once(
        &self,
        cx: &SourceContext,
        cfg: &Arc<SftpConfig>,
        remote: &Arc<Remote>,
        previous: &mut HashMap<String, (u64, u64)>,
        pending: &mut HashMap<String, Pending>,
        retry_at: &HashMap<String, Instant>,
        settled_tx: &mpsc::UnboundedSender<(String, BatchStatus)>,
    ) -> Result<u32, SftpError> {
        let (r, c, g) = (remote.clone(), cfg.clone(), self.glob.clone());
        let listed = blocking(move || list(&r, &c, &g)).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut current = HashMap::new();
        let mut taken = 0u32;
        let seen: HashSet<String> = listed.iter().map(|l| l.path.clone()).collect();
        for f in &listed {
            current.insert(f.path.clone(), (f.size, f.mtime));
        }
        for f in listed {
            let stable = previous.get(&f.path) == Some(&(f.size, f.mtime))
                && now.saturating_sub(f.mtime) >= cfg.min_age.as_secs();
            if !stable || pending.contains_key(&f.path) || retry_at.contains_key(&f.path) {
                continue;
            }
            if cx.out.control().intake_stopped() {
                // Paused mid-round: the rest stays on the server, taken after the resume.
                break;
            }
            let (r, spool, ff) = (remote.clone(), cfg.spool_dir.clone(), f.clone());
            let local = blocking(move || download(&r, &ff, &spool)).await?;
            let read = match read_file(&local, cfg.max_input_bytes).await {
                Ok(r) => r,
                Err(e) => return Err(SftpError(format!("spool: {}", e.kind()))),
            };
            let origin = Origin::Sftp {
                host: format!("{}:{}", cfg.host, cfg.port),
                path: f.path.clone(),
            };
            let prov = match &read {
                FileRead::Whole(bytes) => cx.stamp("sftp").received(origin, bytes, bytes.len()),
                FileRead::TooLarge { len, sha256 } => {
                    cx.stamp("sftp")
                        .received_hashed(origin, *sha256, *len as usize)
                }
            };
            let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
            let token = notifier.token();
            drop(notifier);
            pending.insert(
                f.path.clone(),
                Pending {
                    spool: local.clone(),
                    prov: prov.clone(),
                },
            );
            let (tx, path) = (settled_tx.clone(), f.path.clone());
            tokio::spawn(async move {
                let status = receiver.wait().await;
                let _ = tx.send((path, status));
            });
            let bytes = match read {
                FileRead::Whole(bytes) => bytes,
                FileRead::TooLarge { len, .. } => {
                    // Dead-lettered from the spool; settling releases it on the server.
                    let refuser = Refuser {
                        store: &cx.store,
                        observers: &cx.observers,
                        component: &cx.id,
                        kind: "sftp",
                        limit: cfg.max_input_bytes,
                    };
                    refuser.dead_letter_file(&prov, &local, len, token).await;
                    taken += 1;
                    continue;
                }
            };
            let name = Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let env = Envelope::new(prov, Raw::new(bytes, name), token);
            match cx.out.send(env).await {
                Ok(()) => taken += 1,
                Err(SendError::Closed) => return Err(SftpError("the pipeline stopped".into())),
                // Not archived: the file's batch failed, it stays on the server and comes
                // again after `retry_after`; this round takes no more files.
                Err(SendError::Archive(_)) => break,
            }
        }
        // Forget files that vanished; remember this listing for the next stability check.
        previous.retain(|p, _| seen.contains(p));
        *previous = current;
        Ok(taken)
    }
}

impl super::SourceComponent for SftpConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Raw
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.env_refs()
    }
    fn build(
        &self,
        _cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        Ok(super::BuiltSource::new::<crate::envelope::Raw>(Box::new(
            SftpSource::new(self.clone())?,
        )))
    }
    fn consumes(&self) -> (&'static str, String) {
        (
            "SFTP folder",
            format!(
                "{}:{}{}",
                self.host.to_ascii_lowercase(),
                self.port,
                super::normalised_path(std::path::Path::new(&self.remote_dir))
            ),
        )
    }
}
