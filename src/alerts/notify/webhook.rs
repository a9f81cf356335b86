//! [`WebhookNotifier`]: a JSON POST per notice ([`Notice::to_json`]: a `text` that Slack,
//! Mattermost, Teams and most chat tools show as is, the fields under `oscarflow`). The URL
//! (which for chat tools is itself a secret) and an optional bearer token come from the
//! environment; neither ever appears in an error.

use async_trait::async_trait;

use super::{Notifier, NotifyError};
use crate::alerts::config::{webhook_url_problem, WebhookConfig};
use crate::alerts::notice::Notice;

pub struct WebhookNotifier {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl WebhookNotifier {
    pub fn new(cfg: &WebhookConfig) -> Result<Self, String> {
        let url = match (&cfg.url_env, &cfg.url) {
            (Some(var), _) => std::env::var(var)
                .map_err(|_| format!("alerts.webhook: url_env: {}", crate::secrets::unset(var)))?,
            (None, Some(u)) => u.clone(),
            (None, None) => return Err("alerts.webhook: set url_env or url".into()),
        };
        if let Some(p) = webhook_url_problem(&url) {
            return Err(format!("alerts.webhook: the URL {p}"));
        }
        let token = match &cfg.token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("alerts.webhook: token_env: {}", crate::secrets::unset(var))
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("alerts.webhook: {}", e.without_url()))?;
        Ok(WebhookNotifier { http, url, token })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notice) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&n.to_json())
            .map_err(|_| NotifyError::fatal("webhook: cannot encode the notice"))?;
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NotifyError::transient(format!("webhook: {}", e.without_url())))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s @ (408 | 429 | 500..=599) => {
                Err(NotifyError::transient(format!("webhook: HTTP {s}")))
            }
            s => Err(NotifyError::fatal(format!("webhook: HTTP {s}"))),
        }
    }
}
