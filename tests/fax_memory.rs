//! Peak memory of the fax inbox does not grow with fax size: attachments are streamed to the
//! spool and copied into the document directory by the kernel, never held whole. Measured
//! with Linux's peak-RSS counter (`VmHWM`, reset through `/proc/self/clear_refs`) around a
//! run of small faxes and a run of 32 MB faxes; the emulator's copies are allocated before
//! the counter is reset. Its own binary, so no other test allocates meanwhile.

mod common;

use std::path::Path;

use bytes::Bytes;
use time::OffsetDateTime;

use oscarflow::config::load_str;
use oscarflow::store::Store;
use oscarflow::topology::{build, BuildOptions};

use common::rc_emulator::RcEmulator;

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn pipeline(emu: &RcEmulator, dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("document")).unwrap();
    format!(
        r#"
[pipeline]
name = "fax_memory"
[sources.fax]
type = "ringcentral_fax"
spool_dir = "{spool}"
poll_interval = "1h"
[sources.fax.ringcentral]
{ringcentral}[sinks.oscar]
type = "oscar_fax"
inputs = ["fax"]
document_dir = "{docs}"
"#,
        spool = dir.join("spool").display(),
        ringcentral = emu.ringcentral_toml("MEM", (10, "1m")),
        docs = dir.join("document").display(),
    )
}

/// Files `n` faxes sharing one `size`-byte body; the peak-RSS growth during the run, in KiB.
async fn peak_growth_filing(n: i64, size: usize) -> Option<u64> {
    let tmp = tempfile::tempdir().unwrap();
    let store: Store = common::sqlite_store(tmp.path()).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let mut body = vec![b'x'; size];
    body[..9].copy_from_slice(b"%PDF-1.4\n");
    let body = Bytes::from(body);
    for i in 0..n {
        emu.add_fax(
            7_000 + i,
            OffsetDateTime::now_utc() - time::Duration::minutes(n - i),
            1,
            body.clone(),
        );
    }
    let cfg = load_str(Path::new("fax_memory.toml"), &pipeline(&emu, tmp.path())).unwrap();
    if !reset_peak() {
        return None;
    }
    let before = vm_hwm_kib()?;
    let running = build(
        &cfg,
        &store,
        BuildOptions {
            one_shot: true,
            ..Default::default()
        },
    )
    .unwrap();
    common::sources::wait(running, 300).await.unwrap();
    let after = vm_hwm_kib()?;
    assert_eq!(
        common::count(&store, "SELECT COUNT(*) FROM document").await,
        n,
        "every fax filed"
    );
    let filed: u64 = std::fs::read_dir(tmp.path().join("document"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(filed, n as u64 * size as u64, "every byte in DOCUMENT_DIR");
    Some(after.saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_does_not_grow_with_fax_size() {
    let Some(small) = peak_growth_filing(8, 64 * 1024).await else {
        eprintln!("note: no /proc peak-RSS counter here; skipping");
        return;
    };
    let large = peak_growth_filing(8, 32 * 1024 * 1024).await.unwrap();
    println!(
        "fax memory: peak RSS growth {small} KiB filing 8 x 64 KiB, {large} KiB filing 8 x 32 MiB"
    );
    // Holding one 32 MiB fax whole would add 32,768 KiB; streaming adds buffers only.
    assert!(
        large < 16 * 1024,
        "peak RSS grew by {large} KiB while filing 32 MiB faxes"
    );
}
