//! A real local S3-compatible server for the raw-archive tests: `moto` in server mode
//! (PyPI `moto[server]`, installed by the test itself into `target/py-moto-venv`), started on
//! a loopback port as a child process and killed on drop. Moto keeps its objects in memory,
//! so a stopped server comes back empty; [`MotoServer::start`] creates the bucket each time.
//!
//! Outside CI, when Python or PyPI is unavailable, [`moto_server_bin`] returns `None` and the
//! test skips with a notice; under `CI=true` that is a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oscarflow::archive::{ArchiveConfig, RawArchive};

/// The pinned moto release.
pub const MOTO: &str = "moto[server]==5.2.5";

/// Environment variables holding the fake credentials the tests use. The secret's value is
/// distinctive so that a test can check it never reaches a log line or an error text.
pub const KEY_ID_ENV: &str = "OSCARFLOW_TEST_S3_KEY_ID";
pub const SECRET_ENV: &str = "OSCARFLOW_TEST_S3_SECRET";
pub const KEY_ID: &str = "AKIAOSCARFLOWTEST01";
pub const SECRET: &str = "s3cr3t-0scarfl0w-archive-value-xyz";

/// `moto_server` from a virtual environment under `target/`; `None` outside CI when it cannot
/// be installed.
pub fn moto_server_bin() -> Option<PathBuf> {
    super::pypi_program("py-moto-venv", MOTO, "moto_server")
}

/// Sets the credential variables (same values in every test).
pub fn set_credentials() {
    std::env::set_var(KEY_ID_ENV, KEY_ID);
    std::env::set_var(SECRET_ENV, SECRET);
}

/// A moto server on a fixed loopback port, which may be stopped and started again.
pub struct MotoServer {
    bin: PathBuf,
    pub port: u16,
    pub bucket: String,
    child: Option<Child>,
}

impl MotoServer {
    /// A server on a free port, not yet running (requests to it fail to connect).
    pub fn reserve(bin: PathBuf, bucket: &str) -> MotoServer {
        MotoServer {
            bin,
            port: super::free_port(),
            bucket: bucket.to_string(),
            child: None,
        }
    }

    /// A running server with the bucket created.
    pub async fn running(bin: PathBuf, bucket: &str) -> MotoServer {
        let mut s = MotoServer::reserve(bin, bucket);
        s.start().await;
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (empty) and creates the bucket.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = self.archive("");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client
                .client()
                .create_bucket()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "creating the bucket failed: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Kills the server (its objects are lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `[archive]` table body for this server, plus `extra` lines.
    pub fn table(&self, extra: &str) -> String {
        format!(
            "bucket = \"{}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\naccess_key_id_env = \"{KEY_ID_ENV}\"\nsecret_access_key_env = \"{SECRET_ENV}\"\n{extra}\n",
            self.bucket,
            self.endpoint()
        )
    }

    /// The built-in lab pipeline with this server's `[archive]` table, loaded from text.
    pub fn pipeline(&self, extra: &str) -> oscarflow::config::PipelineConfig {
        let text = format!(
            "{}\n[archive]\n{}",
            oscarflow::cli::DEFAULT_LAB_PIPELINE,
            self.table(extra)
        );
        set_credentials();
        oscarflow::config::load_str(std::path::Path::new("archived.toml"), &text)
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    /// An archive configuration for this server (from the `[archive]` body).
    pub fn config(&self, extra: &str) -> ArchiveConfig {
        let text = format!(
            "{}\n[archive]\n{}",
            oscarflow::cli::DEFAULT_LAB_PIPELINE,
            self.table(extra)
        );
        set_credentials();
        let cfg = oscarflow::config::load_str(std::path::Path::new("archive.toml"), &text)
            .unwrap_or_else(|d| panic!("{d:?}"));
        cfg.archive.expect("[archive] parsed")
    }

    /// A client for this server.
    pub fn archive(&self, extra: &str) -> RawArchive {
        RawArchive::new(&self.config(extra)).expect("archive client")
    }

    /// Every object in the bucket: (key, bytes).
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let a = self.archive("");
        let c = a.client();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = c
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_continuation_token(token.take())
                .send()
                .await
                .expect("list objects");
            for o in page.contents() {
                let key = o.key().unwrap_or_default().to_string();
                let body = c
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("get object")
                    .body
                    .collect()
                    .await
                    .expect("object body")
                    .into_bytes()
                    .to_vec();
                out.push((key, body));
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        out.sort();
        out
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
