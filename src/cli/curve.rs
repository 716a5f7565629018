//! `xner curve`: F1 against the number of target-language samples.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::*;

#[derive(Args)]
pub struct CurveArgs {
    #[command(flatten)]
    pub common: ExperimentArgs,
    /// The target language.
    #[arg(long, default_value = "fr")]
    pub target: String,
    /// Training-set sizes, each at least 1.
    #[arg(long, default_value = "250,500,1000,2000,4000", value_delimiter = ',', value_parser = super::count(1, u32::MAX as u64))]
    pub sizes: Vec<usize>,
    /// A model trained on another language (e.g. `xner transfer`'s), drawn as the zero-shot line.
    #[arg(long)]
    pub zero_shot_from: Option<PathBuf>,
}

pub fn run(args: &CurveArgs, device: &Device) -> Result<()> {
    let c = xner::experiments::curve(
        &args.common.setup(device)?,
        &args.target,
        &args.sizes,
        args.zero_shot_from.as_deref(),
        &args.common.out,
    )?;
    let mut rows: Vec<Vec<String>> =
        c.points.iter().map(|p| vec![p.samples.to_string(), format!("{:.4}", p.f1)]).collect();
    if let Some(z) = c.zero_shot {
        rows.push(vec!["zero-shot".into(), format!("{z:.4}")]);
    }
    print!("{}", xner::table::columns(&["samples", "F1"], &rows));
    println!("plot: {}", args.common.out.join("curve.svg").display());
    Ok(())
}
