//! The raw archive against a real local S3-compatible server (moto, see `common::s3`): every
//! raw input of a replay is archived byte for byte under `<pipeline>/<date>/<sha256>`; SSE is
//! requested; a spooled file is streamed; and an archive outage makes the source keep and
//! re-deliver its inputs instead of losing them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::s3::{moto_server_bin, MotoServer, KEY_ID, SECRET};
use common::{count, repo, seeded_store};
use oscarflow::archive::{ArchiveBody, RawArchive};
use oscarflow::envelope::sha256;
use oscarflow::sources::folder::{AfterCommit, FolderConfig, FolderMode};
use oscarflow::sources::SourceConfig;
use oscarflow::topology::{build, BuildOptions};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The secret is in no log line at all; the access key id is in none of oscarflow's own
/// lines. (The AWS SDK's own debug lines print the key id, never the secret; the daemon's
/// default filter is `info`, which leaves them out.)
fn assert_no_credentials_logged() {
    common::logs::assert_absent(&[SECRET], "the archive's secret access key");
    let ours: Vec<String> = common::logs::text()
        .lines()
        .filter(|l| l.contains("\"target\":\"oscarflow"))
        .map(String::from)
        .collect();
    assert!(!ours.is_empty(), "oscarflow logged something");
    assert!(
        ours.iter().all(|l| !l.contains(KEY_ID)),
        "the archive's access key id is in oscarflow's logs"
    );
}

/// `YYYY/MM/DD` of a UTC time.
fn day(t: time::OffsetDateTime) -> String {
    format!("{:04}/{:02}/{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The archive's objects must be exactly `inputs` (by hash), byte for byte, under
/// `<pipeline>/<day>/<sha>` for a day between `from` and `to`. Returns the object count.
fn assert_archived(
    objects: &[(String, Vec<u8>)],
    inputs: &BTreeMap<String, Vec<u8>>,
    pipeline: &str,
    days: &[String],
) -> usize {
    let mut identical = 0;
    let mut by_hash = BTreeMap::new();
    for (key, body) in objects {
        let parts: Vec<&str> = key.rsplitn(2, '/').collect();
        let (hash, prefix) = (parts[0], parts[1]);
        assert!(
            days.iter().any(|d| prefix == format!("{pipeline}/{d}")),
            "key {key} is not {pipeline}/<today>/<sha>"
        );
        assert_eq!(
            hex::encode(sha256(body)),
            hash,
            "object {key} holds its hash"
        );
        let input = inputs
            .get(hash)
            .unwrap_or_else(|| panic!("object {key} is no input"));
        assert_eq!(input, body, "object {key} equals its input");
        identical += 1;
        by_hash.insert(hash.to_string(), ());
    }
    for h in inputs.keys() {
        assert!(by_hash.contains_key(h), "input {h} was not archived");
    }
    assert_eq!(objects.len(), inputs.len(), "one object per distinct input");
    identical
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_the_hl7_fixtures_archives_every_raw_input_byte_identical_under_pipeline_date_hash(
) {
    let Some(bin) = moto_server_bin() else {
        return;
    };
    let server = MotoServer::running(bin, "raw-archive").await;
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let fixtures = repo().join("fixtures/hl7");
    let mut cfg = server.pipeline("");
    cfg.sources[0].config = SourceConfig::Folder(FolderConfig::replay(fixtures.clone()));

    let before = time::OffsetDateTime::now_utc();
    let mut running = build(
        &cfg,
        &store,
        BuildOptions {
            one_shot: true,
            ..Default::default()
        },
    )
    .expect("build");
    running.wait().await.expect("replay ran");
    let after = time::OffsetDateTime::now_utc();

    let files = files_under(&fixtures);
    let inputs: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            (hex::encode(sha256(&b)), b)
        })
        .collect();
    let objects = server.objects().await;
    let identical = assert_archived(&objects, &inputs, &cfg.name, &[day(before), day(after)]);
    let labs = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    assert!(labs > 0, "the replay imported labs too");
    println!(
        "archive: {} inputs ({} distinct), {} objects, {identical} byte-identical; {labs} lab rows",
        files.len(),
        inputs.len(),
        objects.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_aes256_is_requested_and_reported_by_the_stored_object() {
    let Some(bin) = moto_server_bin() else {
        return;
    };
    let server = MotoServer::running(bin, "raw-archive-sse").await;
    let archive = server.archive("server_side_encryption = \"AES256\"");
    let bytes = b"MSH|^~\\&|SSE|TEST\r".to_vec();
    let sha = hex::encode(sha256(&bytes));
    let key = archive
        .put(
            "sse",
            time::OffsetDateTime::now_utc(),
            &sha,
            ArchiveBody::Bytes(bytes.into()),
        )
        .await
        .expect("put");
    let head = archive
        .client()
        .head_object()
        .bucket("raw-archive-sse")
        .key(&key)
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    println!("sse: {key} reports {:?}", head.server_side_encryption());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_fax_is_archived_streaming_from_its_file_and_archiving_it_again_keeps_one_object()
{
    let Some(bin) = moto_server_bin() else {
        return;
    };
    let server = MotoServer::running(bin, "raw-archive-fax").await;
    let archive = server.archive("");
    let tmp = tempfile::tempdir().unwrap();
    // A 3 MiB "PDF" with varied bytes.
    let mut body = b"%PDF-1.4\n".to_vec();
    body.extend((0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let path = tmp.path().join("123.fax");
    std::fs::write(&path, &body).unwrap();
    let sha = hex::encode(sha256(&body));
    let t = time::macros::datetime!(2026-03-01 23:30 -8);
    let file = || ArchiveBody::File {
        path: path.clone(),
        size: body.len() as u64,
    };
    let key = archive.put("fax", t, &sha, file()).await.expect("put");
    assert_eq!(key, format!("fax/2026/03/02/{sha}"));
    let again = archive.put("fax", t, &sha, file()).await.expect("re-put");
    assert_eq!(again, key);
    let objects = server.objects().await;
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].1, body, "the object equals the spooled file");

    // A spooled file that is gone is an error naming the key, not a panic.
    let gone = ArchiveBody::File {
        path: tmp.path().join("missing.fax"),
        size: 10,
    };
    let other = hex::encode(sha256(b"other"));
    let e = archive.put("fax", t, &other, gone).await.unwrap_err();
    assert!(e.to_string().contains(&other), "{e}");
    println!("fax: {} bytes streamed to {key}", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_errors_name_bucket_key_and_cause_but_never_credentials() {
    let Some(bin) = moto_server_bin() else {
        return;
    };
    common::logs::captured();
    // No server on the port: connection refused on every attempt.
    let server = MotoServer::reserve(bin, "raw-archive-down");
    let archive = server.archive(
        "timeout = \"2s\"\n[archive.retry]\nmax_attempts = 3\ninitial_backoff = \"20ms\"\nmax_backoff = \"50ms\"",
    );
    let sha = hex::encode(sha256(b"x"));
    let started = Instant::now();
    let e = archive
        .put(
            "labs",
            time::OffsetDateTime::now_utc(),
            &sha,
            ArchiveBody::Bytes(bytes::Bytes::from_static(b"x")),
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(e.kind, oscarflow::error::ErrorKind::Transient);
    assert!(text.contains("s3://raw-archive-down/labs/"), "{text}");
    assert!(text.contains(&sha), "{text}");
    assert!(text.contains("after 3 attempt(s)"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains(KEY_ID));
    assert!(started.elapsed() < Duration::from_secs(20));

    // A missing credential variable is named; nothing else is read.
    let mut cfg = server.config("");
    cfg.secret_access_key_env = serde_spanned::Spanned::new(0..0, "OSCARFLOW_TEST_UNSET".into());
    std::env::remove_var("OSCARFLOW_TEST_UNSET");
    let e = RawArchive::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("`OSCARFLOW_TEST_UNSET` is not set"), "{e}");
    assert!(!e.contains(KEY_ID));
    assert_no_credentials_logged();
    println!("error text: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_archive_is_down_nothing_is_imported_or_released_and_once_it_is_back_everything_is(
) {
    let Some(bin) = moto_server_bin() else {
        return;
    };
    common::logs::captured();
    let mut server = MotoServer::reserve(bin, "raw-archive-outage");
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path()).await;
    let inbox = tmp.path().join("inbox");
    let processed = tmp.path().join("processed");
    std::fs::create_dir_all(&inbox).unwrap();
    let picks = [
        "pathl7/matched_chem.hl7",
        "pathl7/multi_message.hl7",
        "versions/accession_26-200000001_1_prelim.hl7",
        "versions/accession_26-200000001_2_final.hl7",
        "versions/accession_26-200000001_3_corrected.hl7",
    ];
    let mut inputs = BTreeMap::new();
    for (i, rel) in picks.iter().enumerate() {
        let b = std::fs::read(repo().join("fixtures/hl7").join(rel)).unwrap();
        std::fs::write(inbox.join(format!("{i}.hl7")), &b).unwrap();
        inputs.insert(hex::encode(sha256(&b)), b);
    }
    let mut cfg = server.pipeline(
        "timeout = \"2s\"\n[archive.retry]\nmax_attempts = 2\ninitial_backoff = \"20ms\"\nmax_backoff = \"50ms\"",
    );
    cfg.sources[0].config = SourceConfig::Folder(FolderConfig {
        mode: FolderMode::Watch,
        recursive: false,
        after: AfterCommit::Move,
        processed_dir: Some(processed.clone()),
        min_age: Duration::ZERO,
        poll_interval: Duration::from_millis(50),
        retry_after: Duration::from_millis(200),
        ..FolderConfig::replay(inbox.clone())
    });
    let before = time::OffsetDateTime::now_utc();
    let mut running = build(&cfg, &store, BuildOptions::default()).expect("build");

    // Down: every file is read and retried, none archived, none sent, none released.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_inbox = files_under(&inbox).len();
    let labs_down = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    let dead_down = count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
    assert_eq!(in_inbox, picks.len(), "every file stays in the inbox");
    assert!(!processed.exists() || files_under(&processed).is_empty());
    assert_eq!(labs_down, 0, "nothing imported while the archive is down");
    assert_eq!(dead_down, 0, "an archive outage dead-letters nothing");
    let refusals = common::logs::text().matches("Input not archived").count();
    assert!(
        refusals >= picks.len() * 2,
        "each file was tried and retried: {refusals}"
    );

    // Back: the same files are archived, imported and released.
    server.start().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_under(&inbox).is_empty() {
        assert!(
            Instant::now() < deadline,
            "files still in the inbox after the archive came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown(Duration::from_secs(10)).await;
    let after = time::OffsetDateTime::now_utc();
    let moved = files_under(&processed).len();
    let labs = count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await;
    let dead = count(&store, "SELECT COUNT(*) FROM oscarflow_dead_letter").await;
    assert_eq!(moved, picks.len(), "every file released after commit");
    assert_eq!(dead, 0);
    // multi_message.hl7 holds three messages; the others one each.
    assert_eq!(
        labs as usize,
        picks.len() + 2,
        "every message imported once"
    );
    let objects = server.objects().await;
    let identical = assert_archived(&objects, &inputs, &cfg.name, &[day(before), day(after)]);
    assert_no_credentials_logged();
    println!(
        "outage: {} files, down: {in_inbox} kept in the inbox, {labs_down} imported, {dead_down} dead letters, {refusals} refused sends; back: {moved} released, {labs} lab rows, {dead} dead letters, {} objects, {identical} byte-identical",
        picks.len(),
        objects.len()
    );
}
