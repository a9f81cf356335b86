//! The generic runners: [`run_stage`], [`run_sink`] and dead-lettering, shared by every
//! component so that every component keeps the same promises.
//!
//! - **Retry.** A `Transient` error is retried with exponential backoff and jitter (delay
//!   `initial × 2^(n-1)`, capped, drawn uniformly from its upper half) up to
//!   `retry.max_attempts`; then the message is dead-lettered as `retries_exhausted`.
//! - **Database outage.** A transient error that says the database itself is unavailable
//!   (unreachable, out of connections, read-only, a lock wait timeout: `ProcessError::outage`)
//!   is not the message's fault: it is retried past the budget, with the backoff capped at
//!   `retry.max_backoff`, until the database answers, while the pipeline's intake is held
//!   ([`crate::sources::SourceControl::hold`]) so that new inputs stay in their sources.
//!   Readiness says so, `oscarflow_database_outage_seconds` counts the outage's length, and
//!   its start and end are logged. A stopping daemon still stops: what waits is aborted and
//!   its inputs are re-delivered.
//! - **Dead letter.** A `Data` error (or spent retries) writes the payload's original bytes to
//!   the dead-letter store and resolves the ack as `DeadLettered`, which lets the source
//!   release its input: the message is kept, not lost. If even the dead-letter write fails,
//!   the ack fails and the input stays for re-delivery.
//! - **Fatal.** A `Fatal` error stops the component (and so the pipeline); the envelope's
//!   ack fails, its input stays.
//! - **Order.** Stages keep arrival order (`buffered`). The sink runs up to `concurrency`
//!   writes at once, but an envelope waits for every earlier envelope that shares one of its
//!   ordering keys: same-key messages commit in order, different keys in parallel.
//! - **Group commit.** A sink whose [`Sink::group_limit`] allows it takes, with each
//!   envelope, those already waiting in its channel (up to the limit's files and bytes) and
//!   commits them in one transaction, in arrival order. Nothing waits to fill a group: at low
//!   load an envelope goes alone, and groups grow only with the backlog. A group waits for
//!   the earlier groups of every key its envelopes hold. Every ack resolves after the group's
//!   commit; a data error dead-letters its envelope alone and the rest commit again, and any
//!   other failure falls back to one envelope at a time with the usual retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

use crate::retry::backoff;
use futures::future::{FutureExt, Shared};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::ack::{AckToken, BatchStatus};
use crate::component::ProcessError;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::envelope::{Envelope, Provenance, RawBytes};
use crate::error::ErrorKind;
use crate::payload::{Keyed, OrderKey};
use crate::retry::RetrySettings;
use crate::sinks::{GroupError, Sink};
use crate::stages::{Emitter, Reject, Stage};
use crate::telemetry::{Event, MetricName, Observers};

/// What a runner needs to know about its component and pipeline.
#[derive(Clone)]
pub struct RunContext {
    pub pipeline: Arc<str>,
    pub component: Arc<str>,
    pub component_kind: &'static str,
    pub dead_letters: DeadLetterStore,
    pub retry: RetrySettings,
    pub observers: Observers,
    /// The pipeline's intake, held while a database outage is waited out.
    pub control: Arc<crate::sources::SourceControl>,
}

/// A component stopped on a fatal error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("component `{component}` stopped: {detail}")]
pub struct Fatal {
    pub component: String,
    pub detail: String,
}

/// Runs `f` until it succeeds, fails with a non-transient error, or the retry budget is
/// spent. Returns the attempts used with the result.
async fn with_retry<T, F, Fut>(
    cx: &RunContext,
    prov: &Provenance,
    mut f: F,
) -> (u32, Result<T, ProcessError>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProcessError>>,
{
    let mut attempt = 1;
    // Held while the database is unavailable; released when this returns.
    let mut hold: Option<crate::sources::IntakeHold> = None;
    let mut waited = 0;
    loop {
        match f().await {
            Ok(v) => return (attempt, Ok(v)),
            Err(e)
                if e.kind == ErrorKind::Transient
                    && (e.outage || attempt < cx.retry.max_attempts) =>
            {
                if e.outage && hold.is_none() {
                    // The database is down, not this message: no retry budget, no dead
                    // letter. The intake is held so that inputs stay in their sources.
                    hold = Some(cx.control.hold(&cx.pipeline, &cx.component));
                }
                cx.observers.emit(Event::Retrying {
                    prov,
                    component: &cx.component,
                    attempt,
                    kind: e.kind,
                    error: &e.detail,
                });
                // An outage's backoff grows from its own start, capped at `max_backoff`.
                let n = if e.outage {
                    waited += 1;
                    waited
                } else {
                    attempt
                };
                tokio::time::sleep(backoff(&cx.retry, n)).await;
                attempt += 1;
            }
            Err(e) => return (attempt, Err(e)),
        }
    }
}

/// Writes a dead letter (retrying the write itself briefly) and resolves `ack` accordingly.
pub async fn dead_letter(cx: &RunContext, dl: DeadLetter, ack: AckToken) {
    let mut last_err = String::new();
    for attempt in 1..=cx.retry.max_attempts.max(3) {
        match cx.dead_letters.put(&dl).await {
            Ok(id) => {
                cx.observers.emit(Event::DeadLettered {
                    prov: &dl.provenance,
                    component: &cx.component,
                    part: dl.part,
                    reason: dl.reason,
                    dead_letter_id: &id,
                });
                ack.dead_lettered(dl.reason);
                return;
            }
            Err(e) => {
                last_err = e.to_string();
                tokio::time::sleep(backoff(&cx.retry, attempt)).await;
            }
        }
    }
    cx.observers.emit(Event::NotDelivered {
        prov: &dl.provenance,
        component: &cx.component,
        error: &format!("dead-letter store unavailable: {last_err}"),
    });
    drop(ack); // fails the batch: the input stays and is re-delivered
}

async fn dead_letter_reject(cx: &RunContext, r: Reject) {
    let Reject {
        id,
        provenance,
        part,
        raw,
        reason,
        detail,
        ack,
    } = r;
    let dl = DeadLetter {
        id,
        provenance,
        part,
        raw,
        stage: cx.component.clone(),
        stage_kind: cx.component_kind,
        reason,
        error_kind: ErrorKind::Data,
        detail,
        attempts: 1,
    };
    dead_letter(cx, dl, ack).await;
}

async fn dead_letter_error<T: RawBytes>(
    cx: &RunContext,
    env: Envelope<T>,
    err: ProcessError,
    attempts: u32,
) {
    let Envelope {
        id,
        provenance,
        payload,
        ack,
    } = env;
    let detail = if err.kind == ErrorKind::Transient {
        format!("{} (after {attempts} attempts)", err.detail)
    } else {
        err.detail.clone()
    };
    let dl = DeadLetter {
        id,
        provenance,
        part: payload.part(),
        raw: payload.raw_bytes(),
        stage: cx.component.clone(),
        stage_kind: cx.component_kind,
        reason: err.reason,
        error_kind: err.kind,
        detail,
        attempts,
    };
    dead_letter(cx, dl, ack).await;
}

/// Records how long a component took over one envelope, retries included.
fn stage_latency(cx: &RunContext, started: std::time::Instant) {
    crate::telemetry::histogram(
        MetricName::StageDurationSeconds,
        &[
            ("pipeline", cx.pipeline.to_string()),
            ("component", cx.component.to_string()),
        ],
        started.elapsed().as_secs_f64(),
    );
}

/// Runs a stage until its input channel closes. Outputs keep arrival order.
pub async fn run_stage<I, O>(
    stage: Arc<dyn Stage<I, O>>,
    rx: mpsc::Receiver<Envelope<I>>,
    tx: mpsc::Sender<Envelope<O>>,
    cx: RunContext,
    concurrency: usize,
) -> Result<(), Fatal>
where
    I: RawBytes + Send + Sync + 'static,
    O: Send + 'static,
{
    let cx = Arc::new(cx);
    let mut results = ReceiverStream::new(rx)
        .map(|env: Envelope<I>| {
            let stage = stage.clone();
            let cx = cx.clone();
            // Each call runs in its own task: it must finish (and give back any pooled
            // connection it holds) even while this loop is blocked sending downstream.
            // Polling it only from here would freeze it mid-query and deadlock a pipeline
            // whose sink needs that connection.
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let (attempts, r) = with_retry(&cx, &env.provenance, || {
                    let stage = stage.clone();
                    let env = &env;
                    async move {
                        let mut em = Emitter::default();
                        stage.process(env, &mut em).await.map(|()| em)
                    }
                })
                .await;
                stage_latency(&cx, started);
                match r {
                    Ok(em) => {
                        for rej in em.rejects {
                            dead_letter_reject(&cx, rej).await;
                        }
                        env.ack.hand_over();
                        Ok(em.outputs)
                    }
                    Err(e) if e.kind == ErrorKind::Fatal => {
                        cx.observers.emit(Event::NotDelivered {
                            prov: &env.provenance,
                            component: &cx.component,
                            error: &e.detail,
                        });
                        Err(Fatal {
                            component: cx.component.to_string(),
                            detail: e.detail,
                        })
                    }
                    Err(e) => {
                        dead_letter_error(&cx, env, e, attempts).await;
                        Ok(Vec::new())
                    }
                }
            })
        })
        .buffered(concurrency.max(1));
    while let Some(joined) = results.next().await {
        let r = joined.unwrap_or_else(|e| {
            Err(Fatal {
                component: cx.component.to_string(),
                detail: if e.is_panic() {
                    "task panicked".into()
                } else {
                    "task cancelled".into()
                },
            })
        });
        for out in r? {
            if tx.send(out).await.is_err() {
                // Downstream stopped; dropped envelopes fail their batches (re-delivery).
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn deliver<T>(
    sink: Arc<dyn Sink<T>>,
    env: Envelope<T>,
    cx: Arc<RunContext>,
) -> Result<(), Fatal>
where
    T: RawBytes + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    let (attempts, r) = with_retry(&cx, &env.provenance, || sink.write(&env)).await;
    stage_latency(&cx, started);
    match r {
        Ok(()) => {
            env.ack.resolve(BatchStatus::Delivered);
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::Fatal => {
            cx.observers.emit(Event::NotDelivered {
                prov: &env.provenance,
                component: &cx.component,
                error: &e.detail,
            });
            Err(Fatal {
                component: cx.component.to_string(),
                detail: e.detail,
            })
        }
        Err(e) => {
            dead_letter_error(&cx, env, e, attempts).await;
            Ok(())
        }
    }
}

/// Commits `group` in one transaction ([`Sink::write_group`]) and resolves every ack after
/// it. A data error of one envelope dead-letters that one alone and the rest are committed
/// again; a data error of no one envelope known (a statement shared by several) splits the
/// group in halves, committed in order, until the culprit is alone; any other error
/// (transient, fatal) writes them one at a time with [`deliver`], so each gets exactly the
/// retries, outage hold and dead letter it would have got alone.
async fn deliver_group<T>(
    sink: Arc<dyn Sink<T>>,
    group: Vec<Envelope<T>>,
    cx: Arc<RunContext>,
) -> Result<(), Fatal>
where
    T: RawBytes + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    let mut pending: std::collections::VecDeque<Vec<Envelope<T>>> = [group].into();
    while let Some(mut group) = pending.pop_front() {
        let alone = loop {
            if group.len() <= 1 {
                break group;
            }
            let refs: Vec<&Envelope<T>> = group.iter().collect();
            match sink.write_group(&refs).await {
                Ok(()) => {
                    for env in group {
                        stage_latency(&cx, started);
                        env.ack.resolve(BatchStatus::Delivered);
                    }
                    break Vec::new();
                }
                Err(GroupError {
                    index: Some(index),
                    error,
                }) if error.kind == ErrorKind::Data && index < group.len() => {
                    let env = group.remove(index);
                    dead_letter_error(&cx, env, error, 1).await;
                }
                Err(GroupError { index: None, error }) if error.kind == ErrorKind::Data => {
                    let second = group.split_off(group.len() / 2);
                    pending.push_front(second);
                    pending.push_front(group);
                    break Vec::new();
                }
                Err(_) => break group,
            }
        };
        for env in alone {
            deliver(sink.clone(), env, cx.clone()).await?;
        }
    }
    Ok(())
}

/// Runs a sink until its input channel closes. See the module docs for ordering and group
/// commit.
pub async fn run_sink<T>(
    sink: Arc<dyn Sink<T>>,
    mut rx: mpsc::Receiver<Envelope<T>>,
    cx: RunContext,
    concurrency: usize,
    order_by: OrderKey,
) -> Result<(), Fatal>
where
    T: RawBytes + Keyed + Send + Sync + 'static,
{
    let cx = Arc::new(cx);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let limit = sink.group_limit();
    // Per key, the completion of the latest group holding it, and a flag that says it
    // finished (so entries can be dropped even when nobody waited on them).
    let mut tails: HashMap<String, (Shared<oneshot::Receiver<()>>, Arc<AtomicBool>)> =
        HashMap::new();
    let mut tasks: JoinSet<Result<(), Fatal>> = JoinSet::new();
    let mut fatal: Option<Fatal> = None;
    // An envelope taken from the channel that did not fit the last group: the next one's first.
    let mut next: Option<Envelope<T>> = None;
    loop {
        let env = match next.take() {
            Some(env) => env,
            None => match rx.recv().await {
                Some(env) => env,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // Group commit: what waited in the channel meanwhile joins this envelope, up to the
        // sink's limit. At low load nothing waits and the envelope goes alone.
        let mut group = vec![env];
        // Sizes only for a sink that groups: a payload kept on disk (a fax) would be read
        // into memory to be measured.
        let mut bytes = if limit.files > 1 {
            group[0].payload.raw_bytes().len()
        } else {
            0
        };
        while group.len() < limit.files {
            let Ok(env) = rx.try_recv() else { break };
            let size = env.payload.raw_bytes().len();
            if bytes + size > limit.bytes {
                next = Some(env);
                break;
            }
            bytes += size;
            group.push(env);
        }
        let keys: Vec<String> = group
            .iter()
            .flat_map(|env| env.payload.keys(order_by))
            .collect();
        let mut waits = Vec::new();
        for k in &keys {
            if let Some((t, _)) = tails.get(k) {
                waits.push(t.clone());
            }
        }
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let done = done_rx.shared();
        let finished = Arc::new(AtomicBool::new(false));
        for k in keys {
            tails.insert(k, (done.clone(), finished.clone()));
        }
        let sink = sink.clone();
        let cx2 = cx.clone();
        tasks.spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let r = if group.len() == 1 {
                let env = group.pop().expect("one envelope");
                deliver(sink, env, cx2).await
            } else {
                deliver_group(sink, group, cx2).await
            };
            finished.store(true, AtomicOrdering::SeqCst);
            drop(done_tx);
            drop(permit);
            r
        });
        while let Some(res) = tasks.try_join_next() {
            if let Some(f) = join_fatal(res, &cx) {
                fatal.get_or_insert(f);
            }
        }
        if fatal.is_some() {
            break;
        }
        tails.retain(|_, (_, finished)| !finished.load(AtomicOrdering::SeqCst));
    }
    drop(rx);
    while let Some(res) = tasks.join_next().await {
        if let Some(f) = join_fatal(res, &cx) {
            fatal.get_or_insert(f);
        }
    }
    match fatal {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn join_fatal(
    res: Result<Result<(), Fatal>, tokio::task::JoinError>,
    cx: &RunContext,
) -> Option<Fatal> {
    match res {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(e) => Some(Fatal {
            component: cx.component.to_string(),
            detail: if e.is_panic() {
                "task panicked".into()
            } else {
                "task cancelled".into()
            },
        }),
    }
}
