//! A real OpenSSH server on a loopback port for SFTP tests: its own host key, a client key
//! in `authorized_keys`, `internal-sftp`, started with `sshd -D -e -f <config>` and killed
//! when dropped. Plus a TCP proxy that can cut a connection after N bytes (a connection
//! killed mid-transfer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_spanned::Spanned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use oscarflow::sources::sftp::{RemoteAfter, SftpConfig};
use tokio::net::{TcpListener, TcpStream};

pub struct Sshd {
    child: Child,
    sshd: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    pub user: String,
    pub client_key: PathBuf,
    /// `type base64` of the server's host key.
    pub host_key_line: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sshd -D` on `dir/sshd_config` and waits until it listens on `port`.
fn spawn(sshd: &Path, dir: &Path, port: u16) -> Child {
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("sshd starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The processes descended from `pid` (from `/proc/<pid>/stat`), deepest first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the command may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            out.push(p);
            frontier.push(p);
        }
    }
    out.reverse();
    out
}

fn sshd_path() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-m", "PEM", "-f",
        ])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts a server under `dir`; `None` (with a notice) when OpenSSH is not installed
    /// outside CI. In CI a missing server is a failure (`.ci/run` installs it).
    pub fn start(dir: &Path) -> Option<Sshd> {
        let Some(sshd) = sshd_path() else {
            if std::env::var_os("CI").is_some() {
                panic!("sshd is not installed: .ci/run installs openssh-server");
            }
            eprintln!("skipping: OpenSSH server (sshd) is not installed");
            return None;
        };
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let port = super::free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nMaxStartups 100\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let child = spawn(&sshd, &dir, port);
        let pubkey = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_key_line = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Some(Sshd {
            child,
            sshd,
            port,
            user,
            client_key: dir.join("client_key"),
            host_key_line,
            dir,
        })
    }

    /// Kills the server with SIGKILL, its session processes too (every transfer in progress
    /// dies with it): the machine lost its SSH server.
    pub fn kill(&mut self) {
        for p in descendants(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.sshd, &self.dir, self.port);
    }

    /// An SFTP source's settings for this server (through `port`: the server's or a
    /// proxy's), taking `*.hl7` from `remote` and deleting them once committed.
    pub fn sftp_config(&self, port: u16, remote: &Path, spool: &Path, tag: &str) -> SftpConfig {
        let user_var = format!("OSCARFLOW_T_SFTP_{tag}_USER");
        std::env::set_var(&user_var, &self.user);
        SftpConfig {
            host: "127.0.0.1".into(),
            port,
            user_env: Spanned::new(0..0, user_var),
            private_key: Some(self.client_key.clone()),
            private_key_passphrase_env: None,
            password_env: None,
            known_hosts: self.known_hosts(port),
            remote_dir: remote.display().to_string(),
            pattern: "*.hl7".into(),
            after: RemoteAfter::Delete,
            archive_dir: None,
            spool_dir: spool.to_path_buf(),
            poll_interval: Duration::from_millis(100),
            min_age: Duration::ZERO,
            retry_after: Duration::from_secs(1),
            max_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(20),
            max_input_bytes: oscarflow::sources::oversize::DEFAULT_MAX_INPUT_BYTES,
        }
    }

    /// A known_hosts file pinning this server's key for `port` (the server's or a proxy's).
    pub fn known_hosts(&self, port: u16) -> PathBuf {
        let p = self.dir.join(format!("known_hosts_{port}"));
        std::fs::write(&p, format!("[127.0.0.1]:{port} {}\n", self.host_key_line)).unwrap();
        p
    }

    /// A known_hosts file with a different key for the same address (a replaced server).
    pub fn wrong_known_hosts(&self, port: u16) -> PathBuf {
        let other = self.dir.join("other_host_key");
        if !other.exists() {
            keygen(&other);
        }
        let line = std::fs::read_to_string(other.with_extension("pub")).unwrap();
        let line = line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let p = self.dir.join(format!("wrong_known_hosts_{port}"));
        std::fs::write(&p, format!("[127.0.0.1]:{port} {line}\n")).unwrap();
        p
    }
}

/// A loopback TCP proxy to `target` that cuts the first connection after `cut_after` bytes
/// from the server; later connections pass through.
pub struct CuttingProxy {
    pub port: u16,
    pub cuts: Arc<AtomicU64>,
}

impl CuttingProxy {
    pub async fn start(target: SocketAddr, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let c = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let cut = armed.swap(false, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut && sent + n as u64 > cut_after {
                            c.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                    up.abort();
                });
            }
        });
        CuttingProxy { port, cuts }
    }
}
