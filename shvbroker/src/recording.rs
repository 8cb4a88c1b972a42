//! Session recording (`tunnel.record_dir`): every tunnel this broker hosts is written to
//! an asciicast v2 file (what `asciinema play`/`cat` and the asciinema web player read):
//! a header line, then `[seconds, "o", text]` for output, `[seconds, "r", "COLSxROWS"]`
//! for resizes, and `[seconds, "i", text]` for input only with `tunnel.record_input`.
//!
//! Recording never slows a session: output goes to a writer thread through a queue
//! bounded in events and bytes. When it is full the event is dropped, and the file gets
//! a marker (`[seconds, "m", "recording truncated: …"]`) before its next event, so a
//! reader knows that part is missing. A session's open and close always get through
//! (there are as many as sessions, which the tunnel table bounds), so no file stays
//! open after its session.
//!
//! The disk is bounded too, in bytes as written (text is escaped only where JSON must:
//! quotes, backslashes and control characters): each recording stops at
//! `record_max_bytes` and the directory at `record_dir_max_bytes`, with a marker saying
//! which. When the directory is full, the oldest finished recordings are deleted, or
//! (`record_when_full: refuse`) new sessions are not recorded. Files are created new,
//! never through a symlink, owner-only, under names nobody can guess in advance, and a
//! `record_dir` another user may write is refused at start.

mod cast;
mod dir;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use crate::config::{RecordLimits, WhenFull};
use dir::{existing, refuse_dir, safe_name, Store};
use writer::write_events;

/// The marker's reason when the queue overflowed.
const FELL_BEHIND: &str = "the recorder fell behind";

/// Output/input/resize events waiting for the writer.
const QUEUE: usize = 8192;
/// Bytes of output/input waiting for the writer.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Room kept in each open file, and in the directory for each, for its last marker.
const MARK_ROOM: u64 = 256;

/// What a session looked like when it opened.
pub struct SessionStart {
    pub id: u64,
    pub width: u16,
    pub height: u16,
    pub command: String,
    pub user: String,
    pub agent: String,
}

enum Event {
    Open(SessionStart, PathBuf),
    Output(u64, Instant, Vec<u8>),
    Input(u64, Instant, Vec<u8>),
    Resize(u64, Instant, u16, u16),
    /// Events of the session were dropped (or not read) before this point: why.
    Truncated(u64, Instant, &'static str),
    /// The session ended: close its file, then write its audit entry.
    Close(u64, Option<crate::audit::Deferred>),
    /// Everything before it is written: say so.
    #[cfg(test)]
    Barrier(mpsc::Sender<()>),
}

pub struct Recorder {
    dir: PathBuf,
    record_input: bool,
    limits: RecordLimits,
    tx: Option<mpsc::Sender<Event>>,
    queued_events: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    /// Bytes of recordings in the directory, as the writer last counted them.
    dir_bytes: Arc<AtomicU64>,
    /// Sessions whose events were dropped since their last event got through.
    truncated: HashMap<u64, ()>,
    writer: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Records into `dir` (created if missing, owner-only; refused if another user may
    /// write it).
    pub fn open(dir: &Path, record_input: bool, limits: RecordLimits) -> std::io::Result<Recorder> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        refuse_dir(dir)?;
        let finished = existing(dir)?;
        let total: u64 = finished.iter().map(|(_, n)| n).sum();
        let (tx, rx) = mpsc::channel();
        let queued_events = Arc::new(AtomicUsize::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let dir_bytes = Arc::new(AtomicU64::new(total));
        let store = Store {
            limits: limits.clone(),
            finished,
            total,
            open_files: 0,
            shared: dir_bytes.clone(),
        };
        let (qe, qb) = (queued_events.clone(), queued_bytes.clone());
        let writer = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write_events(rx, qe, qb, store))?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            record_input,
            limits,
            tx: Some(tx),
            queued_events,
            queued_bytes,
            dir_bytes,
            truncated: HashMap::new(),
            writer: Some(writer),
        })
    }

    /// Starts a session's file; returns its name (for the audit entry and
    /// `.broker/tunnels`), or None when the directory is full and the policy is to
    /// refuse new recordings.
    pub fn start(&mut self, s: SessionStart) -> Option<String> {
        let cap = self.limits.dir_max_bytes;
        if self.limits.when_full == WhenFull::Refuse
            && cap != 0
            && self
                .dir_bytes
                .load(Ordering::Relaxed)
                .saturating_add(4 * MARK_ROOM)
                > cap
        {
            tracing::warn!(
                "session {} is not recorded: tunnel.record_dir holds its cap of {cap} bytes",
                s.id
            );
            return None;
        }
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        let user = safe_name(s.user.rsplit(';').next().unwrap_or(""));
        // A name nobody can create ahead of the broker (the file is created new anyway).
        let tag: u64 = rand::random();
        let name = format!("{stamp}-{}-{user}-{tag:016x}.cast", s.id);
        let path = self.dir.join(&name);
        self.send(s.id, Event::Open(s, path), 0);
        Some(name)
    }

    pub fn output(&mut self, id: u64, data: &[u8]) {
        self.send(
            id,
            Event::Output(id, Instant::now(), data.to_vec()),
            data.len(),
        );
    }

    pub fn input(&mut self, id: u64, data: &[u8]) {
        if self.record_input {
            self.send(
                id,
                Event::Input(id, Instant::now(), data.to_vec()),
                data.len(),
            );
        }
    }

    /// Something of the session was not recorded here: the file says so (`why`).
    pub fn gap(&mut self, id: u64, why: &'static str) {
        self.send(id, Event::Truncated(id, Instant::now(), why), 0);
    }

    pub fn resize(&mut self, id: u64, cols: u16, rows: u16) {
        self.send(id, Event::Resize(id, Instant::now(), cols, rows), 0);
    }

    /// Ends a session's file; `then` (its audit close entry) is written once the file
    /// is complete on disk. Given back only if the writer is gone: write it at once then.
    pub fn close(
        &mut self,
        id: u64,
        then: Option<crate::audit::Deferred>,
    ) -> Option<crate::audit::Deferred> {
        self.truncated.remove(&id);
        match self.send(id, Event::Close(id, then), 0) {
            Some(Event::Close(_, then)) => then,
            _ => None,
        }
    }

    /// Waits until the writer has handled everything queued so far.
    #[cfg(test)]
    fn sync(&mut self) {
        let (tx, rx) = mpsc::channel();
        self.send(0, Event::Barrier(tx), 0);
        let _ = rx.recv();
    }

    /// Queues `ev`; gives it back if it was not queued.
    fn send(&mut self, id: u64, ev: Event, bytes: usize) -> Option<Event> {
        let Some(tx) = &self.tx else {
            return Some(ev);
        };
        // Open and Close always go: losing them would lose the whole file or leave it
        // open. Gap markers are small and as many as frames that were not read.
        let droppable = matches!(ev, Event::Output(..) | Event::Input(..) | Event::Resize(..));
        if droppable {
            let over = self
                .queued_bytes
                .load(Ordering::Relaxed)
                .saturating_add(bytes)
                > QUEUE_BYTES
                || self.queued_events.load(Ordering::Relaxed) >= QUEUE;
            if over {
                self.truncated.insert(id, ());
                return Some(ev);
            }
            if self.truncated.remove(&id).is_some() {
                // The gap is marked before this event.
                let _ = tx.send(Event::Truncated(id, Instant::now(), FELL_BEHIND));
            }
            self.queued_events.fetch_add(1, Ordering::Relaxed);
            self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        match tx.send(ev) {
            Ok(()) => None,
            Err(mpsc::SendError(ev)) => {
                if droppable {
                    self.queued_events.fetch_sub(1, Ordering::Relaxed);
                    self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
                Some(ev)
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
