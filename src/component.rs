//! What every component shares, below the sections that hold them: the error every stage
//! and sink returns per message ([`ProcessError`]), the build context, and the facts about a
//! component's configuration that validation reads ([`ComponentKind`], [`RawComponent`],
//! `component_types!`).
//!
//! It carries the [`ErrorKind`] the topology acts on, the bounded [`ReasonCode`] a dead
//! letter will get, and a PHI-free detail (positions, codes, counts).

use std::ops::Range;

use serde::de::IntoDeserializer;
use serde_spanned::Spanned;

use crate::dead_letter::ReasonCode;
use crate::error::{classify_sqlx, describe_sqlx, Classify, ErrorKind};
use crate::payload::PortType;

/// A per-message failure of a stage or sink.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ProcessError {
    pub kind: ErrorKind,
    pub reason: ReasonCode,
    pub detail: String,
    /// A transient error that says the database is unavailable
    /// ([`crate::error::is_database_outage`]): retried with the intake held, past the retry
    /// budget, until the database answers.
    pub outage: bool,
}

impl ProcessError {
    /// Bad data: dead-letter now, never retry.
    pub fn data(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Data,
            reason,
            detail: detail.into(),
            outage: false,
        }
    }
    /// Temporary: retry with backoff, then dead-letter as `retries_exhausted`.
    pub fn transient(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            reason: ReasonCode::RetriesExhausted,
            detail: detail.into(),
            outage: false,
        }
    }
    /// The component cannot go on.
    pub fn fatal(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            reason: ReasonCode::ImportRejected,
            detail: detail.into(),
            outage: false,
        }
    }
    /// Classifies a database error; the detail names the error code, never bound values.
    pub fn from_sqlx(context: &str, e: &sqlx::Error) -> Self {
        Self {
            kind: classify_sqlx(e),
            reason: match classify_sqlx(e) {
                ErrorKind::Transient => ReasonCode::RetriesExhausted,
                _ => ReasonCode::ImportRejected,
            },
            detail: format!("{context}: {}", describe_sqlx(e)),
            outage: classify_sqlx(e) == ErrorKind::Transient && crate::error::is_database_outage(e),
        }
    }
}

impl Classify for ProcessError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// What a stage or sink configuration needs to build its running component
/// (`StageConfig::build`, `SinkConfig::build`): its id, the pipeline's database and the
/// observers its events go to.
#[derive(Clone)]
pub struct BuildContext {
    pub id: std::sync::Arc<str>,
    pub store: crate::store::Store,
    pub observers: crate::telemetry::Observers,
}

/// The closed set of one section's component types (`sources`, `stages`, `sinks`): the enum
/// of configurations with one variant per type, its `TYPES`, `from_table` (the `type` key
/// picks the variant), `type_name`, and `component()` — the configuration as the section's
/// trait object, through which everything else about the component is asked. Adding a type
/// is one line here and its folder.
macro_rules! component_types {
    ($(#[$meta:meta])* $enum:ident: $trait:ident { $($variant:ident($cfg:ty) = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub enum $enum {
            $($variant($cfg),)*
        }

        impl $enum {
            /// Every `type` of the section.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// The configuration of a component table whose `type` is one of [`Self::TYPES`].
            pub fn from_table(
                raw: $crate::component::RawComponent,
                section: &'static str,
            ) -> Result<Self, (String, Option<std::ops::Range<usize>>)> {
                match raw.type_name.get_ref().as_str() {
                    $($name => raw.parse().map($enum::$variant),)*
                    _ => Err($crate::component::unknown_type(
                        section.trim_end_matches('s'),
                        &raw.type_name,
                        Self::TYPES,
                    )),
                }
            }

            /// The component's `type`.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $($enum::$variant(_) => $name,)*
                }
            }

            /// The component's own configuration, as the section's trait.
            pub fn component(&self) -> &dyn $trait {
                match self {
                    $($enum::$variant(c) => c,)*
                }
            }
        }
    };
}
pub(crate) use component_types;

/// Component-kind facts used by validation.
pub trait ComponentKind {
    /// The `type` name.
    fn type_name(&self) -> &'static str;
    /// Type of envelopes consumed (None for sources).
    fn input_port(&self) -> Option<PortType>;
    /// Type of envelopes produced (None for sinks).
    fn output_port(&self) -> Option<PortType>;
    /// Environment variables this component needs: (field name, variable, span).
    fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        Vec::new()
    }
    /// Pure, component-specific checks: (message, span).
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        Vec::new()
    }
    /// The lab type this component fixes: a source serving one feed (`excelleris`,
    /// `iha_poi`), or a parse stage with a `lab_type`. `check` reports a parse stage whose
    /// type contradicts its source's.
    fn lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        None
    }
}

/// What a component's `from_table` gets: its `type` (with span) and the remaining fields.
pub struct RawComponent {
    pub type_name: Spanned<String>,
    pub fields: toml_edit::Value,
}

impl RawComponent {
    /// Deserializes the fields into a concrete config struct; errors keep their span.
    pub fn parse<T: serde::de::DeserializeOwned>(
        self,
    ) -> Result<T, (String, Option<Range<usize>>)> {
        T::deserialize(self.fields.into_deserializer())
            .map_err(|e| (e.message().to_string(), e.span()))
    }
}

/// Formats the accepted `type` names for an "unknown type" message.
pub fn unknown_type(
    section: &str,
    got: &Spanned<String>,
    known: &[&str],
) -> (String, Option<Range<usize>>) {
    (
        format!(
            "unknown {section} type `{}` (known: {})",
            got.get_ref(),
            known.join(", ")
        ),
        Some(got.span()),
    )
}
