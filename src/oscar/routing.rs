//! Provider inbox routing (IMPORT-SPEC §2.8): who sees a lab.
//!
//! For each practitioner number on the lab (OBR-16, OBR-28), `provider.ohip_no LIKE ?` (the
//! BC rule; the number is escaped, so it matches literally). As `MessageUploader` does, two
//! lab types search another column: Interior Health POI (`IHAPOI`) `provider.hso_no`, and
//! `MEDITECH` `provider.practitionerNo` ([`search_column`]). With no provider found, the
//! matched patient's MRP; failing that, `'0'` — the unclaimed inbox. Every lab ends with at
//! least one `providerLabRouting` row, or OSCAR would never show it. Each routed provider's
//! `incomingLabRules` apply: the first active rule's status (e.g. `F`, auto-file) instead of
//! `N`, and forwards to other providers, followed transitively (each provider once).
//!
//! Deliberate difference from OSCAR: a matched patient with no MRP routes to `'0'`, not to
//! provider `''` (OSCAR's `Misc.getString` turns NULL into `''`, a row no inbox shows).

use sqlx::AnyConnection;

use super::matching::like_literal;
use crate::hl7::lab::LabType;

/// The `provider` column practitioner numbers are looked up in, per lab type (IMPORT-SPEC
/// §2.4 step 10). A fixed set of identifiers, never built from input.
pub fn search_column(lab_type: LabType) -> &'static str {
    match lab_type {
        LabType::IhaPoi => "hso_no",
        LabType::Meditech => "practitionerNo",
        _ => "ohip_no",
    }
}

/// One routing decision: provider and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub provider_no: String,
    pub status: String,
}

/// The unclaimed inbox.
pub const UNCLAIMED: &str = "0";

/// Computes the routes for a lab.
pub async fn routes(
    conn: &mut AnyConnection,
    lab_type: LabType,
    doc_nums: &[String],
    mrp: Option<&str>,
) -> Result<Vec<Route>, sqlx::Error> {
    let mut providers: Vec<String> = Vec::new();
    let search = format!(
        "SELECT provider_no FROM provider WHERE {} LIKE ? ESCAPE '!' ORDER BY provider_no",
        search_column(lab_type)
    );
    for num in doc_nums.iter().filter(|n| !n.trim().is_empty()) {
        let found: Vec<String> = sqlx::query_scalar(&search)
            .bind(like_literal(num.trim()))
            .fetch_all(&mut *conn)
            .await?;
        for p in found {
            if !p.trim().is_empty() && !providers.contains(&p) {
                providers.push(p);
            }
        }
    }
    if providers.is_empty() {
        match mrp
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != UNCLAIMED)
        {
            Some(m) => providers.push(m.to_string()),
            None => providers.push(UNCLAIMED.to_string()),
        }
    }
    // Apply forwarding rules breadth-first; each provider routed once.
    let mut out: Vec<Route> = Vec::new();
    let mut queue = providers;
    let mut i = 0;
    while i < queue.len() && i < 64 {
        let p = queue[i].clone();
        i += 1;
        if out.iter().any(|r| r.provider_no == p) {
            continue;
        }
        let status: Option<Option<String>> = sqlx::query_scalar(
            "SELECT status FROM incomingLabRules WHERE provider_no = ? AND archive = '0' ORDER BY id LIMIT 1",
        )
        .bind(&p)
        .fetch_optional(&mut *conn)
        .await?;
        let status = status
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "N".to_string());
        let forwards: Vec<String> = sqlx::query_scalar(
            "SELECT r.frwdProvider_no FROM incomingLabRules r JOIN provider p ON p.provider_no = r.frwdProvider_no WHERE r.provider_no = ? AND (r.archive IS NULL OR r.archive <> '1') ORDER BY r.id",
        )
        .bind(&p)
        .fetch_all(&mut *conn)
        .await?;
        out.push(Route {
            provider_no: p,
            status,
        });
        for f in forwards {
            if !queue.contains(&f) {
                queue.push(f);
            }
        }
    }
    Ok(out)
}
