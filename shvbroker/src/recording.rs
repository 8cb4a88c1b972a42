//! Session recording (`tunnel.record_dir`): every tunnel this broker hosts is written to
//! an asciicast v2 file (what `asciinema play`/`cat` and the asciinema web player read):
//! a header line, then `[seconds, "o", text]` for output, `[seconds, "r", "COLSxROWS"]`
//! for resizes, and `[seconds, "i", text]` for input only with `tunnel.record_input`.
//!
//! Recording never slows a session: events go to a writer thread through a queue
//! bounded in events and bytes. When it is full the event is dropped, and the file gets
//! a marker (`[seconds, "m", "recording truncated: …"]`) before its next event, so a
//! reader knows that part is missing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The marker's reason when the queue overflowed.
const FELL_BEHIND: &str = "the recorder fell behind";

/// Events waiting for the writer.
const QUEUE: usize = 8192;
/// Bytes of output/input waiting for the writer.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;

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
}

pub struct Recorder {
    dir: PathBuf,
    record_input: bool,
    tx: Option<mpsc::SyncSender<Event>>,
    queued_bytes: Arc<AtomicUsize>,
    /// Sessions whose events were dropped since their last event got through.
    truncated: HashMap<u64, ()>,
    writer: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Records into `dir` (created if missing, owner-only).
    pub fn open(dir: &Path, record_input: bool) -> std::io::Result<Recorder> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let q = queued_bytes.clone();
        let writer = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write_events(rx, q))?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            record_input,
            tx: Some(tx),
            queued_bytes,
            truncated: HashMap::new(),
            writer: Some(writer),
        })
    }

    pub fn records_input(&self) -> bool {
        self.record_input
    }

    /// Starts a session's file; returns its name (for the audit entry and
    /// `.broker/tunnels`).
    pub fn start(&mut self, s: SessionStart) -> String {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        let user = safe_name(s.user.rsplit(';').next().unwrap_or(""));
        let name = format!("{stamp}-{}-{user}.cast", s.id);
        let path = self.dir.join(&name);
        self.send(s.id, Event::Open(s, path), 0);
        name
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
    /// is complete on disk. Given back if it could not be queued (the queue is full):
    /// write it at once then.
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

    /// Queues `ev`; gives it back if it could not be queued.
    fn send(&mut self, id: u64, ev: Event, bytes: usize) -> Option<Event> {
        let Some(tx) = &self.tx else {
            return Some(ev);
        };
        let over = self
            .queued_bytes
            .load(Ordering::Relaxed)
            .saturating_add(bytes)
            > QUEUE_BYTES;
        // Open and Close always try: losing them would lose the whole file.
        let droppable = matches!(ev, Event::Output(..) | Event::Input(..) | Event::Resize(..));
        if over && droppable {
            self.truncated.insert(id, ());
            return Some(ev);
        }
        if droppable && self.truncated.remove(&id).is_some() {
            // The gap is marked before this event.
            let _ = tx.try_send(Event::Truncated(id, Instant::now(), FELL_BEHIND));
        }
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        match tx.try_send(ev) {
            Ok(()) => None,
            Err(e) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                if droppable {
                    self.truncated.insert(id, ());
                }
                Some(match e {
                    mpsc::TrySendError::Full(ev) | mpsc::TrySendError::Disconnected(ev) => ev,
                })
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

/// A file name part from a user name: letters, digits, `._-` only.
fn safe_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() {
        "unknown".into()
    } else {
        n
    }
}

struct CastFile {
    out: std::io::BufWriter<std::fs::File>,
    start: Instant,
    /// The tail of the last output that ended inside a UTF-8 sequence.
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    path: PathBuf,
    failed: bool,
}

impl CastFile {
    fn event(&mut self, at: Instant, kind: &str, text: &str) {
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        let line = serde_json::json!([(t * 1e6).round() / 1e6, kind, text]);
        if let Err(e) = writeln!(self.out, "{line}") {
            if !self.failed {
                tracing::error!("recording {}: {e}", self.path.display());
                self.failed = true;
            }
        }
    }

    /// Text of `data` after what was carried over; an incomplete UTF-8 sequence at the
    /// end waits for the next chunk (a character split across two frames stays one).
    fn text(carry: &mut Vec<u8>, data: &[u8]) -> String {
        carry.extend_from_slice(data);
        let keep = incomplete_tail(carry);
        let rest = carry.split_off(carry.len() - keep);
        let text = String::from_utf8_lossy(carry).into_owned();
        *carry = rest;
        text
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

fn write_events(rx: mpsc::Receiver<Event>, queued: Arc<AtomicUsize>) {
    let mut files: HashMap<u64, CastFile> = HashMap::new();
    loop {
        let ev = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Idle: what was written is on disk for `asciinema play` to follow.
                for f in files.values_mut() {
                    let _ = f.out.flush();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Event::Open(s, path) => match crate::audit::open_private(&path, false) {
                Ok(file) => {
                    let mut out = std::io::BufWriter::new(file);
                    let header = serde_json::json!({
                        "version": 2,
                        "width": s.width.max(1),
                        "height": s.height.max(1),
                        "timestamp": SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        "command": s.command,
                        "title": format!("{} on {}", s.user, s.agent),
                        "env": {"TERM": "xterm-256color"},
                    });
                    let _ = writeln!(out, "{header}");
                    files.insert(
                        s.id,
                        CastFile {
                            out,
                            start: Instant::now(),
                            carry_out: Vec::new(),
                            carry_in: Vec::new(),
                            path,
                            failed: false,
                        },
                    );
                }
                Err(e) => tracing::error!("cannot record to {}: {e}", path.display()),
            },
            Event::Output(id, at, data) => {
                queued.fetch_sub(data.len(), Ordering::Relaxed);
                let Some(f) = files.get_mut(&id) else {
                    continue;
                };
                let text = CastFile::text(&mut f.carry_out, &data);
                f.event(at, "o", &text);
            }
            Event::Input(id, at, data) => {
                queued.fetch_sub(data.len(), Ordering::Relaxed);
                let Some(f) = files.get_mut(&id) else {
                    continue;
                };
                let text = CastFile::text(&mut f.carry_in, &data);
                f.event(at, "i", &text);
            }
            Event::Resize(id, at, cols, rows) => {
                if let Some(f) = files.get_mut(&id) {
                    f.event(at, "r", &format!("{cols}x{rows}"));
                }
            }
            Event::Truncated(id, at, why) => {
                if let Some(f) = files.get_mut(&id) {
                    f.event(at, "m", &format!("recording truncated: {why}"));
                }
            }
            Event::Close(id, then) => {
                if let Some(mut f) = files.remove(&id) {
                    if let Err(e) = f.out.flush() {
                        tracing::error!("recording {}: {e}", f.path.display());
                    }
                }
                if let Some(line) = then {
                    line.write();
                }
            }
        }
    }
    for (_, mut f) in files {
        let _ = f.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_stays_one_character() {
        let mut carry = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(CastFile::text(&mut carry, &[b'a', euro[0], euro[1]]), "a");
        assert_eq!(CastFile::text(&mut carry, &[euro[2], b'b']), "€b");
        assert!(carry.is_empty());
        // Invalid bytes do not get stuck.
        assert_eq!(CastFile::text(&mut carry, &[0xff, b'c']), "\u{fffd}c");
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(safe_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(safe_name(""), "unknown");
    }

    fn record_once(record_input: bool, big_output: bool) -> String {
        let dir = std::env::temp_dir().join(format!(
            "shv-rec-{}-{record_input}-{big_output}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Recorder::open(&dir, record_input).unwrap();
        let name = r.start(SessionStart {
            id: 7,
            width: 80,
            height: 24,
            command: "sh".into(),
            user: "forged;admin:b".into(),
            agent: "test/agent".into(),
        });
        assert!(name.ends_with("-7-admin_b.cast"), "{name}");
        r.input(7, b"typed");
        if big_output {
            // More than the queue may hold at once: dropped, then marked.
            r.output(7, &vec![b'x'; QUEUE_BYTES + 1]);
        }
        r.output(7, b"after");
        r.close(7, None);
        drop(r);
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        text
    }

    #[test]
    fn input_only_with_record_input_and_gaps_are_marked() {
        assert!(record_once(true, false).contains(r#""i","typed""#));
        let without = record_once(false, false);
        assert!(!without.contains("typed") && without.contains(r#""o","after""#));
        let gap = record_once(false, true);
        let marker = gap.find(r#""m","recording truncated"#).expect("a marker");
        assert!(marker < gap.find("after").unwrap(), "{gap}");
        assert!(!gap.contains("xxxx"), "the dropped output is not there");
    }

    /// An 80×24 `sh` of admin on test/agent.
    fn session(id: u64) -> SessionStart {
        SessionStart {
            id,
            width: 80,
            height: 24,
            command: "sh".into(),
            user: "admin".into(),
            agent: "test/agent".into(),
        }
    }

    #[test]
    fn what_was_not_read_is_marked_as_a_gap() {
        let dir = std::env::temp_dir().join(format!("shv-rec-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Recorder::open(&dir, false).unwrap();
        let name = r.start(session(3));
        r.output(3, b"before");
        r.gap(3, "a frame in an unusual layout");
        r.output(3, b"after");
        r.close(3, None);
        drop(r);
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let gap = text
            .find(r#""m","recording truncated: a frame in an unusual layout""#)
            .expect("a marker");
        assert!(text.find("before").unwrap() < gap && gap < text.find("after").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_audit_close_entry_comes_after_the_recording_is_complete() {
        let dir = std::env::temp_dir().join(format!("shv-rec-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Recorder::open(&dir, false).unwrap();
        let mut audit = crate::audit::AuditLog::open(&dir.join("audit.jsonl")).unwrap();
        let name = r.start(session(1));
        r.output(1, b"last words");
        let mut entry = serde_json::Map::new();
        entry.insert("event".into(), "close".into());
        assert!(r.close(1, audit.defer(entry)).is_none(), "queued");
        // Both writers run on their own; nothing is joined yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let trail = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
            if trail.contains(r#""event":"close""#) {
                break;
            }
            assert!(Instant::now() < deadline, "no close entry");
            std::thread::sleep(Duration::from_millis(5));
        }
        let cast = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(cast.contains(r#""o","last words""#), "{cast}");
        drop((r, audit));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
