//! What the outbound workers share: a claimed row's heartbeat (so that a send held up by
//! rate limits never looks abandoned, and a worker that lost its claim never sends), and
//! small helpers for timestamps and PHI-free database errors.

use std::time::Duration;

use super::{OutboundError, OutboundReason};
use crate::error::{classify_sqlx, describe_sqlx};
use crate::ringcentral::RcConfig;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::{counter, gauge, MetricName};

/// The checks every outbound worker's settings share.
pub(crate) fn check_worker(name: &str, rc: &RcConfig, batch: u32, attempts: u32) -> Vec<String> {
    let mut v: Vec<String> = rc
        .validate()
        .into_iter()
        .map(|p| format!("ringcentral: {p}"))
        .collect();
    if name.is_empty() || name.len() > 40 {
        v.push("name must be 1 to 40 characters".into());
    }
    if batch == 0 || attempts == 0 {
        v.push("batch and max_attempts must be at least 1".into());
    }
    v
}

/// The RingCentral client of a worker whose settings are valid; else the settings' problems
/// as one `config` error (`table` and `name` say which worker).
pub(crate) fn worker_client(
    table: &str,
    name: &str,
    problems: Vec<String>,
    rc: &RcConfig,
) -> Result<crate::ringcentral::RcClient, OutboundError> {
    if !problems.is_empty() {
        return Err(OutboundError::config(format!(
            "{table} `{name}`: {}",
            problems.join("; ")
        )));
    }
    crate::ringcentral::RcClient::new(rc.clone()).map_err(|e| OutboundError::config(e.detail))
}

/// Runs `round` now and then every `interval` until `shutdown` fires; `done` logs a
/// finished round, a failed one is logged here (PHI-free text) and tried again next time.
pub(crate) async fn run_rounds<R, F, Fut>(
    worker: &str,
    interval: Duration,
    mut shutdown: Shutdown,
    mut round: F,
    done: impl Fn(&R),
) where
    F: FnMut(Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<R, OutboundError>>,
{
    loop {
        match round(shutdown.clone()).await {
            Ok(r) => done(&r),
            Err(e) => {
                tracing::error!(worker, reason = e.reason.as_str(), kind = ?e.kind, error = %e, "Round failed; trying again at the next round.");
                counter(
                    MetricName::OutboundRoundFailures,
                    &[
                        ("worker", worker.to_string()),
                        ("reason", e.reason.as_str().to_string()),
                    ],
                    1,
                );
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Counts a round's outcomes in `/metrics`: `oscarflow_outbound_messages_total` by
/// worker kind (`fax`, `sms`), worker name (from the config) and outcome, and the time of
/// the worker's last finished round.
pub(crate) fn record_round(kind: &'static str, worker: &str, outcomes: &[(&'static str, u32)]) {
    for (outcome, n) in outcomes {
        counter(
            MetricName::OutboundMessages,
            &[
                ("kind", kind.to_string()),
                ("worker", worker.to_string()),
                ("outcome", outcome.to_string()),
            ],
            u64::from(*n),
        );
    }
    gauge(
        MetricName::OutboundLastRound,
        &[("kind", kind.to_string()), ("worker", worker.to_string())],
        time::OffsetDateTime::now_utc().unix_timestamp() as f64,
    );
}

/// A claim table: `table` keyed by `key`, with `owner`, `state` and `claimed_unix` columns.
#[derive(Clone, Copy)]
pub(crate) struct ClaimTable {
    pub table: &'static str,
    pub key: &'static str,
}

impl ClaimTable {
    /// Refreshes `owner`'s claim on row `id` (in state `sending`); false when it is not
    /// (or no longer) `owner`'s.
    pub async fn touch(&self, store: &Store, id: i64, owner: &str) -> bool {
        sqlx::query(&format!(
            "UPDATE {} SET claimed_unix = ? WHERE {} = ? AND owner = ? AND state = 'sending'",
            self.table, self.key
        ))
        .bind(unix_now())
        .bind(id)
        .bind(owner)
        .execute(&store.pool)
        .await
        .is_ok_and(|r| r.rows_affected() == 1)
    }

    /// Runs `work` while keeping the claim fresh every quarter of `timeout`. `None`: the claim
    /// was lost before the work started (it is not started) or during it (it is dropped).
    pub async fn while_holding<F: std::future::Future>(
        &self,
        store: &Store,
        id: i64,
        owner: &str,
        timeout: Duration,
        work: F,
    ) -> Option<F::Output> {
        if !self.touch(store, id, owner).await {
            return None;
        }
        let beat = (timeout / 4).max(Duration::from_millis(100));
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep(beat) => {
                    if !self.touch(store, id, owner).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// A database error with its context, classified (a lost connection is transient), its
/// text PHI-free.
pub(crate) fn db(context: &'static str) -> impl Fn(sqlx::Error) -> OutboundError {
    move |e| OutboundError {
        kind: classify_sqlx(&e),
        reason: OutboundReason::Database,
        detail: format!("{context}: {}", describe_sqlx(&e)),
    }
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A Unix time as RFC 3339 UTC (RingCentral's `dateFrom`).
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A worker's owner id: its name, process id and a random part.
pub(crate) fn owner_id(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// Defaults shared by the outbound workers' settings.
pub(crate) mod defaults {
    use std::time::Duration;

    pub fn attempts() -> u32 {
        5
    }
    /// A claim not refreshed for this long belongs to a worker that stopped.
    pub fn claim_timeout() -> Duration {
        Duration::from_secs(600)
    }
    /// How long after a send broke off the message is looked up in RingCentral.
    pub fn settle() -> Duration {
        Duration::from_secs(60)
    }
}
