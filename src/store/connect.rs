//! Why a connection to MySQL/MariaDB failed, in words an operator can act on.
//!
//! The driver's errors say little ("pool timed out", "database tls error") or too much (a
//! server message). [`cause`] names the cause — authentication refused, server unreachable,
//! a TLS failure — with the host, port, user and the `ssl-mode`/`ssl-ca` in force, which
//! [`Target`] reads from the URL. Never the password, never the raw URL.

use std::io::ErrorKind as Io;

/// What a MySQL URL asks for, as far as explaining a failed connection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`, or the Unix socket's path.
    pub address: String,
    pub user: String,
    /// `ssl-mode` as given, lower case; `preferred` (the driver's default) when absent.
    pub ssl_mode: String,
    /// `ssl-ca` as given (a file path).
    pub ssl_ca: Option<String>,
}

impl Target {
    /// Reads a `mysql://` URL; `None` when it does not parse (the caller then says less).
    pub fn from_url(url: &str) -> Option<Target> {
        let u = url::Url::parse(url).ok()?;
        let mut t = Target {
            address: format!(
                "{}:{}",
                u.host_str()
                    .filter(|h| !h.is_empty())
                    .unwrap_or("localhost"),
                u.port().unwrap_or(3306)
            ),
            user: percent_decoded(u.username()),
            ssl_mode: "preferred".into(),
            ssl_ca: None,
        };
        for (k, v) in u.query_pairs() {
            match &*k {
                "ssl-mode" | "sslmode" => t.ssl_mode = v.to_ascii_lowercase(),
                "ssl-ca" | "sslca" => t.ssl_ca = Some(v.into_owned()),
                "socket" => t.address = v.into_owned(),
                _ => {}
            }
        }
        Some(t)
    }

    /// True when the mode lets the connection go unencrypted.
    fn may_be_plain(&self) -> bool {
        matches!(self.ssl_mode.as_str(), "disabled" | "preferred")
    }

    fn ca_text(&self) -> String {
        match &self.ssl_ca {
            Some(ca) => format!("the CA in ssl-ca={ca} (nor by a CA this system trusts)"),
            None => "a CA this system trusts (no ssl-ca= is given: name the CA that signed the server's certificate with ssl-ca=/path/to/ca.pem)".into(),
        }
    }
}

fn percent_decoded(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// One line naming the cause of a failed connection to `t` (a MySQL URL's target; `None`
/// when the URL could not be read or is not MySQL's).
pub(crate) fn cause(t: Option<&Target>, e: &sqlx::Error) -> String {
    use sqlx::Error as E;
    let addr = t.map(|t| t.address.as_str()).unwrap_or("the server");
    match e {
        E::Database(db) => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number());
            let user = t.map(|t| t.user.as_str()).unwrap_or("");
            match number {
                Some(1045) => {
                    let mut s = format!(
                        "authentication refused: {addr} denied access to user `{user}` (wrong user name or password, or the account may not log in from this host; MySQL error 1045)"
                    );
                    if t.is_some_and(Target::may_be_plain) {
                        s.push_str(
                            "; if the account requires TLS (REQUIRE SSL), this connection may have been unencrypted: set ssl-mode=verify_identity (or required) in the URL",
                        );
                    }
                    s
                }
                Some(1044) => format!(
                    "access refused: user `{user}` has no rights on the database named in the URL (MySQL error 1044)"
                ),
                Some(1049) => {
                    "the database named in the URL does not exist (MySQL error 1049)".into()
                }
                Some(1040) => format!("{addr} has too many connections (MySQL error 1040)"),
                Some(1129) => format!(
                    "{addr} blocks this host after too many failed connections (MySQL error 1129; FLUSH HOSTS on the server)"
                ),
                _ => crate::error::describe_sqlx(e),
            }
        }
        E::Io(io) => match tls_error(io.get_ref()) {
            Some(tls) => tls_cause(t, addr, tls),
            None => io_cause(t, addr, io),
        },
        E::Tls(b) => match b.downcast_ref::<rustls::Error>() {
            Some(tls) => tls_cause(t, addr, tls),
            None if b.to_string().contains("does not support TLS") => {
                let mode = t.map(|t| t.ssl_mode.as_str()).unwrap_or("required");
                format!(
                    "TLS failure: {addr} does not offer TLS, and ssl-mode={mode} requires it (configure ssl_cert/ssl_key on the server)"
                )
            }
            None => format!("TLS failure with {addr}: {b}"),
        },
        E::Configuration(c) => format!("invalid database URL option: {c}"),
        E::Protocol(_) => format!(
            "{addr} did not answer as a MySQL/MariaDB server (protocol error); is that the database's port?"
        ),
        E::PoolTimedOut => format!("no working connection to {addr} within the timeout"),
        other => crate::error::describe_sqlx(other),
    }
}

/// The connection attempt never got an answer.
pub(crate) fn no_answer(t: Option<&Target>, secs: u64) -> String {
    let addr = t.map(|t| t.address.as_str()).unwrap_or("the server");
    format!("server unreachable: no answer from {addr} within {secs} s (host down, firewall, or wrong host/port)")
}

fn tls_error<'a>(
    inner: Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
) -> Option<&'a rustls::Error> {
    inner?.downcast_ref::<rustls::Error>()
}

fn io_cause(t: Option<&Target>, addr: &str, io: &std::io::Error) -> String {
    match io.kind() {
        Io::ConnectionRefused => format!(
            "server unreachable: connection refused at {addr} (is MariaDB running and listening there?)"
        ),
        Io::TimedOut => format!("server unreachable: no answer from {addr} (timed out)"),
        Io::HostUnreachable | Io::NetworkUnreachable => {
            format!("server unreachable: no route to {addr} ({io})")
        }
        Io::NotFound | Io::PermissionDenied if t.and_then(|t| t.ssl_ca.as_ref()).is_some() => {
            let ca = t.and_then(|t| t.ssl_ca.as_deref()).unwrap_or_default();
            format!("TLS failure: cannot read the CA file ssl-ca={ca} ({io})")
        }
        Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof => format!(
            "{addr} closed the connection during the handshake ({:?}); a TLS or protocol mismatch, or the server refused this host",
            io.kind()
        ),
        _ => format!("cannot reach {addr}: {io}"),
    }
}

fn tls_cause(t: Option<&Target>, addr: &str, e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let ca = t
        .map(Target::ca_text)
        .unwrap_or_else(|| "a trusted CA".into());
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "TLS failure: the server's certificate ({addr}) is not signed by {ca}"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "TLS failure: the server's certificate does not name the host in {addr} (ssl-mode=verify_identity): connect by a name or address the certificate carries"
            ),
            C::Expired | C::ExpiredContext { .. } => {
                format!("TLS failure: the server's certificate ({addr}) has expired")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("TLS failure: the server's certificate ({addr}) is not valid yet (check the clocks)")
            }
            C::Revoked => format!("TLS failure: the server's certificate ({addr}) is revoked"),
            other => format!("TLS failure: the server's certificate ({addr}) was refused: {other:?}"),
        },
        other => format!("TLS failure: the TLS handshake with {addr} failed: {other}"),
    }
}

/// The `ssl-mode` a MySQL URL gets when it names none: `disabled` to this machine (a
/// loopback address, `localhost` or a Unix socket), where nothing crosses a network and TLS
/// would only cost CPU; else the driver's `preferred` (encrypted whenever the server offers
/// TLS; `verify_identity` is what a remote server should be given). A URL that names a mode
/// keeps it.
pub(crate) fn default_ssl_mode(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return url.to_string();
    };
    // `mysql:` is not a special scheme to the URL parser: its host comes as text.
    let host = u.host_str().unwrap_or("localhost");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut local = host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    let mut named = false;
    for (k, _) in u.query_pairs() {
        match &*k {
            "ssl-mode" | "sslmode" => named = true,
            "socket" => local = true,
            _ => {}
        }
    }
    if named || !local {
        return url.to_string();
    }
    let sep = if u.query().is_some() { '&' } else { '?' };
    format!("{url}{sep}ssl-mode=disabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::from_url(url).unwrap()
    }

    #[test]
    fn the_target_names_host_port_user_and_tls_settings_but_never_the_password() {
        let t = target(
            "mysql://oscar:s3cret@db.clinic.example:3307/oscar?ssl-mode=VERIFY_CA&ssl-ca=/etc/ca.pem",
        );
        assert_eq!(t.address, "db.clinic.example:3307");
        assert_eq!(t.user, "oscar");
        assert_eq!(t.ssl_mode, "verify_ca");
        assert_eq!(t.ssl_ca.as_deref(), Some("/etc/ca.pem"));
        assert!(!format!("{t:?}").contains("s3cret"));
        let d = target("mysql://oscar@127.0.0.1/oscar");
        assert_eq!(d.address, "127.0.0.1:3306");
        assert_eq!(d.ssl_mode, "preferred");
    }

    #[test]
    fn a_refused_connection_is_reported_as_an_unreachable_server_with_its_address() {
        let t = target("mysql://oscar:s3cret@10.0.0.5:3306/oscar");
        let e = sqlx::Error::Io(std::io::Error::from(Io::ConnectionRefused));
        let m = cause(Some(&t), &e);
        assert!(m.contains("server unreachable"), "{m}");
        assert!(m.contains("10.0.0.5:3306"), "{m}");
        assert!(!m.contains("s3cret"), "{m}");
        let m = no_answer(Some(&t), 15);
        assert!(m.contains("no answer from 10.0.0.5:3306"), "{m}");
    }

    #[test]
    fn an_unknown_issuer_says_the_certificate_is_not_signed_by_the_ca_in_ssl_ca() {
        let t = target("mysql://oscar:pw@db:3306/oscar?ssl-mode=verify_ca&ssl-ca=/etc/ca.pem");
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = sqlx::Error::Io(std::io::Error::new(Io::InvalidData, tls));
        let m = cause(Some(&t), &e);
        assert!(
            m.contains("not signed by the CA in ssl-ca=/etc/ca.pem"),
            "{m}"
        );
    }

    #[test]
    fn a_server_without_tls_is_named_when_tls_is_required() {
        let t = target("mysql://oscar:pw@db:3306/oscar?ssl-mode=required");
        let e = sqlx::Error::Tls("server does not support TLS".into());
        let m = cause(Some(&t), &e);
        assert!(m.contains("does not offer TLS"), "{m}");
        assert!(m.contains("ssl-mode=required"), "{m}");
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let t = target("mysql://oscar:pw@db:3306/oscar?ssl-mode=verify_ca&ssl-ca=/nope/ca.pem");
        let e = sqlx::Error::Io(std::io::Error::from(Io::NotFound));
        let m = cause(Some(&t), &e);
        assert!(
            m.contains("cannot read the CA file ssl-ca=/nope/ca.pem"),
            "{m}"
        );
    }

    #[test]
    fn a_url_to_this_machine_defaults_to_plain_and_one_to_another_host_keeps_the_drivers_default() {
        assert_eq!(
            default_ssl_mode("mysql://u:p@127.0.0.1:3306/db"),
            "mysql://u:p@127.0.0.1:3306/db?ssl-mode=disabled"
        );
        assert_eq!(
            default_ssl_mode("mysql://u@localhost/db?charset=utf8mb4"),
            "mysql://u@localhost/db?charset=utf8mb4&ssl-mode=disabled"
        );
        assert_eq!(
            default_ssl_mode("mysql://u@db.clinic.example/oscar"),
            "mysql://u@db.clinic.example/oscar"
        );
        assert_eq!(
            default_ssl_mode("mysql://u@127.0.0.1/db?ssl-mode=required"),
            "mysql://u@127.0.0.1/db?ssl-mode=required"
        );
        assert_eq!(
            default_ssl_mode("mysql://u@10.0.0.5/db"),
            "mysql://u@10.0.0.5/db"
        );
        assert_eq!(
            default_ssl_mode("mysql://u@[::1]:3306/db"),
            "mysql://u@[::1]:3306/db?ssl-mode=disabled"
        );
    }
}
