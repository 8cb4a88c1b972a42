//! Replays the fuzz corpora on stable: every file under `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same entry point the fuzz target runs
//! (`fuzz/src/lib.rs`, included here by path), and must not panic or overflow the stack.
//! The fuzzers themselves need nightly (`cargo +nightly fuzz run <target>`); this keeps
//! what they found, and every crash fixed since, checked in CI.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod entry;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut n = 0;
    for (target, run) in entry::TARGETS {
        for file in files(&root.join(target)) {
            let data = std::fs::read(&file).expect("read corpus file");
            // Names the file if the entry point panics (shown only on failure).
            println!("{target}: {}", file.display());
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn corpus_files_decode_without_panic() {
    let n = replay("corpus");
    // The seeds alone are over a hundred files; an empty walk means a wrong path.
    assert!(n >= 100, "only {n} corpus files found");
}

#[test]
fn regression_inputs_decode_without_panic() {
    let n = replay("regressions");
    assert!(n >= 2, "only {n} regression files found");
}
