//! Certificates that expire: [`configured`] lists every certificate file the pipelines and
//! the database URL name (the Excelleris client identity and trust store, the IHA POI trust
//! store, the MLLP listener's certificate, the database's `ssl-ca`), and [`not_after`]
//! reads the earliest expiry among a file's certificates (PEM, DER or PKCS#12).
//!
//! `oscarflow check` warns of those expiring within `certificate_warning` ([`warnings`]), and
//! the alerts' certificate rule fires for them ([`conditions`]). Only the file's path, where
//! it is configured and its date are ever shown: never its subject.

use std::path::PathBuf;

use openssl::asn1::Asn1Time;
use openssl::x509::X509;

use super::config::Rule;
use super::engine::Condition;
use crate::config::PipelineConfig;
use crate::sources::SourceConfig;

/// One configured certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// Where it is configured: `pipeline labs, source pull: client_identity`.
    pub origin: String,
    pub path: PathBuf,
    /// The environment variable holding its PKCS#12 password, if it has one.
    pub password_env: Option<String>,
}

/// Every certificate file of `pipelines` and of the database URLs (`ssl-ca=`), each path
/// once.
pub fn configured(pipelines: &[PipelineConfig], database_urls: &[String]) -> Vec<CertFile> {
    let mut out: Vec<CertFile> = Vec::new();
    let mut add = |origin: String, path: &PathBuf, password_env: Option<String>| {
        if !path.as_os_str().is_empty() && !out.iter().any(|c| &c.path == path) {
            out.push(CertFile {
                origin,
                path: path.clone(),
                password_env,
            });
        }
    };
    for p in pipelines {
        for s in &p.sources {
            let at = |setting: &str| format!("pipeline {}, source {}: {setting}", p.name, s.id);
            match &s.config {
                SourceConfig::Excelleris(c) => {
                    add(
                        at("client_identity"),
                        &c.client_identity,
                        c.client_identity_password_env
                            .as_ref()
                            .map(|v| v.get_ref().clone()),
                    );
                    add(at("trust_store"), &c.trust_store, None);
                }
                SourceConfig::IhaPoi(c) => {
                    if let Some(t) = &c.trust_store {
                        add(at("trust_store"), t, None);
                    }
                }
                SourceConfig::Mllp(c) => {
                    if let Some(t) = &c.tls_cert_file {
                        add(at("tls_cert_file"), t, None);
                    }
                }
                _ => {}
            }
        }
    }
    for u in database_urls {
        let Ok(url) = url::Url::parse(u) else {
            continue;
        };
        for (k, v) in url.query_pairs() {
            if matches!(k.as_ref(), "ssl-ca" | "sslca") && !v.is_empty() {
                add(
                    "the database URL: ssl-ca".into(),
                    &PathBuf::from(v.as_ref()),
                    None,
                );
            }
        }
    }
    out
}

/// Seconds since the Unix epoch of `t`.
fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|_| "cannot compute a date".to_string())?;
    let d = epoch
        .diff(t)
        .map_err(|_| "cannot compute a date".to_string())?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The earliest `notAfter` (Unix seconds) among the file's certificates. Errors are
/// PHI-free and never show the file's content.
pub fn not_after(file: &CertFile) -> Result<i64, String> {
    let bytes = std::fs::read(&file.path).map_err(|e| format!("cannot read: {e}"))?;
    let certs: Vec<X509> = if bytes
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        X509::stack_from_pem(&bytes).map_err(|_| "not a PEM certificate file".to_string())?
    } else if let Ok(c) = X509::from_der(&bytes) {
        vec![c]
    } else {
        let p12 = openssl::pkcs12::Pkcs12::from_der(&bytes)
            .map_err(|_| "neither PEM, DER nor PKCS#12".to_string())?;
        let password = file
            .password_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .unwrap_or_default();
        let parsed = p12
            .parse2(&password)
            .map_err(|_| "PKCS#12 file: cannot open it with its password".to_string())?;
        parsed
            .cert
            .into_iter()
            .chain(parsed.ca.into_iter().flatten())
            .collect()
    };
    let mut earliest: Option<i64> = None;
    for c in &certs {
        let t = unix_of(c.not_after())?;
        earliest = Some(earliest.map_or(t, |e| e.min(t)));
    }
    earliest.ok_or_else(|| "holds no certificate".to_string())
}

/// A configured certificate expiring soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub file: CertFile,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl Expiring {
    /// Whole days left (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    fn date(&self) -> String {
        super::notice::utc(
            std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(self.not_after.max(0) as u64),
        )
    }

    /// `check`'s line.
    pub fn warning(&self, now: i64) -> String {
        let days = self.days_left(now);
        let when = if self.not_after <= now {
            format!("expired on {}", self.date())
        } else {
            format!("expires on {} (in {days} day(s))", self.date())
        };
        format!(
            "{}: warning: certificate ({}) {when}: renew it",
            self.file.path.display(),
            self.file.origin
        )
    }
}

/// The files among `files` whose earliest certificate expires within `warn_secs` of `now`
/// (Unix seconds). Files that cannot be read are left out: their component reports them.
pub fn expiring(files: &[CertFile], warn_secs: u64, now: i64) -> Vec<Expiring> {
    files
        .iter()
        .filter_map(|f| match not_after(f) {
            Ok(t) => Some(Expiring {
                file: f.clone(),
                not_after: t,
            }),
            Err(e) => {
                tracing::debug!(path = %f.path.display(), error = %e, "Cannot read the certificate's expiry.");
                None
            }
        })
        .filter(|e| e.not_after <= now.saturating_add(warn_secs as i64))
        .collect()
}

/// `check`'s warnings for `files`.
pub fn warnings(files: &[CertFile], warn_secs: u64) -> Vec<String> {
    let now = unix_now();
    expiring(files, warn_secs, now)
        .iter()
        .map(|e| e.warning(now))
        .collect()
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The certificate rule's conditions.
pub fn conditions(files: &[CertFile], warn_secs: u64) -> Vec<Condition> {
    let now = unix_now();
    expiring(files, warn_secs, now)
        .into_iter()
        .map(|e| {
            let state = if e.not_after <= now {
                "expired"
            } else {
                "expiring"
            };
            Condition {
                rule: Rule::Certificates,
                key: format!("certificates:{}", e.file.path.display()),
                summary: format!(
                    "certificate {state}: {} ({}), not valid after {}",
                    e.file.origin,
                    e.file.path.display(),
                    e.date()
                ),
                details: vec![
                    ("configured at".into(), e.file.origin.clone()),
                    ("file".into(), e.file.path.display().to_string()),
                    ("not valid after".into(), e.date()),
                    ("days left".into(), e.days_left(now).max(0).to_string()),
                ],
                page: "",
                since: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::X509NameBuilder;

    /// A self-signed certificate valid for `days`, as (PEM, DER, PKCS#12 with `pw`).
    fn cert(days: u32, pw: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "clinic1").unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let c = b.build();
        let p12 = openssl::pkcs12::Pkcs12::builder()
            .name("x")
            .pkey(&key)
            .cert(&c)
            .build2(pw)
            .unwrap();
        (
            c.to_pem().unwrap(),
            c.to_der().unwrap(),
            p12.to_der().unwrap(),
        )
    }

    fn file(dir: &std::path::Path, name: &str, bytes: &[u8], pw: Option<&str>) -> CertFile {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        CertFile {
            origin: format!("test {name}"),
            path,
            password_env: pw.map(String::from),
        }
    }

    #[test]
    fn expiry_is_read_from_pem_der_and_pkcs12_and_only_soon_ones_warn() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("OSCARFLOW_T_CERTS_P12_PW", "s3cret");
        let (pem10, der10, p12_10) = cert(10, "s3cret");
        let (pem90, _, _) = cert(90, "x");
        let files = vec![
            file(dir.path(), "soon.pem", &pem10, None),
            file(dir.path(), "soon.der", &der10, None),
            file(
                dir.path(),
                "soon.p12",
                &p12_10,
                Some("OSCARFLOW_T_CERTS_P12_PW"),
            ),
            file(dir.path(), "later.pem", &pem90, None),
            file(dir.path(), "garbage.pem", b"not a certificate", None),
        ];
        let now = unix_now();
        let left = (not_after(&files[0]).unwrap() - now) / 86_400;
        assert!((9..=10).contains(&left), "{left}");
        let month = 30 * 86_400;
        let soon: Vec<String> = expiring(&files, month, now)
            .iter()
            .map(|e| e.file.path.file_name().unwrap().to_string_lossy().into())
            .collect();
        assert_eq!(soon, ["soon.pem", "soon.der", "soon.p12"]);
        let w = warnings(&files, month);
        assert_eq!(w.len(), 3);
        assert!(
            w[0].contains("warning: certificate (test soon.pem) expires on"),
            "{}",
            w[0]
        );
        assert!(!w[0].contains("clinic1"), "no subject: {}", w[0]);
        let c = conditions(&files, month);
        assert_eq!(c.len(), 3);
        assert!(c[0].key.ends_with("soon.pem"));
    }

    #[test]
    fn the_excelleris_identity_and_the_database_ca_are_configured_certificates() {
        let text = "[sources.pull]\ntype = \"excelleris\"\nurl = \"https://api.bctest.excelleris.com/hl7pull.aspx\"\nuser_env = \"OSCARFLOW_T_CERTCFG_U\"\npassword_env = \"OSCARFLOW_T_CERTCFG_P\"\nclient_identity = \"/etc/oscarflow/client.p12\"\nclient_identity_password_env = \"OSCARFLOW_T_CERTCFG_P12\"\ntrust_store = \"/etc/oscarflow/excelleris-ca.pem\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"pull\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n";
        for v in [
            "OSCARFLOW_T_CERTCFG_U",
            "OSCARFLOW_T_CERTCFG_P",
            "OSCARFLOW_T_CERTCFG_P12",
        ] {
            std::env::set_var(v, "set");
        }
        let p = crate::config::load_str(std::path::Path::new("labs.toml"), text).unwrap();
        let files = configured(
            &[p],
            &["mysql://u:pw@db:3306/oscar?ssl-mode=verify_identity&ssl-ca=/etc/oscarflow/db-ca.pem"
                .to_string()],
        );
        let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/etc/oscarflow/client.p12",
                "/etc/oscarflow/excelleris-ca.pem",
                "/etc/oscarflow/db-ca.pem"
            ]
        );
        assert_eq!(
            files[0].password_env.as_deref(),
            Some("OSCARFLOW_T_CERTCFG_P12")
        );
        assert_eq!(
            files[0].origin,
            "pipeline labs, source pull: client_identity"
        );
        assert!(files.iter().all(|f| !f.origin.contains("pw")));
    }
}
