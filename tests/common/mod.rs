//! Shared helpers for the integration tests: where the shared data lives.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the checkout (CI lays it there).
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared")
}

/// PAN-X: `$XNER_DATA` or `../shared/data/panx`. Tests that need it fail loudly without it.
pub fn panx_dir() -> PathBuf {
    let dir = std::env::var_os("XNER_DATA").map(PathBuf::from).unwrap_or_else(|| shared_dir().join("data/panx"));
    assert!(dir.join("de/train.tsv").exists(), "PAN-X not found at {} (set XNER_DATA)", dir.display());
    dir
}

/// The repository's test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `xner` binary built for these tests.
pub fn xner() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_xner"))
}
