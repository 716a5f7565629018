//! xner: multilingual named-entity recognition with transformer encoders.
//!
//! Data flows one way through the modules:
//! `data` (readers, Swiss sampling) → `align` (tokenize, word ids, -100) → `metrics` (seqeval),
//! with `shuffle` (numpy-exact permutations) under `data` and `table` for terminal output.

pub mod align;
pub mod amx;
pub mod analysis;
pub mod attention;
pub mod batch;
pub mod bench;
pub mod charsmap;
pub mod checkpoint;
pub mod composed;
pub mod data;
pub mod device;
pub mod dpbf16;
pub mod error;
pub mod eval;
pub mod experiments;
pub mod hub;
pub mod import;
pub mod infer;
pub mod kernels;
pub mod lowp;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod quantize;
pub mod serve;
pub mod sgemm;
pub mod shuffle;
pub mod table;
pub mod train;
pub mod vnni;
pub mod window;

pub use error::{Error, Result};
