//! Shared helpers for integration tests: temporary embedded stores, seeding, running a
//! pipeline over a list of inputs, and counting rows.
#![allow(dead_code)]

pub mod excelleris_emulator;
pub mod fax_queue;
pub mod gate;
pub mod harness;
pub mod http_emu;
pub mod logs;
pub mod mariadb;
pub mod mllp_client;
pub mod phi;
pub mod poi_emulator;
pub mod queue;
pub mod rc_emulator;
pub mod s3;
pub mod sources;
pub mod sshd;
pub mod texts;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oscarflow::config::{load_str, PipelineConfig};
use oscarflow::sources::list::{ListItem, ListSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::telemetry::{Observer, Observers};
use oscarflow::topology::{build, BuildOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oscarflow"))
}

/// A fresh embedded store in `dir`.
pub async fn sqlite_store(dir: &Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("oscarflow.db").display()))
        .await
        .expect("open store")
}

/// A fresh embedded store holding the synthetic BC clinic.
pub async fn seeded_store(dir: &Path) -> Store {
    let store = sqlite_store(dir).await;
    let sql =
        std::fs::read_to_string(repo().join("fixtures/sql/bc_clinic.sql")).expect("seed file");
    store.execute_script(&sql).await.expect("seed");
    store
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("oscarflow.db").display())
}

/// The built-in lab pipeline (parse → match → import).
pub fn lab_pipeline() -> PipelineConfig {
    load_str(
        Path::new("builtin.toml"),
        oscarflow::cli::DEFAULT_LAB_PIPELINE,
    )
    .expect("built-in pipeline")
}

/// The built-in lab pipeline with its import sink's settings changed by `edit`.
pub fn lab_pipeline_with(
    mut edit: impl FnMut(&mut oscarflow::sinks::oscar_lab::OscarLabConfig),
) -> PipelineConfig {
    let mut cfg = lab_pipeline();
    for s in &mut cfg.sinks {
        if let oscarflow::sinks::SinkConfig::OscarLab(c) = &mut s.config {
            edit(c);
        }
    }
    cfg
}

/// Runs `items` once through `cfg`; returns when every input settled.
pub async fn run_items(
    cfg: &PipelineConfig,
    store: &Store,
    items: Vec<ListItem>,
    observer: Option<Arc<dyn Observer>>,
) {
    let source: Box<dyn Source> = Box::new(ListSource::new(items, "test"));
    let mut observers = Observers::none();
    if let Some(o) = observer {
        observers = observers.with(o);
    }
    let mut running = build(
        cfg,
        store,
        BuildOptions {
            one_shot: true,
            observers,
            source_override: Some(Arc::new(Mutex::new(Some(source)))),
            ..Default::default()
        },
    )
    .expect("build");
    running
        .wait()
        .await
        .expect("pipeline ran without a fatal error");
}

/// `oscarflow replay PATHS --database DB [--seed SEED]`; callers add flags (`--json`).
pub fn replay_command<P: AsRef<std::ffi::OsStr>>(
    paths: &[P],
    db: &str,
    seed: Option<&Path>,
) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.arg("replay")
        .args(paths)
        .args(["--database", db])
        .env_remove("OSCARFLOW_DATABASE_URL");
    if let Some(s) = seed {
        c.arg("--seed").arg(s);
    }
    c
}

/// The synthetic clinic's seed for an embedded store `db`; none for MariaDB, whose test
/// databases are cloned with the clinic already in them.
pub fn clinic_seed(db: &str) -> Option<PathBuf> {
    db.starts_with("sqlite")
        .then(|| repo().join("fixtures/sql/bc_clinic.sql"))
}

/// `hl7TextMessage.type` with its count, by type.
pub async fn lab_types(store: &Store) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT type, COUNT(*) FROM hl7TextMessage GROUP BY type ORDER BY type")
        .fetch_all(&store.pool)
        .await
        .expect("count labs by type")
}

pub async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&store.pool)
        .await
        .expect(sql)
}

/// Waits up to 20 s for `sql` (a count) to reach `want`, for rows written just after a
/// commit (the journal's duplicates, releases and outbound steps); fails with the last
/// count otherwise.
pub async fn eventually_count(store: &Store, sql: &str, want: i64) {
    let start = std::time::Instant::now();
    loop {
        let n = count(store, sql).await;
        if n == want {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{sql}: {n}, expected {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A copy of a fixture with a distinct control id, so each copy has its own MD5.
pub fn variant(fixture: &str, n: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join(fixture)).expect("fixture");
    let mut out = String::new();
    for (i, seg) in text.split('\r').enumerate() {
        if i > 0 {
            out.push('\r');
        }
        if seg.starts_with("MSH|") {
            let mut f: Vec<String> = seg.split('|').map(String::from).collect();
            if f.len() > 9 {
                f[9] = format!("{}V{n}", f[9]);
            }
            out.push_str(&f.join("|"));
        } else {
            out.push_str(seg);
        }
    }
    out.into_bytes()
}

/// A folder of the read-only reference material beside the checkout (`../shared/<rel>`).
/// Absent outside CI: a notice and `None` (the test returns). Absent in CI: a failure.
pub fn shared_dir(rel: &str) -> Option<PathBuf> {
    let p = repo().join("../shared").join(rel);
    if p.is_dir() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: CI must have ../shared beside the checkout",
            p.display()
        );
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

/// A program installed from PyPI into a virtual environment `target/<venv>`: the path of
/// `bin/<program>`. `None` outside CI when Python or PyPI is unavailable; under CI a failed
/// install fails the test.
pub fn pypi_program(venv: &str, requirement: &str, program: &str) -> Option<PathBuf> {
    // The tests of one binary run in parallel threads: one installs, the others wait for
    // it (two `python3 -m venv` on one directory fail with "File exists").
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = repo().join("target").join(venv);
    let bin = venv.join("bin").join(program);
    if bin.exists() {
        return Some(bin);
    }
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", requirement])
            .status()
            .is_ok_and(|s| s.success());
    if ok && bin.exists() {
        Some(bin)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "cannot install {requirement} (pip install) into {}",
            venv.display()
        );
    } else {
        eprintln!("skipping: {requirement} could not be installed from PyPI");
        None
    }
}

/// Drops `bytes` into `dir` as `name` the way a drop folder read with `min_age = "0s"` must
/// be written to: under a hidden name, then renamed. A file written in place can be read
/// while still empty; the folder source then keeps it and reads it again only after
/// `retry_after`.
pub fn drop_file(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let hidden = dir.join(format!(".{name}"));
    std::fs::write(&hidden, bytes).unwrap();
    let path = dir.join(name);
    std::fs::rename(&hidden, &path).unwrap();
    path
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 request on loopback: (status, body).
pub fn http_request(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The audit trail's rows of `action` (`write`, `status`, `read`), newest first.
pub async fn audit_rows(store: &Store, action: &str) -> Vec<oscarflow::audit::AuditRow> {
    oscarflow::audit::list(
        store,
        &oscarflow::audit::Filter {
            action: Some(action.into()),
            limit: 100_000,
            ..Default::default()
        },
    )
    .await
    .expect("list the audit rows")
}
