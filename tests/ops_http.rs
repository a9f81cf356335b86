//! The daemon's HTTP endpoint: `/healthz` answers, `/readyz` reports the database, `/metrics`
//! exposes the pipeline metrics in Prometheus format under their `oscarflow_…` names; off
//! loopback the daemon refuses to start without a bearer token, and with one every request
//! without it is refused. 1,400 idle connections do not stop `/healthz` (nor the MLLP
//! listener) from answering; a connection that never finishes its request head, or idles
//! after an answer, is closed after `http_header_timeout`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, http_request as request, variant};

fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    request("GET", port, path, token)
}

/// `oscarflow run` on a watched folder with the endpoint on `listen`.
fn daemon(dir: &Path, listen: &str, env: &[(&str, &str)], config: &str) -> Child {
    daemon_command(dir, listen, env, config).spawn().unwrap()
}

/// The command [`daemon`] spawns.
fn daemon_command(dir: &Path, listen: &str, env: &[(&str, &str)], config: &str) -> Command {
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
    let mut cmd = Command::new(bin());
    cmd.args([
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
    .stderr(Stdio::piped());
    cmd
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
    std::fs::write(tmp.path().join("inbox/junk.hl7"), b"not HL7 at all\r").unwrap();
    let metrics = wait_for(|| {
        let (_, m) = get(port, "/metrics", None)?;
        (m.contains("oscarflow_inputs_released_total")
            && m.contains("oscarflow_messages_dead_lettered_total"))
        .then_some(m)
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
        "oscarflow_stage_duration_seconds_bucket",
        "oscarflow_oldest_unacked_age_seconds",
        "oscarflow_inputs_in_flight_count",
        "oscarflow_envelopes_queued_count",
        "oscarflow_pipeline_up_info",
        "oscarflow_messages_dead_lettered_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics.contains("pipeline=\"labs\""),
        "metrics are labelled by pipeline"
    );
    assert!(!metrics.contains("TESTPATIENT") && !metrics.contains("9000000011"));
    // No chart exists in this store: every lab is unmatched, counted by its reason.
    let unmatched = metrics
        .lines()
        .find(|l| l.starts_with("oscarflow_labs_unmatched_total{"))
        .unwrap_or_else(|| panic!("no unmatched count: {metrics}"));
    assert!(
        unmatched.contains("reason=\"not_found\"") && unmatched.contains("lab_type=\"PATHL7\""),
        "{unmatched}"
    );
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
        let gate = common::gate::Gate::start(target, true).await;
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

fn post(port: u16, path: &str) -> Option<(u16, String)> {
    request("POST", port, path, None)
}

/// A pipeline file reading the folder `inbox`, named `name`.
fn folder_pipeline(name: &str, inbox: &Path) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nmode = \"watch\"\nafter = \"delete\"\nmin_age = \"0s\"\npoll_interval = \"100ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
        inbox.display()
    )
}

/// `/pipelines` as JSON.
fn pipelines(port: u16) -> serde_json::Value {
    let (status, body) = get(port, "/pipelines", None).unwrap_or_default();
    if status != 200 {
        return serde_json::Value::Null; // not listening yet
    }
    serde_json::from_str(&body).unwrap()
}

fn pipeline(port: u16, name: &str) -> Option<serde_json::Value> {
    pipelines(port)["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Drops a lab into `dir` and waits until the daemon took it (committed and deleted it).
fn lab_is_taken(dir: &Path, i: usize) -> bool {
    let f = common::drop_file(
        dir,
        &format!("lab{i}.hl7"),
        variant("fixtures/hl7/pathl7/multi_message.hl7", i),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if !f.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Stays for `secs`: the daemon did not take it.
fn lab_stays(dir: &Path, i: usize, secs: u64) -> bool {
    let f = common::drop_file(
        dir,
        &format!("lab{i}.hl7"),
        variant("fixtures/hl7/pathl7/multi_message.hl7", i),
    );
    std::thread::sleep(Duration::from_secs(secs));
    f.exists()
}

/// A pipeline file added beside a running one that reads the same folder is not taken:
/// two consumers of one inbox would release each other's files. It is listed under
/// `rejected` with the reason; the running pipeline goes on.
#[test]
fn a_second_pipeline_on_a_running_pipelines_folder_is_rejected_and_the_first_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let child = daemon(dir, &format!("127.0.0.1:{port}"), &[], "");
    wait_for(|| pipeline(port, "labs"));
    std::fs::write(
        dir.join("pipelines/second.toml"),
        folder_pipeline("second", &dir.join("inbox")),
    )
    .unwrap();
    let rejected = wait_for(|| {
        let r = pipelines(port)["rejected"].as_array()?.clone();
        (!r.is_empty()).then_some(r)
    });
    let names: Vec<String> = pipelines(port)["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let took = lab_is_taken(&dir.join("inbox"), 1);
    let (code, _) = stop(child);
    assert_eq!(code, Some(0));
    let problem = rejected[0]["problem"].as_str().unwrap_or_default();
    println!("conflicting pipeline rejected: {problem}");
    assert!(rejected[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("second.toml"));
    assert!(
        problem.contains("reads the same folder as labs.sources.inbox"),
        "{problem}"
    );
    assert_eq!(names, vec!["labs".to_string()]);
    assert!(took, "the running pipeline still imports");
}

#[test]
fn editing_a_pipeline_file_restarts_only_that_pipeline_and_a_broken_edit_keeps_the_running_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (a1, a2, b) = (dir.join("a1"), dir.join("a2"), dir.join("b"));
    for d in [&a1, &a2, &b] {
        std::fs::create_dir_all(d).unwrap();
    }
    let port = free_port();
    let child = daemon(dir, &format!("127.0.0.1:{port}"), &[], "");
    let pdir = dir.join("pipelines");
    std::fs::remove_file(pdir.join("labs.toml")).unwrap();
    std::fs::write(pdir.join("b.toml"), folder_pipeline("b", &b)).unwrap();
    std::fs::write(pdir.join("a.toml"), folder_pipeline("a", &a1)).unwrap();
    // The daemon started with `labs` only; the two new files are picked up live and the
    // removed one stops.
    let (a_started, b_started) = wait_for(|| {
        let a = pipeline(port, "a")?;
        let b = pipeline(port, "b")?;
        pipeline(port, "labs").is_none().then_some(())?;
        Some((a["started_ms"].as_u64()?, b["started_ms"].as_u64()?))
    });
    assert!(lab_is_taken(&a1, 1), "pipeline a reads a1");
    assert!(lab_is_taken(&b, 2), "pipeline b reads b");

    // A valid edit: a now reads a2. Only a restarts.
    std::fs::write(pdir.join("a.toml"), folder_pipeline("a", &a2)).unwrap();
    let a_restarted = wait_for(|| {
        let s = pipeline(port, "a")?["started_ms"].as_u64()?;
        (s != a_started).then_some(s)
    });
    assert!(lab_is_taken(&a2, 3), "the new version of a reads a2");
    assert!(
        lab_stays(&a1, 4, 1),
        "the old folder of a is no longer read"
    );
    assert_eq!(
        pipeline(port, "b").unwrap()["started_ms"].as_u64(),
        Some(b_started),
        "b kept running, untouched"
    );
    assert!(lab_is_taken(&b, 5), "b still reads b");

    // A broken edit: reported, the running version of a kept.
    std::fs::write(pdir.join("a.toml"), "[sources.inbox\ntype = ").unwrap();
    let rejected = wait_for(|| {
        let r = pipelines(port)["rejected"].as_array()?.clone();
        (!r.is_empty()).then_some(r)
    });
    assert!(
        rejected[0]["file"].as_str().unwrap().ends_with("a.toml"),
        "{rejected:?}"
    );
    let a = pipeline(port, "a").expect("a still runs");
    assert_eq!(a["started_ms"].as_u64(), Some(a_restarted));
    assert_eq!(a["running"], true);
    assert!(
        lab_is_taken(&a2, 6),
        "the running version of a still reads a2"
    );
    // SIGHUP re-reads the directory: nothing changed, nothing restarts.
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        pipeline(port, "a").unwrap()["started_ms"].as_u64(),
        Some(a_restarted)
    );
    assert_eq!(
        pipeline(port, "b").unwrap()["started_ms"].as_u64(),
        Some(b_started)
    );

    // A new file that is invalid from the start: no version runs, so the daemon is unready.
    std::fs::write(pdir.join("c.toml"), "[sources.inbox\ntype = ").unwrap();
    let (ready, why) = wait_for(|| {
        let (status, body) = get(port, "/readyz", None)?;
        (status == 503).then_some((status, body))
    });
    assert!(why.contains("c.toml is invalid and not running"), "{why}");
    std::fs::remove_file(pdir.join("c.toml")).unwrap();
    wait_for(|| (get(port, "/readyz", None)?.0 == 200).then_some(()));
    println!(
        "readyz with an invalid new pipeline file: {ready} {}",
        why.trim()
    );

    let (code, logs) = stop(child);
    println!(
        "hot reload: a restarted once (a1 -> a2), b untouched, broken edit rejected: {}",
        rejected[0]["problem"]
    );
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        logs.contains("Invalid pipeline file"),
        "the broken edit is logged"
    );
    assert_eq!(
        logs.matches("\"pipeline\":\"b\",\"file\"").count(),
        1,
        "b started once: {logs}"
    );
}

/// `POST` with the given `Host`, `Origin` and bearer token: the status.
fn post_as(port: u16, path: &str, host: &str, origin: Option<&str>, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{origin}{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Requests that change state need the bearer token also on loopback (unless the config
/// allows them without), and are refused from a page of another site (its `Origin`) or
/// through a name that is not this machine (its `Host`: DNS rebinding), token or not.
#[test]
fn control_requests_need_the_token_and_come_from_this_machine_only() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = daemon(tmp.path(), &format!("127.0.0.1:{port}"), &[], "");
    wait_for(|| pipeline(port, "labs"));
    let local = format!("127.0.0.1:{port}");
    assert_eq!(
        post_as(port, "/pipelines/labs/pause", &local, None, None),
        403
    );
    assert_eq!(pipeline(port, "labs").unwrap()["paused"], false);
    let (code, _) = stop(child);
    assert_eq!(code, Some(0));

    let tmp = tempfile::tempdir().unwrap();
    let child = daemon(
        tmp.path(),
        &local,
        &[("OSCARFLOW_T_CONTROL_TOKEN", "c0ntrol-t0ken")],
        "http_token_env = \"OSCARFLOW_T_CONTROL_TOKEN\"\n",
    );
    let token = Some("c0ntrol-t0ken");
    wait_for(|| {
        get(port, "/pipelines", token)
            .filter(|(s, b)| *s == 200 && b.contains("labs"))
            .map(|_| ())
    });
    let pause = "/pipelines/labs/pause";
    assert_eq!(post_as(port, pause, &local, None, None), 401);
    assert_eq!(
        post_as(port, pause, &local, None, Some("c0ntrol-t0keN")),
        401
    );
    assert_eq!(post_as(port, pause, "evil.example", None, token), 403);
    assert_eq!(
        post_as(port, pause, &local, Some("http://evil.example"), token),
        403
    );
    let (_, body) = get(port, "/pipelines", token).unwrap();
    assert!(body.contains("\"paused\":false"), "{body}");
    assert_eq!(
        post_as(port, pause, &local, Some(&format!("http://{local}")), token),
        200
    );
    assert_eq!(post_as(port, pause, "localhost", None, token), 200);
    let (code, _) = stop(child);
    assert_eq!(code, Some(0));
}

#[test]
fn pause_holds_a_pipelines_intake_across_a_reload_and_a_stop_and_resume_lets_it_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = daemon(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &[],
        "control_without_token = true\n",
    );
    let inbox = tmp.path().join("inbox");
    wait_for(|| pipeline(port, "labs"));
    assert!(lab_is_taken(&inbox, 0));
    let (status, body) = post(port, "/pipelines/labs/pause").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"paused\":true"), "{body}");
    assert!(lab_stays(&inbox, 1, 1), "paused: the file is not taken");
    let metrics = get(port, "/metrics", None).unwrap().1;
    assert!(
        metrics.contains("oscarflow_pipeline_paused_info{pipeline=\"labs\"} 1"),
        "{metrics}"
    );

    // An edit of the paused pipeline's file restarts it, still paused.
    let started = pipeline(port, "labs").unwrap()["started_ms"].clone();
    let file = tmp.path().join("pipelines/labs.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("# edited while paused\n");
    std::fs::write(&file, text).unwrap();
    let restarted = wait_for(|| pipeline(port, "labs").filter(|p| p["started_ms"] != started));
    assert_eq!(restarted["paused"], true, "{restarted}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        inbox.join("lab1.hl7").exists(),
        "restarted paused: the file is still not taken"
    );

    let (status, body) = post(port, "/pipelines/labs/resume").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for(|| (!inbox.join("lab1.hl7").exists()).then_some(()));
    assert_eq!(post(port, "/pipelines/labs/poll").unwrap().0, 200);
    assert_eq!(post(port, "/pipelines/nope/pause").unwrap().0, 404);
    assert_eq!(get(port, "/pipelines/labs/pause", None).unwrap().0, 405);

    // Stopped while paused: the held file stays, and the stop does not wait out the grace
    // period for it.
    assert_eq!(post(port, "/pipelines/labs/pause").unwrap().0, 200);
    assert!(lab_stays(&inbox, 2, 1));
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
    assert!(inbox.join("lab2.hl7").exists(), "held while paused, kept");
    assert!(!logs.contains("Grace period over"), "{logs}");
}

/// The value of the metric `name` whose labels include each of `labels` in a scrape.
fn metric(port: u16, name: &str, labels: &[&str]) -> Option<f64> {
    let body = get(port, "/metrics", None)?.1;
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A maintenance pause: a file dropped while the pipeline is paused is not read, stamped or
/// counted in flight, so the oldest-unacknowledged alert stays quiet; after the resume it is
/// taken, once.
#[test]
fn a_paused_pipeline_takes_no_dropped_file_and_counts_nothing_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = daemon(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &[],
        "control_without_token = true\n",
    );
    let inbox = tmp.path().join("inbox");
    wait_for(|| pipeline(port, "labs"));
    assert!(lab_is_taken(&inbox, 0));
    let received = |port| {
        metric(
            port,
            "oscarflow_inputs_received_total",
            &["pipeline=\"labs\"", "component=\"inbox\""],
        )
    };
    assert_eq!(wait_for(|| received(port)), 1.0);
    assert_eq!(post(port, "/pipelines/labs/pause").unwrap().0, 200);

    // Ten poll intervals and more with a file in the inbox.
    assert!(
        lab_stays(&inbox, 1, 2),
        "paused: the file stays in the inbox"
    );
    let p = pipeline(port, "labs").unwrap();
    assert_eq!(p["paused"], true, "{p}");
    assert_eq!(p["in_flight"], 0, "nothing counted in flight: {p}");
    assert_eq!(p["oldest_unacked_seconds"], 0.0, "{p}");
    let oldest = metric(
        port,
        "oscarflow_oldest_unacked_age_seconds",
        &["pipeline=\"labs\""],
    );
    assert_eq!(oldest, Some(0.0));
    assert_eq!(received(port), Some(1.0), "the file was not read");

    assert_eq!(post(port, "/pipelines/labs/resume").unwrap().0, 200);
    wait_for(|| (!inbox.join("lab1.hl7").exists()).then_some(()));
    assert_eq!(received(port), Some(2.0), "taken once after the resume");
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
}

/// A pipeline whose folder is a file stops on a fatal error; the daemon starts it again by
/// itself, with a growing delay, and `/pipelines` says why it stopped and when it comes
/// back. Once the folder is a folder, the next restart runs, without SIGHUP or an edit.
#[test]
fn a_pipeline_stopped_by_a_fatal_error_restarts_by_itself_with_backoff_and_shows_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let faxes = dir.join("faxes");
    std::fs::write(&faxes, b"not a folder").unwrap();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("pipelines/faxes.toml"),
        folder_pipeline("faxes", &faxes),
    )
    .unwrap();
    let child = daemon(
        dir,
        &format!("127.0.0.1:{port}"),
        &[],
        "control_without_token = true\nrestart_backoff = \"200ms\"\nrestart_backoff_max = \"2s\"\n",
    );
    // Stopped, with the reason; restarted and stopped again, each time a later attempt.
    let stopped = wait_for(|| {
        pipeline(port, "faxes").filter(|p| p["restart"]["attempt"].as_u64() >= Some(3))
    });
    assert_eq!(stopped["running"], false, "{stopped}");
    assert_eq!(stopped["stop"]["component"], "inbox", "{stopped}");
    let error = stopped["stop"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a directory"), "{stopped}");
    assert!(stopped["stop"]["at"].as_u64() > Some(0), "{stopped}");
    assert!(stopped["restart"]["at"].as_u64() > Some(0), "{stopped}");
    assert_eq!(pipeline(port, "labs").unwrap()["running"], true);

    // The cause is fixed: the next restart takes.
    std::fs::remove_file(&faxes).unwrap();
    std::fs::create_dir_all(&faxes).unwrap();
    let back = wait_for(|| pipeline(port, "faxes").filter(|p| p["running"] == true));
    assert_eq!(
        back["restarted_after"]["stop"]["component"], "inbox",
        "{back}"
    );
    assert!(
        back["restarted_after"]["attempt"].as_u64() >= Some(3),
        "{back}"
    );
    assert!(lab_is_taken(&faxes, 7), "the restarted pipeline imports");
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        logs.contains("it will be started again by itself"),
        "a log line per stop: {logs}"
    );
    assert!(
        logs.contains("Starting the pipeline again after its fatal stop"),
        "a log line per restart: {logs}"
    );
}

/// A relative folder in a pipeline file is under the daemon's state directory, whatever the
/// daemon's working directory (under systemd, `/`).
#[test]
fn relative_paths_in_a_pipeline_file_resolve_against_the_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let mut cmd = daemon_command(
        dir,
        &format!("127.0.0.1:{port}"),
        &[],
        "control_without_token = true\n",
    );
    std::fs::write(
        dir.join("pipelines/labs.toml"),
        folder_pipeline("labs", Path::new("drop/labs")),
    )
    .unwrap();
    let child = cmd.current_dir(elsewhere.path()).spawn().unwrap();
    let inbox = dir.join("state/drop/labs");
    wait_for(|| pipeline(port, "labs").filter(|p| p["running"] == true));
    wait_for(|| inbox.is_dir().then_some(()));
    assert!(
        lab_is_taken(&inbox, 3),
        "the file under the state directory is imported"
    );
    assert!(
        !elsewhere.path().join("drop").exists(),
        "nothing under the working directory"
    );
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
}

/// Drops labs into `inbox`, one every 250 ms, until `tap` ends (at most 40).
fn feed_until_exit(tap: &mut Child, inbox: &Path) -> std::process::ExitStatus {
    let mut i = 0;
    loop {
        if let Some(s) = tap.try_wait().unwrap() {
            return s;
        }
        assert!(i < 40, "the tap did not end: it saw too few events");
        std::fs::write(
            inbox.join(format!("lab{i}.hl7")),
            variant("fixtures/hl7/pathl7/multi_message.hl7", i),
        )
        .unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn tap_prints_the_events_at_one_component_and_no_bodies_unless_the_daemon_logs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The daemon's own config names its listen address: `tap --config` finds it there.
    let child = daemon(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &[],
        &format!("listen = \"127.0.0.1:{port}\"\n"),
    );
    let inbox = tmp.path().join("inbox");
    wait_for(|| pipeline(port, "labs"));
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = tmp.path().join("oscarflow.toml");
    let mut tap = Command::new(bin())
        .args(["tap", "labs", "oscar", "--config"])
        .arg(&config)
        .args(["--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Labs arrive until the tap has seen three commits at the sink.
    let status = feed_until_exit(&mut tap, &inbox);
    let mut out = String::new();
    std::io::Read::read_to_string(tap.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(0));
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!(
        "tap: {} records at labs/oscar, first {}",
        records.len(),
        records[0]
    );
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["pipeline"], "labs");
        assert_eq!(r["component"], "oscar");
        assert_eq!(r["event"], "committed");
        assert_eq!(r["provenance"]["source"], "inbox");
        assert_eq!(r["provenance"]["sha256"].as_str().unwrap().len(), 64);
        assert!(r.get("body").is_none());
    }
    assert!(!out.contains("TESTPATIENT") && !out.contains("9000000011"));

    // Bodies need the daemon's --log-bodies; an unknown component is named as such.
    let denied = Command::new(bin())
        .args(["tap", "labs", "parse", "--bodies", "--endpoint", &endpoint])
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("--log-bodies"));
    let unknown = Command::new(bin())
        .args(["tap", "labs", "nope", "--endpoint", &endpoint])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no such component"));
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
}

/// Reads until the peer closes (or `wait` passes): what came, and whether it closed.
fn read_until_closed(s: &mut std::net::TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// Whether the endpoint has closed `s` (a non-blocking look).
fn closed_by_server(s: &std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!((&*s).read(&mut buf), Ok(0))
        || matches!((&*s).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    s.set_nonblocking(false).unwrap();
    closed
}

/// The acceptance probe: 1,400 connections that send nothing (100 of them half a request
/// head) to a daemon limited to 1,024 open files, while `/healthz` is asked and an MLLP
/// sender (another pipeline of the same daemon) sends a lab. The latencies are printed.
#[test]
fn healthz_answers_while_1400_idle_connections_are_open() {
    use std::io::Write;
    let (soft, _) = oscarflow::conn_limit::raise_open_files_limit().unwrap();
    assert!(soft >= 1600, "this probe needs about 1,500 descriptors");
    let tmp = tempfile::tempdir().unwrap();
    let (port, mllp_port) = (free_port(), free_port());
    let pipelines = tmp.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("mllp.toml"),
        format!("[pipeline]\nname = \"mllp\"\n[sources.mllp]\ntype = \"mllp\"\nlisten = \"127.0.0.1:{mllp_port}\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"mllp\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n"),
    )
    .unwrap();
    // The daemon may hold 1,024 descriptors at most, hard limit (it cannot raise it): fewer
    // than the idle connections, so only its connection cap keeps it answering.
    let mut cmd = daemon_command(tmp.path(), &format!("127.0.0.1:{port}"), &[], "");
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    assert_eq!(wait_for(|| get(port, "/healthz", None)).0, 200);
    wait_for(|| std::net::TcpStream::connect(("127.0.0.1", mllp_port)).ok());

    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut idle = Vec::new();
    for i in 0..1400 {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 14 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
        }
        idle.push(s);
    }

    let mut health = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = get(port, "/healthz", None);
        health.push((started.elapsed(), answer));
    }

    let msg = std::fs::read_to_string(common::repo().join("fixtures/hl7/pathl7/matched_chem.hl7"))
        .unwrap()
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let started = Instant::now();
    let mut mllp = std::net::TcpStream::connect(("127.0.0.1", mllp_port)).unwrap();
    mllp.write_all(&oscarflow::sources::mllp::encode(msg.trim_end().as_bytes()))
        .unwrap();
    mllp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ack = Vec::new();
    let mut buf = [0u8; 4096];
    while !ack.ends_with(b"\x1c\r") {
        let n = std::io::Read::read(&mut mllp, &mut buf).expect("an MLLP answer within 10 s");
        assert!(n > 0, "the MLLP listener closed without answering");
        ack.extend_from_slice(&buf[..n]);
    }
    let mllp_latency = started.elapsed();

    let closed = idle.iter().filter(|s| closed_by_server(s)).count();
    let (_, metrics) = get(port, "/metrics", None).unwrap();
    let counts: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oscarflow_listener_connections_closed_total"))
        .collect();
    drop(idle);
    let (code, _) = stop(child);
    for (latency, answer) in &health {
        eprintln!(
            "HTTP flood: /healthz {:?} after {} ms",
            answer.as_ref().map(|a| a.0),
            latency.as_millis()
        );
    }
    eprintln!(
        "HTTP flood: MLLP AA after {} ms; 1,400 idle connections opened, {closed} closed by the endpoint; {counts:?}",
        mllp_latency.as_millis()
    );
    for (latency, answer) in &health {
        assert_eq!(answer.as_ref().map(|a| a.0), Some(200));
        assert!(*latency < Duration::from_secs(10), "{latency:?}");
    }
    assert!(
        String::from_utf8_lossy(&ack).contains("MSA|AA|"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    assert_eq!(code, Some(0));
}

#[test]
fn a_connection_that_never_finishes_its_headers_or_idles_after_an_answer_is_closed() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = daemon(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &[],
        "http_header_timeout = \"1s\"\n",
    );
    assert_eq!(wait_for(|| get(port, "/healthz", None)).0, 200);
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut half = connect();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let mut silent = connect();
    let mut kept = connect();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut half, Duration::from_secs(10));
    eprintln!(
        "half a request head: closed={closed} after {} ms",
        started.elapsed().as_millis()
    );
    assert!(
        closed,
        "a connection that never finishes its head is closed"
    );
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "));
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10));
    assert!(closed, "a silent connection is closed");
    let (got, closed) = read_until_closed(&mut kept, Duration::from_secs(10));
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("ok\n"),
        "{got}"
    );
    assert!(
        closed,
        "a kept-alive connection idle after its answer is closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
    let metrics = wait_for(|| get(port, "/metrics", None)).1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("oscarflow_listener_connections_closed_total")
                && l.contains("reason=\"header_timeout\"")
        ),
        "{metrics}"
    );
    let (code, _) = stop(child);
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_of_bodies_is_recorded_in_the_audit_trail_under_the_token_holder_and_os_user_before_it_streams(
) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (ops, alice) = ("ops-token-3c9e0a", "alice-token-77b2d4");
    let mut cmd = daemon_command(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &[("TAP_OPS_TOKEN", ops), ("TAP_ALICE_TOKEN", alice)],
        &format!("listen = \"127.0.0.1:{port}\"\nhttp_token_env = \"TAP_OPS_TOKEN\"\n[http_tokens]\nalice = \"TAP_ALICE_TOKEN\"\n"),
    );
    cmd.arg("--log-bodies");
    let child = cmd.spawn().unwrap();
    wait_for(|| {
        let (status, body) = get(port, "/pipelines", Some(ops))?;
        (status == 200 && body.contains("\"labs\"")).then_some(())
    });
    let inbox = tmp.path().join("inbox");
    let mut tap = Command::new(bin())
        .args(["tap", "labs", "parse", "--bodies", "--count", "1"])
        .args(["--endpoint", &format!("http://127.0.0.1:{port}")])
        .args(["--token-env", "TAP_ALICE_TOKEN"])
        .env("TAP_ALICE_TOKEN", alice)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = tokio::task::block_in_place(|| feed_until_exit(&mut tap, &inbox));
    let mut out = String::new();
    std::io::Read::read_to_string(tap.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("\"body\""), "the body was tapped");

    let store = oscarflow::store::Store::open(&common::sqlite_url(&tmp.path().join("state")))
        .await
        .unwrap();
    let reads = common::audit_rows(&store, "read").await;
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(
        reads[0].actor,
        format!(
            "token alice, {} (as the tap command says)",
            oscarflow::audit::os_user()
        )
    );
    assert!(reads[0]
        .why
        .as_deref()
        .unwrap()
        .contains("tap --bodies of labs/parse"));
    println!(
        "tap audit: {} / {}",
        reads[0].actor,
        reads[0].why.as_deref().unwrap()
    );
    let (code, logs) = stop(child);
    assert_eq!(code, Some(0), "{logs}");
}
