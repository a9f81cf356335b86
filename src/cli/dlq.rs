//! `oscarflow dlq list|show|retry|purge`: the dead-letter store from the command line.
//!
//! `retry` re-drives dead letters through their pipeline (the file in `--pipelines` whose
//! name matches, or the built-in lab pipeline for replays): the original bytes go in again as
//! a new attempt. A dead letter is marked `resolved` when its bytes were imported (or found to
//! be already imported), or when the re-drive split it and every part was accounted for
//! elsewhere; it stays `open`, with its attempt count raised, when it is rejected again.

use std::path::PathBuf;

use clap::Subcommand;

use super::replay::{pipeline_config, run_once};
use super::{fail, DbArgs};
use crate::ack::BatchStatus;
use crate::config::{load_all_in, PipelineConfig};
use crate::dead_letter::{status, DeadLetterStore, Filter, ReasonCode, Redriven, StoredDeadLetter};
use crate::envelope::Origin;
use crate::sources::list::{ListItem, DEAD_LETTER_KIND};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters (newest first).
    List {
        #[arg(long)]
        pipeline: Option<String>,
        /// Reason code (empty_input, not_hl7, malformed, missing_segment, too_large, …).
        #[arg(long)]
        reason: Option<String>,
        /// open, resolved or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Only those whose last failure is at or after this local time
        /// (YYYY-MM-DD[ HH:MM:SS]).
        #[arg(long)]
        since: Option<String>,
        /// Only those whose last failure is before this local time (YYYY-MM-DD[ HH:MM:SS]).
        #[arg(long)]
        before: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
        /// Show where each input came from (file paths and names may carry patient names).
        #[arg(long)]
        show_origin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Show one dead letter; `--raw` writes its original bytes to stdout.
    Show {
        id: String,
        /// Write the original bytes (PHI!) to stdout instead of the summary.
        #[arg(long)]
        raw: bool,
        #[arg(long)]
        json: bool,
        /// Show where the input came from (file paths and names may carry patient names).
        #[arg(long)]
        show_origin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Re-drive dead letters through their pipeline.
    Retry {
        /// A dead-letter id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every open dead letter (optionally of one pipeline).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        pipeline: Option<String>,
        /// Where to find pipeline files by name.
        /// Pipeline files to re-drive through. Default: the `--config` file's
        /// `pipelines_dir`, else `pipelines`.
        #[arg(long)]
        pipelines: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Delete dead letters: resolved ones unless told otherwise. An open dead letter is
    /// the only copy of an input that was never imported; deleting open ones takes
    /// `--status open` (or `all`) and `--yes`.
    Purge {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter matching the filters.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// resolved, open or all.
        #[arg(long, default_value = "resolved")]
        status: String,
        /// Only those whose last failure is before this local time (YYYY-MM-DD[ HH:MM:SS]).
        #[arg(long)]
        before: Option<String>,
        /// Confirm deleting open dead letters (inputs never imported: their only copy).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn status_filter(s: &str) -> Result<Option<String>, String> {
    match s {
        "all" => Ok(None),
        "open" => Ok(Some(status::OPEN.into())),
        "resolved" => Ok(Some(status::RESOLVED.into())),
        other => Err(format!("unknown status `{other}` (open, resolved, all)")),
    }
}

fn reason_filter(r: Option<&str>) -> Result<Option<ReasonCode>, String> {
    match r {
        None => Ok(None),
        Some(r) => ReasonCode::parse(r).map(Some).ok_or_else(|| {
            format!(
                "unknown reason `{r}` (known: {})",
                ReasonCode::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    }
}

async fn open(db: &DbArgs) -> Result<DeadLetterStore, String> {
    Store::open(&db.url()?)
        .await
        .map(DeadLetterStore::new)
        .map_err(|e| e.to_string())
}

pub async fn run(c: DlqCommand) -> i32 {
    match c {
        DlqCommand::List {
            pipeline,
            reason,
            status,
            since,
            before,
            limit,
            json,
            show_origin,
            db,
        } => {
            let filter = match (status_filter(&status), reason_filter(reason.as_deref())) {
                (Ok(s), Ok(r)) => Filter {
                    pipeline,
                    reason: r,
                    status: s,
                    before,
                    since,
                    limit: Some(limit),
                },
                (Err(e), _) | (_, Err(e)) => return fail(e),
            };
            let store = match open(&db).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let mut rows = match store.list(&filter).await {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if !show_origin {
                rows.iter_mut().for_each(hide_origin);
            } else if let Err(e) = record_origins(
                &store,
                format!(
                    "`oscarflow dlq list --show-origin`: where {} dead letter(s) came from (file paths and names)",
                    rows.len()
                ),
            )
            .await
            {
                return fail(e);
            }
            if json {
                match serde_json::to_string_pretty(&rows) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(e),
                }
            } else {
                println!(
                    "{:<26} {:<20} {:<14} {:<18} {:>8} {:>4} {:<8} last failed",
                    "id", "pipeline", "stage", "reason", "bytes", "try", "status"
                );
                for r in &rows {
                    println!(
                        "{:<26} {:<20} {:<14} {:<18} {:>8} {:>4} {:<8} {}",
                        r.id,
                        r.pipeline,
                        r.stage,
                        r.reason,
                        r.raw_len,
                        r.attempts,
                        r.status,
                        r.last_failed_at
                    );
                }
                println!("{} dead letter(s)", rows.len());
            }
            0
        }
        DlqCommand::Show {
            id,
            raw,
            json,
            show_origin,
            db,
        } => {
            let store = match open(&db).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            if raw {
                // Patient data: recorded in the audit trail (who, from the OS) before a
                // byte is written, or not shown.
                let d = match store.list_one(&id).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return fail(format!("no dead letter with id {id}")),
                    Err(e) => return fail(e),
                };
                if let Err(e) = store
                    .record_reveal(&d, &crate::audit::os_user(), "`oscarflow dlq show --raw`")
                    .await
                {
                    return fail(format!(
                        "the read could not be recorded in the audit trail, so nothing is shown: {}",
                        crate::error::describe_sqlx(&e)
                    ));
                }
                // A chunk at a time: a dead letter of any size, never held whole.
                let mut out = std::io::stdout();
                return match store.write_raw(&id, &mut out).await {
                    Ok(Some(_)) => 0,
                    Ok(None) => fail(format!("no dead letter with id {id}")),
                    Err(e) => fail(e),
                };
            }
            let mut row = match store.list_one(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => return fail(format!("no dead letter with id {id}")),
                Err(e) => return fail(e),
            };
            if !show_origin {
                hide_origin(&mut row);
            } else if let Err(e) = record_origins(
                &store,
                format!(
                    "`oscarflow dlq show --show-origin`: where dead letter {} came from (file path and name)",
                    row.id
                ),
            )
            .await
            {
                return fail(e);
            }
            if json {
                return match serde_json::to_string_pretty(&row) {
                    Ok(s) => {
                        println!("{s}");
                        0
                    }
                    Err(e) => fail(e),
                };
            }
            print_show(&row);
            0
        }
        DlqCommand::Retry {
            id,
            all,
            pipeline,
            pipelines,
            db,
        } => retry(id, all, pipeline, pipelines, db).await,
        DlqCommand::Purge {
            id,
            all,
            pipeline,
            reason,
            status,
            before,
            yes,
            db,
        } => {
            let filter = match (status_filter(&status), reason_filter(reason.as_deref())) {
                (Ok(s), Ok(r)) => Filter {
                    pipeline,
                    reason: r,
                    status: s,
                    before,
                    since: None,
                    limit: None,
                },
                (Err(e), _) | (_, Err(e)) => return fail(e),
            };
            let store = match open(&db).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let n = if let Some(id) = id {
                match store.list_one(&id).await {
                    Ok(Some(r)) if r.status == status::OPEN && !yes => {
                        return fail(format!(
                            "dead letter {id} is open: its input was never imported and this is its only copy. Retry it (`dlq retry {id}`), or add --yes to delete it anyway"
                        ))
                    }
                    Ok(Some(_)) => store.purge_id(&id).await,
                    Ok(None) => return fail(format!("no dead letter with id {id}")),
                    Err(e) => return fail(e),
                }
            } else if all {
                let mut filter = filter;
                if filter.status.as_deref() != Some(status::RESOLVED) && !yes {
                    let open_ones = Filter {
                        status: Some(status::OPEN.into()),
                        ..filter.clone()
                    };
                    match store.count(&open_ones).await {
                        Ok(0) => {}
                        Ok(n) => {
                            return fail(format!(
                                "this would delete {n} open dead letter(s): inputs never imported, of which the dead letter is the only copy. Nothing was deleted; add --yes to delete them"
                            ))
                        }
                        Err(e) => return fail(e),
                    }
                    // None was open: one that fails meanwhile is not deleted unasked.
                    filter.status = Some(status::RESOLVED.into());
                }
                store.purge(&filter).await
            } else {
                return fail("give an id or --all");
            };
            match n {
                Ok(n) => {
                    println!("purged {n} dead letter(s)");
                    0
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// What `dlq list` and `dlq show` print of an origin unless asked (`--show-origin`).
const HIDDEN: &str = "(hidden: --show-origin shows it)";

/// Masks the parts of a dead letter's origin that may name a patient: file paths and names
/// (a clinic's drop folder often names files after the patient) and free labels. Ids, hosts
/// and control ids stay.
/// `--show-origin` shows file paths and names, which can carry patient names: a read of
/// patient data, recorded in the audit trail (the OS user) before anything is printed.
async fn record_origins(store: &DeadLetterStore, why: String) -> Result<(), String> {
    crate::audit::record_read(
        store.store(),
        crate::audit::read(crate::audit::os_user(), why),
    )
    .await
    .map_err(|e| {
        format!(
            "the read could not be recorded in the audit trail, so nothing is shown: {}",
            crate::error::describe_sqlx(&e)
        )
    })
}

fn hide_origin(r: &mut StoredDeadLetter) {
    if let serde_json::Value::Object(m) = &mut r.origin {
        for key in ["path", "label", "name"] {
            if let Some(v) = m.get_mut(key) {
                *v = serde_json::Value::String(HIDDEN.into());
            }
        }
    }
}

fn print_show(r: &StoredDeadLetter) {
    println!("id            {}", r.id);
    println!("status        {}", r.status);
    println!("pipeline      {}", r.pipeline);
    println!("source        {} ({})", r.source, r.source_kind);
    println!("origin        {}", r.origin);
    if let Some(p) = r.part {
        println!("part          message {} of its input", p + 1);
    }
    println!("stage         {} ({})", r.stage, r.stage_kind);
    println!("reason        {} [{}]", r.reason, r.error_kind);
    println!("detail        {}", r.detail);
    println!("attempts      {}", r.attempts);
    println!("received      {}", r.received_at);
    println!(
        "failed        {} (first) / {} (last)",
        r.first_failed_at, r.last_failed_at
    );
    if let Some(t) = &r.resolved_at {
        println!("resolved      {t}");
    }
    println!("bytes         {} (sha256 {})", r.raw_len, r.content_sha256);
    println!("(use --raw to write the original bytes to stdout)");
}

fn find_pipeline(
    name: &str,
    dir: &PathBuf,
    base: Option<&std::path::Path>,
) -> Result<PipelineConfig, String> {
    if dir.is_dir() {
        let (ok, _) = load_all_in(std::slice::from_ref(dir), base);
        if let Some(p) = ok.into_iter().find(|p| p.name == name) {
            return Ok(p);
        }
    }
    let builtin = pipeline_config(None)?;
    if builtin.name == name {
        return Ok(builtin);
    }
    Err(format!(
        "no pipeline named `{name}` in {} (and it is not the built-in `{}`)",
        dir.display(),
        builtin.name
    ))
}

async fn retry(
    id: Option<String>,
    all: bool,
    pipeline: Option<String>,
    pipelines: Option<PathBuf>,
    db: DbArgs,
) -> i32 {
    let url = match db.url() {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let daemon = db.daemon_config();
    // With `--config`, relative paths resolve as in the daemon (its state directory).
    let base = match &daemon {
        Ok(c) => c.as_ref().map(|c| super::absolute(&c.state_dir)),
        Err(_) => None,
    };
    let pipelines = match (pipelines, daemon) {
        (Some(p), _) => p,
        (None, Ok(Some(cfg))) => cfg.pipelines_dir,
        (None, Ok(None)) => PathBuf::from("pipelines"),
        (None, Err(e)) => return fail(e),
    };
    let store = match Store::open(&url).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let dls = DeadLetterStore::new(store.clone());
    let mut targets: Vec<StoredDeadLetter> = Vec::new();
    if let Some(id) = id {
        match dls.get(&id).await {
            Ok(Some(r)) if r.status == status::OPEN => targets.push(r),
            Ok(Some(_)) => return fail(format!("dead letter {id} is not open")),
            Ok(None) => return fail(format!("no dead letter with id {id}")),
            Err(e) => return fail(e),
        }
    } else if all {
        let filter = Filter {
            pipeline,
            reason: None,
            status: Some(status::OPEN.into()),
            before: None,
            since: None,
            limit: Some(100_000),
        };
        let list = match dls.list(&filter).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        for r in list {
            match dls.get(&r.id).await {
                Ok(Some(full)) => targets.push(full),
                Ok(None) => {}
                Err(e) => return fail(e),
            }
        }
    }
    if targets.is_empty() {
        println!("nothing to retry");
        return 0;
    }
    let (lines, code) = redrive(&store, targets, &pipelines, base.as_deref()).await;
    for l in lines {
        match l.error {
            Some(e) => eprintln!("error: {e}"),
            None => println!("{}  {}", l.id, l.outcome),
        }
    }
    code
}

/// Re-drives `targets` (open dead letters with their bytes) through their pipelines, found
/// in `pipelines` (relative paths against `base`), and marks the ones that went through
/// resolved. Used by `dlq retry` and by the console. Returns a line per dead letter (and
/// per problem) and the exit code: 0 all resolved, 1 a pipeline problem, 2 some not.
pub async fn redrive(
    store: &Store,
    mut targets: Vec<StoredDeadLetter>,
    pipelines: &std::path::Path,
    base: Option<&std::path::Path>,
) -> (Vec<Redriven>, i32) {
    let dls = DeadLetterStore::new(store.clone());
    let pipelines = pipelines.to_path_buf();
    let mut out = Vec::new();
    // Group by pipeline, oldest first.
    targets.sort_by(|a, b| {
        (a.pipeline.as_str(), a.first_failed_at.as_str())
            .cmp(&(b.pipeline.as_str(), b.first_failed_at.as_str()))
    });
    let mut code = 0;
    let mut i = 0;
    while i < targets.len() {
        let name = targets[i].pipeline.clone();
        let group: Vec<&StoredDeadLetter> = targets[i..]
            .iter()
            .take_while(|t| t.pipeline == name)
            .collect();
        i += group.len();
        let cfg = match find_pipeline(&name, &pipelines, base) {
            Ok(c) => c,
            Err(e) => {
                out.push(Redriven::error(e));
                code = 1;
                continue;
            }
        };
        let items: Vec<ListItem> = group
            .iter()
            .map(|d| ListItem::Bytes {
                origin: Origin::DeadLetter { id: d.id.clone() },
                name: format!("dead-letter-{}", d.id),
                bytes: bytes::Bytes::from(d.raw.clone()),
                attempt: u32::try_from(d.attempts)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
            })
            .collect();
        if let Some(queue) = cfg.sources.iter().find(|s| s.config.is_queue()) {
            // A queue's dead letters go back into the queue, as OSCAR's own resend does:
            // the running daemon claims and sends them.
            for d in group {
                let outcome = match queue.config.requeue(store, &d.raw).await {
                    Some(Ok(requeued)) => {
                        if let Err(e) = dls.mark_resolved(&d.id).await {
                            out.push(Redriven::error(e.to_string()));
                            return (out, 1);
                        }
                        if requeued {
                            "resolved (queued again)"
                        } else {
                            "resolved (not in error any more)"
                        }
                    }
                    Some(Err(e)) => {
                        out.push(Redriven::error(format!("dead letter {}: {e}", d.id)));
                        code = code.max(2);
                        "not queued"
                    }
                    None => "not queued",
                };
                out.push(Redriven::line(&d.id, outcome));
            }
            continue;
        }
        if let Some(fax_sink) = fax_sink(&cfg) {
            // A fax pipeline takes documents, not raw bytes: its dead letters go straight
            // to its fax sink (the stage that rejected them).
            for d in group {
                let outcome = match redrive_fax(&cfg, fax_sink, store, d).await {
                    Ok(imported) => {
                        if let Err(e) = dls.mark_resolved(&d.id).await {
                            out.push(Redriven::error(e.to_string()));
                            return (out, 1);
                        }
                        if imported {
                            "resolved"
                        } else {
                            "resolved (already filed)"
                        }
                    }
                    Err(e) => {
                        out.push(Redriven::error(format!("dead letter {}: {e}", d.id)));
                        if code == 0 {
                            code = 2;
                        }
                        "not delivered"
                    }
                };
                out.push(Redriven::line(&d.id, outcome));
            }
            continue;
        }
        let (reports, fatal) = match run_once(&cfg, store, items, DEAD_LETTER_KIND, None).await {
            Ok(r) => r,
            Err(e) => {
                out.push(Redriven::error(e));
                return (out, 1);
            }
        };
        if let Some(f) = fatal {
            out.push(Redriven::error(f));
            code = 1;
        }
        for d in group {
            let label = Origin::DeadLetter { id: d.id.clone() }.label();
            let report = reports.iter().find(|r| r.input == label);
            let after = dls.get(&d.id).await.ok().flatten();
            let rejected_again = after.as_ref().is_some_and(|a| a.attempts > d.attempts);
            let outcome = match report.and_then(|r| r.status) {
                Some(BatchStatus::Delivered) => "resolved",
                Some(BatchStatus::DeadLettered) if !rejected_again => "resolved",
                Some(BatchStatus::DeadLettered) => "rejected again",
                _ => "not delivered",
            };
            if outcome == "resolved" {
                if let Err(e) = dls.mark_resolved(&d.id).await {
                    out.push(Redriven::error(e.to_string()));
                    return (out, 1);
                }
            } else if code == 0 {
                code = 2;
            }
            let (imp, dup) = report.map(|r| (r.imported, r.duplicates)).unwrap_or((0, 0));
            out.push(Redriven::line(
                &d.id,
                format!("{outcome}  (imported {imp}, duplicates {dup})"),
            ));
        }
    }
    (out, code)
}

/// The fax sink of a pipeline that files received faxes (`oscar_fax`), if it is one.
fn fax_sink(cfg: &PipelineConfig) -> Option<&crate::config::Component<crate::sinks::SinkConfig>> {
    cfg.sinks
        .iter()
        .find(|s| matches!(s.config, crate::sinks::SinkConfig::OscarFax(_)))
}

/// Files one dead-lettered fax through the pipeline's fax sink: its bytes are spooled to a
/// file under the system's temp directory (deleted afterwards) and filed under its
/// RingCentral message id, replacing the dead-letter record. `Ok(false)`: it was filed
/// already. The sender's number is not kept in dead letters, so `faxes.destination` stays
/// empty for a re-driven fax.
async fn redrive_fax(
    cfg: &PipelineConfig,
    sink: &crate::config::Component<crate::sinks::SinkConfig>,
    store: &Store,
    d: &StoredDeadLetter,
) -> Result<bool, String> {
    use crate::document::{InboundDocument, SpoolFile};
    use crate::sinks::Sink;
    let crate::sinks::SinkConfig::OscarFax(fc) = &sink.config else {
        return Err("not a fax sink".into());
    };
    let message_id: i64 = d
        .origin
        .get("message_id")
        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
        .ok_or("the dead letter has no RingCentral message id")?;
    // The fax is patient data: readable by this user only, and removed when the guard drops,
    // also when the write fails half-way.
    let spool = std::env::temp_dir().join(format!("oscarflow-redrive-{}.fax", d.id));
    let _ = std::fs::remove_file(&spool); // left by an interrupted earlier re-drive
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spool)
            .map_err(|e| format!("spooling the fax: {}", e.kind()))?
    };
    let file = std::sync::Arc::new(SpoolFile::new(spool));
    std::io::Write::write_all(&mut out, &d.raw)
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("spooling the fax: {}", e.kind()))?;
    drop(out);
    let content_type = if d.raw.starts_with(b"%PDF") {
        "application/pdf"
    } else if d.raw.starts_with(b"II*") || d.raw.starts_with(b"MM\0*") {
        "image/tiff"
    } else {
        "application/octet-stream"
    };
    let received_at = time::OffsetDateTime::parse(
        &d.received_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let doc = InboundDocument {
        file,
        size: d.raw.len() as u64,
        name: format!(
            "fax-{message_id}.{}",
            if content_type == "image/tiff" {
                "tif"
            } else {
                "pdf"
            }
        ),
        content_type: content_type.into(),
        pages: 0,
        received_at,
        external_id: message_id,
        sender: None,
    };
    let prov = std::sync::Arc::new(crate::envelope::Provenance {
        pipeline: std::sync::Arc::from(cfg.name.as_str()),
        source: std::sync::Arc::from(d.source.as_str()),
        source_kind: std::sync::Arc::from(DEAD_LETTER_KIND),
        origin: Origin::Fax {
            message_id: message_id.to_string(),
        },
        received_at,
        attempt: u32::try_from(d.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1),
        content_sha256: crate::envelope::sha256(&d.raw),
    });
    let collector = std::sync::Arc::new(super::report::ReportCollector::new(None));
    let sink_impl = crate::sinks::oscar_fax::OscarFax::new(
        store.clone(),
        fc,
        std::sync::Arc::from(sink.id.as_str()),
        crate::telemetry::Observers::standard().with(collector.clone()),
    );
    let env = crate::envelope::Envelope::new(prov, doc, crate::ack::AckToken::detached());
    sink_impl.write(&env).await.map_err(|e| e.detail)?;
    Ok(collector.reports().iter().any(|r| r.imported > 0))
}
