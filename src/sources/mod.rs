//! Sources: the outside world as a stream of `Envelope<Raw>`.
//!
//! A [`Source`] reads inputs, wraps each in an envelope whose ack token belongs to a fresh
//! [`crate::ack::BatchNotifier`], sends it on its bounded channel (which blocks when the
//! pipeline is full — that is the backpressure), and **releases an input only when its batch
//! status says every envelope was committed or dead-lettered**. A failed or unresolved batch
//! is kept and re-delivered later. `run` returns when the input is exhausted (one-shot) or the
//! shutdown signal fired, after the batches it started have settled or the channel closed.
//! Kinds: `folder`, `mllp`, `excelleris`, `iha_poi`, `sftp` (raw bytes), `ringcentral_fax`
//! (received faxes, spooled to disk: [`crate::document::InboundDocument`]).

pub mod excelleris;
pub mod folder;
pub mod iha_poi;
pub mod list;
pub mod mllp;
pub mod pull;
pub mod ringcentral_fax;
pub mod sftp;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::ack::InFlight;
use crate::config::{unknown_type, ComponentKind, PortType, RawComponent};
use crate::envelope::{Envelope, Raw};
use crate::error::{Classify, ErrorKind};
use crate::telemetry::Observers;
use crate::topology::Shutdown;

pub use excelleris::ExcellerisConfig;
pub use folder::FolderConfig;
pub use iha_poi::IhaPoiConfig;
pub use mllp::MllpConfig;
pub use ringcentral_fax::RingCentralFaxConfig;
pub use sftp::SftpConfig;

/// What every source gets from the topology. `T` is the payload it sends: raw bytes for
/// every kind but `ringcentral_fax`, which sends spooled documents.
pub struct SourceContext<T = Raw> {
    pub pipeline: Arc<str>,
    pub id: Arc<str>,
    /// The bounded channel to the first stage.
    pub out: mpsc::Sender<Envelope<T>>,
    pub shutdown: Shutdown,
    pub in_flight: Arc<InFlight>,
    pub observers: Observers,
    /// The pipeline's database (sources that keep state: MLLP answers, checkpoints).
    pub store: crate::store::Store,
}

/// A source failure that stops the source.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Fault injection for tests: called at the point where a source has seen its input settle
/// and is about to acknowledge it upstream; `true` makes the source stop right there, as a
/// crash would (nothing acknowledged, nothing recorded).
pub type CrashHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// An input reader. See the module docs for the contract.
#[async_trait]
pub trait Source: Send {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}

/// The closed set of source configurations.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Folder(FolderConfig),
    Mllp(MllpConfig),
    Excelleris(ExcellerisConfig),
    Sftp(SftpConfig),
    IhaPoi(IhaPoiConfig),
    RingCentralFax(RingCentralFaxConfig),
}

impl SourceConfig {
    pub const TYPES: &'static [&'static str] = &[
        "folder",
        "mllp",
        "excelleris",
        "iha_poi",
        "sftp",
        "ringcentral_fax",
    ];

    pub fn from_table(
        raw: RawComponent,
        section: &'static str,
    ) -> Result<Self, (String, Option<Range<usize>>)> {
        match raw.type_name.get_ref().as_str() {
            "folder" => raw.parse().map(SourceConfig::Folder),
            "mllp" => raw.parse().map(SourceConfig::Mllp),
            "excelleris" => raw.parse().map(SourceConfig::Excelleris),
            "sftp" => raw.parse().map(SourceConfig::Sftp),
            "iha_poi" => raw.parse().map(SourceConfig::IhaPoi),
            "ringcentral_fax" => raw.parse().map(SourceConfig::RingCentralFax),
            _ => Err(unknown_type(
                section.trim_end_matches('s'),
                &raw.type_name,
                Self::TYPES,
            )),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.type_name()
    }
}

impl ComponentKind for SourceConfig {
    fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::Folder(_) => "folder",
            SourceConfig::Mllp(_) => "mllp",
            SourceConfig::Excelleris(_) => "excelleris",
            SourceConfig::Sftp(_) => "sftp",
            SourceConfig::IhaPoi(_) => "iha_poi",
            SourceConfig::RingCentralFax(_) => "ringcentral_fax",
        }
    }
    fn input_port(&self) -> Option<PortType> {
        None
    }
    fn output_port(&self) -> Option<PortType> {
        Some(match self {
            SourceConfig::RingCentralFax(_) => PortType::Document,
            _ => PortType::Raw,
        })
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        match self {
            SourceConfig::Folder(c) => c.validate(),
            SourceConfig::Mllp(c) => c.validate(),
            SourceConfig::Excelleris(c) => c.validate(),
            SourceConfig::Sftp(c) => c.validate(),
            SourceConfig::IhaPoi(c) => c.validate(),
            SourceConfig::RingCentralFax(c) => c.validate(),
        }
    }
    fn env_refs(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        match self {
            SourceConfig::Excelleris(c) => c.env_refs(),
            SourceConfig::Sftp(c) => c.env_refs(),
            SourceConfig::IhaPoi(c) => c.env_refs(),
            SourceConfig::RingCentralFax(c) => c.ringcentral.env_refs(),
            _ => Vec::new(),
        }
    }
}
