//! # oscarflow
//!
//! A stream-oriented message pipeline daemon for OSCAR EMR clinics: lab results and faxes
//! in, written into OSCAR's own tables exactly as OSCAR writes them; nothing lost, nothing
//! filed twice, nothing filed to the wrong patient, no PHI in logs.
//!
//! ## Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`envelope`] | `Envelope<T>`, `Provenance`, `Origin`, `MessageId` |
//! | [`payload`] | `PortType`: the closed set of payload kinds, one line each (raw bytes, lab file, appointment, received document, fax job, SMS job); ordering keys; erased channels and components |
//! | [`jobs`] | the outbound queues' payloads (`FaxJob`, `SmsJob`: ids and a step, never content), claim tables and `OutboundError` |
//! | [`audit`] | the audit trail: every OSCAR row written and every read of patient data, in tamper-evident hash chains |
//! | [`archive`] | the raw archive: every inbound input kept in S3 before it enters the pipeline |
//! | [`ack`] | end-to-end acknowledgement: `BatchNotifier`, `AckToken`, `BatchStatus` |
//! | [`error`], [`component`] | `ErrorKind` (`Data`/`Transient`/`Fatal`) and the per-message `ProcessError` |
//! | [`config`] | pipeline files (parse → validate → build), `oscarflow.toml`, the refused tables of earlier versions, `component_types!` |
//! | [`topology`] | building and running pipelines: bounded channels, runners, supervisor — by payload, naming no component |
//! | [`private_fs`] | owner-only files and directories for everything that can hold PHI |
//! | [`secrets`] | the one text for an unset secret variable, which never echoes a pasted secret |
//! | [`shutdown`], [`retry`] | the stop signal every task watches; backoff with jitter (used by the runners, the archive and the clients) |
//! | [`sources`] | `Source<T>`, `SourceComponent`, the closed set `SourceConfig` and one folder per type (`folder`, `mllp`, `sftp`, `excelleris`, `iha_poi`, `ringcentral_fax`, `oscar_fax_queue`, and `texts` for `oscar_appointments`/`oscar_lab_ready`/`oscar_appointment_confirmations`); the shared outlet and provenance stamp; `queue`, the round every database queue shares |
//! | [`stages`] | `Stage<I, O>`, `StageComponent`, `StageConfig` and one folder per type (`parse_hl7`, `parse_siu`, `match_patient`) |
//! | [`sinks`] | `Sink<T>`, `SinkComponent`, `SinkConfig` and one folder per type (`oscar_lab`, `oscar_appointment`, `oscar_fax`, `ringcentral_fax`, `ringcentral_sms`) |
//! | [`dead_letter`] | the dead-letter store and its reason codes |
//! | [`conn_limit`] | the listeners' connection caps (per peer, overall) and who gives way to a new connection; the process's open-file limit |
//! | [`alerts`] | alerts by e-mail, webhook and SMS: rules over the running daemon, one notice at an alert's start and one at its recovery, the dead-letter digest, expiring certificates, disk space |
//! | [`http`] | the daemon's ops endpoint: `/healthz`, `/readyz`, `/metrics`, `/pipelines`, tap |
//! | [`hl7`] | HL7 v2 framing, parsing, escapes, lab and scheduling models (pure: no I/O) |
//! | [`oscar`] | OSCAR table knowledge: `hl7TextInfo`, patient matching, routing, import, faxes, reaching a patient by text |
//! | [`lab_file`] | the payload between parse and import |
//! | [`appointment`] | the payload of scheduling messages (SIU) between parse and the appointment book |
//! | [`document`] | the payload of received faxes: a file spooled on disk |
//! | [`ringcentral`] | the RingCentral REST client, message store, phone numbers |
//! | [`store`] | the database (MariaDB or embedded SQLite), migrations |
//! | [`telemetry`] | events → logs, metrics and taps |
//! | [`cli`] | the `oscarflow` commands |
//!
//! One engine carries every kind: labs, received faxes, OSCAR's outbound fax queue and the
//! text messages all run as pipelines (source → stages → sink) with the same acks, dead
//! letters, tap, pause, metrics and readiness. Each component's config builds the running
//! component (`SourceComponent::build` and its kin, given a context), its payload type
//! erased; [`topology`] wires channels and runners through [`payload::PortType::visit`] and
//! names neither a component nor a payload. Adding a source touches its folder under
//! `src/sources/`, one line of `SourceConfig`'s `component_types!` list, an example
//! pipeline and a fixture.

pub mod ack;
pub mod alerts;
pub mod appointment;
pub mod archive;
pub mod audit;
pub mod cli;
pub mod component;
pub mod config;
pub mod conn_limit;
pub mod dead_letter;
pub mod document;
pub mod envelope;
pub mod error;
pub mod hl7;
pub mod http;
pub mod jobs;
pub mod journal;
pub mod lab_file;
pub mod oscar;
pub mod payload;
pub mod private_fs;
pub mod retry;
pub mod ringcentral;
pub mod secrets;
pub mod shutdown;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod topology;
