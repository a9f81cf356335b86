//! Outbound work as pipelines of the one engine, run by two `oscarflow run` daemons on one
//! MariaDB OSCAR database against the RingCentral emulator, from pipeline files: OSCAR's fax
//! queue (`oscar_fax_queue → ringcentral_fax`) and appointment reminders
//! (`oscar_appointments → ringcentral_sms`). What cannot be sent is in the common dead-letter
//! store (`oscarflow dlq list --config`; OSCAR shows a fax `ERROR`); `dlq retry` queues it
//! again once the clinic fixed it; `tap` shows the sink's outcomes; a paused pipeline leaves
//! its queue alone; `/pipelines` lists the pipeline; each fax and each reminder is sent once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oscarflow::store::Store;

use common::fax_queue::{
    daemon_files, fax_pipeline, faxes_per_owner, queue_faxes, sent_once, statuses, stop_daemons,
    LINE,
};
use common::rc_emulator::{RcEmulator, CLIENT_SECRET, JWT};
use common::texts::{seed_appointments, states as text_states, text_pipeline};
use common::{bin, free_port, http_request};

/// The variables naming each test's database.
const FAX_DB: &str = "OSCARFLOW_T_PIPE_DB";
const TEXT_DB: &str = "OSCARFLOW_T_TEXT_DB";

/// `oscarflow.toml` and the fax pipeline file, for daemons on the database in `FAX_DB`.
fn write_config(emu: &RcEmulator, dir: &Path, docs: &Path) -> PathBuf {
    let pipeline = fax_pipeline(
        emu,
        "PIPE",
        docs,
        "poll_interval = \"200ms\"\nbatch = 5",
        (100_000, "1m"),
    );
    daemon_files(dir, FAX_DB, "fax_out.toml", &pipeline)
}

/// `oscarflow run --config CONFIG --listen PORT`, the database in `db_env`.
fn daemon(config: &Path, db_env: &str, url: &str, port: u16) -> Child {
    Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env(db_env, url)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `oscarflow ARGS --config CONFIG` against the test database (in `db_env`): (exit
/// code, stdout).
fn cli(args: &[&str], config: &Path, db_env: &str, url: &str) -> (Option<i32>, String) {
    let o = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env(db_env, url)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

async fn wait_until(store: &Store, sql: &str, want: i64, what: &str) {
    let started = Instant::now();
    loop {
        let n = common::count(store, sql).await;
        if n == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: {n}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn post(port: u16, path: &str) {
    let (status, body) = http_request("POST", port, path, None).expect("the daemon answers");
    assert_eq!(status, 200, "{path}: {body}");
}

/// Waits until the daemon on `port` lists pipeline `name` in `/pipelines`.
fn wait_listed(port: u16, name: &str) {
    let started = Instant::now();
    let quoted = format!("\"{name}\"");
    while http_request("GET", port, "/pipelines", None)
        .is_none_or(|(_, body)| !body.contains(&quoted))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "daemon on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `oscarflow tap PIPELINE send --count N` against the daemon on `port`.
fn tap_sink(pipeline: &str, port: u16, count: u32) -> Child {
    Command::new(bin())
        .args(["tap", pipeline, "send", "--endpoint"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--count", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a tap to end (it must end 0); its records, and its raw output.
fn tap_records(tap: &mut Child) -> (Vec<serde_json::Value>, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(s) = tap.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the tap saw nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(tap.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    let records = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (records, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fax_queue_pipeline_dead_letters_taps_pauses_and_two_daemons_send_each_fax_once() {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("document");
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        let store = Store::open(&url).await.unwrap();
        let config = write_config(&emu, tmp.path(), &docs);
        let (port_a, port_b) = (free_port(), free_port());
        let mut a = daemon(&config, FAX_DB, &url, port_a);
        let mut b = daemon(&config, FAX_DB, &url, port_b);
        for port in [port_a, port_b] {
            wait_listed(port, "fax_out");
        }
        // `/pipelines` lists the fax pipeline with its source and sink.
        let (_, listed) = http_request("GET", port_a, "/pipelines", None).unwrap();
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let fax_out = listed["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "fax_out")
            .unwrap_or_else(|| panic!("{listed}"))
            .clone();
        assert_eq!(
            fax_out["components"],
            serde_json::json!(["outbox", "send"]),
            "{fax_out}"
        );

        // A tap at the sink, connected before any fax is queued.
        let mut tap = tap_sink("fax_out", port_a, 3);
        tokio::time::sleep(Duration::from_millis(1000)).await;

        // 40 faxes; fax 5 goes to a number that is not a phone number (queued while the
        // pipelines are paused, so that no daemon sends fax 5 before its number is broken).
        for port in [port_a, port_b] {
            post(port, "/pipelines/fax_out/pause");
        }
        queue_faxes(&store, &docs, 40).await;
        sqlx::query("UPDATE faxes SET destination = '555' WHERE id = 5")
            .execute(&store.pool)
            .await
            .unwrap();
        for port in [port_a, port_b] {
            post(port, "/pipelines/fax_out/resume");
        }
        wait_until(&store, "SELECT COUNT(*) FROM faxes WHERE status = 'COMPLETE'", 39, "faxes COMPLETE").await;
        wait_until(&store, "SELECT COUNT(*) FROM faxes WHERE status = 'ERROR'", 1, "faxes in ERROR").await;
        let reason: String = sqlx::query_scalar("SELECT statusString FROM faxes WHERE id = 5")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(reason.contains("invalid destination number"), "{reason}");

        // The dead letter is in the daemon's database, found through its config.
        let (code, listed) = cli(&["dlq", "list", "--json"], &config, FAX_DB, &url);
        assert_eq!(code, Some(0), "{listed}");
        let letters: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        assert_eq!(letters.len(), 1, "{listed}");
        assert_eq!(letters[0]["reason"], "invalid_phone");
        assert_eq!(letters[0]["pipeline"], "fax_out");
        assert_eq!(letters[0]["stage"], "send");
        let id = letters[0]["id"].as_str().unwrap().to_string();
        let (_, table) = cli(&["dlq", "list"], &config, FAX_DB, &url);
        assert!(table.contains(&id) && table.contains("1 dead letter(s)"), "{table}");

        // Paused, the daemons leave a newly queued fax alone; resumed, they send it.
        post(port_a, "/pipelines/fax_out/pause");
        post(port_b, "/pipelines/fax_out/pause");
        tokio::time::sleep(Duration::from_millis(500)).await; // a round in progress ends
        sqlx::query("INSERT INTO faxes (filename, faxline, destination, status, statusString, numPages, stamp, user, jobId, oscarUser, demographicNo) VALUES ('referral_1.pdf', ?, '6045552041', 'WAITING', '', 1, '2026-11-22 09:00:00', 'clinic', NULL, '999998', NULL)")
            .bind(LINE)
            .execute(&store.pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await; // ten poll intervals
        assert_eq!(
            common::count(&store, "SELECT COUNT(*) FROM oscarflow_fax_outbound WHERE fax_id = 41").await,
            0,
            "a paused pipeline claimed a fax"
        );
        assert_eq!(statuses(&store).await.get("WAITING"), Some(&1));
        post(port_a, "/pipelines/fax_out/resume");
        post(port_b, "/pipelines/fax_out/resume");
        wait_until(&store, "SELECT COUNT(*) FROM faxes WHERE status = 'COMPLETE'", 40, "faxes COMPLETE after resume").await;

        // The clinic fixes the number; `dlq retry` queues the fax again and a daemon sends it.
        sqlx::query("UPDATE faxes SET destination = '6045552005' WHERE id = 5")
            .execute(&store.pool)
            .await
            .unwrap();
        let (code, out) = cli(&["dlq", "retry", &id], &config, FAX_DB, &url);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("resolved (queued again)"), "{out}");
        wait_until(&store, "SELECT COUNT(*) FROM faxes WHERE status = 'COMPLETE'", 41, "faxes COMPLETE after the retry").await;
        let (_, open) = cli(&["dlq", "list"], &config, FAX_DB, &url);
        assert!(open.contains("0 dead letter(s)"), "{open}");

        // Read the tap last: a tap that connected late (a loaded machine) has seen the
        // re-driven job's outcomes by now.
        let (records, tapped) = tap_records(&mut tap);
        assert_eq!(records.len(), 3, "{tapped}");
        assert!(
            records.iter().all(|r| r["component"] == "send"),
            "{tapped}"
        );
        assert!(
            records.iter().any(|r| r["event"] == "outbound" && r["outcome"].is_string()),
            "{tapped}"
        );

        let logs = stop_daemons(&mut [&mut a, &mut b]);
        let sent = sent_once(&emu);
        let by_owner = faxes_per_owner(&store).await;
        println!(
            "fax pipeline, two daemons: {} faxes sent once each (fax 5 after its retry as {}), dead-lettered 1 then re-driven, tapped {} records, faxes per daemon {:?}",
            sent.len(),
            sent.keys().find(|k| k.contains("#5")).cloned().unwrap_or_default(),
            records.len(),
            by_owner
        );
        assert_eq!(sent.len(), 41, "40 faxes and the resend of fax 5, each once");
        assert!(sent.contains_key("OSCAR fax clinic#5/2"));
        assert!(!sent.contains_key("OSCAR fax clinic#5"), "fax 5 was not sent before its fix");
        for needle in [CLIENT_SECRET, JWT, "emu-at-", "6045552", "+1604555"] {
            assert!(!logs.contains(needle), "a secret, token or fax number is in the daemons' logs");
            assert!(!tapped.contains(needle), "a secret, token or fax number is in the tap");
        }
    })
    .await;
}

/// The reminder pipeline file (any hour, two days ahead) and `oscarflow.toml`, for daemons
/// on the database in `TEXT_DB`.
fn write_text_config(emu: &RcEmulator, dir: &Path) -> PathBuf {
    let pipeline = text_pipeline(
        emu,
        "TEXT",
        (100_000, "1m"),
        "oscar_appointments",
        "poll_interval = \"200ms\"\nbatch = 2\nsend_between = []\n\n[sources.texts.reminders]\nlead_time = \"48h\"\nmin_notice = \"1h\"\n",
    );
    daemon_files(dir, TEXT_DB, "texts.toml", &pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reminder_pipeline_dead_letters_taps_pauses_and_two_daemons_send_each_reminder_once() {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        emu.state
            .lock()
            .unwrap()
            .sms_fail_numbers
            .push("+16045557009".into());
        let store = Store::open(&url).await.unwrap();
        let config = write_text_config(&emu, tmp.path());
        let (port_a, port_b) = (free_port(), free_port());
        let mut a = daemon(&config, TEXT_DB, &url, port_a);
        let mut b = daemon(&config, TEXT_DB, &url, port_b);
        for port in [port_a, port_b] {
            wait_listed(port, "texts");
            // Paused before there is anything to remind.
            post(port, "/pipelines/texts/pause");
        }
        let (_, listed) = http_request("GET", port_b, "/pipelines", None).unwrap();
        assert!(
            listed.contains("\"components\":[\"texts\",\"send\"]"),
            "{listed}"
        );
        assert!(listed.contains("\"paused\":true"), "{listed}");

        let mut tap = tap_sink("texts", port_b, 2);
        tokio::time::sleep(Duration::from_millis(1000)).await;

        // Tomorrow's appointments: 501, 502 and 508 are due and reachable (508 a landline
        // whose delivery fails), 505's chart has no mobile number, the rest are opted out,
        // cancelled or too far ahead.
        seed_appointments(&store).await;
        tokio::time::sleep(Duration::from_millis(2000)).await; // ten poll intervals
        assert_eq!(
            common::count(&store, "SELECT COUNT(*) FROM oscarflow_sms_outbox").await,
            0,
            "a paused pipeline made reminders"
        );
        assert!(emu.state.lock().unwrap().sms.is_empty());
        for port in [port_a, port_b] {
            post(port, "/pipelines/texts/resume");
        }
        wait_until(&store, "SELECT COUNT(*) FROM oscarflow_sms_outbox WHERE state IN ('delivered', 'failed')", 4, "reminders settled").await;

        // 505's chart had no usable number: a dead letter, found through the config.
        let (code, listed) = cli(&["dlq", "list", "--json"], &config, TEXT_DB, &url);
        assert_eq!(code, Some(0), "{listed}");
        let letters: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        assert_eq!(letters.len(), 1, "{listed}");
        assert_eq!(letters[0]["reason"], "invalid_phone");
        assert_eq!(letters[0]["pipeline"], "texts");
        let id = letters[0]["id"].as_str().unwrap().to_string();

        // The clinic adds the mobile number; `dlq retry` queues the reminder again.
        sqlx::query("INSERT INTO demographicExt (demographic_no, provider_no, key_val, value, date_time, hidden) VALUES (1004, '100001', 'demo_cell', '604-555-7004', '2026-11-01 09:00:00', '0')")
            .execute(&store.pool)
            .await
            .unwrap();
        let (code, out) = cli(&["dlq", "retry", &id], &config, TEXT_DB, &url);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("resolved (queued again)"), "{out}");
        wait_until(&store, "SELECT COUNT(*) FROM oscarflow_sms_outbox WHERE dedupe_key = 'reminder:505' AND state = 'delivered'", 1, "the re-driven reminder delivered").await;

        // Read the tap last (see the fax test).
        let (records, tapped) = tap_records(&mut tap);
        assert_eq!(records.len(), 2, "{tapped}");
        assert!(records.iter().all(|r| r["component"] == "send"), "{tapped}");

        let logs = stop_daemons(&mut [&mut a, &mut b]);
        let sent = emu.state.lock().unwrap().sms.clone();
        let mut to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
        to.sort();
        let owners = common::count(&store, "SELECT COUNT(DISTINCT owner) FROM oscarflow_sms_outbox WHERE rc_message_id IS NOT NULL").await;
        println!(
            "reminder pipeline, two daemons: {} texts sent, one per due appointment and one after its dead letter was re-driven, duplicated 0; claimed by {owners} daemon(s); tapped {} records; states {:?}",
            sent.len(),
            records.len(),
            text_states(&store).await
        );
        assert_eq!(
            to,
            vec!["+16045557001", "+16045557001", "+16045557004", "+16045557009"],
            "each reminder once"
        );
        for needle in [CLIENT_SECRET, JWT, "emu-at-", "555-70", "+1604555", "ZZTEST"] {
            assert!(!logs.contains(needle), "a secret, token, number or name is in the daemons' logs");
            assert!(!tapped.contains(needle), "a secret, token, number or name is in the tap");
        }
    })
    .await;
}
