//! `xner report`: one Markdown page from the experiments' outputs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct ReportArgs {
    /// A directory of experiment outputs.
    pub dir: PathBuf,
    /// Write the page here instead of DIR/report.md.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let page = xner::experiments::report(&args.dir)?;
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("report.md"));
    std::fs::write(&out, &page).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}
