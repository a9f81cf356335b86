//! The RingCentral fax inbox (`ringcentral_fax` → `oscar_fax`) against the RingCentral
//! emulator (`tests/common/rc_emulator.rs`), using the real client and a pipeline file:
//! received faxes become OSCAR documents exactly as OSCAR's `FaxImporter` writes them, all
//! visible in OSCAR's unclaimed-document inbox query, each marked read only after its commit;
//! faxes already read in the app and faxes older than RingCentral's default 24 h window are
//! not missed; polling again files nothing twice; an outage mid-run loses nothing. The same
//! on a real OSCAR database (MariaDB, Open-O schema) with 200 faxes of about 1 MB.
//! No secret, token or phone number appears in the logs.

mod common;

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use oscarflow::config::load_str;
use oscarflow::store::Store;
use oscarflow::topology::{build, BuildOptions};

use common::rc_emulator::{pdf, RcEmulator, CLIENT_SECRET, JWT};
use common::sources::SourceEvents;

/// OSCAR's unclaimed-document inbox (IMPORT-SPEC §3.4, `InboxResultsDao` "unmatched").
const UNCLAIMED_INBOX: &str = "SELECT COUNT(DISTINCT plr.lab_no) FROM providerLabRouting plr, ctl_document cd WHERE plr.lab_type = 'DOC' AND cd.document_no = plr.lab_no AND cd.module_id = -1 AND plr.provider_no = '0' AND plr.status = 'N'";

/// The fax pipeline file, with per-test secret variables.
fn pipeline_toml(emu: &RcEmulator, dir: &Path, tag: &str) -> String {
    common::rc_emulator::fax_pipeline_toml(emu, dir, tag, &dir.join("spool"), "1h")
}

/// One poll of the pipeline (one-shot); the poll and settle events.
async fn poll_once(toml: &str, store: &Store) -> Arc<SourceEvents> {
    let cfg = load_str(Path::new("fax_inbox.toml"), toml).expect("valid pipeline file");
    let events = Arc::new(SourceEvents::default());
    let running = build(
        &cfg,
        store,
        BuildOptions {
            one_shot: true,
            observers: oscarflow::telemetry::Observers::none().with(events.clone()),
            ..Default::default()
        },
    )
    .expect("build");
    common::sources::wait(running, 300).await.unwrap();
    events
}

async fn count(store: &Store, sql: &str) -> i64 {
    common::count(store, sql).await
}

/// Every filed fax: one document with its file (same bytes as sent), its `ctl_document`,
/// queue link, unclaimed routing and fax log row, once per RingCentral message id.
async fn assert_filed_once(store: &Store, emu: &RcEmulator, docs: &Path, doctype: &str) {
    let faxes = emu.state.lock().unwrap().faxes.clone();
    let n = faxes.len() as i64;
    assert_eq!(count(store, "SELECT COUNT(*) FROM document").await, n);
    assert_eq!(
        count(store, "SELECT COUNT(DISTINCT message_id) FROM oscarflow_fax_inbound WHERE outcome = 'imported'").await,
        n
    );
    assert_eq!(
        count(store, UNCLAIMED_INBOX).await,
        n,
        "all in the unclaimed inbox"
    );
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM ctl_document WHERE module = 'demographic' AND module_id = -1 AND status = 'A'").await,
        n
    );
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM queue_document_link WHERE queue_id = 1 AND status = 'A'"
        )
        .await,
        n
    );
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM faxes WHERE status = 'RECEIVED' AND faxline = '6045550100' AND destination = '16045550199' AND user = '-1' AND jobId IS NULL").await,
        n
    );
    assert_eq!(
        count(store, &format!("SELECT COUNT(*) FROM document WHERE doctype = '{doctype}' AND docdesc = '{doctype}' AND doccreator = '-1' AND responsible = '-1' AND status = 'A' AND contenttype = 'application/pdf' AND program_id = -1 AND appointment_no = -1 AND restrictToProgram = 0 AND public1 = 0 AND abnormal = 0 AND number_of_pages = 3 AND reviewer IS NULL AND receivedDate IS NULL")).await,
        n,
        "every document row as FaxImporter writes it"
    );
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT i.message_id, d.docfilename FROM oscarflow_fax_inbound i JOIN document d ON d.document_no = i.document_no",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    for (id, name) in rows {
        assert_eq!(name.len(), 14 + format!("fax-{id}.pdf").len());
        assert!(
            name[..14].bytes().all(|b| b.is_ascii_digit()),
            "timestamp prefix"
        );
        assert!(name.ends_with(&format!("fax-{id}.pdf")));
        let on_disk = std::fs::read(docs.join(&name)).expect("the file is in DOCUMENT_DIR");
        let sent = faxes.iter().find(|f| f.id == id).unwrap();
        assert!(on_disk == sent.pdf, "the filed file has the fax's bytes");
    }
    let mut ids: Vec<i64> = faxes.iter().map(|f| f.id).collect();
    ids.sort();
    assert_eq!(emu.read_ids(), ids, "every fax marked read");
    // Each filed fax has one audit row naming every row and the file it wrote, and OSCAR's
    // `log` row of a new document.
    let audited = common::audit_rows(store, "write").await;
    assert_eq!(audited.len() as i64, n, "one audit row per filed fax");
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT d.document_no, d.docfilename, f.id FROM document d JOIN faxes f ON f.filename = d.docfilename",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(rows.len() as i64, n);
    for (doc, name, fax) in rows {
        let r = audited
            .iter()
            .find(|r| r.about.document_no == Some(doc))
            .unwrap_or_else(|| panic!("document {doc} audited"));
        assert_eq!(r.about.fax_id, Some(fax));
        assert_eq!(
            count(store, &format!("SELECT COUNT(*) FROM log WHERE action = 'add' AND content = 'document' AND contentId = '{doc}' AND provider_no = '-1'")).await,
            1,
            "OSCAR's log row of the new document"
        );
        assert_eq!(
            r.written.as_deref(),
            Some(format!("document {doc}; ctl_document demographic/-1/{doc}; queue_document_link 1/{doc}; providerLabRouting {doc}/0; faxes {fax}; log add/document/{doc}; DOCUMENT_DIR {name}").as_str())
        );
    }
    // Each filed fax is journaled with its document, committed with it, by its message id.
    assert_eq!(
        count(store, "SELECT COUNT(DISTINCT j.control_id) FROM oscarflow_journal j JOIN oscarflow_fax_inbound i ON i.document_no = j.document_no AND CAST(i.message_id AS CHAR) = j.control_id WHERE j.kind = 'fax_in' AND j.outcome = 'imported'").await,
        n,
        "every fax journaled with its document"
    );
}

fn assert_no_phi_or_secrets_in_logs() {
    common::logs::assert_absent(&[CLIENT_SECRET, JWT, "emu-at-"], "a secret or token");
    common::logs::assert_absent(&["6045550199", "16045550199"], "a sender's fax number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_faxes_become_unclaimed_oscar_documents_and_are_marked_read_after_commit() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let now = OffsetDateTime::now_utc();
    // A weekend-old fax (outside RingCentral's default 24 h window), one already opened in
    // the RingCentral app, and two new ones.
    emu.add_fax(101, now - time::Duration::days(3), 3, pdf(101, 20_000));
    emu.add_fax(102, now - time::Duration::hours(2), 3, pdf(102, 30_000));
    emu.add_fax(103, now - time::Duration::minutes(5), 3, pdf(103, 40_000));
    emu.add_fax(104, now - time::Duration::minutes(1), 3, pdf(104, 50_000));
    emu.state.lock().unwrap().faxes[1].read = true;
    let toml = pipeline_toml(&emu, tmp.path(), "BASIC");

    let events = poll_once(&toml, &store).await;
    assert_eq!(*events.failed.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*events.ok.lock().unwrap(), vec![4]);
    assert_filed_once(&store, &emu, &tmp.path().join("document"), "Received Fax").await;
    // Marked read only after the commit: each fax's PUT comes after its download.
    let records = emu.records();
    for id in [101, 102, 103, 104] {
        let download = records
            .iter()
            .position(|r| r.route.ends_with(&format!("/content/{id}")))
            .unwrap();
        let put = records
            .iter()
            .position(|r| r.method == "PUT" && r.route.ends_with(&format!("/{id}")));
        assert!(
            put.is_some_and(|p| p > download),
            "fax {id} marked read after filing"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("spool")).unwrap().count(),
        0,
        "the spool is empty"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_checkpoint WHERE pipeline = 'fax_inbox' AND source = 'fax'").await,
        1
    );

    // Polling again files nothing; a new fax is filed once.
    let events = poll_once(&toml, &store).await;
    assert_eq!(*events.ok.lock().unwrap(), vec![0]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM document").await, 4);
    emu.add_fax(105, OffsetDateTime::now_utc(), 3, pdf(105, 10_000));
    let events = poll_once(&toml, &store).await;
    assert_eq!(*events.ok.lock().unwrap(), vec![1]);
    assert_filed_once(&store, &emu, &tmp.path().join("document"), "Received Fax").await;
    // Later polls list from the saved watermark (minus the overlap), not from the last 24 h.
    let lists: Vec<_> = emu
        .records()
        .into_iter()
        .filter(|r| r.method == "GET" && r.route.ends_with("/message-store"))
        .collect();
    assert_eq!(lists.len(), 3);
    assert_no_phi_or_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_run_loses_nothing_and_files_nothing_twice() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let start = OffsetDateTime::now_utc() - time::Duration::hours(6);
    for i in 0..30 {
        emu.add_fax(
            1000 + i,
            start + time::Duration::minutes(i),
            3,
            pdf(1000 + i, 8_000),
        );
    }
    // RingCentral goes away right after the 10th download: connections are dropped.
    emu.state.lock().unwrap().down_after_downloads = Some(10);
    let toml = pipeline_toml(&emu, tmp.path(), "OUTAGE");

    let events = poll_once(&toml, &store).await;
    let failed = events.failed.lock().unwrap().clone();
    assert_eq!(
        failed.len(),
        1,
        "the round reports the faxes it did not file"
    );
    assert!(failed[0].contains("not filed this round"), "{failed:?}");
    let filed = count(&store, "SELECT COUNT(*) FROM document").await;
    assert_eq!(filed, 10, "what was downloaded was filed");
    assert!(
        emu.read_ids().len() <= 10,
        "only filed faxes are marked read (those settled before the outage)"
    );

    // RingCentral is back: everything arrives, once; the read marks are made up.
    emu.state.lock().unwrap().down = false;
    let events = poll_once(&toml, &store).await;
    assert_eq!(*events.failed.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*events.ok.lock().unwrap(), vec![20]);
    assert_filed_once(&store, &emu, &tmp.path().join("document"), "Received Fax").await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await,
        0
    );
    assert_no_phi_or_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_faxes_of_a_megabyte_land_in_a_real_oscar_database() {
    let _ = common::logs::captured();
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let emu = RcEmulator::start().await;
        emu.lift_limits();
        let start = OffsetDateTime::now_utc() - time::Duration::days(2);
        for i in 0..200 {
            emu.add_fax(
                5_000_000_000 + i,
                start + time::Duration::minutes(i),
                3,
                pdf(i, 1_000_000),
            );
        }
        let before = count(&store, "SELECT COUNT(*) FROM document").await;
        assert_eq!(before, 0, "the clinic database starts without documents");
        // The emulator goes down in the middle of the run.
        emu.state.lock().unwrap().down_after_downloads = Some(120);
        let toml = pipeline_toml(&emu, tmp.path(), "MARIADB");
        let events = poll_once(&toml, &store).await;
        assert_eq!(events.failed.lock().unwrap().len(), 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM document").await, 120);

        emu.state.lock().unwrap().down = false;
        let events = poll_once(&toml, &store).await;
        assert_eq!(*events.failed.lock().unwrap(), Vec::<String>::new());
        assert_eq!(*events.ok.lock().unwrap(), vec![80]);
        // The Open-O schema: "Received Fax" (OSCAR 19 would get "Recieved Fax").
        assert_filed_once(&store, &emu, &tmp.path().join("document"), "Received Fax").await;
        println!(
            "faxes: 200 sent, {} documents, {} in the unclaimed inbox, {} marked read",
            count(&store, "SELECT COUNT(*) FROM document").await,
            count(&store, UNCLAIMED_INBOX).await,
            emu.read_ids().len()
        );

        let events = poll_once(&toml, &store).await;
        assert_eq!(
            *events.ok.lock().unwrap(),
            vec![0],
            "polling again files nothing"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM document").await, 200);
        assert_no_phi_or_secrets_in_logs();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_and_server_errors_delay_the_inbox_but_lose_nothing() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    // Driven through the emulator's control API, as an integrator would.
    let http = reqwest::Client::new();
    let control = |route: &str| http.post(format!("{}/__emu/{route}", emu.url())).send();
    for _ in 0..12 {
        control("fax?pages=3&bytes=30000").await.unwrap();
    }
    let toml =
        pipeline_toml(&emu, tmp.path(), "FAULTS").replace("timeout = \"20s\"", "timeout = \"1s\"");
    // Three answers slower than the client's timeout, then two 500s. (Expired tokens are
    // covered by tests/ringcentral_client.rs.)
    control("slow?ms=1500&count=3").await.unwrap();
    control("fault?status=500&count=2").await.unwrap();
    let mut polls = 0;
    loop {
        polls += 1;
        poll_once(&toml, &store).await;
        let filed = count(&store, "SELECT COUNT(*) FROM document").await;
        if filed == 12 || polls == 6 {
            break;
        }
    }
    let sent: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{}/__emu/sent", emu.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    println!(
        "faults: 12 faxes filed after {polls} polls through 3 slow answers and 2 server errors; {} marked read",
        sent["inbound_read"]
    );
    assert_filed_once(&store, &emu, &tmp.path().join("document"), "Received Fax").await;
    assert!(
        emu.records().iter().filter(|r| r.status == 500).count() == 2,
        "the server errors happened"
    );
    assert_no_phi_or_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fax_that_cannot_be_filed_is_kept_as_a_dead_letter_and_left_unread() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(tmp.path()).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let bytes = pdf(301, 25_000);
    emu.add_fax(301, OffsetDateTime::now_utc(), 3, bytes.clone());
    // DOCUMENT_DIR is not a directory: every write fails, the retries run out.
    let toml = pipeline_toml(&emu, tmp.path(), "DEAD");
    std::fs::remove_dir_all(tmp.path().join("document")).unwrap();
    std::fs::write(tmp.path().join("document"), b"not a directory").unwrap();
    for _ in 0..2 {
        poll_once(&toml, &store).await;
    }
    let raw: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT reason, raw FROM oscarflow_dead_letter")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(raw.len(), 1, "one dead letter, not one per poll");
    assert_eq!(raw[0].0, "retries_exhausted");
    assert!(raw[0].1 == bytes, "the dead letter holds the fax's bytes");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM document").await, 0);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM oscarflow_fax_inbound WHERE message_id = 301 AND outcome = 'dead_lettered'").await,
        1
    );
    let downloads = emu
        .records()
        .iter()
        .filter(|r| r.route.ends_with("/content/301"))
        .count();
    assert_eq!(downloads, 1, "not fetched again once kept");
    assert!(
        emu.read_ids().is_empty(),
        "left unread for the staff to see"
    );
}
