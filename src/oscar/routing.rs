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

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};

use super::matching::like_literal;
use crate::hl7::lab::LabType;
use crate::store::text_column;

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

/// What routing needs to know of one lab.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    pub lab_type: LabType,
    /// Practitioner numbers on the lab ([`super::info::doc_nums`]).
    pub doc_nums: &'a [String],
    /// The matched chart's MRP.
    pub mrp: Option<&'a str>,
}

/// Computes the routes for a lab.
pub async fn routes(
    conn: &mut AnyConnection,
    lab_type: LabType,
    doc_nums: &[String],
    mrp: Option<&str>,
) -> Result<Vec<Route>, sqlx::Error> {
    let mut all = routes_for(
        conn,
        &[RouteQuery {
            lab_type,
            doc_nums,
            mrp,
        }],
    )
    .await?;
    Ok(all.pop().unwrap_or_default())
}

/// Computes the routes of several labs (a group commit's) with one provider query per
/// search column and one rules query for all their providers, as [`routes`] would for each.
pub async fn routes_for(
    conn: &mut AnyConnection,
    labs: &[RouteQuery<'_>],
) -> Result<Vec<Vec<Route>>, sqlx::Error> {
    let nums: Vec<Vec<&str>> = labs
        .iter()
        .map(|l| {
            l.doc_nums
                .iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .collect();
    let mut found: Vec<Vec<String>> = vec![Vec::new(); labs.len()];
    let mut columns: Vec<&'static str> = labs.iter().map(|l| search_column(l.lab_type)).collect();
    columns.sort_unstable();
    columns.dedup();
    for column in columns {
        // (lab, position of the number on the lab, number)
        let keys: Vec<(usize, usize, &str)> = labs
            .iter()
            .enumerate()
            .filter(|(_, l)| search_column(l.lab_type) == column)
            .flat_map(|(i, _)| nums[i].iter().enumerate().map(move |(n, num)| (i, n, *num)))
            .collect();
        for chunk in keys.chunks(KEY_CHUNK) {
            // The providers of the first number (by provider_no), then of the second, …, as
            // one query per number would give them.
            let table = chunk
                .iter()
                .map(|(i, n, _)| format!("SELECT {i} AS l, {n} AS n, ? AS num"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let search = format!(
                "SELECT x.l, p.provider_no FROM ({table}) x JOIN provider p ON p.{column} LIKE x.num ESCAPE '!' ORDER BY x.l, x.n, p.provider_no"
            );
            let mut q = sqlx::query(&search);
            for (_, _, num) in chunk {
                q = q.bind(like_literal(num));
            }
            for r in q.fetch_all(&mut *conn).await? {
                let l: i64 = r.try_get(0)?;
                let p = text_column(&r, 1)?.unwrap_or_default();
                if let Some(providers) = usize::try_from(l).ok().and_then(|l| found.get_mut(l)) {
                    if !p.trim().is_empty() && !providers.contains(&p) {
                        providers.push(p);
                    }
                }
            }
        }
    }
    for (providers, lab) in found.iter_mut().zip(labs) {
        if providers.is_empty() {
            match lab
                .mrp
                .map(str::trim)
                .filter(|m| !m.is_empty() && *m != UNCLAIMED)
            {
                Some(m) => providers.push(m.to_string()),
                None => providers.push(UNCLAIMED.to_string()),
            }
        }
    }
    // The rules of every first provider in one query; forwards read as they come.
    let mut rules: HashMap<String, ProviderRules> = HashMap::new();
    let mut first: Vec<String> = found
        .iter()
        .flatten()
        .take(MAX_ROUTED * labs.len())
        .cloned()
        .collect();
    first.sort_unstable();
    first.dedup();
    read_rules(conn, &first, &mut rules).await?;
    let mut out = Vec::with_capacity(labs.len());
    for providers in found {
        out.push(forward(conn, providers, &mut rules).await?);
    }
    Ok(out)
}

/// Practitioner numbers (or providers) per query.
const KEY_CHUNK: usize = 300;

/// Applies forwarding rules breadth-first from `providers`; each provider routed once.
async fn forward(
    conn: &mut AnyConnection,
    providers: Vec<String>,
    rules: &mut HashMap<String, ProviderRules>,
) -> Result<Vec<Route>, sqlx::Error> {
    let mut out: Vec<Route> = Vec::new();
    let mut queue = providers;
    let mut i = 0;
    while i < queue.len() && i < MAX_ROUTED {
        let p = queue[i].clone();
        i += 1;
        if out.iter().any(|r| r.provider_no == p) {
            continue;
        }
        if !rules.contains_key(&p) {
            // The rules of this provider and of every one queued after it, in one query.
            let pending: Vec<String> = queue[i - 1..queue.len().min(MAX_ROUTED)]
                .iter()
                .filter(|q| !rules.contains_key(*q))
                .cloned()
                .collect();
            read_rules(conn, &pending, rules).await?;
        }
        let ProviderRules { status, forwards } = rules.get(&p).cloned().unwrap_or_default();
        let status = status
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "N".to_string());
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

/// At most this many providers are routed for one lab (a guard against rule loops the
/// "each provider once" rule would not catch, such as a very long chain).
const MAX_ROUTED: usize = 64;

/// What a provider's `incomingLabRules` say.
#[derive(Debug, Clone, Default)]
struct ProviderRules {
    /// The status of the first rule with `archive = '0'` (NULL read as empty).
    status: Option<String>,
    /// Forwards of the rules not archived (`archive IS NULL OR archive <> '1'`) to a
    /// provider that exists, in rule order.
    forwards: Vec<String>,
}

/// Reads the rules of `providers` into `into`, one entry per provider (empty when it has
/// none), in one query. OSCAR reads them in two queries per provider; `tests/routing.rs`
/// pins this reading to those, NULLs included.
async fn read_rules(
    conn: &mut AnyConnection,
    providers: &[String],
    into: &mut HashMap<String, ProviderRules>,
) -> Result<(), sqlx::Error> {
    for chunk in providers.chunks(KEY_CHUNK) {
        read_rules_chunk(conn, chunk, into).await?;
    }
    Ok(())
}

async fn read_rules_chunk(
    conn: &mut AnyConnection,
    providers: &[String],
    into: &mut HashMap<String, ProviderRules>,
) -> Result<(), sqlx::Error> {
    if providers.is_empty() {
        return Ok(());
    }
    let keys = crate::store::rows::keys_table(providers.len(), true);
    let sql = format!(
        "SELECT x.n, r.status, CAST(r.archive AS CHAR) AS archive, r.frwdProvider_no, p.provider_no FROM ({keys}) x JOIN incomingLabRules r ON r.provider_no = x.k LEFT JOIN provider p ON p.provider_no = r.frwdProvider_no ORDER BY x.n, r.id"
    );
    let mut q = sqlx::query(&sql);
    for p in providers {
        q = q.bind(p.as_str());
    }
    let mut read: Vec<ProviderRules> = vec![ProviderRules::default(); providers.len()];
    for rule in q.fetch_all(&mut *conn).await? {
        let n: i64 = rule.try_get(0)?;
        let Some(entry) = usize::try_from(n).ok().and_then(|n| read.get_mut(n)) else {
            continue;
        };
        let archive = text_column(&rule, 2)?;
        if entry.status.is_none() && archive.as_deref() == Some("0") {
            entry.status = Some(text_column(&rule, 1)?.unwrap_or_default());
        }
        let exists = text_column(&rule, 4)?.is_some();
        if archive.as_deref() != Some("1") && exists {
            if let Some(f) = text_column(&rule, 3)? {
                entry.forwards.push(f);
            }
        }
    }
    for (p, r) in providers.iter().zip(read) {
        into.insert(p.clone(), r);
    }
    Ok(())
}
