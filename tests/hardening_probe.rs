//! The hardening probe for oversized input, against the real binary (`oscarflow run`):
//!
//! - a 400 MiB drop into a watched folder is dead-lettered from disk while the daemon's peak
//!   resident memory stays under 100 MB;
//! - a 70 MiB drop into a daemon on MariaDB (default `max_allowed_packet`, 16 MiB) is
//!   dead-lettered once, its bytes come back whole from `dlq show --raw`, and it is not
//!   retried.
//!
//! The listener floods of the same probe (1,000 idle + 32 trickling MLLP connections while a
//! sender gets its `AA`; 1,400 idle HTTP connections while `/healthz` answers) are in
//! `tests/mllp.rs` and `tests/ops_http.rs`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fax_queue::{daemon_files, stop_daemons};
use common::mariadb::with_test_db;
use oscarflow::dead_letter::{DeadLetterStore, Filter};
use oscarflow::store::Store;
use sha2::Digest;

const MIB: usize = 1024 * 1024;

/// The built-in lab pipeline with its folder source watching `<dir>/inbox` and moving what
/// it settled to `<dir>/processed`.
fn pipeline(dir: &Path) -> String {
    let source = format!(
        r#"[sources.files]
type = "folder"
path = "{inbox}"
mode = "watch"
after = "move"
processed_dir = "{processed}"
min_age = "0s"
poll_interval = "200ms"
retry_after = "200ms"
"#,
        inbox = dir.join("inbox").display(),
        processed = dir.join("processed").display(),
    );
    let default = oscarflow::cli::DEFAULT_LAB_PIPELINE;
    let (head, rest) = default.split_once("[sources.files]").unwrap();
    let (_, tail) = rest.split_once("[stages.parse]").unwrap();
    format!("{head}{source}\n[stages.parse]{tail}")
}

/// Writes `len` bytes of synthetic HL7-looking text to `path`, a megabyte at a time; returns
/// their SHA-256.
fn write_big_file(path: &Path, len: usize) -> [u8; 32] {
    let line = b"NTE|1||synthetic filler of an input far over every size limit\r";
    let block: Vec<u8> = line.iter().copied().cycle().take(MIB).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        left -= n;
    }
    f.flush().unwrap();
    hasher.finalize().into()
}

/// Starts `oscarflow run` on the daemon files of `dir`, its database URL in `db_env`.
fn start_daemon(config: &Path, db_env: &str, url: &str) -> Child {
    Command::new(common::bin())
        .args(["run", "--config"])
        .arg(config)
        .env(db_env, url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// Waits until `path` exists (bounded); true if it did.
fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Drops a file of `len` bytes into a daemon on `url`, waits for it to be released, and
/// checks its one dead letter. Returns the daemon's peak RSS and the dead letter's id.
async fn drop_and_check(dir: &Path, url: &str, len: usize, db_env: &str) -> (u64, String) {
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    let config = daemon_files(dir, db_env, "probe.toml", &pipeline(dir));
    // Written outside the folder and moved in whole, as a well-behaved sender does.
    let staged: PathBuf = dir.join("big.hl7");
    let sha = write_big_file(&staged, len);
    let mut daemon = start_daemon(&config, db_env, url);
    std::fs::rename(&staged, dir.join("inbox/big.hl7")).unwrap();
    let released = wait_for(&dir.join("processed/big.hl7"), Duration::from_secs(600));
    // A few more scans: an input dead-lettered as too large must not come round again.
    std::thread::sleep(Duration::from_millis(1000));
    let peak = peak_rss(daemon.id());
    let logs = stop_daemons(&mut [&mut daemon]);
    assert!(
        released,
        "the oversized file was released; daemon log:\n{logs}"
    );

    let store = Store::open(url).await.unwrap();
    let dls = DeadLetterStore::new(store);
    let listed = dls.list(&Filter::default()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let d = &listed[0];
    assert_eq!(d.reason, "too_large");
    assert_eq!(d.stage_kind, "folder");
    assert_eq!(d.attempts, 1, "dead-lettered once, no retry loop");
    assert_eq!(d.raw_len, len as i64);
    assert_eq!(d.content_sha256, hex::encode(sha));
    (peak, d.id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_mib_drop_is_dead_lettered_while_the_daemon_stays_under_100_mb_of_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        tmp.path().join("state/oscarflow.db").display()
    );
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    let (peak, _) = drop_and_check(tmp.path(), &url, 400 * MIB, "OSCARFLOW_T_PROBE_400").await;
    eprintln!(
        "probe: 400 MiB drop dead-lettered, daemon peak RSS {:.1} MB",
        peak as f64 / 1e6
    );
    assert!(
        peak < 100_000_000,
        "peak RSS {peak} bytes: the input was held in memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_mib_drop_into_mariadb_is_dead_lettered_once_and_dlq_show_raw_gives_its_bytes_back() {
    with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let packet: i64 = {
            let store = Store::open(&url).await.unwrap();
            sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        let len = 70 * MIB;
        assert!(len as i64 > packet, "the probe exceeds max_allowed_packet");
        let (peak, id) = drop_and_check(tmp.path(), &url, len, "OSCARFLOW_T_PROBE_70").await;
        eprintln!(
            "probe: 70 MiB drop into MariaDB (max_allowed_packet {packet}) dead-lettered once, daemon peak RSS {:.1} MB",
            peak as f64 / 1e6
        );
        // `dlq show --raw` gives the bytes back, streamed to a pipe.
        let mut show = Command::new(common::bin())
            .args(["dlq", "show", "--raw", &id])
            .env("OSCARFLOW_DATABASE_URL", &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = show.stdout.take().unwrap();
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; MIB];
        let mut got = 0usize;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            got += n;
        }
        let status = show.wait().unwrap();
        let mut err = String::new();
        show.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "dlq show --raw: {err}");
        assert_eq!(got, len);
        let listed = DeadLetterStore::new(Store::open(&url).await.unwrap())
            .list(&Filter::default())
            .await
            .unwrap();
        assert_eq!(
            hex::encode(hasher.finalize()),
            listed[0].content_sha256,
            "the original bytes"
        );
    })
    .await;
}
