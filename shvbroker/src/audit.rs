//! The audit trail (`tunnel.audit_log`): one JSON line per event of a session hosted or
//! passed through here — a shell, a command, a forward or a copy opening and closing —
//! with who (the user as this broker authenticated it), from where, on which agent,
//! what, how many bytes each way, how it ended and where it was recorded.
//!
//! Lines go to a writer thread through a bounded queue, so a slow disk never stalls the
//! broker task; if the queue is full the line is counted and the next line that gets
//! through says how many were lost (`"lost_before"`). The file is appended to, created
//! with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Lines waiting for the writer; beyond, lines are lost (and counted).
const QUEUE: usize = 4096;

pub struct AuditLog {
    tx: Option<mpsc::SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    lost: u64,
}

impl AuditLog {
    /// An audit log that writes nothing.
    pub fn disabled() -> AuditLog {
        AuditLog {
            tx: None,
            writer: None,
            lost: 0,
        }
    }

    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = open_private(path, true)?;
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        let shown = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(file, rx, shown))?;
        Ok(AuditLog {
            tx: Some(tx),
            writer: Some(writer),
            lost: 0,
        })
    }

    /// Writes one entry (a JSON object; `time` is added).
    pub fn write(&mut self, entry: serde_json::Map<String, serde_json::Value>) {
        let Some(line) = self.line(entry) else {
            return;
        };
        match line.tx.try_send(line.line) {
            Ok(()) => self.lost = 0,
            Err(_) => self.lost = self.lost.saturating_add(1),
        }
    }

    /// One entry, stamped now, to be written when something it names is complete:
    /// the close entry of a recorded session waits until its recording is on disk, so
    /// that whoever reads the trail finds the whole file. None when the log is off.
    pub fn defer(&mut self, entry: serde_json::Map<String, serde_json::Value>) -> Option<Deferred> {
        let line = self.line(entry)?;
        // It will get through (Deferred::write waits for room): the count is in it.
        self.lost = 0;
        Some(line)
    }

    /// A line that could not be written: the next one says so.
    pub fn lost_one(&mut self) {
        self.lost = self.lost.saturating_add(1);
    }

    fn line(&self, mut entry: serde_json::Map<String, serde_json::Value>) -> Option<Deferred> {
        let tx = self.tx.as_ref()?;
        entry.insert("time".into(), now_rfc3339().into());
        if self.lost > 0 {
            entry.insert("lost_before".into(), self.lost.into());
        }
        Some(Deferred {
            tx: tx.clone(),
            line: serde_json::Value::Object(entry).to_string(),
        })
    }
}

/// An audit line written later, from another thread ([`AuditLog::defer`]).
pub struct Deferred {
    tx: mpsc::SyncSender<String>,
    line: String,
}

impl Deferred {
    /// Writes the line, waiting for room in the queue (call it off the broker task).
    pub fn write(self) {
        let _ = self.tx.send(self.line);
    }

    /// Writes the line if the queue has room (on the broker task); false if it was
    /// lost (count it with [`AuditLog::lost_one`]).
    pub fn try_write(self) -> bool {
        self.tx.try_send(self.line).is_ok()
    }
}

impl Drop for AuditLog {
    /// Lets the writer flush what is queued (at shutdown).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn write_lines(file: std::fs::File, rx: mpsc::Receiver<String>, path: PathBuf) {
    let mut out = std::io::BufWriter::new(file);
    let mut failed = false;
    while let Ok(line) = rx.recv() {
        let mut r = writeln!(out, "{line}");
        // Each burst is flushed once the queue is empty: an audit line must not wait
        // in memory for the next event.
        while let Ok(more) = rx.try_recv() {
            r = r.and_then(|()| writeln!(out, "{more}"));
        }
        r = r.and_then(|()| out.flush());
        match (r, failed) {
            (Err(e), false) => {
                tracing::error!("audit log {}: {e}", path.display());
                failed = true;
            }
            (Ok(()), true) => failed = false,
            _ => {}
        }
    }
}

/// Opens a file for the broker's own records: owner-only, appended to or created new.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .mode(0o600)
        .open(path)
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
