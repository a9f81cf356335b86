//! OSCAR's outbound fax queue in tests: waiting `faxes` rows with their PDFs, the status
//! counts, and the faxes the RingCentral emulator received (each at most once).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use oscarflow::store::Store;

use super::rc_emulator::{RcEmulator, SentFax};

/// The clinic's fax line in every fixture.
pub const LINE: &str = "6045550100";

/// A synthetic PDF per fax.
pub fn pdf(n: i64) -> Vec<u8> {
    format!("%PDF-1.4\n% outbound fax {n}\n{}\n%%EOF", "x".repeat(2000)).into_bytes()
}

/// `n` OSCAR fax rows `WAITING` on our line, as OSCAR's fax screen queues them: the PDF in
/// DOCUMENT_DIR, `filename` naming it, a 10-digit destination.
pub async fn queue_faxes(store: &Store, docs: &Path, n: i64) {
    std::fs::create_dir_all(docs).unwrap();
    for i in 1..=n {
        let name = format!("referral_{i}.pdf");
        std::fs::write(docs.join(&name), pdf(i)).unwrap();
        sqlx::query("INSERT INTO faxes (filename, faxline, destination, status, statusString, numPages, stamp, user, jobId, oscarUser, demographicNo) VALUES (?, ?, ?, 'WAITING', '', 1, '2026-11-22 09:00:00', 'clinic', NULL, '999998', NULL)")
            .bind(format!("/var/lib/OscarDocument/oscar/document/{name}"))
            .bind(LINE)
            .bind(format!("604555{:04}", 2000 + i))
            .execute(&store.pool)
            .await
            .unwrap();
    }
}

pub async fn statuses(store: &Store) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM faxes GROUP BY status")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// Each fax reference appears in at most one sent fax; the map ref → fax.
pub fn sent_once(emu: &RcEmulator) -> HashMap<String, SentFax> {
    let sent = emu.state.lock().unwrap().sent.clone();
    let mut by_ref = HashMap::new();
    for f in sent {
        let name = f.name.clone();
        assert!(
            by_ref.insert(name.clone(), f).is_none(),
            "{name} was sent twice"
        );
    }
    by_ref
}

/// The outbound fax pipeline file (`oscar_fax_queue → ringcentral_fax`) for our line:
/// `source` adds settings to the queue source (`poll_interval` is required), `heavy` is
/// RingCentral's Heavy limit, `tag` names the emulator's secret variables.
pub fn fax_pipeline(
    emu: &RcEmulator,
    tag: &str,
    docs: &Path,
    source: &str,
    heavy: (u32, &str),
) -> String {
    format!(
        r#"
[pipeline]
name = "fax_out"

[pipeline.retry]
initial_backoff = "50ms"

[sources.outbox]
type = "oscar_fax_queue"
name = "clinic"
fax_line = "{LINE}"
unknown_settle_after = "0s"
{source}

[sinks.send]
type = "ringcentral_fax"
inputs = ["outbox"]
document_dir = "{docs}"

[sinks.send.ringcentral]
max_attempts = 3
initial_backoff = "50ms"
timeout = "10s"
{ringcentral}"#,
        docs = docs.display(),
        ringcentral = emu.ringcentral_toml(tag, heavy),
    )
}

/// Writes `pipeline` as `dir/pipelines/<file>` and an `oscarflow.toml` for daemons on the
/// database named by `db_env`, with no HTTP endpoint of its own (`--listen` sets one).
pub fn daemon_files(dir: &Path, db_env: &str, file: &str, pipeline: &str) -> std::path::PathBuf {
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join(file), pipeline).unwrap();
    let path = dir.join("oscarflow.toml");
    std::fs::write(
        &path,
        format!(
            "database_url_env = \"{db_env}\"\npipelines_dir = \"{}\"\nstate_dir = \"{}\"\ngrace_period = \"20s\"\nlisten = \"off\"\ncontrol_without_token = true\n",
            pipelines.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Stops daemons with SIGTERM; each must exit 0. Their logs (stderr), joined.
pub fn stop_daemons(children: &mut [&mut std::process::Child]) -> String {
    let mut logs = String::new();
    for child in children.iter_mut() {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(0), "{err}");
        logs.push_str(&err);
    }
    logs
}

/// How many faxes each claimant (daemon) of the outbound queue holds.
pub async fn faxes_per_owner(store: &Store) -> Vec<i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT owner, COUNT(*) FROM oscarflow_fax_outbound GROUP BY owner ORDER BY owner",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(_, n)| n).collect()
}
