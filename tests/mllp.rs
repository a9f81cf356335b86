//! The MLLP listener (`src/sources/mllp.rs`) in a real pipeline on loopback: messages sent
//! by python-hl7's `mllp_send` (PyPI `hl7`) and by a Rust client are imported and answered
//! only after commit; MSA-2 echoes MSH-10; malformed messages get `AR` with a reason and are
//! in the dead-letter store; re-sends get the same answer without a second import, also
//! after a crash between commit and ACK; a full pipeline stops the reading. Under a flood of
//! idle and trickling connections (from other loopback addresses, 127.0.0.2 and up, as from
//! other hosts) a legitimate sender is still answered; a trickling frame is discarded at the
//! frame deadline; one address cannot hold more than its share of connections.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use oscarflow::ack::BatchStatus;
use oscarflow::hl7::Message;
use oscarflow::sources::mllp::{self, MllpConfig, MllpSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::topology::RunningPipeline;

use common::harness::{self, Case};
use common::mllp_client::{exchange, msa, read_ack};

fn cfg() -> MllpConfig {
    MllpConfig {
        listen: "127.0.0.1:0".into(),
        max_frame_bytes: 1024 * 1024,
        idle_timeout: Duration::from_secs(30),
        frame_timeout: Duration::from_secs(30),
        max_connections: 4,
        max_connections_per_peer: 4,
        tls_cert_file: None,
        tls_key_file: None,
    }
}

/// The built-in lab pipeline with an MLLP listener on a free loopback port.
async fn start(store: &Store, source: MllpSource) -> (RunningPipeline, SocketAddr) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let source: Box<dyn Source> = Box::new(source.with_bound_address(tx));
    let running = common::sources::start(&common::lab_pipeline(), store, source, None);
    let addr = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the listener binds")
        .expect("bound address");
    (running, addr)
}

async fn stop(mut running: RunningPipeline) {
    running.stop_intake();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the pipeline drains")
        .expect("no fatal error");
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures/hl7").join(rel)).unwrap()
}

/// The messages of a fixture file, each with its control id.
fn messages_of(rel: &str) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8(fixture(rel)).unwrap();
    let text = text.replace("\r\n", "\r").replace('\n', "\r");
    let mut out = Vec::new();
    for part in text.split("MSH|").filter(|p| !p.trim().is_empty()) {
        let msg = format!("MSH|{}", part.trim_end_matches(['\r', '\n']));
        let m = Message::parse(&msg).unwrap();
        out.push((m.get("MSH-10").to_string(), msg.into_bytes()));
    }
    out
}

/// A virtual environment with python-hl7 (`mllp_send`); `None` outside CI when Python or
/// PyPI is unavailable.
fn mllp_send_bin() -> Option<std::path::PathBuf> {
    common::pypi_program("py-hl7-venv", "hl7==0.4.5", "mllp_send")
}

async fn count(store: &Store, sql: &str) -> i64 {
    common::count(store, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_by_python_hl7_mllp_send_are_imported_and_acked_with_their_control_ids() {
    let Some(mllp_send) = mllp_send_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (running, addr) = start(&store, MllpSource::new(cfg())).await;

    // Three good labs and one without PID/OBR (a truncated message).
    let mut msgs = messages_of("pathl7/multi_message.hl7");
    msgs.push((
        "TRUNC1".into(),
        b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101120000||ORU^R01|TRUNC1|P|2.3".to_vec(),
    ));
    let file = tmp.path().join("to_send.hl7");
    let mut body = Vec::new();
    for (_, m) in &msgs {
        body.extend_from_slice(m);
        body.extend_from_slice(b"\r\n");
    }
    std::fs::write(&file, &body).unwrap();
    let out = tokio::process::Command::new(&mllp_send)
        .args(["--loose", "-p", &addr.port().to_string(), "-f"])
        .arg(&file)
        .arg("127.0.0.1")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mllp_send prints each raw answer (with its MLLP blocks) on its own line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acks: Vec<String> = stdout
        .split(['\x0b', '\x1c'])
        .map(|s| s.trim_matches(['\r', '\n']))
        .filter(|s| s.starts_with("MSH"))
        .map(String::from)
        .collect();
    assert_eq!(acks.len(), msgs.len(), "one ACK per message: {stdout:?}");
    for ((control, _), ack) in msgs.iter().zip(&acks) {
        let (code, echoed, reason) = msa(ack);
        assert_eq!(&echoed, control, "MSA-2 equals the message's MSH-10");
        if control == "TRUNC1" {
            assert_eq!(code, "AR");
            assert_eq!(reason, "missing_segment");
        } else {
            assert_eq!(code, "AA", "{ack:?}");
        }
    }
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        3
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        1
    );
    let dl_raw: Vec<u8> = sqlx::query_scalar("SELECT raw FROM oscarflow_dead_letter")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        dl_raw, msgs[3].1,
        "the rejected message is kept byte for byte"
    );
    stop(running).await;
}

/// A sender that gives up on a frame half-way and starts again on the same connection (a new
/// start block before the end block) gets the whole message imported once and answered by
/// its control id; the half-sent frame is discarded, never filed as a lab without results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_frame_is_discarded_and_only_the_whole_message_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (running, addr) = start(&store, MllpSource::new(cfg())).await;
    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The sender got as far as the last result (whole segments up to it), then gave up.
    let cut = String::from_utf8_lossy(&msg)
        .rfind("\rOBX|")
        .expect("a message with results");
    let mut half = vec![mllp::START];
    half.extend_from_slice(&msg[..=cut]);
    conn.write_all(&half).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, echoed, _) = msa(&exchange(&mut conn, &msg).await);
    assert_eq!((code.as_str(), echoed.as_str()), ("AA", control.as_str()));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1,
        "only the whole message is a lab"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        0
    );
    drop(conn);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_gets_the_same_answer_and_is_not_processed_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (running, addr) = start(&store, MllpSource::new(cfg())).await;
    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let bad = b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101120000||ORU^R01|BAD1|P|2.3\rPID||1"
        .to_vec();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for round in 0..3 {
        let (code, echoed, _) = msa(&exchange(&mut conn, &msg).await);
        assert_eq!(
            (code.as_str(), echoed.as_str()),
            ("AA", control.as_str()),
            "round {round}"
        );
        let (code, echoed, reason) = msa(&exchange(&mut conn, &bad).await);
        assert_eq!(
            (code.as_str(), echoed.as_str(), reason.as_str()),
            ("AR", "BAD1", "missing_segment"),
            "round {round}"
        );
    }
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        1,
        "a re-sent bad message is answered from the record, not dead-lettered again"
    );
    // A different message reusing the control id is processed, not swallowed.
    let reused = String::from_utf8(msg.clone())
        .unwrap()
        .replace("20260114", "20260115")
        .into_bytes();
    assert_ne!(reused, msg);
    let (code, _, _) = msa(&exchange(&mut conn, &reused).await);
    assert_eq!(code, "AA");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        2
    );
    drop(conn);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_commit_before_the_ack_does_not_import_the_resent_message_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (_, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);

    // First life: the message is committed, then the process "dies" before answering.
    let crashed = Arc::new(AtomicBool::new(false));
    let c = crashed.clone();
    let source = MllpSource::new(cfg()).with_crash_before_answer(Arc::new(move || {
        c.store(true, Ordering::SeqCst);
        true
    }));
    let (running, addr) = start(&store, source).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(&mllp::encode(&msg)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
        .await
        .expect("the connection ends")
        .unwrap_or(0);
    assert_eq!(n, 0, "no ACK was sent");
    assert!(crashed.load(Ordering::SeqCst));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1,
        "it was committed"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_mllp_answer").await,
        0
    );
    stop(running).await;

    // Second life: the peer re-sends; one row, answered AA.
    let (running, addr) = start(&store, MllpSource::new(cfg())).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let (code, _, _) = msa(&exchange(&mut conn, &msg).await);
    assert_eq!(code, "AA");
    for table in [
        "hl7TextMessage",
        "hl7TextInfo",
        "fileUploadCheck",
        "patientLabRouting",
    ] {
        assert_eq!(
            count(&store, &format!("SELECT COUNT(*) FROM {table}")).await,
            1,
            "{table}: no second row"
        );
    }
    drop(conn);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_stops_the_listener_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (running, addr) = start(&store, MllpSource::new(cfg())).await;
    let in_flight = running.in_flight.clone();
    // Another writer holds the database's write lock: reads go on (WAL), nothing commits.
    let (_other, held) = common::sources::hold_write_lock(tmp.path()).await;
    let (_, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The peer pipelines 50 distinct messages without waiting for answers.
    let mut burst = Vec::new();
    for i in 0..50 {
        let m =
            String::from_utf8(msg.clone())
                .unwrap()
                .replacen("ZZ0101", &format!("ZZ0101B{i}"), 1);
        burst.extend(mllp::encode(m.as_bytes()));
    }
    let writer = tokio::spawn(async move {
        conn.write_all(&burst).await.unwrap();
        conn
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        in_flight.current(),
        1,
        "one connection: one message in flight while it cannot commit, the rest unread"
    );
    held.rollback().await.unwrap();
    let mut conn = writer.await.unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        let (code, _, _) = msa(&read_ack(&mut conn).await);
        assert_eq!(code, "AA");
        answered.fetch_add(1, Ordering::SeqCst);
    }
    assert!(
        in_flight.high_water() <= 1,
        "never more than one message in flight"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        50
    );
    drop(conn);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_listener_passes_the_component_harness() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let (_, good) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let bad =
        b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101120000||ORU^R01|BAD2|P|2.3".to_vec();
    let cases = vec![
        Case {
            name: "good",
            bytes: good.clone(),
            expect: BatchStatus::Delivered,
        },
        Case {
            name: "truncated",
            bytes: bad.clone(),
            expect: BatchStatus::DeadLettered,
        },
    ];
    let (tx, rx) = tokio::sync::oneshot::channel();
    let source: Box<dyn Source> = Box::new(MllpSource::new(cfg()).with_bound_address(tx));
    let driver: harness::Driver = Box::pin(async move {
        let addr = rx.await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert_eq!(msa(&exchange(&mut conn, &good).await).0, "AA");
        assert_eq!(msa(&exchange(&mut conn, &bad).await).0, "AR");
    });
    harness::run_with_source(
        common::lab_pipeline(),
        "harness_mllp",
        &store,
        source,
        cases,
        true,
        Some(driver),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls_is_answered_and_a_plain_connection_gets_nothing() {
    use common::excelleris_emulator::{ca, leaf};
    use openssl::ssl::{SslConnector, SslMethod};
    use std::pin::Pin;
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let authority = ca("Test MLLP CA");
    let server = leaf("localhost", &authority, true);
    let (cert, key) = (tmp.path().join("mllp.crt"), tmp.path().join("mllp.key"));
    let mut chain = server.cert.to_pem().unwrap();
    chain.extend(authority.cert.to_pem().unwrap());
    std::fs::write(&cert, chain).unwrap();
    std::fs::write(&key, server.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut c = cfg();
    c.tls_cert_file = Some(cert);
    c.tls_key_file = Some(key);
    let (running, addr) = start(&store, MllpSource::new(c)).await;

    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector
        .cert_store_mut()
        .add_cert(authority.cert.clone())
        .unwrap();
    let connector = connector.build();
    let ssl = connector
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls)
        .connect()
        .await
        .expect("TLS handshake with the listener");
    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    tls.write_all(&mllp::encode(&msg)).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(&[mllp::END, b'\r']) {
        let n = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let ack = String::from_utf8(buf[1..buf.len() - 2].to_vec()).unwrap();
    assert_eq!(msa(&ack).0, "AA");
    assert_eq!(msa(&ack).1, control);

    // A peer that skips TLS is not answered in plain text.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(&mllp::encode(&msg)).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(!got.windows(3).any(|w| w == b"MSA"), "no plain-text answer");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1
    );
    drop(tls);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_frame_gets_ar_too_large_and_an_idle_connection_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let mut c = cfg();
    c.max_frame_bytes = 4096;
    c.idle_timeout = Duration::from_millis(400);
    let (running, addr) = start(&store, MllpSource::new(c)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut big = b"MSH|^~\\&|LAB|LIFELABS|OSCAR|CLINIC|20260101||ORU^R01|BIG1|P|2.3\r".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10_000));
    let (code, control, reason) = msa(&exchange(&mut conn, &big).await);
    assert_eq!(
        (code.as_str(), control.as_str(), reason.as_str()),
        ("AR", "BIG1", "too_large")
    );
    // The connection still works after the refused frame.
    let (_, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    assert_eq!(msa(&exchange(&mut conn, &msg).await).0, "AA");
    // Then silence: the listener closes the connection after the idle timeout.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("closed within 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed by the listener");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1
    );
    stop(running).await;
}

/// A connection to `addr` from the loopback address `127.0.0.<from>` (Linux routes all of
/// 127.0.0.0/8 to the loopback interface: each address stands for another host).
async fn connect_from(from: u8, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, from], 0)))?;
    socket.connect(addr).await
}

/// Whether the listener closed `conn` (end of stream or reset) within `wait`.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn closed_by_limits(reason: &str) -> u64 {
    harness::metrics().sum(
        "oscarflow_listener_connections_closed_total",
        &[("listener", "mllp"), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_trickles_past_the_frame_deadline_is_discarded_and_not_imported() {
    let _ = harness::metrics();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let mut c = cfg();
    c.frame_timeout = Duration::from_secs(1);
    let (running, addr) = start(&store, MllpSource::new(c)).await;
    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let conn = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    // The whole message, end block included, one byte every 100 ms: it would take minutes.
    let framed = mllp::encode(&msg);
    let trickle = tokio::spawn(async move {
        for b in framed {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut got)).await;
    let after = started.elapsed();
    trickle.abort();
    eprintln!(
        "trickling frame: connection closed after {} ms",
        after.as_millis()
    );
    assert!(closed.is_ok(), "the listener closed the connection");
    assert!(got.is_empty(), "no answer for a discarded frame");
    assert!(after >= Duration::from_millis(800), "{after:?}");
    assert!(closed_by_limits("frame_timeout") >= 1);
    for table in ["hl7TextMessage", "oscarflow_dead_letter"] {
        assert_eq!(
            count(&store, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}: the partial frame is neither imported nor dead-lettered"
        );
    }
    // Sent whole, the same message is imported and answered.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let (code, echoed, _) = msa(&exchange(&mut conn, &msg).await);
    assert_eq!((code.as_str(), echoed.as_str()), ("AA", control.as_str()));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1
    );
    drop(conn);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_connections_and_another_sender_is_answered() {
    let _ = harness::metrics();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let mut c = cfg();
    c.max_connections = 4;
    c.max_connections_per_peer = 2;
    let (running, addr) = start(&store, MllpSource::new(c)).await;
    // Two connections from 127.0.0.2, each in the middle of a frame.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut h = connect_from(2, addr).await.unwrap();
        h.write_all(b"\x0bMSH|^~\\&|").await.unwrap();
        hogs.push(h);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A third from the same address is closed at once.
    let started = std::time::Instant::now();
    let mut third = connect_from(2, addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "the third connection from one address is closed"
    );
    eprintln!(
        "per-address cap: third connection closed after {} ms",
        started.elapsed().as_millis()
    );
    assert!(closed_by_limits("peer_over_capacity") >= 1);
    for h in &mut hogs {
        assert!(
            !closed_within(h, Duration::from_millis(200)).await,
            "the first two stay open"
        );
    }
    // Another sender is answered.
    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let mut conn = connect_from(1, addr).await.unwrap();
    let (code, echoed, _) = msa(&exchange(&mut conn, &msg).await);
    assert_eq!((code.as_str(), echoed.as_str()), ("AA", control.as_str()));
    drop((conn, hogs, third));
    stop(running).await;
}

/// The acceptance probe: 32 connections trickle frames (one byte every 100 ms, from four
/// other addresses, eight each) and 1,000 connect and send nothing (from 127.0.0.1 and nine
/// other addresses); a sender on 127.0.0.1 still gets `AA`. The latency is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legitimate_sender_is_answered_while_1000_idle_and_32_trickling_connections_are_open() {
    let (soft, _) = oscarflow::conn_limit::raise_open_files_limit().unwrap();
    assert!(soft >= 1200, "this probe needs about 1,100 descriptors");
    let _ = harness::metrics();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let mut c = cfg();
    c.max_connections = 32;
    c.max_connections_per_peer = 8;
    // Longer than the probe: the trickling frames are not ended by their deadline here.
    c.frame_timeout = Duration::from_secs(120);
    let (running, addr) = start(&store, MllpSource::new(c)).await;

    let stop_trickling = Arc::new(AtomicBool::new(false));
    let trickling = Arc::new(AtomicUsize::new(0));
    let mut tricklers = Vec::new();
    for i in 0..32u8 {
        let conn = connect_from(2 + i / 8, addr).await.unwrap();
        let (stop, alive) = (stop_trickling.clone(), trickling.clone());
        alive.fetch_add(1, Ordering::SeqCst);
        tricklers.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut bytes = b"\x0bMSH|^~\\&|SLOW|LORIS|"
                .iter()
                .copied()
                .chain(std::iter::repeat(b"OBX|1|TX|||x\r".iter().copied()).flatten());
            while !stop.load(Ordering::SeqCst) {
                let b = bytes.next().unwrap();
                if conn.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            alive.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    // Long enough for the trickling frames to count as slow (they are no faster later).
    tokio::time::sleep(mllp::SLOW_FRAME + Duration::from_millis(500)).await;
    let mut idle = Vec::new();
    for i in 0..1000u32 {
        let from = if i % 10 == 0 { 1 } else { 10 + (i % 10) as u8 };
        idle.push(connect_from(from, addr).await.expect("connect"));
    }
    let still_trickling = trickling.load(Ordering::SeqCst);

    let (control, msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
    let started = std::time::Instant::now();
    let mut conn = connect_from(1, addr).await.unwrap();
    let ack = exchange(&mut conn, &msg).await;
    let latency = started.elapsed();
    let (code, echoed, _) = msa(&ack);

    // How many of the idle connections the listener closed to make room.
    let probes = idle
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_millis(200)));
    let idle_closed = futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    eprintln!(
        "MLLP flood: AA after {} ms (1,000 idle connections opened, {} of them closed by the listener; 32 trickling opened, {} still trickling when the sender connected); closed by the limits so far: evicted_idle={} evicted_slow={} over_capacity={} peer_over_capacity={}",
        latency.as_millis(),
        idle_closed,
        still_trickling,
        closed_by_limits("evicted_idle"),
        closed_by_limits("evicted_slow"),
        closed_by_limits("over_capacity"),
        closed_by_limits("peer_over_capacity"),
    );
    assert_eq!((code.as_str(), echoed.as_str()), ("AA", control.as_str()));
    assert!(latency < Duration::from_secs(10), "{latency:?}");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
        1
    );

    stop_trickling.store(true, Ordering::SeqCst);
    for t in tricklers {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop((conn, idle));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_databases_packet_gets_ar_too_large_and_one_dead_letter() {
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let (_, mut msg) = messages_of("pathl7/matched_chem.hl7").remove(0);
        // Its Base64 in hl7TextMessage is over the packet; the frame is under the listener's
        // and the parse stage's limits.
        while (msg.len() as i64) * 4 / 3 <= packet + 1024 * 1024 {
            msg.extend_from_slice(b"\rNTE|1||synthetic comment line of a very large lab");
        }
        let mut c = cfg();
        c.max_frame_bytes = 16 * 1024 * 1024;
        let (running, addr) = start(&store, MllpSource::new(c)).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let (code, _, reason) = msa(&exchange(&mut conn, &msg).await);
        assert_eq!(
            (code.as_str(), reason.as_str()),
            ("AR", "too_large"),
            "refused for good (AR), not AE: the sender must not re-send it for ever"
        );
        // A re-send gets the same answer and adds nothing.
        let (code, _, _) = msa(&exchange(&mut conn, &msg).await);
        assert_eq!(code, "AR");
        stop(running).await;
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await,
            0
        );
        let dls = oscarflow::dead_letter::DeadLetterStore::new(store.clone())
            .list(&Default::default())
            .await
            .unwrap();
        assert_eq!(dls.len(), 1, "{dls:#?}");
        assert_eq!(dls[0].reason, "too_large");
        assert_eq!(dls[0].raw_len, msg.len() as i64);
    })
    .await;
}
