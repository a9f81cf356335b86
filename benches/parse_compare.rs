//! Parse-and-access-every-field throughput on the public corpus message mix: ours against
//! hl7-parser 0.3, er7 and a plain split-on-separators baseline, single-threaded (one core).
//! Driven by `scripts/bench-parse`, which adds python-hl7 and prints the summary line.
//!
//! Every implementation parses each message and visits every leaf value, decoding escapes
//! where the library offers it (the split baseline decodes nothing: it is the ceiling of
//! "touching every byte and splitting"). Messages one of the peers cannot parse, or on which
//! it panics (hl7-parser 0.3 has known unescaper panics), are left out for all, and counted.
//!
//! Usage: `cargo bench --bench parse_compare -- [--quick] [--dump FILE]` (under `cargo test`
//! it only smoke-tests the walk).
//! Prints `impl=<name> mb_per_s=<x> messages=<n> bytes=<b>` per implementation.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscarflow::hl7::text::{decode, Fallback};
use oscarflow::hl7::{frame, Message};

fn corpus_mix() -> (Vec<String>, usize) {
    let dir = std::env::var_os("OSCARFLOW_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/public"));
    let files = oscarflow::sources::list::ListSource::expand(&[dir]).expect("corpus directory");
    let mut out = Vec::new();
    let mut skipped = 0;
    for f in files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("BadInputs"))
    {
        let bytes = Bytes::from(std::fs::read(f).expect("read"));
        for fr in frame(&bytes).messages {
            let joined = fr.joined(b"\r");
            let text = decode(&joined, Fallback::Windows1252, None).0.into_owned();
            let ok_ours = Message::parse(&text).is_ok();
            let ok_er7 = er7::parse(&text).is_ok();
            let t = text.clone();
            let ok_h =
                std::panic::catch_unwind(move || hl7_parser_walk(&t).is_some()).unwrap_or(false);
            if ok_ours && ok_er7 && ok_h {
                out.push(text);
            } else {
                skipped += 1;
            }
        }
    }
    (out, skipped)
}

fn ours_walk(text: &str) -> usize {
    let Ok(m) = Message::parse(text) else {
        return 0;
    };
    let mut n = 0;
    m.for_each_value(|_, v| n += v.len());
    n
}

fn er7_walk(text: &str) -> usize {
    let Ok(m) = er7::parse(text) else { return 0 };
    let mut n = 0;
    for s in &m.segments {
        for f in &s.fields {
            for r in &f.repetitions {
                for c in &r.components {
                    for sc in &c.subcomponents {
                        n += sc.value(&m.separators).len();
                    }
                }
            }
        }
    }
    n
}

fn hl7_parser_walk(text: &str) -> Option<usize> {
    let m = hl7_parser::Message::parse_with_lenient_newlines(text, true).ok()?;
    let mut n = 0;
    let mut buf = String::new();
    for s in m.segments() {
        for f in s.fields() {
            for r in f.repeats() {
                for c in r.components() {
                    for sc in c.subcomponents() {
                        buf.clear();
                        let _ = write!(buf, "{}", sc.display(&m.separators));
                        n += buf.len();
                    }
                }
            }
        }
    }
    Some(n)
}

fn split_walk(text: &str) -> usize {
    let mut n = 0;
    for seg in text.split('\r') {
        for f in seg.split('|') {
            for r in f.split('~') {
                for c in r.split('^') {
                    for s in c.split('&') {
                        n += s.len();
                    }
                }
            }
        }
    }
    n
}

fn measure(name: &str, mix: &[String], min: Duration, f: impl Fn(&str) -> usize) {
    let bytes: usize = mix.iter().map(|m| m.len()).sum();
    // Warm up once, then run whole passes until the time is spent.
    for m in mix {
        black_box(f(black_box(m)));
    }
    let start = Instant::now();
    let mut passes = 0u64;
    while start.elapsed() < min {
        for m in mix {
            black_box(f(black_box(m)));
        }
        passes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mbps = (bytes as f64 * passes as f64) / secs / 1_000_000.0;
    println!(
        "impl={name} mb_per_s={mbps:.2} messages={} bytes={bytes} passes={passes}",
        mix.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench` (cargo bench
        // passes it): a smoke run that checks the walk, not a measurement.
        let (mix, _) = corpus_mix_or_empty();
        for m in mix.iter().take(20) {
            assert!(ours_walk(m) <= m.len() * 2);
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let dump = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (mix, skipped) = corpus_mix();
    if let Some(path) = dump {
        // Messages separated by a line holding only ASCII FS (0x1C), for the Python peer.
        let mut out = String::new();
        for m in &mix {
            out.push_str(m);
            out.push_str("\n\u{1c}\n");
        }
        std::fs::write(&path, out).expect("write the message mix");
    }
    println!("mix messages={} skipped={skipped}", mix.len());
    let min = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(12)
    };
    measure("oscarflow", &mix, min, ours_walk);
    measure("er7", &mix, min, er7_walk);
    measure("hl7-parser", &mix, min, |t| hl7_parser_walk(t).unwrap_or(0));
    measure("split", &mix, min, split_walk);
}

fn corpus_mix_or_empty() -> (Vec<String>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/public");
    if dir.is_dir() || std::env::var_os("OSCARFLOW_CORPUS").is_some() {
        corpus_mix()
    } else {
        (Vec::new(), 0)
    }
}
