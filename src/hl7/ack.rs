//! HL7 acknowledgements: [`build_ack`] answers a message with MSA-1 `AA`/`AE`/`AR`
//! (original mode) or `CA`/`CE`/`CR` (enhanced mode) and MSA-2 = the message's MSH-10.
//!
//! The reply swaps sender and receiver (MSH-3/4 ↔ MSH-5/6), keeps the message's
//! separators, version and processing id, and carries the trigger event in MSH-9
//! (`ACK^R01^ACK`). A rejection's text (MSA-3, ERR-8) is escaped, and must be PHI-free: it
//! travels back to the sender's logs.

use super::escape::escape;
use super::message::Message;

/// The acknowledgement code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted (AA / CA).
    Accept,
    /// Error: the receiver could not process it, the sender may retry (AE / CE).
    Error,
    /// Rejected: do not resend as is (AR / CR).
    Reject,
}

/// Original (application) or enhanced (commit) acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Original,
    Enhanced,
}

impl AckCode {
    pub fn code(self, mode: AckMode) -> &'static str {
        match (mode, self) {
            (AckMode::Original, AckCode::Accept) => "AA",
            (AckMode::Original, AckCode::Error) => "AE",
            (AckMode::Original, AckCode::Reject) => "AR",
            (AckMode::Enhanced, AckCode::Accept) => "CA",
            (AckMode::Enhanced, AckCode::Error) => "CE",
            (AckMode::Enhanced, AckCode::Reject) => "CR",
        }
    }
}

/// Builds the ACK for `msg`. `control_id` is the ACK's own MSH-10; `timestamp` its MSH-7
/// (`YYYYMMDDHHMMSS`). Segments end with `\r`.
pub fn build_ack(
    msg: &Message<'_>,
    code: AckCode,
    mode: AckMode,
    text: Option<&str>,
    control_id: &str,
    timestamp: &str,
) -> String {
    let s = msg.seps;
    let f = s.field;
    let enc = msg.raw("MSH-2").unwrap_or("^~\\&");
    let g = |p: &str| msg.raw(p).unwrap_or("").to_string();
    let trigger = msg.get("MSH-9.2");
    let msh9 = if trigger.is_empty() {
        "ACK".to_string()
    } else {
        format!("ACK{c}{trigger}{c}ACK", c = s.component)
    };
    let esc = |t: &str| escape(t, &s);
    let mut out = String::with_capacity(256);
    out.push_str(&format!(
        "MSH{f}{enc}{f}{}{f}{}{f}{}{f}{}{f}{timestamp}{f}{f}{msh9}{f}{}{f}{}{f}{}\r",
        g("MSH-5"),
        g("MSH-6"),
        g("MSH-3"),
        g("MSH-4"),
        esc(control_id),
        g("MSH-11"),
        g("MSH-12"),
    ));
    out.push_str(&format!("MSA{f}{}{f}{}", code.code(mode), g("MSH-10")));
    if let Some(t) = text {
        out.push_str(&format!("{f}{}", esc(t)));
    }
    out.push('\r');
    if code != AckCode::Accept {
        if let Some(t) = text {
            // ERR-3 error code (HL70357: 207 application internal error, 100 rejected),
            // ERR-4 severity E, ERR-8 user message.
            let err_code = if code == AckCode::Reject {
                "100"
            } else {
                "207"
            };
            out.push_str(&format!(
                "ERR{f}{f}{f}{err_code}{f}E{f}{f}{f}{f}{}\r",
                esc(t)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str =
        "MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|CLINIC|20260101120000||ORU^R01|CTRL42|P|2.3\rPID||1";

    #[test]
    fn accept_ack_echoes_the_control_id_and_swaps_parties() {
        let m = Message::parse(M).unwrap();
        let a = build_ack(
            &m,
            AckCode::Accept,
            AckMode::Original,
            None,
            "ACK1",
            "20260101120001",
        );
        let ack = Message::parse(&a).unwrap();
        assert_eq!(ack.get("MSA-1"), "AA");
        assert_eq!(ack.get("MSA-2"), "CTRL42");
        assert_eq!(ack.get("MSH-3"), "HTTPCLIENT");
        assert_eq!(ack.get("MSH-5"), "PATHL7");
        assert_eq!(ack.get("MSH-9"), "ACK^R01^ACK");
        assert_eq!(ack.get("MSH-10"), "ACK1");
        assert_eq!(ack.get("MSH-12"), "2.3");
        assert!(a.ends_with('\r'));
    }

    #[test]
    fn error_and_reject_acks_carry_an_escaped_reason() {
        let m = Message::parse(M).unwrap();
        let a = build_ack(
            &m,
            AckCode::Reject,
            AckMode::Enhanced,
            Some("missing PID|OBR"),
            "A2",
            "20260101",
        );
        let ack = Message::parse(&a).unwrap();
        assert_eq!(ack.get("MSA-1"), "CR");
        assert_eq!(ack.get("MSA-3"), "missing PID|OBR");
        assert_eq!(ack.get("ERR-3"), "100");
        assert_eq!(ack.get("ERR-8"), "missing PID|OBR");
        let e = build_ack(
            &m,
            AckCode::Error,
            AckMode::Original,
            Some("database unavailable"),
            "A3",
            "20260101",
        );
        assert_eq!(Message::parse(&e).unwrap().get("MSA-1"), "AE");
    }

    #[test]
    fn non_default_separators_are_kept() {
        let m = Message::parse("MSH#!@$%#A#B#C#D#2026##ORU!R01#X9#P#2.5\rPID#1").unwrap();
        let a = build_ack(&m, AckCode::Accept, AckMode::Original, None, "Z", "2026");
        assert!(
            a.starts_with("MSH#!@$%#C#D#A#B#2026##ACK!R01!ACK#Z#P#2.5\r"),
            "{a}"
        );
        assert_eq!(Message::parse(&a).unwrap().get("MSA-2"), "X9");
    }
}
