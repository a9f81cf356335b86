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
//!
//! Errors name positions (`MSH-2`, `segment 4`), never values: message content is PHI.

pub mod ack;
pub mod escape;
pub mod framing;
pub mod lab;
pub mod message;
pub mod text;

pub use framing::{frame, Frame, FrameError, Framed};
pub use lab::LabMessage;
pub use message::{Message, ParseError, Separators};
