//! `/console/audit`: the audit trail ([`crate::audit`]) of every database the daemon opened —
//! what was written into which chart by which pipeline, and who was shown patient data —
//! searched by time, chart, pipeline and kind; and, on request, the verification of its
//! hash chains. Rows hold chart numbers and row keys, never names: the page shows no
//! patient data and is not itself recorded.

use std::fmt::Write;

use hyper::{Response, StatusCode};

use super::super::{Body, HttpState};
use super::pages::{db_error, esc, layout, select};
use super::{field, page, Who};
use crate::audit::{list, verify, Filter};

pub(super) async fn audit(state: &HttpState, who: &Who, q: &[(String, String)]) -> Response<Body> {
    let get = |k: &str| {
        field(q, k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let demographic = get("demographic");
    let f = Filter {
        since: get("since"),
        demographic_no: demographic.as_deref().and_then(|d| d.parse().ok()),
        pipeline: get("pipeline"),
        action: get("action"),
        limit: 500,
    };
    let mut body = format!(
        r#"<p>Every OSCAR row oscarflow wrote (with the chart it was filed to and the message it came from), every status it set in OSCAR's queues, and every time a person was shown patient data, with who and why. The rows are chained by hashes: <a href="/console/audit?verify=1">verify the chains</a>.</p>
<form method="get" action="/console/audit" class="search"><label>Since <input name="since" placeholder="YYYY-MM-DD" value="{}"></label><label>Chart # <input name="demographic" value="{}"></label><label>Pipeline <input name="pipeline" value="{}"></label>{}<button type="submit">Search</button></form>"#,
        esc(f.since.as_deref().unwrap_or("")),
        esc(demographic.as_deref().unwrap_or("")),
        esc(f.pipeline.as_deref().unwrap_or("")),
        select(
            "action",
            "Kind",
            &[
                ("", "any"),
                ("write", "written into OSCAR"),
                ("status", "status set in OSCAR"),
                ("read", "patient data shown"),
            ],
            f.action.as_deref(),
        ),
    );
    let stores = state.registry.stores();
    if field(q, "verify").is_some() {
        body.push_str(r#"<h2>Verification</h2><table id="verify"><thead><tr><th>Database</th><th>Chain</th><th>Rows</th><th>Result</th><th>Head hash (keep a copy elsewhere)</th></tr></thead><tbody>"#);
        for (i, s) in stores.iter().enumerate() {
            match verify(s).await {
                Ok(reports) => {
                    for r in reports {
                        let result = match &r.problem {
                            None => r#"<span class="ok">intact</span>"#.to_string(),
                            Some(p) => format!(
                                r#"<span class="error">BROKEN: {}</span>"#,
                                esc(&p.to_string())
                            ),
                        };
                        let _ = write!(
                            body,
                            r#"<tr><td>{i}</td><td class="id">{}</td><td>{}</td><td>{result}</td><td class="id">{}</td></tr>"#,
                            esc(&r.chain),
                            r.rows,
                            esc(&r.head_hash)
                        );
                    }
                }
                Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
            }
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(r#"<table id="audit"><thead><tr><th>When</th><th>Kind</th><th>Who</th><th>About</th><th>Rows written / why shown</th><th>Process</th></tr></thead><tbody>"#);
    let mut n = 0;
    for (i, s) in stores.iter().enumerate() {
        let rows = match list(s, &f).await {
            Ok(r) => r,
            Err(e) => return db_error(who, crate::error::describe_sqlx(&e)),
        };
        for r in rows {
            n += 1;
            let a = &r.about;
            let mut about: Vec<String> = a
                .pipeline
                .iter()
                .map(|p| format!("pipeline {}", esc(p)))
                .collect();
            about.extend(a.records());
            if let Some(j) = a.journal_id {
                about.push(format!(
                    r#"<a href="/console/messages/{i}/{j}">journal {j}</a>"#
                ));
            }
            let what = match (&r.written, &r.why) {
                (Some(w), _) => esc(w),
                (None, Some(w)) => esc(w),
                (None, None) => String::new(),
            };
            let _ = write!(
                body,
                r#"<tr data-action="{}"><td class="id">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="rows">{what}</td><td class="muted">{} on {}</td></tr>"#,
                esc(&r.action),
                esc(&r.at),
                esc(&r.action),
                esc(&r.actor),
                about.join(", "),
                esc(&r.process),
                esc(&r.host),
            );
        }
    }
    if n == 0 {
        body.push_str(r#"<tr><td colspan="6" class="muted">No audit row matches.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    page(
        StatusCode::OK,
        layout("Audit trail", who, "/console/audit", &body),
    )
}
