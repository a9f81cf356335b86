//! The console's pages, rendered as plain HTML (no script). Every value from the database
//! or the configuration goes through [`esc`].

use std::fmt::Write;

use hyper::{Response, StatusCode};

use super::super::{Body, HttpState};
use super::{chart, field, page, words, Who};
use crate::dead_letter::{status, DeadLetterStore, Filter, ReasonCode, StoredDeadLetter};
use crate::journal::{JournalRow, Query};
use crate::store::Store;

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A URL query value, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn head(title: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · oscarflow</title><link rel="stylesheet" href="/console/style.css"></head>"#,
        esc(title)
    )
}

const NAV: &[(&str, &str)] = &[
    ("/console/", "Overview"),
    ("/console/messages", "Messages"),
    ("/console/unmatched", "Unmatched today"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/pipelines", "Pipelines"),
    ("/console/audit", "Audit trail"),
];

pub(super) fn layout(title: &str, who: &Who, active: &str, body: &str) -> String {
    let mut s = head(title);
    s.push_str(r#"<body><header><span class="brand">oscarflow</span><nav>"#);
    for (href, label) in NAV {
        let class = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(s, r#"<a href="{href}"{class}>{label}</a>"#);
    }
    let _ = write!(
        s,
        r#"</nav><form method="post" action="/console/logout" class="logout"><input type="hidden" name="csrf" value="{}"><button type="submit">Log out</button></form></header><main><h1>{}</h1>{body}</main></body></html>"#,
        esc(&who.csrf),
        esc(title)
    );
    s
}

fn csrf_input(who: &Who) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&who.csrf)
    )
}

pub fn refused(why: &str) -> String {
    format!(
        r#"{}<body class="narrow"><main><h1>Refused</h1><p class="error">{}</p><p><a href="/console/">Back to the console</a></p></main></body></html>"#,
        head("Refused"),
        esc(why)
    )
}

pub fn no_token() -> String {
    format!(
        r#"{}<body class="narrow"><main><h1>The console needs a token</h1><p>Set <code>http_token_env</code> in <code>oscarflow.toml</code> to the name of an environment variable that holds a long random token, give the daemon that variable, and restart it. The console's login asks for that token.</p></main></body></html>"#,
        head("Console")
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" id="login-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    format!(
        r#"{}<body class="narrow"><main><h1>oscarflow console</h1>{error}<form method="post" action="/console/login" class="login"><label for="token">Token</label><input type="password" id="token" name="token" autocomplete="current-password" required autofocus><button type="submit" id="login">Log in</button></form><p class="hint">The token is the value of the environment variable that <code>http_token_env</code> names in <code>oscarflow.toml</code>.</p></main></body></html>"#,
        head("Log in")
    )
}

fn not_found(who: &Who, what: &str) -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        layout("Not found", who, "", &format!("<p>{}</p>", esc(what))),
    )
}

pub(super) fn db_error(who: &Who, e: impl std::fmt::Display) -> Response<Body> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Database unavailable",
            who,
            "",
            &format!(
                r#"<p class="error">The database did not answer: {}</p>"#,
                esc(&e.to_string())
            ),
        ),
    )
}

/// Local time `YYYY-MM-DD HH:MM:SS`, `days` days ago (0: the start of today).
fn local_start_of_day(days: i64) -> String {
    let d = chrono::Local::now().date_naive() - chrono::Duration::days(days);
    format!("{} 00:00:00", d.format("%Y-%m-%d"))
}

fn local_ago(d: chrono::Duration) -> String {
    (chrono::Local::now() - d)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn store(state: &HttpState, db: &str) -> Option<Store> {
    let i: usize = db.parse().ok()?;
    state.registry.stores().get(i).cloned()
}

/// The parts of a console path after `/console/`.
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches("/console/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// Routes a `GET`.
pub async fn get(
    state: &HttpState,
    who: &Who,
    path: &str,
    q: &[(String, String)],
) -> Response<Body> {
    match segments(path).as_slice() {
        [] => overview(state, who).await,
        ["messages"] => messages(state, who, q).await,
        ["messages", db, id] => journey(state, who, db, id).await,
        ["unmatched"] => unmatched(state, who).await,
        ["dead-letters"] => dead_letters(state, who, q, None).await,
        ["dead-letters", "purge"] => purge_confirm(state, who).await,
        ["dead-letters", db, id] => dead_letter(state, who, db, id, None).await,
        ["pipelines"] => pipelines(state, who, None),
        ["audit"] => super::audit_page::audit(state, who, q).await,
        _ => not_found(who, "There is no such page."),
    }
}

/// Routes a `POST` (session and form token already checked).
pub async fn post(
    state: &HttpState,
    who: &Who,
    path: &str,
    fields: &[(String, String)],
) -> Response<Body> {
    match segments(path).as_slice() {
        ["dead-letters", "redrive"] => redrive(state, who, fields).await,
        ["dead-letters", "purge"] => purge(state, who, fields).await,
        ["dead-letters", db, id, "reveal"] => reveal(state, who, db, id).await,
        ["pipelines", name, action] => control(state, who, name, action),
        _ => not_found(who, "There is no such action."),
    }
}

// ---------------------------------------------------------------------------------------
// Overview

async fn overview(state: &HttpState, who: &Who) -> Response<Body> {
    let stores = state.registry.stores();
    let today = local_start_of_day(0);
    let week = local_start_of_day(6);
    let mut day = std::collections::BTreeMap::<String, crate::journal::Counts>::new();
    let mut seven = day.clone();
    let mut hours = vec![0i64; 24];
    let now_hour = chrono::Local::now();
    let since_24h = local_ago(chrono::Duration::hours(23))
        .get(..13)
        .unwrap_or("")
        .to_string()
        + ":00:00";
    let mut open_dead = 0u64;
    for s in &stores {
        let add =
            |into: &mut std::collections::BTreeMap<String, crate::journal::Counts>,
             from: std::collections::BTreeMap<String, crate::journal::Counts>| {
                for (p, c) in from {
                    let e = into.entry(p).or_default();
                    e.received += c.received;
                    e.imported += c.imported;
                    e.matched += c.matched;
                    e.unmatched += c.unmatched;
                    e.duplicate += c.duplicate;
                    e.dead_lettered += c.dead_lettered;
                    e.outbound += c.outbound;
                }
            };
        match crate::journal::counts(s, &today).await {
            Ok(c) => add(&mut day, c),
            Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
        }
        match crate::journal::counts(s, &week).await {
            Ok(c) => add(&mut seven, c),
            Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
        }
        if let Ok(rows) = crate::journal::hourly(s, &since_24h).await {
            for (hour, _, n) in rows {
                let Ok(t) = chrono::NaiveDateTime::parse_from_str(
                    &format!("{hour}:00:00"),
                    "%Y-%m-%d %H:%M:%S",
                ) else {
                    continue;
                };
                let ago = (now_hour.naive_local() - t).num_hours();
                if (0..24).contains(&ago) {
                    hours[23 - ago as usize] += n;
                }
            }
        }
        let open = Filter {
            status: Some(status::OPEN.into()),
            ..Filter::default()
        };
        open_dead += DeadLetterStore::new(s.clone())
            .count(&open)
            .await
            .unwrap_or(0);
    }

    let mut body = String::new();
    let problems = super::super::problems(state).await;
    if problems.is_empty() {
        body.push_str(r#"<p class="banner ok" id="ready">Ready: every database answers and every pipeline runs.</p>"#);
    } else {
        body.push_str(r#"<div class="banner bad" id="problems"><strong>Not ready</strong><ul>"#);
        for p in &problems {
            let _ = write!(body, "<li>{}</li>", esc(p));
        }
        body.push_str("</ul></div>");
    }
    if open_dead > 0 {
        let _ = write!(
            body,
            r#"<p class="banner warn"><a href="/console/dead-letters">{open_dead} open dead letter(s)</a> wait for someone to look at them.</p>"#
        );
    }
    body.push_str(&chart::throughput_and_backlog(
        &hours,
        &state.console.backlog(),
    ));
    body.push_str(r#"<table id="overview"><thead><tr><th rowspan="2">Pipeline</th><th rowspan="2">State</th><th colspan="5">Today</th><th colspan="5">Last 7 days</th><th rowspan="2">Backlog</th><th rowspan="2" title="The oldest input taken but not yet committed or dead-lettered">Oldest waiting</th><th rowspan="2">Last good poll</th></tr><tr>"#);
    for _ in 0..2 {
        body.push_str("<th>received</th><th>imported</th><th>matched</th><th>unmatched</th><th>dead-lettered</th>");
    }
    body.push_str("</tr></thead><tbody>");
    let running = state.registry.pipelines();
    let mut names: Vec<String> = running.iter().map(|p| p.name.clone()).collect();
    for n in day.keys().chain(seven.keys()) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    for name in &names {
        let p = running.iter().find(|p| &p.name == name);
        let state_text = match p {
            Some(p) if !p.is_running() => "<span class=\"bad\">stopped</span>",
            Some(p) if p.control.outage().is_some() => {
                "<span class=\"bad\">held: database unavailable</span>"
            }
            Some(p) if p.control.is_paused() => "<span class=\"warn\">paused</span>",
            Some(_) => "<span class=\"ok\">running</span>",
            None => "<span class=\"muted\">not loaded</span>",
        };
        let _ = write!(
            body,
            r#"<tr data-pipeline="{n}"><td><a href="/console/messages?pipeline={u}">{n}</a></td><td>{state_text}</td>"#,
            n = esc(name),
            u = enc(name)
        );
        for c in [day.get(name), seven.get(name)] {
            let c = c.cloned().unwrap_or_default();
            let _ = write!(
                body,
                r#"<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>"#,
                c.received, c.imported, c.matched, c.unmatched, c.dead_lettered
            );
        }
        match p {
            Some(p) => {
                let last = p
                    .health
                    .snapshot()
                    .into_iter()
                    .filter_map(|(id, h)| {
                        h.last_success.map(|t| {
                            let ago = t.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                            format!("{}: {} ago", esc(&id), human_secs(ago))
                        })
                    })
                    .collect::<Vec<_>>();
                let _ = write!(
                    body,
                    r#"<td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                    p.in_flight.current(),
                    human_secs(p.in_flight.oldest_age().as_secs()),
                    if last.is_empty() {
                        "—".to_string()
                    } else {
                        last.join("<br>")
                    }
                );
            }
            None => body.push_str("<td>—</td><td>—</td><td>—</td></tr>"),
        }
    }
    body.push_str("</tbody></table>");
    body.push_str(r#"<p class="hint">Counts come from the message journal, so they survive restarts. Unmatched labs are in OSCAR too, in its unmatched inbox; dead-lettered ones are not in OSCAR.</p>"#);
    page(StatusCode::OK, layout("Overview", who, "/console/", &body))
}

/// A dead letter's RFC 3339 time as the journal's times are shown (`YYYY-MM-DD HH:MM:SS`,
/// the daemon machine's local time).
fn shown_time(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(t) if rfc3339.as_bytes().get(10) == Some(&b'T') => t.replacen('T', " ", 1),
        _ => rfc3339.to_string(),
    }
}

fn human_bytes(n: i64) -> String {
    match n {
        n if n < 1024 => format!("{n} bytes"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / 1048576.0),
    }
}

/// A PHI-free detail as shown: the backticks that quote values in log texts dropped.
fn detail(d: &str) -> String {
    esc(&d.replace('`', ""))
}

fn human_secs(s: u64) -> String {
    match s {
        0 => "0 s".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

// ---------------------------------------------------------------------------------------
// Messages

fn outcome_cell(r: &JournalRow) -> String {
    let what = words::outcome(&r.kind, &r.outcome);
    let extra = match (&r.match_outcome, &r.reason) {
        (Some(m), _) if r.kind == "lab" => format!(" — {}", words::match_short(m)),
        (_, Some(reason)) => format!(" — {}", words::reason_short(reason)),
        _ => String::new(),
    };
    let class = match (r.outcome.as_str(), r.match_outcome.as_deref()) {
        ("dead_lettered", _) => "bad",
        ("imported", Some("matched")) => "ok",
        ("imported", Some(_)) => "warn",
        _ => "",
    };
    format!(
        r#"<span class="{class}">{}{}</span>"#,
        esc(what),
        esc(&extra)
    )
}

/// The OSCAR rows a journal row names: `lab 12`, `document 3`, `fax 7`.
fn oscar_row_names(r: &JournalRow) -> Vec<String> {
    [
        ("lab", r.lab_no),
        ("document", r.document_no),
        ("fax", r.fax_id),
        ("appointment", r.appointment_no),
    ]
    .into_iter()
    .filter_map(|(what, n)| n.map(|n| format!("{what} {n}")))
    .collect()
}

fn oscar_rows(r: &JournalRow, db: usize) -> String {
    let mut v = oscar_row_names(r);
    if let Some(n) = r.demographic_no {
        v.push(format!("chart #{n}"));
    }
    let mut s = esc(&v.join(", "));
    if let Some(d) = &r.dead_letter_id {
        let _ = write!(
            s,
            r#"<a href="/console/dead-letters/{db}/{d}">dead letter {d}</a>"#,
            d = esc(d)
        );
    }
    if s.is_empty() {
        s.push('—');
    }
    s
}

fn rows_table(rows: &[(usize, JournalRow)], id: &str) -> String {
    let mut s = format!(
        r#"<table id="{id}"><thead><tr><th>When</th><th>Pipeline</th><th>Kind</th><th>Accession</th><th>Control id</th><th>What happened</th><th>Where it is</th><th></th></tr></thead><tbody>"#
    );
    for (db, r) in rows {
        let _ = write!(
            s,
            r#"<tr data-accession="{acc}"><td class="id">{at}</td><td>{p}</td><td>{k}</td><td class="id">{acc}</td><td class="id">{ctl}</td><td>{what}</td><td class="id">{rows}</td><td><a href="/console/messages/{db}/{id}">journey</a></td></tr>"#,
            acc = esc(r.accession.as_deref().unwrap_or("")),
            at = esc(&r.at),
            p = esc(&r.pipeline),
            k = esc(&r.kind),
            ctl = esc(r.control_id.as_deref().unwrap_or("")),
            what = outcome_cell(r),
            rows = oscar_rows(r, *db),
            id = r.id,
        );
    }
    if rows.is_empty() {
        s.push_str(r#"<tr><td colspan="8" class="muted">Nothing found.</td></tr>"#);
    }
    s.push_str("</tbody></table>");
    s
}

async fn search_all(state: &HttpState, q: &Query) -> Result<Vec<(usize, JournalRow)>, String> {
    let mut all = Vec::new();
    for (i, s) in state.registry.stores().iter().enumerate() {
        let rows = crate::journal::search(s, q)
            .await
            .map_err(|e| crate::error::describe_sqlx(&e))?;
        all.extend(rows.into_iter().map(|r| (i, r)));
    }
    all.sort_by(|a, b| b.1.at.cmp(&a.1.at).then(b.1.id.cmp(&a.1.id)));
    all.truncate(q.limit.max(1) as usize);
    Ok(all)
}

pub(super) fn select(
    name: &str,
    label: &str,
    options: &[(&str, &str)],
    chosen: Option<&str>,
) -> String {
    let mut s = format!(
        r#"<label>{label} <select name="{name}" id="{name}"><option value="">any</option>"#
    );
    for (v, l) in options {
        let sel = if Some(*v) == chosen { " selected" } else { "" };
        let _ = write!(s, r#"<option value="{}"{sel}>{}</option>"#, esc(v), esc(l));
    }
    s.push_str("</select></label>");
    s
}

async fn messages(state: &HttpState, who: &Who, q: &[(String, String)]) -> Response<Body> {
    let get = |k: &str| {
        field(q, k)
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
    };
    let date = |k: &str| {
        get(k).map(|d| {
            if d.len() == 10 {
                format!("{d} 00:00:00")
            } else {
                d.replace('T', " ")
            }
        })
    };
    // `to` is a day, inclusive: up to the start of the next one.
    let to = get("to").map(
        |d| match chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d") {
            Ok(day) => format!(
                "{} 00:00:00",
                (day + chrono::Duration::days(1)).format("%Y-%m-%d")
            ),
            Err(_) => d.replace('T', " "),
        },
    );
    let query = Query {
        id: get("id"),
        pipeline: get("pipeline"),
        kind: get("kind"),
        outcome: get("outcome"),
        reason: get("reason"),
        from: date("from"),
        to,
        limit: 200,
    };
    let names: Vec<String> = state
        .registry
        .pipelines()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let pipeline_opts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    let mut body = String::from(r#"<form method="get" action="/console/messages" class="search">"#);
    let _ = write!(
        body,
        r#"<label>Accession, control id or hash <input type="search" name="id" id="id" value="{}"></label>"#,
        esc(query.id.as_deref().unwrap_or(""))
    );
    body.push_str(&select(
        "pipeline",
        "Pipeline",
        &pipeline_opts,
        query.pipeline.as_deref(),
    ));
    body.push_str(&select(
        "kind",
        "Kind",
        &[
            ("lab", "lab"),
            ("fax_in", "fax received"),
            ("fax_out", "fax sent"),
            ("sms", "text message"),
            ("appointment", "appointment"),
        ],
        query.kind.as_deref(),
    ));
    body.push_str(&select(
        "outcome",
        "Outcome",
        &[
            ("imported", "filed into OSCAR"),
            ("dead_lettered", "dead-lettered"),
            ("duplicate", "duplicate"),
            ("sent", "sent"),
            ("completed", "delivered"),
        ],
        query.outcome.as_deref(),
    ));
    let mut reasons: Vec<(&str, &str)> = crate::oscar::matching::OUTCOME_LABELS
        .iter()
        .map(|m| (*m, words::match_short(m)))
        .collect();
    reasons.extend(ReasonCode::ALL.iter().map(|r| (r.as_str(), r.as_str())));
    body.push_str(&select(
        "reason",
        "Reason",
        &reasons,
        query.reason.as_deref(),
    ));
    let _ = write!(
        body,
        r#"<label>From <input type="date" name="from" id="from" value="{}"></label><label>To <input type="date" name="to" id="to" value="{}"></label><button type="submit" id="search">Search</button></form>"#,
        esc(field(q, "from").unwrap_or("")),
        esc(field(q, "to").unwrap_or(""))
    );
    match search_all(state, &query).await {
        Ok(rows) => body.push_str(&rows_table(&rows, "messages")),
        Err(e) => return db_error(who, e),
    }
    page(
        StatusCode::OK,
        layout("Messages", who, "/console/messages", &body),
    )
}

async fn journey(state: &HttpState, who: &Who, db: &str, id: &str) -> Response<Body> {
    let (Some(s), Ok(id)) = (store(state, db), id.parse::<i64>()) else {
        return not_found(who, "There is no such message.");
    };
    let row =
        match crate::journal::get(&s, id).await {
            Ok(Some(r)) => r,
            Ok(None) => return not_found(
                who,
                "There is no such message in the journal (it may be older than journal_retention).",
            ),
            Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
        };
    let steps = match crate::journal::journey(&s, &row).await {
        Ok(v) => v,
        Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<dl class="ids"><dt>Accession</dt><dd id="accession">{}</dd><dt>Control id</dt><dd>{}</dd><dt>Type</dt><dd>{}</dd><dt>Pipeline</dt><dd>{}</dd><dt>Source</dt><dd>{} ({})</dd><dt>Content hash</dt><dd><code>{}</code></dd></dl>"#,
        esc(row.accession.as_deref().unwrap_or("—")),
        esc(row.control_id.as_deref().unwrap_or("—")),
        esc(&[row.message_type.as_deref(), row.lab_type.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ")),
        esc(&row.pipeline),
        esc(&row.source),
        esc(&row.source_kind),
        esc(&row.content_sha256),
    );
    body.push_str(r#"<ol class="journey" id="journey">"#);
    if let Some(first) = steps.first() {
        let _ = write!(
            body,
            r#"<li><span class="when">{}</span> Received by <strong>{}</strong> ({}){}.</li>"#,
            esc(&first.received_at),
            esc(&first.source),
            esc(&first.source_kind),
            if first.attempt > 1 {
                format!(", delivery {}", first.attempt)
            } else {
                String::new()
            }
        );
    }
    let mut released: Option<String> = None;
    // "message N of its file" only says something when the file had several.
    let parts: std::collections::BTreeSet<i64> = steps.iter().filter_map(|r| r.part).collect();
    for r in &steps {
        let mark = if r.id == row.id {
            " class=\"this\""
        } else {
            ""
        };
        let part = r
            .part
            .filter(|_| parts.len() > 1)
            .map(|p| format!(" (message {} of its file)", p + 1))
            .unwrap_or_default();
        let _ = write!(
            body,
            r#"<li{mark}><span class="when">{}</span> {}{}"#,
            esc(&r.at),
            esc(words::outcome(&r.kind, &r.outcome)),
            esc(&part)
        );
        let rows = oscar_row_names(r);
        if !rows.is_empty() {
            let _ = write!(body, " as <strong>{}</strong>", esc(&rows.join(", ")));
        }
        body.push('.');
        if let Some(m) = &r.match_outcome {
            let _ = write!(
                body,
                r#"<p class="reason" data-match="{}">{}{}</p>"#,
                esc(m),
                esc(&words::match_outcome(m, r.match_candidates)),
                r.demographic_no
                    .map(|d| format!(" Chart #{d}."))
                    .unwrap_or_default()
            );
        }
        if let Some(reason) = &r.reason {
            let _ = write!(
                body,
                r#"<p class="reason" data-reason="{}">{} <span class="muted">({})</span>{}</p>"#,
                esc(reason),
                esc(words::reason(reason)),
                esc(reason),
                r.detail
                    .as_deref()
                    .map(|d| format!(r#"<br><span class="muted">{}</span>"#, detail(d)))
                    .unwrap_or_default()
            );
        }
        if let Some(d) = &r.dead_letter_id {
            let _ = write!(
                body,
                r#"<p><a href="/console/dead-letters/{db}/{d}">Dead letter {d}</a></p>"#,
                db = esc(db),
                d = esc(d)
            );
        }
        body.push_str("</li>");
        if r.released_at.is_some() {
            released = r.released_at.clone();
        }
    }
    match released {
        Some(t) => {
            let _ = write!(
                body,
                r#"<li><span class="when">{}</span> The source let go of the input (the file was removed, or the batch acknowledged).</li>"#,
                esc(&t)
            );
        }
        None => {
            body.push_str(r#"<li class="muted">The source has not (yet) let go of the input.</li>"#)
        }
    }
    body.push_str("</ol>");
    page(
        StatusCode::OK,
        layout("Message journey", who, "/console/messages", &body),
    )
}

async fn unmatched(state: &HttpState, who: &Who) -> Response<Body> {
    let today = local_start_of_day(0);
    let mut rows = Vec::new();
    for (i, s) in state.registry.stores().iter().enumerate() {
        let q = Query {
            kind: Some("lab".into()),
            outcome: Some("imported".into()),
            from: Some(today.clone()),
            limit: 1000,
            ..Query::default()
        };
        match crate::journal::search(s, &q).await {
            Ok(v) => rows.extend(
                v.into_iter()
                    .filter(|r| r.match_outcome.as_deref().is_some_and(|m| m != "matched"))
                    .map(|r| (i, r)),
            ),
            Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
        }
    }
    let mut body = format!(
        r#"<p>Labs filed today into OSCAR's unmatched inbox ({}): they are in OSCAR, but on no patient's chart until someone files them there.</p><table id="unmatched"><thead><tr><th>When</th><th>Pipeline</th><th>Accession</th><th>Lab</th><th>Why not filed to a chart</th><th></th></tr></thead><tbody>"#,
        rows.len()
    );
    for (db, r) in &rows {
        let _ = write!(
            body,
            r#"<tr data-accession="{acc}"><td class="id">{}</td><td>{}</td><td class="id">{acc}</td><td class="id">{}</td><td>{}</td><td><a href="/console/messages/{db}/{}">journey</a></td></tr>"#,
            esc(&r.at),
            esc(&r.pipeline),
            oscar_row_names(r).join(", "),
            esc(&words::match_outcome(
                r.match_outcome.as_deref().unwrap_or(""),
                r.match_candidates
            )),
            r.id,
            acc = esc(r.accession.as_deref().unwrap_or("")),
        );
    }
    if rows.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="muted">No unmatched lab today.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    page(
        StatusCode::OK,
        layout("Unmatched today", who, "/console/unmatched", &body),
    )
}

// ---------------------------------------------------------------------------------------
// Dead letters

async fn dead_letters(
    state: &HttpState,
    who: &Who,
    q: &[(String, String)],
    notice: Option<String>,
) -> Response<Body> {
    let get = |k: &str| {
        field(q, k)
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
    };
    let status_filter = match get("status").as_deref() {
        Some("all") => None,
        Some(s) => Some(s.to_string()),
        None => Some(status::OPEN.to_string()),
    };
    let f = Filter {
        pipeline: get("pipeline"),
        reason: get("reason").and_then(|r| ReasonCode::parse(&r)),
        status: status_filter.clone(),
        since: get("from").map(|d| format!("{d} 00:00:00")),
        before: None,
        limit: Some(500),
    };
    let mut body = notice.unwrap_or_default();
    body.push_str(r#"<form method="get" action="/console/dead-letters" class="search">"#);
    let names: Vec<String> = state
        .registry
        .pipelines()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let opts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    body.push_str(&select(
        "pipeline",
        "Pipeline",
        &opts,
        f.pipeline.as_deref(),
    ));
    let reasons: Vec<(&str, &str)> = ReasonCode::ALL
        .iter()
        .map(|r| (r.as_str(), r.as_str()))
        .collect();
    body.push_str(&select(
        "reason",
        "Reason",
        &reasons,
        f.reason.map(|r| r.as_str()),
    ));
    let chosen = match &status_filter {
        None => "all",
        Some(s) => s.as_str(),
    };
    let _ = write!(
        body,
        r#"<label>Status <select name="status" id="status">{}</select></label><label>Since <input type="date" name="from" value="{}"></label><button type="submit">Filter</button></form>"#,
        ["open", "resolved", "all"]
            .iter()
            .map(|s| format!(
                r#"<option value="{s}"{}>{s}</option>"#,
                if *s == chosen { " selected" } else { "" }
            ))
            .collect::<String>(),
        esc(field(q, "from").unwrap_or(""))
    );
    let mut rows: Vec<(usize, StoredDeadLetter)> = Vec::new();
    for (i, s) in state.registry.stores().iter().enumerate() {
        match DeadLetterStore::new(s.clone()).list(&f).await {
            Ok(v) => rows.extend(v.into_iter().map(|d| (i, d))),
            Err(e) => return db_error(who, e),
        }
    }
    let _ = write!(
        body,
        r#"<form method="post" action="/console/dead-letters/redrive">{}<table id="dead-letters"><thead><tr><th></th><th>Last failed</th><th>Pipeline</th><th>Reason</th><th>Status</th><th>Attempts</th><th>Size</th><th></th></tr></thead><tbody>"#,
        csrf_input(who)
    );
    for (db, d) in &rows {
        let check = if d.status == status::OPEN {
            format!(
                r#"<input type="checkbox" name="id" value="{db}:{}" aria-label="select">"#,
                esc(&d.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr data-id="{id}"><td>{check}</td><td class="id">{}</td><td>{}</td><td title="{}">{} <span class="muted">({})</span></td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td><a href="/console/dead-letters/{db}/{id}">details</a></td></tr>"#,
            esc(&shown_time(&d.last_failed_at)),
            esc(&d.pipeline),
            esc(words::reason(&d.reason)),
            esc(words::reason_short(&d.reason)),
            esc(&d.reason),
            esc(&d.status),
            d.attempts,
            human_bytes(d.raw_len),
            id = esc(&d.id),
        );
    }
    if rows.is_empty() {
        body.push_str(r#"<tr><td colspan="8" class="muted">No dead letter.</td></tr>"#);
    }
    body.push_str(r#"</tbody></table><button type="submit" id="redrive">Re-drive the selected ones</button></form><p><a href="/console/dead-letters/purge" id="purge-link">Purge resolved dead letters…</a></p>"#);
    page(
        StatusCode::OK,
        layout("Dead letters", who, "/console/dead-letters", &body),
    )
}

async fn find_dead_letter(
    state: &HttpState,
    db: &str,
    id: &str,
    with_raw: bool,
) -> Result<Option<(Store, StoredDeadLetter)>, String> {
    let Some(s) = store(state, db) else {
        return Ok(None);
    };
    let dls = DeadLetterStore::new(s.clone());
    let r = if with_raw {
        dls.get(id).await
    } else {
        dls.list_one(id).await
    };
    r.map(|o| o.map(|d| (s, d))).map_err(|e| e.to_string())
}

async fn dead_letter(
    state: &HttpState,
    who: &Who,
    db: &str,
    id: &str,
    revealed: Option<&[u8]>,
) -> Response<Body> {
    let d = match find_dead_letter(state, db, id, false).await {
        Ok(Some((_, d))) => d,
        Ok(None) => return not_found(who, "There is no such dead letter."),
        Err(e) => return db_error(who, e),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<dl class="ids" id="dead-letter"><dt>Id</dt><dd>{id}</dd><dt>Pipeline</dt><dd>{}</dd><dt>Source</dt><dd>{} ({})</dd><dt>Stage</dt><dd>{} ({})</dd><dt>Reason</dt><dd><strong>{}</strong> <span class="muted">({})</span></dd><dt>Detail</dt><dd>{}</dd><dt>Status</dt><dd id="status">{}</dd><dt>Attempts</dt><dd>{}</dd><dt>Received</dt><dd>{}</dd><dt>First failed</dt><dd>{}</dd><dt>Last failed</dt><dd>{}</dd><dt>Resolved</dt><dd>{}</dd><dt>Size</dt><dd>{} bytes</dd><dt>Content hash</dt><dd><code>{}</code></dd></dl>"#,
        esc(&d.pipeline),
        esc(&d.source),
        esc(&d.source_kind),
        esc(&d.stage),
        esc(&d.stage_kind),
        esc(words::reason(&d.reason)),
        esc(&d.reason),
        detail(&d.detail),
        esc(&d.status),
        d.attempts,
        esc(&shown_time(&d.received_at)),
        esc(&shown_time(&d.first_failed_at)),
        esc(&shown_time(&d.last_failed_at)),
        esc(&d
            .resolved_at
            .as_deref()
            .map(shown_time)
            .unwrap_or("—".into())),
        d.raw_len,
        esc(&d.content_sha256),
        id = esc(&d.id),
    );
    let _ = write!(
        body,
        r#"<p><a href="/console/messages?id={}">Find its message in the journal</a></p>"#,
        enc(&d.content_sha256)
    );
    if d.status == status::OPEN {
        let _ = write!(
            body,
            r#"<form method="post" action="/console/dead-letters/redrive" class="inline">{}<input type="hidden" name="id" value="{}:{}"><button type="submit" id="redrive-one">Re-drive</button></form>"#,
            csrf_input(who),
            esc(db),
            esc(&d.id)
        );
    }
    match revealed {
        Some(raw) => {
            const SHOWN: usize = 1024 * 1024;
            let text = String::from_utf8_lossy(&raw[..raw.len().min(SHOWN)]).replace('\r', "\n");
            let _ = write!(
                body,
                r#"<h2>Original bytes</h2><p class="warn">Patient data. This reveal was recorded.{}</p><pre id="raw">{}</pre>"#,
                if raw.len() > SHOWN {
                    " Only the first MiB is shown."
                } else {
                    ""
                },
                esc(&text)
            );
        }
        None => {
            let _ = write!(
                body,
                r#"<form method="post" action="/console/dead-letters/{}/{}/reveal" class="inline">{}<button type="submit" id="reveal">Reveal the original bytes (patient data; recorded)</button></form>"#,
                esc(db),
                esc(&d.id),
                csrf_input(who)
            );
        }
    }
    page(
        StatusCode::OK,
        layout("Dead letter", who, "/console/dead-letters", &body),
    )
}

async fn reveal(state: &HttpState, who: &Who, db: &str, id: &str) -> Response<Body> {
    let (s, d) = match find_dead_letter(state, db, id, true).await {
        Ok(Some(x)) => x,
        Ok(None) => return not_found(who, "There is no such dead letter."),
        Err(e) => return db_error(who, e),
    };
    if let Err(e) = DeadLetterStore::new(s.clone())
        .record_reveal(&d, &who.actor(), "the console's reveal")
        .await
    {
        // Not recorded, not shown.
        return db_error(who, crate::error::describe_sqlx(&e));
    }
    tracing::warn!(dead_letter = %d.id, pipeline = %d.pipeline, session = %who.tag, "Dead letter bytes revealed in the console.");
    let mut raw = Vec::new();
    if DeadLetterStore::new(s)
        .write_raw(&d.id, &mut raw)
        .await
        .is_err()
    {
        raw = d.raw.clone();
    }
    dead_letter(state, who, db, id, Some(&raw)).await
}

async fn redrive(state: &HttpState, who: &Who, fields: &[(String, String)]) -> Response<Body> {
    let chosen: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.split_once(':'))
        .collect();
    let mut notice =
        String::from(r#"<div class="banner ok" id="redrive-result"><strong>Re-drive</strong><ul>"#);
    if chosen.is_empty() {
        notice.push_str("<li>Nothing was selected.</li>");
    }
    let stores = state.registry.stores();
    for (i, s) in stores.iter().enumerate() {
        let dls = DeadLetterStore::new(s.clone());
        let mut targets = Vec::new();
        for (db, id) in chosen.iter().filter(|(db, _)| *db == i.to_string()) {
            let _ = db;
            match dls.get(id).await {
                Ok(Some(d)) if d.status == status::OPEN => targets.push(d),
                Ok(Some(_)) => {
                    let _ = write!(notice, "<li>{}: not open any more</li>", esc(id));
                }
                Ok(None) => {
                    let _ = write!(notice, "<li>{}: no such dead letter</li>", esc(id));
                }
                Err(e) => {
                    let _ = write!(notice, "<li>{}: {}</li>", esc(id), esc(&e.to_string()));
                }
            }
        }
        if targets.is_empty() {
            continue;
        }
        tracing::info!(dead_letters = targets.len(), session = %who.tag, "Re-drive from the console.");
        let Some(redrive) = &state.redrive else {
            notice.push_str("<li class=\"bad\">This daemon cannot re-drive from the console.</li>");
            break;
        };
        let lines = redrive(s.clone(), targets).await;
        for l in lines {
            match l.error {
                Some(e) => {
                    let _ = write!(notice, r#"<li class="bad">{}</li>"#, esc(&e));
                }
                None => {
                    let (class, said) = words::redriven(&l.outcome);
                    let _ = write!(
                        notice,
                        r#"<li data-id="{id}" class="{class}"><a href="/console/dead-letters/{i}/{id}">{id}</a>: {said} <span class="muted">({})</span></li>"#,
                        esc(&l.outcome),
                        id = esc(&l.id)
                    );
                }
            }
        }
    }
    notice.push_str("</ul></div>");
    dead_letters(state, who, &[], Some(notice)).await
}

async fn purge_confirm(state: &HttpState, who: &Who) -> Response<Body> {
    let resolved = Filter {
        status: Some(status::RESOLVED.into()),
        ..Filter::default()
    };
    let mut n = 0;
    for s in state.registry.stores() {
        n += DeadLetterStore::new(s).count(&resolved).await.unwrap_or(0);
    }
    let body = format!(
        r#"<p>This deletes the <strong id="purge-count">{n}</strong> resolved dead letter(s) (re-driven and imported, so their labs are in OSCAR) and their bytes. Open dead letters are never purged here: for them the dead letter is the only copy.</p><form method="post" action="/console/dead-letters/purge">{}<label><input type="checkbox" name="confirm" value="yes" id="confirm"> Yes, delete the resolved dead letters</label><button type="submit" id="purge">Purge</button></form>"#,
        csrf_input(who)
    );
    page(
        StatusCode::OK,
        layout(
            "Purge resolved dead letters",
            who,
            "/console/dead-letters",
            &body,
        ),
    )
}

async fn purge(state: &HttpState, who: &Who, fields: &[(String, String)]) -> Response<Body> {
    if field(fields, "confirm") != Some("yes") {
        let notice = r#"<p class="banner warn" id="purge-result">Nothing was deleted: tick the confirmation first.</p>"#.to_string();
        return dead_letters(state, who, &[], Some(notice)).await;
    }
    let resolved = Filter {
        status: Some(status::RESOLVED.into()),
        ..Filter::default()
    };
    let mut n = 0;
    for s in state.registry.stores() {
        match DeadLetterStore::new(s).purge(&resolved).await {
            Ok(k) => n += k,
            Err(e) => return db_error(who, e),
        }
    }
    tracing::info!(purged = n, session = %who.tag, "Resolved dead letters purged from the console.");
    let notice = format!(
        r#"<p class="banner ok" id="purge-result">{n} resolved dead letter(s) deleted.</p>"#
    );
    dead_letters(state, who, &[], Some(notice)).await
}

// ---------------------------------------------------------------------------------------
// Pipelines

fn pipelines(state: &HttpState, who: &Who, notice: Option<String>) -> Response<Body> {
    let mut body = notice.unwrap_or_default();
    let rejected = state.registry.rejected();
    if !rejected.is_empty() {
        body.push_str(r#"<div class="banner bad" id="rejected"><strong>Pipeline files not taken</strong><ul>"#);
        for (f, why) in &rejected {
            let _ = write!(
                body,
                "<li><code>{}</code>: {}</li>",
                esc(&f.display().to_string()),
                esc(why)
            );
        }
        body.push_str("</ul><p>The running version of each (if any) goes on until the file is fixed.</p></div>");
    }
    for p in state.registry.pipelines() {
        let stop = p.stop().map(|s| {
            format!(
                r#"<p class="bad">Stopped by <code>{}</code>: {}</p>"#,
                esc(&s.component),
                esc(&s.error)
            )
        });
        let restart = p.restart().map(|r| {
            format!(
                "<p>Starts again by itself in {} (attempt {}).</p>",
                human_secs(
                    r.at.duration_since(std::time::SystemTime::now())
                        .unwrap_or_default()
                        .as_secs()
                ),
                r.attempt
            )
        });
        let state_text = if !p.is_running() {
            "stopped"
        } else if p.control.outage().is_some() {
            "held"
        } else if p.control.is_paused() {
            "paused"
        } else {
            "running"
        };
        let _ = write!(
            body,
            r#"<section class="pipeline" id="pipeline-{n}"><h2>{n} <span class="state {state_text}">{state_text}</span></h2>{}{}<p>In flight: {} · oldest unacknowledged: {} · components: {}</p><div class="actions">"#,
            stop.unwrap_or_default(),
            restart.unwrap_or_default(),
            p.in_flight.current(),
            human_secs(p.in_flight.oldest_age().as_secs()),
            esc(&p.components.join(", ")),
            n = esc(&p.name),
        );
        for (action, label) in [
            ("pause", "Pause"),
            ("resume", "Resume"),
            ("poll", "Poll now"),
            ("restart", "Restart"),
        ] {
            let _ = write!(
                body,
                r#"<form method="post" action="/console/pipelines/{}/{action}" class="inline">{}<button type="submit" id="{action}-{}">{label}</button></form>"#,
                enc(&p.name),
                csrf_input(who),
                esc(&p.name)
            );
        }
        let text = std::fs::read_to_string(&p.file)
            .unwrap_or_else(|e| format!("(cannot read the file: {})", e.kind()));
        let note = if rejected.iter().any(|(f, _)| *f == p.file) {
            " — the file on disk was rejected (above); the running version is the one loaded before"
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"</div><details><summary>{}{}</summary><pre>{}</pre></details></section>"#,
            esc(&p.file.display().to_string()),
            note,
            esc(&text)
        );
    }
    for (f, name) in state.registry.disabled() {
        let _ = write!(
            body,
            r#"<section class="pipeline"><h2>{} <span class="state stopped">off</span></h2><p>Switched off in <code>{}</code> (<code>enabled = false</code>).</p></section>"#,
            esc(&name),
            esc(&f.display().to_string())
        );
    }
    page(
        StatusCode::OK,
        layout("Pipelines", who, "/console/pipelines", &body),
    )
}

fn control(state: &HttpState, who: &Who, name: &str, action: &str) -> Response<Body> {
    let name = url::form_urlencoded::parse(format!("n={name}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Some(p) = state.registry.get(&name) else {
        return not_found(who, "There is no such pipeline.");
    };
    let done = match action {
        "pause" => {
            p.control.pause();
            "paused: its sources take nothing new; what is in flight finishes"
        }
        "resume" => {
            p.control.resume();
            "resumed"
        }
        "poll" => {
            p.control.poll_now();
            "asked to poll now"
        }
        "restart" => match &state.restart {
            Some(tx) if tx.send(name.clone()).is_ok() => "restarting from its file",
            _ => "cannot be restarted from here",
        },
        _ => return not_found(who, "There is no such action."),
    };
    tracing::info!(pipeline = %p.name, action, session = %who.tag, "Console control request.");
    let notice = format!(
        r#"<p class="banner ok" id="control-result">{}: {}.</p>"#,
        esc(&p.name),
        done
    );
    pipelines(state, who, Some(notice))
}
