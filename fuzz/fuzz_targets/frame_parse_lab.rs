//! Any bytes through framing, decoding, parsing, the lab model, the scheduling (SIU) model and
//! its slot in OSCAR's terms, the hl7TextInfo mapping, the
//! ACK builder, the MLLP decoder and answer, the POI response parser and the journal's peek at
//! a dead letter's identifiers: nothing may panic. Also differential: framing the bytes as a stream
//! split in two (at a point taken from the input) must give the same frames as framing
//! them whole.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oscarflow::hl7::ack::{build_ack, AckCode, AckMode};
use oscarflow::hl7::lab::LabMessage;
use oscarflow::hl7::siu::{HealthNumberAt, SiuMessage};
use oscarflow::hl7::text::{decode, sniff_msh18, Fallback};
use oscarflow::hl7::framing::StreamFramer;
use oscarflow::hl7::{frame, Message};
use oscarflow::oscar::info::{doc_nums, Hl7TextInfo};
use oscarflow::oscar::Flavour;

fuzz_target!(|data: &[u8]| {
    // Bytes from a network peer: MLLP framing (in two chunks) and the answer to each frame.
    let mut dec = oscarflow::sources::mllp::Decoder::new(64);
    let cut2 = data.last().map_or(0, |b| *b as usize * data.len() / 256);
    dec.extend(&data[..cut2]);
    while let Some(f) = dec.next_frame() {
        if let oscarflow::sources::mllp::Frame::Message(m) = f {
            let _ = oscarflow::sources::mllp::ack_for(
                &m,
                &oscarflow::sources::mllp::Answer {
                    code: AckCode::Reject,
                    reason: Some("malformed".into()),
                },
            );
        }
    }
    dec.extend(&data[cut2..]);
    while dec.next_frame().is_some() {}
    // A pull server's answer.
    let _ = oscarflow::sources::iha_poi::parse_messages(&String::from_utf8_lossy(data));
    // The identifiers the journal reads from a dead letter's bytes.
    let _ = oscarflow::journal::peek(data);

    let framed = frame(&Bytes::copy_from_slice(data));
    let cut = data.first().map_or(0, |b| *b as usize * data.len() / 256);
    let mut stream = StreamFramer::new();
    let mut a = stream.push(&data[..cut]);
    let b = stream.push(&data[cut..]);
    let c = stream.finish();
    a.messages.extend(b.messages);
    a.messages.extend(c.messages);
    a.rejected.extend(b.rejected);
    a.rejected.extend(c.rejected);
    let key = |f: &oscarflow::hl7::Framed| {
        (
            f.messages.iter().map(|m| (m.index, m.raw.clone(), m.segments.clone(), m.line)).collect::<Vec<_>>(),
            f.rejected.iter().map(|r| (r.index, r.raw.clone(), r.error.clone())).collect::<Vec<_>>(),
        )
    };
    assert!(key(&a) == key(&framed), "stream framing differs from whole framing");
    for m in &framed.messages {
        let joined = m.joined(b"\r");
        let msh18 = sniff_msh18(&joined);
        let (text, _) = decode(&joined, Fallback::Windows1252, msh18.as_deref());
        let Ok(msg) = Message::parse_framed(&text) else { continue };
        for path in ["MSH-9.2", "PID-5.1", "PID-3[2].1", "OBX[3]-5", "OBR-16.1.1", "NTE-3"] {
            let _ = msg.get(path);
        }
        let _ = build_ack(&msg, AckCode::Reject, AckMode::Original, Some("x|y"), "A", "2026");
        if let Ok(lab) = LabMessage::from_message(&msg) {
            let _ = oscarflow::oscar::handlers::accession(&lab);
            let _ = doc_nums(&lab);
            let _ = Hl7TextInfo::from_lab(&lab, Flavour::OpenO);
            let _ = Hl7TextInfo::from_lab(&lab, Flavour::Oscar19);
        }
        for hn in [HealthNumberAt::default(), HealthNumberAt::Field(2)] {
            if let Ok(siu) = SiuMessage::from_message(&msg, &hn) {
                let _ = siu.minutes();
                if let (Some(s), Some(e)) = (siu.start, siu.end) {
                    let _ = oscarflow::oscar::appointment::Slot::of(&s, &e);
                }
            }
        }
    }
});
