//! [`EmailNotifier`]: one e-mail per notice through an SMTP relay (`lettre`), with
//! STARTTLS (required, not opportunistic), implicit TLS, or — to a relay on loopback only —
//! no encryption. The login comes from the environment.

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notifier, NotifyError};
use crate::alerts::config::{EmailConfig, SmtpTls};
use crate::alerts::notice::Notice;

pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// The value of environment variable `var` (`what` names the setting in the error).
fn env(var: &str, what: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("alerts.email: {what}: {}", crate::secrets::unset(var)))
}

impl EmailNotifier {
    /// Reads the login from the environment and sets up the transport (no connection yet).
    pub fn new(cfg: &EmailConfig) -> Result<Self, String> {
        let builder = match cfg.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.server)
                .map_err(|e| format!("alerts.email: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.server)
                .map_err(|e| format!("alerts.email: {e}"))?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.server),
        };
        let port = cfg.port.unwrap_or(match cfg.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let mut builder = builder.port(port).timeout(Some(cfg.timeout));
        if let (Some(u), Some(p)) = (&cfg.username_env, &cfg.password_env) {
            builder = builder.credentials(Credentials::new(
                env(u, "username_env")?,
                env(p, "password_env")?,
            ));
        }
        let from = cfg
            .from
            .parse()
            .map_err(|_| "alerts.email: from is not an e-mail address".to_string())?;
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                "alerts.email: to holds something that is not an e-mail address".to_string()
            })?;
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            to,
        })
    }
}

/// A PHI-free text for an SMTP failure, and whether to try again.
fn classify(e: &lettre::transport::smtp::Error) -> NotifyError {
    let code = e.status().map(|c| c.to_string());
    if e.is_permanent() {
        NotifyError::fatal(format!(
            "SMTP server refused the message ({})",
            code.as_deref().unwrap_or("5xx")
        ))
    } else if e.is_transient() {
        NotifyError::transient(format!(
            "SMTP server deferred the message ({})",
            code.as_deref().unwrap_or("4xx")
        ))
    } else if e.is_timeout() {
        NotifyError::transient("SMTP: timed out")
    } else if e.is_tls() {
        NotifyError::transient("SMTP: TLS failed (is the server's certificate trusted?)")
    } else {
        NotifyError::transient(format!("SMTP: {e}"))
    }
}

#[async_trait]
impl Notifier for EmailNotifier {
    fn name(&self) -> &'static str {
        "email"
    }

    async fn send(&self, n: &Notice) -> Result<(), NotifyError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.subject())
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.clone());
        }
        let m = b
            .body(n.text())
            .map_err(|_| NotifyError::fatal("e-mail: cannot build the message"))?;
        self.transport
            .send(m)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}
