//! `MllpConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::config::duration::deserialize_duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

/// MLLP start block.
pub const START: u8 = 0x0B;
/// MLLP end block (followed by a carriage return).
pub const END: u8 = 0x1C;

/// `[sources.<id>] type = "mllp"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// Address to listen on, e.g. `127.0.0.1:2575`.
    pub listen: String,
    /// Largest accepted frame (bytes between the start and end blocks).
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A connection that sends nothing for this long is closed (measured per read: a peer
    /// that sends a byte now and then is not idle; `frame_timeout` bounds that).
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub idle_timeout: Duration,
    /// Whole-frame deadline: from the start block of a frame to its end block (default 30 s;
    /// a real lab frame arrives in well under a second). A frame still unfinished then is
    /// discarded, never imported nor answered, and the connection closed (the sender sends
    /// it again, whole). Its clock restarts only after a frame completed; a frame abandoned
    /// and restarted on the same connection (a start block before the end block) goes on
    /// counting from the first start.
    #[serde(
        default = "default_frame_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub frame_timeout: Duration,
    /// Overall cap: connections open at once, all senders together (default 32). The
    /// listener keeps accepting at the cap: an idle connection (or one whose frame has been
    /// trickling in for seconds) of the sender holding the most connections gives way to the
    /// new one; when none can, the new connection is closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Per-sender cap: connections open at once from one IP address (default 8, at most
    /// `max_connections`). A sender at its cap gets a new connection only in place of its own
    /// longest-idle (or slowest) one.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// TLS: the server certificate chain (PEM). With `tls_key_file`, every connection must
    /// speak TLS.
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// TLS: the private key (PEM, PKCS#8).
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
}

fn default_max_frame() -> usize {
    16 * 1024 * 1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_frame_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    32
}
fn default_max_connections_per_peer() -> usize {
    8
}

impl MllpConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            v.push((
                format!(
                    "listen `{}` is not an address like 127.0.0.1:2575",
                    self.listen
                ),
                None,
            ));
        }
        if self.max_frame_bytes == 0 {
            v.push(("max_frame_bytes must be above zero".into(), None));
        }
        if self.max_connections == 0 {
            v.push(("max_connections must be at least 1".into(), None));
        }
        if self.idle_timeout.is_zero() {
            v.push(("idle_timeout must be above zero".into(), None));
        }
        if self.frame_timeout.is_zero() {
            v.push(("frame_timeout must be above zero".into(), None));
        }
        if self.max_connections_per_peer == 0 {
            v.push(("max_connections_per_peer must be at least 1".into(), None));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            v.push((
                "set both tls_cert_file and tls_key_file, or neither".into(),
                None,
            ));
        }
        v
    }
}
