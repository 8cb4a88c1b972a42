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

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{RecordLimits, WhenFull};

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

/// Why `record_dir` cannot be used.
fn refuse_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other("is not a directory"));
    }
    let me = nix::unistd::Uid::effective().as_raw();
    if m.uid() != me {
        return Err(std::io::Error::other(format!(
            "is owned by uid {}, not by the broker's uid {me}: another user could plant \
             or read recordings there",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "may be written by other users (mode {:o}): `chmod go-w` it",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The recordings already in `dir` (regular `.cast` files, not followed through
/// symlinks), oldest first, with their sizes.
fn existing(dir: &Path) -> std::io::Result<VecDeque<(PathBuf, u64)>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if path.extension().is_none_or(|x| x != "cast") {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_file() {
            found.push((
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
                m.len(),
            ));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p, n)| (p, n)).collect())
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

    pub fn records_input(&self) -> bool {
        self.record_input
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

/// The writer's account of the directory: what it may hold, the finished recordings
/// it may delete (oldest first) and how many bytes are there.
struct Store {
    limits: RecordLimits,
    finished: VecDeque<(PathBuf, u64)>,
    total: u64,
    /// Files being written: each keeps MARK_ROOM of the directory for its last marker.
    open_files: u64,
    shared: Arc<AtomicU64>,
}

impl Store {
    /// Makes room for `n` more bytes: true if they fit (deleting the oldest finished
    /// recordings first if that is the policy).
    fn make_room(&mut self, n: u64) -> bool {
        let cap = self.limits.dir_max_bytes;
        if cap == 0 {
            return true;
        }
        let need = |s: &Store| {
            s.total
                .saturating_add(s.open_files.saturating_mul(MARK_ROOM))
                .saturating_add(n)
        };
        while need(self) > cap {
            if self.limits.when_full != WhenFull::DeleteOldest {
                return false;
            }
            let Some((path, size)) = self.finished.pop_front() else {
                return false;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    "deleted recording {} ({size} bytes): tunnel.record_dir is at its cap",
                    path.display()
                ),
                // Gone already (an operator cleaned up): it no longer counts either.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!("cannot delete recording {}: {e}", path.display());
                    continue;
                }
            }
            self.total = self.total.saturating_sub(size);
        }
        true
    }

    fn wrote(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
        self.shared.store(self.total, Ordering::Relaxed);
    }
}

struct CastFile {
    out: std::io::BufWriter<std::fs::File>,
    start: Instant,
    /// The tail of the last output that ended inside a UTF-8 sequence.
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    path: PathBuf,
    /// Bytes in the file.
    written: u64,
    /// Stopped at a cap: nothing more is written.
    capped: bool,
    failed: bool,
}

impl CastFile {
    fn line(&mut self, store: &mut Store, line: &[u8]) {
        let n = line.len() as u64 + 1;
        if let Err(e) = self
            .out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
        {
            if !self.failed {
                tracing::error!("recording {}: {e}", self.path.display());
                self.failed = true;
            }
        }
        self.written = self.written.saturating_add(n);
        store.wrote(n);
    }

    fn event(&mut self, store: &mut Store, at: Instant, kind: &str, text: &str) {
        if self.capped {
            return;
        }
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        let line = serde_json::json!([(t * 1e6).round() / 1e6, kind, text]).to_string();
        let n = line.len() as u64 + 1;
        let file_cap = store.limits.max_bytes;
        let why = if file_cap != 0 && self.written.saturating_add(n) + MARK_ROOM > file_cap {
            Some(format!("the recording reached its cap of {file_cap} bytes"))
        } else if !store.make_room(n) {
            Some(format!(
                "tunnel.record_dir reached its cap of {} bytes",
                store.limits.dir_max_bytes
            ))
        } else {
            None
        };
        match why {
            None => self.line(store, line.as_bytes()),
            Some(why) => {
                // The room kept for it holds the marker (its text is short and fixed).
                let mark = serde_json::json!([
                    (t * 1e6).round() / 1e6,
                    "m",
                    format!("recording truncated: {why}")
                ]);
                self.line(store, mark.to_string().as_bytes());
                self.capped = true;
                tracing::warn!("recording {} truncated: {why}", self.path.display());
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

/// A new file at `path`: never an existing one, never through a symlink, owner-only.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o600)
        .open(path)
}

fn open_file(s: &SessionStart, path: PathBuf, store: &mut Store) -> Option<CastFile> {
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
    })
    .to_string();
    let n = header.len() as u64 + 1;
    let file_cap = store.limits.max_bytes;
    if (file_cap != 0 && n + MARK_ROOM > file_cap) || !store.make_room(n + MARK_ROOM) {
        tracing::error!(
            "session {} is not recorded: tunnel.record_dir holds its cap of {} bytes",
            s.id,
            store.limits.dir_max_bytes
        );
        return None;
    }
    let file = match create_new(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot record to {}: {e}", path.display());
            return None;
        }
    };
    store.open_files += 1;
    let mut f = CastFile {
        out: std::io::BufWriter::new(file),
        start: Instant::now(),
        carry_out: Vec::new(),
        carry_in: Vec::new(),
        path,
        written: 0,
        capped: false,
        failed: false,
    };
    f.line(store, header.as_bytes());
    Some(f)
}

fn write_events(
    rx: mpsc::Receiver<Event>,
    queued_events: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    mut store: Store,
) {
    let mut files: HashMap<u64, CastFile> = HashMap::new();
    let dequeued = |bytes: usize| {
        queued_events.fetch_sub(1, Ordering::Relaxed);
        queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    };
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
            Event::Open(s, path) => {
                if let Some(f) = open_file(&s, path, &mut store) {
                    files.insert(s.id, f);
                }
            }
            Event::Output(id, at, data) => {
                dequeued(data.len());
                let Some(f) = files.get_mut(&id) else {
                    continue;
                };
                let text = CastFile::text(&mut f.carry_out, &data);
                f.event(&mut store, at, "o", &text);
            }
            Event::Input(id, at, data) => {
                dequeued(data.len());
                let Some(f) = files.get_mut(&id) else {
                    continue;
                };
                let text = CastFile::text(&mut f.carry_in, &data);
                f.event(&mut store, at, "i", &text);
            }
            Event::Resize(id, at, cols, rows) => {
                dequeued(0);
                if let Some(f) = files.get_mut(&id) {
                    f.event(&mut store, at, "r", &format!("{cols}x{rows}"));
                }
            }
            Event::Truncated(id, at, why) => {
                if let Some(f) = files.get_mut(&id) {
                    f.event(&mut store, at, "m", &format!("recording truncated: {why}"));
                }
            }
            Event::Close(id, then) => {
                if let Some(f) = files.remove(&id) {
                    finish(f, &mut store);
                }
                if let Some(line) = then {
                    line.write();
                }
            }
            #[cfg(test)]
            Event::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
    for (_, f) in files {
        finish(f, &mut store);
    }
}

/// Flushes and closes a recording; it may be deleted from now on.
fn finish(mut f: CastFile, store: &mut Store) {
    if let Err(e) = f.out.flush() {
        tracing::error!("recording {}: {e}", f.path.display());
    }
    store.open_files = store.open_files.saturating_sub(1);
    store.finished.push_back((f.path, f.written));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RecordLimits {
        crate::config::TunnelConfig::default().record_limits()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shv-rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Bytes of the `.cast` files in `dir`.
    fn dir_bytes(dir: &Path) -> u64 {
        existing(dir).unwrap().iter().map(|(_, n)| n).sum()
    }

    /// The report's flood: a device sends 64 MiB of NUL output (6 bytes each as JSON).
    /// The file stops at its cap and says so.
    #[test]
    fn a_flood_of_output_stops_at_the_recording_cap_with_a_marker() {
        let dir = temp_dir("flood");
        let cap = 1024 * 1024;
        let lim = RecordLimits {
            max_bytes: cap,
            ..limits()
        };
        let mut r = Recorder::open(&dir, false, lim).unwrap();
        let name = r.start(session(9)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..1024 {
            r.output(9, &chunk);
        }
        r.close(9, None);
        drop(r);
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(text.len() as u64 <= cap, "{} bytes", text.len());
        let last = text.lines().last().unwrap();
        assert!(
            last.contains(
                r#""m","recording truncated: the recording reached its cap of 1048576 bytes""#
            ),
            "{last}"
        );
        assert!(text.lines().count() > 2, "output up to the cap is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// 200 sessions each writing more than the directory's cap allows for all of them:
    /// the oldest recordings go, the directory never holds more than its cap, and the
    /// newest recording is there.
    #[test]
    fn the_directory_cap_holds_across_200_sessions() {
        for when_full in [WhenFull::DeleteOldest, WhenFull::Refuse] {
            let dir = temp_dir(&format!("dircap-{when_full:?}"));
            let cap = 64 * 1024;
            let lim = RecordLimits {
                max_bytes: 8 * 1024,
                dir_max_bytes: cap,
                when_full,
            };
            let mut r = Recorder::open(&dir, false, lim).unwrap();
            let mut recorded = Vec::new();
            for id in 0..200 {
                let name = r.start(session(id));
                for _ in 0..20 {
                    r.output(id, &[b'x'; 1024]);
                }
                r.close(id, None);
                // As sessions come one after another (the refusal reads the writer's
                // count, which trails what is queued).
                r.sync();
                recorded.push(name);
                if id % 10 == 0 {
                    assert!(dir_bytes(&dir) <= cap, "{when_full:?}: {}", dir_bytes(&dir));
                }
            }
            drop(r);
            assert!(dir_bytes(&dir) <= cap, "{when_full:?}: {}", dir_bytes(&dir));
            let files = existing(&dir).unwrap();
            assert!(files.len() >= 4, "{when_full:?}: {} files", files.len());
            match when_full {
                WhenFull::DeleteOldest => {
                    let newest = recorded.last().unwrap().as_ref().unwrap();
                    assert!(dir.join(newest).is_file(), "the newest recording is kept");
                    assert!(!dir.join(recorded[0].as_ref().unwrap()).exists());
                }
                WhenFull::Refuse => {
                    assert!(recorded.last().unwrap().is_none(), "no recording when full");
                    assert!(dir.join(recorded[0].as_ref().unwrap()).is_file());
                }
            }
            for (path, _) in files {
                let text = std::fs::read_to_string(path).unwrap();
                assert!(
                    text.ends_with("bytes\"]\n"),
                    "each ends with its marker: {text}"
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A recording is created new and never through a symlink: a planted link (to a
    /// file the broker can write) is refused and its target is left as it was.
    #[test]
    fn recordings_never_follow_a_planted_symlink() {
        let dir = temp_dir("symlink");
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.join("planted.cast");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err());
        let existing_file = dir.join("existing.cast");
        std::fs::write(&existing_file, b"old").unwrap();
        assert!(create_new(&existing_file).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&existing_file).unwrap(), b"old");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_dir_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Recorder::open(&dir, false, limits())
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("may be written by other users"),
            "{e}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Recorder::open(&dir, false, limits()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        let mut r = Recorder::open(&dir, record_input, limits()).unwrap();
        let name = r
            .start(SessionStart {
                id: 7,
                width: 80,
                height: 24,
                command: "sh".into(),
                user: "forged;admin:b".into(),
                agent: "test/agent".into(),
            })
            .unwrap();
        assert!(name.contains("-7-admin_b-"), "{name}");
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
        let mut r = Recorder::open(&dir, false, limits()).unwrap();
        let name = r.start(session(3)).unwrap();
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
        let mut r = Recorder::open(&dir, false, limits()).unwrap();
        let mut audit = crate::audit::AuditLog::open(&dir.join("audit.jsonl")).unwrap();
        let name = r.start(session(1)).unwrap();
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
