//! `xner score`: seqeval's report for a `token gold pred` file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use xner::metrics::Mode;

#[derive(Args)]
pub struct ScoreArgs {
    /// Lines of `token gold pred` (whitespace separated), a blank line between sentences.
    pub file: PathBuf,
    /// default: seqeval's default (lenient) chunking; strict: mode="strict", scheme=IOB2.
    #[arg(long, value_enum, default_value_t = Mode::Default)]
    pub mode: Mode,
    /// Print JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    let (gold, pred) = xner::metrics::read_score_file(&args.file)?;
    let report = xner::metrics::classification_report(&gold, &pred, args.mode)
        .with_context(|| format!("scoring {}", args.file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
