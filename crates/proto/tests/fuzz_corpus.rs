//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) and the inputs that once
//! crashed (`fuzz/regressions/<target>/*`) through the fuzz targets' checks, on the stable toolchain and without libFuzzer, so `cargo test` holds every input
//! the fuzzer ever kept (and every crash it found, once fixed) to the same invariants.
//!
//! The checks live in `fuzz/src/lib.rs`, shared with the libFuzzer targets; see
//! docs/FUZZING.md for running the fuzzer itself.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

// Memory bounds are checked with the same counting allocator the fuzz targets use.
#[global_allocator]
static ALLOC: checks::CountingAlloc = checks::CountingAlloc;

fn corpus(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .expect("a known target");
    let dir = corpus(target);
    let corpus = files(&dir);
    assert!(
        !corpus.is_empty(),
        "{}: the corpus of {target} is empty",
        dir.display()
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).expect("read corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        if result.is_err() {
            panic!(
                "{target} fails on {} (reproduce: cargo fuzz run {target} {})",
                file.display(),
                file.display()
            );
        }
    }
}

#[test]
fn every_target_has_a_corpus() {
    for (target, _) in checks::TARGETS {
        assert!(corpus(target).is_dir(), "no corpus for {target}");
    }
}

#[test]
fn frame_corpus() {
    replay("frame");
}

#[test]
fn connection_corpus() {
    replay("connection");
}

#[test]
fn handshake_request_corpus() {
    replay("handshake_request");
}

#[test]
fn handshake_response_corpus() {
    replay("handshake_response");
}

#[test]
fn extensions_corpus() {
    replay("extensions");
}

#[test]
fn inflate_corpus() {
    replay("inflate");
}
