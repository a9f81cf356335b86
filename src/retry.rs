//! Retry timing: [`backoff`], exponential with full jitter, for every component that
//! retries a transient failure (the stage and sink runners, the raw archive). It sits below
//! the topology so that what retries need not import the runners; [`RetrySettings`], the
//! policy (a pipeline's `[pipeline.retry]`, the archive's `retry`), with it.

use std::time::Duration;

use rand::Rng;

use serde::Deserialize;

use crate::config::duration::deserialize_duration;

/// The delay before attempt `attempt + 1`.
pub fn backoff(retry: &RetrySettings, attempt: u32) -> Duration {
    let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    let full = retry
        .initial_backoff
        .saturating_mul(exp)
        .min(retry.max_backoff);
    let half = full / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter).min(full - half)
}

/// Retry policy for transient errors (exponential backoff with full jitter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts including the first; after the last, the message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(deserialize_with = "deserialize_duration")]
    pub initial_backoff: Duration,
    /// Upper bound of a single delay.
    #[serde(deserialize_with = "deserialize_duration")]
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}
