//! `oscarflow audit verify|list`: the audit trail ([`crate::audit`]) from the command line.
//!
//! `verify` walks every hash chain and prints, per chain, its rows and head hash, or the
//! first row that was changed, removed or inserted (exit code 1). `list` prints rows newest
//! first: what was written into which chart by which pipeline, and who was shown patient
//! data. Rows hold chart numbers and row keys, never names, so `list` shows no patient data
//! and is not itself recorded.

use clap::Subcommand;

use super::{fail, DbArgs};
use crate::audit::{list, verify, Filter};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk every chain; name the first row changed, removed or inserted.
    Verify {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List audit rows, newest first.
    List {
        /// From this local time on (YYYY-MM-DD[ HH:MM:SS]).
        #[arg(long)]
        since: Option<String>,
        /// Only rows about this chart (demographic_no).
        #[arg(long)]
        demographic: Option<i64>,
        #[arg(long)]
        pipeline: Option<String>,
        /// write, status or read.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

async fn open(db: &DbArgs) -> Result<Store, String> {
    Store::open(&db.url()?).await.map_err(|e| e.to_string())
}

pub async fn run(c: AuditCommand) -> i32 {
    match c {
        AuditCommand::Verify { json, db } => {
            let store = match open(&db).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let reports = match verify(&store).await {
                Ok(r) => r,
                Err(e) => return fail(crate::error::describe_sqlx(&e)),
            };
            let broken = reports.iter().filter(|r| r.problem.is_some()).count();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"chains": reports, "intact": broken == 0})
                );
            } else {
                for r in &reports {
                    match &r.problem {
                        None => println!(
                            "{}: intact, {} row(s), head seq {} hash {}",
                            r.chain, r.rows, r.head_seq, r.head_hash
                        ),
                        Some(p) => println!("{}: BROKEN: {p}", r.chain),
                    }
                }
                if reports.is_empty() {
                    println!("no audit rows yet");
                } else if broken == 0 {
                    println!(
                        "{} chain(s) intact. Keep the head hashes elsewhere to compare later.",
                        reports.len()
                    );
                } else {
                    println!("{broken} chain(s) broken");
                }
            }
            i32::from(broken > 0)
        }
        AuditCommand::List {
            since,
            demographic,
            pipeline,
            action,
            limit,
            json,
            db,
        } => {
            let store = match open(&db).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let f = Filter {
                since,
                demographic_no: demographic,
                pipeline,
                action,
                limit,
            };
            let rows = match list(&store, &f).await {
                Ok(r) => r,
                Err(e) => return fail(crate::error::describe_sqlx(&e)),
            };
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
                return 0;
            }
            for r in &rows {
                let mut what = r.about.records();
                if let Some(j) = r.about.journal_id {
                    what.push(format!("journal {j}"));
                }
                println!(
                    "{}  {:<6} {}  {}  [{} on {}]",
                    r.at,
                    r.action,
                    r.actor,
                    what.join(", "),
                    r.process,
                    r.host
                );
                if let Some(w) = &r.written {
                    println!("    wrote: {w}");
                }
                if let Some(w) = &r.why {
                    println!("    {w}");
                }
            }
            println!("{} row(s)", rows.len());
            0
        }
    }
}
