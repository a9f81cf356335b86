//! Every log line of a test binary, captured by a global JSON subscriber at debug level, for
//! tests that check what must never be logged (secrets, tokens, phone numbers, names).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The captured log bytes (installs the subscriber on first use).
pub fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = W(buf.clone());
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || w.clone())
            .json()
            .init();
        buf
    })
}

/// The captured logs as text.
pub fn text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap()).into_owned()
}

/// Panics (without printing the value) when any of `needles` is in the captured logs.
pub fn assert_absent(needles: &[&str], what: &str) {
    let text = text();
    assert!(!text.is_empty(), "logs were captured");
    for n in needles {
        assert!(!text.contains(n), "{what} is in the logs");
    }
}
