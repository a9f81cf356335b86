//! OSCAR's outbound fax queue (`faxes` rows `WAITING` on a line oscarflow handles) sent
//! through the RingCentral emulator with the real client: every fax is sent once and ends
//! `COMPLETE`, or `ERROR` with its reason; a send that broke off after RingCentral accepted it
//! is found again and adopted, not sent twice; a fax claimed by a process that died is looked
//! up before it is sent; under a 429 storm the Heavy-group request rate stays within its limit
//! and nothing is lost; two processes on one OSCAR database never send the same fax twice.
//! No phone number, secret or token appears in the logs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use oscarflow::store::Store;

use common::fax_queue::{
    daemon_files, fax_pipeline, faxes_per_owner, pdf, queue_faxes, sent_once, statuses,
    stop_daemons,
};
use common::queue::{QueuePipeline, RoundReport};

use common::rc_emulator::{GroupLimit, RcEmulator, SentFax, CLIENT_SECRET, JWT};

fn limit(emu: &RcEmulator, group: &'static str, requests: usize, window: Duration) {
    emu.state.lock().unwrap().limits.insert(
        group,
        GroupLimit {
            requests,
            window,
            penalty: window,
        },
    );
}

/// The outbound fax pipeline, with rounds run on request (`extra` goes in the source's table).
fn outbox_config(emu: &RcEmulator, docs: &Path, extra: &str, heavy: (u32, &str)) -> String {
    fax_pipeline(
        emu,
        "OUT",
        docs,
        &format!("poll_interval = \"1h\"\n{extra}"),
        heavy,
    )
}

/// An embedded store with `n` waiting faxes, and the emulator.
struct Line {
    _tmp: tempfile::TempDir,
    docs: std::path::PathBuf,
    store: Store,
    emu: RcEmulator,
}

impl Line {
    async fn on_sqlite(n: i64) -> Line {
        let _ = common::logs::captured();
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("document");
        let store = common::sqlite_store(tmp.path()).await;
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        queue_faxes(&store, &docs, n).await;
        Line {
            _tmp: tmp,
            docs,
            store,
            emu,
        }
    }
}

/// Rounds until nothing is pending (at most `max` rounds); the summed report.
async fn drain(outbox: &mut QueuePipeline, max: u32) -> RoundReport {
    let mut total = RoundReport::default();
    for _ in 0..max {
        let r = outbox.round().await.expect("round");
        total.claimed += r.claimed;
        total.sent += r.sent;
        total.adopted += r.adopted;
        total.completed += r.completed;
        total.failed += r.failed;
        total.pending = r.pending;
        if r.pending == 0 && r.claimed == 0 {
            break;
        }
    }
    total
}

fn assert_no_phones_or_secrets_in_logs() {
    common::logs::assert_absent(&[CLIENT_SECRET, JWT, "emu-at-"], "a secret or token");
    common::logs::assert_absent(&["6045552", "+1604555"], "a destination fax number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_faxes_are_sent_once_and_end_complete_or_error_with_a_reason() {
    let Line {
        _tmp,
        docs,
        store,
        emu,
    } = Line::on_sqlite(12).await;
    // Fax 3's document is only in the Base64 column; fax 4's is nowhere; fax 5 goes to a
    // number that is not a phone number; fax 6's recipient never answers. Fax 7 is on
    // another line and fax 8 is already SENT by OSCAR's own sender: neither is ours.
    std::fs::remove_file(docs.join("referral_3.pdf")).unwrap();
    sqlx::query("UPDATE faxes SET document = ? WHERE id = 3")
        .bind(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            pdf(3),
        ))
        .execute(&store.pool)
        .await
        .unwrap();
    std::fs::remove_file(docs.join("referral_4.pdf")).unwrap();
    sqlx::query("UPDATE faxes SET destination = '555' WHERE id = 5")
        .execute(&store.pool)
        .await
        .unwrap();
    emu.state
        .lock()
        .unwrap()
        .fail_numbers
        .push("+16045552006".into());
    sqlx::query("UPDATE faxes SET faxline = '6045550111' WHERE id = 7")
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE faxes SET status = 'SENT', jobId = 77 WHERE id = 8")
        .execute(&store.pool)
        .await
        .unwrap();

    let mut outbox = QueuePipeline::start(&outbox_config(&emu, &docs, "", (100_000, "1m")), &store);
    let report = drain(&mut outbox, 10).await;
    println!("outbound: {report:?}");
    let sent = sent_once(&emu);
    assert_eq!(
        sent.len(),
        8,
        "10 ours, minus the two without a document or number"
    );
    for i in [1, 2, 3, 6, 9, 10, 11, 12] {
        let f = &sent[&format!("OSCAR fax clinic#{i}")];
        assert_eq!(f.to, format!("+1604555{}", 2000 + i));
        let doc = f
            .parts
            .iter()
            .find(|p| p.name.as_deref() == Some("attachment"))
            .unwrap();
        assert_eq!(doc.body, Bytes::from(pdf(i)), "fax {i}'s document");
        assert_eq!(doc.content_type, "application/pdf");
        let json = &f.parts[0];
        assert_eq!(json.filename.as_deref(), Some("request.json"));
    }
    assert_eq!(
        statuses(&store).await,
        HashMap::from([
            ("COMPLETE".to_string(), 7),
            ("ERROR".to_string(), 3),
            ("WAITING".to_string(), 1),
            ("SENT".to_string(), 1),
        ])
    );
    // Every status oscarflow set in OSCAR's `faxes` is in the audit trail with OSCAR's own
    // `log` row: the last one audited for a fax is what OSCAR shows, and a completed fax
    // was audited as sent first.
    let audited = common::audit_rows(&store, "status").await; // newest first
    let mut last: HashMap<i64, String> = HashMap::new();
    let mut all: Vec<(i64, String)> = Vec::new();
    for r in &audited {
        let id = r.about.fax_id.expect("a status row names its fax");
        let status = r
            .why
            .as_deref()
            .unwrap()
            .trim_start_matches("faxes.status = ")
            .to_string();
        assert_eq!(
            r.written.as_deref(),
            Some(format!("faxes {id}; log update/fax/{id}/{status}").as_str())
        );
        last.entry(id).or_insert_with(|| status.clone());
        all.push((id, status));
    }
    let shown: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, status FROM faxes WHERE status IN ('ERROR', 'COMPLETE') ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    for (id, status) in &shown {
        assert_eq!(last.get(id), Some(status), "fax {id}'s last audited status");
        if status == "COMPLETE" {
            assert!(
                all.contains(&(*id, "SENT".to_string())),
                "fax {id} audited as sent"
            );
        }
    }
    assert_eq!(
        common::count(
            &store,
            "SELECT COUNT(*) FROM log WHERE action = 'update' AND content = 'fax'"
        )
        .await,
        audited.len() as i64,
        "one OSCAR log row per status set"
    );
    let reasons: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, statusString FROM faxes WHERE status IN ('ERROR', 'COMPLETE') ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let reason = |id: i64| reasons.iter().find(|r| r.0 == id).unwrap().1.clone();
    assert!(
        reason(4).contains("document was not found"),
        "{}",
        reason(4)
    );
    assert!(
        reason(5).contains("invalid destination number"),
        "{}",
        reason(5)
    );
    assert!(reason(6).contains("NoAnswer"), "{}", reason(6));
    assert_eq!(reason(1), "Sent (2 pages)");
    // The journal has each fax handed to RingCentral and each delivered, by its faxes.id.
    common::eventually_count(&store, "SELECT COUNT(DISTINCT fax_id) FROM oscarflow_journal WHERE kind = 'fax_out' AND outcome = 'sent' AND fax_id IN (1, 2, 3, 6, 9, 10, 11, 12)", 8).await;
    common::eventually_count(&store, "SELECT COUNT(DISTINCT fax_id) FROM oscarflow_journal WHERE kind = 'fax_out' AND outcome = 'completed'", 7).await;
    // A second run finds nothing to send.
    let again = drain(&mut outbox, 2).await;
    assert_eq!((again.claimed, again.sent), (0, 0));
    assert_eq!(sent_once(&emu).len(), 8);
    // A user resends fax 1 and, with its document back, fax 4: OSCAR queues them again.
    std::fs::write(docs.join("referral_4.pdf"), pdf(4)).unwrap();
    sqlx::query("UPDATE faxes SET status = 'WAITING' WHERE id IN (1, 4)")
        .execute(&store.pool)
        .await
        .unwrap();
    let resent = drain(&mut outbox, 5).await;
    assert_eq!((resent.claimed, resent.sent), (2, 2));
    let sent = sent_once(&emu);
    assert_eq!(sent.len(), 10);
    assert!(sent.contains_key("OSCAR fax clinic#1/2") && sent.contains_key("OSCAR fax clinic#4/2"));
    assert_eq!(statuses(&store).await.get("COMPLETE"), Some(&8));
    assert_no_phones_or_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_broke_off_after_ringcentral_accepted_it_is_adopted_not_sent_again() {
    let Line {
        _tmp,
        docs,
        store,
        emu,
    } = Line::on_sqlite(6).await;
    // RingCentral takes the first three faxes but the answers never arrive.
    emu.state.lock().unwrap().drop_after_accept = 3;
    let mut outbox = QueuePipeline::start(&outbox_config(&emu, &docs, "", (100_000, "1m")), &store);
    let report = drain(&mut outbox, 10).await;
    println!("outbound with dropped answers: {report:?}");
    assert_eq!(report.adopted, 3, "the three were found in RingCentral");
    assert_eq!(sent_once(&emu).len(), 6, "each fax sent once");
    assert_eq!(
        statuses(&store).await,
        HashMap::from([("COMPLETE".to_string(), 6)])
    );
    assert_no_phones_or_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fax_claimed_by_a_process_that_died_is_looked_up_before_it_is_sent() {
    let Line {
        _tmp,
        docs,
        store,
        emu,
    } = Line::on_sqlite(2).await;
    // A process claimed both faxes an hour ago and died: fax 1 after sending it, fax 2
    // before.
    let old = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
    for id in [1, 2] {
        sqlx::query("INSERT INTO oscarflow_fax_outbound (fax_id, owner, state, ref_name, sends, rc_message_id, attempts, last_error, claimed_unix, first_claimed_unix, updated_at) VALUES (?, 'dead-1', 'sending', ?, 1, NULL, 0, NULL, ?, ?, '2026-11-22 08:00:00')")
            .bind(id)
            .bind(format!("OSCAR fax clinic#{id}"))
            .bind(old)
            .bind(old)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    emu.state.lock().unwrap().sent.push(SentFax {
        id: 4_000_000_001,
        to: "+16045552001".into(),
        name: "OSCAR fax clinic#1".into(),
        parts: Vec::new(),
        status: "Queued".into(),
        error_code: None,
        created: time::OffsetDateTime::now_utc() - time::Duration::minutes(59),
        reads: 0,
    });
    let mut outbox = QueuePipeline::start(
        &outbox_config(&emu, &docs, "claim_timeout = \"10m\"", (100_000, "1m")),
        &store,
    );
    let report = drain(&mut outbox, 10).await;
    println!("outbound after a crash: {report:?}");
    assert_eq!((report.adopted, report.sent), (1, 1));
    let sent = sent_once(&emu);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        statuses(&store).await,
        HashMap::from([("COMPLETE".to_string(), 2)])
    );
}

/// Requests of `group` the emulator received in the busiest `window`.
fn busiest(emu: &RcEmulator, group: &str, window: Duration) -> usize {
    let times: Vec<Instant> = emu
        .records()
        .into_iter()
        .filter(|r| r.group == group)
        .map(|r| r.at)
        .collect();
    let mut best = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < window)
            .count();
        best = best.max(n);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_faxes_under_a_429_storm_stay_within_the_heavy_limit_and_none_is_lost() {
    let _ = common::logs::captured();
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("document");
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        // Heavy: 10 requests per second (scaled down from 10 per minute to keep the test
        // short); a storm of 25 forced 429s with `Retry-After: 1` on top.
        limit(&emu, "heavy", 10, Duration::from_secs(1));
        {
            let mut s = emu.state.lock().unwrap();
            s.forced.extend(std::iter::repeat_n(429, 25));
            s.forced_retry_after = 1;
        }
        queue_faxes(&store, &docs, 100).await;
        let mut outbox = QueuePipeline::start(&outbox_config(&emu, &docs, "batch = 100", (10, "1s")), &store);
        let report = drain(&mut outbox, 20).await;
        let sent = sent_once(&emu);
        let peak = busiest(&emu, "heavy", Duration::from_millis(950));
        let throttled = emu
            .records()
            .iter()
            .filter(|r| r.status == 429)
            .count();
        println!(
            "outbound under a 429 storm: {} faxes sent once each, {} COMPLETE, peak {peak} Heavy requests per second (limit 10), {throttled} answered 429, lost 0; {report:?}",
            sent.len(),
            statuses(&store).await.get("COMPLETE").copied().unwrap_or(0)
        );
        assert_eq!(sent.len(), 100);
        assert!(throttled >= 25, "the storm happened");
        assert!(peak <= 10, "peak {peak} Heavy requests in a second");
        assert_eq!(
            statuses(&store).await,
            HashMap::from([("COMPLETE".to_string(), 100)])
        );
    })
    .await;
}

/// `oscarflow.toml` for a daemon whose one pipeline sends the faxes of our line.
fn daemon_config(emu: &RcEmulator, dir: &Path, docs: &Path) -> std::path::PathBuf {
    let pipeline = fax_pipeline(
        emu,
        "OUT",
        docs,
        "poll_interval = \"200ms\"\nbatch = 7",
        (100_000, "1m"),
    );
    daemon_files(dir, "OSCARFLOW_T_OUT_DB", "fax_out.toml", &pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_oscarflow_processes_on_one_oscar_database_never_send_a_fax_twice() {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("document");
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        let store = Store::open(&url).await.unwrap();
        queue_faxes(&store, &docs, 100).await;
        // Some answers are lost on the way back, so adoption races with claiming too.
        emu.state.lock().unwrap().drop_after_accept = 5;
        let config = daemon_config(&emu, tmp.path(), &docs);
        // Process `a` serves /metrics; `b` has no endpoint.
        let listen_a = format!("127.0.0.1:{}", common::free_port());
        let spawn = |listen: &str| {
            std::process::Command::new(common::bin())
                .args(["run", "--config", config.to_str().unwrap(), "--listen", listen])
                .env("OSCARFLOW_T_OUT_DB", &url)
                .env_remove("OSCARFLOW_DATABASE_URL")
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut a = spawn(&listen_a);
        let mut b = spawn("off");
        let started = Instant::now();
        loop {
            let done = common::count(&store, "SELECT COUNT(*) FROM faxes WHERE status = 'COMPLETE'").await;
            if done == 100 || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = reqwest::get(format!("http://{listen_a}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let completed_line = metrics
            .lines()
            .find(|l| {
                l.starts_with("oscarflow_outbound_messages_total{")
                    && l.contains("kind=\"fax\"")
                    && l.contains("worker=\"clinic\"")
                    && l.contains("outcome=\"completed\"")
            })
            .expect("process a reports its completed faxes in /metrics");
        println!("metrics of process a: {completed_line}");
        assert!(metrics.contains("oscarflow_outbound_last_round_timestamp_seconds"));
        let logs = stop_daemons(&mut [&mut a, &mut b]);
        let sent = sent_once(&emu);
        let by_owner = faxes_per_owner(&store).await;
        println!(
            "two oscarflow processes: {} faxes sent once each, duplicated 0, lost 0; faxes per process {:?}",
            sent.len(),
            by_owner
        );
        assert_eq!(sent.len(), 100);
        assert_eq!(by_owner.len(), 2, "both processes sent faxes");
        assert_eq!(
            statuses(&store).await,
            HashMap::from([("COMPLETE".to_string(), 100)])
        );
        for needle in [CLIENT_SECRET, JWT, "emu-at-", "6045552", "+1604555"] {
            assert!(!logs.contains(needle), "a secret, token or fax number is in the daemon's logs");
        }
    })
    .await;
}
