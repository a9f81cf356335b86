//! [`SmsNotifier`]: a text per notice to the on-call number(s), through the same RingCentral
//! client the `ringcentral_sms` sink uses (JWT login, rate limits, retries of 429 and 5xx).
//! A text is short ([`Notice::sms_text`]): the summary and the console's link.

use async_trait::async_trait;

use super::{Notifier, NotifyError};
use crate::alerts::config::SmsConfig;
use crate::alerts::notice::Notice;
use crate::error::ErrorKind;
use crate::ringcentral::client::{Body, Group};
use crate::ringcentral::phone::to_e164;
use crate::ringcentral::RcClient;

const SMS: &str = "/restapi/v1.0/account/~/extension/~/sms";

pub struct SmsNotifier {
    client: RcClient,
    from: String,
    to: Vec<String>,
}

impl SmsNotifier {
    pub fn new(cfg: &SmsConfig) -> Result<Self, String> {
        for (key, var) in cfg.ringcentral.env_refs() {
            if std::env::var_os(var.get_ref()).is_none() {
                return Err(format!(
                    "alerts.sms.ringcentral: {key}: {}",
                    crate::secrets::unset(var.get_ref())
                ));
            }
        }
        let from = to_e164(&cfg.from)
            .map_err(|_| "alerts.sms: from is not a North American number".to_string())?;
        let to = cfg
            .to
            .iter()
            .map(|t| to_e164(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                "alerts.sms: to holds something that is not a North American number".to_string()
            })?;
        let client = RcClient::new(cfg.ringcentral.clone())
            .map_err(|e| format!("alerts.sms.ringcentral: {}", e.detail))?;
        Ok(SmsNotifier { client, from, to })
    }
}

#[async_trait]
impl Notifier for SmsNotifier {
    fn name(&self) -> &'static str {
        "sms"
    }

    async fn send(&self, n: &Notice) -> Result<(), NotifyError> {
        let text = n.sms_text();
        for to in &self.to {
            let payload = serde_json::json!({
                "from": {"phoneNumber": self.from},
                "to": [{"phoneNumber": to}],
                "text": text,
                "country": {"isoCode": "CA"},
            });
            self.client
                .call(
                    Group::Medium,
                    reqwest::Method::POST,
                    SMS,
                    Body::Json(payload),
                )
                .await
                .map_err(|e| match e.kind {
                    ErrorKind::Transient => {
                        NotifyError::transient(format!("RingCentral SMS: {}", e.detail))
                    }
                    _ => NotifyError::fatal(format!("RingCentral SMS: {}", e.detail)),
                })?;
        }
        Ok(())
    }
}
