//! Per-test MariaDB databases cloned from the OSCAR database `.ci/run` builds.
//!
//! `OSCARFLOW_TEST_MYSQL_URL` names a database that holds OSCAR's schema and the synthetic
//! clinic of `fixtures/sql/bc_clinic.sql`. [`with_test_db`] clones the tables the import reads
//! and writes into a fresh database `oscarflow_t_<ulid>`, so tests run in parallel and can be
//! re-run, and drops it at the end. Without the variable the tests print a notice and pass,
//! unless `OSCARFLOW_REQUIRE_MYSQL=1` (CI), where they fail.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sqlx::{Connection, Row};

use oscarflow::store::redact_url;

pub const URL_VAR: &str = "OSCARFLOW_TEST_MYSQL_URL";
pub const REQUIRE_VAR: &str = "OSCARFLOW_REQUIRE_MYSQL";

/// OSCAR tables the import reads or writes, plus the seeded ones it needs.
pub const CLONED_TABLES: &[&str] = &[
    "fileUploadCheck",
    "hl7TextMessage",
    "hl7TextInfo",
    "patientLabRouting",
    "providerLabRouting",
    "incomingLabRules",
    "demographic",
    "demographic_merged",
    "provider",
    "measurements",
    "measurementsExt",
    "measurementsDeleted",
    "measurementMap",
    "measurementType",
    "recyclebin",
    "document",
    "ctl_document",
    "queue",
    "queue_document_link",
    "faxes",
    "appointment",
    "appointmentArchive",
    "other_id",
    "demographicExt",
    "log",
];

// ---------------------------------------------------------------------------------------------
// Per-test database
// ---------------------------------------------------------------------------------------------

/// The server URL from the environment, or `None` (after a notice) when tests should skip.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1") {
                panic!(
                    "{REQUIRE_VAR}=1 but {URL_VAR} is not set: point it at a MariaDB database \
                     holding OSCAR's schema and fixtures/sql/bc_clinic.sql (see .ci/run)"
                );
            }
            eprintln!(
                "note: {URL_VAR} is not set; skipping the MariaDB integration test (run .ci/run)"
            );
            None
        }
    }
}

/// `(URL up to the database path, database name, query string including '?')`.
fn split_url(url: &str) -> (String, String, String) {
    let after_scheme = url
        .find("://")
        .map(|i| i + 3)
        .unwrap_or_else(|| panic!("{URL_VAR} is not a URL: {}", redact_url(url)));
    let path_start = url[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or_else(|| panic!("{URL_VAR} names no database: {}", redact_url(url)));
    let rest = &url[path_start + 1..];
    let (db, query) = match rest.find('?') {
        Some(q) => (&rest[..q], &rest[q..]),
        None => (rest, ""),
    };
    assert!(
        !db.is_empty(),
        "{URL_VAR} names no database: {}",
        redact_url(url)
    );
    (
        url[..path_start].to_string(),
        db.to_string(),
        query.to_string(),
    )
}

pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A fresh database cloned from the source database's OSCAR tables.
pub struct TestDb {
    /// URL of the source database (used for admin statements).
    pub source_url: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(source_url: &str) -> TestDb {
        sqlx::any::install_default_drivers();
        let (base, source_db, query) = split_url(source_url);
        let name = format!(
            "oscarflow_t_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::AnyConnection::connect(source_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact_url(source_url)));
        // OSCAR's schema needs these (see ../shared/oscar/load-open-o-bc.sh).
        for s in [
            "SET SESSION innodb_strict_mode = 0",
            "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
        ] {
            sqlx::query(s).execute(&mut conn).await.expect(s);
        }
        let row = sqlx::query(
            "SELECT CAST(default_character_set_name AS CHAR), CAST(default_collation_name AS CHAR) FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(&source_db)
        .fetch_optional(&mut conn)
        .await
        .expect("read the source schema's charset")
        .unwrap_or_else(|| panic!("the source database `{source_db}` does not exist"));
        let charset: String = row.get(0);
        let collation: String = row.get(1);
        sqlx::query(&format!(
            "CREATE DATABASE {} DEFAULT CHARACTER SET {charset} COLLATE {collation}",
            quote_ident(&name)
        ))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));

        let present: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'",
        )
        .bind(&source_db)
        .fetch_all(&mut conn)
        .await
        .expect("list the source tables");
        let present: BTreeSet<String> = present.into_iter().collect();
        for table in CLONED_TABLES {
            assert!(
                present.contains(*table),
                "the source database `{source_db}` has no table `{table}`: load OSCAR's schema (.ci/run)"
            );
            let (new_t, old_t) = (
                format!("{}.{}", quote_ident(&name), quote_ident(table)),
                format!("{}.{}", quote_ident(&source_db), quote_ident(table)),
            );
            sqlx::query(&format!("CREATE TABLE {new_t} LIKE {old_t}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("clone table {table}: {e}"));
            sqlx::query(&format!("INSERT INTO {new_t} SELECT * FROM {old_t}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("copy rows of {table}: {e}"));
        }
        let _ = conn.close().await;
        TestDb {
            source_url: source_url.to_string(),
            url: format!("{base}/{name}{query}"),
            name,
        }
    }

    pub async fn drop_database(&self) {
        if std::env::var("OSCARFLOW_TEST_KEEP_DB").is_ok_and(|v| v == "1") {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        match sqlx::AnyConnection::connect(&self.source_url).await {
            Ok(mut conn) => {
                let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.name));
                if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                    eprintln!("warning: cannot drop test database {}: {e}", self.name);
                }
                let _ = conn.close().await;
            }
            Err(e) => eprintln!("warning: cannot drop test database {}: {e}", self.name),
        }
    }
}

/// Runs `body` on a fresh database (skipping without MariaDB); drops the database afterwards,
/// also when `body` panics.
pub async fn with_test_db<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(source) = server_url() else {
        return;
    };
    let db = TestDb::create(&source).await;
    let result = AssertUnwindSafe(body(db.url.clone())).catch_unwind().await;
    db.drop_database().await;
    if let Err(panic) = result {
        eprintln!("test database was {}", db.name);
        std::panic::resume_unwind(panic);
    }
}
