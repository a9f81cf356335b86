//! Criterion benches of the CPU side of the lab path: framing + parsing + lab model + the
//! `hl7TextInfo` row, over every fixture file, and framing of an Excelleris XML batch.
//! Run with `cargo bench --bench lab_path`; numbers are tracked, never asserted.

use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oscarflow::hl7::lab::LabMessage;
use oscarflow::hl7::{frame, Message};
use oscarflow::oscar::info::Hl7TextInfo;
use oscarflow::oscar::Flavour;

fn fixture_files() -> Vec<Bytes> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hl7");
    let files = oscarflow::sources::list::ListSource::expand(&[dir]).expect("fixtures");
    files
        .iter()
        .map(|p| Bytes::from(std::fs::read(p).expect("read fixture")))
        .collect()
}

fn parse_all(inputs: &[Bytes]) -> usize {
    let mut n = 0;
    for input in inputs {
        let framed = frame(input);
        for f in &framed.messages {
            let joined = f.joined(b"\r");
            let Ok(text) = std::str::from_utf8(&joined) else {
                continue;
            };
            let Ok(msg) = Message::parse(text) else {
                continue;
            };
            if let Ok(lab) = LabMessage::from_message(&msg) {
                let info = Hl7TextInfo::from_lab(&lab, Flavour::OpenO);
                n += info.final_result_count as usize;
            }
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let inputs = fixture_files();
    let bytes: usize = inputs.iter().map(|b| b.len()).sum();
    let mut g = c.benchmark_group("lab_path");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("frame_parse_model_info_fixtures", |b| {
        b.iter(|| parse_all(&inputs))
    });
    // A 200-message Excelleris pull response built from the fixtures' first message.
    let one = inputs
        .iter()
        .find_map(|b| frame(b).messages.into_iter().next())
        .expect("a fixture message");
    let mut xml = String::from("<?xml version=\"1.0\"?><HL7Messages MessageCount=\"200\">");
    for i in 0..200 {
        xml.push_str(&format!(
            "<Message MsgID=\"{i}\"><![CDATA[{}]]></Message>",
            String::from_utf8_lossy(&one.joined(b"\n"))
        ));
    }
    xml.push_str("</HL7Messages>");
    let xml = Bytes::from(xml);
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.bench_function("frame_excelleris_xml_200", |b| {
        b.iter(|| frame(&xml).messages.len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
