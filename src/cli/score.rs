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
    /// The tags' scheme (IOB1, BIOES, BILOU): both columns are read into IOB2 before scoring, so
    /// that strict mode checks IOB2 entities. Default: the tags as they are (seqeval's behaviour).
    #[arg(long, value_enum)]
    pub scheme: Option<xner::data::Scheme>,
    /// Print JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    let (mut gold, mut pred) = xner::metrics::read_score_file(&args.file)?;
    if let Some(scheme) = args.scheme {
        for (tags, column) in [(&mut gold, "gold"), (&mut pred, "predicted")] {
            for (i, sentence) in tags.iter_mut().enumerate() {
                if let Some(bad) = sentence.iter().find(|t| !xner::data::scheme::fits(t, scheme)) {
                    return Err(xner::Error::invalid(
                        &args.file,
                        format!("sentence {}: {column} tag {bad:?} is not a {} tag", i + 1, scheme.name()),
                    )
                    .into());
                }
                *sentence = xner::data::scheme::to_iob2(sentence, scheme);
            }
        }
    }
    let report = xner::metrics::classification_report(&gold, &pred, args.mode)
        .with_context(|| format!("scoring {}", args.file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
