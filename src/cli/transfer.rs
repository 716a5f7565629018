//! `xner transfer`: zero-shot cross-lingual transfer.

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::*;

#[derive(Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub common: ExperimentArgs,
    #[arg(long, default_value = "de")]
    pub train_lang: String,
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    pub langs: Vec<String>,
}

pub fn run(args: &TransferArgs, device: &Device) -> Result<()> {
    let t = xner::experiments::transfer(&args.common.setup(device)?, &args.train_lang, &args.langs, &args.common.out)?;
    let header: Vec<&str> = std::iter::once("trained on").chain(t.f1.keys().map(String::as_str)).collect();
    let row: Vec<String> =
        std::iter::once(t.train_lang.clone()).chain(t.f1.values().map(|f| format!("{f:.4}"))).collect();
    print!("{}", xner::table::columns(&header, &[row]));
    Ok(())
}
