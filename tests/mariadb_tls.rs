//! Encrypted connections to MariaDB, and what a failed connection says.
//!
//! `.ci/run` gives the local MariaDB a throwaway CA and server certificate and creates the
//! user of `OSCARFLOW_TEST_MYSQL_TLS_URL`, which `REQUIRE SSL`; `OSCARFLOW_TEST_MYSQL_CA` is
//! that CA's file. Each test clones the OSCAR tables into its own database (as
//! tests/mariadb.rs does) and runs the real binary against it as that user. Without the
//! variables the tests print a notice and pass, unless `OSCARFLOW_REQUIRE_MYSQL=1` (CI),
//! where they fail.
//!
//! The closed-port test needs no server and always runs.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use sqlx::Connection;

use common::mariadb::{with_test_db, REQUIRE_VAR};
use common::{bin, repo};

const TLS_URL_VAR: &str = "OSCARFLOW_TEST_MYSQL_TLS_URL";
const CA_VAR: &str = "OSCARFLOW_TEST_MYSQL_CA";
/// The variable the binary reads the URL from (`--database-env`).
const URL_ENV: &str = "OSCARFLOW_TLS_TEST_DATABASE_URL";

/// `(URL of the REQUIRE SSL user, the CA file)`, or `None` (after a notice) to skip.
fn tls_env() -> Option<(String, String)> {
    let get = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    match (get(TLS_URL_VAR), get(CA_VAR)) {
        (Some(url), Some(ca)) => Some((url.trim().to_string(), ca.trim().to_string())),
        _ => {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1") {
                panic!(
                    "{REQUIRE_VAR}=1 but {TLS_URL_VAR} or {CA_VAR} is not set: .ci/run sets them \
                     up (MariaDB with a test CA and a REQUIRE SSL user)"
                );
            }
            eprintln!("note: {TLS_URL_VAR}/{CA_VAR} are not set; skipping the MariaDB TLS test (run .ci/run)");
            None
        }
    }
}

/// `url` pointed at the database `db` with the query `query` (without '?').
fn with_db(url: &str, db: &str, query: &str) -> String {
    let mut u = url::Url::parse(url).expect("a mysql:// URL");
    u.set_path(&format!("/{db}"));
    u.set_query(Some(query));
    u.to_string()
}

/// The database named by a URL's path.
fn db_name(url: &str) -> String {
    url::Url::parse(url).expect("a mysql:// URL").path()[1..].to_string()
}

/// Whether `text` shows the password of `url` (only as `:password@` when the password is
/// part of the user's name, which the output names on purpose).
fn shows_password(text: &str, url: &str) -> bool {
    let u = url::Url::parse(url).expect("a mysql:// URL");
    let pw = u.password().expect("a URL with a password");
    if u.username().contains(pw) {
        text.contains(&format!(":{pw}@"))
    } else {
        text.contains(pw)
    }
}

/// `oscarflow replay <paths> --json --database-env …` with the URL in that variable.
fn replay(url: &str, paths: &[&str]) -> Output {
    Command::new(bin())
        .arg("replay")
        .args(paths)
        .args(["--json", "--database-env", URL_ENV])
        .current_dir(repo())
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env(URL_ENV, url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run oscarflow")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run failed with exit code 1 and said `expected` on stderr, showing not the password
/// of `url`.
fn assert_refused(o: &Output, expected: &[&str], url: &str) {
    let all = text(o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    let err = String::from_utf8_lossy(&o.stderr);
    for e in expected {
        assert!(err.contains(e), "stderr does not say `{e}`:\n{all}");
    }
    assert!(!shows_password(&all, url), "the password is shown:\n{all}");
}

/// An unrelated CA, made for this test: the server's certificate is not signed by it.
fn unrelated_ca(dir: &Path) -> String {
    let ca = dir.join("unrelated-ca.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=unrelated test CA",
        ])
        .arg("-keyout")
        .arg(dir.join("unrelated-ca-key.pem"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl (installed by .ci/run)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ca.display().to_string()
}

async fn count_labs(url: &str) -> i64 {
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("connect as the test user");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hl7TextMessage")
        .fetch_one(&mut conn)
        .await
        .expect("count hl7TextMessage");
    let _ = conn.close().await;
    n
}

#[tokio::test]
async fn a_require_ssl_user_imports_the_fixtures_over_tls() {
    let Some((tls_url, ca)) = tls_env() else {
        return;
    };
    with_test_db(|admin_url| async move {
        let db = db_name(&admin_url);
        let url = with_db(
            &tls_url,
            &db,
            &format!("ssl-mode=verify_identity&ssl-ca={ca}"),
        );
        let o = replay(&url, &["fixtures/hl7"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(!shows_password(&text(&o), &tls_url), "{}", text(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        let totals = &report["totals"];
        let imported = totals["imported"].as_i64().unwrap();
        assert!(imported > 0, "{totals}");
        assert_eq!(totals["imported"], totals["messages_found"], "{totals}");
        assert_eq!(totals["dead_lettered"], 0, "{totals}");

        // The labs are there, read back as the same user over the same kind of session, and
        // that session is encrypted (the server would refuse this user otherwise, see below).
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url)
            .await
            .expect("connect as the REQUIRE SSL user over TLS");
        let row: (String, String) = sqlx::query_as(
            "SELECT CAST(VARIABLE_NAME AS CHAR), CAST(VARIABLE_VALUE AS CHAR) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("read Ssl_cipher");
        assert!(!row.1.is_empty(), "the session is not encrypted: {row:?}");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hl7TextMessage")
            .fetch_one(&mut conn)
            .await
            .expect("count hl7TextMessage");
        assert_eq!(n, imported, "one hl7TextMessage row per imported message");
        let _ = conn.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_an_error_that_says_so() {
    let Some((tls_url, _ca)) = tls_env() else {
        return;
    };
    with_test_db(|admin_url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let wrong = unrelated_ca(tmp.path());
        let url = with_db(
            &tls_url,
            &db_name(&admin_url),
            &format!("ssl-mode=verify_ca&ssl-ca={wrong}"),
        );
        let o = replay(&url, &["fixtures/hl7/pathl7/matched_chem.hl7"]);
        assert_refused(
            &o,
            &[
                "cannot connect to the database mysql://oscarflow_tls@…",
                "TLS failure",
                &format!("is not signed by the CA in ssl-ca={wrong}"),
            ],
            &url,
        );
        assert_eq!(count_labs(&admin_url).await, 0, "nothing imported");
    })
    .await;
}

#[tokio::test]
async fn a_require_ssl_user_without_tls_is_refused_and_the_error_names_tls() {
    let Some((tls_url, _ca)) = tls_env() else {
        return;
    };
    with_test_db(|admin_url| async move {
        let url = with_db(&tls_url, &db_name(&admin_url), "ssl-mode=disabled");
        let o = replay(&url, &["fixtures/hl7/pathl7/matched_chem.hl7"]);
        assert_refused(
            &o,
            &[
                "authentication refused",
                "user `oscarflow_tls`",
                "REQUIRE SSL",
                "ssl-mode=verify_identity",
            ],
            &url,
        );
        assert_eq!(count_labs(&admin_url).await, 0, "nothing imported");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_refused_authentication_without_the_password() {
    with_test_db(|admin_url| async move {
        let mut u = url::Url::parse(&admin_url).unwrap();
        u.set_password(Some("not-the-Passw0rd")).unwrap();
        let o = replay(u.as_str(), &["fixtures/hl7/pathl7/matched_chem.hl7"]);
        assert_refused(
            &o,
            &[
                "authentication refused",
                "127.0.0.1:3306",
                "MySQL error 1045",
            ],
            u.as_str(),
        );
    })
    .await;
}

#[test]
fn a_closed_port_is_reported_as_an_unreachable_server_with_host_and_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("mysql://oscar:s3cret-pw-closed-port@127.0.0.1:{port}/oscar");
    let o = replay(&url, &["fixtures/hl7/pathl7/matched_chem.hl7"]);
    assert_refused(
        &o,
        &[
            "cannot connect to the database mysql://oscar@…",
            "server unreachable",
            &format!("connection refused at 127.0.0.1:{port}"),
        ],
        &url,
    );
}
