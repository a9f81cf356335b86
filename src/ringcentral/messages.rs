//! The message store (CONTRACTS.md §3): listing inbound faxes from a watermark, following the
//! pages RingCentral hands out.
//!
//! The listing asks for `messageType=Fax&direction=Inbound&dateFrom=<watermark>` and **no**
//! `readStatus` filter: a fax someone opened in the RingCentral app is `Read` and must still be
//! imported; and `dateFrom` is always sent, because the default window is only the last 24 h
//! (a weekend outage would lose faxes). Callers deduplicate by message id.

use serde::{Deserialize, Deserializer};

use super::client::{Body, Group, RcClient, RcError};

/// An id that RingCentral sends as a JSON number (REST) or a string (notifications).
fn flexible_id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        N(i64),
        S(String),
    }
    match Id::deserialize(d)? {
        Id::N(n) => Ok(n),
        Id::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// One attachment of a message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(deserialize_with = "flexible_id")]
    pub id: i64,
    /// Where to download it (often the media host): used exactly as given.
    pub uri: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// A party (`from`, `to[]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    #[serde(default)]
    pub phone_number: Option<String>,
}

/// One message-store record (the fields a fax import needs; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    #[serde(deserialize_with = "flexible_id")]
    pub id: i64,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub read_status: String,
    #[serde(default)]
    pub creation_time: String,
    #[serde(default)]
    pub last_modified_time: String,
    #[serde(default)]
    pub fax_page_count: Option<u32>,
    #[serde(default)]
    pub from: Option<Party>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Link {
    uri: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Navigation {
    #[serde(default)]
    next_page: Option<Link>,
}

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct Page<T> {
    records: Vec<T>,
    #[serde(default)]
    navigation: Navigation,
}

/// The message-store path of the token owner's extension.
pub const MESSAGE_STORE: &str = "/restapi/v1.0/account/~/extension/~/message-store";

/// Lists the message store with `query`, page after page (following `navigation.nextPage`),
/// handing each page's records to `visit` until it returns `false` or the pages end.
pub async fn list_pages<T, F>(
    client: &RcClient,
    query: &[(&str, &str)],
    mut visit: F,
) -> Result<(), RcError>
where
    T: serde::de::DeserializeOwned,
    F: FnMut(Vec<T>) -> bool,
{
    let mut url = url::Url::parse("http://placeholder/").expect("static URL");
    url.set_path(MESSAGE_STORE);
    url.query_pairs_mut().extend_pairs(query);
    let mut next = Some(format!("{}?{}", url.path(), url.query().unwrap_or("")));
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > 10_000 {
            break; // a server that never stops paging
        }
        let resp = client
            .call(Group::Light, reqwest::Method::GET, &path, Body::None)
            .await?;
        let page: Page<T> = resp.json()?;
        if !visit(page.records) {
            break;
        }
        next = page.navigation.next_page.map(|l| l.uri);
    }
    Ok(())
}

/// Every inbound fax created at or after `date_from` (RFC 3339, UTC), all pages, newest
/// first as RingCentral orders them.
pub async fn list_inbound_faxes(
    client: &RcClient,
    date_from: &str,
    per_page: u32,
) -> Result<Vec<MessageRecord>, RcError> {
    let per_page = per_page.clamp(1, 1000).to_string();
    let mut out = Vec::new();
    list_pages(
        client,
        &[
            ("messageType", "Fax"),
            ("direction", "Inbound"),
            ("dateFrom", date_from),
            ("perPage", &per_page),
            ("page", "1"),
        ],
        |records| {
            out.extend(records);
            true
        },
    )
    .await?;
    Ok(out)
}

/// Marks a message read (a courtesy signal to the clinic's RingCentral app; the import's own
/// record decides what was imported).
pub async fn mark_read(client: &RcClient, id: i64) -> Result<(), RcError> {
    client
        .call(
            Group::Medium,
            reqwest::Method::PUT,
            &format!("{MESSAGE_STORE}/{id}"),
            Body::Json(serde_json::json!({"readStatus": "Read"})),
        )
        .await
        .map(|_| ())
}

/// Streams a fax's attachment to `dest` (see [`RcClient::download_to`]).
pub async fn download_attachment(
    client: &RcClient,
    attachment: &Attachment,
    dest: &std::path::Path,
) -> Result<u64, RcError> {
    client
        .download_to(Group::Medium, &attachment.uri, dest)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_numeric_or_string_ids_and_ignore_unknown_fields() {
        let r: MessageRecord = serde_json::from_str(r#"{"uri":"x","id":5209304004,"type":"Fax","direction":"Inbound","readStatus":"Read","creationTime":"2018-10-08T09:17:27.000Z","faxPageCount":3,"from":{"phoneNumber":"+12138887464","name":"n"},"attachments":[{"id":"5209304004","uri":"https://media/x","type":"RenderedDocument","contentType":"application/pdf","size":48213}],"brandNew":{"a":1}}"#).unwrap();
        assert_eq!(r.id, 5209304004);
        assert_eq!(r.attachments[0].id, 5209304004);
        assert_eq!(r.fax_page_count, Some(3));
        assert_eq!(r.read_status, "Read");
    }
}
