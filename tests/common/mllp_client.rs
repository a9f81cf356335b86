//! A Rust MLLP client for tests: send a framed message, read its ACK, read the ACK's MSA.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use oscarflow::hl7::Message;
use oscarflow::sources::mllp;

/// Sends one framed message on `conn` and reads its ACK.
pub async fn exchange(conn: &mut TcpStream, msg: &[u8]) -> String {
    conn.write_all(&mllp::encode(msg)).await.unwrap();
    read_ack(conn).await
}

/// Reads one framed ACK (within 60 s) and returns its text without the MLLP blocks.
pub async fn read_ack(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut chunk))
            .await
            .expect("an answer within 60 s")
            .unwrap();
        assert!(n > 0, "the listener closed without answering");
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(&[mllp::END, b'\r']) {
            break;
        }
    }
    assert_eq!(buf[0], mllp::START);
    String::from_utf8(buf[1..buf.len() - 2].to_vec()).unwrap()
}

/// (MSA-1, MSA-2, MSA-3) of an ACK.
pub fn msa(ack: &str) -> (String, String, String) {
    let m = Message::parse(ack).unwrap_or_else(|e| panic!("ACK does not parse: {e:?}: {ack:?}"));
    (
        m.get("MSA-1").into(),
        m.get("MSA-2").into(),
        m.get("MSA-3").into(),
    )
}
