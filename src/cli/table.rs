//! `xner table`: the book's final table.

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::*;

#[derive(Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub common: ExperimentArgs,
    /// Languages; the first is the "de" row's training language.
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    pub langs: Vec<String>,
}

pub fn run(args: &TableArgs, device: &Device) -> Result<()> {
    let t = xner::experiments::table(&args.common.setup(device)?, &args.langs, &args.common.out)?;
    print!("{}", xner::experiments::table_markdown(&t));
    Ok(())
}
