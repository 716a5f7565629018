//! xner: multilingual named-entity recognition with transformer encoders.
//!
//! Data flows one way through the modules:
//! `data` (readers, Swiss sampling) → `align` (tokenize, word ids, -100) → `metrics` (seqeval),
//! with `shuffle` (numpy-exact permutations) under `data` and `table` for terminal output.

pub mod align;
pub mod data;
pub mod error;
pub mod metrics;
pub mod shuffle;
pub mod table;

pub use error::{Error, Result};
