//! The SFTP source against a real OpenSSH server on a loopback port
//! (`tests/common/sshd.rs`): 500 files imported exactly once and removed from the server; a
//! connection killed mid-transfer leaves no partial import and the file is taken again
//! without a duplicate; an unknown or changed host key is refused before any data is read; a
//! full pipeline stops the downloads; the component harness.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oscarflow::ack::BatchStatus;
use oscarflow::sources::sftp::{RemoteAfter, SftpConfig, SftpSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::topology::RunningPipeline;

use common::harness::{self, Case};
use common::sources::SourceEvents as Polls;
use common::sshd::{CuttingProxy, Sshd};

fn config(sshd: &Sshd, port: u16, remote: &Path, spool: &Path, tag: &str) -> SftpConfig {
    sshd.sftp_config(port, remote, spool, tag)
}

/// A test server, a seeded store, the remote drop folder and the local spool.
struct Fixture {
    tmp: tempfile::TempDir,
    sshd: Sshd,
    store: Store,
    remote: PathBuf,
    spool: PathBuf,
}

impl Fixture {
    /// `None` (the test returns) outside CI when OpenSSH is not installed.
    async fn new() -> Option<Fixture> {
        let tmp = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(tmp.path())?;
        let store = common::seeded_store(tmp.path()).await;
        let (remote, spool) = (tmp.path().join("outbox"), tmp.path().join("spool"));
        std::fs::create_dir_all(&remote).unwrap();
        Some(Fixture {
            tmp,
            sshd,
            store,
            remote,
            spool,
        })
    }
}

fn start(store: &Store, source: SftpSource, polls: Arc<Polls>) -> RunningPipeline {
    common::sources::start(
        &common::lab_pipeline(),
        store,
        Box::new(source),
        Some(polls),
    )
}

async fn finish(running: RunningPipeline, secs: u64) {
    common::sources::wait(running, secs)
        .await
        .expect("no fatal error");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn count(store: &Store, sql: &str) -> i64 {
    common::count(store, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_files_are_imported_exactly_once() {
    let Some(Fixture {
        tmp: _tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    for i in 0..500 {
        std::fs::write(
            remote.join(format!("lab{i:03}.hl7")),
            common::variant("fixtures/hl7/pathl7/matched_chem.hl7", i),
        )
        .unwrap();
    }
    std::fs::write(remote.join("notes.txt"), "not matched by the pattern").unwrap();
    let polls = Arc::new(Polls::default());
    let source = SftpSource::new(config(&sshd, sshd.port, &remote, &spool, "FIVEHUNDRED"))
        .unwrap()
        .stop_after_released(500);
    finish(start(&store, source, polls.clone()), 300).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        500
    );
    assert_eq!(
        count(&store, "SELECT COUNT(DISTINCT md5sum) FROM fileUploadCheck").await,
        500
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        0
    );
    assert_eq!(
        files_in(&remote),
        vec![remote.join("notes.txt")],
        "every lab file was released"
    );
    assert!(
        files_in(&spool).is_empty(),
        "the spool is emptied after release"
    );
    assert!(
        polls.failed.lock().unwrap().is_empty(),
        "{:?}",
        polls.failed.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_transfer_leaves_no_partial_import_and_the_file_comes_again() {
    let Some(Fixture {
        tmp: _tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    // One large file: 400 messages, ~600 KB.
    let mut big = Vec::new();
    for i in 0..400 {
        big.extend(common::variant(
            "fixtures/hl7/pathl7/matched_chem.hl7",
            1000 + i,
        ));
        big.extend_from_slice(b"\r");
    }
    assert!(big.len() > 300_000);
    std::fs::write(remote.join("big.hl7"), &big).unwrap();
    // The first connection dies after 200 KB from the server: inside the file transfer.
    let proxy = CuttingProxy::start(([127, 0, 0, 1], sshd.port).into(), 200_000).await;
    let polls = Arc::new(Polls::default());
    let source = SftpSource::new(config(&sshd, proxy.port, &remote, &spool, "CUT"))
        .unwrap()
        .stop_after_released(1);
    finish(start(&store, source, polls.clone()), 120).await;
    assert_eq!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the transfer was cut"
    );
    let failed = polls.failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the cut was reported");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        400
    );
    assert!(files_in(&remote).is_empty());
    assert!(files_in(&spool).is_empty(), "no partial download is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_changed_host_key_is_refused_before_any_data_is_read() {
    let Some(Fixture {
        tmp: _tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    std::fs::write(
        remote.join("lab.hl7"),
        common::variant("fixtures/hl7/pathl7/matched_chem.hl7", 7),
    )
    .unwrap();
    for (tag, known_hosts, expected) in [
        (
            "CHANGED",
            sshd.wrong_known_hosts(sshd.port),
            "host key mismatch",
        ),
        ("UNKNOWN", sshd.known_hosts(1), "unknown host key"),
    ] {
        let mut cfg = config(&sshd, sshd.port, &remote, &spool, tag);
        cfg.known_hosts = known_hosts;
        let polls = Arc::new(Polls::default());
        let running = start(&store, SftpSource::new(cfg).unwrap(), polls.clone());
        tokio::time::sleep(Duration::from_millis(800)).await;
        running.stop_intake();
        finish(running, 30).await;
        let failed = polls.failed.lock().unwrap().clone();
        assert!(!failed.is_empty());
        assert!(failed.iter().all(|f| f.starts_with(expected)), "{failed:?}");
        assert!(failed[0].contains("refusing to connect"), "{}", failed[0]);
    }
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        0
    );
    assert_eq!(files_in(&remote).len(), 1, "the remote file is untouched");
    assert!(files_in(&spool).is_empty(), "nothing was downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_stops_the_downloads() {
    let Some(Fixture {
        tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    for i in 0..60 {
        std::fs::write(
            remote.join(format!("lab{i:02}.hl7")),
            common::variant("fixtures/hl7/pathl7/matched_chem.hl7", 2000 + i),
        )
        .unwrap();
    }
    let (_other, held) = common::sources::hold_write_lock(tmp.path()).await;
    let source = SftpSource::new(config(&sshd, sshd.port, &remote, &spool, "FULL"))
        .unwrap()
        .stop_after_released(60);
    let running = start(&store, source, Arc::new(Polls::default()));
    let (in_flight, bound) = (running.in_flight.clone(), running.in_flight_bound);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let taken = files_in(&spool).len();
    assert!(
        in_flight.current() <= bound,
        "{} > {bound}",
        in_flight.current()
    );
    assert!(
        taken <= bound + 1,
        "downloads stop when the pipeline is full: {taken} spooled, bound {bound}"
    );
    assert!(taken < 60);
    held.rollback().await.unwrap();
    finish(running, 120).await;
    assert!(in_flight.high_water() <= bound);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_source_passes_the_component_harness() {
    let Some(Fixture {
        tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    let good = common::variant("fixtures/hl7/pathl7/matched_chem.hl7", 3000);
    let bad = b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101||ORU^R01|SFTPBAD|P|2.3".to_vec();
    std::fs::write(remote.join("good.hl7"), &good).unwrap();
    std::fs::write(remote.join("bad.hl7"), &bad).unwrap();
    let cases = vec![
        Case {
            name: "good",
            bytes: good,
            expect: BatchStatus::Delivered,
        },
        Case {
            name: "truncated",
            bytes: bad,
            expect: BatchStatus::DeadLettered,
        },
    ];
    let mut cfg = config(&sshd, sshd.port, &remote, &spool, "HARNESS");
    cfg.after = RemoteAfter::Move;
    let archive = tmp.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    cfg.archive_dir = Some(archive.display().to_string());
    let source: Box<dyn Source> = Box::new(SftpSource::new(cfg).unwrap().stop_after_released(2));
    harness::run_with_source(
        common::lab_pipeline(),
        "harness_sftp",
        &store,
        source,
        cases,
        true,
        None,
    )
    .await;
    assert_eq!(
        files_in(&archive).len(),
        2,
        "both files were moved to the archive"
    );
    assert!(files_in(&remote).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_taken_only_once_it_is_stable() {
    let Some(Fixture {
        tmp: _tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    // Unchanged across two listings is not enough while a writer pauses between chunks as
    // long as the poll interval: the remote mtime (whole seconds) must also be 2 s old.
    let mut cfg = config(&sshd, sshd.port, &remote, &spool, "GROWING");
    cfg.min_age = Duration::from_secs(2);
    let source = SftpSource::new(cfg).unwrap().stop_after_released(1);
    let running = start(&store, source, Arc::new(Polls::default()));
    // A slow writer: 3 messages appended over ~1.2 s (the poll runs every 100 ms).
    let path = remote.join("slow.hl7");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..3 {
            let m = common::variant("fixtures/hl7/pathl7/matched_chem.hl7", 4000 + i);
            for chunk in m.chunks(m.len() / 4 + 1) {
                f.write_all(chunk).unwrap();
                f.flush().unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            f.write_all(b"\r").unwrap();
        }
    }
    finish(running, 60).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
        1,
        "taken once, complete"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        3
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        0,
        "never a partial file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_file_over_max_input_bytes_is_dead_lettered_from_the_spool_and_released() {
    let Some(Fixture {
        tmp: _tmp,
        sshd,
        store,
        remote,
        spool,
    }) = Fixture::new().await
    else {
        return;
    };
    let good = common::variant("fixtures/hl7/pathl7/matched_chem.hl7", 1);
    let mut big = good.clone();
    for _ in 0..10_000 {
        big.extend_from_slice(b"NTE|1||synthetic filler of a lab over the source's limit\r");
    }
    std::fs::write(remote.join("big.hl7"), &big).unwrap();
    std::fs::write(remote.join("good.hl7"), &good).unwrap();
    let mut cfg = config(&sshd, sshd.port, &remote, &spool, "OVERSIZE");
    cfg.max_input_bytes = good.len() + 10;
    let polls = Arc::new(Polls::default());
    let source = SftpSource::new(cfg).unwrap().stop_after_released(2);
    finish(start(&store, source, polls.clone()), 120).await;
    assert!(files_in(&remote).is_empty(), "both files were released");
    assert!(files_in(&spool).is_empty(), "the spool is emptied");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
        1,
        "only the file under the limit was imported"
    );
    let dls = oscarflow::dead_letter::DeadLetterStore::new(store.clone());
    let listed = dls.list(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].reason, "too_large");
    assert_eq!(listed[0].stage_kind, "sftp");
    let raw = dls.get(&listed[0].id).await.unwrap().unwrap().raw;
    assert!(raw == big, "the dead letter holds the file's bytes");
}
