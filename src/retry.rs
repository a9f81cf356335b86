//! Retry timing: [`backoff`], exponential with full jitter, for every component that
//! retries a transient failure (the stage and sink runners, the raw archive). It sits below
//! the topology so that what retries need not import the runners.

use std::time::Duration;

use rand::Rng;

use crate::config::RetrySettings;

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
