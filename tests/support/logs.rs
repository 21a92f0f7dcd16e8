//! What a `tracing` subscriber writes, captured for assertions on log lines.

#![allow(dead_code)] // each user takes what it needs

use std::io;
use std::sync::{Arc, Mutex};

use tracing::Level;

/// Every line written while the guard of [`Logs::capture`] lives, on this thread.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures every event at `level` and above on this thread until the guard drops.
    pub(crate) fn capture(level: Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Lines at exactly `level` (`"WARN"`, `"INFO"`, ...).
    pub(crate) fn count(&self, level: &str) -> usize {
        let needle = format!(" {level} ");
        self.count_containing(&needle)
    }

    pub(crate) fn count_containing(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }

    /// Forgets what was captured so far.
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}
