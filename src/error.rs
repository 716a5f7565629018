//! The library's error type: one variant per thing a user can get wrong, each message naming
//! the file (and line, where there is one) so that the fix is obvious without a backtrace.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}:{line}: {msg}")]
    Parse { path: PathBuf, line: usize, msg: String },

    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },

    #[error("{0}")]
    Usage(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("{context}: {source}")]
    Json { context: String, source: serde_json::Error },

    /// Training stopped on request (`train::request_stop`: Ctrl-C, SIGTERM) after a step.
    #[error("interrupted after step {step}: {}", resume_hint(.checkpoint.as_deref()))]
    Interrupted { step: usize, checkpoint: Option<PathBuf> },
}

fn resume_hint(checkpoint: Option<&Path>) -> String {
    match checkpoint {
        Some(dir) => format!(
            "checkpoint saved; the same command with `--resume {}` continues the run (an experiment \
             continues when run again)",
            dir.display()
        ),
        None => "no checkpoint written (--checkpoints none)".into(),
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub fn parse(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse { path: path.to_path_buf(), line, msg: msg.into() }
    }
    pub fn invalid(path: &Path, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.to_path_buf(), msg: msg.into() }
    }
}
