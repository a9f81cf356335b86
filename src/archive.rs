//! The raw archive: [`RawArchive`] keeps every inbound raw input (HL7 file, fax PDF) in an
//! S3 bucket (AWS S3 or any S3-compatible store) **before** the input enters the pipeline.
//!
//! ## Where and why at the outlet
//!
//! A pipeline with an `[archive]` table gives each source's [`crate::sources::Outlet`] an
//! [`ArchiveHook`]. `Outlet::send` puts the envelope's raw input into the archive first and
//! only then hands the envelope to the first stage. An input is released by its source (file
//! deleted, fax marked read, batch acknowledged, MLLP `AA` sent) only after its batch
//! resolved, which needs the sink's commit, which needs the envelope to have been sent — which
//! needs the archive put to have succeeded. So **no input can be released before it is
//! archived**, and nothing else in the pipeline has to know about the archive.
//!
//! If the put still fails after its retries, the envelope is *not* sent: it is dropped, its
//! ack token fails the batch, and `send` returns [`crate::sources::SendError::Archive`]. The
//! source keeps the input and delivers it again later (the folder and SFTP sources after
//! `retry_after`, the pull sources at their next poll, MLLP answers `AE` so the peer resends).
//! An archive outage therefore stops intake; it never loses or skips an input.
//!
//! ## Keys and idempotency
//!
//! An object's key is `{prefix}{pipeline}/{YYYY}/{MM}/{DD}/{sha256}`: the pipeline name, the
//! UTC date the source received the input and the SHA-256 of its bytes (the provenance's
//! content hash). No PHI is ever part of a key. The same input received again the same day
//! maps to the same key; before uploading, a `HEAD` asks whether that object is already there
//! with the same size, and if so the upload is skipped (a re-delivery after a downstream
//! failure costs one small request). A `HEAD` that fails for any reason (including a
//! credential allowed to write but not to read) simply falls through to the upload, which
//! overwrites an object with identical bytes. A re-delivery on a later day is archived again
//! under that day.
//!
//! ## Integrity, encryption, retries
//!
//! Each upload carries `x-amz-checksum-sha256` computed from the content hash the source
//! already made, so the store rejects a body corrupted in transit (and the SDK adds no
//! second checksum). Server-side encryption (`AES256` or `aws:kms` with an optional key id)
//! is requested per object when configured. A spooled fax is streamed from its file, never
//! read whole into memory.
//!
//! Timeouts, connection errors, HTTP 5xx, throttling and checksum mismatches are transient:
//! retried with exponential backoff and full jitter up to `retry.max_attempts`, then an
//! [`ArchiveError`] of kind `Transient`. Errors that no retry fixes (access denied, no such
//! bucket) are not retried and have kind `Fatal`; the source treats both the same way (keeps
//! the input). Error texts and logs hold the bucket, the key (pipeline, date, hash), the HTTP
//! status and the S3 error code — never message content or credentials. Credentials are
//! read from the environment variables the config names, once, when the pipeline is built.
//!
//! Metrics: `oscarflow_archive_objects_total{pipeline}`, `oscarflow_archive_bytes_total{pipeline}`,
//! `oscarflow_archive_failures_total{pipeline}` (puts that failed after their retries) and the
//! `oscarflow_archive_duration_seconds` histogram (one archive call, retries included).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use base64::Engine;
use serde::Deserialize;
use serde_spanned::Spanned;
use time::OffsetDateTime;

use crate::config::duration::deserialize_duration;
use crate::envelope::Envelope;
use crate::error::{Classify, ErrorKind};
use crate::retry::backoff;
use crate::retry::RetrySettings;
use crate::telemetry::{counter, histogram, MetricName};

/// Server-side encryption requested for each archived object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Sse {
    /// S3-managed keys.
    #[serde(rename = "AES256")]
    Aes256,
    /// KMS-managed keys (`sse_kms_key_id`, or the bucket's default KMS key).
    #[serde(rename = "aws:kms")]
    Kms,
}

/// The `[archive]` table of a pipeline file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Bucket name.
    pub bucket: Spanned<String>,
    /// Prepended to every key; a `/` is added when it does not end with one.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, a local test server). Without
    /// it, AWS S3 in `region`.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Environment variable holding the access key id.
    pub access_key_id_env: Spanned<String>,
    /// Environment variable holding the secret access key.
    pub secret_access_key_env: Spanned<String>,
    /// Environment variable holding a session token (temporary credentials).
    #[serde(default)]
    pub session_token_env: Option<Spanned<String>>,
    /// Path-style URLs (`endpoint/bucket/key`), as most S3-compatible stores need.
    #[serde(default)]
    pub force_path_style: bool,
    /// `"AES256"` or `"aws:kms"`; none by default (the bucket's default applies).
    #[serde(default)]
    pub server_side_encryption: Option<Sse>,
    /// KMS key id or ARN; only with `server_side_encryption = "aws:kms"`.
    #[serde(default)]
    pub sse_kms_key_id: Option<Spanned<String>>,
    /// Time limit of one request attempt.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Retries of transient failures before the source is told to keep the input.
    #[serde(default = "default_retry")]
    pub retry: RetrySettings,
}

fn default_region() -> String {
    "ca-central-1".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retry() -> RetrySettings {
    RetrySettings {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(30),
    }
}

impl ArchiveConfig {
    /// Environment variables this table needs: (field name, variable).
    pub fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        let mut v = vec![
            ("access_key_id_env", &self.access_key_id_env),
            ("secret_access_key_env", &self.secret_access_key_env),
        ];
        if let Some(t) = &self.session_token_env {
            v.push(("session_token_env", t));
        }
        v
    }

    /// Pure checks: (message, span).
    pub fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut out = Vec::new();
        let bucket = self.bucket.get_ref();
        if bucket.trim().is_empty() {
            out.push(("`bucket` is empty".into(), Some(self.bucket.span())));
        } else if bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
            out.push((
                "`bucket` is a bucket name, without `/` or spaces".into(),
                Some(self.bucket.span()),
            ));
        }
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e.get_ref()) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(_) => out.push((
                    "`endpoint` must be an http:// or https:// URL".into(),
                    Some(e.span()),
                )),
                Err(err) => out.push((format!("`endpoint` is not a URL: {err}"), Some(e.span()))),
            }
        }
        if self.region.trim().is_empty() {
            out.push(("`region` is empty".into(), None));
        }
        if let Some(k) = &self.sse_kms_key_id {
            if self.server_side_encryption != Some(Sse::Kms) {
                out.push((
                    "`sse_kms_key_id` needs `server_side_encryption = \"aws:kms\"`".into(),
                    Some(k.span()),
                ));
            }
        }
        if self.timeout.is_zero() {
            out.push(("`timeout` must be more than zero".into(), None));
        }
        if self.retry.max_attempts == 0 {
            out.push(("`retry.max_attempts` must be at least 1".into(), None));
        }
        out
    }
}

pub use crate::payload::capabilities::{Archivable, ArchiveBody};

/// The archive could not take an input (or could not be set up). PHI-free: bucket, key
/// (pipeline/date/hash), HTTP status and S3 error code only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("raw archive s3://{bucket}/{key}: {detail}")]
pub struct ArchiveError {
    pub kind: ErrorKind,
    pub bucket: String,
    pub key: String,
    pub detail: String,
}

impl Classify for ArchiveError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// An S3 client for one archive configuration.
#[derive(Debug, Clone)]
pub struct RawArchive {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    sse: Option<Sse>,
    kms_key: Option<String>,
    retry: RetrySettings,
}

impl RawArchive {
    /// Makes the client. Reads the credentials from the environment; a missing variable is
    /// an error naming the variable (never a value). No request is made here.
    pub fn new(cfg: &ArchiveConfig) -> Result<Self, ArchiveError> {
        let setup = |detail: String| ArchiveError {
            kind: ErrorKind::Fatal,
            bucket: cfg.bucket.get_ref().clone(),
            key: String::new(),
            detail,
        };
        let var = |v: &Spanned<String>, field: &str| {
            std::env::var(v.get_ref()).map_err(|_| {
                setup(format!(
                    "archive.{field}: {}",
                    crate::secrets::unset(v.get_ref())
                ))
            })
        };
        let access = var(&cfg.access_key_id_env, "access_key_id_env")?;
        let secret = var(&cfg.secret_access_key_env, "secret_access_key_env")?;
        let token = match &cfg.session_token_env {
            Some(t) => Some(var(t, "session_token_env")?),
            None => None,
        };
        let problems = cfg.validate();
        if let Some((msg, _)) = problems.into_iter().next() {
            return Err(setup(format!("archive: {msg}")));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(
                access,
                secret,
                token,
                None,
                "oscarflow-archive-env",
            ))
            .force_path_style(cfg.force_path_style)
            // One retry loop only: ours, which knows the budget and logs without PHI.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
                    .operation_attempt_timeout(cfg.timeout)
                    .build(),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e.get_ref().trim_end_matches('/'));
        }
        let mut prefix = cfg.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(RawArchive {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket.get_ref().clone(),
            prefix,
            sse: cfg.server_side_encryption,
            kms_key: cfg.sse_kms_key_id.as_ref().map(|k| k.get_ref().clone()),
            retry: cfg.retry.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying client (tests, tools).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The key of an input: `{prefix}{pipeline}/{YYYY}/{MM}/{DD}/{sha256}` (UTC date).
    pub fn key(&self, pipeline: &str, received: OffsetDateTime, sha256_hex: &str) -> String {
        let d = received.to_offset(time::UtcOffset::UTC).date();
        format!(
            "{}{pipeline}/{:04}/{:02}/{:02}/{sha256_hex}",
            self.prefix,
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }

    /// Archives one input; returns its key. Idempotent (see the module docs). Transient
    /// failures are retried with backoff; the error after the last attempt is `Transient`.
    pub async fn put(
        &self,
        pipeline: &str,
        received: OffsetDateTime,
        sha256_hex: &str,
        body: ArchiveBody,
    ) -> Result<String, ArchiveError> {
        let started = Instant::now();
        let key = self.key(pipeline, received, sha256_hex);
        let checksum = hex::decode(sha256_hex)
            .ok()
            .filter(|d| d.len() == 32)
            .map(|d| base64::engine::general_purpose::STANDARD.encode(d));
        let Some(checksum) = checksum else {
            return Err(self.error(&key, ErrorKind::Data, "the content hash is not SHA-256 hex"));
        };
        let attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.try_put(&key, &checksum, &body).await {
                Ok(uploaded) => break Ok(uploaded),
                Err((kind, detail)) if kind == ErrorKind::Transient && attempt < attempts => {
                    let delay = backoff(&self.retry, attempt);
                    tracing::warn!(pipeline, bucket = %self.bucket, key = %key, attempt, error = %detail, delay_ms = delay.as_millis() as u64, "Raw archive put failed; retrying.");
                    tokio::time::sleep(delay).await;
                }
                Err((kind, detail)) => {
                    break Err(self.error(
                        &key,
                        kind,
                        &format!("{detail} (after {attempt} attempt(s))"),
                    ))
                }
            }
        };
        histogram(
            MetricName::ArchiveDurationSeconds,
            &[],
            started.elapsed().as_secs_f64(),
        );
        let labels = [("pipeline", pipeline.to_string())];
        match result {
            Ok(uploaded) => {
                counter(MetricName::ArchiveObjects, &labels, 1);
                if uploaded {
                    counter(MetricName::ArchiveBytes, &labels, body.len());
                }
                tracing::debug!(pipeline, bucket = %self.bucket, key = %key, bytes = body.len(), uploaded, "Raw input archived.");
                Ok(key)
            }
            Err(e) => {
                counter(MetricName::ArchiveFailures, &labels, 1);
                tracing::error!(pipeline, bucket = %self.bucket, key = %key, kind = %e.kind, error = %e.detail, "Raw archive put failed; the input is not sent and stays with its source.");
                Err(e)
            }
        }
    }

    fn error(&self, key: &str, kind: ErrorKind, detail: &str) -> ArchiveError {
        ArchiveError {
            kind,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }

    /// One attempt: HEAD (skip when present with the same size), then PUT. `Ok(true)` when
    /// uploaded, `Ok(false)` when already there.
    async fn try_put(
        &self,
        key: &str,
        checksum: &str,
        body: &ArchiveBody,
    ) -> Result<bool, (ErrorKind, String)> {
        let size = body.len();
        if let Ok(h) = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            if h.content_length().and_then(|l| u64::try_from(l).ok()) == Some(size) {
                return Ok(false);
            }
        }
        let stream = match body {
            ArchiveBody::Bytes(b) => ByteStream::from(b.clone()),
            ArchiveBody::File { path, .. } => ByteStream::from_path(path).await.map_err(|e| {
                // The spool file is gone or unreadable: no retry brings it back.
                (ErrorKind::Fatal, format!("reading the spooled input: {e}"))
            })?,
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .checksum_sha256(checksum)
            .body(stream);
        match self.sse {
            Some(Sse::Aes256) => req = req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms) => {
                req = req.server_side_encryption(ServerSideEncryption::AwsKms);
                if let Some(k) = &self.kms_key {
                    req = req.ssekms_key_id(k);
                }
            }
            None => {}
        }
        req.send().await.map(|_| true).map_err(|e| classify(&e))
    }
}

/// Kind and a PHI-free description of an SDK error: HTTP status and S3 error code, or the
/// class of a transport failure.
fn classify<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> (ErrorKind, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    match err {
        SdkError::ConstructionFailure(_) => {
            (ErrorKind::Fatal, "the request could not be built".into())
        }
        SdkError::TimeoutError(_) => (ErrorKind::Transient, "timed out".into()),
        SdkError::DispatchFailure(d) => {
            let what = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed"
            } else {
                "request not sent"
            };
            (ErrorKind::Transient, what.into())
        }
        SdkError::ResponseError(_) => (ErrorKind::Transient, "unreadable response".into()),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("none").to_string();
            let transient = status >= 500
                || status == 429
                || status == 408
                || matches!(
                    code.as_str(),
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestTimeTooSkewed"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "BadDigest"
                        | "InvalidDigest"
                        | "XAmzContentSHA256Mismatch"
                        | "IncompleteBody"
                );
            let kind = if transient {
                ErrorKind::Transient
            } else {
                ErrorKind::Fatal
            };
            (kind, format!("HTTP {status} {code}"))
        }
        _ => (ErrorKind::Transient, "request failed".into()),
    }
}

/// What an [`crate::sources::Outlet`] holds to archive before it sends.
#[derive(Debug)]
pub struct ArchiveHook {
    pub archive: RawArchive,
    pub pipeline: Arc<str>,
}

impl ArchiveHook {
    pub fn new(archive: RawArchive, pipeline: Arc<str>) -> Arc<Self> {
        Arc::new(ArchiveHook { archive, pipeline })
    }

    /// Archives the envelope's raw input; returns its key.
    pub async fn archive<T: Archivable>(&self, env: &Envelope<T>) -> Result<String, ArchiveError> {
        let prov = &env.provenance;
        self.archive
            .put(
                &self.pipeline,
                prov.received_at,
                &prov.sha256_hex(),
                env.payload.archive_body(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<ArchiveConfig, String> {
        let text = format!(
            "bucket = \"labs\"\naccess_key_id_env = \"AK_UNIT\"\nsecret_access_key_env = \"SK_UNIT\"\n{extra}"
        );
        let doc = toml_edit::ImDocument::parse(text).map_err(|e| e.to_string())?;
        let v = toml_edit::Value::InlineTable(doc.as_table().clone().into_inline_table());
        use serde::de::IntoDeserializer;
        ArchiveConfig::deserialize(v.into_deserializer()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_applied_and_unknown_fields_rejected() {
        let c = cfg("").unwrap();
        assert_eq!(c.region, "ca-central-1");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.retry.max_attempts, 8);
        assert!(!c.force_path_style);
        assert!(c.validate().is_empty());
        assert!(cfg("bukket = \"x\"").unwrap_err().contains("bukket"));
        assert!(cfg("server_side_encryption = \"des\"").is_err());
        assert_eq!(
            cfg("server_side_encryption = \"aws:kms\"")
                .unwrap()
                .server_side_encryption,
            Some(Sse::Kms)
        );
    }

    #[test]
    fn validation_names_each_problem() {
        let c = cfg("sse_kms_key_id = \"k\"\nendpoint = \"ftp://x\"\ntimeout = \"0s\"").unwrap();
        let msgs: Vec<String> = c.validate().into_iter().map(|(m, _)| m).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("sse_kms_key_id")));
        assert!(msgs.iter().any(|m| m.contains("endpoint")));
        assert!(msgs.iter().any(|m| m.contains("timeout")));
    }

    #[test]
    fn a_missing_credential_variable_is_named_without_values() {
        let c = cfg("").unwrap();
        std::env::remove_var("AK_UNIT");
        let e = RawArchive::new(&c).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Fatal);
        assert!(e.to_string().contains("`AK_UNIT` is not set"), "{e}");
    }

    #[test]
    fn keys_are_pipeline_utc_date_and_hash_under_the_prefix() {
        std::env::set_var("AK_UNIT2", "a");
        std::env::set_var("SK_UNIT2", "b");
        let mut c = cfg("prefix = \"clinic\"").unwrap();
        c.access_key_id_env = Spanned::new(0..0, "AK_UNIT2".into());
        c.secret_access_key_env = Spanned::new(0..0, "SK_UNIT2".into());
        let a = RawArchive::new(&c).unwrap();
        // 23:30 on 28 February at UTC-8 is 07:30 on 1 March in UTC.
        let t = time::macros::datetime!(2026-02-28 23:30 -8);
        assert_eq!(a.key("labs", t, "ab12"), "clinic/labs/2026/03/01/ab12");
    }
}
