//! Running pipelines: [`build()`] turns a validated [`crate::config::PipelineConfig`] into
//! tasks joined by bounded channels; [`run`] holds the generic runners that give every
//! component the same guarantees — retries with backoff and jitter for transient errors,
//! dead letters for data errors and spent retries, acks resolved after the durable write,
//! same-key ordering at the sink, and a stop on fatal errors.
//!
//! ```text
//!  source ──(bounded)──► stage ──(bounded)──► stage ──(bounded)──► sink
//!    ▲                     │                    │                    │
//!    │                     └────────────────────┴──► dead-letter store
//!    └──────── batch status: released only after every envelope is committed or dead-lettered
//! ```
//!
//! Memory is bounded by channel capacity plus component concurrency, never by input size:
//! a slow sink fills its channel, the stage before it blocks on `send`, and so on back to the
//! source, which stops reading.

pub mod build;
pub mod run;
pub mod status;
pub mod supervisor;

pub use crate::shutdown::Shutdown;
pub use build::{build, BuildError, BuildOptions, RunningPipeline};
pub use status::PipelineStatus;
pub use supervisor::{Registry, RestartBackoff, Supervisor};
