//! The writer thread: takes queued events in order and writes them to their files, so
//! a session never waits for the disk.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::cast::{finish, open_file, CastFile};
use super::dir::Store;
use super::Event;
pub(super) fn write_events(
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
