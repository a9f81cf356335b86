//! `mllp`: an HL7 MLLP listener (TCP, framing `0x0B message 0x1C 0x0D`).
//!
//! **The ACK is the release.** Each frame becomes one envelope with its own batch. The
//! connection answers only after that batch settled: `AA` when the message is committed,
//! `AR` with the dead-letter reason when it was rejected (it is in the dead-letter store with
//! its bytes), `AE` when it could be neither committed nor dead-lettered (the peer keeps it and
//! re-sends). There is no silent close: a frame that cannot be parsed at all, or is over
//! `max_frame_bytes`, gets an `AR` built with default separators.
//!
//! **Order and backpressure.** A connection handles one frame at a time, in order: the next
//! frame is not read before the previous one is answered, so a full pipeline stops the
//! reading (TCP flow control pushes back to the peer) instead of buffering.
//!
//! **Re-sends.** A peer that missed an ACK sends the message again. The answer given to each
//! (sender MSH-3/MSH-4, control id MSH-10) is kept in `oscarflow_mllp_answer`; the same
//! message (same bytes) from the same sender gets the same answer again without being
//! processed again. A crash between commit and ACK leaves no answer on record: the re-sent
//! message goes through the pipeline, and the import's MD5 check makes it a duplicate (one
//! row, answer `AA`). A *different* message that reuses a control id is processed — losing
//! it would be worse than a duplicate — and logged.
//!
//! **TLS.** With `tls_cert_file` and `tls_key_file` every connection must complete a TLS
//! handshake first (MLLP over TLS, as interface engines offer it).
//!
//! **Limits.** `max_frame_bytes` (an over-long frame is refused with `AR too_large` and its
//! bytes skipped, never buffered), `idle_timeout` (a silent connection is closed; per read),
//! `frame_timeout` (a whole-frame deadline from its start block to its end block),
//! `max_connections` (overall) and `max_connections_per_peer` (per source IP address).
//!
//! **Why slow peers could starve a sender, and what stops it.** The idle timeout is per
//! read, so a peer sending one byte every 100 ms is never idle; and a listener that stops
//! accepting when its slots are taken leaves a legitimate sender in the kernel's backlog
//! while 32 such peers (or 32 silent ones, for ten minutes) hold every slot. Now:
//!
//! - the frame deadline ends a trickling frame (discarded, never imported nor answered,
//!   logged with its byte count only and counted as `reason="frame_timeout"`);
//! - the listener always accepts, and [`crate::conn_limit`] decides: a sender at its
//!   per-peer cap gets a new connection only in place of one of its own, and at the overall
//!   cap an idle connection (waiting for a frame to start), or one whose frame has been
//!   trickling in for [`SLOW_FRAME`] or more, of the sender holding the most connections
//!   gives way; with nothing to give way, the new connection is closed at once, so it never
//!   waits in the backlog. A connection whose message is being handled never gives way: a
//!   message that arrived whole is answered after its durable hand-off, as always;
//! - so a sender with no connection open always gets one while any other host holds two or
//!   more idle or trickling ones, and one misbehaving host cannot hold more than
//!   `max_connections_per_peer`. Connections from the *same* address as the misbehaving
//!   peer cannot be told apart from it before they send; they still get in by replacing
//!   that address's idle or slowest connection (per-peer rule), which is also what lets a
//!   sender reconnect while its previous connection is half-open behind a NAT.
//!
//! Closings by the limits are counted in `oscarflow_listener_connections_closed_total`
//! (`listener="mllp"`, `reason`: `evicted_idle`, `evicted_slow`, `over_capacity`,
//! `peer_over_capacity`, `frame_timeout`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{SendError, Source, SourceContext, SourceError};
use crate::ack::{BatchNotifier, BatchStatus, InFlight};
use crate::conn_limit::{Admission, ClosedLog, Limits, Slot, Slots};
use crate::dead_letter::ReasonCode;
use crate::envelope::{sha256, Envelope, Origin, Raw};
use crate::error::ErrorKind;
use crate::hl7::ack::{build_ack, AckCode, AckMode};
use crate::hl7::Message;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::{counter, Event, MetricName, Observers};

mod config;
pub use config::*;

/// What the decoder found in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (without the start and end blocks).
    Message(Bytes),
    /// A frame longer than the limit; its bytes were skipped. Carries its first bytes (up to
    /// 1 KiB, enough for the MSH segment) so that the answer can name the message.
    TooLarge(Bytes),
    /// A frame the sender abandoned: a start block came before its end block. Its `bytes`
    /// were discarded — never imported, never answered (the sender sends it again, whole).
    Aborted { bytes: usize },
}

/// Incremental MLLP framing. Bytes outside a frame (whitespace between frames) are skipped;
/// an over-long frame is skipped to its end block without being buffered.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    buf: BytesMut,
    in_frame: bool,
    /// Bytes of the current frame already searched for the end block (no re-scan).
    scanned: usize,
    /// Skipping an over-long frame: its head.
    skipping: Option<Bytes>,
}

impl Decoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max: max_frame_bytes,
            buf: BytesMut::new(),
            in_frame: false,
            scanned: 0,
            skipping: None,
        }
    }

    /// Whether a frame has started and not ended (also while an over-long one is skipped).
    pub fn in_frame(&self) -> bool {
        self.in_frame || self.skipping.is_some()
    }

    /// Adds bytes read from the connection.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(head) = &self.skipping {
                match self.buf.iter().position(|b| *b == END || *b == START) {
                    Some(i) if self.buf[i] == START => {
                        // The over-long frame was abandoned: a new one starts here.
                        self.buf.advance(i + 1);
                        let bytes = head.len() + i;
                        self.skipping = None;
                        self.in_frame = true;
                        self.scanned = 0;
                        return Some(Frame::Aborted { bytes });
                    }
                    Some(i) => {
                        self.buf.advance(i + 1);
                        let head = head.clone();
                        self.skipping = None;
                        self.in_frame = false;
                        return Some(Frame::TooLarge(head));
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            if !self.in_frame {
                match self.buf.iter().position(|b| *b == START) {
                    Some(i) => {
                        self.buf.advance(i + 1);
                        self.in_frame = true;
                        self.scanned = 0;
                    }
                    None => {
                        // Nothing but inter-frame bytes (CR/LF after an end block).
                        self.buf.clear();
                        return None;
                    }
                }
            }
            let found = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == END || *b == START)
                .map(|i| i + self.scanned);
            if let Some(j) = found.filter(|j| self.buf[*j] == START) {
                // A start block inside a frame: the sender gave up on this frame (a broken
                // connection, a timeout on its side) and began another. The unfinished frame
                // is discarded, never imported: importing it would file half a message.
                self.buf.advance(j + 1);
                self.scanned = 0;
                return Some(Frame::Aborted { bytes: j });
            }
            self.scanned = self.buf.len();
            match found {
                Some(i) if i <= self.max => {
                    let msg = self.buf.split_to(i).freeze();
                    self.buf.advance(1);
                    if self.buf.first() == Some(&b'\r') {
                        self.buf.advance(1);
                    }
                    self.in_frame = false;
                    return Some(Frame::Message(msg));
                }
                Some(i) => {
                    // Complete but over the limit: refuse it and go on after its end block.
                    let head = Bytes::copy_from_slice(&self.buf[..i.min(1024)]);
                    self.buf.advance(i + 1);
                    if self.buf.first() == Some(&b'\r') {
                        self.buf.advance(1);
                    }
                    self.in_frame = false;
                    return Some(Frame::TooLarge(head));
                }
                None if self.buf.len() > self.max => {
                    let head = Bytes::copy_from_slice(&self.buf[..self.buf.len().min(1024)]);
                    self.skipping = Some(head);
                    self.buf.clear();
                    continue;
                }
                None => return None,
            }
        }
    }
}

/// Wraps `payload` in MLLP blocks.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[END, b'\r']);
    out
}

/// The answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: AckCode,
    pub reason: Option<String>,
}

impl Answer {
    fn for_outcome(status: BatchStatus, reason: Option<ReasonCode>) -> Answer {
        match status {
            BatchStatus::Delivered => Answer {
                code: AckCode::Accept,
                reason: None,
            },
            BatchStatus::DeadLettered => {
                let r = reason.unwrap_or(ReasonCode::Malformed);
                // A transient failure that outlived the retries: the peer may try again.
                let code = if r == ReasonCode::RetriesExhausted {
                    AckCode::Error
                } else {
                    AckCode::Reject
                };
                Answer {
                    code,
                    reason: Some(r.as_str().to_string()),
                }
            }
            BatchStatus::Failed => Answer {
                code: AckCode::Error,
                reason: Some("not_committed".into()),
            },
        }
    }

    fn letters(&self) -> &'static str {
        self.code.code(AckMode::Original)
    }
}

/// The ACK text for `raw` (a message or the head of one). The reason is a PHI-free code.
pub fn ack_for(raw: &[u8], answer: &Answer) -> String {
    let now = time::OffsetDateTime::now_utc();
    let ts = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let id = ulid::Ulid::new().to_string();
    // Only the header is needed to answer; the body may not even be UTF-8.
    let text = String::from_utf8_lossy(raw);
    let header = text
        .split(['\r', '\n'])
        .find(|l| l.trim_start_matches(['\u{feff}', ' ']).starts_with("MSH"))
        .map(|l| l.trim_start_matches(['\u{feff}', ' ']).to_string());
    if let Some(msg) = header.as_deref().and_then(|h| Message::parse(h).ok()) {
        return build_ack(
            &msg,
            answer.code,
            AckMode::Original,
            answer.reason.as_deref(),
            &id,
            &ts,
        );
    }
    let fallback = Message::parse("MSH|^~\\&|||||||ACK||P|2.3").expect("a valid header");
    build_ack(
        &fallback,
        answer.code,
        AckMode::Original,
        answer.reason.as_deref(),
        &id,
        &ts,
    )
}

/// (sender, control id) of a message: MSH-3.1^MSH-4.1 and MSH-10.
fn identity(raw: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let header = text
        .split(['\r', '\n'])
        .find(|l| l.trim_start_matches(['\u{feff}', ' ']).starts_with("MSH"))?;
    let msg = Message::parse(header.trim_start_matches(['\u{feff}', ' '])).ok()?;
    let control = msg.get("MSH-10").trim().to_string();
    if control.is_empty() {
        return None;
    }
    let sender = format!(
        "{}^{}",
        msg.get("MSH-3.1").trim(),
        msg.get("MSH-4.1").trim()
    );
    Some((sender, control))
}

/// The answer already given to this message, if it is a re-send of the same bytes.
async fn recorded_answer(
    store: &Store,
    pipeline: &str,
    sender: &str,
    control: &str,
    sha: &str,
) -> Result<Option<Answer>, sqlx::Error> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT content_sha256, code, reason FROM oscarflow_mllp_answer WHERE pipeline = ? AND sender = ? AND control_id = ?",
    )
    .bind(pipeline)
    .bind(sender)
    .bind(control)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.and_then(|(s, code, reason)| {
        if s != sha {
            tracing::warn!(
                pipeline,
                "An MLLP control id was reused for a different message; processing it."
            );
            return None;
        }
        let code = match code.as_str() {
            "AA" => AckCode::Accept,
            "AR" => AckCode::Reject,
            _ => return None,
        };
        Some(Answer { code, reason })
    }))
}

async fn record_answer(
    store: &Store,
    pipeline: &str,
    sender: &str,
    control: &str,
    sha: &str,
    answer: &Answer,
) -> Result<(), sqlx::Error> {
    // Only final answers: an AE invites a re-send, which must be processed again.
    if answer.code == AckCode::Error {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM oscarflow_mllp_answer WHERE pipeline = ? AND sender = ? AND control_id = ?",
    )
    .bind(pipeline)
    .bind(sender)
    .bind(control)
    .execute(&store.pool)
    .await?;
    sqlx::query(
        "INSERT INTO oscarflow_mllp_answer (pipeline, sender, control_id, content_sha256, code, reason, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(pipeline)
    .bind(sender)
    .bind(control)
    .bind(sha)
    .bind(answer.letters())
    .bind(answer.reason.as_deref())
    .bind(crate::store::now_sql())
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Fault injection ([`super::CrashHook`]): called after a message settled and before its
/// answer is recorded and sent; `true` drops the connection right there.
pub use super::CrashHook;

/// The source.
pub struct MllpSource {
    cfg: MllpConfig,
    /// Tests bind port 0 and learn the address here.
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    crash_before_answer: Option<CrashHook>,
}

impl MllpSource {
    pub fn new(cfg: MllpConfig) -> Self {
        Self {
            cfg,
            bound: None,
            crash_before_answer: None,
        }
    }

    /// See [`CrashHook`].
    pub fn with_crash_before_answer(mut self, hook: CrashHook) -> Self {
        self.crash_before_answer = Some(hook);
        self
    }

    /// Reports the bound address (useful with port 0).
    pub fn with_bound_address(mut self, tx: tokio::sync::oneshot::Sender<SocketAddr>) -> Self {
        self.bound = Some(tx);
        self
    }
}

/// What a connection task needs.
#[derive(Clone)]
struct Conn {
    pipeline: Arc<str>,
    id: Arc<str>,
    out: super::Outlet<Raw>,
    in_flight: Arc<InFlight>,
    observers: Observers,
    stamp: super::Stamp,
    store: Store,
    cfg: MllpConfig,
    crash_before_answer: Option<CrashHook>,
    closed_log: Arc<ClosedLog>,
}

impl Conn {
    /// Counts a connection closed by the limits (and logs the counts, at most once a minute).
    fn count_closed(&self, why: &'static str) {
        counter(
            MetricName::ListenerConnectionsClosed,
            &[
                ("listener", "mllp".to_string()),
                ("pipeline", self.pipeline.to_string()),
                ("component", self.id.to_string()),
                ("reason", why.to_string()),
            ],
            1,
        );
        self.closed_log.note(why);
    }
}

/// An unfinished frame that has been arriving for this long may give way to a new connection
/// when the listener is full (a real frame arrives in well under a second).
pub const SLOW_FRAME: Duration = Duration::from_secs(2);

/// The TLS acceptor for `cfg`, if TLS is configured.
fn tls_acceptor(cfg: &MllpConfig) -> Result<Option<tokio_native_tls::TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
        return Ok(None);
    };
    let cert = std::fs::read(cert)
        .map_err(|e| format!("cannot read tls_cert_file {}: {e}", cert.display()))?;
    let key = std::fs::read(key)
        .map_err(|e| format!("cannot read tls_key_file {}: {e}", key.display()))?;
    let id = native_tls::Identity::from_pkcs8(&cert, &key)
        .map_err(|e| format!("tls_cert_file/tls_key_file are not a usable PEM pair: {e}"))?;
    let acc = native_tls::TlsAcceptor::new(id).map_err(|e| format!("TLS setup: {e}"))?;
    Ok(Some(tokio_native_tls::TlsAcceptor::from(acc)))
}

#[async_trait]
impl Source for MllpSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let tls = tls_acceptor(&self.cfg).map_err(|detail| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("mllp: {detail}"),
        })?;
        let listener = TcpListener::bind(&self.cfg.listen)
            .await
            .map_err(|e| SourceError {
                kind: ErrorKind::Fatal,
                detail: format!("mllp: cannot listen on {}: {e}", self.cfg.listen),
            })?;
        let addr = listener.local_addr().map_err(|e| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("mllp: {e}"),
        })?;
        if let Some(tx) = self.bound {
            let _ = tx.send(addr);
        }
        tracing::info!(pipeline = %cx.pipeline, source = %cx.id, %addr, "MLLP listener ready.");
        let conn = Conn {
            pipeline: cx.pipeline.clone(),
            id: cx.id.clone(),
            out: cx.out.clone(),
            in_flight: cx.in_flight.clone(),
            observers: cx.observers.clone(),
            stamp: cx.stamp("mllp"),
            store: cx.store.clone(),
            cfg: self.cfg.clone(),
            crash_before_answer: self.crash_before_answer.clone(),
            closed_log: Arc::new(ClosedLog::new("mllp")),
        };
        drop(cx.out);
        let mut shutdown = cx.shutdown.clone();
        let slots = Slots::new(Limits {
            max_total: self.cfg.max_connections,
            max_per_peer: self.cfg.max_connections_per_peer,
            slow_after: SLOW_FRAME,
        });
        let mut tasks = JoinSet::new();
        loop {
            // Always accept: a peer over the limits is closed at once rather than left in
            // the backlog (see the module documentation).
            let (stream, peer) = tokio::select! {
                _ = shutdown.wait() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(source = %conn.id, error = %e, "MLLP accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let slot = match slots.admit(peer.ip()) {
                Admission::Refused(why) => {
                    drop(stream);
                    conn.count_closed(why.as_str());
                    continue;
                }
                Admission::Admitted { slot, evicted } => {
                    if let Some(why) = evicted {
                        conn.count_closed(why.as_str());
                    }
                    slot
                }
            };
            let _ = stream.set_nodelay(true);
            let c = conn.clone();
            let sd = cx.shutdown.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                let result = match tls {
                    None => serve(c.clone(), stream, peer, sd, &slot).await,
                    Some(acc) => {
                        // A handshake is a receive: it must finish within the frame deadline.
                        slot.receiving(Some(std::time::Instant::now()));
                        let handshake = tokio::time::timeout(
                            c.cfg.frame_timeout.min(c.cfg.idle_timeout),
                            acc.accept(stream),
                        );
                        tokio::select! {
                            _ = slot.evicted() => Ok(()),
                            r = handshake => match r {
                                Ok(Ok(s)) => {
                                    slot.receiving(None);
                                    serve(c.clone(), s, peer, sd, &slot).await
                                }
                                Ok(Err(e)) => Err(std::io::Error::other(format!("TLS handshake: {e}"))),
                                Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                            },
                        }
                    }
                };
                drop(slot);
                if let Err(e) = result {
                    tracing::info!(source = %c.id, error = %e, "MLLP connection closed.");
                }
            });
            // Reap finished connections as we go.
            while tasks.try_join_next().is_some() {}
        }
        drop(listener);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Serves one connection until the peer closes, it idles out, its frame misses the frame
/// deadline, it gives way to a new connection (see [`crate::conn_limit`]), or shutdown.
async fn serve<S>(
    c: Conn,
    mut stream: S,
    peer: SocketAddr,
    mut shutdown: Shutdown,
    slot: &Slot,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::time::Instant;
    let mut dec = Decoder::new(c.cfg.max_frame_bytes);
    let mut chunk = vec![0u8; 64 * 1024];
    // When the unfinished frame started (its deadline is `frame_timeout` later).
    let mut frame_started: Option<Instant> = None;
    let mut frame_bytes = 0usize;
    loop {
        while let Some(frame) = dec.next_frame() {
            // Paused: the frame is only in memory — not stamped, not counted in flight, not
            // answered — until the resume. A sender that gives up waiting sends it again.
            if matches!(frame, Frame::Message(_)) && c.out.control().intake_stopped() {
                let control = c.out.control().clone();
                tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    _ = slot.evicted() => return Ok(()),
                    _ = control.wait_resumed() => {}
                }
            }
            // Not evictable from here until the answer is written.
            let _busy = slot.busy();
            let (raw, answer) = match frame {
                Frame::Aborted { bytes } => {
                    tracing::warn!(pipeline = %c.pipeline, source = %c.id, peer = %peer, bytes, "The sender abandoned an MLLP frame (a start block before its end block); discarded, not imported.");
                    continue;
                }
                Frame::TooLarge(head) => (
                    head,
                    Answer {
                        code: AckCode::Reject,
                        reason: Some(ReasonCode::TooLarge.as_str().into()),
                    },
                ),
                Frame::Message(raw) => match handle(&c, raw.clone(), peer).await {
                    Some(answer) => (raw, answer),
                    None => {
                        return Err(std::io::Error::other(
                            "fault injection: crashed before the answer",
                        ))
                    }
                },
            };
            // A completed frame: the next one's deadline starts when it is read.
            frame_started = None;
            frame_bytes = 0;
            slot.receiving(None);
            stream
                .write_all(&encode(ack_for(&raw, &answer).as_bytes()))
                .await?;
            stream.flush().await?;
        }
        if dec.in_frame() {
            if frame_started.is_none() {
                frame_started = Some(Instant::now());
            }
        } else {
            frame_started = None;
            frame_bytes = 0;
        }
        slot.receiving(frame_started.map(Instant::into_std));
        if shutdown.is_triggered() {
            return Ok(());
        }
        let idle_deadline = Instant::now() + c.cfg.idle_timeout;
        let frame_deadline = frame_started.map(|t| t + c.cfg.frame_timeout);
        let deadline = frame_deadline.map_or(idle_deadline, |f| f.min(idle_deadline));
        let n = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = slot.evicted() => {
                tracing::debug!(source = %c.id, "MLLP connection gave way to a new one.");
                return Ok(());
            }
            r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => match r {
                Err(_) if frame_deadline.is_some_and(|f| f <= idle_deadline) => {
                    c.count_closed("frame_timeout");
                    tracing::warn!(pipeline = %c.pipeline, source = %c.id, peer = %peer, bytes_received = frame_bytes, frame_timeout = ?c.cfg.frame_timeout, "An MLLP frame did not arrive whole within frame_timeout; discarded, not imported, connection closed.");
                    return Ok(());
                }
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")),
                Ok(r) => r?,
            },
        };
        if n == 0 {
            return Ok(());
        }
        frame_bytes += n;
        dec.extend(&chunk[..n]);
    }
}

/// Sends one message through the pipeline and waits for its outcome. `None`: the crash hook
/// fired (no answer is recorded or sent).
async fn handle(c: &Conn, raw: Bytes, peer: SocketAddr) -> Option<Answer> {
    let digest = sha256(&raw);
    let sha = hex::encode(digest);
    let ident = identity(&raw);
    if let Some((sender, control)) = &ident {
        match recorded_answer(&c.store, &c.pipeline, sender, control, &sha).await {
            Ok(Some(a)) => {
                tracing::info!(pipeline = %c.pipeline, source = %c.id, sha = %&sha[..12], code = a.letters(), "MLLP re-send of an answered message; same answer, not processed again.");
                return Some(a);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pipeline = %c.pipeline, source = %c.id, error = %crate::error::describe_sqlx(&e), "MLLP answer lookup failed.");
                return Some(Answer {
                    code: AckCode::Error,
                    reason: Some("store_unavailable".into()),
                });
            }
        }
    }
    let prov = c.stamp.received_hashed(
        Origin::Mllp {
            peer: peer.to_string(),
            control_id: ident.as_ref().map(|i| i.1.clone()).unwrap_or_default(),
        },
        digest,
        raw.len(),
    );
    let (notifier, receiver) = BatchNotifier::new(Some(c.in_flight.clone()));
    let env = Envelope::new(
        prov.clone(),
        Raw {
            bytes: raw,
            name: format!("mllp-{}", &sha[..16]),
            lab_type: None,
        },
        notifier.token(),
    );
    drop(notifier);
    if let Err(e) = c.out.send(env).await {
        // The pipeline is stopping, or the raw archive failed: the envelope's token was
        // dropped, the batch fails, and the peer gets an AE so that it sends again.
        let _ = receiver.wait().await;
        return Some(match e {
            SendError::Closed => Answer::for_outcome(BatchStatus::Failed, None),
            SendError::Archive(_) => Answer {
                code: AckCode::Error,
                reason: Some("archive_unavailable".into()),
            },
        });
    }
    let outcome = receiver.wait_outcome().await;
    let answer = Answer::for_outcome(outcome.status, outcome.reason);
    if c.crash_before_answer.as_ref().is_some_and(|h| h()) {
        return None;
    }
    if let Some((sender, control)) = &ident {
        if let Err(e) = record_answer(&c.store, &c.pipeline, sender, control, &sha, &answer).await {
            // The answer still goes out; a re-send is deduplicated by the import's MD5.
            tracing::warn!(pipeline = %c.pipeline, source = %c.id, error = %crate::error::describe_sqlx(&e), "Recording the MLLP answer failed.");
        }
    }
    // For MLLP the ACK is the release: AA/AR let the peer forget the message, AE does not.
    c.observers.emit(Event::Settled {
        prov: &prov,
        status: outcome.status,
        released: outcome.status.may_release(),
    });
    Some(answer)
}

impl super::SourceComponent for MllpConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Raw
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(
        &self,
        _cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        Ok(super::BuiltSource::new::<crate::envelope::Raw>(Box::new(
            MllpSource::new(self.clone()),
        )))
    }
    fn consumes(&self) -> (&'static str, String) {
        ("MLLP address", self.listen.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(d: &mut Decoder) -> Vec<Frame> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn decodes_frames_split_anywhere_and_skips_bytes_between_them() {
        let mut d = Decoder::new(100);
        d.extend(b"\r\n\x0bMSH|a\rPID|1\x1c\r\n\x0bMSH|b\x1c");
        assert_eq!(
            frames(&mut d),
            vec![
                Frame::Message(Bytes::from_static(b"MSH|a\rPID|1")),
                Frame::Message(Bytes::from_static(b"MSH|b"))
            ]
        );
        d.extend(b"\r\x0bMSH|");
        assert!(frames(&mut d).is_empty());
        d.extend(b"c\x1c\r");
        assert_eq!(
            frames(&mut d),
            vec![Frame::Message(Bytes::from_static(b"MSH|c"))]
        );
    }

    #[test]
    fn a_start_block_inside_a_frame_discards_the_unfinished_frame() {
        let mut d = Decoder::new(100);
        // Half a message, then the sender starts over with a whole one.
        d.extend(b"\x0bMSH|half\rPID|1\x0bMSH|whole\rPID|2\x1c\r");
        assert_eq!(
            frames(&mut d),
            vec![
                Frame::Aborted { bytes: 14 },
                Frame::Message(Bytes::from_static(b"MSH|whole\rPID|2"))
            ]
        );
        // Split across reads: the start block arrives after the scan of the first part.
        let mut d = Decoder::new(100);
        d.extend(b"\x0bMSH|half\rOBR|1");
        assert!(frames(&mut d).is_empty());
        d.extend(b"\x0bMSH|next\x1c");
        assert_eq!(
            frames(&mut d),
            vec![
                Frame::Aborted { bytes: 14 },
                Frame::Message(Bytes::from_static(b"MSH|next"))
            ]
        );
        // An over-long frame abandoned the same way: the next frame still decodes.
        let mut d = Decoder::new(10);
        d.extend(b"\x0bMSH|^~\\&|A|B|C|D|E|F");
        assert!(frames(&mut d).is_empty());
        d.extend(b"\x0bMSH|ok\x1c");
        let got = frames(&mut d);
        assert!(matches!(got[0], Frame::Aborted { .. }), "{got:?}");
        assert_eq!(got[1], Frame::Message(Bytes::from_static(b"MSH|ok")));
    }

    #[test]
    fn an_over_long_frame_is_skipped_without_buffering_and_reported() {
        let mut d = Decoder::new(10);
        d.extend(b"\x0bMSH|^~\\&|A|B|C");
        assert!(frames(&mut d).is_empty());
        d.extend(&[b'x'; 5000]);
        assert!(frames(&mut d).is_empty());
        assert!(d.buf.capacity() < 20_000, "skipped bytes are not kept");
        d.extend(b"yy\x1c\r\x0bMSH|ok\x1c\r");
        let got = frames(&mut d);
        assert!(matches!(&got[0], Frame::TooLarge(h) if h.starts_with(b"MSH|^~\\&|A")));
        assert_eq!(got[1], Frame::Message(Bytes::from_static(b"MSH|ok")));
    }

    #[test]
    fn an_over_long_frame_arriving_whole_is_refused_and_the_next_one_decoded() {
        let mut d = Decoder::new(10);
        let mut stream = encode(b"MSH|^~\\&|A|B|C|D|E");
        stream.extend(encode(b"MSH|ok"));
        d.extend(&stream);
        let got = frames(&mut d);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Frame::TooLarge(h) if h.starts_with(b"MSH|^~")));
        assert_eq!(got[1], Frame::Message(Bytes::from_static(b"MSH|ok")));
    }

    #[test]
    fn answers_name_the_message_and_the_reason() {
        let raw = b"MSH|^~\\&|LAB|LIFELABS|OSCAR|CLINIC|20260101||ORU^R01|C9|P|2.3\rPID|1";
        let a = ack_for(
            raw,
            &Answer::for_outcome(BatchStatus::DeadLettered, Some(ReasonCode::MissingSegment)),
        );
        let m = Message::parse(&a).unwrap();
        assert_eq!(m.get("MSA-1"), "AR");
        assert_eq!(m.get("MSA-2"), "C9");
        assert_eq!(m.get("MSA-3"), "missing_segment");
        let junk = ack_for(
            b"\x00\x01 not hl7",
            &Answer::for_outcome(BatchStatus::DeadLettered, Some(ReasonCode::NotHl7)),
        );
        let m = Message::parse(&junk).unwrap();
        assert_eq!(m.get("MSA-1"), "AR");
        assert_eq!(m.get("MSA-3"), "not_hl7");
        let failed = ack_for(raw, &Answer::for_outcome(BatchStatus::Failed, None));
        assert_eq!(Message::parse(&failed).unwrap().get("MSA-1"), "AE");
        let exhausted = Answer::for_outcome(
            BatchStatus::DeadLettered,
            Some(ReasonCode::RetriesExhausted),
        );
        assert_eq!(exhausted.code, AckCode::Error);
    }

    proptest! {
        /// Framing is independent of how the stream is chunked, for frames under and over
        /// the limit (an over-long frame is reported as such, never cut into pieces).
        #[test]
        fn framing_is_independent_of_chunking(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no block bytes", |b| *b != START && *b != END), 0..200), 1..6),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            const MAX: usize = 120;
            let mut stream = Vec::new();
            for m in &msgs {
                stream.extend(encode(m));
                stream.extend_from_slice(b"\r\n");
            }
            let mut d = Decoder::new(MAX);
            let mut got = Vec::new();
            let mut pos = 0;
            for c in cuts.iter().cycle() {
                if pos >= stream.len() { break; }
                let end = (pos + c).min(stream.len());
                d.extend(&stream[pos..end]);
                pos = end;
                got.extend(frames(&mut d));
            }
            prop_assert_eq!(got.len(), msgs.len());
            for (g, m) in got.iter().zip(&msgs) {
                match g {
                    Frame::Message(b) => prop_assert_eq!(&b[..], &m[..]),
                    Frame::TooLarge(head) => {
                        prop_assert!(m.len() > MAX);
                        prop_assert!(m.starts_with(head));
                    }
                    Frame::Aborted { .. } => prop_assert!(false, "no frame here was abandoned"),
                }
            }
        }
    }
}
