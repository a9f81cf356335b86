//! The database: [`Store`], one pool for OSCAR's tables and the pipeline's own.
//!
//! Two backends with the same tables and the same SQL (sqlx `Any`, runtime queries, bound
//! parameters only): MySQL/MariaDB — production, the clinic's OSCAR database — and an
//! embedded SQLite file under `./var/`, the default when no URL is given. Migrations are
//! embedded in the binary: for MySQL they create only oscarflow's own tables (OSCAR's schema
//! belongs to OSCAR and must already be there); for SQLite they also create the OSCAR tables
//! the import needs, with OSCAR's column names and types. Applied migrations are recorded in
//! `oscarflow_migrations`.
//!
//! # Encrypted connections (MySQL/MariaDB)
//!
//! TLS (rustls) is set in the URL, as MySQL's own clients name it:
//!
//! - `ssl-mode=disabled`: never encrypt.
//! - `ssl-mode=preferred` (the default): encrypt when the server offers TLS, else plain
//!   text; the server's certificate is not checked. Protects from eavesdroppers only.
//! - `ssl-mode=required`: always encrypt, fail when the server offers no TLS; the
//!   certificate is still not checked (an impostor in the middle is not detected).
//! - `ssl-mode=verify_ca`: encrypt and check that the server's certificate is signed by the
//!   CA in `ssl-ca=/path/to/ca.pem` or by a CA in the system's trust store.
//! - `ssl-mode=verify_identity`: also check that the certificate names the host of the URL.
//!   Use this for a database on another host:
//!   `mysql://oscar@db.clinic.example/oscar?ssl-mode=verify_identity&ssl-ca=/etc/oscarflow/db-ca.pem`.
//!
//! A failed connection says why ([`connect`]): authentication refused, server unreachable
//! (with host:port), or a TLS failure (no TLS on the server, a certificate not signed by the
//! CA in `ssl-ca`, a certificate for another name) — never the password.
//!
//! Timestamps are bound as `YYYY-MM-DD HH:MM:SS` strings in the server's local time, which is
//! what OSCAR writes with `new Date()`; both backends store them unchanged.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor, Row};
use thiserror::Error;

use crate::error::{classify_sqlx, describe_sqlx, Classify, ErrorKind};

mod connect;
pub(crate) mod rows;

/// How long the MySQL pool waits for a connection (a refused one is retried until then).
const MYSQL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Sqlite,
}

/// Errors opening or migrating the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("unsupported database url scheme `{0}` (use mysql:// or sqlite://)")]
    Scheme(String),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    /// `url` is the redacted URL ([`redact_url`]), `cause` says why in words
    /// ([`connect::cause`]): authentication refused, server unreachable, TLS failure, …
    #[error("cannot connect to the database {url}: {cause}")]
    Connect {
        url: String,
        cause: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}) failed: {detail}")]
    Migrate {
        version: i64,
        name: &'static str,
        detail: String,
    },
    #[error(
        "the database has no OSCAR schema (table `{0}` is missing); load OSCAR's schema first"
    )]
    NoOscarSchema(&'static str),
    #[error("{0}")]
    Query(String, #[source] sqlx::Error),
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Connect { source: e, .. } | StoreError::Query(_, e) => {
                match classify_sqlx(e) {
                    ErrorKind::Data => ErrorKind::Fatal,
                    k => k,
                }
            }
            _ => ErrorKind::Fatal,
        }
    }
}

impl StoreError {
    pub(crate) fn query(e: sqlx::Error) -> Self {
        StoreError::Query(describe_sqlx(&e), e)
    }
}

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MYSQL_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "pipeline_tables",
        sql: include_str!("../../migrations/mysql/0001_pipeline_tables.sql"),
    },
    Migration {
        version: 2,
        name: "mllp_answers",
        sql: include_str!("../../migrations/mysql/0002_mllp_answers.sql"),
    },
    Migration {
        version: 3,
        name: "fax_inbound",
        sql: include_str!("../../migrations/mysql/0003_fax_inbound.sql"),
    },
    Migration {
        version: 4,
        name: "fax_outbound",
        sql: include_str!("../../migrations/mysql/0004_fax_outbound.sql"),
    },
    Migration {
        version: 5,
        name: "sms",
        sql: include_str!("../../migrations/mysql/0005_sms.sql"),
    },
    Migration {
        version: 6,
        name: "lab_message",
        sql: include_str!("../../migrations/mysql/0006_lab_message.sql"),
    },
    Migration {
        version: 7,
        name: "dead_letter_chunks",
        sql: include_str!("../../migrations/mysql/0007_dead_letter_chunks.sql"),
    },
    Migration {
        version: 8,
        name: "journal",
        sql: include_str!("../../migrations/mysql/0008_journal.sql"),
    },
    Migration {
        version: 9,
        name: "audit",
        sql: include_str!("../../migrations/mysql/0009_audit.sql"),
    },
    Migration {
        version: 10,
        name: "appointments",
        sql: include_str!("../../migrations/mysql/0010_appointments.sql"),
    },
];

const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "pipeline_tables",
        sql: include_str!("../../migrations/sqlite/0001_pipeline_tables.sql"),
    },
    Migration {
        version: 2,
        name: "oscar_tables",
        sql: include_str!("../../migrations/sqlite/0002_oscar_tables.sql"),
    },
    Migration {
        version: 3,
        name: "mllp_answers",
        sql: include_str!("../../migrations/sqlite/0003_mllp_answers.sql"),
    },
    Migration {
        version: 4,
        name: "fax_inbound",
        sql: include_str!("../../migrations/sqlite/0004_fax_inbound.sql"),
    },
    Migration {
        version: 5,
        name: "fax_outbound",
        sql: include_str!("../../migrations/sqlite/0005_fax_outbound.sql"),
    },
    Migration {
        version: 6,
        name: "sms",
        sql: include_str!("../../migrations/sqlite/0006_sms.sql"),
    },
    Migration {
        version: 7,
        name: "file_upload_md5",
        sql: include_str!("../../migrations/sqlite/0007_file_upload_md5.sql"),
    },
    Migration {
        version: 8,
        name: "lab_message",
        sql: include_str!("../../migrations/sqlite/0008_lab_message.sql"),
    },
    Migration {
        version: 9,
        name: "dead_letter_chunks",
        sql: include_str!("../../migrations/sqlite/0009_dead_letter_chunks.sql"),
    },
    Migration {
        version: 10,
        name: "journal",
        sql: include_str!("../../migrations/sqlite/0010_journal.sql"),
    },
    Migration {
        version: 11,
        name: "audit",
        sql: include_str!("../../migrations/sqlite/0011_audit.sql"),
    },
    Migration {
        version: 12,
        name: "appointments",
        sql: include_str!("../../migrations/sqlite/0012_appointments.sql"),
    },
];

/// A connection pool plus the backend it talks to.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The server accepts `INSERT … RETURNING` (MariaDB 10.5+, SQLite 3.35+; not MySQL):
    /// a lab's measurements go in one statement that returns their ids. Without it they are
    /// inserted one by one. Public so tests can take the fallback on purpose.
    pub insert_returning: bool,
}

/// The embedded default: `sqlite://<state_dir>/oscarflow.db`.
pub fn default_sqlite_url(state_dir: &Path) -> String {
    format!("sqlite://{}", state_dir.join("oscarflow.db").display())
}

/// What logs and errors show of a database URL: the scheme and the user, nothing after
/// (`mysql://oscar@…`); an embedded SQLite URL whole (a file path, no credentials); and
/// nothing at all of a string that is not `scheme://…` (a pasted password, a URL missing its
/// `//`).
pub fn redact_url(url: &str) -> String {
    const NOT_SHOWN: &str = "(not a database URL of the form scheme://…; not shown)";
    let Some(s) = url.find("://") else {
        return NOT_SHOWN.into();
    };
    let scheme = &url[..s];
    if !is_scheme(scheme) {
        return NOT_SHOWN.into();
    }
    if scheme == "sqlite" {
        return url.to_string();
    }
    let rest = &url[s + 3..];
    match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@…")
        }
        None => format!("{scheme}://…"),
    }
}

/// A URL scheme as written (`mysql`, `sqlite`): short, letters and digits.
fn is_scheme(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let scheme = url.split(':').next().unwrap_or_default();
        let backend = match scheme {
            "mysql" | "mariadb" => Backend::MySql,
            "sqlite" => Backend::Sqlite,
            other if is_scheme(other) => return Err(StoreError::Scheme(other.to_string())),
            _ => return Err(StoreError::Scheme("(not shown)".into())),
        };
        let url = if scheme == "mariadb" {
            format!("mysql{}", &url["mariadb".len()..])
        } else {
            url.to_string()
        };
        let mut url = url;
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if path != ":memory:" {
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    crate::private_fs::create_dir_all(dir).map_err(|source| {
                        StoreError::StateDir {
                            path: dir.display().to_string(),
                            source,
                        }
                    })?;
                }
                // Owner-only before SQLite opens it: its journal files take the same mode.
                crate::private_fs::touch_private(Path::new(path)).map_err(|source| {
                    StoreError::StateDir {
                        path: path.to_string(),
                        source,
                    }
                })?;
                if !url.contains('?') {
                    url.push_str("?mode=rwc");
                }
            }
        }
        if backend == Backend::MySql {
            url = connect::default_ssl_mode(&url);
        }
        let target = match backend {
            Backend::MySql => connect::Target::from_url(&url),
            Backend::Sqlite => None,
        };
        let connect_error = |cause: String, source: sqlx::Error| StoreError::Connect {
            url: redact_url(&url),
            cause,
            source,
        };
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| connect_error(connect::cause(target.as_ref(), &e), e))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let pool = match backend {
            // One connection: SQLite has a single writer; sharing one connection removes
            // SQLITE_BUSY from the picture. The embedded store is for replay and small sites.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        Ok(())
                    })
                }),
            Backend::MySql => AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(MYSQL_ACQUIRE_TIMEOUT)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // Strict mode: an over-long value is an error we handle, never a
                        // silent truncation by the server. Our own code truncates
                        // deliberately where OSCAR's columns are narrow.
                        conn.execute(
                            "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'STRICT_TRANS_TABLES')",
                        )
                        .await?;
                        conn.execute("SET NAMES utf8mb4").await?;
                        Ok(())
                    })
                }),
        }
        .connect_with(opts.clone())
        .await;
        let pool = match pool {
            Ok(p) => p,
            // The pool waits out a refused connection until its timeout and then says only
            // that it timed out: one more attempt of our own tells why.
            Err(e @ sqlx::Error::PoolTimedOut) if backend == Backend::MySql => {
                const PROBE: Duration = Duration::from_secs(5);
                let cause = match tokio::time::timeout(PROBE, opts.connect()).await {
                    Ok(Err(probe)) => connect::cause(target.as_ref(), &probe),
                    Err(_) => connect::no_answer(
                        target.as_ref(),
                        (MYSQL_ACQUIRE_TIMEOUT + PROBE).as_secs(),
                    ),
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        connect::cause(target.as_ref(), &e)
                    }
                };
                return Err(connect_error(cause, e));
            }
            Err(e) => return Err(connect_error(connect::cause(target.as_ref(), &e), e)),
        };
        let mut store = Store {
            pool,
            backend,
            insert_returning: false,
        };
        store.migrate().await?;
        store.insert_returning = store.detect_insert_returning().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Two processes starting at once on a fresh database (two daemons, two tests) would
        // both apply a migration and one would fail: on MariaDB they take turns under a
        // named lock of this database, held by a connection of its own (SQLite's one
        // writer already serializes them).
        let mut lock = match self.backend {
            Backend::MySql => {
                let mut conn = self.pool.acquire().await.map_err(StoreError::query)?;
                sqlx::query("SELECT GET_LOCK(CONCAT('oscarflow_migrate:', DATABASE()), 120)")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::query)?;
                Some(conn)
            }
            Backend::Sqlite => None,
        };
        let result = self.migrate_locked().await;
        if let Some(conn) = lock.as_mut() {
            let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('oscarflow_migrate:', DATABASE()))")
                .execute(&mut **conn)
                .await;
        }
        result
    }

    async fn migrate_locked(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS oscarflow_migrations (version BIGINT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, applied_at VARCHAR(19) NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::query)?;
        let rows = sqlx::query("SELECT version FROM oscarflow_migrations")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query)?;
        let applied: Vec<i64> = rows
            .iter()
            .filter_map(|r| r.try_get::<i64, _>(0).ok())
            .collect();
        let list = match self.backend {
            Backend::MySql => MYSQL_MIGRATIONS,
            Backend::Sqlite => SQLITE_MIGRATIONS,
        };
        for m in list {
            if applied.contains(&m.version) {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(StoreError::query)?;
            for stmt in split_sql(m.sql) {
                tx.execute(stmt).await.map_err(|e| StoreError::Migrate {
                    version: m.version,
                    name: m.name,
                    detail: describe_sqlx(&e),
                })?;
            }
            sqlx::query(
                "INSERT INTO oscarflow_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_sql())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query)?;
            tx.commit().await.map_err(StoreError::query)?;
        }
        if self.backend == Backend::MySql {
            for table in [
                "hl7TextMessage",
                "hl7TextInfo",
                "fileUploadCheck",
                "providerLabRouting",
                "demographic",
            ] {
                if !self.table_exists(table).await? {
                    return Err(StoreError::NoOscarSchema(table));
                }
            }
        }
        Ok(())
    }

    /// Whether the server accepts `INSERT … RETURNING` (see [`Store::insert_returning`]).
    async fn detect_insert_returning(&self) -> Result<bool, StoreError> {
        let sql = match self.backend {
            Backend::MySql => "SELECT VERSION()",
            Backend::Sqlite => "SELECT sqlite_version()",
        };
        let row = sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query)?;
        let version = text_column(&row, 0)
            .map_err(StoreError::query)?
            .unwrap_or_default();
        Ok(supports_returning(self.backend, &version))
    }

    /// True when `table` exists in the current database.
    pub async fn table_exists(&self, table: &str) -> Result<bool, StoreError> {
        let sql = match self.backend {
            Backend::MySql => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(n > 0)
    }

    /// True when some index of `table` starts with `column` (a lookup by `column` is not a
    /// scan). Column names compare without case.
    pub async fn has_index_on(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        self.count_of(
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND LOWER(column_name) = LOWER(?) AND seq_in_index = 1",
            "SELECT COUNT(*) FROM pragma_index_list(?) l, pragma_index_info(l.name) i WHERE i.seqno = 0 AND LOWER(i.name) = LOWER(?)",
            table,
            column,
        )
        .await
        .map(|n| n > 0)
    }

    /// The largest statement the server takes (`max_allowed_packet`) on MySQL/MariaDB; None
    /// on SQLite, whose limit (a gigabyte) no accepted input comes near.
    pub async fn max_statement_bytes(&self) -> Result<Option<u64>, StoreError> {
        if self.backend != Backend::MySql {
            return Ok(None);
        }
        let n: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(u64::try_from(n).ok())
    }

    /// `(table, column)` of the text columns of `tables` that hold at most 3-byte UTF-8
    /// (`utf8`/`utf8mb3`): OSCAR's tables in MySQL/MariaDB. None on SQLite.
    pub async fn narrow_text_columns(
        &self,
        tables: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if self.backend != Backend::MySql || tables.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT CAST(table_name AS CHAR) AS t, CAST(column_name AS CHAR) AS c FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name IN ({}) AND character_set_name IN ('utf8', 'utf8mb3')",
            vec!["?"; tables.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for t in tables {
            q = q.bind(*t);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(StoreError::query)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    text_column(r, "t").ok().flatten().unwrap_or_default(),
                    text_column(r, "c").ok().flatten().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// True when `table` has `column`.
    pub async fn column_exists(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        self.count_of(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
            "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?",
            table,
            column,
        )
        .await
        .map(|n| n > 0)
    }

    /// A `COUNT(*)` catalogue query with two parameters, in this backend's dialect.
    async fn count_of(
        &self,
        mysql: &str,
        sqlite: &str,
        table: &str,
        column: &str,
    ) -> Result<i64, StoreError> {
        let sql = match self.backend {
            Backend::MySql => mysql,
            Backend::Sqlite => sqlite,
        };
        sqlx::query_scalar(sql)
            .bind(table)
            .bind(column)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query)
    }

    /// The declared maximum length, in characters, of each character column of `table`
    /// (`varchar(N)`, `char(N)`; column names lower-cased). Columns without a limit
    /// (`text`, numbers, dates) are absent. Empty when the table does not exist.
    pub async fn char_widths(
        &self,
        table: &str,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = match self.backend {
            Backend::MySql => {
                let rows = sqlx::query(
                    "SELECT CAST(column_name AS CHAR) AS n, CAST(character_maximum_length AS SIGNED) AS w FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND data_type IN ('varchar', 'char')",
                )
                .bind(table)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query)?;
                rows.iter()
                    .map(|r| {
                        let name = text_column(r, "n").ok().flatten().unwrap_or_default();
                        (name, r.try_get::<Option<i64>, _>("w").ok().flatten())
                    })
                    .collect()
            }
            Backend::Sqlite => {
                let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?)")
                    .bind(table)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::query)?;
                rows.iter()
                    .map(|r| {
                        let name = text_column(r, "name").ok().flatten().unwrap_or_default();
                        let ty = text_column(r, "type").ok().flatten().unwrap_or_default();
                        (name, declared_char_width(&ty))
                    })
                    .collect()
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(n, w)| Some((n.to_ascii_lowercase(), usize::try_from(w?).ok()?)))
            .collect())
    }

    /// Runs a SQL script of `;`-terminated statements in one transaction (seed data for
    /// tests and QA databases; the same splitting rule as migrations).
    pub async fn execute_script(&self, sql: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::query)?;
        let mut n = 0;
        for stmt in split_sql(sql) {
            tx.execute(stmt).await.map_err(StoreError::query)?;
            n += 1;
        }
        tx.commit().await.map_err(StoreError::query)?;
        Ok(n)
    }

    /// Runs a SQL script once per database: its SHA-256 is recorded in
    /// `oscarflow_checkpoint` (pipeline `seed`) in the script's own transaction, so a script
    /// already run here is skipped (`Ok(false)`) and one that fails leaves no mark.
    pub async fn execute_script_once(&self, sql: &str) -> Result<bool, StoreError> {
        let key = hex::encode(crate::envelope::sha256(sql.as_bytes()));
        let mut tx = self.pool.begin().await.map_err(StoreError::query)?;
        let marked = sqlx::query(
            "INSERT INTO oscarflow_checkpoint (pipeline, source, value, updated_at) VALUES ('seed', ?, 'applied', ?)",
        )
        .bind(&key)
        .bind(now_sql())
        .execute(&mut *tx)
        .await;
        match marked {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(false),
            Err(e) => return Err(StoreError::query(e)),
        }
        for stmt in split_sql(sql) {
            tx.execute(stmt).await.map_err(StoreError::query)?;
        }
        tx.commit().await.map_err(StoreError::query)?;
        Ok(true)
    }

    /// Checks that the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::query)
    }
}

/// Splits a migration file into statements at `;` line ends. Migration files keep `;` out
/// of comments and literals so this stays trivially correct.
fn split_sql(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(';').map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
    })
}

/// A text column of a row. MariaDB sends `TEXT` and long `CAST(… AS CHAR)` values as
/// BLOB-typed columns, which sqlx's `Any` driver only decodes as bytes: those are read as
/// UTF-8. Works by name or position.
pub fn text_column<I>(row: &sqlx::any::AnyRow, col: I) -> Result<Option<String>, sqlx::Error>
where
    I: sqlx::ColumnIndex<sqlx::any::AnyRow> + Copy,
{
    match row.try_get::<Option<String>, _>(col) {
        Ok(v) => Ok(v),
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(col)
            .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned())),
    }
}

/// The width of a declared `varchar(N)` / `char(N)` / `character varying(N)` type, as SQLite
/// keeps declarations verbatim.
fn declared_char_width(ty: &str) -> Option<i64> {
    let t = ty.trim().to_ascii_lowercase();
    let (base, rest) = t.split_once('(')?;
    let base = base.trim();
    if !(base == "varchar" || base == "char" || base == "character varying" || base == "nvarchar") {
        return None;
    }
    rest.strip_suffix(')')?.trim().parse().ok()
}

/// The auto-increment id of the row just inserted in `tx`. MySQL reports it with the
/// result; sqlx's `Any` driver drops it for SQLite, where `last_insert_rowid()` gives it.
pub async fn last_insert_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    reported: Option<i64>,
) -> Result<i64, sqlx::Error> {
    if let Some(id) = reported.filter(|id| *id > 0) {
        return Ok(id);
    }
    sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(&mut **tx)
        .await
}

/// Whether a server of `backend` reporting `version` accepts `INSERT … RETURNING`:
/// MariaDB from 10.5 (MySQL never), SQLite from 3.35.
fn supports_returning(backend: Backend, version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    match backend {
        Backend::MySql => version.contains("MariaDB") && (major, minor) >= (10, 5),
        Backend::Sqlite => (major, minor) >= (3, 35),
    }
}

/// Whether `e` is a unique-key violation (another writer inserted the same key first).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Now, as OSCAR writes timestamps: local time, `YYYY-MM-DD HH:MM:SS`.
pub fn now_sql() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_returning_is_used_only_on_mariadb_10_5_and_sqlite_3_35_or_later() {
        assert!(supports_returning(
            Backend::MySql,
            "10.11.19-MariaDB-0+deb12u1"
        ));
        assert!(supports_returning(Backend::MySql, "10.5.0-MariaDB"));
        assert!(!supports_returning(Backend::MySql, "10.4.32-MariaDB"));
        assert!(!supports_returning(Backend::MySql, "8.0.36"), "MySQL");
        assert!(!supports_returning(Backend::MySql, "5.7.44-log"));
        assert!(supports_returning(Backend::Sqlite, "3.46.0"));
        assert!(supports_returning(Backend::Sqlite, "3.35.0"));
        assert!(!supports_returning(Backend::Sqlite, "3.34.1"));
        assert!(!supports_returning(Backend::Sqlite, ""));
    }

    #[test]
    fn a_database_url_is_shown_up_to_its_user_and_a_malformed_one_not_at_all() {
        assert_eq!(
            redact_url("mysql://oscar:s3cret@127.0.0.1:3306/oscar"),
            "mysql://oscar@…"
        );
        assert_eq!(redact_url("sqlite://var/x.db"), "sqlite://var/x.db");
        // A URL missing its `//`, and a password pasted where the URL belongs.
        for bad in [
            "mysql:oscar:s3cret@db/oscar",
            "s3cret",
            "mysql//oscar:s3cret@db",
        ] {
            let shown = redact_url(bad);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_malformed_database_url_is_refused_without_echoing_it() {
        for bad in ["s3cret-pa55word", "mysql:oscar:s3cret-pa55word@db/oscar"] {
            let e = match Store::open(bad).await {
                Ok(_) => panic!("a malformed URL was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(!e.contains("pa55word"), "{e}");
        }
    }

    #[test]
    fn split_sql_skips_comment_only_chunks() {
        let v: Vec<_> = split_sql(
            "-- hi\nCREATE TABLE a (x int);\n-- only a comment\n;\nCREATE TABLE b (y int);\n",
        )
        .collect();
        assert_eq!(v.len(), 2);
        assert!(v[1].starts_with("CREATE TABLE b"));
    }

    #[test]
    fn migration_comments_hold_no_statement_separator() {
        // `split_sql` splits at every `;`: one inside a comment breaks the migration.
        for m in MYSQL_MIGRATIONS.iter().chain(SQLITE_MIGRATIONS) {
            for (i, line) in m.sql.lines().enumerate() {
                if line.trim_start().starts_with("--") {
                    assert!(
                        !line.contains(';'),
                        "{} line {}: `;` in a comment",
                        m.name,
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn declared_char_widths_are_read_from_sqlite_type_names() {
        assert_eq!(declared_char_width("varchar(30)"), Some(30));
        assert_eq!(declared_char_width("VARCHAR ( 12 )"), Some(12));
        assert_eq!(declared_char_width("char(1)"), Some(1));
        assert_eq!(declared_char_width("int(10)"), None);
        assert_eq!(declared_char_width("text"), None);
        assert_eq!(declared_char_width("varchar"), None);
    }

    #[tokio::test]
    async fn char_widths_of_the_embedded_oscar_schema_match_open_o() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("w.db").display()))
            .await
            .unwrap();
        let w = store.char_widths("hl7TextInfo").await.unwrap();
        assert_eq!(w.get("last_name"), Some(&30));
        assert_eq!(w.get("report_status"), Some(&20));
        assert_eq!(w.get("health_no"), Some(&12));
        assert_eq!(w.get("final_result_count"), None);
        assert!(store.char_widths("no_such_table").await.unwrap().is_empty());
    }
}
