//! How to reach a patient by text, as OSCAR's tables say: the mobile number (OSCAR's
//! `demographicExt` `demo_cell`, optionally `demographic.phone`) normalised to E.164, and
//! whether the patient opted out (our `oscarflow_sms_optout` table, or a configured
//! `demographicExt` key such as `sms_opt_out = yes`).
//!
//! Numbers never leave this module in an error text or a log line.

use crate::jobs::claim::db;
use crate::jobs::OutboundError;
use crate::ringcentral::phone::to_e164;
use crate::store::{is_unique_violation, now_sql, text_column, Store};

/// Where a chart's texts go and which opt-out applies (from the source's settings).
#[derive(Debug, Clone)]
pub struct ContactRules {
    /// A `demographicExt` key whose truthy value (`yes`, `true`, `1`, `y`, `on`) means "no
    /// texts".
    pub opt_out_ext_key: Option<String>,
    /// The `demographicExt` key of the mobile number.
    pub cell_ext_key: String,
    /// Fall back to `demographic.phone` when there is no mobile number.
    pub fallback_to_phone: bool,
}

/// A patient's number and opt-out state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    OptedOut,
    /// No usable number, with the PHI-free reason.
    Invalid(String),
    Number(String),
}

pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1" | "on"
    )
}

async fn ext(
    store: &Store,
    demographic_no: i64,
    key: &str,
) -> Result<Option<String>, OutboundError> {
    let row = sqlx::query(
        "SELECT value FROM demographicExt WHERE demographic_no = ? AND key_val = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(demographic_no)
    .bind(key)
    .fetch_optional(&store.pool)
    .await
    .map_err(db("read demographicExt"))?;
    match row {
        Some(r) => text_column(&r, 0).map_err(db("read demographicExt")),
        None => Ok(None),
    }
}

/// Whether the patient opted out of texts.
pub async fn opted_out(
    store: &Store,
    rules: &ContactRules,
    demographic_no: i64,
) -> Result<bool, OutboundError> {
    let opted: Option<i64> = sqlx::query_scalar(
        "SELECT demographic_no FROM oscarflow_sms_optout WHERE demographic_no = ?",
    )
    .bind(demographic_no)
    .fetch_optional(&store.pool)
    .await
    .map_err(db("read opt-outs"))?;
    if opted.is_some() {
        return Ok(true);
    }
    if let Some(key) = &rules.opt_out_ext_key {
        if let Some(v) = ext(store, demographic_no, key).await? {
            return Ok(truthy(&v));
        }
    }
    Ok(false)
}

/// The patient's reach: opted out, no usable number, or the number in E.164.
pub async fn reach(
    store: &Store,
    rules: &ContactRules,
    demographic_no: i64,
) -> Result<Reach, OutboundError> {
    if opted_out(store, rules, demographic_no).await? {
        return Ok(Reach::OptedOut);
    }
    let mut raw = ext(store, demographic_no, &rules.cell_ext_key).await?;
    if raw.as_deref().is_none_or(|v| v.trim().is_empty()) && rules.fallback_to_phone {
        let row = sqlx::query("SELECT phone FROM demographic WHERE demographic_no = ?")
            .bind(demographic_no)
            .fetch_optional(&store.pool)
            .await
            .map_err(db("read the chart's phone"))?;
        raw = match row {
            Some(r) => text_column(&r, 0).map_err(db("read the chart's phone"))?,
            None => None,
        };
    }
    let raw = raw.unwrap_or_default();
    Ok(match to_e164(&raw) {
        Ok(n) => Reach::Number(n),
        Err(e) => Reach::Invalid(format!("no usable mobile number: {e}")),
    })
}

/// Records that the patient opted out (`why` is PHI-free); true when newly recorded.
pub async fn record_opt_out(
    store: &Store,
    demographic_no: i64,
    why: &str,
) -> Result<bool, OutboundError> {
    let r = sqlx::query(
        "INSERT INTO oscarflow_sms_optout (demographic_no, reason, created_at) VALUES (?, ?, ?)",
    )
    .bind(demographic_no)
    .bind(why)
    .bind(now_sql())
    .execute(&store.pool)
    .await;
    match r {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db("record an opt-out")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_values_are_read_generously() {
        for v in ["yes", "Y", "true", "1", " on "] {
            assert!(truthy(v), "{v}");
        }
        for v in ["no", "0", "", "false"] {
            assert!(!truthy(v), "{v}");
        }
    }
}
