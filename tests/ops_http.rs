//! The daemon's HTTP endpoint: `/healthz` answers, `/readyz` reports the database, `/metrics`
//! exposes the pipeline metrics in Prometheus format under their `oscarflow_…` names; off
//! loopback the daemon refuses to start without a bearer token, and with one every request
//! without it is refused.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, variant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// `oscarflow run` on a watched folder with the endpoint on `listen`.
fn daemon(dir: &Path, listen: &str, env: &[(&str, &str)], config: &str) -> Child {
    let inbox = dir.join("inbox");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("labs.toml"),
        format!(
            "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nmode = \"watch\"\nafter = \"delete\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
            inbox.display()
        ),
    )
    .unwrap();
    let cfg = dir.join("oscarflow.toml");
    std::fs::write(&cfg, config).unwrap();
    Command::new(bin())
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--pipelines",
            pipelines.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--listen",
            listen,
        ])
        .env_remove("OSCARFLOW_DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) -> (Option<i32>, String) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_readiness_and_prometheus_metrics_are_served_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = daemon(tmp.path(), &format!("127.0.0.1:{port}"), &[], "");
    let (status, body) = wait_for(|| get(port, "/healthz", None));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    for i in 0..3 {
        std::fs::write(
            tmp.path().join(format!("inbox/lab{i}.hl7")),
            variant("fixtures/hl7/pathl7/multi_message.hl7", i),
        )
        .unwrap();
    }
    let metrics = wait_for(|| {
        let (_, m) = get(port, "/metrics", None)?;
        m.contains("oscarflow_inputs_released_total").then_some(m)
    });
    let (ready, readiness) = get(port, "/readyz", None).unwrap();
    let (code, _) = stop(child);
    println!(
        "ops endpoint: /healthz 200, /readyz {ready}, /metrics {} lines",
        metrics.lines().count()
    );
    assert_eq!(code, Some(0));
    assert_eq!(ready, 200, "{readiness}");
    assert!(readiness.contains("\"ready\":true"), "{readiness}");
    for name in [
        "oscarflow_inputs_received_total",
        "oscarflow_messages_imported_total",
        "oscarflow_inputs_released_total",
        "oscarflow_import_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics.contains("pipeline=\"labs\""),
        "metrics are labelled by pipeline"
    );
    assert!(!metrics.contains("TESTPATIENT") && !metrics.contains("9000000011"));
}

#[test]
fn off_loopback_the_endpoint_needs_a_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // No token configured: the daemon refuses to start.
    let child = daemon(tmp.path(), &format!("0.0.0.0:{port}"), &[], "");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bearer token"));
    // With a token: requests without it are refused, with it answered.
    let child = daemon(
        tmp.path(),
        &format!("0.0.0.0:{port}"),
        &[("OSCARFLOW_T_HTTP_TOKEN", "s3cret-t0ken")],
        "http_token_env = \"OSCARFLOW_T_HTTP_TOKEN\"\n",
    );
    let (status, _) = wait_for(|| get(port, "/healthz", None));
    assert_eq!(status, 401);
    assert_eq!(get(port, "/healthz", Some("s3cret-t0ken")).unwrap().0, 200);
    assert_eq!(get(port, "/metrics", Some("wrong")).unwrap().0, 401);
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0));
    assert!(!logs.contains("s3cret-t0ken"), "the token is not logged");
}

/// A TCP gate in front of MariaDB: open, it relays; closed, it cuts every relayed connection
/// and drops new ones (the database "goes away" for the daemon).
struct Gate {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    async fn start(target: std::net::SocketAddr) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { port, open }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_database_goes_away_and_ready_when_it_returns() {
    common::mariadb::with_test_db(|url| async move {
        let parsed = url::Url::parse(&url).unwrap();
        let target: std::net::SocketAddr = format!(
            "{}:{}",
            parsed.host_str().unwrap(),
            parsed.port().unwrap_or(3306)
        )
        .parse()
        .unwrap();
        let gate = Gate::start(target).await;
        let mut via_gate = parsed.clone();
        via_gate.set_port(Some(gate.port)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = daemon(
            tmp.path(),
            &format!("127.0.0.1:{port}"),
            &[("OSCARFLOW_T_READY_DB", via_gate.as_str())],
            "database_url_env = \"OSCARFLOW_T_READY_DB\"\n",
        );
        let ready = move |want: u16| {
            wait_for(|| {
                let (s, body) = get(port, "/readyz", None)?;
                (s == want).then_some(body)
            })
        };
        let up = tokio::task::spawn_blocking(move || ready(200))
            .await
            .unwrap();
        gate.open.send(false).unwrap();
        let down = tokio::task::spawn_blocking(move || ready(503))
            .await
            .unwrap();
        gate.open.send(true).unwrap();
        let back = tokio::task::spawn_blocking(move || ready(200))
            .await
            .unwrap();
        println!("readyz: {} → {} → {}", up.trim(), down.trim(), back.trim());
        assert!(down.contains("database 0 unreachable"), "{down}");
        let (code, _) = stop(child);
        assert_eq!(code, Some(0));
    })
    .await;
}
