//! The recorder's own tests: what a session's file holds, and the caps it keeps.

use super::dir::existing;
use std::time::Duration;

use super::*;

pub(super) fn limits() -> RecordLimits {
    crate::config::TunnelConfig::default().record_limits()
}

pub(super) fn temp_dir(tag: &str) -> PathBuf {
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
