//! [`Shutdown`]: a cloneable signal that tells sources to stop taking new input.

use tokio::sync::watch;

/// Receiver side of the stop signal; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Sender side: [`Trigger::trigger`] asks every [`Shutdown`] holder to stop.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx }, Shutdown { rx })
    }

    /// A signal that never fires (one-shot runs).
    pub fn never() -> Shutdown {
        let (t, s) = Shutdown::new();
        std::mem::forget(t);
        s
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal fires (or its trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

impl Trigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}
