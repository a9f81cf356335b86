//! `oscarflow replay PATH...`: runs files through a lab pipeline once and reports, per file,
//! messages found, imported, duplicates, matched, unmatched and dead-lettered (with reasons).
//! Files are left in place; replaying again imports nothing new (all duplicates).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::report::{InputReport, ReportCollector};
use super::{fail, DbArgs, DEFAULT_LAB_PIPELINE};
use crate::ack::BatchStatus;
use crate::config::{load_file, load_str, PipelineConfig};
use crate::sources::list::{ListItem, ListSource};
use crate::sources::Source;
use crate::store::{redact_url, Store};
use crate::telemetry::Observers;
use crate::topology::{build, BuildOptions};

/// Arguments of `replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Files or directories (read recursively, in path order).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A lab pipeline file; its sources are replaced by the given paths. Default: parse →
    /// match_patient → oscar_lab.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    /// A SQL script run before the replay (synthetic patients and providers for a QA
    /// database, e.g. fixtures/sql/bc_clinic.sql), once per database: a script already run
    /// there is skipped. Not for production databases.
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Totals {
    files: usize,
    messages_found: u32,
    imported: u32,
    duplicates: u32,
    matched: u32,
    unmatched: u32,
    dead_lettered: u32,
    not_delivered: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    pipeline: &'a str,
    database: String,
    files: &'a [InputReport],
    totals: Totals,
    fatal: Option<String>,
}

/// Loads the pipeline for a replay or a re-drive.
pub(crate) fn pipeline_config(path: Option<&Path>) -> Result<PipelineConfig, String> {
    let r = match path {
        Some(p) => load_file(p),
        None => load_str(Path::new("<built-in lab pipeline>"), DEFAULT_LAB_PIPELINE),
    };
    r.map_err(|d| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Runs `items` through `cfg` once; returns the per-input reports and a fatal error.
pub(crate) async fn run_once(
    cfg: &PipelineConfig,
    store: &Store,
    items: Vec<ListItem>,
    kind: &'static str,
    progress: Option<indicatif::ProgressBar>,
) -> Result<(Vec<InputReport>, Option<String>), String> {
    let collector = Arc::new(ReportCollector::new(progress));
    let source: Box<dyn Source> = Box::new(ListSource::new(items, kind));
    let opts = BuildOptions {
        one_shot: true,
        observers: Observers::none().with(collector.clone()),
        source_override: Some(Arc::new(Mutex::new(Some(source)))),
        ..Default::default()
    };
    let mut running = build(cfg, store, opts).map_err(|e| e.to_string())?;
    let fatal = running.wait().await.err().map(|f| f.to_string());
    Ok((collector.reports(), fatal))
}

pub async fn run(a: ReplayArgs) -> i32 {
    let mut cfg = match pipeline_config(a.pipeline.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // With `--config`, relative paths resolve as in the daemon (its state directory).
    match a.db.daemon_config() {
        Ok(Some(d)) => cfg.resolve_paths(&super::absolute(&d.state_dir)),
        Ok(None) => {}
        Err(e) => return fail(e),
    }
    let files = match ListSource::expand(&a.paths) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let url = match a.db.url() {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let store = match Store::open(&url).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Some(seed) = &a.seed {
        let sql = match std::fs::read_to_string(seed) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot read {}: {e}", seed.display())),
        };
        match store.execute_script_once(&sql).await {
            Ok(true) => {}
            Ok(false) => eprintln!(
                "seed {}: already run on this database; skipped",
                seed.display()
            ),
            Err(e) => return fail(format!("seed {}: {e}", seed.display())),
        }
    }
    let progress = (std::io::stderr().is_terminal() && files.len() > 20).then(|| {
        let p = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed}")
        {
            p.set_style(style);
        }
        p
    });
    // Warnings (and every line RUST_LOG asks for) go above the bar, not through it.
    crate::telemetry::log_above(progress.clone());
    let items = files.into_iter().map(ListItem::File).collect();
    let ran = run_once(&cfg, &store, items, "replay", progress.clone()).await;
    crate::telemetry::log_above(None);
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let (reports, fatal) = match ran {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let totals = Totals {
        files: reports.len(),
        messages_found: reports.iter().map(|r| r.messages_found).sum(),
        imported: reports.iter().map(|r| r.imported).sum(),
        duplicates: reports.iter().map(|r| r.duplicates).sum(),
        matched: reports.iter().map(|r| r.matched).sum(),
        unmatched: reports.iter().map(|r| r.unmatched).sum(),
        dead_lettered: reports.iter().map(|r| r.dead_lettered).sum(),
        not_delivered: reports
            .iter()
            .filter(|r| {
                r.status != Some(BatchStatus::Delivered)
                    && r.status != Some(BatchStatus::DeadLettered)
            })
            .count(),
    };
    let report = Report {
        pipeline: &cfg.name,
        database: redact_url(&url),
        files: &reports,
        totals,
        fatal,
    };
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(e),
        }
    } else {
        print_table(&report);
    }
    if report.fatal.is_some() {
        1
    } else if report.totals.not_delivered > 0 {
        2
    } else {
        0
    }
}

fn print_table(r: &Report<'_>) {
    let width = r
        .files
        .iter()
        .map(|f| f.input.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 70);
    println!(
        "{:<width$} {:>5} {:>8} {:>4} {:>7} {:>9} {:>5}  reasons",
        "file", "found", "imported", "dup", "matched", "unmatched", "dead"
    );
    for f in r.files {
        let reasons = f
            .reasons
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let flag = match f.status {
            Some(BatchStatus::Failed) | None => "  NOT DELIVERED",
            _ => "",
        };
        println!(
            "{:<width$} {:>5} {:>8} {:>4} {:>7} {:>9} {:>5}  {reasons}{flag}",
            f.input,
            f.messages_found,
            f.imported,
            f.duplicates,
            f.matched,
            f.unmatched,
            f.dead_lettered
        );
    }
    let t = &r.totals;
    println!(
        "{:<width$} {:>5} {:>8} {:>4} {:>7} {:>9} {:>5}",
        format!("total ({} files)", t.files),
        t.messages_found,
        t.imported,
        t.duplicates,
        t.matched,
        t.unmatched,
        t.dead_lettered
    );
    // Streamed, not collected: a replay can list a million unmatched labs.
    let unmatched = r
        .files
        .iter()
        .flat_map(|f| f.messages.iter().map(move |m| (f.input.as_str(), m)))
        .filter(|(_, m)| m.outcome() != "matched" && m.lab_type().is_some());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, (input, m)) in unmatched.enumerate() {
        if i == 0 {
            let _ = writeln!(
                out,
                "unmatched labs (in OSCAR's unmatched list; `outcome` says why):"
            );
        }
        let candidates = m
            .candidates()
            .map(|n| format!(" ({n} chart{})", if n == 1 { "" } else { "s" }))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {input} #{} lab_no {} {} {}{candidates}",
            m.message,
            m.lab_no,
            m.lab_type().unwrap_or("-"),
            m.outcome()
        );
    }
    let appointments = r
        .files
        .iter()
        .flat_map(|f| f.appointments.iter().map(move |a| (f.input.as_str(), a)));
    for (i, (input, a)) in appointments.enumerate() {
        if i == 0 {
            let _ = writeln!(out, "appointments (OSCAR's appointment book):");
        }
        let _ = writeln!(
            out,
            "  {input} #{} {} appointment_no {} {}{}",
            a.message,
            a.event,
            a.appointment_no
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            a.outcome,
            if a.flagged {
                " (overlaps: flagged)"
            } else {
                ""
            }
        );
    }
    drop(out);
    println!("pipeline {} on {}", r.pipeline, r.database);
    if let Some(f) = &r.fatal {
        println!("FATAL: {f}");
    }
    if t.not_delivered > 0 {
        println!(
            "{} input(s) were neither imported nor dead-lettered; replay them again.",
            t.not_delivered
        );
    }
}
