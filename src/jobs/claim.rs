//! What the outbound queues and their sinks share: a claimed row's heartbeat (so that a send
//! held up by rate limits never looks abandoned, and a sink whose claim was taken over never
//! sends), the claimant's id, and small helpers for timestamps and PHI-free database errors.

use std::time::Duration;

use super::{OutboundError, OutboundReason};
use crate::error::{classify_sqlx, describe_sqlx};
use crate::store::Store;

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

/// Defaults shared by the queue sources' settings.
pub(crate) mod defaults {
    use std::time::Duration;

    /// A claim not refreshed for this long belongs to a worker that stopped.
    pub fn claim_timeout() -> Duration {
        Duration::from_secs(600)
    }
    /// How long after a send broke off the message is looked up in RingCentral.
    pub fn settle() -> Duration {
        Duration::from_secs(60)
    }
}

/// Sets a text's state (and its reason) in our outbox.
pub(crate) async fn set_outbox_state(
    store: &Store,
    id: i64,
    state: &str,
    error: Option<&str>,
) -> Result<(), OutboundError> {
    sqlx::query(
        "UPDATE oscarflow_sms_outbox SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
    )
    .bind(state)
    .bind(error.map(|e| cut(e, 255)))
    .bind(crate::store::now_sql())
    .bind(id)
    .execute(&store.pool)
    .await
    .map(|_| ())
    .map_err(db("update a text's state"))
}
