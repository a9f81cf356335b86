//! Patient matching with OSCAR's predicates (IMPORT-SPEC §2.6), as bound parameters.
//!
//! The rule that prevents wrong-patient filing: **the health number is required**. A lab
//! without one is unmatched — never matched on name and birth date alone. The query is
//! OSCAR's: `hin = ?` exactly (Ontario 12-character numbers cut to 10, `UNKNOWN` treated as
//! empty), birth year/month/day and sex by `LIKE` (`%` when the lab has none), names by
//! initial only when `nomatch_names` is off (OSCAR's `LAB_NOMATCH_NAMES=no`), and OSCAR 19's
//! relaxation for charts whose sex is neither F nor M as an option. More than one row means
//! unmatched. A match on a merged chart is followed through `demographic_merged` to its head.
//! Wildcards in lab values are escaped, so a `%` in a field cannot widen the match.
//!
//! Deliberately **not** implemented: OSCAR 19's fallback for a lab without a health number
//! (`last_name LIKE 'FULL%' AND first_name LIKE 'FULL%'` plus birth date and sex, no health
//! number). Twins, namesakes and data-entry duplicates share exactly those values, so it files
//! labs to the wrong chart; Open-O dropped it too. Such labs stay unmatched: they reach the
//! ordering provider's inbox (or the unclaimed inbox `'0'`) and OSCAR's unmatched list, where
//! a person files them. No option turns it on.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::hl7::lab::Patient;

/// Matching options (per pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSettings {
    /// OSCAR's `LAB_NOMATCH_NAMES` (default yes): when false, the initials of last and first
    /// name must match too.
    pub nomatch_names: bool,
    /// OSCAR 19's relaxation: a chart whose sex is not F or M matches any lab sex.
    pub relax_sex_for_non_binary: bool,
}

impl Default for MatchSettings {
    fn default() -> Self {
        Self {
            nomatch_names: true,
            relax_sex_for_non_binary: true,
        }
    }
}

/// What the match found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MatchOutcome {
    /// Exactly one chart. `demographic_no` is the head after merges; `mrp` its provider.
    Matched {
        demographic_no: i64,
        mrp: Option<String>,
        /// The chart the query found, when a merge moved the lab to another head.
        merged_from: Option<i64>,
    },
    /// The lab carries no usable health number: never matched (no name-only match).
    NoHealthNumber,
    /// The lab's birth date is present but not a date: unmatched rather than widened to
    /// "any birth date" (an absent date is a wildcard, as in OSCAR).
    InvalidBirthDate,
    /// No chart has the lab's health number.
    NotFound,
    /// Charts have the health number, but none the lab's birth date.
    BirthDateMismatch { candidates: usize },
    /// Charts have the health number and birth date, but none the lab's sex.
    SexMismatch { candidates: usize },
    /// Charts have the health number, birth date and sex, but none the initials of the
    /// lab's names (only with `nomatch_names = false`).
    NameMismatch { candidates: usize },
    /// Several charts fit; OSCAR treats that as unmatched.
    Ambiguous { candidates: usize },
}

/// Every [`MatchOutcome::label`], for documentation and tests.
pub const OUTCOME_LABELS: &[&str] = &[
    "matched",
    "no_health_number",
    "invalid_birth_date",
    "not_found",
    "birth_date_mismatch",
    "sex_mismatch",
    "name_mismatch",
    "ambiguous",
];

impl MatchOutcome {
    pub fn demographic_no(&self) -> Option<i64> {
        match self {
            MatchOutcome::Matched { demographic_no, .. } => Some(*demographic_no),
            _ => None,
        }
    }
    pub fn mrp(&self) -> Option<&str> {
        match self {
            MatchOutcome::Matched { mrp, .. } => mrp.as_deref(),
            _ => None,
        }
    }
    /// Short, PHI-free label for reports and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MatchOutcome::Matched { .. } => "matched",
            MatchOutcome::NoHealthNumber => "no_health_number",
            MatchOutcome::InvalidBirthDate => "invalid_birth_date",
            MatchOutcome::NotFound => "not_found",
            MatchOutcome::BirthDateMismatch { .. } => "birth_date_mismatch",
            MatchOutcome::SexMismatch { .. } => "sex_mismatch",
            MatchOutcome::NameMismatch { .. } => "name_mismatch",
            MatchOutcome::Ambiguous { .. } => "ambiguous",
        }
    }
    /// The number of charts involved: those that fit (`ambiguous`) or those that have the
    /// health number but failed a predicate (`*_mismatch`). PHI-free.
    pub fn candidates(&self) -> Option<usize> {
        match self {
            MatchOutcome::Ambiguous { candidates }
            | MatchOutcome::BirthDateMismatch { candidates }
            | MatchOutcome::SexMismatch { candidates }
            | MatchOutcome::NameMismatch { candidates } => Some(*candidates),
            _ => None,
        }
    }
}

/// The health number as OSCAR matches it: trimmed, `UNKNOWN` → empty, 12 → 10 characters.
pub fn normalise_hin(hin: &str) -> String {
    let h = hin.trim();
    if h.eq_ignore_ascii_case("UNKNOWN") {
        return String::new();
    }
    if h.chars().count() == 12 {
        return h.chars().take(10).collect();
    }
    h.to_string()
}

/// Birth date as OSCAR's LIKE patterns (year, month, day): `%` each when absent (empty or
/// `UNKNOWN`, as OSCAR does), `None` when present but not a valid `YYYYMMDD…` date.
pub fn dob_parts(dob: &str) -> Option<(String, String, String)> {
    let t = dob.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("UNKNOWN") {
        return Some(("%".into(), "%".into(), "%".into()));
    }
    let d: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    if d.len() >= 8 {
        let (y, m, day) = (&d[0..4], &d[4..6], &d[6..8]);
        let ok = y.parse::<u32>().is_ok_and(|v| v >= 1800)
            && m.parse::<u32>().is_ok_and(|v| (1..=12).contains(&v))
            && day.parse::<u32>().is_ok_and(|v| (1..=31).contains(&v));
        if ok {
            return Some((y.to_string(), m.to_string(), day.to_string()));
        }
    }
    None
}

/// Escapes LIKE wildcards with `!` (the `ESCAPE '!'` character, valid on MySQL and SQLite).
pub fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// Runs the match for `patient`.
pub async fn match_patient(
    conn: &mut AnyConnection,
    patient: &Patient,
    settings: &MatchSettings,
) -> Result<MatchOutcome, sqlx::Error> {
    let hin = normalise_hin(&patient.health_number);
    if hin.is_empty() {
        return Ok(MatchOutcome::NoHealthNumber);
    }
    let Some((y, m, d)) = dob_parts(&patient.dob) else {
        return Ok(MatchOutcome::InvalidBirthDate);
    };
    let sex = patient
        .sex
        .trim()
        .chars()
        .next()
        .map(|c| format!("{}%", like_literal(&c.to_uppercase().to_string())))
        .unwrap_or_else(|| "%".into());
    let sex_predicate = if settings.relax_sex_for_non_binary {
        "(sex LIKE ? ESCAPE '!' OR sex NOT IN ('F', 'M'))"
    } else {
        "sex LIKE ? ESCAPE '!'"
    };
    let mut sql = format!(
        "SELECT demographic_no, provider_no, (SELECT m.merged_to FROM demographic_merged m WHERE m.demographic_no = demographic.demographic_no AND m.deleted = 0 ORDER BY m.id DESC LIMIT 1) AS merged_to FROM demographic WHERE hin = ? AND {DOB_PREDICATE} AND {sex_predicate}"
    );
    let initial = |s: &str| {
        s.trim()
            .chars()
            .next()
            .map(|c| format!("{}%", like_literal(&c.to_string())))
            .unwrap_or_else(|| "%".into())
    };
    if !settings.nomatch_names {
        sql.push_str(" AND ");
        sql.push_str(NAME_PREDICATE);
    }
    sql.push_str(" LIMIT 3");
    let esc = |p: String| if p == "%" { p } else { like_literal(&p) };
    let (y, m, d) = (esc(y), esc(m), esc(d));
    let (last, first) = (initial(&patient.last_name), initial(&patient.first_name));
    let mut q = sqlx::query(&sql)
        .bind(&hin)
        .bind(&y)
        .bind(&m)
        .bind(&d)
        .bind(&sex);
    if !settings.nomatch_names {
        q = q.bind(&last).bind(&first);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    match rows.len() {
        0 => {
            // Why: the same predicates, evaluated for the charts that have the health
            // number (only for a lab that matched nothing, so the common path pays nothing).
            let why = format!(
                "SELECT CASE WHEN {DOB_PREDICATE} THEN 1 ELSE 0 END AS dob_ok, CASE WHEN {sex_predicate} THEN 1 ELSE 0 END AS sex_ok, CASE WHEN {NAME_PREDICATE} THEN 1 ELSE 0 END AS name_ok FROM demographic WHERE hin = ? LIMIT 50"
            );
            let rows = sqlx::query(&why)
                .bind(&y)
                .bind(&m)
                .bind(&d)
                .bind(&sex)
                .bind(&last)
                .bind(&first)
                .bind(&hin)
                .fetch_all(&mut *conn)
                .await?;
            let flags: Vec<(bool, bool, bool)> = rows
                .iter()
                .map(|r| {
                    let f = |c: &str| r.try_get::<i64, _>(c).map(|v| v != 0);
                    Ok((f("dob_ok")?, f("sex_ok")?, f("name_ok")?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            Ok(why_not_found(&flags, settings))
        }
        1 => {
            let found: i64 = rows[0].try_get(0)?;
            let mrp: Option<String> = rows[0].try_get(1)?;
            // The chart's own merge record came with it; further hops are read one by one.
            let merged_to: Option<i64> = rows[0].try_get(2)?;
            let head = merged_head(conn, found, merged_to).await?;
            if head == found {
                Ok(MatchOutcome::Matched {
                    demographic_no: found,
                    mrp: mrp.filter(|p| !p.trim().is_empty()),
                    merged_from: None,
                })
            } else {
                let head_mrp: Option<String> = sqlx::query_scalar(
                    "SELECT provider_no FROM demographic WHERE demographic_no = ?",
                )
                .bind(head)
                .fetch_optional(&mut *conn)
                .await?
                .flatten();
                Ok(MatchOutcome::Matched {
                    demographic_no: head,
                    mrp: head_mrp.filter(|p| !p.trim().is_empty()),
                    merged_from: Some(found),
                })
            }
        }
        n => Ok(MatchOutcome::Ambiguous { candidates: n }),
    }
}

/// OSCAR's birth-date predicates (year, month, day), bound in that order.
const DOB_PREDICATE: &str = "year_of_birth LIKE ? ESCAPE '!' AND month_of_birth LIKE ? ESCAPE '!' AND date_of_birth LIKE ? ESCAPE '!'";
/// The initials of last and first name (`LAB_NOMATCH_NAMES=no`), bound in that order.
const NAME_PREDICATE: &str = "last_name LIKE ? ESCAPE '!' AND first_name LIKE ? ESCAPE '!'";

/// The reason a lab matched no chart, from the predicates each chart with its health
/// number passed (birth date, sex, names): the first predicate, in that order, that the
/// closest charts fail. Names count only when the pipeline compares them.
fn why_not_found(charts: &[(bool, bool, bool)], settings: &MatchSettings) -> MatchOutcome {
    let candidates = charts.len();
    if candidates == 0 {
        MatchOutcome::NotFound
    } else if !charts.iter().any(|c| c.0) {
        MatchOutcome::BirthDateMismatch { candidates }
    } else if !charts.iter().any(|c| c.0 && c.1) {
        MatchOutcome::SexMismatch { candidates }
    } else if !settings.nomatch_names {
        MatchOutcome::NameMismatch { candidates }
    } else {
        // Every predicate passed for some chart, yet the match found none: the table
        // changed between the two reads. Nothing more precise can be said.
        MatchOutcome::NotFound
    }
}

/// Follows `demographic_merged` (not deleted) to the head chart; stops on a cycle.
/// `first_hop` is `start`'s own `merged_to`, already read with the match.
async fn merged_head(
    conn: &mut AnyConnection,
    start: i64,
    first_hop: Option<i64>,
) -> Result<i64, sqlx::Error> {
    let mut current = start;
    let mut seen = vec![start];
    let mut known = Some(first_hop);
    for _ in 0..16 {
        let next: Option<i64> = match known.take() {
            Some(hop) => hop,
            None => {
                sqlx::query_scalar(
                    "SELECT merged_to FROM demographic_merged WHERE demographic_no = ? AND deleted = 0 ORDER BY id DESC LIMIT 1",
                )
                .bind(current)
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        match next {
            Some(n) if !seen.contains(&n) => {
                seen.push(n);
                current = n;
            }
            _ => break,
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hin_normalisation_follows_oscar() {
        assert_eq!(normalise_hin(" 9000000011 "), "9000000011");
        assert_eq!(normalise_hin("1234567890AB"), "1234567890");
        assert_eq!(normalise_hin("unknown"), "");
    }

    #[test]
    fn dob_parts_are_wildcards_when_missing_and_refused_when_invalid() {
        let any = Some(("%".into(), "%".into(), "%".into()));
        assert_eq!(
            dob_parts("19770726"),
            Some(("1977".into(), "07".into(), "26".into()))
        );
        assert_eq!(
            dob_parts("197707261200"),
            Some(("1977".into(), "07".into(), "26".into()))
        );
        assert_eq!(dob_parts(""), any);
        assert_eq!(dob_parts("UNKNOWN"), any);
        assert_eq!(dob_parts("19771399"), None);
        assert_eq!(dob_parts("1977-07-26"), None);
    }

    #[test]
    fn the_reason_names_the_first_predicate_no_chart_with_the_health_number_passes() {
        let names = MatchSettings {
            nomatch_names: false,
            ..MatchSettings::default()
        };
        let d = MatchSettings::default();
        assert_eq!(why_not_found(&[], &d), MatchOutcome::NotFound);
        assert_eq!(
            why_not_found(&[(false, true, true), (false, false, true)], &d),
            MatchOutcome::BirthDateMismatch { candidates: 2 }
        );
        assert_eq!(
            why_not_found(&[(true, false, true), (false, true, true)], &d),
            MatchOutcome::SexMismatch { candidates: 2 }
        );
        assert_eq!(
            why_not_found(&[(true, true, false)], &names),
            MatchOutcome::NameMismatch { candidates: 1 }
        );
        for o in [
            MatchOutcome::NotFound,
            MatchOutcome::NoHealthNumber,
            MatchOutcome::InvalidBirthDate,
            MatchOutcome::BirthDateMismatch { candidates: 1 },
            MatchOutcome::SexMismatch { candidates: 1 },
            MatchOutcome::NameMismatch { candidates: 1 },
            MatchOutcome::Ambiguous { candidates: 2 },
        ] {
            assert!(OUTCOME_LABELS.contains(&o.label()), "{}", o.label());
        }
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_literal("O'B%_!"), "O'B!%!_!!");
    }
}
