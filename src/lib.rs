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
//! | [`payload`] | `PortType`: the closed set of payload kinds, one line each; erased channels and components |
//! | [`jobs`] | payloads of the outbound queues (`FaxJob`): ids and a step, never content |
//! | [`archive`] | the raw archive: every inbound input kept in S3 before it enters the pipeline |
//! | [`ack`] | end-to-end acknowledgement: `BatchNotifier`, `AckToken`, `BatchStatus` |
//! | [`error`], [`component`] | `ErrorKind` (`Data`/`Transient`/`Fatal`) and the per-message `ProcessError` |
//! | [`config`] | pipeline files (parse → validate → build) and `oscarflow.toml` |
//! | [`topology`] | building and running pipelines: bounded channels, runners, supervisor |
//! | [`shutdown`], [`retry`] | the stop signal every task watches; backoff with jitter (used by the runners, the archive and the clients) |
//! | [`sources`] | `Source<T>` trait, `SourceConfig` (the closed set) and one folder per kind (`folder`, `mllp`, `sftp`, `excelleris`, `iha_poi`, `ringcentral_fax`), each `config.rs` + the component; the shared outlet and provenance stamp |
//! | [`stages`] | `Stage<I, O>` trait, `StageConfig` and one folder per kind (`parse_hl7`, `match_patient`) |
//! | [`sinks`] | `Sink<T>` trait, `SinkConfig` and one folder per kind (`oscar_lab`, `oscar_fax`) |
//! | [`dead_letter`] | the dead-letter store and its reason codes |
//! | [`http`] | the daemon's ops endpoint: `/healthz`, `/readyz`, `/metrics` |
//! | [`hl7`] | HL7 v2 framing, parsing, escapes, lab model (pure: no I/O) |
//! | [`oscar`] | OSCAR table knowledge: `hl7TextInfo`, patient matching, routing, import |
//! | [`lab_file`] | the payload between parse and import |
//! | [`document`] | the payload of received faxes: a file spooled on disk |
//! | [`outbound`] | outbound queues: OSCAR's fax queue sent through RingCentral |
//! | [`ringcentral`] | the RingCentral REST client, message store, phone numbers |
//! | [`store`] | the database (MariaDB or embedded SQLite), migrations |
//! | [`telemetry`] | events → logs and metrics |
//! | [`cli`] | the `oscarflow` commands |
//!
//! Each component's config builds the running component (`SourceConfig::build`,
//! `StageConfig::build`, `SinkConfig::build`, given a context), its payload type erased;
//! [`topology`] wires channels and runners through [`payload::PortType::visit`] and names
//! neither a component nor a payload.
//! Adding a source touches its folder under `src/sources/`, one variant of `SourceConfig`
//! (with its `build`, `from_table` and `consumes` arms), an example pipeline and a fixture.

pub mod ack;
pub mod archive;
pub mod cli;
pub mod component;
pub mod config;
pub mod dead_letter;
pub mod document;
pub mod envelope;
pub mod error;
pub mod hl7;
pub mod http;
pub mod jobs;
pub mod lab_file;
pub mod oscar;
pub mod payload;
pub mod retry;
pub mod ringcentral;
pub mod shutdown;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
pub mod telemetry;
pub mod topology;
