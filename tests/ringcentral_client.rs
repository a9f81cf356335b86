//! The RingCentral client against the emulator (`tests/common/rc_emulator.rs`): one login
//! for many calls, renewal before expiry, one re-login on 401, `Retry-After` honoured under
//! a 429 storm with nothing lost, the client-side window keeping under the group limit,
//! 5xx retried, 4xx mapped to data errors, bad credentials fatal — and no token, secret or
//! JWT in the logs (captured and checked).

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use oscarflow::error::ErrorKind;
use oscarflow::ringcentral::client::GroupLimit;
use oscarflow::ringcentral::{Body, Group, Limits, RcClient, RcConfig};

use common::rc_emulator::{RcEmulator, CLIENT_ID, CLIENT_SECRET, JWT};

const ME: &str = "/restapi/v1.0/account/~/extension/~";

fn assert_no_secrets_in_logs() {
    common::logs::assert_absent(&[CLIENT_SECRET, JWT, "emu-at-"], "a secret or token");
}

fn config(emu: &RcEmulator, tag: &str) -> RcConfig {
    let v = |n: &str| format!("OSCARFLOW_T_RC_{tag}_{n}");
    std::env::set_var(v("ID"), CLIENT_ID);
    std::env::set_var(v("SECRET"), CLIENT_SECRET);
    std::env::set_var(v("JWT"), JWT);
    RcConfig {
        server: emu.url(),
        client_id_env: Spanned::new(0..0, v("ID")),
        client_secret_env: Spanned::new(0..0, v("SECRET")),
        jwt_env: Spanned::new(0..0, v("JWT")),
        limits: Limits::default(),
        refresh_margin: Duration::from_secs(300),
        timeout: Duration::from_secs(10),
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        default_retry_after: Duration::from_secs(1),
    }
}

async fn me(c: &RcClient) -> Result<i64, oscarflow::ringcentral::RcError> {
    let r = c
        .call(Group::Light, reqwest::Method::GET, ME, Body::None)
        .await?;
    let v: serde_json::Value = r.json()?;
    Ok(v["id"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_serves_many_calls_and_the_token_is_renewed_before_it_expires() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    let c = RcClient::new(config(&emu, "REUSE")).unwrap();
    for _ in 0..20 {
        assert_eq!(me(&c).await.unwrap(), 230919004);
    }
    assert_eq!(c.logins(), 1, "one login for 20 calls");
    assert_eq!(emu.state.lock().unwrap().logins, 1);

    // A 2 s token with a 300 s margin: renewed at half its life, before any 401.
    emu.state.lock().unwrap().token_ttl_secs = 2;
    let c = RcClient::new(config(&emu, "RENEW")).unwrap();
    me(&c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    me(&c).await.unwrap();
    assert_eq!(c.logins(), 2, "renewed proactively");
    assert!(
        emu.records().iter().all(|r| r.status != 401),
        "never ran into an expired token"
    );
    assert_no_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_logs_in_again_once_and_retries_once() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    let c = RcClient::new(config(&emu, "RELOGIN")).unwrap();
    me(&c).await.unwrap();
    emu.expire_all_tokens();
    assert_eq!(me(&c).await.unwrap(), 230919004);
    assert_eq!(c.logins(), 2);
    let statuses: Vec<u16> = emu
        .records()
        .iter()
        .filter(|r| r.route == ME)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![200, 401, 200]);
    assert_no_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_with_retry_after_and_nothing_is_lost() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    {
        let mut s = emu.state.lock().unwrap();
        s.forced.extend([429, 429, 429]);
        s.forced_retry_after = 1;
    }
    let c = RcClient::new(config(&emu, "STORM")).unwrap();
    assert_eq!(
        me(&c).await.unwrap(),
        230919004,
        "the call succeeds after the storm"
    );
    let calls: Vec<_> = emu
        .records()
        .into_iter()
        .filter(|r| r.route == ME)
        .collect();
    assert_eq!(
        calls.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 429, 429, 200]
    );
    for pair in calls.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(950),
            "no request in the group before Retry-After passed"
        );
    }
    assert_no_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_side_window_keeps_requests_under_the_group_limit() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    let limit = GroupLimit {
        requests: 5,
        window: Duration::from_secs(1),
    };
    emu.state.lock().unwrap().limits.insert(
        "light",
        common::rc_emulator::GroupLimit {
            requests: 5,
            window: Duration::from_secs(1),
            penalty: Duration::from_secs(1),
        },
    );
    let mut cfg = config(&emu, "WINDOW");
    cfg.limits.light = limit;
    let c = Arc::new(RcClient::new(cfg).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { me(&c).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 230919004);
    }
    let calls: Vec<_> = emu
        .records()
        .into_iter()
        .filter(|r| r.route == ME)
        .collect();
    assert_eq!(
        calls.len(),
        12,
        "no 429, no retry: {:?}",
        calls.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(calls.iter().all(|r| r.status == 200));
    for (i, r) in calls.iter().enumerate() {
        let in_window = calls[i..]
            .iter()
            .filter(|o| o.at.duration_since(r.at) < Duration::from_millis(1000))
            .count();
        assert!(in_window <= 5, "{in_window} requests within one window");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_client_errors_are_mapped() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    emu.state.lock().unwrap().forced.extend([500, 502]);
    let c = RcClient::new(config(&emu, "ERRORS")).unwrap();
    assert_eq!(me(&c).await.unwrap(), 230919004, "two 5xx, then success");
    emu.state.lock().unwrap().forced.extend([400]);
    let e = me(&c).await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.code.as_deref()),
        (ErrorKind::Data, Some(400), Some("CMN-101"))
    );
    emu.state
        .lock()
        .unwrap()
        .forced
        .extend([500, 500, 500, 500]);
    let e = me(&c).await.unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Transient,
        "5xx past the attempts is transient"
    );
    let e = c
        .call(
            Group::Light,
            reqwest::Method::GET,
            "/restapi/v1.0/nowhere",
            Body::None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (ErrorKind::Data, Some("CMN-102"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_fatal_error_without_secrets() {
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    let cfg = config(&emu, "BADJWT");
    std::env::set_var(cfg.jwt_env.get_ref(), "not-the-jwt");
    let c = RcClient::new(cfg).unwrap();
    let e = me(&c).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert_eq!(e.code.as_deref(), Some("OAU-140"));
    assert!(
        e.detail.starts_with("login refused (HTTP 400 OAU-140)"),
        "{}",
        e.detail
    );
    assert!(!e.detail.contains("not-the-jwt") && !e.detail.contains(CLIENT_SECRET));
    assert_eq!(emu.state.lock().unwrap().logins, 0);
    assert_no_secrets_in_logs();
}

/// Inbound faxes are listed from a watermark across every page, including faxes someone
/// already opened (Read) and faxes older than the server's default 24-hour window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_faxes_are_listed_from_the_watermark_across_every_page() {
    use common::rc_emulator::Fax;
    use oscarflow::ringcentral::messages::list_inbound_faxes;
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    let now = time::OffsetDateTime::now_utc();
    {
        let mut s = emu.state.lock().unwrap();
        for i in 0..250i64 {
            // Spread over the last 3 days: a weekend outage must not lose the oldest.
            let t = now - time::Duration::minutes(17 * i);
            s.faxes.push(Fax {
                id: 9_000_000_000 + i,
                creation_time: t
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
                read: i % 7 == 0,
                pages: 1,
                from: "+16045550199".into(),
                pdf: bytes::Bytes::from_static(b"%PDF-1.4"),
            });
        }
        // One fax before the watermark.
        s.faxes.push(Fax {
            id: 1,
            creation_time: "2020-01-01T00:00:00.000Z".into(),
            read: false,
            pages: 1,
            from: "+16045550199".into(),
            pdf: bytes::Bytes::new(),
        });
    }
    let c = RcClient::new(config(&emu, "LIST")).unwrap();
    let watermark = (now - time::Duration::days(4))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let got = list_inbound_faxes(&c, &watermark, 100).await.unwrap();
    let mut ids: Vec<i64> = got.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 250, "every fax since the watermark");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no fax twice");
    assert!(!ids.contains(&1), "nothing before the watermark");
    assert!(
        got.iter().any(|r| r.read_status == "Read"),
        "read faxes are listed too"
    );
    assert!(got
        .iter()
        .all(|r| r.attachments.len() == 1 && r.attachments[0].uri.contains("/content/")));
    let pages = emu
        .records()
        .iter()
        .filter(|r| r.route.ends_with("/message-store"))
        .count();
    assert_eq!(pages, 3, "three pages of 100");
}

/// A fax's attachment is streamed to disk byte for byte, and the fax can be marked read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_streams_to_disk_and_the_fax_is_marked_read() {
    use common::rc_emulator::Fax;
    use oscarflow::ringcentral::messages::{download_attachment, list_inbound_faxes, mark_read};
    let _ = common::logs::captured();
    let emu = RcEmulator::start().await;
    // A 3 MB "PDF" with varied bytes.
    let pdf: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    emu.state.lock().unwrap().faxes.push(Fax {
        id: 42,
        creation_time: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        read: false,
        pages: 12,
        from: "+16045550142".into(),
        pdf: bytes::Bytes::from(pdf.clone()),
    });
    let c = RcClient::new(config(&emu, "DOWNLOAD")).unwrap();
    let from = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let faxes = list_inbound_faxes(&c, &from, 100).await.unwrap();
    assert_eq!(faxes.len(), 1);
    assert_eq!(faxes[0].attachments[0].size, Some(3_000_000));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("42.pdf");
    let n = download_attachment(&c, &faxes[0].attachments[0], &dest)
        .await
        .unwrap();
    assert_eq!(n, 3_000_000);
    assert!(std::fs::read(&dest).unwrap() == pdf, "identical bytes");
    assert!(!tmp.path().join("42.part").exists());
    // A missing attachment: a data error, and no file.
    let mut gone = faxes[0].attachments[0].clone();
    gone.uri = gone.uri.replace("/content/42", "/content/43");
    let e = download_attachment(&c, &gone, &tmp.path().join("43.pdf"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (ErrorKind::Data, Some("CMN-102"))
    );
    assert!(!tmp.path().join("43.pdf").exists() && !tmp.path().join("43.part").exists());
    mark_read(&c, 42).await.unwrap();
    assert!(emu.state.lock().unwrap().faxes[0].read);
    let groups: Vec<&str> = emu
        .records()
        .iter()
        .filter(|r| r.route.contains("/message-store/"))
        .map(|r| r.group)
        .collect();
    assert!(
        groups.iter().all(|g| *g == "medium"),
        "downloads and updates are Medium: {groups:?}"
    );
    assert_no_secrets_in_logs();
}
