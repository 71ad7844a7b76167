//! Graceful drain: one signal tells accept loops to stop and open connections to finish what they
//! are doing, and the owner waits until every connection has let go.
//!
//! Every accept loop and every connection holds a [`DrainWatch`]; [`Drain::drain`] flips the signal
//! and resolves when the last watch is dropped.

use tokio::sync::watch;

/// The owner's side (one per gateway).
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// A holder's side: clone one into every accept loop and connection.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { tx: watch::channel(false).0 }
    }
}

impl Drain {
    /// A new watch on this drain.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch { rx: self.tx.subscribe() }
    }

    /// How many watches (accept loops + connections) are still held.
    pub fn holders(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Signals the drain and waits until every watch is dropped.
    pub async fn drain(&self) {
        let _ = self.tx.send(true);
        self.tx.closed().await;
    }
}

impl DrainWatch {
    /// Resolves once the drain has been signalled (never, if the owner is gone without signalling).
    pub async fn signaled(&mut self) {
        loop {
            if *self.rx.borrow_and_update() {
                return;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_every_holder() {
        let d = Drain::default();
        let mut w = d.watch();
        let held = tokio::spawn(async move {
            w.signaled().await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(w);
        });
        assert_eq!(d.holders(), 1);
        let started = tokio::time::Instant::now();
        d.drain().await;
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        held.await.unwrap();
        assert_eq!(d.holders(), 0);
    }
}
