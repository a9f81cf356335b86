//! Every public corpus file (../shared/corpus/public, ~420 real HL7 messages nobody here
//! wrote, including nHapi's BadInputs fuzz cases) goes through the parse stage: no panic,
//! and every input is accounted for — parsed into labs or rejected with a reason.

use std::sync::Arc;

mod common;

use bytes::Bytes;
use oscarflow::ack::AckToken;
use oscarflow::envelope::{sha256, Envelope, Origin, Provenance, Raw};
use oscarflow::stages::parse_hl7::{ParseHl7, ParseHl7Config};
use oscarflow::stages::Emitter;
use oscarflow::telemetry::Observers;

#[test]
fn every_corpus_file_parses_or_is_rejected_with_a_reason_and_nothing_panics() {
    let Some(dir) = common::shared_dir("corpus/public") else {
        return;
    };
    let files = oscarflow::sources::list::ListSource::expand(&[dir]).unwrap();
    assert!(
        files.len() > 100,
        "expected the public corpus, found {} files",
        files.len()
    );
    // Accept every message type: this is about framing and parsing, not lab filtering.
    let stage = ParseHl7::new(
        ParseHl7Config {
            message_types: Vec::new(),
            ..Default::default()
        },
        Arc::from("parse"),
        Observers::none(),
    );
    let (mut labs, mut rejected, mut with_msh) = (0usize, 0usize, 0usize);
    for f in &files {
        let bytes = Bytes::from(std::fs::read(f).unwrap());
        // A message starts at a line-start MSH (after a BOM, MLLP start byte or CDATA).
        let has_msh = bytes.split(|b| *b == b'\r' || *b == b'\n').any(|l| {
            let l = l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l);
            let l = l.strip_prefix(b"\x0b").unwrap_or(l);
            let l = match l.windows(9).position(|w| w == b"<![CDATA[") {
                Some(p) => &l[p + 9..],
                None => l,
            };
            l.starts_with(b"MSH") && l.get(3).is_some_and(|c| !c.is_ascii_alphanumeric())
        });
        let env = Envelope::new(
            Arc::new(Provenance {
                pipeline: Arc::from("corpus"),
                source: Arc::from("files"),
                source_kind: Arc::from("test"),
                origin: Origin::File { path: f.clone() },
                received_at: time::OffsetDateTime::now_utc(),
                attempt: 1,
                content_sha256: sha256(&bytes),
            }),
            Raw {
                bytes: bytes.clone(),
                name: "corpus".into(),
                lab_type: None,
            },
            AckToken::detached(),
        );
        let mut out = Emitter::default();
        let found = stage.parse(&env, &mut out);
        let parsed: usize = out.outputs.iter().map(|o| o.payload.messages.len()).sum();
        assert!(
            parsed + out.rejects.len() > 0
                || bytes.iter().all(|b| b.is_ascii_whitespace())
                || is_empty_wrapper(&bytes),
            "{}: neither parsed nor rejected",
            f.display()
        );
        assert!(parsed <= found as usize);
        for r in &out.rejects {
            assert!(
                !r.detail.is_empty(),
                "{}: a reject without a reason",
                f.display()
            );
        }
        if has_msh {
            with_msh += 1;
            assert!(
                found > 0,
                "{}: has an MSH segment but no message was framed",
                f.display()
            );
        }
        labs += parsed;
        rejected += out.rejects.len();
    }
    eprintln!(
        "corpus: {} files, {with_msh} with MSH, {labs} lab messages parsed, {rejected} rejected",
        files.len()
    );
    assert!(labs > 100, "only {labs} lab messages parsed");
}

fn is_empty_wrapper(b: &[u8]) -> bool {
    let s = String::from_utf8_lossy(b).to_ascii_lowercase();
    s.contains("<messages") && !s.contains("msh|")
}
