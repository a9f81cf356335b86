//! The Excelleris `hl7pull` source against the emulator (`tests/common/excelleris_emulator.rs`)
//! on loopback with mutual TLS, using the real client code: the 18-message QA batch that
//! Expedius tests with is imported and acknowledged only after commit; a crash before the
//! ack means re-delivery with zero duplicate rows; a wrong client certificate, a wrong trust
//! store and a refused login fail with clear, PHI-free errors; a busy pipeline delays the
//! next poll; the source passes the component harness.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_spanned::Spanned;

use oscarflow::ack::BatchStatus;
use oscarflow::sources::excelleris::{wrap_message, ExcellerisConfig, ExcellerisSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;

use common::excelleris_emulator::{Emulator, P12_PASSWORD, PASSWORD, USER};
use common::harness::{self, Case};
use common::sources::SourceEvents as Polls;

fn qa_batch() -> Option<Bytes> {
    let dir = common::shared_dir("corpus/public/expedius")?;
    Some(Bytes::from(
        std::fs::read(dir.join("excelleris_qa.xml")).unwrap(),
    ))
}

/// Credentials in per-test variables (tests run in parallel in one process).
fn config(emu: &Emulator, tag: &str) -> ExcellerisConfig {
    let (user, pass, p12) = (
        format!("OSCARFLOW_T_{tag}_USER"),
        format!("OSCARFLOW_T_{tag}_PASS"),
        format!("OSCARFLOW_T_{tag}_P12"),
    );
    std::env::set_var(&user, USER);
    std::env::set_var(&pass, PASSWORD);
    std::env::set_var(&p12, P12_PASSWORD);
    ExcellerisConfig {
        url: emu.url(),
        user_env: Spanned::new(0..0, user),
        password_env: Spanned::new(0..0, pass),
        client_identity: emu.client_pem.clone(),
        client_identity_password_env: Some(Spanned::new(0..0, p12)),
        trust_store: emu.server_ca_pem.clone(),
        poll_interval: Duration::from_secs(3600),
        times_of_day: Vec::new(),
        acknowledge: true,
        timeout: Duration::from_secs(30),
        max_input_bytes: oscarflow::sources::oversize::DEFAULT_MAX_INPUT_BYTES,
        lab_type: oscarflow::hl7::lab::LabType::Pathl7,
    }
}

/// Runs the lab pipeline with `source` until it ends; returns the pipeline's result.
/// Runs `source` to its end, which must be clean; the poll and settle events it reported.
async fn polled(store: &Store, source: ExcellerisSource) -> Arc<Polls> {
    let polls = Arc::new(Polls::default());
    run(store, source, polls.clone()).await.unwrap();
    polls
}

async fn run(store: &Store, source: ExcellerisSource, polls: Arc<Polls>) -> Result<(), String> {
    common::sources::run(&common::lab_pipeline(), store, Box::new(source), polls).await
}

async fn rows(store: &Store) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in [
        "fileUploadCheck",
        "hl7TextMessage",
        "hl7TextInfo",
        "patientLabRouting",
        "providerLabRouting",
        "measurements",
        "oscarflow_lab_import",
        "oscarflow_dead_letter",
    ] {
        out.push((
            t.to_string(),
            common::count(store, &format!("SELECT COUNT(*) FROM {t}")).await,
        ));
    }
    out
}

async fn count(store: &Store, table: &str) -> i64 {
    common::count(store, &format!("SELECT COUNT(*) FROM {table}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qa_batch_is_imported_and_acknowledged_only_after_commit() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch);
    // When the ack arrives, every message must already be committed.
    let seen_at_ack = Arc::new(Mutex::new(None));
    let (s, seen) = (store.clone(), seen_at_ack.clone());
    *emu.ack_gate.lock().unwrap() = Some(Arc::new(move || {
        let (s, seen) = (s.clone(), seen.clone());
        Box::pin(async move {
            let n = common::count(&s, "SELECT COUNT(*) FROM hl7TextMessage").await;
            *seen.lock().unwrap() = Some(n);
        })
    }));
    let source = ExcellerisSource::new(config(&emu, "QA")).with_max_polls(1);
    let polls = polled(&store, source).await;
    assert_eq!(*polls.failed.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*polls.ok.lock().unwrap(), vec![18]);
    assert_eq!(count(&store, "hl7TextMessage").await, 18);
    assert_eq!(count(&store, "oscarflow_dead_letter").await, 0);
    assert_eq!(
        *seen_at_ack.lock().unwrap(),
        Some(18),
        "acknowledged after all 18 committed"
    );
    let (fetches, acks, logins, log) = emu.snapshot();
    assert_eq!((fetches, acks, logins), (1, 1, 1));
    assert_eq!(
        log,
        vec!["handshake", "login granted", "fetch batch", "ack", "logout"]
    );
    // The stored message is the CDATA body, as OSCAR's PATHL7 upload stores it.
    let t: String = sqlx::query_scalar("SELECT type FROM hl7TextMessage LIMIT 1")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(t, "PATHL7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_excelleris_source_files_every_message_as_pathl7_whatever_its_msh3_says() {
    let Some(batch) = qa_batch() else { return };
    let text = String::from_utf8(batch.to_vec()).unwrap();
    // Senders that detection would type otherwise: Interior Health, CML, an unknown one.
    let mut n = 0;
    let disguised: String = text
        .split("MSH|^~\\&|PATHL7|")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                return part.to_string();
            }
            n += 1;
            let app = ["IHALAB^2.1|IHKGH-", "LAB^2.0|KGH-", "Reports|CML-", "ACME|"][n % 4];
            format!("MSH|^~\\&|{app}{part}")
        })
        .collect();
    assert_eq!(n, 18);
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(Bytes::from(disguised));
    let source = ExcellerisSource::new(config(&emu, "TYPED")).with_max_polls(1);
    let polls = polled(&store, source).await;
    assert_eq!(*polls.failed.lock().unwrap(), Vec::<String>::new());
    let types = common::lab_types(&store).await;
    println!("types: {types:?}");
    assert_eq!(types, vec![("PATHL7".to_string(), 18)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_ack_redelivers_the_batch_with_zero_duplicate_rows() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch.clone());

    let crashed = Arc::new(AtomicBool::new(false));
    let c = crashed.clone();
    let source =
        ExcellerisSource::new(config(&emu, "CRASH")).with_crash_before_ack(Arc::new(move || {
            c.store(true, Ordering::SeqCst);
            true
        }));
    let err = run(&store, source, Arc::new(Polls::default()))
        .await
        .unwrap_err();
    assert!(err.contains("crashed before the acknowledgement"), "{err}");
    assert!(crashed.load(Ordering::SeqCst));
    let after_crash = rows(&store).await;
    assert_eq!(emu.snapshot().1, 0, "no ack was sent");
    assert_eq!(count(&store, "hl7TextMessage").await, 18);

    // Restart: the same batch comes again, and a second batch with it plus one new lab.
    let source = ExcellerisSource::new(config(&emu, "CRASH2")).with_max_polls(1);
    polled(&store, source).await;
    assert_eq!(
        rows(&store).await,
        after_crash,
        "the re-delivered batch wrote nothing"
    );
    let (fetches, acks, _, _) = emu.snapshot();
    assert_eq!((fetches, acks), (2, 1));

    // A re-delivery that also carries a new message: only the new one is written.
    let text = String::from_utf8(batch.to_vec()).unwrap();
    let first = text.find("<Message MsgID=\"1\">").unwrap();
    let end = text[first..].find("</Message>").unwrap() + first + "</Message>".len();
    let new_msg = text[first..end]
        .replace("MsgID=\"1\"", "MsgID=\"19\"")
        .replace("ACC20130927130551204", "ACC20130927130551999");
    let bigger = text
        .replace("MessageCount=\"18\"", "MessageCount=\"19\"")
        .replace("</HL7Messages>", &format!("{new_msg}</HL7Messages>"));
    emu.push_batch(bigger);
    let source = ExcellerisSource::new(config(&emu, "CRASH3")).with_max_polls(1);
    run(&store, source, Arc::new(Polls::default()))
        .await
        .unwrap();
    assert_eq!(
        count(&store, "hl7TextMessage").await,
        19,
        "only the new message was added"
    );
    assert_eq!(emu.snapshot().1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_certificate_fails_with_a_clear_error_and_reads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(Bytes::from_static(
        b"<HL7Messages MessageCount=\"0\"></HL7Messages>",
    ));

    let mut cfg = config(&emu, "STRANGER");
    cfg.client_identity = emu.stranger_pem.clone();
    let polls = polled(&store, ExcellerisSource::new(cfg).with_max_polls(1)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].starts_with(
            "handshake: TLS handshake failed: the server refused the client certificate"
        ),
        "{}",
        failed[0]
    );
    assert!(
        !failed[0].contains(PASSWORD) && !failed[0].contains(USER),
        "no credentials in errors"
    );
    let (fetches, _, logins, log) = emu.snapshot();
    assert_eq!((fetches, logins), (0, 0));
    assert!(log.iter().all(|l| l == "tls handshake refused"), "{log:?}");

    // The server's certificate from a CA not in the trust store.
    let mut cfg = config(&emu, "WRONGTRUST");
    cfg.trust_store = emu.wrong_trust_pem.clone();
    let polls = polled(&store, ExcellerisSource::new(cfg).with_max_polls(1)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert!(
        failed[0].contains("not signed by a CA in trust_store"),
        "{}",
        failed[0]
    );

    // A refused login.
    let mut cfg = config(&emu, "BADPASS");
    std::env::set_var(cfg.password_env.get_ref(), "wrong");
    cfg.acknowledge = true;
    let polls = polled(&store, ExcellerisSource::new(cfg).with_max_polls(1)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert_eq!(
        failed,
        vec![
            "login refused by the server (`AccessDenied`): check the user and password".to_string()
        ]
    );
    assert!(!failed[0].contains("wrong"));
    assert_eq!(count(&store, "hl7TextMessage").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_identity_works_and_acknowledge_false_never_acks() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch);
    let mut cfg = config(&emu, "P12");
    cfg.client_identity = emu.client_p12.clone();
    cfg.acknowledge = false;
    run(
        &store,
        ExcellerisSource::new(cfg.clone()).with_max_polls(1),
        Arc::new(Polls::default()),
    )
    .await
    .unwrap();
    assert_eq!(count(&store, "hl7TextMessage").await, 18);
    assert_eq!(emu.snapshot().1, 0, "acknowledge = false never acks");
    // A wrong PKCS#12 password is a clear configuration error.
    std::env::set_var(
        cfg.client_identity_password_env.as_ref().unwrap().get_ref(),
        "nope",
    );
    let err = run(
        &store,
        ExcellerisSource::new(cfg).with_max_polls(1),
        Arc::new(Polls::default()),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("client_identity (PKCS#12) cannot be opened"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pipeline_delays_the_next_poll() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch);
    // Another writer holds the write lock: nothing can commit.
    let (_other, held) = common::sources::hold_write_lock(tmp.path()).await;
    let mut cfg = config(&emu, "BUSY");
    cfg.poll_interval = Duration::from_millis(50);
    let source: Box<dyn Source> = Box::new(ExcellerisSource::new(cfg).with_max_polls(3));
    let running = common::sources::start(&common::lab_pipeline(), &store, source, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        emu.snapshot().0,
        1,
        "no new fetch while the batch is not committed"
    );
    assert!(running.in_flight.current() <= 1);
    held.rollback().await.unwrap();
    common::sources::wait(running, 60).await.unwrap();
    let (fetches, acks, _, _) = emu.snapshot();
    assert_eq!((fetches, acks), (3, 1));
    assert_eq!(count(&store, "hl7TextMessage").await, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excelleris_source_passes_the_component_harness() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch.clone());
    let framed = oscarflow::hl7::framing::frame(&batch);
    let cases: Vec<Case> = framed
        .messages
        .iter()
        .map(|f| Case {
            name: "qa message",
            bytes: wrap_message(&f.raw).to_vec(),
            expect: BatchStatus::Delivered,
        })
        .collect();
    assert_eq!(cases.len(), 18);
    let source: Box<dyn Source> =
        Box::new(ExcellerisSource::new(config(&emu, "HARNESS")).with_max_polls(1));
    let out = harness::run_with_source(
        common::lab_pipeline(),
        "harness_excelleris",
        &store,
        source,
        cases,
        true,
        None,
    )
    .await;
    assert_eq!(out.total(|l| l.imported), 18);
    let m = harness::metrics();
    assert_eq!(
        m.sum(
            "oscarflow_source_polls_total",
            &[("pipeline", "harness_excelleris"), ("component", "files")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_are_reported_and_the_batch_comes_again_without_duplicates() {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch);
    {
        let mut s = emu.state.lock().unwrap();
        s.fail_next_fetch = true;
        s.refuse_next_ack = true;
    }
    let mut cfg = config(&emu, "FAULTS");
    cfg.poll_interval = Duration::from_millis(50);
    let polls = polled(&store, ExcellerisSource::new(cfg).with_max_polls(3)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0], "fetch: HTTP 500");
    assert!(
        failed[1].starts_with("acknowledge refused (ReturnCode 1)"),
        "{}",
        failed[1]
    );
    assert_eq!(
        *polls.ok.lock().unwrap(),
        vec![18],
        "the third poll imported nothing new and acked"
    );
    let (fetches, acks, logins, _) = emu.snapshot();
    assert_eq!((fetches, acks, logins), (3, 1, 3));
    assert_eq!(
        count(&store, "hl7TextMessage").await,
        18,
        "no duplicate after the re-delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_max_input_bytes_is_refused_unacknowledged_and_fetched_again_under_a_larger_limit(
) {
    let Some(batch) = qa_batch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = Emulator::start(tmp.path()).await;
    emu.push_batch(batch.clone());
    let mut cfg = config(&emu, "BIGANSWER");
    cfg.max_input_bytes = batch.len() - 1;
    let polls = polled(&store, ExcellerisSource::new(cfg).with_max_polls(1)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("fetch: the answer is over max_input_bytes"),
        "{}",
        failed[0]
    );
    let (_, acks, _, _) = emu.snapshot();
    assert_eq!(acks, 0, "nothing acknowledged");
    assert_eq!(count(&store, "hl7TextMessage").await, 0);
    // The feed kept the batch: under the default limit it is imported whole.
    let source = ExcellerisSource::new(config(&emu, "BIGANSWER2")).with_max_polls(1);
    let polls = polled(&store, source).await;
    assert_eq!(*polls.ok.lock().unwrap(), vec![18]);
    assert_eq!(count(&store, "hl7TextMessage").await, 18);
}
