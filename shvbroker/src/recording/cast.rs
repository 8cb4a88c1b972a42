//! One asciicast file being written: its lines, the caps each event is checked against,
//! and UTF-8 kept whole across output chunks.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::dir::{create_new, Store};
use super::{SessionStart, MARK_ROOM};
pub(super) struct CastFile {
    pub(super) out: std::io::BufWriter<std::fs::File>,
    pub(super) start: Instant,
    /// The tail of the last output that ended inside a UTF-8 sequence.
    pub(super) carry_out: Vec<u8>,
    pub(super) carry_in: Vec<u8>,
    pub(super) path: PathBuf,
    /// Bytes in the file.
    pub(super) written: u64,
    /// Stopped at a cap: nothing more is written.
    pub(super) capped: bool,
    pub(super) failed: bool,
}

impl CastFile {
    pub(super) fn line(&mut self, store: &mut Store, line: &[u8]) {
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

    pub(super) fn event(&mut self, store: &mut Store, at: Instant, kind: &str, text: &str) {
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
    pub(super) fn text(carry: &mut Vec<u8>, data: &[u8]) -> String {
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

pub(super) fn open_file(s: &SessionStart, path: PathBuf, store: &mut Store) -> Option<CastFile> {
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

/// Flushes and closes a recording; it may be deleted from now on.
pub(super) fn finish(mut f: CastFile, store: &mut Store) {
    if let Err(e) = f.out.flush() {
        tracing::error!("recording {}: {e}", f.path.display());
    }
    store.open_files = store.open_files.saturating_sub(1);
    store.finished.push_back((f.path, f.written));
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
}
