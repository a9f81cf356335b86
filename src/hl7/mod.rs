//! HL7 v2: framing, parsing, escapes and the typed lab model. Pure: no I/O, no tokio.
//!
//! - [`framing`] splits an input (a file, a pull response, an MLLP payload) into message
//!   frames: BOM and MLLP bytes stripped, CR/LF/CRLF accepted, blank lines tolerated,
//!   multi-message files split at line-start `MSH`, FHS/BHS/BTS/FTS batch lines consumed,
//!   the Excelleris `<HL7Messages>` and Interior Health POI XML wrappers unwrapped. Nothing
//!   is dropped silently: text outside any message comes back as a rejected frame.
//! - [`message`] parses one frame into a [`message::Message`] borrowing from its text, with
//!   field access by path (`PID-5.1`, `OBX[3]-5`, `PID-3[2].1`) and escape decoding on access.
//! - [`lab`] builds the typed [`lab::LabMessage`] (patient, orders, observations) the OSCAR
//!   import needs.
//! - [`siu`] builds the typed [`siu::SiuMessage`] (appointment ids, slot, patient,
//!   resources) of a scheduling message.
//!
//! Errors name positions (`MSH-2`, `segment 4`), never values: message content is PHI.
//!
//! ## Why our own parser (decided by measurement)
//!
//! hl7-parser 0.3 was measured on the public corpus before anything was built on it. It
//! returns `Ok` while silently stopping at the first line it cannot read (LF/CRLF
//! terminators in strict mode, blank lines, long segment names, wrapped lines), does not
//! split multi-message or batch files, mixes byte and char indices in its unescaper (a
//! panic on `éé\T\`), decodes `\Xhh\` only for line breaks, and shifts every MSH field on
//! a v2.7 five-character MSH-2. Wrapping it would have meant re-doing framing, length
//! checks and unescaping around it, and it is the slowest peer (`BENCHMARKS.md`: 28 MB/s
//! against 418 MB/s here for parse-and-visit-every-value). So `src/hl7` is ours;
//! hl7-parser and er7 stay dev-dependencies: er7 for the differential test over the corpus
//! (`tests/differential.rs`), both for `scripts/bench-parse`.
//!
//! Lines inside a message that are not segments (wrapped lines, comments) make the message
//! unreadable (`ParseError::BadSegmentName` with the line number): it is rejected with its
//! bytes rather than guessed at (`tests/segment_counts.rs` lists the corpus cases).

pub mod ack;
pub mod escape;
pub mod framing;
pub mod lab;
pub mod message;
pub mod siu;
pub mod text;

pub use framing::{frame, Frame, FrameError, Framed};
pub use lab::LabMessage;
pub use message::{Message, ParseError, Separators};
