//! End-to-end acknowledgement, crash re-delivery, backpressure, retries and dead letters,
//! on the embedded store with the real components (and small custom ones where a test must
//! control a failure or a rate).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use oscarflow::ack::{BatchNotifier, BatchStatus, InFlight};
use oscarflow::component::ProcessError;
use oscarflow::config::{PipelineConfig, RetrySettings};
use oscarflow::dead_letter::{DeadLetterStore, Filter, ReasonCode};
use oscarflow::envelope::{sha256, Envelope, Origin, Provenance, Raw};
use oscarflow::lab_file::OrderKey;
use oscarflow::sinks::Sink;
use oscarflow::sources::folder::{AfterCommit, FolderConfig, FolderMode};
use oscarflow::sources::SourceConfig;
use oscarflow::stages::{Emitter, Stage};
use oscarflow::telemetry::Observers;
use oscarflow::topology::run::{run_sink, run_stage, RunContext};
use oscarflow::topology::{build, BuildOptions};
use tokio::sync::mpsc;

/// The built-in lab pipeline reading a watched folder (move after commit, no settle time,
/// fast polling, channels of 4).
fn folder_pipeline(inbox: &Path, processed: &Path) -> PipelineConfig {
    let mut cfg = lab_pipeline();
    cfg.settings.channel_capacity = 4;
    cfg.sources[0].config = SourceConfig::Folder(FolderConfig {
        mode: FolderMode::Watch,
        recursive: false,
        after: AfterCommit::Move,
        processed_dir: Some(processed.to_path_buf()),
        min_age: Duration::ZERO,
        poll_interval: Duration::from_millis(50),
        retry_after: Duration::from_millis(100),
        ..FolderConfig::replay(inbox.to_path_buf())
    });
    cfg
}

/// `<dir>/inbox` (created) read by [`folder_pipeline`], releasing to `<dir>/processed`.
fn inbox_pipeline(dir: &Path) -> (PathBuf, PathBuf, PipelineConfig) {
    let inbox = dir.join("inbox");
    let processed = dir.join("processed");
    std::fs::create_dir_all(&inbox).unwrap();
    let cfg = folder_pipeline(&inbox, &processed);
    (inbox, processed, cfg)
}

/// Builds `cfg` with a folder release hook (fault injection between commit and release).
fn build_with_release_hook(
    cfg: &PipelineConfig,
    store: &oscarflow::store::Store,
    hook: oscarflow::sources::folder::ReleaseHook,
) -> oscarflow::topology::RunningPipeline {
    build(
        cfg,
        store,
        BuildOptions {
            release_hook: Some(hook),
            ..Default::default()
        },
    )
    .unwrap()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn source_file_stays_until_commit_and_a_crash_before_release_redelivers_without_a_second_row() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, processed, cfg) = inbox_pipeline(tmp.path());
    let file = inbox.join("lab.hl7");
    std::fs::copy(repo().join("fixtures/hl7/pathl7/matched_chem.hl7"), &file).unwrap();

    // Run 1: hold the only database connection, so nothing can commit: the file must stay.
    // Then let go; the sink commits; the "crash" happens inside the release hook, before the
    // file is moved: the runtime is dropped there.
    let rt = runtime();
    let store = rt.block_on(seeded_store(tmp.path()));
    let (reached_tx, reached_rx) = std::sync::mpsc::channel::<PathBuf>();
    let reached_tx = Arc::new(Mutex::new(reached_tx));
    let hook: oscarflow::sources::folder::ReleaseHook = Arc::new(move |p: &Path| {
        let _ = reached_tx.lock().unwrap().send(p.to_path_buf());
        Box::pin(futures::future::pending::<()>())
    });
    let held = rt.block_on(store.pool.acquire()).unwrap();
    let running = rt.block_on(async { build_with_release_hook(&cfg, &store, hook) });
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        file.exists(),
        "the file left the inbox before anything was committed"
    );
    assert!(
        reached_rx.try_recv().is_err(),
        "release was attempted before commit"
    );
    rt.block_on(async move { drop(held) });
    let released = reached_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("sink committed and the source reached release");
    assert_eq!(released, file);
    assert!(
        file.exists(),
        "file must still be in the inbox at the moment of the crash"
    );
    let committed = rt.block_on(count(&store, "SELECT COUNT(*) FROM hl7TextMessage"));
    assert_eq!(committed, 1, "the sink committed before release");
    let routing_before = rt.block_on(count(&store, "SELECT COUNT(*) FROM providerLabRouting"));
    {
        let _in_runtime = rt.enter();
        drop(running);
        drop(store);
    }
    rt.shutdown_background(); // the crash: no drain, no release

    // Run 2: a fresh process-like start on the same database and folder.
    let rt = runtime();
    let store = rt.block_on(sqlite_store(tmp.path()));
    let mut running = rt.block_on(async { build(&cfg, &store, BuildOptions::default()).unwrap() });
    assert!(
        wait_until(Duration::from_secs(20), || !file.exists()
            && processed.join("lab.hl7").exists()),
        "the re-delivered file was released to processed/"
    );
    rt.block_on(async {
        assert!(running.shutdown(Duration::from_secs(10)).await);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
            1
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
            1
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM hl7TextInfo").await, 1);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM patientLabRouting").await,
            1
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM providerLabRouting").await,
            routing_before
        );
    });
}

// ---- generic runners with controlled components -------------------------------------

fn prov(label: &str, bytes: &[u8]) -> Arc<Provenance> {
    Arc::new(Provenance {
        pipeline: Arc::from("runner_test"),
        source: Arc::from("src"),
        source_kind: Arc::from("test"),
        origin: Origin::Memory {
            label: label.into(),
        },
        received_at: time::OffsetDateTime::now_utc(),
        attempt: 1,
        content_sha256: sha256(bytes),
    })
}

struct PassThrough;

#[async_trait]
impl Stage<Raw, Raw> for PassThrough {
    fn kind(&self) -> &'static str {
        "pass"
    }
    async fn process(
        &self,
        input: &Envelope<Raw>,
        out: &mut Emitter<Raw>,
    ) -> Result<(), ProcessError> {
        out.emit(input, input.payload.clone());
        Ok(())
    }
}

struct SlowSink {
    delay: Duration,
    written: AtomicUsize,
}

#[async_trait]
impl Sink<Raw> for SlowSink {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn write(&self, _env: &Envelope<Raw>) -> Result<(), ProcessError> {
        tokio::time::sleep(self.delay).await;
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn cx(store: &oscarflow::store::Store, component: &str, retry: RetrySettings) -> RunContext {
    RunContext {
        pipeline: Arc::from("runner_test"),
        component: Arc::from(component),
        component_kind: "test",
        dead_letters: DeadLetterStore::new(store.clone()),
        retry,
        observers: Observers::none(),
        control: oscarflow::sources::SourceControl::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_bounds_the_envelopes_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let (cap, stage_conc, sink_conc) = (4usize, 2usize, 2usize);
    let total = 400usize;
    let in_flight = InFlight::new();
    let (tx1, rx1) = mpsc::channel::<Envelope<Raw>>(cap);
    let (tx2, rx2) = mpsc::channel::<Envelope<Raw>>(cap);
    let sink = Arc::new(SlowSink {
        delay: Duration::from_millis(2),
        written: AtomicUsize::new(0),
    });
    let stage_task = tokio::spawn(run_stage(
        Arc::new(PassThrough) as Arc<dyn Stage<Raw, Raw>>,
        rx1,
        tx2,
        cx(&store, "pass", RetrySettings::default()),
        stage_conc,
    ));
    let sink_task = tokio::spawn(run_sink(
        sink.clone() as Arc<dyn Sink<Raw>>,
        rx2,
        cx(&store, "slow", RetrySettings::default()),
        sink_conc,
        OrderKey::None,
    ));
    // The source offers far more than the channels hold, as fast as it can.
    let mut receivers = Vec::new();
    for i in 0..total {
        let bytes = Bytes::from(format!("message {i}"));
        let (n, r) = BatchNotifier::new(Some(in_flight.clone()));
        let env = Envelope::new(
            prov(&i.to_string(), &bytes),
            Raw {
                bytes,
                name: format!("{i}"),
                lab_type: None,
            },
            n.token(),
        );
        drop(n);
        receivers.push(r);
        tx1.send(env).await.unwrap();
    }
    drop(tx1);
    stage_task.await.unwrap().unwrap();
    sink_task.await.unwrap().unwrap();
    for r in receivers {
        assert_eq!(r.wait().await, BatchStatus::Delivered);
    }
    // One envelope held by the source while blocked, each channel, each stage slot, each
    // sink slot plus the one waiting for a permit.
    let bound = 1 + cap + stage_conc + cap + sink_conc + 1;
    assert_eq!(sink.written.load(Ordering::SeqCst), total);
    assert!(
        in_flight.high_water() <= bound,
        "{} envelopes were in flight, bound {bound}",
        in_flight.high_water()
    );
    assert!(
        in_flight.high_water() > cap,
        "the source was not held back by the pipeline"
    );
    assert_eq!(in_flight.current(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_pipeline_reports_a_bound_matching_its_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let inbox = tmp.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let cfg = folder_pipeline(&inbox, &tmp.path().join("done"));
    let mut running = build(&cfg, &store, BuildOptions::default()).unwrap();
    // 1 source + 3 channels of 4 + parse 2 + match 2 + sink 4 + 1
    assert_eq!(running.in_flight_bound, 1 + 12 + 2 + 2 + 5);
    assert!(running.shutdown(Duration::from_secs(5)).await);
}

/// Fails with a transient error `failures` times, then succeeds; records call times.
struct FlakySink {
    failures: u32,
    calls: AtomicU32,
    times: Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait]
impl Sink<Raw> for FlakySink {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn write(&self, _env: &Envelope<Raw>) -> Result<(), ProcessError> {
        self.times.lock().unwrap().push(tokio::time::Instant::now());
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            Err(ProcessError::transient("database restarting"))
        } else {
            Ok(())
        }
    }
}

struct RejectingSink;

#[async_trait]
impl Sink<Raw> for RejectingSink {
    fn kind(&self) -> &'static str {
        "rejecting"
    }
    async fn write(&self, _env: &Envelope<Raw>) -> Result<(), ProcessError> {
        Err(ProcessError::data(
            ReasonCode::ImportRejected,
            "value refused by the database",
        ))
    }
}

async fn send_one(
    sink: Arc<dyn Sink<Raw>>,
    store: &oscarflow::store::Store,
    retry: RetrySettings,
    bytes: Bytes,
) -> BatchStatus {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(run_sink(
        sink,
        rx,
        cx(store, "sink", retry),
        1,
        OrderKey::None,
    ));
    let (n, r) = BatchNotifier::new(None);
    let env = Envelope::new(
        prov("one", &bytes),
        Raw {
            bytes,
            name: "one".into(),
            lab_type: None,
        },
        n.token(),
    );
    drop(n);
    tx.send(env).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    r.wait().await
}

fn retry(max_attempts: u32) -> RetrySettings {
    RetrySettings {
        max_attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_sink_failure_is_retried_with_growing_backoff_then_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let sink = Arc::new(FlakySink {
        failures: 3,
        calls: AtomicU32::new(0),
        times: Mutex::new(Vec::new()),
    });
    let status = send_one(sink.clone(), &store, retry(6), Bytes::from_static(b"MSH|x")).await;
    assert_eq!(status, BatchStatus::Delivered);
    let times = sink.times.lock().unwrap().clone();
    assert_eq!(times.len(), 4, "three failures and one success");
    // Delay n is drawn from [d/2, d] with d = 20ms · 2^(n-1): each wait lasts at least d/2.
    for (i, w) in times.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let full = Duration::from_millis(20 * (1 << i));
        assert!(
            gap >= full / 2,
            "wait {i} was {gap:?}, shorter than the backoff floor {:?}",
            full / 2
        );
    }
    let open = DeadLetterStore::new(store.clone())
        .list(&Filter::default())
        .await
        .unwrap();
    assert!(
        open.is_empty(),
        "a success after retries leaves no dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_past_the_retry_budget_is_dead_lettered_as_retries_exhausted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let sink = Arc::new(FlakySink {
        failures: u32::MAX,
        calls: AtomicU32::new(0),
        times: Mutex::new(Vec::new()),
    });
    let status = send_one(sink.clone(), &store, retry(3), Bytes::from_static(b"MSH|y")).await;
    assert_eq!(status, BatchStatus::DeadLettered);
    assert_eq!(sink.calls.load(Ordering::SeqCst), 3);
    let dls = DeadLetterStore::new(store.clone())
        .list(&Filter::default())
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].reason, "retries_exhausted");
    assert_eq!(dls[0].attempts, 3);
    assert_eq!(dls[0].error_kind, "transient");
}

/// A sink whose database is unavailable for its first `failures` writes: it watches the
/// pipeline's intake on each of them.
struct DownDatabaseSink {
    failures: u32,
    calls: AtomicU32,
    control: Arc<oscarflow::sources::SourceControl>,
    held_seen: AtomicU32,
}

#[async_trait]
impl Sink<Raw> for DownDatabaseSink {
    fn kind(&self) -> &'static str {
        "down_database"
    }
    async fn write(&self, _env: &Envelope<Raw>) -> Result<(), ProcessError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n > 0 && self.control.intake_stopped() {
            self.held_seen.fetch_add(1, Ordering::SeqCst);
        }
        if n < self.failures {
            // What the store says when MariaDB is down: a pool timeout.
            return Err(ProcessError::from_sqlx(
                "begin transaction",
                &sqlx::Error::PoolTimedOut,
            ));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_past_the_retry_budget_holds_the_intake_and_dead_letters_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let control = oscarflow::sources::SourceControl::new();
    // Three times the retry budget of 3 attempts.
    let sink = Arc::new(DownDatabaseSink {
        failures: 9,
        calls: AtomicU32::new(0),
        control: control.clone(),
        held_seen: AtomicU32::new(0),
    });
    let (tx, rx) = mpsc::channel(1);
    let mut context = cx(&store, "sink", retry(3));
    context.control = control.clone();
    context.retry.max_backoff = Duration::from_millis(40);
    let task = tokio::spawn(run_sink(sink.clone(), rx, context, 1, OrderKey::None));
    let (n, r) = BatchNotifier::new(None);
    let bytes = Bytes::from_static(b"MSH|outage");
    let env = Envelope::new(
        prov("outage", &bytes),
        Raw {
            bytes,
            name: "outage".into(),
            lab_type: None,
        },
        n.token(),
    );
    drop(n);
    assert!(!control.intake_stopped());
    tx.send(env).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    assert_eq!(
        r.wait().await,
        BatchStatus::Delivered,
        "committed once the database answered"
    );
    assert_eq!(
        sink.calls.load(Ordering::SeqCst),
        10,
        "nine failures, one success"
    );
    assert_eq!(
        sink.held_seen.load(Ordering::SeqCst),
        9,
        "the intake was held at every retry of the outage"
    );
    assert!(!control.intake_stopped(), "and is free again after");
    assert!(control.outage().is_none());
    assert!(
        DeadLetterStore::new(store.clone())
            .list(&Filter::default())
            .await
            .unwrap()
            .is_empty(),
        "an outage dead-letters nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_sink_failure_is_dead_lettered_with_the_original_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    // Bytes that are not text at all: NUL, invalid UTF-8, CR/LF, a BOM in the middle.
    let mut raw = b"MSH|^~\\&|X\r\x00\xff\xfe\xef\xbb\xbfPID|1\r\n".to_vec();
    raw.extend((0u8..=255).collect::<Vec<u8>>());
    let bytes = Bytes::from(raw.clone());
    let status = send_one(Arc::new(RejectingSink), &store, retry(5), bytes).await;
    assert_eq!(status, BatchStatus::DeadLettered);
    let dlq = DeadLetterStore::new(store.clone());
    let list = dlq.list(&Filter::default()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, "import_rejected");
    assert_eq!(list[0].attempts, 1, "data errors are not retried");
    let full = dlq.get(&list[0].id).await.unwrap().unwrap();
    assert_eq!(full.raw, raw, "dead letter keeps the bytes byte for byte");
    assert_eq!(full.content_sha256, hex::encode(sha256(&raw)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_accession_files_commit_in_arrival_order_while_other_keys_run_in_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let cfg = lab_pipeline();
    let items = [
        "fixtures/hl7/versions/accession_26-200000001_1_prelim.hl7",
        "fixtures/hl7/pathl7/matched_chem.hl7",
        "fixtures/hl7/versions/accession_26-200000001_2_final.hl7",
        "fixtures/hl7/pathl7/multi_message.hl7",
        "fixtures/hl7/versions/accession_26-200000001_3_corrected.hl7",
    ]
    .iter()
    .map(|p| oscarflow::sources::list::ListItem::File(repo().join(p)))
    .collect();
    run_items(&cfg, &store, items, None).await;
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT lab_no, final_result_count FROM hl7TextInfo WHERE accessionNum = '26-200000001' ORDER BY lab_no",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    let counts: Vec<i64> = rows.iter().map(|r| r.1).collect();
    // prelim (+0) < final (+100) < corrected (+150): lab numbers follow arrival order.
    assert!(
        counts[0] < 100 && (100..150).contains(&counts[1]) && counts[2] >= 150,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_same_accession_files_on_a_one_connection_store_all_commit() {
    // Regression: a stage call frozen mid-query (holding the embedded store's only
    // connection) while its runner waited on a full sink channel deadlocked the pipeline.
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let n = 120;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{i:04}.hl7")),
            variant("fixtures/hl7/pathl7/multi_message.hl7", i),
        )
        .unwrap();
    }
    let items = oscarflow::sources::list::ListSource::expand(&[dir])
        .unwrap()
        .into_iter()
        .map(oscarflow::sources::list::ListItem::File)
        .collect();
    let mut cfg = lab_pipeline();
    cfg.settings.channel_capacity = 2;
    tokio::time::timeout(
        Duration::from_secs(120),
        run_items(&cfg, &store, items, None),
    )
    .await
    .expect("the pipeline finished instead of deadlocking");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        3 * n as i64
    );
}

/// A payload with an explicit ordering key.
struct KeyedMsg {
    key: &'static str,
    name: &'static str,
}

impl oscarflow::envelope::RawBytes for KeyedMsg {
    fn raw_bytes(&self) -> Bytes {
        Bytes::from_static(self.name.as_bytes())
    }
}

impl oscarflow::lab_file::Keyed for KeyedMsg {
    fn keys(&self, _key: OrderKey) -> Vec<String> {
        vec![self.key.to_string()]
    }
}

/// Holds "A1" until "B1" was written; logs starts and ends.
struct GateSink {
    log: Mutex<Vec<String>>,
    b1_done: tokio::sync::Notify,
}

#[async_trait]
impl Sink<KeyedMsg> for GateSink {
    fn kind(&self) -> &'static str {
        "gate"
    }
    async fn write(&self, env: &Envelope<KeyedMsg>) -> Result<(), ProcessError> {
        let name = env.payload.name;
        self.log.lock().unwrap().push(format!("start {name}"));
        if name == "A1" {
            self.b1_done.notified().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.log.lock().unwrap().push(format!("end {name}"));
        if name == "B1" {
            self.b1_done.notify_one();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_key_does_not_block_other_keys_and_same_key_messages_keep_their_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    let sink = Arc::new(GateSink {
        log: Mutex::new(Vec::new()),
        b1_done: tokio::sync::Notify::new(),
    });
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(run_sink(
        sink.clone() as Arc<dyn Sink<KeyedMsg>>,
        rx,
        cx(&store, "gate", RetrySettings::default()),
        4,
        OrderKey::Accession,
    ));
    for (key, name) in [
        ("A", "A1"),
        ("A", "A2"),
        ("B", "B1"),
        ("A", "A3"),
        ("B", "B2"),
    ] {
        let env = Envelope::new(
            prov(name, name.as_bytes()),
            KeyedMsg { key, name },
            oscarflow::ack::AckToken::detached(),
        );
        tx.send(env).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("key B went ahead while key A waited")
        .unwrap()
        .unwrap();
    let log = sink.log.lock().unwrap().clone();
    let pos = |e: &str| {
        log.iter()
            .position(|l| l == e)
            .unwrap_or_else(|| panic!("{e} missing in {log:?}"))
    };
    assert!(
        pos("end B1") < pos("end A1"),
        "B1 committed while A1 waited: {log:?}"
    );
    assert!(
        pos("end A1") < pos("start A2") && pos("end A2") < pos("start A3"),
        "key A in order: {log:?}"
    );
    assert!(pos("end B1") < pos("start B2"), "key B in order: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_taken_only_once_complete_then_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut cfg = folder_pipeline(&inbox, &tmp.path().join("unused"));
    let SourceConfig::Folder(f) = &mut cfg.sources[0].config else {
        panic!("a folder source");
    };
    f.after = AfterCommit::Delete;
    f.min_age = Duration::from_millis(400);
    let mut running = build(&cfg, &store, BuildOptions::default()).unwrap();
    // A slow writer: the file grows in three steps over ~300 ms.
    let full = std::fs::read(repo().join("fixtures/hl7/pathl7/multi_message.hl7")).unwrap();
    let path = inbox.join("incoming.hl7");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        let third = full.len() / 3;
        for chunk in [&full[..third], &full[third..2 * third], &full[2 * third..]] {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(
                count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
                0,
                "a growing file was taken"
            );
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while path.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!path.exists(), "the complete file was imported and deleted");
    assert!(running.shutdown(Duration::from_secs(10)).await);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        3,
        "all three messages, not a fragment"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_dead_lettered_and_the_rest_of_its_file_goes_through() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let mut cfg = lab_pipeline();
    // Make the second message of a three-message file too large.
    let mut text = String::from_utf8(
        std::fs::read(repo().join("fixtures/hl7/pathl7/multi_message.hl7")).unwrap(),
    )
    .unwrap();
    let second_msh = text.match_indices("\rMSH|").next().unwrap().0 + 1;
    let third_msh = text.match_indices("\rMSH|").nth(1).unwrap().0 + 1;
    let filler = format!("NTE|||{}\r", "x".repeat(4000));
    text.insert_str(third_msh, &filler);
    let limit = 3000;
    for s in &mut cfg.stages {
        if let oscarflow::stages::StageConfig::ParseHl7(c) = &mut s.config {
            c.max_message_bytes = limit;
        }
    }
    let path = tmp.path().join("big.hl7");
    std::fs::write(&path, &text).unwrap();
    run_items(
        &cfg,
        &store,
        vec![oscarflow::sources::list::ListItem::File(path)],
        None,
    )
    .await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        2
    );
    let dlq = DeadLetterStore::new(store.clone());
    let list = dlq.list(&Filter::default()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, "too_large");
    assert_eq!(list[0].part, Some(1));
    let raw = dlq.get(&list[0].id).await.unwrap().unwrap().raw;
    assert_eq!(
        raw,
        text.as_bytes()[second_msh..third_msh + filler.len()].to_vec(),
        "the rejected message's own bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_of_one_accession_keep_only_the_current_measurements() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let versions = [
        "fixtures/hl7/versions/accession_26-200000001_1_prelim.hl7",
        "fixtures/hl7/versions/accession_26-200000001_2_final.hl7",
        "fixtures/hl7/versions/accession_26-200000001_3_corrected.hl7",
    ];
    let mut per_version = Vec::new();
    for v in versions {
        run_items(
            &lab_pipeline(),
            &store,
            vec![oscarflow::sources::list::ListItem::File(repo().join(v))],
            None,
        )
        .await;
        let lab_no: i64 = sqlx::query_scalar("SELECT MAX(lab_no) FROM hl7TextInfo")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let n = count(
            &store,
            &format!(
                "SELECT COUNT(*) FROM measurementsExt WHERE keyval = 'lab_no' AND val = '{lab_no}'"
            ),
        )
        .await;
        assert!(n > 0, "{v}: the matched lab has measurements");
        per_version.push((lab_no, n));
    }
    let (current, current_n) = per_version[2];
    let live = count(&store, "SELECT COUNT(*) FROM measurements").await;
    assert_eq!(
        live, current_n,
        "only the corrected version's measurements stay"
    );
    let on_current = count(
        &store,
        &format!("SELECT COUNT(*) FROM measurements m JOIN measurementsExt e ON e.measurement_id = m.id AND e.keyval = 'lab_no' AND e.val = '{current}'"),
    )
    .await;
    assert_eq!(on_current, current_n);
    let deleted = count(&store, "SELECT COUNT(*) FROM measurementsDeleted").await;
    assert_eq!(
        deleted,
        per_version[0].1 + per_version[1].1,
        "prelim and final measurements moved aside"
    );
    let patient: i64 = sqlx::query_scalar("SELECT MIN(demographicNo) FROM measurements")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(patient, 1002, "filed under the matched patient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_the_middle_of_a_multi_message_file_leaves_no_row_of_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    // Injected failure: the second hl7TextInfo row of any file is refused by the database.
    sqlx::query(
        "CREATE TRIGGER fail_second_message BEFORE INSERT ON hl7TextInfo WHEN (SELECT COUNT(*) FROM hl7TextInfo) >= 1 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let file = repo().join("fixtures/hl7/pathl7/multi_message.hl7");
    run_items(
        &lab_pipeline(),
        &store,
        vec![oscarflow::sources::list::ListItem::File(file.clone())],
        None,
    )
    .await;
    for table in [
        "fileUploadCheck",
        "hl7TextMessage",
        "hl7TextInfo",
        "patientLabRouting",
        "providerLabRouting",
        "measurements",
        "measurementsExt",
        "oscarflow_lab_import",
    ] {
        assert_eq!(
            count(&store, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table} kept a row of the failed file"
        );
    }
    let dlq = DeadLetterStore::new(store.clone());
    let list = dlq.list(&Filter::default()).await.unwrap();
    assert_eq!(list.len(), 1, "the whole file is dead-lettered");
    assert_eq!(list[0].reason, "import_rejected");
    assert_eq!(
        dlq.get(&list[0].id).await.unwrap().unwrap().raw,
        std::fs::read(&file).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_longer_than_oscars_columns_are_truncated_or_rejected_as_configured() {
    let long_name = "ZZVERYLONGSURNAMEWELLPASTTHIRTYCHARACTERS";
    let text = String::from_utf8(
        std::fs::read(repo().join("fixtures/hl7/pathl7/matched_chem.hl7")).unwrap(),
    )
    .unwrap()
    .replacen("TESTPATIENT^", &format!("{long_name}^"), 1);
    assert!(text.contains(long_name));
    for reject in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let store = seeded_store(tmp.path()).await;
        let path = tmp.path().join("long.hl7");
        std::fs::write(&path, &text).unwrap();
        let cfg = common::lab_pipeline_with(|c| {
            c.on_overflow = if reject {
                oscarflow::oscar::import::Overflow::Reject
            } else {
                oscarflow::oscar::import::Overflow::Truncate
            }
        });
        run_items(
            &cfg,
            &store,
            vec![oscarflow::sources::list::ListItem::File(path)],
            None,
        )
        .await;
        let dlq = DeadLetterStore::new(store.clone())
            .list(&Filter::default())
            .await
            .unwrap();
        if reject {
            assert_eq!(
                count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
                0
            );
            assert_eq!(dlq.len(), 1);
            assert_eq!(dlq[0].reason, "import_rejected");
            assert!(
                dlq[0].detail.contains("last_name") && !dlq[0].detail.contains(long_name),
                "{}",
                dlq[0].detail
            );
        } else {
            let stored: String = sqlx::query_scalar("SELECT last_name FROM hl7TextInfo")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(stored, long_name.chars().take(30).collect::<String>());
            assert!(dlq.is_empty());
        }
    }
}

#[test]
fn a_file_written_to_after_it_was_read_is_kept_and_its_whole_content_imported() {
    // A writer that has not finished when the file is read (here: an empty file, then the
    // lab), with `min_age = 0`: the empty read is dead-lettered, but the file must not be
    // released for it; the complete lab is read again and imported, then released.
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, processed, cfg) = inbox_pipeline(tmp.path());
    let file = inbox.join("lab.hl7");
    std::fs::write(&file, b"").unwrap();
    let lab = std::fs::read(repo().join("fixtures/hl7/pathl7/matched_chem.hl7")).unwrap();
    let finished = Arc::new(AtomicU32::new(0));
    let (lab2, done) = (lab.clone(), finished.clone());
    let hook: oscarflow::sources::folder::ReleaseHook = Arc::new(move |p: &Path| {
        // The writer finishes between the read and the release of the first delivery.
        if done.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(p, &lab2).unwrap();
        }
        Box::pin(async {})
    });
    let rt = runtime();
    let store = rt.block_on(seeded_store(tmp.path()));
    let mut running = rt.block_on(async { build_with_release_hook(&cfg, &store, hook) });
    assert!(
        wait_until(Duration::from_secs(20), || processed
            .join("lab.hl7")
            .exists()),
        "the completed file was released"
    );
    rt.block_on(async {
        assert!(running.shutdown(Duration::from_secs(10)).await);
        let imported = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
        let dead = count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
        println!(
            "file changed after read: {} deliveries, {imported} lab imported, {dead} dead letter (the empty read), released once",
            finished.load(Ordering::SeqCst)
        );
        assert_eq!(imported, 1, "the complete lab was imported");
        assert_eq!(dead, 1, "the empty read was dead-lettered, not the lab");
    });
    assert_eq!(std::fs::read(processed.join("lab.hl7")).unwrap(), lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_folders_limit_is_dead_lettered_from_disk_once_released_and_never_imported()
{
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let (inbox, processed, mut cfg) = inbox_pipeline(tmp.path());
    let SourceConfig::Folder(f) = &mut cfg.sources[0].config else {
        panic!("a folder source");
    };
    // A limit between the two files: the good one fits, the big one (a lab followed by
    // more than a megabyte of notes, so its dead letter is stored in chunks) does not.
    let good = std::fs::read(repo().join("fixtures/hl7/pathl7/multi_message.hl7")).unwrap();
    let mut big = good.clone();
    for _ in 0..20_000 {
        big.extend_from_slice(b"NTE|1||synthetic filler line of a lab that is far too large\r");
    }
    f.max_input_bytes = good.len() + 10;
    drop_file(&inbox, "big.hl7", &big);
    drop_file(&inbox, "good.hl7", &good);
    let mut running = build(&cfg, &store, BuildOptions::default()).unwrap();
    let released = wait_until(Duration::from_secs(30), || {
        processed.join("big.hl7").exists() && processed.join("good.hl7").exists()
    });
    // A few more scans: an oversized file must not come round again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(running.shutdown(Duration::from_secs(10)).await);
    assert!(released, "both files were released");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await,
        1,
        "only the file under the limit was imported"
    );
    let dlq = DeadLetterStore::new(store.clone());
    let list = dlq.list(&Filter::default()).await.unwrap();
    assert_eq!(list.len(), 1, "one dead letter: {list:?}");
    assert_eq!(list[0].reason, "too_large");
    assert_eq!(list[0].stage_kind, "folder");
    assert_eq!(list[0].attempts, 1, "dead-lettered once, not retried");
    assert_eq!(list[0].raw_len, big.len() as i64);
    assert!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter_chunk").await > 1,
        "kept in chunks"
    );
    let mut raw = Vec::new();
    dlq.write_raw(&list[0].id, &mut raw).await.unwrap();
    assert!(raw == big, "the dead letter gives the original bytes back");
}

/// A sink that commits nothing until its gate opens.
struct GatedSink {
    gate: tokio::sync::watch::Receiver<bool>,
    written: AtomicUsize,
}

#[async_trait]
impl Sink<Raw> for GatedSink {
    fn kind(&self) -> &'static str {
        "gated"
    }
    async fn write(&self, _env: &Envelope<Raw>) -> Result<(), ProcessError> {
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_in_flight_are_bounded_by_the_byte_budget_and_all_commit_once_it_frees() {
    use oscarflow::ack::ByteBudget;
    let tmp = tempfile::tempdir().unwrap();
    let store = sqlite_store(tmp.path()).await;
    // Room for three 10 KiB inputs; the channel and the sink would take many more.
    let budget = ByteBudget::new(30 * 1024);
    let in_flight = InFlight::new();
    let (tx, rx) = mpsc::channel::<Envelope<Raw>>(64);
    let (open, gate) = tokio::sync::watch::channel(false);
    let sink = Arc::new(GatedSink {
        gate,
        written: AtomicUsize::new(0),
    });
    let sink_task = tokio::spawn(run_sink(
        sink.clone(),
        rx,
        cx(&store, "sink", retry(3)),
        16,
        OrderKey::None,
    ));
    let out = oscarflow::sources::Outlet::new(tx, oscarflow::sources::SourceControl::new())
        .with_budget(Some(budget.clone()));
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (sent, in_flight) = (sent.clone(), in_flight.clone());
        tokio::spawn(async move {
            let mut receivers = Vec::new();
            for i in 0..10u8 {
                let bytes = Bytes::from(vec![b'A' + i; 10 * 1024]);
                let (n, r) = BatchNotifier::new(Some(in_flight.clone()));
                let env = Envelope::new(
                    prov(&format!("input {i}"), &bytes),
                    Raw {
                        bytes,
                        name: format!("input {i}"),
                        lab_type: None,
                    },
                    n.token(),
                );
                drop(n);
                out.send(env).await.expect("sent");
                sent.fetch_add(1, Ordering::SeqCst);
                receivers.push(r);
            }
            let mut statuses = Vec::new();
            for r in receivers {
                statuses.push(r.wait().await);
            }
            statuses
        })
    };
    assert!(
        wait_until_async(|| sent.load(Ordering::SeqCst) == 3).await,
        "three inputs fit in the budget"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        3,
        "the fourth waits for room while nothing commits"
    );
    assert_eq!(budget.in_use(), 30 * 1024);
    assert_eq!(
        in_flight.current(),
        4,
        "three sent and one waiting at the budget"
    );
    open.send_replace(true);
    let statuses = producer.await.unwrap();
    assert_eq!(statuses, vec![BatchStatus::Delivered; 10]);
    assert_eq!(sink.written.load(Ordering::SeqCst), 10);
    assert_eq!(budget.in_use(), 0, "every share returned once settled");
    assert!(
        in_flight.high_water() <= 4,
        "never more than the budget's three plus the one waiting: {}",
        in_flight.high_water()
    );
    sink_task.abort();
}

async fn wait_until_async(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}
