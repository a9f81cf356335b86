//! Sending faxes (CONTRACTS.md §5): `POST …/fax` as multipart (the SDKs' layout: the JSON
//! envelope as `request.json`, then the document), the message id kept, the status read back
//! from the message store until it is final (`Queued` → `Sent` | `SendingFailed`), and a
//! lookup of recently sent faxes by recipient name, used to settle a send whose outcome is
//! unknown (the connection broke after the request went out) without sending twice.

use serde::Deserialize;

use super::client::{Body, Group, RcClient, RcError};
use super::messages::{list_pages, MESSAGE_STORE};

const FAX: &str = "/restapi/v1.0/account/~/extension/~/fax";

/// A fax to send.
#[derive(Debug, Clone)]
pub struct FaxRequest {
    /// E.164, `+1…`.
    pub to: String,
    /// The recipient name RingCentral keeps with the message (and prints on a cover page when
    /// one is used). oscarflow puts its own reference here to find the fax again.
    pub name: String,
    pub file_name: String,
    pub content_type: String,
    pub bytes: bytes::Bytes,
    /// `0`: no cover page (OSCAR's documents carry their own).
    pub cover_index: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fax_error_code: Option<String>,
    #[serde(default)]
    message_status: Option<String>,
}

/// The parts of a fax message record that sending needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaxMessage {
    pub id: i64,
    #[serde(default)]
    pub message_status: String,
    #[serde(default)]
    pub fax_page_count: Option<u32>,
    #[serde(default)]
    pub creation_time: String,
    #[serde(default)]
    to: Vec<Recipient>,
}

impl FaxMessage {
    /// The first recipient's `faxErrorCode` (set on `SendingFailed`).
    pub fn error_code(&self) -> Option<&str> {
        self.to.iter().find_map(|r| r.fax_error_code.as_deref())
    }

    /// Whether a recipient carries `name`.
    pub fn is_for(&self, name: &str) -> bool {
        self.to.iter().any(|r| r.name.as_deref() == Some(name))
    }

    /// The status, aggregated over recipients as RingCentral does when the top-level field is
    /// missing.
    pub fn status(&self) -> &str {
        if !self.message_status.is_empty() {
            return &self.message_status;
        }
        let all: Vec<&str> = self
            .to
            .iter()
            .filter_map(|r| r.message_status.as_deref())
            .collect();
        if all.contains(&"Queued") {
            "Queued"
        } else if all.contains(&"SendingFailed") {
            "SendingFailed"
        } else if all.is_empty() {
            "Queued"
        } else {
            "Sent"
        }
    }
}

/// Sends one fax (Heavy group). The message comes back `Queued`.
pub async fn send_fax(client: &RcClient, req: &FaxRequest) -> Result<FaxMessage, RcError> {
    let envelope = serde_json::json!({
        "to": [{"phoneNumber": req.to, "name": req.name}],
        "faxResolution": "High",
        "coverIndex": req.cover_index,
    });
    client
        .call(
            Group::Heavy,
            reqwest::Method::POST,
            FAX,
            Body::FaxMultipart {
                envelope,
                file_name: req.file_name.clone(),
                content_type: req.content_type.clone(),
                bytes: req.bytes.clone(),
            },
        )
        .await?
        .json()
}

/// Reads one message (Light group).
pub async fn get_message(client: &RcClient, id: i64) -> Result<FaxMessage, RcError> {
    client
        .call(
            Group::Light,
            reqwest::Method::GET,
            &format!("{MESSAGE_STORE}/{id}"),
            Body::None,
        )
        .await?
        .json()
}

/// The outbound fax created at or after `date_from` whose recipient name is `name`, if any
/// (Light group; every page).
pub async fn find_sent_by_name(
    client: &RcClient,
    date_from: &str,
    name: &str,
) -> Result<Option<FaxMessage>, RcError> {
    let mut found = None;
    list_pages(
        client,
        &[
            ("messageType", "Fax"),
            ("direction", "Outbound"),
            ("dateFrom", date_from),
            ("perPage", "1000"),
        ],
        |records: Vec<FaxMessage>| {
            found = records.into_iter().find(|m| m.is_for(name));
            found.is_none()
        },
    )
    .await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_and_error_code_are_read_from_the_record_or_its_recipients() {
        let m: FaxMessage = serde_json::from_str(r#"{"id":3349579004,"to":[{"phoneNumber":"+18005630003","name":"OSCAR fax 7","messageStatus":"SendingFailed","faxErrorCode":"NoAnswer"}],"type":"Fax","messageStatus":"SendingFailed","faxPageCount":0}"#).unwrap();
        assert_eq!(m.status(), "SendingFailed");
        assert_eq!(m.error_code(), Some("NoAnswer"));
        assert!(m.is_for("OSCAR fax 7"));
        assert!(!m.is_for("OSCAR fax 8"));
        let m: FaxMessage = serde_json::from_str(
            r#"{"id":1,"to":[{"messageStatus":"Sent"},{"messageStatus":"Queued"}]}"#,
        )
        .unwrap();
        assert_eq!(m.status(), "Queued");
        let m: FaxMessage =
            serde_json::from_str(r#"{"id":1,"to":[{"messageStatus":"Sent"}]}"#).unwrap();
        assert_eq!(m.status(), "Sent");
    }
}
