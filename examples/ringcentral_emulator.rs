//! The RingCentral emulator the tests use, as a server integrators can run and point an
//! oscarflow configuration at (plain HTTP on loopback):
//!
//! ```text
//! cargo run --example ringcentral_emulator -- 18080 5
//! ```
//!
//! serves on `127.0.0.1:18080` with 5 inbound faxes waiting, and prints the client id, secret
//! and JWT to put in the environment variables the configuration names. Drive it with its
//! control API (`/__emu/fax`, `/__emu/fault`, `/__emu/down`, `/__emu/slow`,
//! `/__emu/expire-tokens`, `/__emu/sent`; see `tests/common/rc_emulator.rs`). Ctrl-C stops it.

#[allow(dead_code)]
#[path = "../tests/common/http_emu.rs"]
mod http_emu;
#[allow(dead_code)]
#[path = "../tests/common/rc_emulator.rs"]
mod rc_emulator;

use rc_emulator::{RcEmulator, CLIENT_ID, CLIENT_SECRET, JWT};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(18080);
    let faxes: i64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let emu = RcEmulator::start_on(port).await;
    for i in 0..faxes {
        let pdf = format!("%PDF-1.4\n% emulator fax {i}\n%%EOF").into_bytes();
        emu.add_fax(
            5_000 + i,
            time::OffsetDateTime::now_utc() - time::Duration::minutes(faxes - i),
            1,
            pdf.into(),
        );
    }
    println!("RingCentral emulator on {}", emu.url());
    println!("client id:     {CLIENT_ID}");
    println!("client secret: {CLIENT_SECRET}");
    println!("JWT:           {JWT}");
    println!("SMS number:    +16045550100");
    let _ = tokio::signal::ctrl_c().await;
}
